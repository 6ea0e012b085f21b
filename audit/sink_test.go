package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rfc5424 matches the header and structured data a SyslogSink writes.
var rfc5424 = regexp.MustCompile(`^<(\d{1,3})>1 (\S+) (\S+) (\S+) - (\S+) \[symbi@32473 seq="(\d+)" hash="([0-9a-f]{64})" key="([0-9a-f]{16})"\] \x{FEFF}(.*)$`)

type syslogMsg struct {
	pri     int
	appName string
	msgID   string
	seq     uint64
	rec     Record
	raw     string // MSG as received
}

func parseSyslog(t *testing.T, m string) syslogMsg {
	t.Helper()
	g := rfc5424.FindStringSubmatch(m)
	if g == nil {
		t.Fatalf("not an RFC 5424 message: %q", m)
	}
	if _, err := time.Parse(time.RFC3339Nano, g[2]); err != nil {
		t.Errorf("timestamp %q: %v", g[2], err)
	}
	var out syslogMsg
	out.pri, _ = strconv.Atoi(g[1])
	out.appName, out.msgID = g[4], g[5]
	out.seq, _ = strconv.ParseUint(g[6], 10, 64)
	out.raw = g[9]
	if err := json.Unmarshal([]byte(g[9]), &out.rec); err != nil {
		t.Fatalf("MSG is not a record: %v", err)
	}
	if out.rec.Hash != g[7] || out.rec.Seq != out.seq {
		t.Errorf("structured data (seq %d hash %s) disagrees with MSG (seq %d hash %s)", out.seq, g[7], out.rec.Seq, out.rec.Hash)
	}
	return out
}

// tcpReceiver reads octet-counted syslog frames (RFC 6587).
func tcpReceiver(t *testing.T) (addr string, msgs <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					lenStr, err := r.ReadString(' ')
					if err != nil {
						return
					}
					n, err := strconv.Atoi(strings.TrimSpace(lenStr))
					if err != nil {
						t.Errorf("bad frame length %q", lenStr)
						return
					}
					buf := make([]byte, n)
					if _, err := io.ReadFull(r, buf); err != nil {
						return
					}
					ch <- string(buf)
				}
			})
		}
	})
	return ln.Addr().String(), ch
}

func udpReceiver(t *testing.T) (addr string, msgs <-chan string) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	})
	return pc.LocalAddr().String(), ch
}

func TestSyslogSink(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			var addr string
			var msgs <-chan string
			if network == "tcp" {
				addr, msgs = tcpReceiver(t)
			} else {
				addr, msgs = udpReceiver(t)
			}
			sink, err := NewSyslogSink(SyslogOptions{Network: network, Addr: addr, Hostname: "gw1"})
			if err != nil {
				t.Fatal(err)
			}
			l, dir := openTest(t, &Options{Sinks: []Sink{sink}})
			ctx := context.Background()
			l.Append(ctx, Event{Type: TypeCall, Identity: "ide", Tool: "fs__read", Decision: Allow, Outcome: OutcomeOK})
			l.Append(ctx, Event{Type: TypeCall, Identity: "ide", Tool: "fs__write", Decision: Deny, Reason: "read only"})
			l.Close()
			var got []syslogMsg
			for len(got) < 3 {
				select {
				case m := <-msgs:
					got = append(got, parseSyslog(t, m))
				case <-time.After(5 * time.Second):
					t.Fatalf("received %d messages, want 3", len(got))
				}
			}
			if got[0].msgID != string(TypeGenesis) || got[0].seq != 1 {
				t.Errorf("first message = %s seq %d, want genesis seq 1", got[0].msgID, got[0].seq)
			}
			if got[1].rec.Event.Tool != "fs__read" || got[1].pri != 13*8+6 || got[1].appName != "symbi" {
				t.Errorf("allow message = %+v", got[1])
			}
			if got[2].rec.Event.Reason != "read only" || got[2].pri != 13*8+5 {
				t.Errorf("deny message = pri %d event %+v, want notice severity", got[2].pri, got[2].rec.Event)
			}
			if s := l.Stats(); s.SinkErrors != 0 || s.SinkDropped != 0 {
				t.Errorf("stats = %+v", s)
			}
			// Each message carries the trail's own line, so a receiver can check the chain.
			lines := map[string]bool{}
			files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				for _, line := range strings.Split(string(data), "\n") {
					lines[line] = true
				}
			}
			for _, m := range got {
				if !lines[m.raw] {
					t.Errorf("syslog MSG is not a line of the trail: %.200s", m.raw)
				}
			}
		})
	}
}

// A sink that never returns must not hold up the trail: its records are dropped and
// counted.
type stuckSink struct{ release chan struct{} }

func (s stuckSink) Write(ctx context.Context, _ Record) error {
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return ctx.Err()
}
func (s stuckSink) Close() error { return nil }

func TestStuckSinkDoesNotBlockWriter(t *testing.T) {
	s := stuckSink{release: make(chan struct{})}
	l, _ := openTest(t, &Options{Sinks: []Sink{s}, SinkQueueSize: 4})
	appendN(t, l, 100)
	done := make(chan error, 1)
	go func() { done <- l.Flush(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Flush blocked behind a stuck sink")
	}
	if got := l.Stats().SinkDropped; got < 90 {
		t.Errorf("SinkDropped = %d, want most of 101", got)
	}
	close(s.release)
}

// barrierSink's Close returns only once every sink sharing its barrier is closing too,
// so Log.Close gets through only if it closes its sinks side by side.
type barrierSink struct {
	entered *sync.WaitGroup
	failed  *atomic.Bool
}

func (barrierSink) Write(context.Context, Record) error { return nil }

func (s barrierSink) Close() error {
	s.entered.Done()
	done := make(chan struct{})
	go func() { s.entered.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second): // a bound, not a measurement: sequential closing never gets here in time
		s.failed.Store(true)
	}
	return nil
}

func TestSinksCloseSideBySide(t *testing.T) {
	var entered sync.WaitGroup
	var failed atomic.Bool
	entered.Add(2)
	l, _ := openTest(t, &Options{Sinks: []Sink{barrierSink{&entered, &failed}, barrierSink{&entered, &failed}}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if failed.Load() {
		t.Error("Log.Close closed its sinks one after another")
	}
}
