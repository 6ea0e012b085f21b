//go:build integration

package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The tracing end-to-end test: a real Jaeger (built by .ci/jaeger.sh from the Go module
// proxy) receives symbi's spans over OTLP, and the test reads the trace back from
// Jaeger's query API. CI sets SYMBI_REQUIRE_JAEGER=1, so a missing binary fails there
// instead of skipping.

// jaegerBin is the Jaeger binary: $SYMBI_JAEGER, or the newest one .ci/jaeger.sh left in
// test/.cache/jaeger.
func jaegerBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SYMBI_JAEGER"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".cache", "jaeger", "jaeger-v*"))
	matches = slices.DeleteFunc(matches, func(p string) bool { return strings.HasSuffix(p, ".tmp") })
	if len(matches) == 0 {
		if os.Getenv("SYMBI_REQUIRE_JAEGER") == "1" {
			t.Fatal("no Jaeger binary in test/.cache/jaeger: run sh .ci/jaeger.sh (scripts/test.sh setup does)")
		}
		t.Skip("no Jaeger binary in test/.cache/jaeger: run sh .ci/jaeger.sh")
	}
	slices.Sort(matches)
	return matches[len(matches)-1]
}

// jaeger is a running Jaeger all-in-one on free loopback ports with in-memory storage.
type jaeger struct {
	otlpHTTP, otlpGRPC, query string // host:port
}

