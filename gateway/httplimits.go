package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTPLimits bound what HTTP clients can hold on to. A zero field takes its default.
type HTTPLimits struct {
	// SessionIdleTimeout closes a stateful session (streamable HTTP, 2025-11-25) that has
	// had no request open for this long; its next request gets 404 and the client starts
	// a new session. 0 = 30m; negative = never.
	SessionIdleTimeout time.Duration
	// MaxSessions caps open client sessions (all transports); a new session beyond it is
	// refused with 503 and Retry-After. 0 = 1000; negative = no cap.
	MaxSessions int
	// MaxInflightBytes bounds the request bytes of all requests being handled at once;
	// beyond it a request is refused with 503 and Retry-After. 0 = 16 × MaxMessageBytes.
	MaxInflightBytes int64
	// MaxInflightBytesPerIdentity bounds them per identity; beyond it a request is
	// refused with 429 and Retry-After. 0 = 4 × MaxMessageBytes.
	MaxInflightBytesPerIdentity int64
}

// Defaults of HTTPLimits.
const (
	DefaultSessionIdleTimeout = 30 * time.Minute
	DefaultMaxSessions        = 1000
)

// retryAfterSeconds is the Retry-After that symbi sends with a refusal for load.
const retryAfterSeconds = 1

func (l HTTPLimits) withDefaults(maxMessage int) HTTPLimits {
	if l.SessionIdleTimeout == 0 {
		l.SessionIdleTimeout = DefaultSessionIdleTimeout
	}
	if l.MaxSessions == 0 {
		l.MaxSessions = DefaultMaxSessions
	}
	if l.MaxInflightBytesPerIdentity == 0 {
		l.MaxInflightBytesPerIdentity = 4 * int64(maxMessage)
	}
	if l.MaxInflightBytes == 0 {
		l.MaxInflightBytes = 16 * int64(maxMessage)
	}
	return l
}

// refuseForLoad answers a request that may be retried later.
func refuseForLoad(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	http.Error(w, msg, code)
}

// inflightLimiter bounds the request bytes being handled at once, in total and per
// identity. A request is charged its Content-Length, or the message limit when it does
// not declare one, from before its body is read until its handler returns (for a
// streamable HTTP request, until its response is complete): the memory a request costs
// grows with its size and lives that long.
type inflightLimiter struct {
	g           *Gateway
	max, perMax int64
	unknownSize int64

	mu    sync.Mutex
	total int64
	per   map[string]int64
}

func newInflightLimiter(g *Gateway, l HTTPLimits) *inflightLimiter {
	return &inflightLimiter{g: g, max: l.MaxInflightBytes, perMax: l.MaxInflightBytesPerIdentity,
		unknownSize: int64(g.opts.MaxMessageBytes), per: map[string]int64{}}
}

// acquire charges n bytes to id; it returns 0 on success, else the HTTP status of the
// refusal (429: this identity's share is used up; 503: the total is).
func (l *inflightLimiter) acquire(id string, n int64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A request alone is always admitted (its size is bounded by the message limit), so
	// the limits can never starve a client that waits its turn.
	if l.per[id] > 0 && l.per[id]+n > l.perMax {
		return http.StatusTooManyRequests
	}
	if l.total > 0 && l.total+n > l.max {
		return http.StatusServiceUnavailable
	}
	l.per[id] += n
	l.total += n
	l.g.metrics.inflightBytes.Set(float64(l.total))
	return 0
}

func (l *inflightLimiter) release(id string, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total -= n
	if l.per[id] -= n; l.per[id] <= 0 {
		delete(l.per, id)
	}
	l.g.metrics.inflightBytes.Set(float64(l.total))
}

// wrap limits the requests that carry client messages (POST); it runs after
// authentication, so it knows the identity.
func (l *inflightLimiter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		n := r.ContentLength
		if n < 0 || n > l.unknownSize {
			n = l.unknownSize // undeclared (chunked): charge the most it may be; larger: refused by the body limit
		}
		id := identityOf(r).ID
		if code := l.acquire(id, n); code != 0 {
			scope := "total"
			if code == http.StatusTooManyRequests {
				scope = "identity"
			}
			l.g.metrics.inflightRefused.WithLabelValues(scope).Inc()
			refuseForLoad(w, code, fmt.Sprintf("symbi: too many request bytes in flight (%s limit); retry later", scope))
			return
		}
		defer l.release(id, n)
		next.ServeHTTP(w, r)
	})
}

