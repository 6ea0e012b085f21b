package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/policy/secrets"
)

// Request is one client request as the chain's steps see it, whatever the transport.
type Request struct {
	Method    string
	Identity  Identity
	Session   *mcp.ServerSession
	Transport string // stdio, http, websocket

	// Set where they apply.
	Tool      *ToolInfo       // tools/call
	Upstream  string          // tools/call, prompts/get, resources/read, completion/complete
	Name      string          // exposed tool or prompt name
	URI       string          // resources/read, resources/subscribe
	Arguments json.RawMessage // tools/call; a step may replace it (redaction)

	// Raw is the SDK's request; steps that need other parameters read them here.
	Raw mcp.Request

	// Set by the policy step, read by the audit step and the tool handler.
	verdict  verdict
	findings []secrets.Finding
	approval *policy.Condition
	priority string // the level a policy priority condition set; "" = none
	// afterTask, set by the policy step, applies the decision's result conditions to the
	// result of a call that became a task (tasks.go).
	afterTask func(mcp.Result) (mcp.Result, error)
}

// Priority is the level (low, normal, high, critical) a policy priority condition set
// for the task or agent run this request creates, or "" when the policy set none.
func (r *Request) Priority() string { return r.priority }

// Handler handles a Request.
type Handler func(ctx context.Context, req *Request) (mcp.Result, error)

// Step is one stage of the request path: it sees the request, may stop it, and calls
// next. A step that filters a list calls next and edits the result.
type Step func(ctx context.Context, req *Request, next Handler) (mcp.Result, error)

// Chain composes steps in order: Chain(a, b)(final) runs a, then b, then final.
func Chain(steps ...Step) func(Handler) Handler {
	return func(final Handler) Handler {
		h := final
		for i := len(steps) - 1; i >= 0; i-- {
			step, next := steps[i], h
			h = func(ctx context.Context, req *Request) (mcp.Result, error) { return step(ctx, req, next) }
		}
		return h
	}
}

// Kind classifies a refused or failed request for clients, audit and metrics.
type Kind int

// The kinds of Error.
const (
	Denied Kind = iota + 1
	Invalid
	NotFound
	Unavailable
	Internal
)

func (k Kind) String() string {
	switch k {
	case Denied:
		return "denied"
	case Invalid:
		return "invalid"
	case NotFound:
		return "not_found"
	case Unavailable:
		return "unavailable"
	case Internal:
		return "internal"
	}
	return "unknown"
}

// Error is a classified failure. Public is what the client sees; Err stays internal
// (logs and audit).
type Error struct {
	Kind   Kind
	Public string
	Err    error
	// Data, if set, is the JSON-RPC error's data member (for a resource that is not
	// found, {"uri": ...} as SEP-2164 asks).
	Data json.RawMessage
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Public + ": " + e.Err.Error()
	}
	return e.Public
}

func (e *Error) Unwrap() error { return e.Err }

// JSON-RPC codes for the kinds; -32001..-32099 are implementation-defined server errors.
const (
	CodeDenied      = -32001
	CodeUnavailable = -32002
)

// RPCError is what the client receives for e.
func (e *Error) RPCError() *jsonrpc.Error {
	code := int64(jsonrpc.CodeInternalError)
	switch e.Kind {
	case Denied:
		code = CodeDenied
	case Invalid:
		code = jsonrpc.CodeInvalidParams
	case NotFound:
		code = jsonrpc.CodeInvalidParams
	case Unavailable:
		code = CodeUnavailable
	}
	return &jsonrpc.Error{Code: code, Message: e.Public, Data: e.Data}
}

// gated lists the methods that go through the chain; everything else (initialize,
// ping, notifications) takes the SDK's path directly.
var gated = map[string]bool{
	"tools/list": true, "tools/call": true,
	"prompts/list": true, "prompts/get": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"completion/complete": true, "logging/setLevel": true,
}

type requestKey struct{}

// RequestFrom returns the chain's Request for the current call, if any.
func RequestFrom(ctx context.Context) (*Request, bool) {
	r, ok := ctx.Value(requestKey{}).(*Request)
	return r, ok
}

type sessionCallerKey struct{}

// sessionCaller is who sent a session's initialized notification, and over what.
type sessionCaller struct {
	id        Identity
	transport string
}

