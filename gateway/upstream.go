package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Upstream states.
const (
	StateStarting = "starting"
	StateUp       = "up"
	StateDown     = "down"
	StateStopped  = "stopped"
)

// upstream is one configured MCP server and the connection symbi keeps to it.
type upstream struct {
	g   *Gateway
	cfg UpstreamConfig
	log interface {
		Info(string, ...any)
		Warn(string, ...any)
		Debug(string, ...any)
	}

	firstTry     chan struct{}
	firstTryOnce sync.Once
	reconnect    chan struct{} // asks run to drop and re-establish the session

	mu        sync.Mutex
	state     string
	since     time.Time
	lastErr   string
	restarts  int
	cs        *mcp.ClientSession
	proc      Process
	protocol  string
	server    string
	ready     chan struct{} // closed when the current attempt ends (up or failed)
	toolNames map[string]string // exposed -> upstream name
	hidden    int
	prompts   map[string]string // exposed -> upstream name
	resources []string
	templates []string

	// in-flight client requests, for routing what the upstream starts.
	callSeq  atomic.Uint64
	inflight sync.Map // uint64 -> *mcp.ServerSession
	lastCall atomic.Uint64

	progSeq  atomic.Uint64
	progress sync.Map // upstream token (string) -> progressRoute
}

type progressRoute struct {
	ss    *mcp.ServerSession
	token any
}

func newUpstream(g *Gateway, cfg UpstreamConfig) *upstream {
	return &upstream{
		g: g, cfg: cfg,
		log:       g.log.With("upstream", cfg.Name),
		firstTry:  make(chan struct{}),
		reconnect: make(chan struct{}, 1),
		state:     StateStarting,
		since:     time.Now(),
		ready:     make(chan struct{}),
	}
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

func (u *upstream) status() UpstreamStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	tier := u.cfg.Tier
	if u.proc != nil {
		tier = u.proc.Tier()
	}
	if tier == "" {
		tier = "remote"
	}
	return UpstreamStatus{
		Name: u.cfg.Name, Transport: u.transportName(), State: u.state, Tier: tier,
		Protocol: u.protocol, Server: u.server, Tools: len(u.toolNames), Hidden: u.hidden,
		Prompts: len(u.prompts), Resources: len(u.resources) + len(u.templates),
		Restarts: u.restarts, Since: u.since, LastError: u.lastErr,
	}
}

func (u *upstream) setState(state, errText string) {
	u.mu.Lock()
	changed := u.state != state
	u.state, u.lastErr = state, errText
	if changed {
		u.since = time.Now()
	}
	u.mu.Unlock()
	up := 0.0
	if state == StateUp {
		up = 1
	}
	u.g.metrics.upstreamUp.WithLabelValues(u.cfg.Name).Set(up)
}

// run keeps the upstream connected until ctx ends: connect, list, wait for the session
// to end, back off, reconnect.
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
		err := u.session(ctx)
		u.firstTryOnce.Do(func() { close(u.firstTry) })
		if ctx.Err() != nil {
			u.setState(StateStopped, "")
			return
		}
		msg := "session ended"
		if err != nil {
			msg = err.Error()
		}
		u.setState(StateDown, msg)
		u.log.Warn("upstream down", "err", msg, "retry_in", backoff.String())
		if time.Since(began) > time.Minute {
			backoff = 500 * time.Millisecond // it was up for a while: start over
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			u.setState(StateStopped, "")
			return
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// session runs one connection from start to end.
func (u *upstream) session(ctx context.Context) error {
	u.setState(StateStarting, "")
	cs, proc, err := u.connect(ctx)
	if err != nil {
		u.markAttemptDone()
		return err
	}
	defer func() {
		u.mu.Lock()
		u.cs, u.proc = nil, nil
		u.mu.Unlock()
		_ = cs.Close()
		if proc != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = proc.Stop(stopCtx)
			cancel()
		}
	}()
	init := cs.InitializeResult()
	u.mu.Lock()
	u.cs, u.proc = cs, proc
	if init != nil {
		u.protocol = init.ProtocolVersion
		if init.ServerInfo != nil {
			u.server = init.ServerInfo.Name + " " + init.ServerInfo.Version
		}
	}
	u.mu.Unlock()
	if err := u.refreshAll(ctx, cs); err != nil {
		u.markAttemptDone()
		return fmt.Errorf("list upstream features: %w", err)
	}
	u.setState(StateUp, "")
	u.markAttemptDone()
	u.log.Info("upstream up", "protocol", u.protocol, "server", u.server)

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
				if perr != nil {
					return fmt.Errorf("upstream process exited: %w", perr)
				}
				return errors.New("upstream process exited")
			case <-time.After(2 * time.Second):
			}
		}
		if err != nil {
			return fmt.Errorf("upstream session ended: %w", err)
		}
		return errors.New("upstream session ended")
	case <-u.reconnect:
		return errors.New("session expired; reconnecting")
	}
}

