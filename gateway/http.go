package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTPOptions configures the HTTP surface.
type HTTPOptions struct {
	// Routes are extra handlers mounted behind the same authentication as /mcp (for
	// example an audit event stream).
	Routes map[string]http.Handler
	// Public are extra handlers mounted without authentication (for example
	// /.well-known/schemapin.json).
	Public map[string]http.Handler
	// ReadyChecks add named entries to /readyz; a check that returns ok=false makes
	// the gateway not ready.
	ReadyChecks map[string]func() (ok bool, detail any)
	// NoMetrics leaves /metrics off this handler (when it has its own listener).
	NoMetrics bool
	// AllowedOrigins are the browser origins ("https://app.example.com") served besides
	// the same origin. A request with any other Origin header is refused with 403 on
	// every route; a request without one (a non-browser client) is not affected.
	AllowedOrigins []string
	// Limits bound sessions and the request bytes in flight; the zero value means the
	// defaults of HTTPLimits.
	Limits HTTPLimits
}

// Handler serves /mcp (streamable HTTP, both protocol generations), /sse (legacy SSE
// and its POST endpoint), /ws (MCP over WebSocket), /healthz, /readyz and /metrics.
func (g *Gateway) Handler(opts *HTTPOptions) http.Handler {
	h, _ := g.handler(opts)
	return h
}

// handler is Handler, also returning its id map (for tests).
func (g *Gateway) handler(opts *HTTPOptions) (http.Handler, *idMap) {
	var o HTTPOptions
	if opts != nil {
		o = *opts
	}
	guard := newRequestGuard(o.AllowedOrigins)
	mux := http.NewServeMux()
	getServer := func(*http.Request) *mcp.Server { return g.server }
	events := mcp.NewMemoryEventStore(nil)
	stateful := mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{
		Logger:              g.log.With("component", "streamable"),
		MaxRequestBodyBytes: int64(g.opts.MaxMessageBytes),
		EventStore:          events,
	})
	stateless := mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{
		Logger:                       g.log.With("component", "streamable_stateless"),
		MaxRequestBodyBytes:          int64(g.opts.MaxMessageBytes),
		Stateless:                    true,
		PropagateRequestCancellation: true,
	})
	ids := newIDMap()
	maxMsg := int64(g.opts.MaxMessageBytes)
	limits := o.Limits.withDefaults(g.opts.MaxMessageBytes)
	sessions := newSessionLimiter(g, limits)
	inflight := newInflightLimiter(g, limits)
	fast := newFastSessions(g, events)
	sessions.fast = fast
	streamable := &generationRouter{stateful: stateful, stateless: stateless, max: int64(g.opts.MaxMessageBytes), sessions: sessions, fast: fast}
	sse := &sseHandler{g: g, sessions: map[string]*sseSession{}, limit: sessions, ids: ids}
	protect := g.authenticate
	mux.Handle("/mcp", protect(inflight.wrap(exactIDs(ids, maxMsg, streamable))))
	mux.Handle("/sse", protect(inflight.wrap(exactIDs(ids, maxMsg, sse))))
	mux.Handle("/ws", protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serveWebSocket(w, r, guard, sessions) })))
	for path, h := range o.Routes {
		mux.Handle(path, protect(h))
	}
	for path, h := range o.Public {
		mux.Handle(path, h)
	}
	for path, h := range g.OAuthRoutes() {
		if _, taken := o.Public[path]; !taken {
			mux.Handle(path, h)
		}
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { g.serveReady(w, o.ReadyChecks, g.trusted(r)) })
	if !o.NoMetrics {
		// Metrics name upstreams, tools and identities: on the main listener they are
		// served to the same clients as /mcp. metrics_listen gives Prometheus a listener
		// of its own without a token.
		mux.Handle("/metrics", protect(g.MetricsHandler()))
	}
	// One Host and Origin check in front of every route, the open ones (/healthz,
	// /readyz, /.well-known/...) included.
	return guard.wrap(mux), ids
}

// MetricsHandler serves the Prometheus metrics.
func (g *Gateway) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(g.metrics.Registry, promhttp.HandlerOpts{})
}

