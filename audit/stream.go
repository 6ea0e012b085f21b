package audit

import (
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// fanout hands written entries to the recent buffer, live subscribers and extra sinks.
// Every hand-off is non-blocking.
func (l *Log) fanout(pend []pending) {
	if len(pend) == 0 {
		return
	}
	recs := make([]Record, 0, len(pend))
	for i := range pend {
		p := &pend[i]
		if !p.written {
			break // write failure
		}
		ev := *p.ev
		ev.Seq = p.hdr.Seq
		recs = append(recs, Record{Seq: p.hdr.Seq, PrevHash: hex.EncodeToString(p.hdr.PrevHash[:]),
			Key: p.hdr.Key, PrevSegment: p.hdr.PrevSegment, Hash: hex.EncodeToString(p.hash[:]),
			Sig: encodeSig(p.sig), Event: ev, Writer: l.recWriter()})
	}
	l.rec.add(recs)
	for i := range recs {
		l.hub.broadcast(recs[i])
		for _, s := range l.sinks {
			s.offer(recs[i])
		}
	}
}

// Recent returns up to n of the most recently written records, oldest first. It serves
// the MCP resource symbi://audit/recent.
func (l *Log) Recent(n int) []Record { return l.rec.last(n) }

type ring struct {
	mu   sync.Mutex
	buf  []Record
	next int
	full bool
}

func newRing(n int) *ring { return &ring{buf: make([]Record, n)} }

func (r *ring) add(recs []Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		r.buf[r.next] = rec
		r.next++
		if r.next == len(r.buf) {
			r.next, r.full = 0, true
		}
	}
}

func (r *ring) last(n int) []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := r.next
	if r.full {
		size = len(r.buf)
	}
	n = min(max(n, 0), size)
	out := make([]Record, 0, n)
	for i := r.next - n; i < r.next; i++ {
		out = append(out, r.buf[(i+len(r.buf))%len(r.buf)])
	}
	return out
}

// Subscription receives records as they are written. C is closed when the subscriber is
// dropped for being too slow, or when the Log closes.
type Subscription struct {
	C   <-chan Record
	ch  chan Record
	hub *hub
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() { s.hub.remove(s) }

type hub struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
	log    *slog.Logger
	bufLen int
	cut    atomic.Uint64
}

func newHub(log *slog.Logger, bufLen int) *hub {
	return &hub{subs: map[*Subscription]struct{}{}, log: log, bufLen: bufLen}
}

// Subscribe starts a live subscription with a bounded buffer. A subscriber that lets its
// buffer fill is dropped (its channel closed, a warning logged) rather than slowing the
// writer.
func (l *Log) Subscribe() *Subscription {
	h := l.hub
	ch := make(chan Record, h.bufLen)
	s := &Subscription{C: ch, ch: ch, hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

func (h *hub) broadcast(rec Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- rec:
		default:
			delete(h.subs, s)
			close(s.ch)
			h.cut.Add(1)
			h.log.Warn("audit live subscriber too slow, dropped", "buffer", h.bufLen)
		}
	}
}

func (h *hub) remove(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.ch)
	}
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096}

// Handler streams records as they are written: as Server-Sent Events (text/event-stream,
// one "audit" event per record, id = seq) or, on a WebSocket upgrade, as one JSON text
// frame per record. The query parameter recent=N first replays up to N recent records.
// It does no authentication: mount it behind the gateway's auth. The stream ends when the
// client goes away, when it is too slow, or when the Log closes.
func (l *Log) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		n, _ := strconv.Atoi(r.URL.Query().Get("recent"))
		sub := l.Subscribe()
		defer sub.Close()
		replay := l.Recent(min(n, l.opts.RecentSize))
		if websocket.IsWebSocketUpgrade(r) {
			l.serveWS(w, r, sub, replay)
			return
		}
		l.serveSSE(w, r, sub, replay)
	})
}

func (l *Log) serveSSE(w http.ResponseWriter, r *http.Request, sub *Subscription, replay []Record) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var last uint64
	send := func(rec *Record) bool {
		if rec.Seq <= last {
			return true
		}
		last = rec.Seq
		b, err := json.Marshal(rec)
		if err != nil {
			return false
		}
		buf := make([]byte, 0, len(b)+48)
		buf = append(buf, "id: "...)
		buf = strconv.AppendUint(buf, rec.Seq, 10)
		buf = append(buf, "\nevent: audit\ndata: "...)
		buf = append(buf, b...)
		buf = append(buf, "\n\n"...)
		_, err = w.Write(buf)
		return err == nil
	}
	for i := range replay {
		if !send(&replay[i]) {
			return
		}
	}
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case rec, ok := <-sub.C:
			if !ok {
				w.Write([]byte("event: end\ndata: {}\n\n"))
				fl.Flush()
				return
			}
			if !send(&rec) {
				return
			}
			fl.Flush()
		case <-keep.C:
			if _, err := w.Write([]byte(": keepalive\n\n")); err != nil {
				return
			}
			fl.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func (l *Log) serveWS(w http.ResponseWriter, r *http.Request, sub *Subscription, replay []Record) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has replied
	}
	defer conn.Close()
	gone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // reads control frames; ends when the client closes or the conn does
		defer close(gone)
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	})
	defer wg.Wait()
	defer conn.Close() // runs before wg.Wait, ending the reader
	var last uint64
	send := func(rec *Record) bool {
		if rec.Seq <= last {
			return true
		}
		last = rec.Seq
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteJSON(rec) == nil
	}
	for i := range replay {
		if !send(&replay[i]) {
			return
		}
	}
	for {
		select {
		case rec, ok := <-sub.C:
			if !ok {
				conn.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseGoingAway, "audit stream ended"), time.Now().Add(time.Second))
				return
			}
			if !send(&rec) {
				return
			}
		case <-gone:
			return
		case <-r.Context().Done():
			return
		}
	}
}