// middleware adapts the SDK's receiving path to the chain.
func (g *Gateway) middleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		ss, _ := req.GetSession().(*mcp.ServerSession)
		if ss != nil && !g.modernSeen.Load() && !legacyClient(ss) && g.modernSeen.CompareAndSwap(false, true) {
			g.prepareModern(ss)
		}
		if method == "notifications/initialized" {
			// The SDK hands InitializedHandler no request extra: carry the caller's
			// identity and transport to sessionOpened through the context.
			id, transport := g.identify(ss, req.GetExtra())
			ctx = context.WithValue(ctx, sessionCallerKey{}, sessionCaller{id, transport})
		}
		if method == "subscriptions/listen" {
			// Not gated, but a built-in resource's SubscribeCheck needs the caller, and each
			// resource it follows is decided as a resources/subscribe (decideListen).
			r := &Request{Method: method, Raw: req, Session: ss}
			r.Identity, r.Transport = g.identify(ss, req.GetExtra())
			ctx = context.WithValue(ctx, requestKey{}, r)
			if err := g.decideListen(ctx, r); err != nil {
				return nil, err
			}
		}
		if strings.HasPrefix(method, "tasks/") {
			return g.serveTasks(ctx, ss, method, req) // tasks.go
		}
		if !gated[method] {
			return next(ctx, method, req)
		}
		r := &Request{Method: method, Raw: req}
		r.Session = ss
		r.Identity, r.Transport = g.identify(r.Session, req.GetExtra())
		if id, ok := internalIdentity(ctx); ok && g.internalSession(ss) {
			r.Identity, r.Transport = id, InternalTransport // Gateway.CallTool
		}
		g.describe(r)
		final := func(ctx context.Context, r *Request) (mcp.Result, error) {
			if p, ok := req.GetParams().(*mcp.CallToolParamsRaw); ok {
				p.Arguments = r.Arguments
				var err error
				if ctx, err = g.taskCall(ctx, r); err != nil { // tasks.go
					return nil, err
				}
				if res, ok, err := g.fastToolCall(ctx, r, p); ok { // fastcall.go
					return res, err
				}
			}
			res, err := next(context.WithValue(ctx, requestKey{}, r), method, req)
			var tc *taskCreated
			if errors.As(err, &tc) {
				return tc.res, nil
			}
			return res, err
		}
		res, err := g.chain(final)(ctx, r)
		var ge *Error
		if errors.As(err, &ge) {
			return nil, ge.RPCError()
		}
		return res, err
	}
}

// decideListen decides each resource a subscriptions/listen (2026-07-28) asks to follow
// as a resources/subscribe of that URI would be: through the chain, so it is counted,
// audited and decided by the policy with its conditions. A URI the policy refuses is
// taken out of the request, so the SDK neither subscribes to it nor acknowledges it
// (notifications/subscriptions/acknowledged carries the subset the server agreed to
// honour). Any other failure (a resource the gateway does not expose, an audit trail
// that cannot record, a condition that cannot be enforced) fails the whole request, as
// it fails a resources/subscribe.
func (g *Gateway) decideListen(ctx context.Context, lr *Request) error {
	p, ok := lr.Raw.GetParams().(*mcp.SubscriptionsListenParams)
	if !ok || p == nil || p.Notifications == nil || len(p.Notifications.ResourceSubscriptions) == 0 {
		return nil
	}
	allowed := func(context.Context, *Request) (mcp.Result, error) { return nil, nil }
	kept := make([]string, 0, len(p.Notifications.ResourceSubscriptions))
	for _, uri := range p.Notifications.ResourceSubscriptions {
		r := &Request{Method: "resources/subscribe", Identity: lr.Identity, Session: lr.Session, Transport: lr.Transport,
			Raw: &mcp.SubscribeRequest{Session: lr.Session, Extra: lr.Raw.GetExtra(), Params: &mcp.SubscribeParams{URI: uri, Meta: p.Meta}}}
		g.describe(r)
		_, err := g.chain(allowed)(ctx, r)
		var ge *Error
		switch {
		case err == nil:
			kept = append(kept, uri)
		case errors.As(err, &ge) && ge.Kind == Denied:
			// Refused: left out of the subscription and of its acknowledgement.
		case errors.As(err, &ge):
			return ge.RPCError()
		default:
			return err
		}
	}
	n := *p.Notifications
	n.ResourceSubscriptions = kept
	p.Notifications = &n
	return nil
}

