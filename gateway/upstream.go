package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Upstream states.
const (
	StateStarting = "starting"
	StateUp       = "up"
	StateDown     = "down"
	StateStopped  = "stopped"
)

// upstream is one configured MCP server and the connections symbi keeps to it. The
// primary connection prefers the stateful 2025-11-25 protocol (the upstream can then
// ask a 2025-11-25 client in the middle of a call); it lists the upstream's features and
// is watched and restarted. When a 2026-07-28 client calls and the upstream speaks that
// protocol too, a second connection on 2026-07-28 is opened on demand, so that
// input-required results pass through exactly as the upstream wrote them. An upstream
// that only speaks 2025-11-25 serves 2026-07-28 clients through the bridge (bridge.go).
type upstream struct {
	g   *Gateway
	cfg UpstreamConfig
	log *slog.Logger

	firstTry     chan struct{}
	firstTryOnce sync.Once
	reconnect    chan struct{} // asks run to drop and re-establish the primary session

	primary *conn

	mu        sync.Mutex
	restarts  int
	modernC   *conn // on demand, for 2026-07-28 clients when the primary is older
	noModern  bool  // the upstream does not speak 2026-07-28: bridge instead
	modernErr int   // consecutive failures of the on-demand connection, for backoff
	modernAt  time.Time
	toolNames map[string]string // exposed -> upstream name
	hidden    int
	prompts   map[string]string // exposed -> upstream name
	resources []string
	templates []string

	progSeq  atomic.Uint64
	progress sync.Map // upstream token (string) -> progressRoute

	// Listings of tools, prompts and resources are numbered when they start (listSeq);
	// syncMu serialises applying them, and applied (guarded by syncMu) is the newest
	// number applied per feature, so an older listing that finishes late is dropped.
	listSeq [numFeatures]atomic.Uint64
	syncMu  sync.Mutex
	applied [numFeatures]uint64
	gone    bool // removed from the gateway (guarded by syncMu): listings no longer apply

	// life is the upstream's own context (a child of Run's), ended when the upstream is
	// removed or the gateway stops; stop ends it and done is closed when run returns.
	// They are set by startUpstream under g.upMu.
	life atomic.Pointer[context.Context]
	stop context.CancelFunc
	done chan struct{}
}

// Features an upstream lists.
const (
	featTools = iota
	featPrompts
	featResources
	numFeatures
)

// listing numbers a new listing of feature f.
func (u *upstream) listing(f int) uint64 { return u.listSeq[f].Add(1) }

// applies reports whether the listing seq of feature f is newer than every one applied
// so far, and records it as applied; u.syncMu must be held.
func (u *upstream) applies(f int, seq uint64) bool {
	if u.gone {
		u.log.Debug("listing of a removed upstream dropped", "feature", f, "seq", seq)
		return false
	}
	if seq <= u.applied[f] {
		u.log.Debug("stale listing dropped", "feature", f, "seq", seq, "applied", u.applied[f])
		return false
	}
	u.applied[f] = seq
	return true
}

// conn is one client session to an upstream (and its process, for stdio).
type conn struct {
	u       *upstream
	version string // protocol version to ask for; "" = 2025-11-25 if offered, else the latest

	mu       sync.Mutex
	state    string
	since    time.Time
	lastErr  string
	stderr   *StderrTail // of the latest process (stdio upstreams whose process keeps one)
	cs       *mcp.ClientSession
	proc     Process
	protocol string
	server   string
	changed  chan struct{} // closed and replaced whenever the state is set
	raw      *rawCaller    // a stdio session's fast path (fastcall.go), for rawCS
	rawCS    *mcp.ClientSession

	// in-flight client requests, for routing what the upstream starts.
	callSeq  atomic.Uint64
	inflight sync.Map // uint64 -> inflightCall
	lastCall atomic.Uint64
}

// inflightCall is a client request being served by an upstream: its session, and its
// context, which carries the request's identity on the client's transport (so that
// what is sent on its behalf travels with it) and, for 2026-07-28 clients, its log level.
type inflightCall struct {
	ss  *mcp.ServerSession
	ctx context.Context
	// bridged is set when the client speaks 2026-07-28 and the upstream 2025-11-25:
	// what the upstream asks goes back to the client as an input-required result.
	bridged *pendingCall
}

// context returns the context of the client request currently being served.
func (c inflightCall) context() context.Context {
	if c.bridged != nil {
		return c.bridged.roundContext()
	}
	return c.ctx
}