// markAttemptDone wakes callers waiting for the current attempt.
func (u *upstream) markAttemptDone() {
	u.mu.Lock()
	close(u.ready)
	u.ready = make(chan struct{})
	u.mu.Unlock()
}

func (u *upstream) connect(ctx context.Context) (*mcp.ClientSession, Process, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "symbi", Version: u.g.opts.Version}, &mcp.ClientOptions{
		Logger:                        u.g.log.With("component", "mcp_client", "upstream", u.cfg.Name),
		ElicitationHandler:            u.elicit,
		CreateMessageWithToolsHandler: u.createMessage,
		ToolListChangedHandler:        func(ctx context.Context, _ *mcp.ToolListChangedRequest) { u.refreshLater("tools") },
		PromptListChangedHandler:      func(ctx context.Context, _ *mcp.PromptListChangedRequest) { u.refreshLater("prompts") },
		ResourceListChangedHandler:    func(ctx context.Context, _ *mcp.ResourceListChangedRequest) { u.refreshLater("resources") },
		ResourceUpdatedHandler:        u.resourceUpdated,
		LoggingMessageHandler:         u.logMessage,
		ProgressNotificationHandler:   u.progressNotification,
		MultiRoundTrip:                &mcp.MultiRoundTripOptions{Disabled: true},
		Capabilities: &mcp.ClientCapabilities{
			RootsV2:     &mcp.RootCapabilities{ListChanged: true},
			Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
		},
	})
	client.AddReceivingMiddleware(u.rootsMiddleware)

	var (
		transport mcp.Transport
		proc      Process
	)
	switch {
	case u.cfg.Launch != nil:
		p, err := u.cfg.Launch(ctx)
		if err != nil {
			return nil, nil, err
		}
		proc = p
		conn := newFrameConn(newLineFramer(p.Stdout(), p.Stdin(), closerFunc(func() error {
			return p.Stdin().Close()
		}), u.g.opts.MaxMessageBytes), FrameConnOptions{
			Peer:   "upstream " + u.cfg.Name,
			Logger: u.g.log,
			OnGarbage: func(reason string) {
				u.g.metrics.badFrames.WithLabelValues("upstream:"+u.cfg.Name, reason).Inc()
			},
		})
		transport = frameTransport{conn}
	case u.cfg.SSE:
		transport = &mcp.SSEClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.httpClient()}
	default:
		transport = &mcp.StreamableClientTransport{Endpoint: u.cfg.URL, HTTPClient: u.httpClient(), MaxRetries: 2}
	}
	cctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	cs, err := client.Connect(cctx, transport, nil)
	if err != nil {
		if proc != nil {
			stopCtx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
			_ = proc.Stop(stopCtx)
			c2()
		}
		return nil, nil, fmt.Errorf("connect upstream %s: %w", u.cfg.Name, err)
	}
	return cs, proc, nil
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

func (u *upstream) httpClient() *http.Client {
	return &http.Client{Transport: headerTransport{base: http.DefaultTransport, headers: u.cfg.Headers}}
}

