package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Tests of the gateway's spans with the real OpenTelemetry SDK (its in-memory span
// recorder stands in for the exporter; the OTLP export itself is tested end to end in
// ./test against Jaeger).

const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	clientParent  = "00-" + clientTraceID + "-" + clientSpanID + "-01"
)

// metaServer is an upstream whose echo tool answers with the traceparent it received
// in params._meta.
func metaServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "meta-upstream", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echo the trace context."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ map[string]any) (*mcp.CallToolResult, any, error) {
			tp, _ := req.Params.Meta["traceparent"].(string)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: tp}}}, nil, nil
		})
	return s
}

// headerTap records the traceparent header of each tools/call POST an HTTP upstream gets.
type headerTap struct {
	mu   sync.Mutex
	seen []string
}

func (h *headerTap) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if bytes.Contains(body, []byte(`"tools/call"`)) {
				h.mu.Lock()
				h.seen = append(h.seen, r.Header.Get("traceparent"))
				h.mu.Unlock()
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (h *headerTap) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) == 0 {
		return ""
	}
	return h.seen[len(h.seen)-1]
}

type traceSetup struct {
	g   *gateway.Gateway
	rec *tracetest.SpanRecorder
	tap *headerTap
	ctx context.Context
}

// newTraceGateway runs a gateway with policy and audit in front of one upstream "up"
// of the given kind (stdio, streamable); tracing is on when traced is set.
func newTraceGateway(t *testing.T, kind string, traced bool, eng policy.Engine) *traceSetup {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ts := &traceSetup{rec: tracetest.NewSpanRecorder(), tap: &headerTap{}, ctx: ctx}
	uc := gateway.UpstreamConfig{Name: "up", Prefix: "up"}
	switch kind {
	case "stdio":
		uc.Launch = serverLauncher(metaServer)
	case "streamable":
		h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return metaServer() }, nil)
		hs := httptest.NewServer(ts.tap.wrap(h))
		t.Cleanup(hs.Close)
		uc.URL = hs.URL
	case "sse":
		h := mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return metaServer() }, nil)
		hs := httptest.NewServer(ts.tap.wrap(h))
		t.Cleanup(hs.Close)
		uc.URL, uc.SSE = hs.URL, true
	}
	up := make(chan struct{})
	var once sync.Once
	uc.Timeout = 20 * time.Second
	ts.g = gateway.New(&gateway.Options{
		Upstreams: []gateway.UpstreamConfig{uc},
		OnUpstreamState: func(_, state, _ string) {
			if state == gateway.StateUp {
				once.Do(func() { close(up) })
			}
		},
	})
	if traced {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(ts.rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		ts.g.UseTracing(tp)
	}
	ts.g.UsePolicy(gateway.PolicyOptions{Engine: eng})
	log, err := audit.Open(&audit.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ts.g.UseAudit(gateway.AuditOptions{Log: log})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = ts.g.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); _ = ts.g.Close(); wg.Wait(); _ = log.Close() })
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		t.Fatalf("upstream not up: %+v", ts.g.Status())
	}
	return ts
}

// connectInMemory is a client session over in-memory transports (a stdio client).
func (ts *traceSetup) connectInMemory(t *testing.T) *mcp.ClientSession {
	return ts.connectVersion(t, "")
}

// connectVersion is connectInMemory speaking the given protocol version ("" = latest).
func (ts *traceSetup) connectVersion(t *testing.T, version string) *mcp.ClientSession {
	t.Helper()
	ct, st := mcp.NewInMemoryTransports()
	ss, err := ts.g.Server().Connect(ts.ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ss.Close() })
	var so *mcp.ClientSessionOptions
	if version != "" {
		so = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "trace-client", Version: "1"}, nil).Connect(ts.ctx, ct, so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// connectHTTP is a client session over symbi's streamable HTTP endpoint whose every
// request carries header as its traceparent.
func (ts *traceSetup) connectHTTP(t *testing.T, header string) *mcp.ClientSession {
	t.Helper()
	hs := httptest.NewServer(ts.g.Handler(nil))
	t.Cleanup(hs.Close)
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("traceparent", header)
		return http.DefaultTransport.RoundTrip(r)
	})}
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "trace-client", Version: "1"}, nil).Connect(ts.ctx,
		&mcp.StreamableClientTransport{Endpoint: hs.URL + "/mcp", HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// callTraced calls up__echo with meta as params._meta and returns the traceparent the
// upstream received.
func callTraced(t *testing.T, ctx context.Context, cs *mcp.ClientSession, meta mcp.Meta) (string, *mcp.CallToolResult, error) {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{}, Meta: meta})
	if err != nil || res.IsError {
		return "", res, err
	}
	return res.Content[0].(*mcp.TextContent).Text, res, nil
}

