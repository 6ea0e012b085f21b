package gateway

import (
	"context"
	"maps"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/policy"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Span names of the steps a request passes through. The request's own span and the
// upstream call's are named as the MCP semantic conventions ask: "{method} {target}".
const (
	SpanSchemaPin = "symbi.schemapin"
	SpanPolicy    = "symbi.policy"
	SpanAudit     = "symbi.audit"
)

// tracerName is the instrumentation scope of the gateway's spans.
const tracerName = "github.com/symbi-dev/symbi/gateway"

// The W3C trace context keys, in HTTP headers and in params._meta (where MCP clients
// and servers carry them).
const (
	MetaTraceparent = "traceparent"
	MetaTracestate  = "tracestate"
)

var traceContext = propagation.TraceContext{}

// UseTracing makes the gateway record a span for every gated request and its steps
// (SchemaPin gate, policy, upstream call, audit), continuing the caller's trace from
// params._meta or the HTTP request's traceparent, and propagating it to upstreams (in
// params._meta, and as the traceparent header of HTTP upstream requests). Call it
// before Run; nil (or never calling it) traces nothing, and then the request path
// carries no tracing code beyond a nil check.
func (g *Gateway) UseTracing(tp trace.TracerProvider) {
	g.tracer = nil
	if tp != nil {
		g.tracer = tp.Tracer(tracerName, trace.WithInstrumentationVersion(g.opts.Version))
	}
	g.rebuildChain()
}

// metaCarrier reads and writes the trace context in a params._meta map.
type metaCarrier map[string]any

func (m metaCarrier) Get(key string) string {
	s, _ := m[key].(string)
	return s
}

func (m metaCarrier) Set(key, value string) { m[key] = value }

func (m metaCarrier) Keys() []string { return []string{MetaTraceparent, MetaTracestate} }

// incomingTrace is the trace context the client sent: in params._meta (preferred: it is
// the MCP request's own), else in the HTTP request's headers.
func incomingTrace(ctx context.Context, req mcp.Request) context.Context {
	if req == nil {
		return ctx
	}
	if p := req.GetParams(); p != nil && !isNilParams(p) {
		if m := p.GetMeta(); m != nil {
			if c := traceContext.Extract(ctx, metaCarrier(m)); trace.SpanContextFromContext(c).IsValid() {
				return c
			}
		}
	}
	if e := req.GetExtra(); e != nil && e.Header != nil {
		return traceContext.Extract(ctx, propagation.HeaderCarrier(e.Header))
	}
	return ctx
}

// isNilParams reports whether p is a typed nil of the parameter types the chain sees
// (calling GetMeta on one would panic).
func isNilParams(p mcp.Params) bool {
	switch p := p.(type) {
	case *mcp.CallToolParamsRaw:
		return p == nil
	case *mcp.CallToolParams:
		return p == nil
	case *mcp.GetPromptParams:
		return p == nil
	case *mcp.ReadResourceParams:
		return p == nil
	case *mcp.SubscribeParams:
		return p == nil
	case *mcp.UnsubscribeParams:
		return p == nil
	case *mcp.CompleteParams:
		return p == nil
	case *mcp.ListToolsParams:
		return p == nil
	case *mcp.ListPromptsParams:
		return p == nil
	case *mcp.ListResourcesParams:
		return p == nil
	case *mcp.ListResourceTemplatesParams:
		return p == nil
	case *mcp.SetLoggingLevelParams:
		return p == nil
	}
	return false
}

// spanTarget is what the span of r is named after, besides its method: a tool or
// prompt name (never a URI or a made-up name, which would multiply span names).
func spanTarget(r *Request) string {
	switch r.Method {
	case "tools/call":
		if r.Tool != nil {
			return r.Tool.Name
		}
	case "prompts/get":
		if r.Upstream != "" {
			return r.Name
		}
	}
	return ""
}

// traceStep is the first step when tracing is on: it opens the request's span, as a
// child of the caller's trace context when there is one, and notes the SchemaPin
// gate's verdict on the tool being called.
func (g *Gateway) traceStep(ctx context.Context, r *Request, next Handler) (mcp.Result, error) {
	name := r.Method
	if t := spanTarget(r); t != "" {
		name += " " + t
	}
	attrs := []attribute.KeyValue{
		attribute.String("mcp.method.name", r.Method),
		attribute.String("symbi.identity", r.Identity.ID),
		attribute.String("symbi.transport", r.Transport),
	}
	if id := sessionID(r.Session); id != "" {
		attrs = append(attrs, attribute.String("mcp.session.id", id))
	}
	if r.Upstream != "" {
		attrs = append(attrs, attribute.String("symbi.upstream", r.Upstream))
	}
	switch r.Method {
	case "tools/call":
		attrs = append(attrs, attribute.String("gen_ai.operation.name", "execute_tool"), attribute.String("gen_ai.tool.name", r.Name))
	case "prompts/get":
		attrs = append(attrs, attribute.String("gen_ai.prompt.name", r.Name))
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		attrs = append(attrs, attribute.String("mcp.resource.uri", r.URI))
	}
	ctx, span := g.tracer.Start(incomingTrace(ctx, r.Raw), name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	defer span.End()
	if r.Method == "tools/call" {
		g.traceGate(ctx, r)
	}
	res, err := next(ctx, r)
	endSpan(span, res, err)
	return res, err
}

// traceGate records the SchemaPin gate's verdict on the called tool: its verification
// status as pinned when the upstream listed it. A tool the gate held back (changed,
// revoked, invalid) is not exposed, so its call is refused as unknown.
func (g *Gateway) traceGate(ctx context.Context, r *Request) {
	_, span := g.tracer.Start(ctx, SpanSchemaPin)
	defer span.End()
	if r.Tool == nil {
		span.SetAttributes(attribute.Bool("symbi.schemapin.exposed", false))
		span.SetStatus(codes.Error, "tool not exposed: unknown, or held back by the SchemaPin gate")
		return
	}
	v := r.Tool.Verification
	span.SetAttributes(attribute.Bool("symbi.schemapin.exposed", true), attribute.String("symbi.schemapin.status", v.Status))
	if v.Domain != "" {
		span.SetAttributes(attribute.String("symbi.schemapin.domain", v.Domain))
	}
	if v.Fingerprint != "" {
		span.SetAttributes(attribute.String("symbi.schemapin.fingerprint", v.Fingerprint))
	}
}

// endSpan sets span's status from a request's outcome.
func endSpan(span trace.Span, res mcp.Result, err error) {
	if err != nil {
		kind := "protocol"
		if ge, ok := err.(*Error); ok {
			kind = ge.Kind.String()
			span.SetStatus(codes.Error, ge.Public)
		} else {
			span.SetStatus(codes.Error, err.Error())
		}
		span.SetAttributes(attribute.String("error.type", kind))
		return
	}
	if ctr, ok := res.(*mcp.CallToolResult); ok && ctr != nil && ctr.IsError {
		span.SetAttributes(attribute.String("error.type", "tool_error"))
		span.SetStatus(codes.Error, "the tool reported an error")
	}
}

// tracePolicy opens the span of one policy decision; end records the decision. With
// tracing off both are free.
func (g *Gateway) tracePolicy(ctx context.Context, in *policy.Input) (end func(policy.Decision)) {
	if g.tracer == nil {
		return func(policy.Decision) {}
	}
	_, span := g.tracer.Start(ctx, SpanPolicy, trace.WithAttributes(attribute.String("symbi.policy.action", in.Action)))
	return func(d policy.Decision) {
		span.SetAttributes(attribute.Bool("symbi.policy.allow", d.Allow), attribute.Int("symbi.policy.conditions", len(d.Conditions)))
		if !d.Allow {
			span.SetAttributes(attribute.String("symbi.policy.reason", d.Reason))
		}
		span.End()
	}
}

// recordTraced appends ev to the audit trail under a span of ctx's trace.
func (g *Gateway) recordTraced(ctx context.Context, ev audit.Event) {
	if g.tracer == nil || g.audit == nil || g.audit.Log == nil {
		g.record(ev)
		return
	}
	_, span := g.tracer.Start(ctx, SpanAudit, trace.WithAttributes(attribute.String("symbi.audit.type", string(ev.Type)),
		attribute.String("symbi.audit.outcome", string(ev.Outcome))))
	defer span.End()
	actx, cancel := context.WithTimeout(context.Background(), auditAppendTimeout)
	defer cancel()
	if err := g.audit.Log.Append(actx, ev); err != nil {
		span.SetStatus(codes.Error, err.Error())
		g.log.Error("append audit event", "type", string(ev.Type), "err", err)
	}
}

// traceSending is the upstream client's sending middleware when tracing is on: a
// request sent on behalf of a traced client request gets a client span, and the span's
// context goes along in params._meta (and, through the request's context, in the
// traceparent header of an HTTP upstream's request: traceTransport).
func (g *Gateway) traceSending(upstream string) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if !trace.SpanContextFromContext(ctx).IsValid() {
				return next(ctx, method, req) // not part of a traced request (a listing, a ping)
			}
			name, attrs := method, []attribute.KeyValue{attribute.String("mcp.method.name", method), attribute.String("symbi.upstream", upstream)}
			var p mcp.Params
			switch q := req.GetParams().(type) {
			case *mcp.CallToolParams:
				if q != nil {
					p, name = q, method+" "+q.Name
					attrs = append(attrs, attribute.String("gen_ai.tool.name", q.Name))
				}
			case *mcp.GetPromptParams:
				if q != nil {
					p, name = q, method+" "+q.Name
				}
			case *mcp.ReadResourceParams:
				if q != nil {
					p = q
				}
			case *mcp.CompleteParams:
				if q != nil {
					p = q
				}
			case *mcp.SubscribeParams:
				if q != nil {
					p = q
				}
			}
			ctx, span := g.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
			defer span.End()
			if p != nil {
				m := maps.Clone(p.GetMeta())
				if m == nil {
					m = map[string]any{}
				}
				delete(m, MetaTracestate) // the client's, for the client's span: ours replaces it
				traceContext.Inject(ctx, metaCarrier(m))
				p.SetMeta(m)
			}
			res, err := next(ctx, method, req)
			endSpan(span, res, err)
			return res, err
		}
	}
}

// traceTransport adds the trace context of the request's context (the upstream call's
// span) to every HTTP request to an upstream.
type traceTransport struct{ base http.RoundTripper }

func (t traceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if trace.SpanContextFromContext(r.Context()).IsValid() {
		r = r.Clone(r.Context())
		traceContext.Inject(r.Context(), propagation.HeaderCarrier(r.Header))
	}
	return t.base.RoundTrip(r)
}

// carryTrace gives bg (a context that outlives the client's request, as a bridged call's
// does) the trace of ctx, so the upstream call it makes is still part of that trace.
func (g *Gateway) carryTrace(bg, ctx context.Context) context.Context {
	if g.tracer == nil {
		return bg
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return trace.ContextWithSpanContext(bg, sc)
	}
	return bg
}

// auditAppendTimeout bounds the wait for room in the audit trail's queue.
const auditAppendTimeout = 2 * time.Second

// listAction reports whether a policy action filters a list (decided once per item:
// those decisions are not given spans of their own).
func listAction(a string) bool {
	return a == "tools/list" || a == "prompts/list" || a == "resources/list"
}