// client returns the live session, or a clear error when the upstream is down. If a
// (re)connection attempt is under way it waits for it, bounded by ctx.
func (u *upstream) client(ctx context.Context) (*mcp.ClientSession, error) {
	for range 2 {
		u.mu.Lock()
		cs, state, lastErr, ready := u.cs, u.state, u.lastErr, u.ready
		u.mu.Unlock()
		if cs != nil && state == StateUp {
			return cs, nil
		}
		if state != StateStarting {
			msg := fmt.Sprintf("upstream %q is %s", u.cfg.Name, state)
			if lastErr != "" {
				msg += ": " + lastErr
			}
			return nil, &Error{Kind: Unavailable, Public: msg}
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, &Error{Kind: Unavailable, Public: fmt.Sprintf("upstream %q is starting", u.cfg.Name), Err: ctx.Err()}
		}
	}
	return nil, &Error{Kind: Unavailable, Public: fmt.Sprintf("upstream %q is not available", u.cfg.Name)}
}

// sessionLost reports whether err means the upstream session is gone (an expired HTTP
// session or a closed connection), so a reconnect and one retry are in order.
func sessionLost(err error) bool {
	return errors.Is(err, mcp.ErrSessionMissing) || errors.Is(err, mcp.ErrConnectionClosed) || errors.Is(err, io.EOF)
}

// call runs f against the upstream with the per-request timeout, tracking the client
// session that caused it. An HTTP upstream whose session expired is reconnected and
// the call retried once; a stdio upstream is not retried (the call may have had effects).
func (u *upstream) call(ctx context.Context, ss *mcp.ServerSession, f func(context.Context, *mcp.ClientSession) error) error {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	id := u.callSeq.Add(1)
	if ss != nil {
		u.inflight.Store(id, ss)
		u.lastCall.Store(id)
		defer u.inflight.Delete(id)
	}
	for attempt := 0; ; attempt++ {
		cs, err := u.client(ctx)
		if err != nil {
			return err
		}
		err = f(ctx, cs)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) || errors.Is(err, context.DeadlineExceeded) {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return &Error{Kind: Unavailable, Public: fmt.Sprintf("upstream %q did not answer within %s", u.cfg.Name, u.cfg.Timeout), Err: err}
			}
			return err
		}
		if sessionLost(err) {
			if attempt == 0 && u.cfg.Launch == nil {
				u.log.Info("upstream session lost; reconnecting", "err", err.Error())
				select {
				case u.reconnect <- struct{}{}:
				default:
				}
				u.waitNewSession(ctx, cs)
				continue
			}
			return &Error{Kind: Unavailable, Public: fmt.Sprintf("upstream %q closed the connection", u.cfg.Name), Err: err}
		}
		return err
	}
}

// waitNewSession waits until the upstream's session is no longer old (bounded by ctx).
func (u *upstream) waitNewSession(ctx context.Context, old *mcp.ClientSession) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		u.mu.Lock()
		cs, state := u.cs, u.state
		u.mu.Unlock()
		if cs != nil && cs != old && state == StateUp {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// routeSession picks the client session a request started by the upstream belongs to:
// the one whose call is in flight, the most recent one if several are.
func (u *upstream) routeSession() (*mcp.ServerSession, bool) {
	if v, ok := u.inflight.Load(u.lastCall.Load()); ok {
		return v.(*mcp.ServerSession), true
	}
	var best uint64
	var ss *mcp.ServerSession
	u.inflight.Range(func(k, v any) bool {
		if id := k.(uint64); id >= best {
			best, ss = id, v.(*mcp.ServerSession)
		}
		return true
	})
	return ss, ss != nil
}

func (u *upstream) elicit(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	ss, ok := u.routeSession()
	if !ok {
		return nil, fmt.Errorf("elicitation from upstream %q: no client request in flight to ask", u.cfg.Name)
	}
	return ss.Elicit(ctx, req.Params)
}

func (u *upstream) createMessage(ctx context.Context, req *mcp.CreateMessageWithToolsRequest) (*mcp.CreateMessageWithToolsResult, error) {
	ss, ok := u.routeSession()
	if !ok {
		return nil, fmt.Errorf("sampling from upstream %q: no client request in flight to ask", u.cfg.Name)
	}
	return ss.CreateMessageWithTools(ctx, req.Params)
}

// rootsMiddleware answers an upstream's roots/list with the roots of the client session
// it is working for (none when no request is in flight).
func (u *upstream) rootsMiddleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method != "roots/list" {
			return next(ctx, method, req)
		}
		ss, ok := u.routeSession()
		if !ok {
			return &mcp.ListRootsResult{Roots: []*mcp.Root{}}, nil
		}
		p, _ := req.GetParams().(*mcp.ListRootsParams)
		if p == nil {
			p = &mcp.ListRootsParams{}
		}
		return ss.ListRoots(ctx, p)
	}
}

