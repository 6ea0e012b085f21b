// Package gateway is symbi's MCP server: it serves clients over stdio, streamable HTTP,
// legacy SSE and WebSocket, connects to the configured upstream MCP servers, aggregates
// their tools, prompts and resources under namespaced names, and passes every request
// through one ordered chain of steps (identity, metrics, then the security steps the
// caller installs: verification, policy, audit). Traffic that upstreams start
// (sampling, elicitation, roots, logging, progress, list changes, resource updates) is
// forwarded to the right client session. It owns sessions, transports and upstream
// connections; it does not decide policy or verify signatures itself.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/internal/oauth"
	"github.com/symbi-dev/symbi/policy"
	"go.opentelemetry.io/otel/trace"
)

// Options configures a Gateway. The zero value (or nil) is a gateway with no upstreams
// that serves only its built-in tools.
type Options struct {
	Name    string // server name reported to clients; "" = "symbi"
	Version string // "" = the module version or "dev"

	Upstreams []UpstreamConfig
	Logger    *slog.Logger // nil: discard

	// NoFastPath sends every tools/call through the go-sdk client (the fast path is in
	// fastcall.go); for comparisons and tests.
	NoFastPath bool
	// NoFastServe sends every streamable HTTP tools/call through the go-sdk's HTTP
	// handler (the client side of the fast path is in fastserve.go); for comparisons and
	// tests.
	NoFastServe bool
	Metrics     *Metrics // nil: a new registry

	// Steps run, in order, on every request after identity and metrics; they are
	// the extension point for verification, policy and audit.
	Steps []Step
	// ToolFilter, if set, is consulted whenever an upstream lists its tools (the
	// SchemaPin gate): it decides each tool's verification status and whether it is
	// exposed at all.
	ToolFilter ToolFilter

	// MaxMessageBytes bounds one JSON-RPC message on stdio, WebSocket and HTTP bodies;
	// 0 = 4 MiB.
	MaxMessageBytes int
	// InitialWait bounds how long WaitReady waits for upstreams' first connection;
	// 0 = 15s.
	InitialWait time.Duration
	// Tokens maps bearer tokens to identities for HTTP clients; none means HTTP is
	// served to loopback clients only, unauthenticated.
	Tokens map[string]string
	// ClientCerts lets HTTP clients authenticate with a TLS client certificate that the
	// server's TLS configuration verified (mutual TLS): the identity is the
	// certificate's first URI SAN (a SPIFFE ID, say), or else its subject common name.
	// A valid bearer token, when a request also carries one, names the identity instead.
	ClientCerts bool
	// OAuth, if set, accepts JWT access tokens from its issuer as bearer tokens (besides
	// Tokens and ClientCerts), serves the Protected Resource Metadata and names it in
	// every 401 challenge (see oauth.go).
	OAuth *oauth.Verifier
	// OnUpstreamState, if set, is told when an upstream goes up or down (for audit).
	OnUpstreamState func(upstream, state, reason string)
	// InputTimeout bounds how long a bridged call (a 2026-07-28 client calling an
	// upstream that speaks 2025-11-25 and asked for input mid-call) waits for the
	// client to come back with its answer; then the upstream request is cancelled and
	// the call is audited as abandoned. 0 = DefaultInputTimeout.
	InputTimeout time.Duration
	// MaxPendingInputs and MaxPendingInputsPerIdentity bound the bridged calls pending
	// at once, in total and per identity; beyond them a new such call is refused with
	// a retryable error. 0 = DefaultMaxPendingInputs, DefaultMaxPendingInputsPerIdentity.
	MaxPendingInputs            int
	MaxPendingInputsPerIdentity int
	// SignBuiltin, if set, signs the definition of each of symbi's own tools with
	// symbi's SchemaPin key; the signature is published in the tool's
	// _meta["schemapin/signature"]. It returns the signature and the key's fingerprint.
	SignBuiltin func(toolJSON []byte) (signature, fingerprint string, err error)
	// TaskStore, if set, keeps MCP tasks (tasks.go) across restarts; nil keeps them in
	// memory only. TaskTTL is how long a finished task stays readable; 0 = DefaultTaskTTL.
	TaskStore TaskStore
	TaskTTL   time.Duration
	// TaskWindow is how long a task tool's call may run before it becomes a task (a
	// shorter call is answered at once); 0 = DefaultTaskWindow.
	TaskWindow time.Duration
	// TaskInputTimeout bounds how long a task waits for the client's input
	// (input_required); then it fails and its upstream call is cancelled.
	// 0 = DefaultTaskInputTimeout.
	TaskInputTimeout time.Duration
	// TaskSweepInterval is how often finished tasks past their TTL are deleted while
	// the gateway runs; 0 = DefaultTaskSweepInterval.
	TaskSweepInterval time.Duration
	// MaxTasksPerIdentity bounds the unfinished tasks of one identity; beyond it a task
	// tool's call is served synchronously. 0 = DefaultMaxTasksPerIdentity.
	MaxTasksPerIdentity int
}