// describe fills the routing fields of r from its parameters.
func (g *Gateway) describe(r *Request) {
	switch p := r.Raw.GetParams().(type) {
	case *mcp.CallToolParamsRaw:
		r.Name, r.Arguments = p.Name, p.Arguments
		if t, ok := g.Tool(p.Name); ok {
			r.Tool, r.Upstream = t, t.Upstream
		}
	case *mcp.GetPromptParams:
		r.Name = p.Name
		g.mu.RLock()
		r.Upstream = g.prompts[p.Name].upstream
		g.mu.RUnlock()
	case *mcp.ReadResourceParams:
		r.URI = p.URI
		r.Upstream = g.resourceUpstream(p.URI)
	case *mcp.SubscribeParams:
		r.URI = p.URI
		r.Upstream = g.resourceUpstream(p.URI)
	case *mcp.UnsubscribeParams:
		r.URI = p.URI
		r.Upstream = g.resourceUpstream(p.URI)
	case *mcp.CompleteParams:
		if p.Ref != nil {
			r.Name, r.URI = p.Ref.Name, p.Ref.URI
			r.Upstream = g.completionRoute(p.Ref).upstream
		}
	}
}

// identify names the caller: a bearer token's identity over HTTP, the identity bound to
// a WebSocket session, "anonymous" for unauthenticated loopback HTTP, and "local" for
// the stdio client.
func (g *Gateway) identify(ss *mcp.ServerSession, extra *mcp.RequestExtra) (Identity, string) {
	if g.internalSession(ss) {
		return Identity{ID: "symbi", Kind: "internal"}, InternalTransport
	}
	if extra != nil && extra.TokenInfo != nil && extra.TokenInfo.UserID != "" {
		return Identity{ID: extra.TokenInfo.UserID, Kind: "client", Claims: tokenClaims(extra.TokenInfo)}, "http"
	}
	if ss != nil {
		if id := ss.ID(); id != "" {
			if v, ok := g.wsIdentity.Load(id); ok {
				if strings.HasPrefix(id, "sse-") { // SSE sessions share the map
					return v.(Identity), "sse"
				}
				if strings.HasPrefix(id, containerSessionPrefix) { // and ServeAs sessions
					return v.(Identity), ContainerTransport
				}
				return v.(Identity), "websocket"
			}
		}
	}
	if extra != nil && extra.Header != nil {
		return Identity{ID: "anonymous", Kind: "client"}, "http"
	}
	return Identity{ID: "local", Kind: "client"}, "stdio"
}

// ContainerTransport is the transport of a session served with ServeAs.
const ContainerTransport = "container"

const containerSessionPrefix = "ctr-"

// unknownLabel is the metric label value of a tool or prompt the gateway does not expose.
const unknownLabel = "unknown"

// observe is the first step: it counts and times every gated request.
func (g *Gateway) observe(ctx context.Context, r *Request, next Handler) (mcp.Result, error) {
	start := time.Now()
	res, err := next(ctx, r)
	// Label values come from the gateway's own tables, never from what the client
	// wrote: a name it does not expose is "unknown", so made-up names cannot multiply
	// series.
	tool := ""
	switch r.Method {
	case "tools/call":
		tool = unknownLabel
		if r.Tool != nil {
			tool = r.Tool.Name
		}
	case "prompts/get":
		tool = unknownLabel
		if r.Upstream != "" {
			tool = r.Name
		}
	}
	labels := []string{r.Method, r.Upstream, tool}
	g.metrics.requests.WithLabelValues(labels...).Inc()
	g.metrics.latency.WithLabelValues(labels...).Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		kind := "protocol"
		var ge *Error
		if errors.As(err, &ge) {
			kind = ge.Kind.String()
		}
		g.metrics.errors.WithLabelValues(r.Method, r.Upstream, tool, kind).Inc()
	case r.Method == "tools/call":
		if toolResultIsError(res) {
			g.metrics.errors.WithLabelValues(r.Method, r.Upstream, tool, "tool").Inc()
		}
	}
	return res, err
}
