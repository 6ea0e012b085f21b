package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
)

// The bridge lets a 2026-07-28 client use an upstream that speaks 2025-11-25. Such an
// upstream asks for elicitation, sampling or roots in the middle of a call, as a
// request; a 2026-07-28 client can only be asked through an input-required result
// that it answers by retrying the call with inputResponses and requestState. So the
// bridge keeps the upstream call running, returns each question to the client as an
// input-required result whose requestState names the pending call, and delivers the
// client's answer when it retries. A requestState symbi did not issue passes through
// to the upstream untouched.
//
// A pending call is bounded three ways: the upstream's timeout for the whole call,
// Options.InputTimeout for each wait on the client (between an input-required answer
// and the retry, or after the client dropped a round), and the gateway's end. Whichever
// comes first cancels the upstream request (the upstream receives
// notifications/cancelled); a call that ends with no client there to see it is audited
// as abandoned. The number of pending calls is bounded per identity and in total.

const bridgeStatePrefix = "symbi-bridge:"

// bridgeInputKey is the inputRequests key symbi uses for the question it relays.
const bridgeInputKey = "symbi"

// Defaults of the bridge's bounds (Options).
const (
	DefaultInputTimeout                = 30 * time.Second
	DefaultMaxPendingInputs            = 256
	DefaultMaxPendingInputsPerIdentity = 16
)

// Why a pending call was cancelled (context.Cause of its context).
var (
	errAbandoned = errors.New("the client did not come back with its answer")
	errShutdown  = errors.New("symbi is shutting down")
)

type pendingCall struct {
	id       string
	identity string
	upstream *upstream
	req      *Request // the first round's request, for the audit record

	// ctx is the call's life: it ends at the upstream's timeout, at abandonment, or when
	// the gateway stops; the upstream request runs on it.
	ctx    context.Context
	cancel context.CancelCauseFunc
	round  atomic.Pointer[context.Context] // context of the client request now waiting

	asks     chan *bridgeAsk
	finished chan struct{} // closed when the upstream call has returned (below are set)
	res      mcp.Result
	err      error
	cause    error // why ctx ended before the call returned; nil if it returned by itself

	mu       sync.Mutex
	current  *bridgeAsk  // the question the client is answering
	attached bool        // a client round is waiting for the call
	over     bool        // the outcome was delivered or the call reaped
	idle     *time.Timer // abandons the call while no client round is attached
}

type bridgeAsk struct {
	req   mcp.InputRequest
	reply chan mcp.InputResponse
}

func (p *pendingCall) roundContext() context.Context {
	if c := p.round.Load(); c != nil {
		return *c
	}
	return context.Background()
}

// bridge is the gateway's set of pending bridged calls.
type bridge struct {
	g *Gateway

	mu         sync.Mutex
	calls      map[string]*pendingCall
	byIdentity map[string]int
	closed     bool // the gateway is stopping: no new calls, no new timers
}

// BridgeStatus describes the pending bridged calls, for /readyz.
type BridgeStatus struct {
	Pending               int            `json:"pending"`
	PendingByIdentity     map[string]int `json:"pending_by_identity,omitempty"`
	MaxPending            int            `json:"max_pending"`
	MaxPendingPerIdentity int            `json:"max_pending_per_identity"`
	InputTimeout          string         `json:"input_timeout"`
}

// BridgeStatus reports the calls of 2026-07-28 clients now pending in the bridge.
func (g *Gateway) BridgeStatus() BridgeStatus {
	b := &g.bridge
	b.mu.Lock()
	defer b.mu.Unlock()
	st := BridgeStatus{Pending: len(b.calls), MaxPending: g.opts.MaxPendingInputs,
		MaxPendingPerIdentity: g.opts.MaxPendingInputsPerIdentity, InputTimeout: g.opts.InputTimeout.String()}
	if len(b.byIdentity) > 0 {
		st.PendingByIdentity = make(map[string]int, len(b.byIdentity))
		for id, n := range b.byIdentity {
			st.PendingByIdentity[id] = n
		}
	}
	return st
}

func (b *bridge) lookup(id string) *pendingCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[id]
}