// serveReady answers /readyz: 200 when every upstream is up and every check passes, 503
// otherwise. The detail (upstream states and their errors, policy and sandbox status)
// goes only to a client that /mcp would serve; anyone else (a load balancer's probe)
// gets just {"ready": ...}.
func (g *Gateway) serveReady(w http.ResponseWriter, checks map[string]func() (bool, any), detail bool) {
	st := g.Status()
	ready := true
	for _, s := range st {
		if s.State != StateUp {
			ready = false
		}
	}
	body := map[string]any{"upstreams": st}
	for name, check := range checks {
		ok, detail := check()
		ready = ready && ok
		body[name] = map[string]any{"ok": ok, "detail": detail}
	}
	body["ready"] = ready
	if !detail {
		body = map[string]any{"ready": ready}
	}
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

// generationRouter serves both protocol generations on one endpoint: 2026-07-28
// requests (by their MCP-Protocol-Version header, or a sessionless server/discover) go
// to a stateless handler, everything else to the stateful 2025-11-25 one.
type generationRouter struct {
	stateful, stateless http.Handler
	max                 int64
	sessions            *sessionLimiter
	fast                *fastSessions // the client side of the tools/call fast path
}

func (h *generationRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = &sseRetryWriter{ResponseWriter: w}
	if v := r.Header.Get("Mcp-Protocol-Version"); v >= "2026-07-28" {
		h.stateless.ServeHTTP(w, r)
		return
	}
	if id := r.Header.Get("Mcp-Session-Id"); id != "" {
		if r.Method == http.MethodDelete {
			h.sessions.forget(id)
			h.fast.gone(id)
			h.stateful.ServeHTTP(w, r)
			return
		}
		h.sessions.begin(id)
		defer h.sessions.end(id, true)
		if body, ok := r.Body.(*releasingReader); ok && r.Method == http.MethodPost {
			h.fast.cancelCall(id, body.b)
			if h.fast.serve(w, r, id) {
				return
			}
		}
		h.stateful.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodPost && r.Body != nil {
		// Peek at the method of a sessionless request: server/discover is how a
		// 2026-07-28 client starts; initialize opens a session.
		body, err := io.ReadAll(io.LimitReader(r.Body, h.max+1))
		if err != nil {
			http.Error(w, "read request body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var probe struct {
			Method string `json:"method"`
		}
		if json.Unmarshal(body, &probe) == nil {
			switch probe.Method {
			case "server/discover":
				h.stateless.ServeHTTP(w, r)
				return
			case "initialize":
				done, ok := h.sessions.admit(w, "streamable")
				if !ok {
					return
				}
				defer done()
				h.stateful.ServeHTTP(&admittedWriter{ResponseWriter: w, done: done}, r)
				h.sessions.end(w.Header().Get("Mcp-Session-Id"), false)
				h.fast.opened(w.Header().Get("Mcp-Session-Id"), r)
				return
			}
		}
	}
	h.stateful.ServeHTTP(w, r)
}

// sseRetry is the reconnection delay symbi asks of clients on its SSE streams.
const sseRetry = "retry: 1000\n\n"

// sseRetryWriter opens every event stream with an SSE retry field, so clients that lose
// a stream (a proxy timeout, a restart) reconnect after a known delay and resume from
// the event store.
type sseRetryWriter struct {
	http.ResponseWriter
	started bool
}

func (w *sseRetryWriter) WriteHeader(code int) {
	w.start(code)
}

func (w *sseRetryWriter) start(code int) {
	if w.started {
		return
	}
	w.started = true
	w.ResponseWriter.WriteHeader(code)
	if code == http.StatusOK && strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream") {
		_, _ = io.WriteString(w.ResponseWriter, sseRetry)
	}
}

func (w *sseRetryWriter) Write(b []byte) (int, error) {
	w.start(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

func (w *sseRetryWriter) Flush() {
	w.start(http.StatusOK)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *sseRetryWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authenticate requires a configured bearer token, or, with none configured, a
// loopback client. (The Host and Origin checks run before it, on every route: see
// requestGuard.)
func (g *Gateway) authenticate(next http.Handler) http.Handler {
	return g.authenticateToken(next)
}

// Authenticate wraps next in the authentication of /mcp (bearer tokens, client
// certificates, OAuth access tokens; with none configured, loopback clients only): a
// request /mcp would refuse gets the same answer, and next sees [RequestIdentity]. It lets
// a route in HTTPOptions.Public (the web console) authenticate after rewriting a request.
func (g *Gateway) Authenticate(next http.Handler) http.Handler { return g.authenticate(next) }

// requestGuard is the one check of Host and Origin that every route passes first.
//
// Host: on a loopback listener the Host must be a loopback name, so a web page that
// rebinds its own host name to 127.0.0.1 cannot reach symbi through the visitor's
// browser (DNS rebinding).
//
// Origin: a browser names the page that made a request in Origin. A request without
// one (a non-browser client) passes; one from the same origin (Origin's host:port is
// the request's Host) or from a configured origin passes; any other is refused with 403,
// as the MCP transport specification requires.
type requestGuard struct {
	origins map[string]bool // normalized: scheme://host[:port], lower case
}

func newRequestGuard(allowed []string) *requestGuard {
	g := &requestGuard{origins: map[string]bool{}}
	for _, o := range allowed {
		if n, ok := normalizeOrigin(o); ok {
			g.origins[n] = true
		}
	}
	return g
}

// normalizeOrigin lower-cases an origin's scheme and host; ok is false unless it is
// scheme://host[:port] with scheme http or https and nothing else.
func normalizeOrigin(o string) (string, bool) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), true
}

func (g *requestGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && isLoopback(la.String()) && !loopbackHost(r.Host) {
			http.Error(w, fmt.Sprintf("forbidden: Host %q is not a loopback name", r.Host), http.StatusForbidden)
			return
		}
		if !g.originAllowed(r) {
			http.Error(w, fmt.Sprintf("forbidden: Origin %q is not allowed (server.allowed_origins)", r.Header.Get("Origin")), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// originAllowed reports whether r's Origin, if any, may use symbi.
func (g *requestGuard) originAllowed(r *http.Request) bool {
	values := r.Header.Values("Origin")
	switch len(values) {
	case 0:
		return true
	case 1:
	default:
		return false // a browser sends one
	}
	n, ok := normalizeOrigin(values[0])
	if !ok {
		return false // "null" (a sandboxed frame, a file: page) and anything malformed
	}
	if g.origins[n] {
		return true
	}
	_, hostport, _ := strings.Cut(n, "://")
	return strings.EqualFold(hostport, r.Host)
}

func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// certBearer stands in for a bearer token on a request authenticated by its verified
// TLS client certificate, so the SDK's token middleware carries the certificate's
// identity like a token's. It means nothing without a verified certificate.
const certBearer = "symbi-client-certificate"

// certIdentity is the identity of a request's verified TLS client certificate: its first
// URI SAN, or else its subject common name; "" without one.
func certIdentity(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if len(leaf.URIs) > 0 {
		return leaf.URIs[0].String()
	}
	return leaf.Subject.CommonName
}

// claimsKey holds, in an authenticated request's auth.TokenInfo.Extra, the claims that
// policy sees as input.identity.claims.
const claimsKey = "symbi/claims"

// certClaims describes a request's verified client certificate for policy:
// {"auth": "certificate", "subject", "issuer", "serial", "uris", "dns_names", "not_after"}.
func certClaims(r *http.Request) map[string]any {
	leaf := r.TLS.VerifiedChains[0][0]
	uris := make([]any, 0, len(leaf.URIs))
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
	}
	dns := make([]any, 0, len(leaf.DNSNames))
	for _, d := range leaf.DNSNames {
		dns = append(dns, d)
	}
	return map[string]any{
		"auth": "certificate", "subject": leaf.Subject.String(), "issuer": leaf.Issuer.String(),
		"serial": leaf.SerialNumber.String(), "uris": uris, "dns_names": dns,
		"not_after": leaf.NotAfter.UTC().Format(time.RFC3339),
	}
}

// tokenClaims are the claims an authenticated request's TokenInfo carries, or nil.
func tokenClaims(ti *auth.TokenInfo) map[string]any {
	if ti == nil {
		return nil
	}
	c, _ := ti.Extra[claimsKey].(map[string]any)
	return c
}

func (g *Gateway) authenticateToken(next http.Handler) http.Handler {
	loopbackOnly := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopback(r.RemoteAddr) {
			http.Error(w, "symbi: no tokens are configured, so only loopback clients are served", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
	verify := func(ctx context.Context, token string, r *http.Request) (*auth.TokenInfo, error) {
		if ti, ok := ctx.Value(verifiedKey{}).(*auth.TokenInfo); ok {
			return ti, nil
		}
		if id := g.tokenIdentity(token); id != "" {
			return &auth.TokenInfo{UserID: id, Expiration: time.Now().Add(24 * time.Hour),
				Extra: map[string]any{claimsKey: map[string]any{"auth": "token"}}}, nil
		}
		if token == certBearer && g.opts.ClientCerts {
			if id := certIdentity(r); id != "" {
				return &auth.TokenInfo{UserID: id, Expiration: time.Now().Add(24 * time.Hour),
					Extra: map[string]any{claimsKey: certClaims(r)}}, nil
			}
		}
		if g.opts.OAuth != nil && looksLikeJWT(token) {
			return g.verifyOAuth(ctx, token)
		}
		return nil, auth.ErrInvalidToken
	}
	bearer := auth.RequireBearerToken(verify, nil)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Decided per request: SetTokens may add the first token or remove the last one.
		if !g.opts.ClientCerts && len(g.tokenMap()) == 0 && g.opts.OAuth == nil {
			loopbackOnly.ServeHTTP(w, r)
			return
		}
		if g.opts.ClientCerts && r.Header.Get("Authorization") == "" && certIdentity(r) != "" {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+certBearer)
		}
		// Answer a missing or wrong credential here, with the challenge RFC 6750 asks
		// for: without WWW-Authenticate a client (the MCP Inspector) takes the 401 for
		// an OAuth server's and starts an authorization flow that cannot succeed.
		token, present := bearerToken(r)
		if !present {
			g.unauthorized(w, "", "no bearer token")
			return
		}
		ti, err := verify(r.Context(), token, r)
		if err != nil {
			g.refuse(w, err)
			return
		}
		bearer.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verifiedKey{}, ti)))
	})
}

// bearerToken is r's bearer token, read as the SDK's middleware reads it; present is
// false when r has no Authorization header of the Bearer scheme.
func bearerToken(r *http.Request) (token string, present bool) {
	fields := strings.Fields(r.Header.Get("Authorization"))
	if len(fields) != 2 || !strings.EqualFold(fields[0], "bearer") {
		return "", false
	}
	return fields[1], true
}

// unauthorized answers 401 with a Bearer challenge for realm "symbi"; errCode (RFC 6750
// section 3.1, e.g. "invalid_token") is added when a credential was given but refused,
// and resource_metadata with OAuth configured (see challenge).
func (g *Gateway) unauthorized(w http.ResponseWriter, errCode, msg string) {
	w.Header().Set("WWW-Authenticate", g.challenge(errCode))
	http.Error(w, msg, http.StatusUnauthorized)
}

// tokenIdentity is the identity a configured bearer token maps to, or "".
func (g *Gateway) tokenIdentity(token string) string {
	found := ""
	for t, id := range g.tokenMap() {
		if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
			found = id
		}
	}
	return found
}