type progressRoute struct {
	ss    *mcp.ServerSession
	ctx   func() context.Context // the client request now waiting (a bridged call has rounds)
	token any
}

func newUpstream(g *Gateway, cfg UpstreamConfig) *upstream {
	u := &upstream{
		g: g, cfg: cfg,
		log:       g.log.With("upstream", cfg.Name),
		firstTry:  make(chan struct{}),
		reconnect: make(chan struct{}, 1),
	}
	u.primary = u.newConn(cfg.Protocol)
	return u
}

func (u *upstream) newConn(version string) *conn {
	return &conn{u: u, version: version, state: StateStarting, since: time.Now(), changed: make(chan struct{})}
}

// connFor picks the connection for a request from ss: the primary, or for a
// 2026-07-28 client the on-demand 2026-07-28 connection when the primary is older and
// the upstream speaks 2026-07-28.
func (u *upstream) connFor(ctx context.Context, ss *mcp.ServerSession) *conn {
	if ss == nil || legacyClient(ss) || u.primary.modern() {
		return u.primary
	}
	u.mu.Lock()
	if u.noModern {
		u.mu.Unlock()
		return u.primary
	}
	c := u.modernC
	if c != nil {
		c.mu.Lock()
		alive := c.state == StateUp || c.state == StateStarting
		upFor := time.Since(c.since)
		c.mu.Unlock()
		if !alive {
			// It died: restart it, but not faster than the backoff allows (until then
			// calls get the clear "down" error of the dead connection).
			if upFor > time.Minute {
				u.modernErr = 0
			}
			wait := min(500*time.Millisecond<<min(u.modernErr, 6), 30*time.Second)
			if time.Since(u.modernAt) < wait {
				u.mu.Unlock()
				return c
			}
			u.modernErr++
			u.restarts++
			u.g.metrics.restarts.WithLabelValues(u.cfg.Name).Inc()
			c = nil
		}
	}
	if c == nil {
		u.modernAt = time.Now()
		c = u.newConn("2026-07-28")
		u.modernC = c
		started := u.g.goOwned(func() { // ends with the gateway or the session
			err := c.session(u.runCtx(), nil, func(cs *mcp.ClientSession) error {
				if !c.modern() {
					u.mu.Lock()
					u.noModern = true
					u.mu.Unlock()
					return errNoModern
				}
				return nil
			})
			msg := "session ended"
			if err != nil {
				msg = err.Error()
			}
			if errors.Is(err, errNoModern) {
				u.log.Info("upstream does not speak 2026-07-28; bridging for such clients")
			}
			c.setState(StateDown, msg)
		})
		if !started {
			c.setState(StateDown, "the gateway is stopping")
		}
	}
	u.mu.Unlock()
	// Wait for the first attempt, so the choice is known.
	c.waitState(ctx, func() bool { return c.state != StateStarting })
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.noModern {
		return u.primary
	}
	return c
}

var errNoModern = errors.New("upstream does not speak 2026-07-28")

// prepareModern finds out, in the background, how each upstream will serve 2026-07-28
// clients, when the first such client (ss) shows up: an upstream whose primary
// connection is older gets its 2026-07-28 connection started (or is found not to speak
// it), so the client's first call does not wait for a process start and a probe.
func (g *Gateway) prepareModern(ss *mcp.ServerSession) {
	for _, u := range g.upstreamList() {
		if u.primary.modern() {
			continue
		}
		g.goOwned(func() { // bounded by the upstream timeout; nothing to prepare once stopping
			ctx, cancel := context.WithTimeout(u.runCtx(), u.cfg.Timeout)
			defer cancel()
			// Wait for the primary first: its protocol decides whether a second
			// connection is needed at all.
			p := u.primary
			p.waitState(ctx, func() bool { return p.state != StateStarting })
			p.mu.Lock()
			up, modern := p.state == StateUp, p.protocol >= "2026-07-28"
			p.mu.Unlock()
			if !up || modern {
				return
			}
			u.connFor(ctx, ss)
		})
	}
}

// clients2026 reports how 2026-07-28 clients reach u (UpstreamStatus.Clients2026).
func (u *upstream) clients2026() string {
	if u.primary.modern() {
		return "direct"
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.noModern:
		return "bridged"
	case u.modernC != nil:
		return "direct"
	}
	return ""
}

func (u *upstream) transportName() string {
	switch {
	case u.cfg.Launch != nil:
		return "stdio"
	case u.cfg.SSE:
		return "sse"
	default:
		return "streamable"
	}
}

