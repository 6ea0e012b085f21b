package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrSinkClosed is returned by a sink's Write after Close.
var ErrSinkClosed = errors.New("audit sink closed")

// HTTPSinkWriterHeader names, on each request of a process that writes a writer slot's
// chain (not the main one), the writer whose chain the lines belong to: their seq and
// hashes chain within it.
const HTTPSinkWriterHeader = "Symbi-Audit-Writer"

// Delivery timing of an HTTPSink.
const (
	httpSinkUserAgent    = "symbi-audit/1"
	httpSinkCloseTimeout = 5 * time.Second        // Close's bound on the final flush
	httpSinkMinBackoff   = 100 * time.Millisecond // first retry
	httpSinkMaxBackoff   = 5 * time.Second        // cap, also on Retry-After
)

// HTTPSinkOptions configure an HTTPSink. Only URL is required; zero values mean the
// defaults noted.
type HTTPSinkOptions struct {
	URL           string            // collector endpoint: http or https with a host
	Headers       map[string]string // set on every request, e.g. Authorization
	Client        *http.Client      // nil: a client with a 10s timeout
	BatchSize     int               // records per request; 0 means 100
	FlushInterval time.Duration     // how long records wait for a full batch; 0 means 1s
	MaxRetries    int               // retries of a failed batch; 0 means 10 (~30 s of backoff), negative none
	MaxBuffer     int               // records held while the collector lags; 0 means 10,000
	Logger        *slog.Logger      // nil: discard
}

// HTTPSinkStats are an HTTPSink's counters since NewHTTPSink.
type HTTPSinkStats struct {
	Sent     uint64 // records the collector accepted (2xx)
	Dropped  uint64 // records it never got: evicted from a full buffer, in a failed batch, or cut off by Close
	Failures uint64 // batches given up on: retries exhausted, refused (4xx), or cut off by Close
	Retries  uint64 // repeated attempts after a 5xx, 429 or network error
	Buffered int    // records waiting now (not counting a batch in flight)
}

// HTTPSink ships records to an HTTP(S) collector, such as a SIEM's ingestion endpoint. Each
// POST carries a batch as NDJSON (application/x-ndjson): one record per line, in sequence
// order, each line byte for byte the line the file trail holds, so the collector can
// recompute the hash chain and check the signatures.
//
// Write never waits for the network: it appends to a bounded in-memory buffer that one
// goroutine, owned by the sink, posts from when BatchSize records are waiting or
// FlushInterval has passed, one batch at a time. 5xx, 429 and network errors are retried
// with exponential backoff (honouring Retry-After on 429 and 503) up to MaxRetries; then
// the batch is dropped. Other statuses are not retried. When the collector is down for
// long the buffer fills and its oldest records are dropped. Every loss is counted (Stats)
// and logged at a rate that halves as losses grow: the file trail stays the authoritative,
// verifiable copy, and a collector sees a loss as a gap in seq and prev_hash.
//
// Close (called by Log.Close for the Log's Sinks) flushes what is buffered within a
// bound and stops the goroutine; an HTTPSink that is not closed leaks it.
type HTTPSink struct {
	o   HTTPSinkOptions
	url string
	log *slog.Logger

	mu     sync.Mutex
	buf    lineRing
	closed bool
	writer atomic.Pointer[string] // the writer's chain the records come from, sent as HTTPSinkWriterHeader

	full   chan struct{} // a batch is waiting; capacity 1
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the flusher returns
	ctx    context.Context
	cancel context.CancelFunc

	closeOnce sync.Once
	closeErr  error

	sent, dropped, failures, retries, evicted atomic.Uint64
}

