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
}

// Handler serves /mcp (streamable HTTP, both protocol generations), /sse (legacy SSE
// and its POST endpoint), /ws (MCP over WebSocket), /healthz, /readyz and /metrics.
func (g *Gateway) Handler(opts *HTTPOptions) http.Handler {
	var o HTTPOptions
	if opts != nil {
		o = *opts
	}
	mux := http.NewServeMux()
	getServer := func(*http.Request) *mcp.Server { return g.server }
	stateful := mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{
		Logger:              g.log.With("component", "streamable"),
		MaxRequestBodyBytes: int64(g.opts.MaxMessageBytes),
		EventStore:          mcp.NewMemoryEventStore(nil),
	})
	stateless := mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{
		Logger:                       g.log.With("component", "streamable_stateless"),
		MaxRequestBodyBytes:          int64(g.opts.MaxMessageBytes),
		Stateless:                    true,
		PropagateRequestCancellation: true,
	})
	streamable := &generationRouter{stateful: stateful, stateless: stateless, max: int64(g.opts.MaxMessageBytes)}
	sse := &sseHandler{g: g, sessions: map[string]*sseSession{}}
	protect := g.authenticate
	mux.Handle("/mcp", protect(streamable))
	mux.Handle("/sse", protect(sse))
	mux.Handle("/ws", protect(http.HandlerFunc(g.serveWebSocket)))
	for path, h := range o.Routes {
		mux.Handle(path, protect(h))
	}
	for path, h := range o.Public {
		mux.Handle(path, h)
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
	return mux
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
}

func (h *generationRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = &sseRetryWriter{ResponseWriter: w}
	if v := r.Header.Get("Mcp-Protocol-Version"); v >= "2026-07-28" {
		h.stateless.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodPost && r.Header.Get("Mcp-Session-Id") == "" && r.Body != nil {
		// Peek at the method of a sessionless request: server/discover is how a
		// 2026-07-28 client starts.
		body, err := io.ReadAll(io.LimitReader(r.Body, h.max+1))
		if err != nil {
			http.Error(w, "read request body", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var probe struct {
			Method string `json:"method"`
		}
		if json.Unmarshal(body, &probe) == nil && probe.Method == "server/discover" {
			h.stateless.ServeHTTP(w, r)
			return
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
// loopback client. On a loopback listener it also refuses requests whose Host is not a
// loopback name: a web page that rebinds its own host name to 127.0.0.1 must not reach
// symbi through the visitor's browser (DNS rebinding).
func (g *Gateway) authenticate(next http.Handler) http.Handler {
	return g.rebindingGuard(g.authenticateToken(next))
}

func (g *Gateway) rebindingGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && isLoopback(la.String()) && !loopbackHost(r.Host) {
			http.Error(w, fmt.Sprintf("forbidden: Host %q is not a loopback name", r.Host), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
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
		return nil, auth.ErrInvalidToken
	}
	bearer := auth.RequireBearerToken(verify, nil)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Decided per request: SetTokens may add the first token or remove the last one.
		if !g.opts.ClientCerts {
			if len(g.tokenMap()) == 0 {
				loopbackOnly.ServeHTTP(w, r)
				return
			}
			bearer.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") == "" && certIdentity(r) != "" {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+certBearer)
		}
		bearer.ServeHTTP(w, r)
	})
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
	if len(g.tokenMap()) == 0 {
		return !g.opts.ClientCerts && isLoopback(r.RemoteAddr)
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return g.tokenIdentity(strings.TrimSpace(token)) != ""
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
		id := "sse-" + rand.Text()
		t := &mcp.SSEServerTransport{Endpoint: r.URL.Path + "?sessionid=" + id, Response: w, MaxRequestBodyBytes: int64(h.g.opts.MaxMessageBytes)}
		ident := identityOf(r)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		h.mu.Lock()
		h.sessions[id] = &sseSession{t: t, identity: ident}
		h.mu.Unlock()
		h.g.wsIdentity.Store(id, ident)
		defer func() {
			h.mu.Lock()
			delete(h.sessions, id)
			h.mu.Unlock()
			h.g.wsIdentity.Delete(id)
		}()
		ss, err := h.g.server.Connect(r.Context(), sessionTransport{t, id}, nil)
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

var upgrader = websocket.Upgrader{
	Subprotocols: []string{"mcp"},
	// Browsers send Origin; accept only same-host origins (no cross-site pages).
	CheckOrigin: func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" {
			return true
		}
		o := strings.TrimPrefix(strings.TrimPrefix(origin, "http://"), "https://")
		return o == r.Host
	},
}

// wsFramer frames one JSON-RPC message per WebSocket text message.
type wsFramer struct {
	c   *websocket.Conn
	wmu sync.Mutex
}

func (f *wsFramer) ReadFrame() ([]byte, error) {
	for {
		typ, data, err := f.c.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				return nil, err
			}
			return nil, err
		}
		if typ == websocket.TextMessage || typ == websocket.BinaryMessage {
			return data, nil
		}
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
func (g *Gateway) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "this endpoint speaks MCP over WebSocket (subprotocol \"mcp\")", http.StatusBadRequest)
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c.SetReadLimit(int64(g.opts.MaxMessageBytes))
	id := "ws-" + rand.Text()
	g.wsIdentity.Store(id, identityOf(r))
	defer g.wsIdentity.Delete(id)
	conn := newFrameConn(&wsFramer{c: c}, FrameConnOptions{
		Peer: "websocket client", AnswerGarbage: true, SessionID: id, Logger: g.log,
		OnGarbage: func(reason string) { g.metrics.badFrames.WithLabelValues("client", reason).Inc() },
	})
	ss, err := g.server.Connect(r.Context(), frameTransport{conn}, nil)
	if err != nil {
		_ = conn.Close()
		return
	}
	_ = ss.Wait()
	g.sessionClosed(ss, "websocket")
}

// ServeStdio serves one MCP session over r/w (symbi mcp) until the client goes away
// or ctx ends.
func (g *Gateway) ServeStdio(ctx context.Context, r interface{ Read([]byte) (int, error) }, w interface{ Write([]byte) (int, error) }, c interface{ Close() error }) error {
	conn := newFrameConn(newLineFramer(r, w, c, g.opts.MaxMessageBytes), FrameConnOptions{
		Peer: "stdio client", AnswerGarbage: true, Logger: g.log,
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