// tier is the sandbox tier the upstream runs in: its process's, the configured one
// before a process runs, "remote" for URL upstreams.
func (u *upstream) tier() string {
	c := u.primary
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tierLocked()
}

func (c *conn) tierLocked() string {
	switch {
	case c.proc != nil:
		return c.proc.Tier()
	case c.u.cfg.Tier != "":
		return c.u.cfg.Tier
	}
	return "remote"
}

func (u *upstream) status() UpstreamStatus {
	c := u.primary
	c.mu.Lock()
	st := UpstreamStatus{
		Name: u.cfg.Name, Transport: u.transportName(), State: c.state, Tier: c.tierLocked(),
		Protocol: c.protocol, Server: c.server, Since: c.since, LastError: c.lastErr,
	}
	tail := c.stderr
	c.mu.Unlock()
	if st.State != StateUp {
		// Why it is not up, in the server's own words.
		st.Stderr = tail.Lines()
	}
	u.mu.Lock()
	st.Tools, st.Hidden, st.Prompts = len(u.toolNames), u.hidden, len(u.prompts)
	st.Resources = len(u.resources) + len(u.templates)
	st.Restarts = u.restarts
	u.mu.Unlock()
	st.Clients2026 = u.clients2026()
	return st
}

func (c *conn) setState(state, errText string) {
	c.mu.Lock()
	changed := c.state != state
	c.state, c.lastErr = state, errText
	if changed {
		c.since = time.Now()
	}
	close(c.changed) // wake waitState
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if c != c.u.primary {
		return
	}
	if changed && c.u.g.opts.OnUpstreamState != nil && (state == StateUp || state == StateDown) {
		c.u.g.opts.OnUpstreamState(c.u.cfg.Name, state, errText)
	}
	up := 0.0
	if state == StateUp {
		up = 1
	}
	c.u.g.metrics.upstreamUp.WithLabelValues(c.u.cfg.Name).Set(up)
}

// run keeps the primary connection up until ctx ends: connect, list, wait for the
// session to end, back off, reconnect.
func (u *upstream) run(ctx context.Context) {
	backoff := 500 * time.Millisecond
	const maxBackoff = 30 * time.Second
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			u.mu.Lock()
			u.restarts++
			u.mu.Unlock()
			u.g.metrics.restarts.WithLabelValues(u.cfg.Name).Inc()
		}
		began := time.Now()
		err := u.primary.session(ctx, u.reconnect, func(cs *mcp.ClientSession) error {
			defer u.firstTryOnce.Do(func() { close(u.firstTry) })
			if err := u.refreshAll(ctx, cs); err != nil {
				return fmt.Errorf("list upstream features: %w", err)
			}
			return nil
		})
		u.firstTryOnce.Do(func() { close(u.firstTry) }) // a failed first attempt
		if ctx.Err() != nil {
			u.primary.setState(StateStopped, "")
			return
		}
		msg := "session ended"
		if err != nil {
			msg = err.Error()
		}
		u.primary.setState(StateDown, msg)
		u.log.Warn("upstream down", "err", msg, "retry_in", backoff.String())
		if time.Since(began) > time.Minute {
			backoff = 500 * time.Millisecond // it was up for a while: start over
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			u.primary.setState(StateStopped, "")
			return
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// session runs one connection from start to end. onUp runs once the session is
// established, before the connection is marked up.
func (c *conn) session(ctx context.Context, reconnect <-chan struct{}, onUp func(*mcp.ClientSession) error) error {
	c.setState(StateStarting, "")
	version := c.version
	if version == "" {
		// Prefer the stateful generation: an upstream on it can ask the client in the
		// middle of a call, and symbi bridges that for 2026-07-28 clients.
		version = "2025-11-25"
	}
	cs, proc, err := c.connect(ctx, version)
	if err != nil && c.version == "" && ctx.Err() == nil {
		c.u.log.Info("upstream refused 2025-11-25; trying the latest protocol", "err", err.Error())
		cs, proc, err = c.connect(ctx, "")
	}
	if err != nil {
		c.setState(StateDown, err.Error())
		return err
	}
	defer func() {
		c.mu.Lock()
		c.cs, c.proc = nil, nil
		c.mu.Unlock()
		_ = cs.Close()
		if proc != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = proc.Stop(stopCtx)
			cancel()
		}
	}()
	init := cs.InitializeResult()
	c.mu.Lock()
	c.cs, c.proc = cs, proc
	if init != nil {
		c.protocol = init.ProtocolVersion
		if init.ServerInfo != nil {
			c.server = init.ServerInfo.Name + " " + init.ServerInfo.Version
		}
	}
	c.mu.Unlock()
	if init != nil && init.Capabilities != nil && init.Capabilities.Logging != nil && !c.modern() {
		// Take every log message; each client session gets those at or above the level
		// it asked for (the SDK filters per session, or per request on 2026-07-28).
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			c.u.log.Debug("set upstream log level", "err", err.Error())
		}
	}
	if onUp != nil {
		if err := onUp(cs); err != nil {
			c.setState(StateDown, err.Error())
			return err
		}
	}
	c.setState(StateUp, "")
	c.u.log.Info("upstream connected", "protocol", c.protocol, "server", c.server)

	ended := make(chan error, 1)
	go func() { ended <- cs.Wait() }() // owned: ends when cs closes (deferred above)
	select {
	case <-ctx.Done():
		_ = cs.Close()
		<-ended
		return ctx.Err()
	case err := <-ended:
		if proc != nil {
			// The process is gone or going; say how it ended.
			done := make(chan error, 1)
			go func() { done <- proc.Wait() }() // owned: the process exits or is stopped by the defer
			select {
			case perr := <-done:
				c.u.g.metrics.exits.WithLabelValues(c.u.cfg.Name, exitKind(perr)).Inc()
				lines := stderrOf(proc)
				if perr != nil {
					return withStderr(fmt.Errorf("upstream process exited: %w", perr), lines)
				}
				return withStderr(errors.New("upstream process exited"), lines)
			case <-time.After(2 * time.Second):
			}
		}
		if err != nil {
			return fmt.Errorf("upstream session ended: %w", err)
		}
		return errors.New("upstream session ended")
	case <-reconnect:
		return errors.New("session expired; reconnecting")
	}
}