// admit registers p, or refuses it with a retryable error when a bound is reached.
func (b *bridge) admit(p *pendingCall) error {
	o := &b.g.opts
	b.mu.Lock()
	defer b.mu.Unlock()
	var limit string
	switch {
	case b.closed:
		limit = "shutdown"
	case b.byIdentity[p.identity] >= o.MaxPendingInputsPerIdentity:
		limit = "identity"
	case len(b.calls) >= o.MaxPendingInputs:
		limit = "total"
	}
	if limit != "" {
		b.g.metrics.bridgeRefused.WithLabelValues(limit).Inc()
		msg := fmt.Sprintf("too many calls of %q are waiting for the client's input (at most %d); answer them or let them expire (%s), then retry",
			p.identity, o.MaxPendingInputsPerIdentity, o.InputTimeout)
		switch limit {
		case "total":
			msg = fmt.Sprintf("too many calls are waiting for clients' input (at most %d); retry later", o.MaxPendingInputs)
		case "shutdown":
			msg = "symbi is shutting down; retry later"
		}
		return &Error{Kind: Unavailable, Public: msg}
	}
	if b.calls == nil {
		b.calls, b.byIdentity = map[string]*pendingCall{}, map[string]int{}
	}
	b.calls[p.id] = p
	b.byIdentity[p.identity]++
	return nil
}

// remove forgets p; it reports false if p was already gone.
func (b *bridge) remove(p *pendingCall) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.calls[p.id] != p {
		return false
	}
	delete(b.calls, p.id)
	if b.byIdentity[p.identity]--; b.byIdentity[p.identity] <= 0 {
		delete(b.byIdentity, p.identity)
	}
	return true
}

// stop cancels every pending call (the gateway is stopping) and stops their timers.
func (b *bridge) stop() {
	b.mu.Lock()
	b.closed = true
	calls := make([]*pendingCall, 0, len(b.calls))
	for _, p := range b.calls {
		calls = append(calls, p)
	}
	b.mu.Unlock()
	for _, p := range calls {
		p.mu.Lock()
		if p.idle != nil {
			p.idle.Stop()
		}
		p.mu.Unlock()
		p.cancel(errShutdown)
	}
}

// reapRemaining records the calls still pending once their goroutines have ended (at
// the gateway's end) as abandoned.
func (b *bridge) reapRemaining() {
	b.mu.Lock()
	calls := make([]*pendingCall, 0, len(b.calls))
	for _, p := range b.calls {
		calls = append(calls, p)
	}
	b.mu.Unlock()
	for _, p := range calls {
		p.mu.Lock()
		over := p.over
		p.over = true
		p.mu.Unlock()
		if !over {
			b.g.reap(p)
		}
	}
}

// detach marks the client round gone; the call now waits at most InputTimeout for the
// client to come back.
func (g *Gateway) detach(p *pendingCall) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attached = false
	if p.over {
		return
	}
	g.bridge.mu.Lock()
	closed := g.bridge.closed
	g.bridge.mu.Unlock()
	if closed {
		p.cancel(errShutdown)
		return
	}
	if p.idle != nil {
		p.idle.Stop()
	}
	p.idle = time.AfterFunc(g.opts.InputTimeout, func() { g.abandon(p) })
}