func (u *upstream) logMessage(ctx context.Context, req *mcp.LoggingMessageRequest) {
	p := *req.Params
	if p.Logger == "" {
		p.Logger = u.cfg.Name
	}
	if ss, ok := u.routeSession(); ok {
		_ = ss.Log(ctx, &p)
		return
	}
	for ss := range u.g.server.Sessions() {
		_ = ss.Log(ctx, &p)
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
	_ = r.ss.NotifyProgress(ctx, &p)
}

// progressToken maps a client's progress token to a token unique on this upstream's
// connection; release undoes it.
func (u *upstream) progressToken(ss *mcp.ServerSession, clientToken any) (string, func()) {
	if clientToken == nil || ss == nil {
		return "", func() {}
	}
	tok := fmt.Sprintf("symbi-%d", u.progSeq.Add(1))
	u.progress.Store(tok, progressRoute{ss: ss, token: clientToken})
	return tok, func() { u.progress.Delete(tok) }
}

func (u *upstream) resourceUpdated(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
	_ = u.g.server.ResourceUpdated(ctx, req.Params)
}

// refreshLater re-lists one kind of feature after a list_changed notification, off the
// notification's goroutine.
func (u *upstream) refreshLater(kind string) {
	u.mu.Lock()
	cs := u.cs
	u.mu.Unlock()
	if cs == nil {
		return
	}
	u.g.wg.Add(1)
	go func() { // owned by the gateway's wait group
		defer u.g.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), u.cfg.Timeout)
		defer cancel()
		var err error
		switch kind {
		case "tools":
			err = u.refreshTools(ctx, cs)
		case "prompts":
			err = u.refreshPrompts(ctx, cs)
		default:
			err = u.refreshResources(ctx, cs)
		}
		if err != nil {
			u.log.Warn("refresh upstream list", "kind", kind, "err", err.Error())
		}
	}()
}

// Refresh re-lists every feature of the named upstream now (after an approval, say).
func (g *Gateway) Refresh(ctx context.Context, name string) error {
	u, ok := g.byName[name]
	if !ok {
		return fmt.Errorf("refresh upstream %s: no such upstream", name)
	}
	u.mu.Lock()
	cs := u.cs
	u.mu.Unlock()
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
	var tools []*mcp.Tool
	for t, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return fmt.Errorf("list tools: %w", err)
		}
		tools = append(tools, t)
	}
	u.g.syncTools(ctx, u, tools)
	return nil
}

func (u *upstream) refreshPrompts(ctx context.Context, cs *mcp.ClientSession) error {
	var prompts []*mcp.Prompt
	for p, err := range cs.Prompts(ctx, nil) {
		if err != nil {
			return fmt.Errorf("list prompts: %w", err)
		}
		prompts = append(prompts, p)
	}
	u.g.syncPrompts(u, prompts)
	return nil
}

func (u *upstream) refreshResources(ctx context.Context, cs *mcp.ClientSession) error {
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
	u.g.syncResources(u, resources, templates)
	return nil
}

// rawTool is the tool as the upstream listed it, for verification.
func rawTool(t *mcp.Tool) json.RawMessage {
	b, err := json.Marshal(t)
	if err != nil {
		return nil
	}
	return b
}