// trusted reports whether r comes from a client that /mcp would serve: one with a
// verified client certificate (ClientCerts), with tokens configured one that presents a
// valid bearer token, and with neither a loopback client.
func (g *Gateway) trusted(r *http.Request) bool {
	if g.opts.ClientCerts && certIdentity(r) != "" {
		return true
	}
	if len(g.tokenMap()) == 0 && g.opts.OAuth == nil {
		return !g.opts.ClientCerts && isLoopback(r.RemoteAddr)
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimSpace(token)
	if g.tokenIdentity(token) != "" {
		return true
	}
	if g.opts.OAuth != nil && looksLikeJWT(token) {
		_, err := g.opts.OAuth.Verify(r.Context(), token)
		return err == nil
	}
	return false
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RequestIdentity is the identity of an HTTP request that passed the gateway's
// authentication (a route in HTTPOptions.Routes): the token's identity, or "anonymous"
// for a loopback client when no tokens are configured.
func RequestIdentity(r *http.Request) Identity { return identityOf(r) }

// identityOf is the identity of an authenticated HTTP request.
func identityOf(r *http.Request) Identity {
	if ti := auth.TokenInfoFromContext(r.Context()); ti != nil && ti.UserID != "" {
		return Identity{ID: ti.UserID, Kind: "client", Claims: tokenClaims(ti)}
	}
	return Identity{ID: "anonymous", Kind: "client"}
}

// sessionConn gives a connection the session ID symbi assigned, so requests on it can
// be tied to the identity that opened it.
type sessionConn struct {
	mcp.Connection
	id string
}

func (c sessionConn) SessionID() string { return c.id }

type sessionTransport struct {
	t  mcp.Transport
	id string
}

// SupportsProtocolVersion passes the wrapped transport's answer through (legacy SSE
// does not carry 2026-07-28).
func (t sessionTransport) SupportsProtocolVersion(v string) bool {
	if s, ok := t.t.(mcp.ProtocolVersionSupporter); ok {
		return s.SupportsProtocolVersion(v)
	}
	return true
}

func (t sessionTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.t.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return sessionConn{c, t.id}, nil
}

// sseHandler serves the legacy HTTP+SSE transport: GET /sse opens a session and its
// event stream; POST /sse?sessionid=ID delivers a message to it, from the same identity.
type sseHandler struct {
	g        *Gateway
	limit    *sessionLimiter
	ids      *idMap
	mu       sync.Mutex
	sessions map[string]*sseSession
}

type sseSession struct {
	t        *mcp.SSEServerTransport
	identity Identity
}

func (h *sseHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		id := r.URL.Query().Get("sessionid")
		h.mu.Lock()
		s := h.sessions[id]
		h.mu.Unlock()
		if s == nil {
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
		if identityOf(r).ID != s.identity.ID {
			http.Error(w, "session belongs to another identity", http.StatusForbidden)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, int64(h.g.opts.MaxMessageBytes))
		s.t.ServeHTTP(w, r)
	case http.MethodGet:
		admitted, ok := h.limit.admit(w, "sse")
		if !ok {
			return
		}
		defer admitted()
		w = &admittedWriter{ResponseWriter: w, done: admitted}
		id := "sse-" + rand.Text()
		t := &mcp.SSEServerTransport{Endpoint: r.URL.Path + "?sessionid=" + id, Response: w, MaxRequestBodyBytes: int64(h.g.opts.MaxMessageBytes)}
		ident := identityOf(r)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		h.mu.Lock()
		h.sessions[id] = &sseSession{t: t, identity: ident}
		h.mu.Unlock()
		h.g.wsIdentity.Store(id, ident)
		defer h.ids.forget(id)
		defer func() {
			h.mu.Lock()
			delete(h.sessions, id)
			h.mu.Unlock()
			h.g.wsIdentity.Delete(id)
		}()
		ss, err := h.g.server.Connect(r.Context(), sessionTransport{t, id}, nil)
		admitted()
		if err != nil {
			http.Error(w, "connection failed", http.StatusInternalServerError)
			return
		}
		defer ss.Close()
		defer h.g.sessionClosed(ss, "sse")
		done := make(chan struct{})
		go func() { _ = ss.Wait(); close(done) }() // owned: ends when the session closes (deferred)
		select {
		case <-r.Context().Done():
		case <-done:
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// wsFramer frames one JSON-RPC message per WebSocket text message. It enforces the
// message limit itself rather than with the connection's read limit: gorilla/websocket
// fails the whole connection on a message over its limit, while symbi answers with a
// JSON-RPC error and the session goes on (as on stdio). An oversized message is read
// to its end and discarded, so memory stays bounded by the limit.
type wsFramer struct {
	c     *websocket.Conn
	limit int64 // bytes of one message; 0 = no limit
	wmu   sync.Mutex
}

func (f *wsFramer) ReadFrame() ([]byte, error) {
	for {
		typ, r, err := f.c.NextReader()
		if err != nil {
			return nil, err
		}
		if typ != websocket.TextMessage && typ != websocket.BinaryMessage {
			continue
		}
		if f.limit <= 0 {
			return io.ReadAll(r)
		}
		data, err := io.ReadAll(io.LimitReader(r, f.limit+1))
		if err != nil {
			return nil, err
		}
		if int64(len(data)) > f.limit {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, err
			}
			return nil, errFrameTooLarge
		}
		return data, nil
	}
}

func (f *wsFramer) WriteFrame(b []byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	_ = f.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return f.c.WriteMessage(websocket.TextMessage, b)
}

func (f *wsFramer) Close() error {
	f.wmu.Lock()
	_ = f.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	f.wmu.Unlock()
	return f.c.Close()
}

// serveWebSocket serves one MCP session over a WebSocket (subprotocol "mcp").
func (g *Gateway) serveWebSocket(w http.ResponseWriter, r *http.Request, guard *requestGuard, sessions *sessionLimiter) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "this endpoint speaks MCP over WebSocket (subprotocol \"mcp\")", http.StatusBadRequest)
		return
	}
	admitted, ok := sessions.admit(w, "websocket")
	if !ok {
		return
	}
	defer admitted()
	// The guard in front of every route has checked Origin already; the upgrader
	// checks it again with the same rule rather than its own.
	upgrader := websocket.Upgrader{Subprotocols: []string{"mcp"}, CheckOrigin: guard.originAllowed}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	id := "ws-" + rand.Text()
	g.wsIdentity.Store(id, identityOf(r))
	defer g.wsIdentity.Delete(id)
	conn := newFrameConn(&wsFramer{c: c, limit: int64(g.opts.MaxMessageBytes)}, FrameConnOptions{
		Peer: "websocket client", AnswerGarbage: true, ExactIDs: true, SessionID: id, Logger: g.log,
		OnGarbage: func(reason string) { g.metrics.badFrames.WithLabelValues("client", reason).Inc() },
	})
	ss, err := g.server.Connect(r.Context(), frameTransport{conn}, nil)
	admitted()
	if err != nil {
		_ = conn.Close()
		return
	}
	_ = ss.Wait()
	g.sessionClosed(ss, "websocket")
}

// ServeAs serves one MCP session over r/w as identity, the way ServeStdio does for
// the local client: newline-delimited JSON-RPC, every request of the session decided by
// the policy and audited as identity, transport "container" (a container agent's
// stdio). It returns when the peer goes away or ctx ends.
func (g *Gateway) ServeAs(ctx context.Context, identity Identity, r io.Reader, w io.Writer, c io.Closer) error {
	if identity.ID == "" {
		return errors.New("serve session: no identity")
	}
	id := containerSessionPrefix + rand.Text()
	g.wsIdentity.Store(id, identity)
	defer g.wsIdentity.Delete(id)
	conn := newFrameConn(newLineFramer(r, w, c, g.opts.MaxMessageBytes), FrameConnOptions{
		Peer: "container " + identity.ID, AnswerGarbage: true, ExactIDs: true, SessionID: id, Logger: g.log,
		OnGarbage: func(reason string) { g.metrics.badFrames.WithLabelValues("client", reason).Inc() },
	})
	ss, err := g.server.Connect(ctx, frameTransport{conn}, nil)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("serve session as %s: %w", identity.ID, err)
	}
	defer g.sessionClosed(ss, ContainerTransport)
	stop := context.AfterFunc(ctx, func() { _ = ss.Close() })
	defer stop()
	if err := ss.Wait(); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return err
	}
	return nil
}

// ServeStdio serves one MCP session over r/w (symbi mcp) until the client goes away
// or ctx ends.
func (g *Gateway) ServeStdio(ctx context.Context, r interface{ Read([]byte) (int, error) }, w interface{ Write([]byte) (int, error) }, c interface{ Close() error }) error {
	conn := newFrameConn(newLineFramer(r, w, c, g.opts.MaxMessageBytes), FrameConnOptions{
		Peer: "stdio client", AnswerGarbage: true, ExactIDs: true, Logger: g.log,
		OnGarbage: func(reason string) { g.metrics.badFrames.WithLabelValues("client", reason).Inc() },
	})
	ss, err := g.server.Connect(ctx, frameTransport{conn}, nil)
	if err != nil {
		return err
	}
	defer g.sessionClosed(ss, "stdio")
	done := make(chan error, 1)
	go func() { done <- ss.Wait() }() // owned: ends when the session closes
	select {
	case <-ctx.Done():
		_ = ss.Close()
		<-done
		return nil
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
}