func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin := jaegerBin(t)
	j := &jaeger{
		otlpHTTP: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		otlpGRPC: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		query:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %q
    grpc:
      endpoint: "127.0.0.1:%d"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, j.query, freePort(t), j.otlpGRPC, j.otlpHTTP)
	path := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", path)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("jaeger output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !(dialOK(j.otlpHTTP) && dialOK(j.otlpGRPC) && j.get(t, "/api/services") != nil) {
		select {
		case err := <-done:
			t.Fatalf("jaeger exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger did not start\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return j
}

// get fetches a query API path; nil unless it answers 200.
func (j *jaeger) get(t *testing.T, path string) []byte {
	resp, err := http.Get("http://" + j.query + path)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return b
}

// jaegerSpan is a span as Jaeger's query API (/api/traces/ID) shows it.
type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
	ProcessID string `json:"processID"`
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func (s jaegerSpan) tag(key string) string {
	for _, tg := range s.Tags {
		if tg.Key == key {
			return fmt.Sprint(tg.Value)
		}
	}
	return ""
}

type jaegerTrace struct {
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// waitTrace polls Jaeger until the trace has every span in names.
func (j *jaeger) waitTrace(t *testing.T, traceID string, names ...string) (jaegerTrace, map[string]jaegerSpan) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var resp struct {
			Data []jaegerTrace `json:"data"`
		}
		if b := j.get(t, "/api/traces/"+traceID); b != nil && json.Unmarshal(b, &resp) == nil && len(resp.Data) == 1 {
			byName := map[string]jaegerSpan{}
			for _, s := range resp.Data[0].Spans {
				byName[s.OperationName] = s
			}
			missing := slices.DeleteFunc(slices.Clone(names), func(n string) bool { _, ok := byName[n]; return ok })
			if len(missing) == 0 {
				return resp.Data[0], byName
			}
			if time.Now().After(deadline) {
				t.Fatalf("trace %s lacks spans %q; has %d: %s", traceID, missing, len(resp.Data[0].Spans), b)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("trace %s not found in Jaeger", traceID)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// traceFixture is an HTTP (streamable) upstream that records the trace context of each
// tools/call it receives, in its HTTP header and in params._meta.
type traceFixture struct {
	url     string
	mu      sync.Mutex
	headers []string
	metas   []string
}

func startTraceFixture(t *testing.T) *traceFixture {
	f := &traceFixture{}
	srv := mcp.NewServer(&mcp.Implementation{Name: "trace-fixture", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "Echo a message."},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct {
			Message string `json:"message"`
		}) (*mcp.CallToolResult, any, error) {
			tp, _ := req.Params.Meta["traceparent"].(string)
			f.mu.Lock()
			f.metas = append(f.metas, tp)
			f.mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Message}}}, nil, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if bytes.Contains(body, []byte(`"tools/call"`)) {
				f.mu.Lock()
				f.headers = append(f.headers, r.Header.Get("traceparent"))
				f.mu.Unlock()
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	f.url = hs.URL + "/mcp"
	return f
}

func (f *traceFixture) last() (header, meta string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.headers) > 0 {
		header = f.headers[len(f.headers)-1]
	}
	if len(f.metas) > 0 {
		meta = f.metas[len(f.metas)-1]
	}
	return header, meta
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestTracingToJaeger runs symbi serve with the OTEL_* variables pointing at a real
// Jaeger, over OTLP/HTTP and OTLP/gRPC, makes a proxied tools/call whose _meta carries
// a traceparent, and reads the trace back from Jaeger: the request's span is a child of
// the client's, and the SchemaPin gate, the policy decision, the upstream call and the
// audit append are its children; the HTTP upstream got the upstream call's context in
// its traceparent header and in _meta.
func TestTracingToJaeger(t *testing.T) {
	j := startJaeger(t)
	fx := startTraceFixture(t)
	for _, tc := range []struct{ protocol, endpoint string }{
		{"http/protobuf", "http://" + j.otlpHTTP},
		{"grpc", "http://" + j.otlpGRPC},
	} {
		t.Run(strings.ReplaceAll(tc.protocol, "/", "_"), func(t *testing.T) {
			service := "symbi-e2e-" + randomHex(t, 4)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tc.endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			t.Setenv("OTEL_SERVICE_NAME", service)
			t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
			cfg := writeConfig(t, fmt.Sprintf("[[upstreams]]\nname = \"fx\"\nprefix = \"fx\"\nurl = %q\n", fx.url))

			doctor := exec.Command(symbiBin(t), "doctor", "--config", cfg)
			out, _ := doctor.CombinedOutput()
			wantDoctor := fmt.Sprintf("OTLP %s to %s", tc.protocol, tc.endpoint)
			if !strings.Contains(string(out), wantDoctor) || !strings.Contains(string(out), "endpoint reachable") {
				t.Errorf("symbi doctor does not report %q as reachable:\n%s", wantDoctor, out)
			}

			s := serve(t, cfg)
			if !strings.Contains(s.stderr.String(), "tracing on") {
				waitFor(t, 10*time.Second, "tracing on in the log", func() bool { return strings.Contains(s.stderr.String(), "tracing on") })
			}
			cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
			traceID, clientSpan := randomHex(t, 16), randomHex(t, 8)
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "fx__echo", Arguments: map[string]any{"message": "hi"},
				Meta: mcp.Meta{"traceparent": "00-" + traceID + "-" + clientSpan + "-01"}})
			if err != nil || res.IsError {
				t.Fatalf("call: %v %+v", err, res)
			}
			if got := resultText(res); got != "echo: hi" {
				t.Fatalf("call answered %q", got)
			}

			const reqName, upName = "tools/call fx__echo", "tools/call echo"
			tr, spans := j.waitTrace(t, traceID, reqName, "symbi.schemapin", "symbi.policy", upName, "symbi.audit")
			req := spans[reqName]
			if got := req.parent(); got != clientSpan {
				t.Errorf("request span's parent = %q, want the client's span %s", got, clientSpan)
			}
			if got := tr.Processes[req.ProcessID].ServiceName; got != service {
				t.Errorf("service name = %q, want %q (OTEL_SERVICE_NAME)", got, service)
			}
			if got := req.tag("span.kind"); got != "server" {
				t.Errorf("request span kind = %q, want server", got)
			}
			for _, name := range []string{"symbi.schemapin", "symbi.policy", upName, "symbi.audit"} {
				if got := spans[name].parent(); got != req.SpanID {
					t.Errorf("%q span's parent = %q, want the request span %s", name, got, req.SpanID)
				}
			}
			for name, want := range map[string][2]string{
				"symbi.schemapin": {"symbi.schemapin.status", "unsigned"},
				"symbi.policy":    {"symbi.policy.allow", "true"},
				upName:            {"symbi.upstream", "fx"},
				"symbi.audit":     {"symbi.audit.outcome", "ok"},
			} {
				if got := spans[name].tag(want[0]); got != want[1] {
					t.Errorf("%q span: %s = %q, want %q", name, want[0], got, want[1])
				}
			}
			wantUp := "00-" + traceID + "-" + spans[upName].SpanID + "-01"
			header, meta := fx.last()
			if header != wantUp {
				t.Errorf("upstream got traceparent header %q, want %q", header, wantUp)
			}
			if meta != wantUp {
				t.Errorf("upstream got _meta traceparent %q, want %q", meta, wantUp)
			}
		})
	}
}