// spanTree is the spans of one trace: name -> span.
func spanTree(t *testing.T, rec *tracetest.SpanRecorder, traceID string) map[string]sdktrace.ReadOnlySpan {
	t.Helper()
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID().String() == traceID {
			out[s.Name()] = s
		}
	}
	return out
}

func spanNames(m map[string]sdktrace.ReadOnlySpan) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	return out
}

// wantChain checks the spans of one traced tools/call: the request's span, child of
// wantParent, and its four children (gate, policy, upstream call, audit).
func wantChain(t *testing.T, spans map[string]sdktrace.ReadOnlySpan, wantParent string) sdktrace.ReadOnlySpan {
	t.Helper()
	req, ok := spans["tools/call up__echo"]
	if !ok {
		t.Fatalf("no request span; spans: %v", spanNames(spans))
	}
	if got := req.Parent().SpanID().String(); got != wantParent {
		t.Errorf("request span's parent = %s, want %s", got, wantParent)
	}
	if req.SpanKind() != trace.SpanKindServer {
		t.Errorf("request span kind = %v, want server", req.SpanKind())
	}
	for _, name := range []string{gateway.SpanSchemaPin, gateway.SpanPolicy, "tools/call echo", gateway.SpanAudit} {
		s, ok := spans[name]
		if !ok {
			t.Errorf("no %q span; spans: %v", name, spanNames(spans))
			continue
		}
		if s.Parent().SpanID() != req.SpanContext().SpanID() {
			t.Errorf("%q span's parent = %s, want the request span %s", name, s.Parent().SpanID(), req.SpanContext().SpanID())
		}
	}
	return req
}