// waitState waits until cond (called with c.mu held) holds, re-checking at every state
// change; it reports false when ctx ends first.
func (c *conn) waitState(ctx context.Context, cond func() bool) bool {
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

func (c *conn) connect(ctx context.Context, version string) (*mcp.ClientSession, Process, error) {
	u := c.u
	client := mcp.NewClient(&mcp.Implementation{Name: "symbi", Version: u.g.opts.Version}, &mcp.ClientOptions{
		Logger:                        u.g.log.With("component", "mcp_client", "upstream", u.cfg.Name),
		ElicitationHandler:            c.elicit,
		CreateMessageWithToolsHandler: c.createMessage,
		ToolListChangedHandler:        func(ctx context.Context, _ *mcp.ToolListChangedRequest) { u.refreshLater("tools", c) },
		PromptListChangedHandler:      func(ctx context.Context, _ *mcp.PromptListChangedRequest) { u.refreshLater("prompts", c) },
		ResourceListChangedHandler:    func(ctx context.Context, _ *mcp.ResourceListChangedRequest) { u.refreshLater("resources", c) },
		ResourceUpdatedHandler:        u.resourceUpdated,
		LoggingMessageHandler:         c.logMessage,
		ProgressNotificationHandler:   u.progressNotification,
		MultiRoundTrip:                &mcp.MultiRoundTripOptions{Disabled: true},
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:     &mcp.RootCapabilities{ListChanged: true},
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
	})
	client.AddReceivingMiddleware(c.rootsMiddleware)
	if u.g.tracer != nil {
		client.AddSendingMiddleware(u.g.traceSending(u.cfg.Name)) // trace.go
	}

	var (
		transport mcp.Transport
		proc      Process
		tap       = &listTap{} // keeps the raw bytes of tool listings (rawlist.go)
		raw       *rawCaller
	)
	switch {
	case u.cfg.Launch != nil:
		p, err := u.cfg.Launch(ctx)
		if err != nil {
			return nil, nil, err
		}
		proc = p
		if sp, ok := p.(StderrProcess); ok {
			c.mu.Lock()
			c.stderr = sp.StderrTail()
			c.mu.Unlock()
		}
		fc := newFrameConn(newLineFramer(p.Stdout(), p.Stdin(), closerFunc(func() error {
			return p.Stdin().Close()
		}), u.g.opts.MaxMessageBytes), FrameConnOptions{
			Peer:   "upstream " + u.cfg.Name,
			Logger: u.g.log,
			OnGarbage: func(reason string) {
				u.g.metrics.badFrames.WithLabelValues("upstream:"+u.cfg.Name, reason).Inc()
			},
		})
		raw = newRawCaller(fc)
		transport = tapTransport{inner: frameTransport{fc}, tap: tap, raw: raw}
	case u.cfg.SSE:
		transport = &mcp.SSEClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.httpClient(tap)}
	default:
		transport = &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.httpClient(tap), MaxRetries: 2}
	}
	var sopts *mcp.ClientSessionOptions
	if version != "" {
		sopts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := u.dial(ctx, client, transport, sopts)
	if err != nil {
		err = fmt.Errorf("connect upstream %s: %w", u.cfg.Name, err)
		if proc != nil {
			stopCtx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
			_ = proc.Stop(stopCtx)
			c2()
			err = withStderr(err, stderrOf(proc))
		}
		return nil, nil, err
	}
	if raw != nil {
		c.mu.Lock()
		c.raw, c.rawCS = raw, cs
		c.mu.Unlock()
	}
	return cs, proc, nil
}

