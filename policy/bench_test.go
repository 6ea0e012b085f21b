package policy

import (
	"context"
	"fmt"
	"sort"
	"strings"
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

// BenchmarkDecide measures one decision with the realistic policy, input conversion
// included. It reports ns/op, allocs/op, decisions/s, and the CPU time per decision
// (garbage collection included).
func BenchmarkDecide(b *testing.B) {
	e := realisticEngine(b)
	ctx := context.Background()
	in := realisticInput()
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for b.Loop() {
		if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkDecideCancellable is BenchmarkDecide with a request context that can be
// cancelled, as the gateway's are.
func BenchmarkDecideCancellable(b *testing.B) {
	e := realisticEngine(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := realisticInput()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkDecideDefault measures the built-in default policy.
func BenchmarkDecideDefault(b *testing.B) {
	e := Default()
	ctx := context.Background()
	in := toolInput(ActionToolsCall, StatusVerified)
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkDecideParallel measures throughput on all GOMAXPROCS cores through a Watcher
// (the atomic pointer load included).
func BenchmarkDecideParallel(b *testing.B) {
	w, err := NewWatcher(context.Background(), "testdata/realistic", nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		in := realisticInput()
		for pb.Next() {
			if d, err := w.Decide(ctx, in); err != nil || !d.Allow {
				b.Error(d, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "decisions/cpu-s")
	}
}

// BenchmarkDecideLatency records each decision's latency and reports the p50 and p99.
func BenchmarkDecideLatency(b *testing.B) {
	e := realisticEngine(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := realisticInput()
	samples := make([]time.Duration, 0, 1<<16)
	for b.Loop() {
		t0 := time.Now()
		if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
			b.Fatal(d, err)
		}
		if len(samples) < cap(samples) {
			samples = append(samples, time.Since(t0))
		}
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	if len(samples) > 0 {
		b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
	}
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
	e := realisticEngine(b)
	ctx := context.Background()
	in := realisticInput()
	in.Arguments = map[string]any{}
	for i := range 50 {
		in.Arguments[fmt.Sprintf("field_%d", i)] = map[string]any{"value": strings.Repeat("x", 100), "n": float64(i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkDecideExamples measures the documented example policies of configs/policies
// (written for clarity: sets of deny reasons and obligations, globs over tool names).
func BenchmarkDecideExamples(b *testing.B) {
	e, _, err := CompileDir(context.Background(), "../configs/policies")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	in := realisticInput()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	}
}