// UpstreamConfig describes one upstream MCP server.
type UpstreamConfig struct {
	Name   string
	Prefix string // "" keeps names unchanged
	// Launch starts a stdio upstream's process (on the host or in a sandbox tier). Nil for
	// HTTP upstreams.
	Launch  Launcher
	URL     string
	SSE     bool // legacy SSE instead of streamable HTTP
	Headers map[string]string
	Timeout time.Duration // per request; 0 = 60s
	// Tier is reported for HTTP upstreams and before a process starts ("remote" for URLs).
	Tier string
	// Protocol pins the protocol version spoken to the upstream; "" prefers the
	// stateful 2025-11-25 when the upstream offers it and falls back to the latest.
	Protocol string
	// TaskTools and TaskRequired are the upstream tool names (path.Match globs) symbi
	// runs as MCP tasks, and those a client must call as a task (tasks.go).
	TaskTools, TaskRequired []string
}

// Identity is who made a request.
type Identity struct {
	ID     string         `json:"id"`
	Kind   string         `json:"kind"` // client, agent
	Claims map[string]any `json:"claims,omitempty"`
}

// Verification is a tool's SchemaPin outcome, carried into policy input and audit.
type Verification struct {
	Status      string `json:"status"`
	Domain      string `json:"domain,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// ToolInfo is one exposed tool and where it comes from.
type ToolInfo struct {
	Name         string // exposed name
	Upstream     string
	UpstreamName string
	Tool         *mcp.Tool // as exposed
	Verification Verification
	Builtin      bool
	// TaskSupport is what the upstream declared in execution.taskSupport ("optional",
	// "required"), "" if nothing.
	TaskSupport string

	policyTool *policy.Tool // the tool as policy input, built once
}

func newToolInfo(ti ToolInfo) *ToolInfo {
	ti.policyTool = toolInput(&ti)
	return &ti
}

// ToolDecision is what a ToolFilter says of one listed tool.
type ToolDecision struct {
	Verification Verification
	Hidden       bool // not exposed (and so not callable)
}

// ToolFilter decides, at listing time, the verification status and visibility of an
// upstream's tools. raw is each tool exactly as the upstream listed it.
type ToolFilter func(ctx context.Context, upstream string, raw []json.RawMessage) []ToolDecision

// Gateway is one symbi instance.
type Gateway struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	server  *mcp.Server
	started time.Time
	// fastCalls counts the tools/calls served on the fast path (fastcall.go).
	fastCalls atomic.Uint64
	// fastServed counts the tools/calls the client side of the fast path answered
	// (fastserve.go).
	fastServed atomic.Uint64

	// ups is the set of upstreams, replaced whole (copy-on-write) by UpdateUpstreams, so
	// readers take a snapshot without locking; upMu serialises the changes and guards
	// running (Run has started the upstreams in the set).
	ups     atomic.Pointer[upstreamSet]
	upMu    sync.Mutex
	running bool

	listBuiltinOnly atomic.Bool // tools/list shows built-in tools only (ListBuiltinToolsOnly)

	mu        sync.RWMutex
	tools     map[string]*ToolInfo // exposed name -> tool
	prompts   map[string]route     // exposed name -> route
	resources map[string]string    // uri -> upstream
	templates map[string]string    // uri template -> upstream
	subs      map[string]int       // uri -> subscriber count

	wsIdentity  sync.Map // session id -> Identity (WebSocket sessions)
	builtinRes  sync.Map // URI -> struct{}: symbi's own resources
	builtinSubs sync.Map // URI template -> SubscribeCheck: built-in resources clients may subscribe to

	chain   func(Handler) Handler
	bridge  bridge
	tasks   taskTable
	policy  *policyStep
	audit   *AuditOptions
	runCtxV atomic.Pointer[context.Context]
	tokens  atomic.Pointer[map[string]string] // bearer token -> identity; swapped by SetTokens
	// auditRefused and auditUnrecorded count requests met while the trail is broken.
	auditRefused, auditUnrecorded prometheus.Counter

	runOnce   sync.Once
	closeOnce sync.Once
	// life ends at Close: it bounds what the gateway starts before (or without) Run,
	// and Run's own context.
	life     context.Context
	stopLife context.CancelFunc
	done     chan struct{} // closed when Run's context ends
	wg       sync.WaitGroup
	// spawnMu guards stopping: once Run or Close waits on wg, goOwned starts nothing
	// more (a WaitGroup may not grow from zero while it is being waited on).
	spawnMu  sync.Mutex
	stopping bool
	// modernSeen is set by the first request from a 2026-07-28 client.
	modernSeen atomic.Bool
	internal   internalCalls // CallTool's session (internal_call.go)
	tracer     trace.Tracer  // nil: tracing off (trace.go)
}

type route struct {
	upstream string
	name     string
}

// New builds a gateway. Call Run to connect upstreams.
func New(opts *Options) *Gateway {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Name == "" {
		o.Name = "symbi"
	}
	if o.Version == "" {
		o.Version = moduleVersion()
	}
	if o.Logger == nil {
		o.Logger = discardLogger
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = 4 << 20
	}
	if o.InitialWait == 0 {
		o.InitialWait = 15 * time.Second
	}
	if o.InputTimeout <= 0 {
		o.InputTimeout = DefaultInputTimeout
	}
	if o.MaxPendingInputs <= 0 {
		o.MaxPendingInputs = DefaultMaxPendingInputs
	}
	if o.MaxPendingInputsPerIdentity <= 0 {
		o.MaxPendingInputsPerIdentity = DefaultMaxPendingInputsPerIdentity
	}
	g := &Gateway{
		opts:      o,
		log:       o.Logger,
		metrics:   o.Metrics,
		started:   time.Now(),
		tools:     map[string]*ToolInfo{},
		prompts:   map[string]route{},
		resources: map[string]string{},
		templates: map[string]string{},
		subs:      map[string]int{},
		done:      make(chan struct{}),
	}
	g.SetTokens(o.Tokens)
	g.bridge.g = g
	g.life, g.stopLife = context.WithCancel(context.Background())
	g.server = mcp.NewServer(&mcp.Implementation{Name: o.Name, Title: "symbi MCP security gateway", Version: o.Version}, &mcp.ServerOptions{
		Logger:             o.Logger.With("component", "mcp_server"),
		Instructions:       "symbi is a security gateway: tools from several upstream MCP servers appear here as <upstream>__<tool>. symbi__status and symbi__upstreams describe the gateway.",
		CompletionHandler:  g.complete,
		InitializedHandler: g.sessionOpened,
		SubscribeHandler:   g.subscribe,
		UnsubscribeHandler: g.unsubscribe,
		HasTools:           true,
		HasPrompts:         true,
		HasResources:       true,
		Capabilities: &mcp.ServerCapabilities{
			Logging:     &mcp.LoggingCapabilities{},
			Completions: &mcp.CompletionCapabilities{},
			Tools:       &mcp.ToolCapabilities{ListChanged: true},
			Prompts:     &mcp.PromptCapabilities{ListChanged: true},
			Resources:   &mcp.ResourceCapabilities{ListChanged: true, Subscribe: true},
			Extensions:  map[string]any{TasksExtension: map[string]any{}},
		},
	})
	registerTaskMethods(g.server)
	g.rebuildChain()
	g.server.AddReceivingMiddleware(g.middleware)
	g.server.AddReceivingMiddleware(g.legacyTasksMiddleware) // tasks_legacy.go
	g.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "symbi_sessions", Help: "Open client sessions.",
	}, func() float64 { return float64(g.sessionCount()) }))
	g.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "symbi_bridged_calls_pending", Help: "Calls of 2026-07-28 clients pending in the bridge (waiting for the upstream or for the client's input).",
	}, func() float64 { return float64(g.BridgeStatus().Pending) }))
	g.addBuiltins()
	set := &upstreamSet{byName: map[string]*upstream{}}
	for _, c := range o.Upstreams {
		set.add(g.newUpstream(c))
	}
	g.ups.Store(set)
	return g
}

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Server is the underlying MCP server, for transports.
func (g *Gateway) Server() *mcp.Server { return g.server }

// Metrics returns the gateway's metrics.
func (g *Gateway) Metrics() *Metrics { return g.metrics }

// Run connects every upstream and keeps them connected until ctx ends or Close is
// called. It returns after every upstream has been stopped and every goroutine the
// gateway started has ended: calls still pending in the bridge are cancelled (their
// upstreams receive notifications/cancelled) and audited as abandoned.
func (g *Gateway) Run(ctx context.Context) error {
	started := false
	g.runOnce.Do(func() {
		started = true
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		context.AfterFunc(g.life, cancel) // Close ends Run
		g.runCtxV.Store(&ctx)
		g.upMu.Lock()
		g.running = true
		for _, u := range g.upstreamList() {
			g.startUpstream(ctx, u)
		}
		g.upMu.Unlock()
		g.goOwned(func() { g.sampleResources(ctx, 15*time.Second) })
		g.goOwned(func() { g.sweepTasks(ctx) }) // tasks_legacy.go
	})
	if !started {
		return errors.New("run gateway: already running")
	}
	<-ctx.Done()
	close(g.done)
	g.bridge.stop()
	g.stopSpawning()
	g.wg.Wait()
	g.bridge.reapRemaining()
	return nil
}

// sessionOpened records a 2025-11-25 session's start (2026-07-28 has no sessions).
func (g *Gateway) sessionOpened(ctx context.Context, req *mcp.InitializedRequest) {
	id, transport := g.identify(req.Session, req.Extra)
	if c, ok := ctx.Value(sessionCallerKey{}).(sessionCaller); ok {
		id, transport = c.id, c.transport
	}
	ev := audit.Event{Type: audit.TypeSessionOpened, Identity: id.ID, IdentityKind: id.Kind, SessionID: req.Session.ID(), Transport: transport}
	if ip := req.Session.InitializeParams(); ip != nil && ip.ClientInfo != nil {
		ev.Detail = map[string]string{"client": ip.ClientInfo.Name, "client_version": ip.ClientInfo.Version, "protocol": ip.ProtocolVersion}
	}
	g.record(ev)
}

// sessionClosed records the end of a session whose transport symbi owns (stdio,
// WebSocket, SSE).
func (g *Gateway) sessionClosed(ss *mcp.ServerSession, transport string) {
	id, _ := g.identify(ss, nil)
	g.record(audit.Event{Type: audit.TypeSessionClosed, Identity: id.ID, IdentityKind: id.Kind, SessionID: ss.ID(), Transport: transport})
}

// rebuildChain orders the steps: metrics, audit (it sees every outcome, denials
// included), policy, then the caller's own steps.
func (g *Gateway) rebuildChain() {
	steps := []Step{g.observe}
	if g.tracer != nil {
		steps = []Step{g.traceStep, g.observe} // trace.go
	}
	if g.audit != nil {
		steps = append(steps, g.auditStep)
	}
	if g.policy != nil {
		steps = append(steps, g.policy.run)
	}
	g.chain = Chain(append(steps, g.opts.Steps...)...)
}

// upstreamTier is the sandbox tier the named upstream runs in ("" for builtins).
func (g *Gateway) upstreamTier(name string) string {
	u := g.upstream(name)
	if u == nil {
		return ""
	}
	return u.tier()
}

func (g *Gateway) sandboxInput(name string) *policy.Sandbox {
	if t := g.upstreamTier(name); t != "" {
		return &policy.Sandbox{Tier: t}
	}
	return nil
}

func (g *Gateway) promptRoute(name string) route {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.prompts[name]
}

func (g *Gateway) templateUpstream(tpl string) string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.templates[tpl]
}

// runCtx is Run's context (ended when the gateway stops), or before Run the gateway's
// life (ended by Close).
func (g *Gateway) runCtx() context.Context {
	if c := g.runCtxV.Load(); c != nil {
		return *c
	}
	return g.life
}

// sampleResources exports the resource use of sandboxed upstream processes as metrics,
// every interval until ctx ends.
func (g *Gateway) sampleResources(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, u := range g.upstreamList() {
			u.primary.mu.Lock()
			p, ok := u.primary.proc.(StatsProcess)
			u.primary.mu.Unlock()
			if !ok {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := p.Stats(sctx)
			cancel()
			if err != nil {
				g.log.Debug("sample upstream resources", "upstream", u.cfg.Name, "err", err)
				continue
			}
			l := []string{u.cfg.Name, p.Tier()}
			g.metrics.procCPU.WithLabelValues(l...).Set(st.CPUSeconds)
			g.metrics.procMem.WithLabelValues(l...).Set(float64(st.MemoryBytes))
			g.metrics.procMemMax.WithLabelValues(l...).Set(float64(st.MemoryLimit))
			g.metrics.procRead.WithLabelValues(l...).Set(float64(st.ReadBytes))
			g.metrics.procWrite.WithLabelValues(l...).Set(float64(st.WriteBytes))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WaitReady waits until every upstream has made its first connection attempt, or
// Options.InitialWait has passed, or ctx ends.
func (g *Gateway) WaitReady(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, g.opts.InitialWait)
	defer cancel()
	for _, u := range g.upstreamList() {
		select {
		case <-u.firstTry:
		case <-ctx.Done():
			return
		}
	}
}

// Close stops every upstream, ends Run and waits for every goroutine the gateway
// started, also on a gateway that was never run; it is idempotent.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		g.closeInternal()
		g.stopLife()
		g.stopSpawning()
		g.wg.Wait()
	})
	return nil
}

func (g *Gateway) sessionCount() int {
	n := 0
	for ss := range g.server.Sessions() {
		if !g.internalSession(ss) {
			n++
		}
	}
	return n
}

// Tool returns the exposed tool with that name.
func (g *Gateway) Tool(name string) (*ToolInfo, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	t, ok := g.tools[name]
	return t, ok
}

// UpstreamStatus is one upstream's state, for /readyz and the status tools.
type UpstreamStatus struct {
	Name      string    `json:"name"`
	Transport string    `json:"transport"`
	State     string    `json:"state"`
	Tier      string    `json:"tier"`
	Protocol  string    `json:"protocol,omitempty"`
	Server    string    `json:"server,omitempty"`
	Tools     int       `json:"tools"`
	Hidden    int       `json:"hidden_tools"`
	Prompts   int       `json:"prompts"`
	Resources int       `json:"resources"`
	Restarts  int       `json:"restarts"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	// Stderr holds the last lines the upstream's process wrote to stderr, while it is not
	// up (why it failed to start or exited).
	Stderr []string `json:"stderr,omitempty"`
	// Clients2026 is how 2026-07-28 clients reach the upstream: "direct" (it speaks
	// 2026-07-28), "bridged" (it does not; mid-call questions become input-required
	// results), or "" until the first such client arrives.
	Clients2026 string `json:"clients_2026,omitempty"`
}