// dial connects client over transport, the handshake bounded by the upstream's timeout.
// The legacy SSE transport keeps its GET stream on the context given to Connect, so
// for it that context must outlive the handshake (a context cancelled once Connect
// returns ends the stream, and with it the session): it lives until the session closes,
// and a timer bounds the handshake instead.
func (u *upstream) dial(ctx context.Context, client *mcp.Client, transport mcp.Transport, sopts *mcp.ClientSessionOptions) (*mcp.ClientSession, error) {
	if !u.cfg.SSE {
		cctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
		defer cancel()
		return client.Connect(cctx, transport, sopts)
	}
	lctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(u.cfg.Timeout, cancel)
	cs, err := client.Connect(lctx, transport, sopts)
	if !timer.Stop() && err == nil {
		_ = cs.Close()
		err = fmt.Errorf("handshake took longer than %s", u.cfg.Timeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	go func() { // owned: ends when cs closes (the session closes it when it ends)
		_ = cs.Wait()
		cancel()
	}()
	return cs, nil
}

// stderrOf returns the last stderr lines of a process that has ended or been stopped,
// waiting briefly for the stream to drain.
func stderrOf(p Process) []string {
	sp, ok := p.(StderrProcess)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return sp.StderrTail().Drained(ctx)
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// headerTransport adds the configured headers to every upstream HTTP request.
type headerTransport struct {
	base    http.RoundTripper
	headers map[string]string
}

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.headers {
		r.Header.Set(k, v)
	}
	return t.base.RoundTrip(r)
}

func (u *upstream) httpClient(tap *listTap) *http.Client {
	var base http.RoundTripper = http.DefaultTransport
	if u.g.tracer != nil {
		base = traceTransport{base: base} // trace.go
	}
	return &http.Client{Transport: tapRoundTripper{base: headerTransport{base: base, headers: u.cfg.Headers},
		tap: tap, max: u.g.opts.MaxMessageBytes}}
}

// client returns the live session, or a clear error when the connection is down. If a
// (re)connection attempt is under way it waits for it, bounded by ctx.
func (c *conn) client(ctx context.Context) (*mcp.ClientSession, error) {
	name := c.u.cfg.Name
	if !c.waitState(ctx, func() bool { return c.state != StateStarting }) {
		return nil, &Error{Kind: Unavailable, Public: fmt.Sprintf("upstream %q is starting", name), Err: ctx.Err()}
	}
	c.mu.Lock()
	cs, state, lastErr := c.cs, c.state, c.lastErr
	c.mu.Unlock()
	if cs != nil && state == StateUp {
		return cs, nil
	}
	msg := fmt.Sprintf("upstream %q is %s", name, state)
	if lastErr != "" {
		msg += ": " + lastErr
	}
	return nil, &Error{Kind: Unavailable, Public: msg}
}

// legacyClient reports whether ss speaks a protocol older than 2026-07-28 (and so can
// take server-to-client requests in the middle of a call).
func legacyClient(ss *mcp.ServerSession) bool {
	if ss == nil {
		return false
	}
	ip := ss.InitializeParams()
	return ip != nil && ip.ProtocolVersion != "" && ip.ProtocolVersion < "2026-07-28"
}

// modern reports whether the connection speaks the stateless 2026-07-28 protocol.
func (c *conn) modern() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.protocol >= "2026-07-28"
}

// sessionLost reports whether err means the upstream session is gone (an expired HTTP
// session or a closed connection), so a reconnect and one retry are in order.
func sessionLost(err error) bool {
	return errors.Is(err, mcp.ErrSessionMissing) || errors.Is(err, mcp.ErrConnectionClosed) || errors.Is(err, io.EOF)
}

// call runs f against the upstream with the per-request timeout, tracking the client
// session so that what the upstream starts during the call reaches it. An HTTP upstream whose session expired is reconnected and
// the call retried once; a stdio upstream is not retried (the call may have had effects).
func (u *upstream) call(ctx context.Context, ss *mcp.ServerSession, f func(context.Context, *mcp.ClientSession) error) error {
	return u.callTracked(ctx, inflightCall{ss: ss, ctx: ctx}, f)
}

// callTracked is call with the in-flight record given by the caller.
func (u *upstream) callTracked(ctx context.Context, track inflightCall, f func(context.Context, *mcp.ClientSession) error) error {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	c := u.primary
	if track.bridged == nil {
		c = u.connFor(ctx, track.ss)
	}
	id := c.callSeq.Add(1)
	if track.ss != nil {
		c.inflight.Store(id, track)
		c.lastCall.Store(id)
		defer c.inflight.Delete(id)
	}
	for attempt := 0; ; attempt++ {
		cs, err := c.client(ctx)
		if err != nil {
			return err
		}
		err = f(ctx, cs)
		if err == nil {
			return nil
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &Error{Kind: Unavailable, Public: fmt.Sprintf("upstream %q did not answer within %s", u.cfg.Name, u.cfg.Timeout), Err: err}
		}
		if ctx.Err() != nil {
			return err
		}
		var je *jsonrpc.Error
		if errors.As(err, &je) {
			return err // the upstream's own answer
		}
		if sessionLost(err) && attempt == 0 && u.cfg.Launch == nil && c == u.primary {
			u.log.Info("upstream session lost; reconnecting", "err", err.Error())
			select {
			case u.reconnect <- struct{}{}:
			default:
			}
			c.waitNewSession(ctx, cs)
			continue
		}
		// Anything else is the transport failing under the call: a crashed process, a
		// dropped connection. The call may or may not have happened; it is not retried.
		// Say why when the connection's end explains it (an OOM kill, say).
		u.log.Warn("upstream call failed", "err", err.Error())
		why := "connection lost"
		if down := c.waitDown(ctx, 2*time.Second); down != "" {
			why = down
		}
		return &Error{Kind: Unavailable, Public: fmt.Sprintf("upstream %q failed during the call: %s", u.cfg.Name, why), Err: err}
	}
}

// waitDown waits (at most d) for the connection to be marked down and returns why.
func (c *conn) waitDown(ctx context.Context, d time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var why string
	if !c.waitState(ctx, func() bool {
		why = c.lastErr
		return c.state == StateDown && why != ""
	}) {
		return ""
	}
	return why
}

// exitKind classifies how an upstream process ended, for metrics: "oom", "timeout",
// or "exit".
func exitKind(err error) string {
	var k interface{ ExitKind() string }
	if errors.As(err, &k) {
		return k.ExitKind()
	}
	return "exit"
}

// waitNewSession waits until the connection's session is no longer old (bounded by ctx).
func (c *conn) waitNewSession(ctx context.Context, old *mcp.ClientSession) {
	c.waitState(ctx, func() bool { return c.cs != nil && c.cs != old && c.state == StateUp })
}

// routeSession picks the client request a request or notification started by the
// upstream belongs to: the one in flight on this connection, the most recent if
// several are.
func (c *conn) routeSession() (inflightCall, bool) {
	if v, ok := c.inflight.Load(c.lastCall.Load()); ok {
		return v.(inflightCall), true
	}
	var best uint64
	var call inflightCall
	c.inflight.Range(func(k, v any) bool {
		if id := k.(uint64); id >= best {
			best, call = id, v.(inflightCall)
		}
		return true
	})
	return call, call.ss != nil
}

func (c *conn) elicit(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	call, ok := c.routeSession()
	if !ok {
		return nil, fmt.Errorf("elicitation from upstream %q: no client request in flight to ask", c.u.cfg.Name)
	}
	if call.bridged != nil {
		return askBridged[*mcp.ElicitResult](ctx, call.bridged, req.Params)
	}
	actx, cancel := c.u.askContext(ctx, call.ctx)
	defer cancel()
	return call.ss.Elicit(actx, req.Params)
}

func (c *conn) createMessage(ctx context.Context, req *mcp.CreateMessageWithToolsRequest) (*mcp.CreateMessageWithToolsResult, error) {
	call, ok := c.routeSession()
	if !ok {
		return nil, fmt.Errorf("sampling from upstream %q: no client request in flight to ask", c.u.cfg.Name)
	}
	if call.bridged != nil {
		return askBridged[*mcp.CreateMessageWithToolsResult](ctx, call.bridged, req.Params)
	}
	actx, cancel := c.u.askContext(ctx, call.ctx)
	defer cancel()
	return call.ss.CreateMessageWithTools(actx, req.Params)
}

// rootsMiddleware answers an upstream's roots/list with the roots of the client session
// it is working for (none when no request is in flight), and forwards elicitation
// requests without the SDK's own schema check.
func (c *conn) rootsMiddleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method == "elicitation/create" {
			// Forward the upstream's question as it is: the SDK's client would first check
			// the schema against its own, stricter reading of the spec (it rejects
			// SEP-1330 titled multi-selects), and the client being asked checks it anyway.
			if p, ok := req.GetParams().(*mcp.ElicitParams); ok {
				return c.elicit(ctx, &mcp.ElicitRequest{Params: p})
			}
		}
		if method != "roots/list" {
			return next(ctx, method, req)
		}
		call, ok := c.routeSession()
		if !ok {
			return &mcp.ListRootsResult{Roots: []*mcp.Root{}}, nil
		}
		p, _ := req.GetParams().(*mcp.ListRootsParams)
		if p == nil {
			p = &mcp.ListRootsParams{}
		}
		if call.bridged != nil {
			return askBridged[*mcp.ListRootsResult](ctx, call.bridged, p)
		}
		actx, cancel := c.u.askContext(ctx, call.ctx)
		defer cancel()
		return call.ss.ListRoots(actx, p)
	}
}

