package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func realisticEngine(t testing.TB) *Rego {
	t.Helper()
	e, _, err := CompileDir(context.Background(), "testdata/realistic")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func realisticInput() *Input {
	return &Input{
		Action:   ActionToolsCall,
		Identity: Identity{ID: "ide", Kind: "client"},
		Upstream: "fs",
		Tool: &Tool{
			Name: "fs__delete_file", UpstreamName: "delete_file",
			Annotations:  map[string]any{"destructiveHint": true, "title": "Delete a file"},
			Verification: Verification{Status: StatusUnsigned},
		},
		Arguments: map[string]any{"path": "/tmp/x", "recursive": false},
		Sandbox:   &Sandbox{Tier: TierDocker},
	}
}

func TestRealisticPolicy(t *testing.T) {
	e := realisticEngine(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		in   *Input
		want Decision
	}{
		{"destructive unsigned", realisticInput(), Decision{Allow: true, Conditions: []Condition{
			{Type: CondRateLimit, PerMinute: 120},
			{Type: CondRedactSecrets},
			{Type: CondRequireApproval},
			{Type: CondRequireTier, Tier: TierGVisor},
		}}},
		{"read-only agent writes", &Input{Action: ActionToolsCall, Identity: Identity{ID: "ci-bot"},
			Tool: &Tool{Name: "fs__read_file", Verification: Verification{Status: StatusVerified}}},
			Decision{Reason: "read-only identity"}},
		{"stranger", &Input{Action: ActionToolsList, Identity: Identity{ID: "stranger"},
			Tool: &Tool{Name: "fs__read_file", Verification: Verification{Status: StatusVerified}}},
			Decision{Reason: "tool not allowed for this identity"}},
		{"admin list", &Input{Action: ActionResourcesList, Identity: Identity{ID: "admin"}}, Decision{Allow: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.Decide(ctx, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decision mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// decisionStream returns n inputs like the ones a gateway decides: five identities (three
// in the policy's data, two unknown) calling or listing forty tools of five upstreams, with
// arguments that differ on every call. The policy reads the identity and the tool but not
// the arguments, so the stream has at most 5 × 40 × 2 distinct cache keys.
func decisionStream(n int) []*Input {
	ids := []Identity{
		{ID: "ide", Kind: "client"}, {ID: "ci-bot", Kind: "agent"}, {ID: "admin", Kind: "client"},
		{ID: "stranger", Kind: "client"}, {ID: "agent-7", Kind: "agent", Claims: map[string]any{"team": "blue"}},
	}
	upstreams := []string{"fs", "everything", "git", "web", "db"}
	names := []string{"read_file", "write_file", "delete_file", "list_dir", "echo", "add", "search", "fetch"}
	statuses := []string{StatusVerified, StatusVerified, StatusVerified, StatusUnsigned, StatusVerified, StatusRevoked, StatusVerified}
	tools := make([]*Tool, 0, len(upstreams)*len(names))
	for i, name := range names {
		for j, up := range upstreams {
			ann := map[string]any{"title": up + " " + name}
			switch name {
			case "read_file", "list_dir", "search", "fetch":
				ann["readOnlyHint"] = true
			case "write_file", "delete_file":
				ann["destructiveHint"] = name == "delete_file"
			}
			tools = append(tools, &Tool{
				Name: up + "__" + name, UpstreamName: name, Annotations: ann,
				Verification: Verification{Status: statuses[(i+j)%len(statuses)], Domain: up + ".example.com"},
			})
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]*Input, n)
	for i := range out {
		t := tools[r.IntN(len(tools))]
		in := &Input{
			Action: ActionToolsCall, Identity: ids[r.IntN(len(ids))], Upstream: strings.Split(t.Name, "__")[0],
			Tool: t, Sandbox: &Sandbox{Tier: TierDocker},
			Arguments: map[string]any{"path": fmt.Sprintf("/srv/data/%d.txt", i), "offset": float64(r.IntN(1 << 20)), "recursive": i%2 == 0},
		}
		if r.IntN(4) == 0 {
			in.Action, in.Arguments = ActionToolsList, nil
		}
		out[i] = in
	}
	return out
}

// cacheModes runs a benchmark on the engine as compiled (cached) and with its decision
// cache disabled (uncached), so both figures are reported.
func cacheModes(b *testing.B, e *Rego, f func(b *testing.B, e *Rego)) {
	b.Run("cached", func(b *testing.B) { f(b, e) })
	b.Run("uncached", func(b *testing.B) { f(b, e.withoutCache()) })
}

// warm decides every input of the stream once, so that a cached benchmark measures the
// steady state, and returns the cache counters after it.
func warm(b *testing.B, e *Rego, stream []*Input) CacheInfo {
	b.Helper()
	if !e.CacheInfo().Cacheable {
		return CacheInfo{}
	}
	for _, in := range stream {
		if _, err := e.Decide(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
	return e.CacheInfo()
}

// reportHitRatio reports the share of decisions served from the cache since before.
func reportHitRatio(b *testing.B, e *Rego, before CacheInfo) {
	after := e.CacheInfo()
	if !after.Cacheable {
		return
	}
	hits, misses := after.Hits-before.Hits, after.Misses-before.Misses
	if hits+misses > 0 {
		b.ReportMetric(float64(hits)/float64(hits+misses), "hit-ratio")
	}
}

const streamLen = 1 << 13

// BenchmarkDecide measures one decision with the realistic policy over a stream of
// varied inputs (see decisionStream), input conversion included. It reports ns/op,
// allocs/op, decisions/s, the CPU time per decision (garbage collection included) and,
// cached, the share of cache hits.
func BenchmarkDecide(b *testing.B) {
	stream := decisionStream(streamLen)
	cacheModes(b, realisticEngine(b), func(b *testing.B, e *Rego) {
		ctx := context.Background()
		before := warm(b, e, stream)
		b.ReportAllocs()
		b.ResetTimer()
		start, cpu0 := time.Now(), cpuTime()
		i := 0
		for b.Loop() {
			if _, err := e.Decide(ctx, stream[i%len(stream)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
		if cpu := cpuTime() - cpu0; cpu > 0 {
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		}
		reportHitRatio(b, e, before)
	})
}

// BenchmarkDecideCancellable measures one decision of a single input with a request
// context that can be cancelled, as the gateway's are.
func BenchmarkDecideCancellable(b *testing.B) {
	cacheModes(b, realisticEngine(b), func(b *testing.B, e *Rego) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		in := realisticInput()
		b.ReportAllocs()
		for b.Loop() {
			if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
				b.Fatal(d, err)
			}
		}
	})
}

// BenchmarkDecideDefault measures the built-in default policy on a single input.
func BenchmarkDecideDefault(b *testing.B) {
	cacheModes(b, Default(), func(b *testing.B, e *Rego) {
		ctx := context.Background()
		in := toolInput(ActionToolsCall, StatusVerified)
		b.ReportAllocs()
		for b.Loop() {
			if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
				b.Fatal(d, err)
			}
		}
	})
}

// BenchmarkDecideParallel measures throughput on all GOMAXPROCS cores over the stream of
// BenchmarkDecide. Cached, it decides through a Watcher (the atomic pointer load
// included); uncached, through the Watcher's engine with its cache disabled.
func BenchmarkDecideParallel(b *testing.B) {
	w, err := NewWatcher(context.Background(), "testdata/realistic", nil)
	if err != nil {
		b.Fatal(err)
	}
	stream := decisionStream(streamLen)
	for _, mode := range []struct {
		name   string
		engine *Rego
		decide func(context.Context, *Input) (Decision, error)
	}{
		{"cached", w.Engine(), w.Decide},
		{"uncached", w.Engine().withoutCache(), nil},
	} {
		if mode.decide == nil {
			mode.decide = mode.engine.Decide
		}
		b.Run(mode.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			before := warm(b, mode.engine, stream)
			var next atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) * 997 // each goroutine starts elsewhere in the stream
				for pb.Next() {
					if _, err := mode.decide(ctx, stream[i%len(stream)]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
			if cpu := cpuTime() - cpu0; cpu > 0 {
				b.ReportMetric(float64(b.N)/cpu.Seconds(), "decisions/cpu-s")
			}
			reportHitRatio(b, mode.engine, before)
		})
	}
}

// BenchmarkDecideLatency records the latency of each decision over the stream of
// BenchmarkDecide and reports the p50 and p99.
func BenchmarkDecideLatency(b *testing.B) {
	stream := decisionStream(streamLen)
	cacheModes(b, realisticEngine(b), func(b *testing.B, e *Rego) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		before := warm(b, e, stream)
		samples := make([]time.Duration, 0, 1<<16)
		i := 0
		for b.Loop() {
			t0 := time.Now()
			if _, err := e.Decide(ctx, stream[i%len(stream)]); err != nil {
				b.Fatal(err)
			}
			if len(samples) < cap(samples) {
				samples = append(samples, time.Since(t0))
			}
			i++
		}
		slices.Sort(samples)
		if len(samples) > 0 {
			b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
		}
		reportHitRatio(b, e, before)
	})
}

// BenchmarkInputValue measures building the Rego input alone.
func BenchmarkInputValue(b *testing.B) {
	in := realisticInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := in.Value(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideLargeArguments measures a call whose arguments the policy does not read:
// they are converted lazily, so their size does not matter.
func BenchmarkDecideLargeArguments(b *testing.B) {
	in := realisticInput()
	in.Arguments = map[string]any{}
	for i := range 50 {
		in.Arguments[fmt.Sprintf("field_%d", i)] = map[string]any{"value": strings.Repeat("x", 100), "n": float64(i)}
	}
	cacheModes(b, realisticEngine(b), func(b *testing.B, e *Rego) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
				b.Fatal(d, err)
			}
		}
	})
}

// BenchmarkDecideExamples measures the documented example policies of configs/policies
// (written for clarity: sets of deny reasons and obligations, globs over tool names).
func BenchmarkDecideExamples(b *testing.B) {
	e, _, err := CompileDir(context.Background(), "../configs/policies")
	if err != nil {
		b.Fatal(err)
	}
	cacheModes(b, e, func(b *testing.B, e *Rego) {
		ctx := context.Background()
		in := realisticInput()
		b.ReportAllocs()
		for b.Loop() {
			if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
				b.Fatal(d, err)
			}
		}
	})
}
