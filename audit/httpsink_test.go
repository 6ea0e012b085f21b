package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// collector is a local HTTP receiver. respond decides each request's status by its
// 1-based number; 0 means 200 and -1 drops the connection without a response. Only
// batches answered 2xx count as delivered.
type collector struct {
	t       *testing.T
	respond func(n int, w http.ResponseWriter) int

	mu       sync.Mutex
	requests int
	batches  [][]string // delivered batches, lines with their newline
	headers  []http.Header
	arrived  chan struct{} // one per request, before it is answered
}

func newCollector(t *testing.T, tls bool, respond func(n int, w http.ResponseWriter) int) (*collector, *httptest.Server) {
	c := &collector{t: t, respond: respond, arrived: make(chan struct{}, 10000)}
	h := http.HandlerFunc(c.serve)
	var srv *httptest.Server
	if tls {
		srv = httptest.NewTLSServer(h)
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return c, srv
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		c.t.Errorf("read batch: %v", err)
		return
	}
	c.mu.Lock()
	c.requests++
	n := c.requests
	c.headers = append(c.headers, r.Header.Clone())
	c.mu.Unlock()
	c.arrived <- struct{}{}
	if r.Method != http.MethodPost {
		c.t.Errorf("method = %s, want POST", r.Method)
	}
	if len(body) == 0 || body[len(body)-1] != '\n' {
		c.t.Errorf("batch %d does not end with a newline: %q", n, body)
	}
	status := http.StatusOK
	if c.respond != nil {
		if s := c.respond(n, w); s != 0 {
			status = s
		}
	}
	if status == -1 {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			c.t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	if status/100 == 2 {
		lines := strings.SplitAfter(string(body), "\n")
		c.mu.Lock()
		c.batches = append(c.batches, lines[:len(lines)-1])
		c.mu.Unlock()
	}
	w.WriteHeader(status)
}

// snapshot returns the request count, the delivered batches' sizes and all delivered lines.
func (c *collector) snapshot() (requests int, sizes []int, lines []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.batches {
		sizes = append(sizes, len(b))
		lines = append(lines, b...)
	}
	return c.requests, sizes, lines
}

// eventually polls cond until it holds; the 10s limit is a bound, not a measurement.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// trailRecords writes a real trail of n entries (genesis included) and returns its
// records as read back and its lines as stored, newline included.
func trailRecords(t *testing.T, n int) (recs []Record, lines []string, pub ed25519.PublicKey) {
	t.Helper()
	l, dir := openTest(t, nil)
	appendN(t, l, n-1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(context.Background(), dir, func(r Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	lines = segmentLines(t, dir)
	if len(recs) != n || len(lines) != n {
		t.Fatalf("trail has %d records, %d lines; want %d", len(recs), len(lines), n)
	}
	return recs, lines, trustedKey(t, dir)
}

func segmentLines(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, s := range segs {
		b, err := os.ReadFile(filepath.Join(dir, s))
		if err != nil {
			t.Fatal(err)
		}
		l := strings.SplitAfter(string(b), "\n")
		lines = append(lines, l[:len(l)-1]...)
	}
	return lines
}

func newTestHTTPSink(t *testing.T, o HTTPSinkOptions) *HTTPSink {
	t.Helper()
	s, err := NewHTTPSink(o)
	if err != nil {
		t.Fatalf("NewHTTPSink: %v", err)
	}
	t.Cleanup(func() { s.CloseContext(canceledContext()) })
	return s
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func writeAll(t *testing.T, s *HTTPSink, recs []Record) {
	t.Helper()
	for _, r := range recs {
		if err := s.Write(context.Background(), r); err != nil {
			t.Fatalf("Write seq %d: %v", r.Seq, err)
		}
	}
}

func TestNewHTTPSinkValidates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    HTTPSinkOptions
		wantErr string
	}{
		{"https", HTTPSinkOptions{URL: "https://siem.example:8088/services/collector"}, ""},
		{"http with auth header", HTTPSinkOptions{URL: "http://127.0.0.1:9/x", Headers: map[string]string{"Authorization": "Splunk abc"}}, ""},
		{"empty", HTTPSinkOptions{}, "want http or https"},
		{"ftp", HTTPSinkOptions{URL: "ftp://siem.example/"}, "want http or https"},
		{"no host", HTTPSinkOptions{URL: "https:///ingest"}, "want http or https"},
		{"relative", HTTPSinkOptions{URL: "/ingest"}, "want http or https"},
		{"unparsable", HTTPSinkOptions{URL: "http://[::1"}, "parse url"},
		{"password redacted", HTTPSinkOptions{URL: "gopher://u:hunter2@siem.example/"}, "u:xxxxx@"},
		{"header name", HTTPSinkOptions{URL: "https://siem.example/", Headers: map[string]string{"Bad Name": "v"}}, "not a token"},
		{"header value", HTTPSinkOptions{URL: "https://siem.example/", Headers: map[string]string{"X-Token": "a\r\nX-Evil: 1"}}, "line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewHTTPSink(tc.opts)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("NewHTTPSink: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Errorf("Close of an idle sink: %v", err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("NewHTTPSink(%+v) succeeded, want error %q", tc.opts, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error = %q, want it to contain %q (and no password)", err, tc.wantErr)
			}
		})
	}
}

// Records arrive complete, in order, byte for byte as in the trail, and a collector can
// check the chain and signatures from the batches alone.
func TestHTTPSinkDeliversTrailLinesInOrder(t *testing.T) {
	recs, want, pub := trailRecords(t, 25)
	c, srv := newCollector(t, false, nil)
	s := newTestHTTPSink(t, HTTPSinkOptions{URL: srv.URL, BatchSize: 4, FlushInterval: time.Hour})
	writeAll(t, s, recs)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, sizes, got := c.snapshot()
	if diff := cmp.Diff([]int{4, 4, 4, 4, 4, 4, 1}, sizes); diff != "" {
		t.Errorf("batch sizes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("delivered lines differ from the trail (-want +got):\n%s", diff)
	}
	var prev [32]byte
	for i, line := range got {
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if r.Seq != recs[i].Seq || r.Hash != recs[i].Hash {
			t.Errorf("line %d: seq %d hash %s, want seq %d hash %s", i, r.Seq, r.Hash, recs[i].Seq, recs[i].Hash)
		}
		// What a collector would do: recompute the chain and check the signatures.
		p, err := parseLine([]byte(strings.TrimSuffix(line, "\n")))
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if p.header.PrevHash != prev || chainHash(prev, p.canonical) != p.hash {
			t.Errorf("line %d (seq %d) does not chain", i, p.header.Seq)
		}
		if len(p.sig) > 0 && !ed25519.Verify(pub, p.hash[:], p.sig) {
			t.Errorf("line %d (seq %d): bad signature", i, p.header.Seq)
		}
		prev = p.hash
	}
	if st := s.Stats(); st != (HTTPSinkStats{Sent: 25}) {
		t.Errorf("Stats = %+v, want Sent 25 only", st)
	}
}

func TestHTTPSinkRefusesRecordThatDoesNotMatchItsHash(t *testing.T) {
	recs, _, _ := trailRecords(t, 2)
	s := newTestHTTPSink(t, HTTPSinkOptions{URL: "http://127.0.0.1:9/"})
	rec := recs[1]
	rec.Event.Tool = "edited"
	if err := s.Write(context.Background(), rec); err == nil || !strings.Contains(err.Error(), "do not match") {
		t.Errorf("Write of an edited record: err = %v, want a hash mismatch", err)
	}
	if n := s.Stats().Buffered; n != 0 {
		t.Errorf("Buffered = %d, want 0", n)
	}
}

func TestHTTPSinkHeadersOverTLS(t *testing.T) {
	recs, _, _ := trailRecords(t, 3)
	c, srv := newCollector(t, true, nil)
	s := newTestHTTPSink(t, HTTPSinkOptions{URL: srv.URL + "/services/collector", Client: srv.Client(),
		Headers: map[string]string{"Authorization": "Splunk 1234", "x-splunk-request-channel": "abc"}})
	writeAll(t, s, recs)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.headers) != 1 {
		t.Fatalf("got %d requests, want 1", len(c.headers))
	}
	h := c.headers[0]
	for k, want := range map[string]string{
		"Content-Type":             "application/x-ndjson",
		"User-Agent":               "symbi-audit/1",
		"Authorization":            "Splunk 1234",
		"X-Splunk-Request-Channel": "abc",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

func TestHTTPSinkBatching(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      HTTPSinkOptions
		records   int
		delivered int   // records the collector has before Close
		buffered  int   // records still waiting then
		want      []int // batch sizes after Close
	}{
		// Interval an hour: only the size can trigger a post; the tail waits for Close.
		{"by size", HTTPSinkOptions{BatchSize: 5, FlushInterval: time.Hour}, 12, 10, 2, []int{5, 5, 2}},
		// Batch never fills: only the interval can trigger a post.
		{"by interval", HTTPSinkOptions{BatchSize: 1000, FlushInterval: 10 * time.Millisecond}, 3, 3, 0, []int{3}},
		// Close posts the tail.
		{"close flushes the tail", HTTPSinkOptions{BatchSize: 100, FlushInterval: time.Hour}, 7, 0, 7, []int{7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, want, _ := trailRecords(t, tc.records)
			c, srv := newCollector(t, false, nil)
			tc.opts.URL = srv.URL
			s := newTestHTTPSink(t, tc.opts)
			writeAll(t, s, recs)
			if tc.delivered > 0 {
				eventually(t, fmt.Sprintf("%d records sent", tc.delivered), func() bool {
					return s.Stats().Sent >= uint64(tc.delivered)
				})
			}
			if st := s.Stats(); st.Buffered != tc.buffered || st.Sent != uint64(tc.delivered) {
				t.Errorf("before Close: Stats = %+v, want Buffered %d Sent %d", st, tc.buffered, tc.delivered)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			_, sizes, got := c.snapshot()
			if diff := cmp.Diff(tc.want, sizes); diff != "" {
				t.Errorf("batch sizes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPSinkRetries(t *testing.T) {
	script := func(statuses ...int) func(int, http.ResponseWriter) int {
		return func(n int, w http.ResponseWriter) int {
			if n > len(statuses) {
				return 200
			}
			if statuses[n-1] == 429 {
				w.Header().Set("Retry-After", "0")
			}
			return statuses[n-1]
		}
	}
	for _, tc := range []struct {
		name       string
		respond    func(int, http.ResponseWriter) int
		maxRetries int
		requests   int
		want       HTTPSinkStats
		wantLog    string // in the log after Close
	}{
		{"503 twice then 200", script(503, 503), 0, 3, HTTPSinkStats{Sent: 3, Retries: 2}, ""},
		{"429 with Retry-After then 200", script(429), 0, 2, HTTPSinkStats{Sent: 3, Retries: 1}, ""},
		{"connection dropped then 200", script(-1), 0, 2, HTTPSinkStats{Sent: 3, Retries: 1}, ""},
		{"400 is not retried", script(400, 400), 0, 1, HTTPSinkStats{Dropped: 3, Failures: 1}, "status=400"},
		{"500 until retries run out", script(500, 500, 500), 2, 3, HTTPSinkStats{Dropped: 3, Failures: 1, Retries: 2}, "status=500"},
		{"negative MaxRetries: no retry", script(500), -1, 1, HTTPSinkStats{Dropped: 3, Failures: 1}, "status=500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, want, _ := trailRecords(t, 3)
			c, srv := newCollector(t, false, tc.respond)
			var logs syncBuffer
			// A batch larger than the records and an hour's interval: nothing is posted
			// before Close, so Close's result must tell whether the records were lost.
			s := newTestHTTPSink(t, HTTPSinkOptions{URL: srv.URL, BatchSize: 100, FlushInterval: time.Hour,
				MaxRetries: tc.maxRetries, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			writeAll(t, s, recs)
			err := s.Close()
			if (tc.want.Dropped > 0) != (err != nil) {
				t.Errorf("Close = %v, want an error only when records were lost", err)
			}
			requests, _, got := c.snapshot()
			if requests != tc.requests {
				t.Errorf("collector saw %d requests, want %d", requests, tc.requests)
			}
			if st := s.Stats(); st != tc.want {
				t.Errorf("Stats = %+v, want %+v", st, tc.want)
			}
			if tc.want.Sent > 0 {
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("delivered lines, want the batch exactly once (-want +got):\n%s", diff)
				}
			} else if len(got) != 0 {
				t.Errorf("collector kept %d lines of a refused batch", len(got))
			}
			if l := logs.String(); tc.wantLog != "" && (!strings.Contains(l, tc.wantLog) || !strings.Contains(l, "audit http sink batch dropped")) {
				t.Errorf("log does not report the dropped batch with %s:\n%s", tc.wantLog, l)
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestRetryDelay(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		attempt    int
		status     int
		retryAfter string
		want       time.Duration
	}{
		{"first", 0, 0, "", 100 * time.Millisecond},
		{"second", 1, 502, "", 200 * time.Millisecond},
		{"fifth", 4, 500, "", 1600 * time.Millisecond},
		{"capped", 10, 500, "", 5 * time.Second},
		{"no overflow", 1000, 500, "", 5 * time.Second},
		{"503 seconds", 0, 503, "2", 2 * time.Second},
		{"429 zero", 3, 429, "0", 0},
		{"429 above cap", 0, 429, "120", 5 * time.Second},
		{"429 huge", 0, 429, "99999999999999999999", 5 * time.Second},
		{"503 date", 0, 503, now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second},
		{"503 date past", 0, 503, now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"503 garbage", 1, 503, "soon", 200 * time.Millisecond},
		{"500 ignores Retry-After", 0, 500, "3", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryDelay(tc.attempt, tc.status, tc.retryAfter, now); got != tc.want {
				t.Errorf("retryDelay(%d, %d, %q) = %v, want %v", tc.attempt, tc.status, tc.retryAfter, got, tc.want)
			}
		})
	}
}

// A collector that never answers holds one batch in flight; Write still returns at once,
// the buffer keeps the newest MaxBuffer records and the oldest are dropped and counted.
func TestHTTPSinkStuckCollectorDropsOldest(t *testing.T) {
	const total, batch, maxBuf = 300, 10, 50
	recs, want, _ := trailRecords(t, total)
	release := make(chan struct{})
	var once sync.Once
	c, srv := newCollector(t, false, func(n int, _ http.ResponseWriter) int {
		if n == 1 {
			<-release
		}
		return 200
	})
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before srv.Close, which waits for handlers
	s := newTestHTTPSink(t, HTTPSinkOptions{URL: srv.URL, Client: &http.Client{}, BatchSize: batch,
		FlushInterval: time.Hour, MaxBuffer: maxBuf})
	writeAll(t, s, recs[:batch])
	select {
	case <-c.arrived: // the first batch is in flight and stays there
	case <-time.After(10 * time.Second):
		t.Fatal("first batch never posted")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, r := range recs[batch:] {
			if err := s.Write(context.Background(), r); err != nil {
				t.Errorf("Write: %v", err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked behind a stuck collector")
	}
	if st := s.Stats(); st != (HTTPSinkStats{Dropped: total - batch - maxBuf, Buffered: maxBuf}) {
		t.Errorf("Stats with the collector stuck = %+v, want Dropped %d Buffered %d", st, total-batch-maxBuf, maxBuf)
	}
	once.Do(func() { close(release) })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The first batch, then the newest maxBuf records: the oldest buffered ones went.
	wantLines := append(append([]string(nil), want[:batch]...), want[total-maxBuf:]...)
	_, _, got := c.snapshot()
	if diff := cmp.Diff(wantLines, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if st := s.Stats(); st.Sent+st.Dropped != total || st.Sent != batch+maxBuf {
		t.Errorf("Stats after Close = %+v, want Sent %d and every record accounted for", st, batch+maxBuf)
	}
}

func TestHTTPSinkCloseWithDeadCollector(t *testing.T) {
	recs, _, _ := trailRecords(t, 30)
	// A stuck collector: Close must cancel the request in flight at its deadline.
	stuck := make(chan struct{})
	_, hung := newCollector(t, false, func(int, http.ResponseWriter) int { <-stuck; return 200 })
	t.Cleanup(func() { close(stuck) }) // before hung.Close, which waits for handlers
	// A collector that is gone: connections are refused.
	_, gone := newCollector(t, false, nil)
	gone.Close()
	for _, tc := range []struct {
		name   string
		url    string
		client *http.Client
		close  func(*HTTPSink) error
		want   HTTPSinkStats
		cause  error
	}{
		{"stuck, CloseContext bound", hung.URL, &http.Client{}, func(s *HTTPSink) error {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			return s.CloseContext(ctx)
		}, HTTPSinkStats{Dropped: 30, Failures: 3}, context.DeadlineExceeded},
		// Each batch fails fast and gives up after its 3 retries; Close's own 5s bound
		// is not needed but must not be exceeded.
		{"refused, Close", gone.URL, nil, (*HTTPSink).Close, HTTPSinkStats{Dropped: 30, Failures: 1, Retries: 3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			batch := 10
			if tc.cause == nil {
				batch = 30
			}
			s := newTestHTTPSink(t, HTTPSinkOptions{URL: tc.url, Client: tc.client, BatchSize: batch, FlushInterval: time.Hour, MaxRetries: 3})
			writeAll(t, s, recs)
			errc := make(chan error, 1)
			go func() { errc <- tc.close(s) }()
			var err error
			select {
			case err = <-errc:
			case <-time.After(15 * time.Second):
				t.Fatal("Close hung on a dead collector")
			}
			if err == nil || (tc.cause != nil && !errors.Is(err, tc.cause)) {
				t.Errorf("Close = %v, want an error (cause %v)", err, tc.cause)
			}
			if st := s.Stats(); st.Sent != 0 || st.Dropped != tc.want.Dropped || st.Failures != tc.want.Failures ||
				(tc.cause == nil && st.Retries != tc.want.Retries) {
				t.Errorf("Stats = %+v, want %+v", st, tc.want)
			}
			if again := s.Close(); again != err {
				t.Errorf("second Close = %v, want the first result %v", again, err)
			}
			if err := s.Write(context.Background(), recs[0]); !errors.Is(err, ErrSinkClosed) {
				t.Errorf("Write after Close = %v, want ErrSinkClosed", err)
			}
		})
	}
}

func TestHTTPSinkConcurrentWrites(t *testing.T) {
	const writers, each = 8, 50
	recs, want, _ := trailRecords(t, writers*each)
	c, srv := newCollector(t, false, nil)
	s := newTestHTTPSink(t, HTTPSinkOptions{URL: srv.URL, BatchSize: 16, FlushInterval: time.Millisecond})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for _, r := range recs[w*each : (w+1)*each] {
				if err := s.Write(context.Background(), r); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				_ = s.Stats()
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, sizes, got := c.snapshot()
	for _, n := range sizes {
		if n > 16 {
			t.Errorf("batch of %d records, want at most 16", n)
		}
	}
	// Every record exactly once, and each writer's records in the order it wrote them.
	index := make(map[string]int, len(want))
	for i, l := range want {
		index[l] = i
	}
	seen := make(map[int]bool)
	last := make([]int, writers)
	for i := range last {
		last[i] = -1
	}
	for _, l := range got {
		i, ok := index[l]
		if !ok || seen[i] {
			t.Fatalf("unexpected or repeated line %q", l)
		}
		seen[i] = true
		w := i / each
		if i < last[w] {
			t.Errorf("writer %d: record %d delivered after %d", w, i, last[w])
		}
		last[w] = i
	}
	if len(seen) != len(want) {
		t.Errorf("delivered %d distinct records, want %d", len(seen), len(want))
	}
	if st := s.Stats(); st.Sent != writers*each || st.Dropped != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// Plugged into a Log, the sink delivers what the trail holds, exactly.
func TestHTTPSinkWithLog(t *testing.T) {
	c, srv := newCollector(t, false, nil)
	sink := newTestHTTPSink(t, HTTPSinkOptions{URL: srv.URL, BatchSize: 8, FlushInterval: 10 * time.Millisecond})
	l, dir := openTest(t, &Options{Sinks: []Sink{sink}, RecordArguments: true})
	ctx := context.Background()
	appendN(t, l, 20)
	if err := l.Append(ctx, Event{Type: TypeCall, Identity: "ide", Tool: "fs__write", Decision: Deny,
		Reason: `read only <"&">`, Detail: map[string]string{"z": "1", "a": "2"}}); err != nil {
		t.Fatal(err)
	}
	if err := l.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 3)
	if err := l.Close(); err != nil { // closes the sink, which flushes
		t.Fatal(err)
	}
	want := segmentLines(t, dir)
	_, _, got := c.snapshot()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("collector lines differ from the trail (-want +got):\n%s", diff)
	}
	if st := sink.Stats(); st.Sent != uint64(len(want)) || st.Dropped != 0 {
		t.Errorf("sink Stats = %+v, want Sent %d", st, len(want))
	}
	if st := l.Stats(); st.SinkErrors != 0 || st.SinkDropped != 0 {
		t.Errorf("log Stats = %+v", st)
	}
}

// TestHTTPSinkDefaults: zero options mean batches of 100 every second, ten retries
// (about half a minute of outage per batch) and a 10,000-record buffer.
func TestHTTPSinkDefaults(t *testing.T) {
	s, err := NewHTTPSink(HTTPSinkOptions{URL: "https://siem.example.com/ingest"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseContext(context.Background())
	got := []any{s.o.BatchSize, s.o.FlushInterval, s.o.MaxRetries, s.o.MaxBuffer}
	if diff := cmp.Diff([]any{100, time.Second, 10, 10000}, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}