func (c *conn) logMessage(ctx context.Context, req *mcp.LoggingMessageRequest) {
	p := *req.Params
	if p.Logger == "" {
		p.Logger = c.u.cfg.Name
	}
	if call, ok := c.routeSession(); ok {
		nctx, cancel := c.u.g.notifyContext(call.context())
		defer cancel()
		_ = call.ss.Log(nctx, &p)
		return
	}
	for ss := range c.u.g.server.Sessions() {
		nctx, cancel := c.u.g.notifyContext(ctx)
		_ = ss.Log(nctx, &p)
		cancel()
	}
}

func (u *upstream) progressNotification(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
	tok, ok := req.Params.ProgressToken.(string)
	if !ok {
		return
	}
	v, ok := u.progress.Load(tok)
	if !ok {
		return
	}
	r := v.(progressRoute)
	p := *req.Params
	p.ProgressToken = r.token
	nctx, cancel := u.g.notifyContext(r.ctx())
	defer cancel()
	_ = r.ss.NotifyProgress(nctx, &p)
}

// progressToken maps a client's progress token to a token unique on this upstream's
// connections; release undoes it.
func (u *upstream) progressToken(ctx func() context.Context, ss *mcp.ServerSession, clientToken any) (string, func()) {
	if clientToken == nil || ss == nil {
		return "", func() {}
	}
	tok := fmt.Sprintf("symbi-%d", u.progSeq.Add(1))
	u.progress.Store(tok, progressRoute{ss: ss, ctx: ctx, token: clientToken})
	return tok, func() { u.progress.Delete(tok) }
}

