package gateway_test

// The cost of tracing on the hot path: the same in-process tools/call (policy and audit
// on) with tracing off (no UseTracing: what every symbi without OTEL_* runs), on with
// every span sampled and batched to an exporter that drops them, and on with nothing
// sampled.
//
//	go test -run '^$' -bench TracedToolsCall -benchmem -count 5 ./gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func BenchmarkTracedToolsCall(b *testing.B) {
	for _, tc := range []struct {
		name    string
		sampler sdktrace.Sampler // nil: tracing off
	}{
		{"off", nil},
		{"on-sampled", sdktrace.AlwaysSample()},
		{"on-unsampled", sdktrace.NeverSample()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			g := gateway.New(&gateway.Options{
				Upstreams:   []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: pipeLauncher}},
				InitialWait: 10 * time.Second,
			})
			if tc.sampler != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(tc.sampler))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				g.UseTracing(tp)
			}
			g.UsePolicy(gateway.PolicyOptions{Engine: policy.Default()})
			log, err := audit.Open(&audit.Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			g.UseAudit(gateway.AuditOptions{Log: log})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // owned: ends when ctx is cancelled at cleanup
				defer wg.Done()
				_ = g.Run(ctx)
			}()
			b.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait(); _ = log.Close() })
			g.WaitReady(ctx)
			ct, st := mcp.NewInMemoryTransports()
			ss, err := g.Server().Connect(ctx, st, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = ss.Close() })
			cs, err := benchClient(ctx, b, ct, "2025-11-25")
			if err != nil {
				b.Fatal(err)
			}
			params := &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"message": "hi"},
				Meta: mcp.Meta{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
			for range 20 {
				if err := benchCall(ctx, cs, params); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu := time.Now(), cpuTime()
			for b.Loop() {
				if err := benchCall(ctx, cs, params); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, start, cpu)
		})
	}
}
