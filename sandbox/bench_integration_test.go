//go:build integration

package sandbox

import (
	"context"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkColdStart measures an upstream from Start to the answer of its first
// tools/list (container create, attach, start, MCP initialize, list), per tier. Stop is
// not timed.
func BenchmarkColdStart(b *testing.B) {
	sb := newSandbox(b)
	for _, tier := range []Tier{TierNone, TierDocker, TierGVisor} {
		b.Run(string(tier), func(b *testing.B) {
			ctx := context.Background()
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				p, err := sb.Start(ctx, probeSpec(tier))
				if err != nil {
					b.Fatal(err)
				}
				cs := connect(ctx, b, p)
				if _, err := cs.ListTools(ctx, nil); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				b.StopTimer()
				cs.Close()
				if err := p.Stop(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/start")
		})
	}
}

// BenchmarkCallRoundTrip measures one tools/call (echo) over an established session per
// tier; compare with none for the latency a tier adds.
func BenchmarkCallRoundTrip(b *testing.B) {
	sb := newSandbox(b)
	for _, tier := range []Tier{TierNone, TierDocker, TierGVisor} {
		b.Run(string(tier), func(b *testing.B) {
			ctx := context.Background()
			p, err := sb.Start(ctx, probeSpec(tier))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Stop(ctx)
			cs := connect(ctx, b, p)
			defer cs.Close()
			params := &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}}
			if _, err := cs.CallTool(ctx, params); err != nil { // warm up
				b.Fatal(err)
			}
			start := time.Now()
			for b.Loop() {
				res, err := cs.CallTool(ctx, params)
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/call")
		})
	}
}