func (u *upstream) resourceUpdated(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
	nctx, cancel := u.g.notifyContext(ctx)
	defer cancel()
	_ = u.g.server.ResourceUpdated(nctx, req.Params)
}

// primarySession is the primary connection's live session, or nil.
func (u *upstream) primarySession() *mcp.ClientSession {
	u.primary.mu.Lock()
	defer u.primary.mu.Unlock()
	return u.primary.cs
}

// refreshLater re-lists one kind of feature from the connection that said it changed,
// off the notification's goroutine.
func (u *upstream) refreshLater(kind string, c *conn) {
	u.log.Debug("upstream list changed", "kind", kind)
	c.mu.Lock()
	cs := c.cs
	c.mu.Unlock()
	if cs == nil {
		return
	}
	u.g.goOwned(func() { // ends with the gateway at the latest; no refresh once stopping
		ctx, cancel := context.WithTimeout(u.runCtx(), u.cfg.Timeout)
		defer cancel()
		var err error
		switch kind {
		case "tools":
			err = u.refreshToolsNotify(ctx, cs, true)
		case "prompts":
			err = u.refreshPrompts(ctx, cs)
		default:
			err = u.refreshResources(ctx, cs)
		}
		if err != nil {
			u.log.Warn("refresh upstream list", "kind", kind, "err", err.Error())
		}
	})
}

