package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A Sink receives every record after it is written to the file trail, which stays the
// authoritative, verifiable copy. Each extra sink runs on its own goroutine with a bounded
// queue: a slow or failing sink loses records (counted in Stats.SinkDropped and
// Stats.SinkErrors, and logged), never slows the chain writer.
type Sink interface {
	Write(ctx context.Context, rec Record) error
	Close() error
}

type sinkRunner struct {
	sink    Sink
	ch      chan Record
	log     *slog.Logger
	wg      sync.WaitGroup
	dropped atomic.Uint64
	errors  atomic.Uint64
}

func (r *sinkRunner) run() {
	defer r.wg.Done()
	for rec := range r.ch {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.sink.Write(ctx, rec)
		cancel()
		if err != nil {
			if n := r.errors.Add(1); n&(n-1) == 0 { // log on powers of two
				r.log.Warn("audit sink write failed", "err", err, "failures", n)
			}
		}
	}
}

func (r *sinkRunner) offer(rec Record) {
	select {
	case r.ch <- rec:
	default:
		if n := r.dropped.Add(1); n&(n-1) == 0 {
			r.log.Warn("audit sink too slow, record dropped", "dropped", n)
		}
	}
}

// SyslogOptions configure a SyslogSink.
type SyslogOptions struct {
	Network  string        // "tcp" or "udp"
	Addr     string        // host:port
	AppName  string        // "" means "symbi"
	Hostname string        // "" means os.Hostname()
	Facility int           // 0 means 13 (log audit)
	Timeout  time.Duration // dial and write; 0 means 5s
}

// SyslogSink sends each record as an RFC 5424 message whose MSG is the record's JSON
// (event plus seq and hash) and whose structured data carries seq, hash and key. Over TCP
// messages use octet-counting framing (RFC 6587); over UDP, one message per datagram. A
// broken connection is redialled on the next record.
type SyslogSink struct {
	o    SyslogOptions
	mu   sync.Mutex
	conn net.Conn
}

// NewSyslogSink validates the options; the connection is made on first use.
func NewSyslogSink(o SyslogOptions) (*SyslogSink, error) {
	if o.Network != "tcp" && o.Network != "udp" {
		return nil, fmt.Errorf("new syslog sink: network %q: want tcp or udp", o.Network)
	}
	if o.Addr == "" {
		return nil, errors.New("new syslog sink: no addr")
	}
	if o.AppName == "" {
		o.AppName = "symbi"
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
		if o.Hostname == "" {
			o.Hostname = "-"
		}
	}
	if o.Facility == 0 {
		o.Facility = 13
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	return &SyslogSink{o: o}, nil
}

// severity maps a record to a syslog severity: denials and failures are notices or
// warnings, the rest informational.
func severity(ev *Event) int {
	switch {
	case ev.Type == TypeTruncationDetected:
		return 2 // critical
	case ev.Outcome == OutcomeInvalid || ev.Outcome == OutcomeInternal:
		return 4 // warning
	case ev.Decision == Deny || ev.Outcome == OutcomeDenied:
		return 5 // notice
	default:
		return 6 // informational
	}
}

// FormatRFC5424 renders a record as an RFC 5424 syslog message (without framing). The
// message is the record's line in the trail, byte for byte (with its hash and
// signature), so a receiver can check the chain; a record whose fields do not match its
// hash is refused.
func FormatRFC5424(rec *Record, facility int, hostname, app string) ([]byte, error) {
	line, err := appendRecordLine(nil, rec)
	if err != nil {
		return nil, err
	}
	msg := bytes.TrimSuffix(line, []byte("\n"))
	pri := facility*8 + severity(&rec.Event)
	b := make([]byte, 0, len(msg)+256)
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(pri), 10)
	b = append(b, ">1 "...)
	b = rec.Event.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, ' ')
	b = append(b, header(hostname, 255)...)
	b = append(b, ' ')
	b = append(b, header(app, 48)...)
	b = append(b, " - "...)
	b = append(b, header(string(rec.Event.Type), 32)...)
	b = append(b, ` [symbi@32473 seq="`...)
	b = strconv.AppendUint(b, rec.Seq, 10)
	b = append(b, `" hash="`...)
	b = append(b, rec.Hash...)
	b = append(b, `" key="`...)
	b = append(b, rec.Key...)
	if rec.Writer != "" { // seq and hash belong to this writer's chain
		b = append(b, `" writer="`...)
		b = append(b, header(rec.Writer, 32)...)
	}
	b = append(b, `"] `...)
	b = append(b, "\xef\xbb\xbf"...) // BOM: MSG is UTF-8
	return append(b, msg...), nil
}

// header makes s a valid RFC 5424 header field: printable US-ASCII without spaces.
func header(s string, max int) string {
	if s == "" {
		return "-"
	}
	var sb strings.Builder
	for i := 0; i < len(s) && sb.Len() < max; i++ {
		c := s[i]
		if c < 33 || c > 126 {
			c = '_'
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

// Write sends one record.
func (s *SyslogSink) Write(ctx context.Context, rec Record) error {
	msg, err := FormatRFC5424(&rec, s.o.Facility, s.o.Hostname, s.o.AppName)
	if err != nil {
		return err
	}
	if s.o.Network == "tcp" {
		msg = append([]byte(strconv.Itoa(len(msg))+" "), msg...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; attempt < 2; attempt++ {
		if s.conn == nil {
			d := net.Dialer{Timeout: s.o.Timeout}
			c, err := d.DialContext(ctx, s.o.Network, s.o.Addr)
			if err != nil {
				return fmt.Errorf("dial syslog: %w", err)
			}
			s.conn = c
		}
		s.conn.SetWriteDeadline(time.Now().Add(s.o.Timeout))
		if _, err = s.conn.Write(msg); err == nil {
			return nil
		}
		s.conn.Close()
		s.conn = nil
	}
	return fmt.Errorf("write syslog: %w", err)
}

// Close closes the connection.
func (s *SyslogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