func TestTraceFromMetaToEveryUpstreamKind(t *testing.T) {
	for _, tc := range []struct{ kind, version string }{
		{"stdio", ""}, {"stdio", "2025-11-25"}, {"streamable", ""}, {"streamable", "2025-11-25"}, {"sse", ""},
	} {
		kind := tc.kind
		t.Run(kind+"/"+tc.version, func(t *testing.T) {
			ts := newTraceGateway(t, kind, true, policy.Default())
			cs := ts.connectVersion(t, tc.version)
			got, res, err := callTraced(t, ts.ctx, cs, mcp.Meta{"traceparent": clientParent, "tracestate": "vendor=x"})
			if err != nil || res.IsError {
				t.Fatalf("call: %v %+v", err, res)
			}
			spans := spanTree(t, ts.rec, clientTraceID)
			wantChain(t, spans, clientSpanID)
			upCall := spans["tools/call echo"]
			if upCall.SpanKind() != trace.SpanKindClient {
				t.Errorf("upstream call span kind = %v, want client", upCall.SpanKind())
			}
			// The upstream continues the trace from the upstream call's span.
			want := "00-" + clientTraceID + "-" + upCall.SpanContext().SpanID().String() + "-01"
			if got != want {
				t.Errorf("upstream got traceparent %q in _meta, want %q", got, want)
			}
			if kind != "stdio" {
				if h := ts.tap.last(); h != want {
					t.Errorf("upstream got traceparent header %q, want %q", h, want)
				}
			}
			if ts := upCall.SpanContext().TraceState().String(); ts != "vendor=x" {
				t.Errorf("tracestate = %q, want the client's", ts)
			}
			gate := spans[gateway.SpanSchemaPin]
			attrs := map[string]string{}
			for _, a := range gate.Attributes() {
				attrs[string(a.Key)] = a.Value.Emit()
			}
			if diff := cmp.Diff(map[string]string{"symbi.schemapin.exposed": "true", "symbi.schemapin.status": "unsigned"}, attrs); diff != "" {
				t.Errorf("gate span attributes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTraceFromHTTPHeader(t *testing.T) {
	const headerTrace = "0af7651916cd43dd8448eb211c80319c"
	ts := newTraceGateway(t, "streamable", true, policy.Default())
	cs := ts.connectHTTP(t, "00-"+headerTrace+"-b7ad6b7169203331-01")
	// No _meta trace context: the HTTP request's header is the parent.
	if _, res, err := callTraced(t, ts.ctx, cs, nil); err != nil || res.IsError {
		t.Fatalf("call: %v %+v", err, res)
	}
	spans := spanTree(t, ts.rec, headerTrace)
	wantChain(t, spans, "b7ad6b7169203331")
	// _meta wins over the header when both are there.
	if _, res, err := callTraced(t, ts.ctx, cs, mcp.Meta{"traceparent": clientParent}); err != nil || res.IsError {
		t.Fatalf("call: %v %+v", err, res)
	}
	wantChain(t, spanTree(t, ts.rec, clientTraceID), clientSpanID)
}

func TestTraceNewRootWithoutContext(t *testing.T) {
	ts := newTraceGateway(t, "stdio", true, policy.Default())
	cs := ts.connectInMemory(t)
	got, _, err := callTraced(t, ts.ctx, cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := parseTraceparent(got)
	if err != nil {
		t.Fatalf("upstream got traceparent %q: %v", got, err)
	}
	spans := spanTree(t, ts.rec, sc.TraceID().String())
	req := wantChain(t, spans, "0000000000000000")
	if req.Parent().IsValid() {
		t.Errorf("request span has a parent %v; want a new trace", req.Parent())
	}
}

func TestTraceDenied(t *testing.T) {
	deny := engineFunc(func(in *policy.Input) policy.Decision {
		if in.Action == policy.ActionToolsCall {
			return policy.Decision{Allow: false, Reason: "no echo today"}
		}
		return policy.Decision{Allow: true}
	})
	ts := newTraceGateway(t, "stdio", true, deny)
	cs := ts.connectInMemory(t)
	if _, _, err := callTraced(t, ts.ctx, cs, mcp.Meta{"traceparent": clientParent}); err == nil || !strings.Contains(err.Error(), "no echo today") {
		t.Fatalf("call err = %v, want the denial", err)
	}
	spans := spanTree(t, ts.rec, clientTraceID)
	if _, ok := spans["tools/call echo"]; ok {
		t.Error("a denied call reached the upstream")
	}
	req := spans["tools/call up__echo"]
	if req == nil || req.Status().Code != codes.Error {
		t.Fatalf("request span = %v, want status error", req)
	}
	pol := spans[gateway.SpanPolicy]
	if pol == nil {
		t.Fatalf("no policy span; spans: %v", spanNames(spans))
	}
	attrs := map[string]string{}
	for _, a := range pol.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	want := map[string]string{"symbi.policy.action": "tools/call", "symbi.policy.allow": "false", "symbi.policy.conditions": "0", "symbi.policy.reason": "no echo today"}
	if diff := cmp.Diff(want, attrs); diff != "" {
		t.Errorf("policy span attributes (-want +got):\n%s", diff)
	}
	if _, ok := spans[gateway.SpanAudit]; !ok {
		t.Error("a denied call has no audit span")
	}
}

// With tracing off the gateway makes no spans, but the client's own trace context
// still reaches the upstream unchanged.
func TestTraceOffPassesClientContext(t *testing.T) {
	ts := newTraceGateway(t, "streamable", false, policy.Default())
	cs := ts.connectInMemory(t)
	got, _, err := callTraced(t, ts.ctx, cs, mcp.Meta{"traceparent": clientParent})
	if err != nil {
		t.Fatal(err)
	}
	if got != clientParent {
		t.Errorf("upstream got %q in _meta, want the client's %q", got, clientParent)
	}
	if h := ts.tap.last(); h != "" {
		t.Errorf("upstream got traceparent header %q with tracing off", h)
	}
	if n := len(ts.rec.Ended()); n != 0 {
		t.Errorf("%d spans with tracing off", n)
	}
}

func parseTraceparent(s string) (trace.SpanContext, error) {
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": s})
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return sc, errors.New("not a valid traceparent")
	}
	return sc, nil
}