// sessionLimiter caps open sessions and closes stateful streamable HTTP sessions that
// stay idle (no request of theirs open) for longer than the idle timeout.
type sessionLimiter struct {
	g    *Gateway
	idle time.Duration
	max  int

	mu      sync.Mutex
	pending int // sessions being opened, not yet counted by the server
	tracked map[string]*idleSession
	fast    *fastSessions // told of the sessions it expires
}

type idleSession struct {
	open  int // requests of the session being handled
	timer *time.Timer
}

func newSessionLimiter(g *Gateway, l HTTPLimits) *sessionLimiter {
	return &sessionLimiter{g: g, idle: l.SessionIdleTimeout, max: l.MaxSessions, tracked: map[string]*idleSession{}}
}

// admit reserves room for a new session; done must be called once the session is open
// (or failed to open). ok is false, and the refusal answered, when the cap is reached.
func (s *sessionLimiter) admit(w http.ResponseWriter, transport string) (done func(), ok bool) {
	if s.max < 0 {
		return func() {}, true
	}
	s.mu.Lock()
	if s.g.sessionCount()+s.pending >= s.max {
		s.mu.Unlock()
		s.g.metrics.sessionsRefused.WithLabelValues(transport).Inc()
		refuseForLoad(w, http.StatusServiceUnavailable, fmt.Sprintf("symbi: too many open sessions (server.max_sessions = %d); retry later", s.max))
		return nil, false
	}
	s.pending++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.pending--
			s.mu.Unlock()
		})
	}, true
}

// begin marks a request of session id as open: the session is not idle while it is.
func (s *sessionLimiter) begin(id string) {
	if s.idle < 0 || id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tracked[id]; t != nil {
		t.open++
		t.timer.Stop()
	}
}

// end marks a request of session id as finished; the session's idle clock starts when
// none is left. A session symbi has not seen before (the one an initialize request just
// opened) starts being tracked here.
func (s *sessionLimiter) end(id string, known bool) {
	if s.idle < 0 || id == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tracked[id]
	if t == nil {
		if known {
			return // expired, or closed, while this request ran
		}
		t = &idleSession{}
		t.timer = time.AfterFunc(s.idle, func() { s.expire(id, t) })
		s.tracked[id] = t
		return
	}
	if t.open--; t.open <= 0 {
		t.open = 0
		t.timer.Reset(s.idle)
	}
}

// forget stops tracking a session the client ended (DELETE).
func (s *sessionLimiter) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tracked[id]; t != nil {
		t.timer.Stop()
		delete(s.tracked, id)
	}
}

// expire closes an idle session, unless a request of it began in the meantime.
func (s *sessionLimiter) expire(id string, t *idleSession) {
	s.mu.Lock()
	if s.tracked[id] != t || t.open > 0 {
		s.mu.Unlock()
		return
	}
	delete(s.tracked, id)
	s.mu.Unlock()
	s.fast.gone(id)
	for ss := range s.g.server.Sessions() {
		if ss.ID() == id {
			s.g.log.Info("closing idle session", "session", id, "idle", s.idle.String())
			s.g.metrics.sessionsExpired.Inc()
			_ = ss.Close()
			return
		}
	}
}

// httpMetrics are the series of the HTTP limits.
type httpMetrics struct {
	sessionsExpired prometheus.Counter
	sessionsRefused *prometheus.CounterVec
	inflightBytes   prometheus.Gauge
	inflightRefused *prometheus.CounterVec
}

func newHTTPMetrics(r *prometheus.Registry) httpMetrics {
	m := httpMetrics{
		sessionsExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "symbi_sessions_expired_total", Help: "Stateful HTTP sessions closed after server.session_idle_timeout without a request.",
		}),
		sessionsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_sessions_refused_total", Help: "New sessions refused because server.max_sessions were open, by transport.",
		}, []string{"transport"}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "symbi_inflight_request_bytes", Help: "Request bytes of the HTTP requests being handled.",
		}),
		inflightRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_inflight_refused_total", Help: "HTTP requests refused because too many request bytes were in flight, by limit (identity, total).",
		}, []string{"limit"}),
	}
	r.MustRegister(m.sessionsExpired, m.sessionsRefused, m.inflightBytes, m.inflightRefused)
	return m
}

// admittedWriter releases a session's admission slot when the response starts: by then
// the server counts the session, and the client may already open the next one.
type admittedWriter struct {
	http.ResponseWriter
	done func()
}

func (w *admittedWriter) WriteHeader(code int) {
	w.done()
	w.ResponseWriter.WriteHeader(code)
}

func (w *admittedWriter) Write(b []byte) (int, error) {
	w.done()
	return w.ResponseWriter.Write(b)
}

func (w *admittedWriter) Flush() {
	w.done()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *admittedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