// NewHTTPSink validates the options and starts the flusher; nothing is sent until records
// arrive.
func NewHTTPSink(opts HTTPSinkOptions) (*HTTPSink, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("new http sink: parse url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("new http sink: url %q: want http or https with a host", u.Redacted())
	}
	for k, v := range opts.Headers {
		if !validHeaderName(k) {
			return nil, fmt.Errorf("new http sink: header name %q: not a token", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("new http sink: header %s: value has a line break or NUL", k)
		}
	}
	o := opts
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	switch {
	case o.MaxRetries == 0:
		// Backoff doubles from 100 ms to a 5 s cap: ten retries ride out about half a
		// minute of collector outage before a batch is given up.
		o.MaxRetries = 10
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	if o.MaxBuffer <= 0 {
		o.MaxBuffer = 10_000
	}
	o.BatchSize = min(o.BatchSize, o.MaxBuffer)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &HTTPSink{
		o:    o,
		url:  u.String(),
		log:  o.Logger.With("sink", "http", "url", u.Redacted()),
		full: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.run()
	return s, nil
}

// validHeaderName reports whether k is an HTTP field name (an RFC 9110 token).
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Write encodes rec as its trail line and buffers it; it does not block on the network.
// When the buffer is full the oldest buffered record is dropped to make room.
func (s *HTTPSink) Write(_ context.Context, rec Record) error {
	line, err := appendRecordLine(nil, &rec)
	if err != nil {
		return fmt.Errorf("write http sink: %w", err)
	}
	if rec.Writer != "" && s.writer.Load() == nil {
		s.writer.Store(&rec.Writer) // one Log feeds a sink: one writer
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("write http sink: %w", ErrSinkClosed)
	}
	evicted := false
	if s.buf.len() >= s.o.MaxBuffer {
		s.buf.pop()
		s.dropped.Add(1) // under mu, so CloseContext's count of its own losses is exact
		evicted = true
	}
	s.buf.push(line, s.o.MaxBuffer)
	ready := s.buf.len() >= s.o.BatchSize
	s.mu.Unlock()
	if evicted {
		if n := s.evicted.Add(1); n&(n-1) == 0 { // log on powers of two
			s.log.Warn("audit http sink buffer full, oldest record dropped", "evicted", n)
		}
	}
	if ready {
		select {
		case s.full <- struct{}{}:
		default:
		}
	}
	return nil
}

// Stats returns the counters.
func (s *HTTPSink) Stats() HTTPSinkStats {
	s.mu.Lock()
	n := s.buf.len()
	s.mu.Unlock()
	return HTTPSinkStats{
		Sent:     s.sent.Load(),
		Dropped:  s.dropped.Load(),
		Failures: s.failures.Load(),
		Retries:  s.retries.Load(),
		Buffered: n,
	}
}

// Close stops accepting records, flushes what is buffered for up to 5s and stops the
// flusher. It is safe to call more than once; later calls return the first one's result.
func (s *HTTPSink) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), httpSinkCloseTimeout)
	defer cancel()
	return s.CloseContext(ctx)
}

// CloseContext is Close with the final flush bounded by ctx instead: when ctx ends, the
// request in flight is cancelled and what is still buffered is dropped. It returns an
// error when records that were buffered at Close were not delivered.
func (s *HTTPSink) CloseContext(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true // no evictions from here on: Dropped grows only by failed batches
		s.mu.Unlock()
		before := s.dropped.Load()
		close(s.stop)
		select {
		case <-s.done:
		case <-ctx.Done():
			s.cancel()
			<-s.done
		}
		s.cancel()
		if lost := s.dropped.Load() - before; lost > 0 {
			if err := ctx.Err(); err != nil {
				s.closeErr = fmt.Errorf("flush http sink: %d records not delivered: %w", lost, err)
			} else {
				s.closeErr = fmt.Errorf("flush http sink: %d records not delivered", lost)
			}
		}
	})
	return s.closeErr
}

// run is the flusher: it posts full batches as they fill, everything on each tick, and
// everything once more when Close stops it.
func (s *HTTPSink) run() {
	defer close(s.done)
	tick := time.NewTicker(s.o.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			for s.flush(1) {
			}
			return
		case <-s.full:
			for s.flush(s.o.BatchSize) {
			}
		case <-tick.C:
			for s.flush(1) {
			}
		}
	}
}

// flush posts one batch of up to BatchSize records if at least atLeast are buffered, and
// reports whether it took one.
func (s *HTTPSink) flush(atLeast int) bool {
	s.mu.Lock()
	var batch [][]byte
	if n := s.buf.len(); n >= atLeast && n > 0 {
		batch = make([][]byte, min(n, s.o.BatchSize))
		for i := range batch {
			batch[i] = s.buf.pop()
		}
	}
	s.mu.Unlock()
	if batch == nil {
		return false
	}
	s.deliver(batch)
	return true
}

// deliver posts one batch, retrying as configured, and counts the outcome.
func (s *HTTPSink) deliver(batch [][]byte) {
	body := bytes.Join(batch, nil)
	n := uint64(len(batch))
	for attempt := 0; ; attempt++ {
		status, retryAfter, err := s.post(body)
		if err == nil && status >= 200 && status <= 299 {
			s.sent.Add(n)
			return
		}
		retryable := err != nil || status == http.StatusTooManyRequests || status >= 500
		if !retryable || attempt >= s.o.MaxRetries || s.ctx.Err() != nil {
			s.giveUp(n, status, err, attempt+1)
			return
		}
		s.retries.Add(1)
		d := retryDelay(attempt, status, retryAfter, time.Now())
		s.log.Debug("audit http sink retrying batch", "status", status, "err", err, "attempt", attempt+1, "delay", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			s.giveUp(n, status, s.ctx.Err(), attempt+1)
			return
		}
	}
}

