package agents

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder notes the order tasks ran in.
type recorder struct {
	mu    sync.Mutex
	order []string
}

func (r *recorder) task(name string) func(context.Context) (any, error) {
	return func(context.Context) (any, error) {
		r.mu.Lock()
		r.order = append(r.order, name)
		r.mu.Unlock()
		return name, nil
	}
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.order...)
}

// gate is a task that runs until released.
type gate struct {
	started chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{started: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) run(ctx context.Context) (any, error) {
	close(g.started)
	select {
	case <-g.release:
		return "released", nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func closeScheduler(t *testing.T, s *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func submit(t *testing.T, s *Scheduler, spec Spec) string {
	t.Helper()
	id, err := s.Submit(spec)
	if err != nil {
		t.Fatalf("Submit(%s): %v", spec.Label, err)
	}
	return id
}

func wait(t *testing.T, s *Scheduler, id, owner string) Info {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	in, err := s.Wait(ctx, id, owner)
	if err != nil {
		t.Fatalf("Wait(%s): %v", id, err)
	}
	return in
}

func TestSchedulerOrder(t *testing.T) {
	type sub struct {
		owner, name string
		prio        Priority
	}
	for _, tc := range []struct {
		name string
		subs []sub
		want []string
	}{
		{"priority first", []sub{{"a", "low", PriorityLow}, {"a", "normal", PriorityNormal}, {"a", "critical", PriorityCritical}, {"a", "high", PriorityHigh}},
			[]string{"critical", "high", "normal", "low"}},
		{"owners take turns", []sub{{"a", "a1", PriorityNormal}, {"a", "a2", PriorityNormal}, {"a", "a3", PriorityNormal}, {"b", "b1", PriorityNormal}, {"c", "c1", PriorityNormal}, {"b", "b2", PriorityNormal}},
			[]string{"a1", "b1", "c1", "a2", "b2", "a3"}},
		{"fifo per owner", []sub{{"a", "1", PriorityLow}, {"a", "2", PriorityLow}, {"a", "3", PriorityLow}},
			[]string{"1", "2", "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScheduler(&Options{MaxRunning: 1})
			defer closeScheduler(t, s)
			g := newGate()
			gid := submit(t, s, Spec{Owner: "z", Label: "gate", Priority: PriorityCritical, Run: g.run})
			<-g.started
			var rec recorder
			var ids []string
			for _, sb := range tc.subs {
				ids = append(ids, submit(t, s, Spec{Owner: sb.owner, Label: sb.name, Priority: sb.prio, Run: rec.task(sb.name)}))
			}
			close(g.release)
			wait(t, s, gid, "z")
			for i, id := range ids {
				if in := wait(t, s, id, tc.subs[i].owner); in.State != TaskSucceeded {
					t.Errorf("task %s: state %s, want succeeded", tc.subs[i].name, in.State)
				}
			}
			if diff := cmp.Diff(tc.want, rec.got()); diff != "" {
				t.Errorf("run order mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSchedulerRefusals(t *testing.T) {
	s := NewScheduler(&Options{MaxRunning: 1, MaxQueued: 2, Pool: []Resources{{MemoryBytes: 100}}})
	defer closeScheduler(t, s)
	g := newGate()
	submit(t, s, Spec{Owner: "z", Run: g.run})
	<-g.started
	var rec recorder
	n1 := submit(t, s, Spec{Owner: "a", Label: "n1", Run: rec.task("n1")})
	n2 := submit(t, s, Spec{Owner: "a", Label: "n2", Run: rec.task("n2")})

	// Full queue, nothing of lower priority: a retryable refusal with a reason.
	_, err := s.Submit(Spec{Owner: "b", Run: rec.task("n3")})
	var ref *Refusal
	if !errors.As(err, &ref) || !ref.Retryable || !strings.Contains(ref.Reason, "max_queued 2") {
		t.Fatalf("Submit on a full queue: %v, want a retryable refusal naming max_queued", err)
	}
	// Higher priority pushes out the newest task of the owner with the most queued.
	h := submit(t, s, Spec{Owner: "b", Label: "h", Priority: PriorityHigh, Run: rec.task("h")})
	in := wait(t, s, n2, "a")
	if in.State != TaskRejected || !errors.As(in.Err, &ref) || !ref.Retryable {
		t.Errorf("pushed-out task: state %s err %v, want rejected with a retryable refusal", in.State, in.Err)
	}
	// Too large for any partition: refused, not retryable.
	_, err = s.Submit(Spec{Owner: "b", Demand: Resources{MemoryBytes: 101}, Run: rec.task("big")})
	if !errors.As(err, &ref) || ref.Retryable {
		t.Errorf("Submit too large: %v, want a non-retryable refusal", err)
	}
	close(g.release)
	wait(t, s, h, "b")
	wait(t, s, n1, "a")
	if diff := cmp.Diff([]string{"h", "n1"}, rec.got()); diff != "" {
		t.Errorf("run order mismatch (-want +got):\n%s", diff)
	}
	st := s.Stats()
	if st.Rejected != 2 || st.Preempted != 1 {
		t.Errorf("stats: rejected %d preempted %d, want 2 and 1", st.Rejected, st.Preempted)
	}
}

func TestSchedulerPlacement(t *testing.T) {
	for _, tc := range []struct {
		name      string
		placement Placement
		want      []int64 // memory used per partition
	}{
		{"first fit", FirstFit, []int64{40, 0, 0}},
		{"best fit", BestFit, []int64{0, 0, 40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScheduler(&Options{Placement: tc.placement, Pool: []Resources{{MemoryBytes: 100}, {MemoryBytes: 30}, {MemoryBytes: 50}}})
			defer closeScheduler(t, s)
			g := newGate()
			id := submit(t, s, Spec{Owner: "a", Demand: Resources{MemoryBytes: 40}, Run: g.run})
			<-g.started
			var got []int64
			for _, p := range s.Stats().Pool {
				got = append(got, p.Used.MemoryBytes)
			}
			close(g.release)
			wait(t, s, id, "a")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("memory used per partition (-want +got):\n%s", diff)
			}
			for i, p := range s.Stats().Pool {
				if p.Used != (Resources{}) {
					t.Errorf("partition %d still holds %s after the task ended", i, p.Used)
				}
			}
		})
	}
}

// When the pool is short for the most important waiting task, less important work
// that would fit is held back until it has started.
func TestSchedulerHoldsBackLowerPriority(t *testing.T) {
	s := NewScheduler(&Options{Pool: []Resources{{MemoryBytes: 100, MilliCPU: 2000}}})
	defer closeScheduler(t, s)
	g := newGate()
	gid := submit(t, s, Spec{Owner: "a", Demand: Resources{MemoryBytes: 60}, Run: g.run})
	<-g.started
	var rec recorder
	high := submit(t, s, Spec{Owner: "b", Label: "high", Priority: PriorityHigh, Demand: Resources{MemoryBytes: 60}, Run: rec.task("high")})
	low := submit(t, s, Spec{Owner: "c", Label: "low", Priority: PriorityLow, Demand: Resources{MemoryBytes: 10}, Run: rec.task("low")})
	if in, _ := s.Get(low, "c"); in.State != TaskQueued {
		t.Errorf("low-priority task is %s while a high-priority one waits for memory, want queued", in.State)
	}
	close(g.release)
	wait(t, s, gid, "a")
	hi := wait(t, s, high, "b")
	lo := wait(t, s, low, "c")
	// Both fit once the memory is back; the low-priority one may not start first.
	if lo.Started.Before(hi.Started) {
		t.Errorf("low-priority task started at %s, before the high-priority one at %s", lo.Started, hi.Started)
	}
	if len(rec.got()) != 2 {
		t.Errorf("ran %v, want both", rec.got())
	}
}

func TestSchedulerTimeoutCancelPanic(t *testing.T) {
	s := NewScheduler(&Options{MaxRunning: 1})
	defer closeScheduler(t, s)
	blockCtx := func(ctx context.Context) (any, error) { <-ctx.Done(); return nil, ctx.Err() }

	id := submit(t, s, Spec{Owner: "a", Timeout: 20 * time.Millisecond, Run: blockCtx})
	if in := wait(t, s, id, "a"); in.State != TaskFailed || !strings.Contains(in.Reason, "timed out after 20ms") {
		t.Errorf("timed-out task: %s %q, want failed, timed out", in.State, in.Reason)
	}

	running := submit(t, s, Spec{Owner: "a", Run: blockCtx})
	queued := submit(t, s, Spec{Owner: "a", Run: blockCtx})
	if err := s.Cancel(queued, "b", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Cancel by another owner: %v, want ErrNotFound", err)
	}
	if err := s.Cancel(queued, "a", "no longer needed"); err != nil {
		t.Fatal(err)
	}
	if in := wait(t, s, queued, "a"); in.State != TaskCancelled || in.Reason != "no longer needed" || !in.Started.IsZero() {
		t.Errorf("cancelled queued task: %+v", in)
	}
	if err := s.Cancel(running, "a", "stop"); err != nil {
		t.Fatal(err)
	}
	if in := wait(t, s, running, "a"); in.State != TaskCancelled || in.Reason != "stop" {
		t.Errorf("cancelled running task: %s %q", in.State, in.Reason)
	}

	p := submit(t, s, Spec{Owner: "a", Run: func(context.Context) (any, error) { panic("boom") }})
	if in := wait(t, s, p, "a"); in.State != TaskFailed || !strings.Contains(in.Reason, "boom") {
		t.Errorf("panicking task: %s %q, want failed", in.State, in.Reason)
	}
}

func TestSchedulerVisibilityAndTTL(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := NewScheduler(&Options{TaskTTL: time.Minute, Now: clock})
	defer closeScheduler(t, s)
	id := submit(t, s, Spec{Owner: "alice", Run: func(context.Context) (any, error) { return 42, nil }})
	in := wait(t, s, id, "alice")
	if in.Result != 42 {
		t.Errorf("result %v, want 42", in.Result)
	}
	if _, err := s.Get(id, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get by another owner: %v, want ErrNotFound", err)
	}
	mu.Lock()
	now = now.Add(59 * time.Second)
	mu.Unlock()
	if _, err := s.Get(id, "alice"); err != nil {
		t.Errorf("Get within the TTL: %v", err)
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if _, err := s.Get(id, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the TTL: %v, want ErrNotFound", err)
	}
}

func TestSchedulerClose(t *testing.T) {
	s := NewScheduler(&Options{MaxRunning: 1})
	stubborn := make(chan struct{})
	started := make(chan struct{})
	run := submit(t, s, Spec{Owner: "a", Run: func(context.Context) (any, error) { close(started); <-stubborn; return nil, nil }})
	<-started
	q := submit(t, s, Spec{Owner: "a", Run: func(context.Context) (any, error) { return nil, nil }})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err == nil {
		t.Error("Close returned nil while a task ignores its context")
	}
	in, _ := s.Get(q, "a")
	var ref *Refusal
	if in.State != TaskRejected || !errors.As(in.Err, &ref) || !ref.Retryable {
		t.Errorf("queued task at Close: %s %v, want rejected with a retryable refusal", in.State, in.Err)
	}
	if _, err := s.Submit(Spec{Owner: "a", Run: func(context.Context) (any, error) { return nil, nil }}); !errors.As(err, &ref) || !ref.Retryable {
		t.Errorf("Submit after Close: %v, want a retryable refusal", err)
	}
	close(stubborn)
	closeScheduler(t, s) // idempotent; now returns once the task has ended
	if in := wait(t, s, run, "a"); in.State != TaskCancelled {
		t.Errorf("running task at Close: %s, want cancelled", in.State)
	}
}

func TestParsePriorityPlacement(t *testing.T) {
	for _, s := range []string{"", "low", "normal", "high", "critical"} {
		p, err := ParsePriority(s)
		if err != nil || (s != "" && p.String() != s) {
			t.Errorf("ParsePriority(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParsePriority("urgent"); err == nil {
		t.Error("ParsePriority(urgent): no error")
	}
	if p, err := ParsePlacement("best_fit"); err != nil || p != BestFit {
		t.Errorf("ParsePlacement(best_fit) = %v, %v", p, err)
	}
	if _, err := ParsePlacement("worst_fit"); err == nil {
		t.Error("ParsePlacement(worst_fit): no error")
	}
}