// abandon ends a call whose client did not come back within InputTimeout.
func (g *Gateway) abandon(p *pendingCall) {
	p.mu.Lock()
	if p.attached || p.over {
		p.mu.Unlock()
		return
	}
	p.cancel(errAbandoned)
	select {
	case <-p.finished:
		// The call had ended; its result was never collected.
		p.over = true
	default:
		// The upstream call is being cancelled; its goroutine reaps it when it returns.
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	g.reap(p)
}

// reap forgets a call that ended with no client there to see it, and audits it as
// abandoned. The caller has set p.over.
func (g *Gateway) reap(p *pendingCall) {
	if !g.bridge.remove(p) {
		return
	}
	reason := "the client did not come back within " + g.opts.InputTimeout.String()
	select {
	case <-p.finished:
		switch {
		case p.cause == nil:
			reason = "the client never collected the result"
		case errors.Is(p.cause, context.DeadlineExceeded):
			reason = "the call did not finish within the upstream's timeout of " + p.upstream.cfg.Timeout.String()
		case !errors.Is(p.cause, errAbandoned):
			reason = "symbi shut down while the call waited for the client"
		}
	default:
	}
	g.metrics.bridgeEnded.WithLabelValues(p.upstream.cfg.Name, "abandoned").Inc()
	g.log.Info("bridged call abandoned", "upstream", p.upstream.cfg.Name, "call", p.id, "identity", p.identity, "reason", reason)
	r := p.req
	ev := audit.Event{Type: audit.TypeCall, Action: r.Method, Identity: r.Identity.ID, IdentityKind: r.Identity.Kind,
		SessionID: sessionID(r.Session), Transport: r.Transport, Upstream: p.upstream.cfg.Name,
		Outcome: audit.OutcomeAbandoned, Reason: reason, SandboxTier: g.upstreamTier(p.upstream.cfg.Name),
		Detail: map[string]string{"bridged_call": p.id}}
	switch r.Method {
	case "tools/call":
		ev.Tool = r.Name
	case "prompts/get":
		ev.Type, ev.Prompt = audit.TypePromptGet, r.Name
	case "resources/read":
		ev.Type, ev.Resource = audit.TypeRead, r.URI
	}
	g.record(ev)
}

// askBridged hands the upstream's question to the pending call and waits for the
// client's answer, bounded by ctx (the upstream's request: it ends if the upstream
// withdraws the question) and by the call's own life.
func askBridged[R mcp.InputResponse](ctx context.Context, p *pendingCall, req mcp.InputRequest) (R, error) {
	var zero R
	a := &bridgeAsk{req: req, reply: make(chan mcp.InputResponse, 1)}
	select {
	case p.asks <- a:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-p.ctx.Done():
		return zero, fmt.Errorf("ask the client: %w", context.Cause(p.ctx))
	}
	select {
	case resp := <-a.reply:
		switch r := any(resp).(type) {
		case R:
			return r, nil
		case *mcp.CreateMessageResult:
			// A client may answer sampling with the single-content form.
			if out, ok := any(&mcp.CreateMessageWithToolsResult{Meta: r.Meta, Model: r.Model, Role: r.Role, StopReason: r.StopReason, Content: []mcp.Content{r.Content}}).(R); ok {
				return out, nil
			}
		}
		return zero, fmt.Errorf("bridge: client answered with %T", resp)
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-p.ctx.Done():
		return zero, fmt.Errorf("ask the client: %w", context.Cause(p.ctx))
	}
}

// bridged runs one round of a bridged call. The first round starts the upstream call
// in the background; later rounds (the client retrying with our requestState) deliver
// the client's answer. Either way it returns the upstream's result, or the next
// question as an input-required result.
func (g *Gateway) bridged(ctx context.Context, u *upstream, ss *mcp.ServerSession, state string, responses mcp.InputResponseMap,
	run func(ctx context.Context, track inflightCall) (mcp.Result, error), inputRequired func(mcp.InputRequestMap, string) mcp.Result) (mcp.Result, error) {

	r, _ := RequestFrom(ctx)
	if r == nil {
		r = &Request{}
	}
	var p *pendingCall
	if id, ok := strings.CutPrefix(state, bridgeStatePrefix); ok {
		p = g.bridge.lookup(id)
		if p == nil || p.identity != r.Identity.ID {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "unknown or expired requestState"}
		}
		p.mu.Lock()
		if p.over {
			p.mu.Unlock()
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "unknown or expired requestState"}
		}
		if p.attached {
			p.mu.Unlock()
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "a retry of this call is already in progress"}
		}
		a := p.current
		resp := responses[bridgeInputKey]
		select {
		case <-p.finished:
			// The call ended while the client was away (its deadline, say): this round
			// collects the outcome.
		default:
			if a == nil || resp == nil {
				p.mu.Unlock()
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("retry must answer inputRequests[%q]", bridgeInputKey)}
			}
		}
		p.current, p.attached = nil, true
		if p.idle != nil {
			p.idle.Stop()
		}
		p.mu.Unlock()
		p.round.Store(&ctx)
		if a != nil && resp != nil {
			g.log.Debug("bridge: client answered", "upstream", u.cfg.Name, "call", p.id, "response", fmt.Sprintf("%T", resp))
			a.reply <- resp // buffered: never blocks
		}
	} else {
		p = &pendingCall{id: rand.Text(), identity: r.Identity.ID, upstream: u, req: r, attached: true,
			asks: make(chan *bridgeAsk), finished: make(chan struct{})}
		// The upstream call outlives this client request: it goes on while the client
		// answers. It ends with the upstream's timeout, abandonment, or the gateway.
		cctx, cancel := context.WithCancelCause(g.carryTrace(g.runCtx(), ctx))
		sched := g.taskScheduler()
		if !taskWindowFrom(ctx) {
			sched = nil
		}
		var tctx context.Context
		var cancelTimeout context.CancelFunc
		if sched != nil { // the timeout counts from the start, not from the queue (scheduleCall)
			tctx, cancelTimeout = context.WithCancel(cctx)
		} else {
			tctx, cancelTimeout = context.WithTimeout(cctx, u.cfg.Timeout)
		}
		p.ctx, p.cancel = tctx, cancel
		p.round.Store(&ctx)
		if err := g.bridge.admit(p); err != nil {
			cancelTimeout()
			cancel(err)
			return nil, err
		}
		body := func(rctx context.Context) { // ends with rctx (p.ctx or its child) at the latest
			defer cancelTimeout()
			res, err := run(rctx, inflightCall{ss: ss, ctx: rctx, bridged: p})
			g.endCall(p, rctx, res, err)
		}
		if sched != nil {
			// A task tool's call waits its turn in the runtime's scheduler (tasks.go).
			if err := g.scheduleCall(sched, r, p, body, cancelTimeout); err != nil {
				g.bridge.remove(p)
				cancelTimeout()
				cancel(err)
				return nil, err
			}
		} else if !g.goOwned(func() { body(p.ctx) }) { // the gateway began stopping after admit
			g.bridge.remove(p)
			cancelTimeout()
			cancel(errShutdown)
			return nil, &Error{Kind: Unavailable, Public: "symbi is shutting down; retry later"}
		}
	}
	if lt := legacyTaskFrom(ctx); lt != nil { // a 2025-11-25 task: a task at once (tasks_legacy.go)
		res, err := g.adopt(r, u, p, lt)
		if err != nil {
			return nil, err
		}
		return nil, &taskCreated{res}
	}
	var window <-chan time.Time
	if taskWindowFrom(ctx) && g.tasksAvailable(r.Identity.ID) { // a task tool: a call that outlives the window becomes a task
		tm := time.NewTimer(g.taskWindow())
		defer tm.Stop()
		window = tm.C
	}
	select {
	case <-window:
		res, err := g.adopt(r, u, p, nil) // tasks.go
		if err != nil {
			return nil, err
		}
		return nil, &taskCreated{res}
	case <-p.finished:
		p.mu.Lock()
		deliver := !p.over
		p.over, p.attached = true, false
		if p.idle != nil {
			p.idle.Stop()
		}
		p.mu.Unlock()
		if !deliver {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "unknown or expired requestState"}
		}
		g.bridge.remove(p)
		outcome := "completed"
		switch {
		case p.cause == nil:
		case errors.Is(p.cause, context.DeadlineExceeded):
			outcome = "expired"
		case errors.Is(p.cause, errAbandoned):
			outcome = "abandoned"
		default:
			outcome = "cancelled"
		}
		g.metrics.bridgeEnded.WithLabelValues(u.cfg.Name, outcome).Inc()
		return p.res, p.err
	case a := <-p.asks:
		p.mu.Lock()
		p.current = a
		p.mu.Unlock()
		g.detach(p)
		g.log.Debug("bridge: upstream asks the client", "upstream", u.cfg.Name, "call", p.id, "request", fmt.Sprintf("%T", a.req))
		return inputRequired(mcp.InputRequestMap{bridgeInputKey: a.req}, bridgeStatePrefix+p.id), nil
	case <-ctx.Done():
		// The client gave up on this round; the call waits a while for it to come back.
		g.detach(p)
		return nil, ctx.Err()
	}
}

// needsBridge reports whether a request from ss to u goes through the bridge.
func needsBridge(ctx context.Context, u *upstream, ss *mcp.ServerSession) bool {
	return ss != nil && !legacyClient(ss) && !u.connFor(ctx, ss).modern()
}

// endCall records how the bridged call p ended (res, err, and why p.ctx or rctx, the
// context it ran with, ended) and wakes whoever waits on it.
func (g *Gateway) endCall(p *pendingCall, rctx context.Context, res mcp.Result, err error) {
	cause := context.Cause(p.ctx)
	if cause == nil {
		cause = context.Cause(rctx)
	}
	p.cancel(nil)
	if err != nil && (errors.Is(cause, errAbandoned) || errors.Is(cause, errShutdown)) {
		res, err = nil, &Error{Kind: Unavailable, Public: fmt.Sprintf("call to upstream %q ended: %v", p.upstream.cfg.Name, cause), Err: err}
	}
	p.res, p.err, p.cause = res, err, cause
	p.mu.Lock()
	close(p.finished)
	reap := !p.attached && !p.over && cause != nil
	if reap {
		p.over = true
		if p.idle != nil {
			p.idle.Stop()
		}
	}
	p.mu.Unlock()
	if reap {
		g.reap(p)
	}
}
