package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/internal/store"
)

// BenchmarkDecision measures one scheduling decision (choose the next task and its
// partition, fairly across owners and by priority) with 10,000 tasks queued across 1,000
// owners and four priorities, on a pool of four partitions. It reports p50 and p99.
//
//	go test -run '^$' -bench Decision -benchtime 100000x ./agents/
func BenchmarkDecision(b *testing.B) {
	for _, pl := range []Placement{FirstFit, BestFit} {
		b.Run(map[Placement]string{FirstFit: "first_fit", BestFit: "best_fit"}[pl], func(b *testing.B) {
			s := NewScheduler(&Options{MaxRunning: 1, MaxQueued: 20000, Placement: pl,
				Pool: []Resources{{MemoryBytes: 8 << 30, MilliCPU: 8000}, {MemoryBytes: 4 << 30, MilliCPU: 4000}, {MemoryBytes: 16 << 30}, {MemoryBytes: 2 << 30}}})
			defer s.Close(context.Background())
			g := newGate()
			if _, err := s.Submit(Spec{Owner: "hold", Priority: PriorityCritical, Run: g.run}); err != nil {
				b.Fatal(err)
			}
			<-g.started
			noop := func(context.Context) (any, error) { return nil, nil }
			for i := range 10000 {
				_, err := s.Submit(Spec{Owner: fmt.Sprintf("agent:%d", i%1000), Priority: Priority(i % 4),
					Demand: Resources{MemoryBytes: int64(i%7+1) << 26, MilliCPU: int64(i%3) * 250}, Run: noop})
				if err != nil {
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				s.mu.Lock()
				start := time.Now()
				t, n := s.pick()
				d := time.Since(start)
				if t == nil || n < 0 {
					s.mu.Unlock()
					b.Fatal("no decision")
				}
				s.enqueue(t) // back at the tail of its owner's queue: the queue stays at 10,000
				s.mu.Unlock()
				lat = append(lat, d)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			close(g.release)
		})
	}
}

// BenchmarkSubmit measures Submit (id, queueing, the decision attempt) with 10,000 tasks
// queued.
func BenchmarkSubmit(b *testing.B) {
	s := NewScheduler(&Options{MaxRunning: 1, MaxQueued: 1 << 30})
	defer s.Close(context.Background())
	g := newGate()
	if _, err := s.Submit(Spec{Owner: "hold", Run: g.run}); err != nil {
		b.Fatal(err)
	}
	<-g.started
	noop := func(context.Context) (any, error) { return nil, nil }
	for i := range 10000 {
		if _, err := s.Submit(Spec{Owner: fmt.Sprintf("agent:%d", i%1000), Run: noop}); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := s.Submit(Spec{Owner: fmt.Sprintf("agent:%d", i%1000), Priority: Priority(i % 4), Run: noop}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	close(g.release)
}

// BenchmarkIdleAgentMemory measures the heap an idle workflow agent costs (definition,
// compiled templates, lifecycle state, schedule) with 10,000 agents loaded.
//
//	go test -run '^$' -bench IdleAgentMemory -benchtime 1x ./agents/
func BenchmarkIdleAgentMemory(b *testing.B) {
	const n = 10000
	for range b.N {
		db, err := store.OpenMemory()
		if err != nil {
			b.Fatal(err)
		}
		st, err := OpenStore(context.Background(), db)
		if err != nil {
			b.Fatal(err)
		}
		sched := NewScheduler(nil)
		sch, err := ParseSchedule("0 0 2 * * *", "Europe/Paris", time.Minute, "run_once")
		if err != nil {
			b.Fatal(err)
		}
		defs := make([]Definition, n)
		for i := range defs {
			defs[i] = Definition{Name: fmt.Sprintf("agent-%05d", i), Kind: "workflow", Schedule: sch, Steps: []Step{
				{Tool: "fs__read_text_file", Arguments: map[string]any{"path": "/data/in.txt"}, Save: "doc"},
				{Tool: "kb__ingest", Arguments: map[string]any{"text": "{{ .doc.text }}", "title": "in.txt"}, When: "{{ .doc.text }}"},
			}}
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rt := NewRuntime(RuntimeOptions{Scheduler: sched, Store: st, Caller: nopCaller{}})
		if err := rt.Sync(context.Background(), defs); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/agent")
		runtime.KeepAlive(rt)
		_ = rt.Close()
		_ = sched.Close(context.Background())
		if err := st.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}

type nopCaller struct{}

func (nopCaller) CallTool(context.Context, string, string, json.RawMessage) (*mcp.CallToolResult, error) {
	return &mcp.CallToolResult{}, nil
}

// BenchmarkConcurrentRuns queues one run of each of 10,000 two-step workflow agents at
// once (max_running 10,000) against a tool caller that answers at once, and reports runs
// per second end to end (scheduling, lifecycle, the runs' rows in SQLite).
//
//	go test -run '^$' -bench ConcurrentRuns -benchtime 1x ./agents/
func BenchmarkConcurrentRuns(b *testing.B) {
	const n = 10000
	for range b.N {
		b.StopTimer()
		db, err := store.OpenMemory()
		if err != nil {
			b.Fatal(err)
		}
		st, err := OpenStore(context.Background(), db)
		if err != nil {
			b.Fatal(err)
		}
		sched := NewScheduler(&Options{MaxRunning: n, MaxQueued: n})
		rt := NewRuntime(RuntimeOptions{Scheduler: sched, Store: st, Caller: nopCaller{}})
		defs := make([]Definition, n)
		for i := range defs {
			defs[i] = Definition{Name: fmt.Sprintf("agent-%05d", i), Steps: []Step{
				{Tool: "a__read", Save: "doc"}, {Tool: "a__write", Arguments: map[string]any{"text": "{{ .doc.text }}"}}}}
		}
		if err := rt.Sync(context.Background(), defs); err != nil {
			b.Fatal(err)
		}
		var ru0, ru1 syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		start := time.Now()
		b.StartTimer()
		for _, d := range defs {
			if _, err := rt.Run(context.Background(), d.Name, "manual", "bench"); err != nil {
				b.Fatal(err)
			}
		}
		for sched.Stats().Completed < n {
			time.Sleep(time.Millisecond)
		}
		if err := st.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		el := time.Since(start)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
		b.ReportMetric(n/el.Seconds(), "runs/s")
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/run")
		_ = rt.Close()
		_ = sched.Close(context.Background())
		db.Close()
	}
}