// Refresh re-lists the tools of the named upstream now (after an approval, say).
func (g *Gateway) Refresh(ctx context.Context, name string) error {
	u := g.upstream(name)
	if u == nil {
		return fmt.Errorf("refresh upstream %s: no such upstream", name)
	}
	cs := u.primarySession()
	if cs == nil {
		return fmt.Errorf("refresh upstream %s: not connected", name)
	}
	return u.refreshTools(ctx, cs)
}

func (u *upstream) refreshAll(ctx context.Context, cs *mcp.ClientSession) error {
	caps := &mcp.ServerCapabilities{}
	if init := cs.InitializeResult(); init != nil && init.Capabilities != nil {
		caps = init.Capabilities
	}
	if caps.Tools != nil {
		if err := u.refreshTools(ctx, cs); err != nil {
			return err
		}
	}
	if caps.Prompts != nil {
		if err := u.refreshPrompts(ctx, cs); err != nil {
			return err
		}
	}
	if caps.Resources != nil {
		if err := u.refreshResources(ctx, cs); err != nil {
			return err
		}
	}
	return nil
}

func (u *upstream) refreshTools(ctx context.Context, cs *mcp.ClientSession) error {
	return u.refreshToolsNotify(ctx, cs, false)
}

func (u *upstream) refreshToolsNotify(ctx context.Context, cs *mcp.ClientSession, notify bool) error {
	seq := u.listing(featTools)
	var tools []*mcp.Tool
	raw := &rawToolList{}
	for t, err := range cs.Tools(withRawTools(ctx, raw), nil) {
		if err != nil {
			return fmt.Errorf("list tools: %w", err)
		}
		tools = append(tools, t)
	}
	u.g.syncToolsNotify(ctx, u, seq, tools, raw.byName(), notify)
	return nil
}

func (u *upstream) refreshPrompts(ctx context.Context, cs *mcp.ClientSession) error {
	seq := u.listing(featPrompts)
	var prompts []*mcp.Prompt
	for p, err := range cs.Prompts(ctx, nil) {
		if err != nil {
			return fmt.Errorf("list prompts: %w", err)
		}
		prompts = append(prompts, p)
	}
	u.g.syncPrompts(u, seq, prompts)
	return nil
}

func (u *upstream) refreshResources(ctx context.Context, cs *mcp.ClientSession) error {
	seq := u.listing(featResources)
	var resources []*mcp.Resource
	for r, err := range cs.Resources(ctx, nil) {
		if err != nil {
			return fmt.Errorf("list resources: %w", err)
		}
		resources = append(resources, r)
	}
	var templates []*mcp.ResourceTemplate
	for t, err := range cs.ResourceTemplates(ctx, nil) {
		if err != nil {
			return fmt.Errorf("list resource templates: %w", err)
		}
		templates = append(templates, t)
	}
	u.g.syncResources(u, seq, resources, templates)
	return nil
}

// ProbeResult is what Probe found of an upstream.
type ProbeResult struct {
	Protocol string // the protocol version agreed
	Server   string // the server's name and version
	Tools    int    // tools it listed
}

// Probe starts one upstream as the gateway would (its process, initialize, tools/list),
// then stops it; `symbi doctor` uses it. Errors carry the process's last stderr lines.
// ctx bounds the whole probe; so does cfg.Timeout (0 = 60s) each request.
func Probe(ctx context.Context, cfg UpstreamConfig, log *slog.Logger) (ProbeResult, error) {
	g := New(&Options{Upstreams: []UpstreamConfig{cfg}, Logger: log})
	c := g.upstreamList()[0].primary
	cs, proc, err := c.connect(ctx, "2025-11-25")
	if err != nil && ctx.Err() == nil {
		cs, proc, err = c.connect(ctx, "")
	}
	if err != nil {
		return ProbeResult{}, err
	}
	var res ProbeResult
	if init := cs.InitializeResult(); init != nil {
		res.Protocol = init.ProtocolVersion
		if init.ServerInfo != nil {
			res.Server = strings.TrimSpace(init.ServerInfo.Name + " " + init.ServerInfo.Version)
		}
		if init.Capabilities != nil && init.Capabilities.Tools != nil {
			for _, err = range cs.Tools(ctx, nil) {
				if err != nil {
					err = fmt.Errorf("list tools: %w", err)
					break
				}
				res.Tools++
			}
		}
	}
	_ = cs.Close()
	if proc != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = proc.Stop(stopCtx)
		cancel()
		if err != nil {
			err = withStderr(err, stderrOf(proc))
		}
	}
	return res, err
}