// Status reports every upstream, in configuration order.
func (g *Gateway) Status() []UpstreamStatus {
	ups := g.upstreamList()
	out := make([]UpstreamStatus, 0, len(ups))
	for _, u := range ups {
		out = append(out, u.status())
	}
	return out
}

// ToolList returns the exposed tools sorted by name.
func (g *Gateway) ToolList() []*ToolInfo {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]*ToolInfo, 0, len(g.tools))
	for _, t := range g.tools {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// safeAdd runs an SDK registration that panics on definitions it rejects, turning the
// panic into an error so one bad upstream definition never takes the gateway down.
func safeAdd(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	f()
	return nil
}

// upstreamMeta copies a client's _meta for the upstream leg: without the protocol's
// per-request keys and the progress token, which the gateway sets itself. It asks for
// every log message (a 2026-07-28 upstream reads the level per request; others ignore
// the key); the SDK filters them per client.
func upstreamMeta(m mcp.Meta) mcp.Meta {
	out := make(mcp.Meta, len(m)+1)
	for k, v := range m {
		// A 2026-07-28 client's declared capabilities go along, so the upstream asks only
		// for what the client can answer.
		if k == "progressToken" || k != mcp.MetaKeyClientCapabilities && strings.HasPrefix(k, "io.modelcontextprotocol/") {
			continue
		}
		out[k] = v
	}
	out[mcp.MetaKeyLogLevel] = "debug"
	return out
}

func sortedNames[M ~map[string]V, V any](m M) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// goOwned runs fn in a goroutine owned by the gateway's wait group, unless the gateway
// is already waiting for its goroutines to end (then it reports false and runs nothing).
func (g *Gateway) goOwned(fn func()) bool {
	g.spawnMu.Lock()
	defer g.spawnMu.Unlock()
	if g.stopping {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// stopSpawning makes goOwned refuse from now on, before the gateway waits on wg.
func (g *Gateway) stopSpawning() {
	g.spawnMu.Lock()
	g.stopping = true
	g.spawnMu.Unlock()
}