// giveUp drops a batch and logs on powers of two of the failure count.
func (s *HTTPSink) giveUp(records uint64, status int, err error, attempts int) {
	s.dropped.Add(records)
	if f := s.failures.Add(1); f&(f-1) == 0 {
		s.log.Warn("audit http sink batch dropped", "status", status, "err", err,
			"records", records, "attempts", attempts, "failures", f)
	}
}

// post sends one request. err is a transport error; otherwise status and the
// Retry-After header describe the response.
func (s *HTTPSink) post(body []byte) (status int, retryAfter string, err error) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, "", fmt.Errorf("build audit batch request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("User-Agent", httpSinkUserAgent)
	if w := s.writer.Load(); w != nil {
		req.Header.Set(HTTPSinkWriterHeader, *w)
	}
	for k, v := range s.o.Headers {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := s.o.Client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("post audit batch: %w", err)
	}
	defer resp.Body.Close()
	// Read some of the body so the connection can be reused; a collector's error text
	// helps the operator.
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if len(snippet) > 0 {
			s.log.Debug("audit http sink collector refused batch", "status", resp.StatusCode, "body", string(snippet))
		}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, resp.Header.Get("Retry-After"), nil
}

// retryDelay is how long to wait before retry attempt+1: exponential from 100ms, capped at
// 5s; a 429 or 503 with a Retry-After (seconds or an HTTP date) waits that long instead,
// up to the same cap.
func retryDelay(attempt, status int, retryAfter string, now time.Time) time.Duration {
	d := httpSinkMinBackoff
	for i := 0; i < attempt && d < httpSinkMaxBackoff; i++ {
		d *= 2
	}
	d = min(d, httpSinkMaxBackoff)
	if (status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable) || retryAfter == "" {
		return d
	}
	retryAfter = strings.TrimSpace(retryAfter)
	if secs, err := strconv.ParseUint(retryAfter, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if err != nil || secs >= uint64(httpSinkMaxBackoff/time.Second) {
			return httpSinkMaxBackoff
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(retryAfter); err == nil {
		return min(max(t.Sub(now), 0), httpSinkMaxBackoff)
	}
	return d
}

// appendRecordLine appends rec as the line the trail holds for it, newline included: the
// same bytes, so a collector can check the chain. It refuses a record whose fields do not
// hash to its Hash, since that line would fail verification anyway.
func appendRecordLine(dst []byte, rec *Record) ([]byte, error) {
	ev := rec.Event
	ev.Seq = 0 // the trail's event bytes carry no seq: the entry's header does
	body, err := json.Marshal(&ev)
	if err != nil {
		return nil, fmt.Errorf("encode record event: %w", err)
	}
	h := entryHeader{Seq: rec.Seq, Key: rec.Key, PrevSegment: rec.PrevSegment}
	if err := decodeHex32(rec.PrevHash, &h.PrevHash); err != nil {
		return nil, fmt.Errorf("encode record prev_hash: %w", err)
	}
	if len(rec.Key) != 16 || !isHex(rec.Key) {
		return nil, errors.New("encode record key: not a key id")
	}
	if rec.PrevSegment != "" && !validSegmentName(rec.PrevSegment) {
		return nil, errors.New("encode record prev_segment: not a segment name")
	}
	var hash [32]byte
	if err := decodeHex32(rec.Hash, &hash); err != nil {
		return nil, fmt.Errorf("encode record hash: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(rec.Sig)
	if err != nil {
		return nil, fmt.Errorf("encode record sig: %w", err)
	}
	canonical := appendCanonical(make([]byte, 0, len(body)+200), &h, body)
	if chainHash(h.PrevHash, canonical) != hash {
		return nil, fmt.Errorf("encode record %d: fields do not match its hash", rec.Seq)
	}
	return appendLine(dst, canonical, hash, sig), nil
}

// lineRing is a FIFO of encoded lines that grows up to a limit.
type lineRing struct {
	buf   [][]byte
	start int
	n     int
}

func (r *lineRing) len() int { return r.n }

// push appends b; the caller keeps len below limit.
func (r *lineRing) push(b []byte, limit int) {
	if r.n == len(r.buf) {
		nb := make([][]byte, min(max(2*len(r.buf), 64), limit))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.start+i)%len(r.buf)]
		}
		r.buf, r.start = nb, 0
	}
	r.buf[(r.start+r.n)%len(r.buf)] = b
	r.n++
}

// pop removes and returns the oldest line; the ring must not be empty.
func (r *lineRing) pop() []byte {
	b := r.buf[r.start]
	r.buf[r.start] = nil
	r.start = (r.start + 1) % len(r.buf)
	r.n--
	return b
}
