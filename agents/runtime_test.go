package agents

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/internal/store"
)

type call struct {
	Identity, Tool, Args string
}

// fakeCaller is a ToolCaller whose tools are Go functions; it records every call.
type fakeCaller struct {
	mu    sync.Mutex
	calls []call
	tools map[string]func(ctx context.Context, args map[string]any) (*mcp.CallToolResult, error)
	deny  map[string]string // tool -> reason
	seen  chan call
}

func newFakeCaller() *fakeCaller {
	f := &fakeCaller{tools: map[string]func(context.Context, map[string]any) (*mcp.CallToolResult, error){}, deny: map[string]string{}, seen: make(chan call, 100)}
	f.tools["up__read"] = func(context.Context, map[string]any) (*mcp.CallToolResult, error) { return text("hello"), nil }
	f.tools["up__echo"] = func(_ context.Context, a map[string]any) (*mcp.CallToolResult, error) {
		return text("echo: " + a["message"].(string)), nil
	}
	return f
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func (f *fakeCaller) CallTool(ctx context.Context, identity, tool string, args json.RawMessage) (*mcp.CallToolResult, error) {
	c := call{identity, tool, string(args)}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	h, reason := f.tools[tool], f.deny[tool]
	f.mu.Unlock()
	f.seen <- c
	if reason != "" {
		return nil, &DeniedError{Reason: "denied by policy: " + reason}
	}
	if h == nil {
		return nil, errors.New("unknown tool " + tool)
	}
	var m map[string]any
	if err := json.Unmarshal(args, &m); err != nil {
		return nil, err
	}
	return h(ctx, m)
}

func (f *fakeCaller) setDeny(tool, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if reason == "" {
		delete(f.deny, tool)
	} else {
		f.deny[tool] = reason
	}
}

func (f *fakeCaller) got() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// events collects audit events.
type events struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (e *events) record(ev audit.Event) { e.mu.Lock(); e.evs = append(e.evs, ev); e.mu.Unlock() }

// transitions lists the recorded lifecycle changes of an agent as "from>to".
func (e *events) transitions(agent string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		if ev.Type == TypeAgentState && ev.Detail["agent"] == agent {
			out = append(out, ev.Detail["from"]+">"+ev.Detail["to"])
		}
	}
	return out
}

type harness struct {
	t      *testing.T
	sched  *Scheduler
	store  *Store
	rt     *Runtime
	caller *fakeCaller
	ev     *events
}

func newHarness(t *testing.T, st *Store, caller *fakeCaller, defs ...Definition) *harness {
	t.Helper()
	if st == nil {
		st = openStore(t)
	}
	h := &harness{t: t, sched: NewScheduler(nil), store: st, caller: caller, ev: &events{}}
	h.rt = NewRuntime(RuntimeOptions{Scheduler: h.sched, Store: st, Caller: caller, Record: h.ev.record})
	ctx := context.Background()
	if err := h.rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.Sync(ctx, defs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	return h
}

func (h *harness) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.rt.Close()
	if err := h.sched.Close(ctx); err != nil {
		h.t.Errorf("close scheduler: %v", err)
	}
	if err := h.store.Flush(ctx); err != nil {
		h.t.Errorf("flush store: %v", err)
	}
}

// waitRun waits until the run is final and returns it.
func (h *harness) waitRun(agent, id string) RunRecord {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := h.rt.Get(context.Background(), agent, 10)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, r := range st.Runs {
			if r.ID == id && r.State != RunQueued && r.State != RunRunning && st.Active == 0 {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond) // polling the store: runs end asynchronously
	}
	h.t.Fatalf("run %s of %s did not finish", id, agent)
	return RunRecord{}
}

func (h *harness) state(name string) (State, string) {
	h.t.Helper()
	st, err := h.rt.Get(context.Background(), name, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	return st.State, st.Reason
}

func twoSteps(name string) Definition {
	return Definition{Name: name, Kind: "workflow", Steps: []Step{
		{Tool: "up__read", Save: "doc"},
		{Tool: "up__echo", Arguments: map[string]any{"message": "{{ .doc.text }} world"}, Save: "out"},
	}}
}

func TestRunWorkflow(t *testing.T) {
	h := newHarness(t, nil, newFakeCaller(), twoSteps("a"))
	id, err := h.rt.Run(context.Background(), "a", "manual", "operator")
	if err != nil {
		t.Fatal(err)
	}
	run := h.waitRun("a", id)
	if run.State != RunSucceeded || run.Step != 2 || run.Identity != "agent:a" {
		t.Errorf("run = %+v, want succeeded after 2 steps as agent:a", run)
	}
	want := []call{{"agent:a", "up__read", "{}"}, {"agent:a", "up__echo", `{"message":"hello world"}`}}
	if diff := cmp.Diff(want, h.caller.got()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"initializing>ready", "ready>running", "running>ready"}, h.ev.transitions("a")); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
}

func TestWorkflowWhenAndRetries(t *testing.T) {
	f := newFakeCaller()
	var mu sync.Mutex
	fails := 2
	f.tools["up__flaky"] = func(context.Context, map[string]any) (*mcp.CallToolResult, error) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "try again"}}}, nil
		}
		return text("ok"), nil
	}
	steps := func(retries int) []Step {
		return []Step{
			{Tool: "up__read", Save: "doc"},
			{Tool: "up__echo", When: `{{ eq .doc.text "nope" }}`, Arguments: map[string]any{"message": "skipped"}},
			{Tool: "up__flaky", Retries: retries, Backoff: time.Millisecond},
		}
	}
	h := newHarness(t, nil, f,
		Definition{Name: "enough", Steps: steps(2)},
		Definition{Name: "short", Steps: steps(1)})
	id, err := h.rt.Run(context.Background(), "enough", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	if run := h.waitRun("enough", id); run.State != RunSucceeded {
		t.Errorf("run with enough retries: %+v", run)
	}
	var tools []string
	for _, c := range f.got() {
		tools = append(tools, c.Tool)
	}
	if diff := cmp.Diff([]string{"up__read", "up__flaky", "up__flaky", "up__flaky"}, tools); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	mu.Lock()
	fails = 2
	mu.Unlock()
	id, err = h.rt.Run(context.Background(), "short", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	run := h.waitRun("short", id)
	if run.State != RunFailed || !strings.Contains(run.Reason, "step 3 (up__flaky): tool error: try again (after 2 attempts)") {
		t.Errorf("run with too few retries: %+v", run)
	}
	if st, _ := h.state("short"); st != StateReady {
		t.Errorf("agent after a failed run is %s, want ready", st)
	}
}

func TestDenialSuspendsAndResumeContinues(t *testing.T) {
	f := newFakeCaller()
	f.setDeny("up__echo", "agents may not echo")
	h := newHarness(t, nil, f, twoSteps("a"))
	ctx := context.Background()
	id, err := h.rt.Run(ctx, "a", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	run := h.waitRun("a", id)
	if run.State != RunSuspended || run.Step != 1 {
		t.Errorf("denied run = %+v, want suspended after step 1", run)
	}
	st, reason := h.state("a")
	if st != StateSuspended || reason != "step 2 (up__echo): denied by policy: agents may not echo" {
		t.Errorf("agent %s %q, want suspended with the policy's reason", st, reason)
	}
	var sErr *StateError
	if _, err := h.rt.Run(ctx, "a", "manual", "test"); !errors.As(err, &sErr) {
		t.Errorf("Run of a suspended agent: %v, want a StateError", err)
	}

	f.setDeny("up__echo", "")
	rid, err := h.rt.Resume(ctx, "a", "operator")
	if err != nil {
		t.Fatal(err)
	}
	run = h.waitRun("a", rid)
	if run.State != RunSucceeded || run.Trigger != "resume" {
		t.Errorf("resumed run = %+v", run)
	}
	want := []call{{"agent:a", "up__read", "{}"}, {"agent:a", "up__echo", `{"message":"hello world"}`}, {"agent:a", "up__echo", `{"message":"hello world"}`}}
	if diff := cmp.Diff(want, f.got()); diff != "" {
		t.Errorf("calls: the resumed run continues at the denied step with the saved result (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"initializing>ready", "ready>running", "running>suspended", "suspended>running", "running>ready"}, h.ev.transitions("a")); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
	if _, err := h.rt.Resume(ctx, "a", "operator"); !errors.As(err, &sErr) {
		t.Errorf("Resume of a ready agent: %v, want a StateError", err)
	}
}

func TestSuspendTerminateManual(t *testing.T) {
	f := newFakeCaller()
	release := make(chan struct{})
	f.tools["up__block"] = func(ctx context.Context, _ map[string]any) (*mcp.CallToolResult, error) {
		select {
		case <-release:
			return text("done"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	h := newHarness(t, nil, f,
		Definition{Name: "a", Steps: []Step{{Tool: "up__read", Save: "doc"}, {Tool: "up__block"}}},
		Definition{Name: "t", Steps: []Step{{Tool: "up__block"}}})
	defer close(release)
	ctx := context.Background()
	id, err := h.rt.Run(ctx, "a", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	for c := range f.seen { // wait until the run blocks in step 2
		if c.Tool == "up__block" {
			break
		}
	}
	// max_concurrent defaults to 1: a second run is refused, retryably.
	var ref *Refusal
	if _, err := h.rt.Run(ctx, "a", "manual", "test"); !errors.As(err, &ref) || !ref.Retryable {
		t.Errorf("second concurrent run: %v, want a retryable refusal", err)
	}
	if err := h.rt.Suspend(ctx, "a", "", "operator"); err != nil {
		t.Fatal(err)
	}
	if run := h.waitRun("a", id); run.State != RunSuspended || run.Step != 1 {
		t.Errorf("run stopped by a suspension = %+v, want suspended at step 1", run)
	}
	if st, reason := h.state("a"); st != StateSuspended || reason != "suspended by operator" {
		t.Errorf("agent %s %q", st, reason)
	}

	if err := h.rt.Terminate(ctx, "a", "", "operator"); err != nil {
		t.Fatal(err)
	}
	var te *TransitionError
	if err := h.rt.Suspend(ctx, "a", "", "operator"); !errors.As(err, &te) {
		t.Errorf("Suspend of a terminated agent: %v, want a TransitionError", err)
	}
	var sErr *StateError
	if _, err := h.rt.Resume(ctx, "a", "operator"); !errors.As(err, &sErr) {
		t.Errorf("Resume of a terminated agent: %v, want a StateError", err)
	}
	if _, err := h.rt.Run(ctx, "nope", "manual", "operator"); !errors.Is(err, ErrNoAgent) {
		t.Errorf("Run of an unknown agent: %v, want ErrNoAgent", err)
	}

	// Terminating a running agent cancels its run.
	tid, err := h.rt.Run(ctx, "t", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	for c := range f.seen {
		if c.Identity == "agent:t" {
			break
		}
	}
	if err := h.rt.Terminate(ctx, "t", "no longer wanted", "operator"); err != nil {
		t.Fatal(err)
	}
	if run := h.waitRun("t", tid); run.State != RunCancelled {
		t.Errorf("run of a terminated agent = %+v, want cancelled", run)
	}
	if diff := cmp.Diff([]string{"initializing>ready", "ready>running", "running>terminated"}, h.ev.transitions("t")); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
}

func TestRunTimeoutIsALimit(t *testing.T) {
	f := newFakeCaller()
	f.tools["up__block"] = func(ctx context.Context, _ map[string]any) (*mcp.CallToolResult, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	h := newHarness(t, nil, f, Definition{Name: "slow", Timeout: 30 * time.Millisecond, Steps: []Step{{Tool: "up__block"}}})
	id, err := h.rt.Run(context.Background(), "slow", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	if run := h.waitRun("slow", id); run.State != RunSuspended {
		t.Errorf("timed-out run = %+v, want suspended", run)
	}
	if st, reason := h.state("slow"); st != StateSuspended || !strings.HasPrefix(reason, "limit: run exceeded its timeout") {
		t.Errorf("agent %s %q, want suspended for the limit", st, reason)
	}
}

func TestScheduledRun(t *testing.T) {
	f := newFakeCaller()
	s, err := ParseSchedule("* * * * * *", "", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	d := twoSteps("tick")
	d.Schedule = s
	h := newHarness(t, nil, f, d)
	select {
	case c := <-f.seen:
		if c.Identity != "agent:tick" {
			t.Errorf("scheduled call as %q", c.Identity)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the every-second schedule did not fire within 5s")
	}
	st, err := h.rt.Get(context.Background(), "tick", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Runs) != 1 || st.Runs[0].Trigger != "schedule" || st.NextRun.IsZero() {
		t.Errorf("status after a scheduled run: %+v", st)
	}
}

// The state, a suspended run and the schedule survive a restart; a missed run follows
// its policy; a run cut short by the restart is failed.
func TestRestart(t *testing.T) {
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the harnesses' (cleanups run last first)
		if err := st.Flush(context.Background()); err != nil {
			t.Error(err)
		}
		db.Close()
	})
	ctx := context.Background()
	f := newFakeCaller()
	f.setDeny("up__echo", "not now")
	h := newHarness(t, st, f, twoSteps("a"))
	id, err := h.rt.Run(ctx, "a", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	h.waitRun("a", id)
	h.close()

	// Runs due while symbi was down, and one that was running when it stopped.
	past := time.Now().Add(-time.Hour)
	for _, n := range []string{"catchup", "skipper"} {
		if err := st.SaveSchedule(ctx, n, "@every 1h|UTC", past, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SaveRun(ctx, &RunRecord{ID: "cut", Agent: "a", Identity: "agent:a", Trigger: "manual", State: RunRunning, Created: past}); err != nil {
		t.Fatal(err)
	}
	hourly := func(missed string) *Schedule {
		s, err := ParseSchedule("@every 1h", "", 0, missed)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	catchup, skipper := twoSteps("catchup"), twoSteps("skipper")
	catchup.Schedule, skipper.Schedule = hourly("run_once"), hourly("skip")
	f2 := newFakeCaller()
	h2 := newHarness(t, st, f2, twoSteps("a"), catchup, skipper)

	if s, reason := h2.state("a"); s != StateSuspended || reason != "step 2 (up__echo): denied by policy: not now" {
		t.Errorf("after restart agent a is %s %q, want suspended as before", s, reason)
	}
	select {
	case c := <-f2.seen:
		if c.Identity != "agent:catchup" {
			t.Errorf("first call after restart by %s, want agent:catchup (missed run, run_once)", c.Identity)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the missed run did not run")
	}
	sk, err := h2.rt.Get(ctx, "skipper", 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(sk.Runs) != 0 || !sk.NextRun.After(time.Now()) {
		t.Errorf("skipper: %d runs, next %s; want none and a future next run", len(sk.Runs), sk.NextRun)
	}
	runs, err := st.Runs(ctx, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.ID == "cut" && (r.State != RunFailed || r.Reason != "symbi stopped during the run") {
			t.Errorf("interrupted run = %+v, want failed", r)
		}
	}
	rid, err := h2.rt.Resume(ctx, "a", "operator")
	if err != nil {
		t.Fatal(err)
	}
	if run := h2.waitRun("a", rid); run.State != RunSucceeded {
		t.Errorf("run resumed after a restart = %+v", run)
	}
}

func TestSyncHotReload(t *testing.T) {
	var changes int
	var mu sync.Mutex
	st := openStore(t)
	sched := NewScheduler(nil)
	defer sched.Close(context.Background())
	rt := NewRuntime(RuntimeOptions{Scheduler: sched, Store: st, Caller: newFakeCaller(), OnChange: func() { mu.Lock(); changes++; mu.Unlock() }})
	ctx := context.Background()
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if err := rt.Sync(ctx, []Definition{twoSteps("a"), twoSteps("b")}); err != nil {
		t.Fatal(err)
	}
	if err := rt.Suspend(ctx, "b", "hold", "operator"); err != nil {
		t.Fatal(err)
	}
	b2 := twoSteps("b")
	b2.Priority = PriorityHigh
	broken := Definition{Name: "c", Kind: "daemon"}
	err := rt.Sync(ctx, []Definition{b2, broken})
	if err == nil || !strings.Contains(err.Error(), `kind "daemon" is not supported`) {
		t.Errorf("Sync with a broken definition: %v", err)
	}
	if diff := cmp.Diff([]string{"b", "c"}, rt.Names()); diff != "" {
		t.Errorf("agents after reload (-want +got):\n%s", diff)
	}
	got := map[string]State{}
	for _, s := range rt.List() {
		got[s.Name] = s.State
	}
	if diff := cmp.Diff(map[string]State{"b": StateSuspended, "c": StateFailed}, got); diff != "" {
		t.Errorf("states after reload (-want +got):\n%s", diff)
	}
	if s, _ := rt.Get(ctx, "b", 0); s.Priority != "high" {
		t.Errorf("reloaded b has priority %s, want high", s.Priority)
	}
	mu.Lock()
	defer mu.Unlock()
	if changes != 2 {
		t.Errorf("OnChange called %d times, want 2 (added a and b; then removed a, added c)", changes)
	}
}

func TestTransitions(t *testing.T) {
	valid := map[[2]State]bool{}
	for from, tos := range transitions {
		for _, to := range tos {
			valid[[2]State{from, to}] = true
		}
	}
	all := []State{StateInitializing, StateReady, StateRunning, StateSuspended, StateTerminated, StateFailed}
	for _, from := range all {
		for _, to := range all {
			if CanTransition(from, to) != valid[[2]State{from, to}] {
				t.Errorf("CanTransition(%s, %s) disagrees with the table", from, to)
			}
		}
	}
	for _, tc := range []struct {
		from, to State
		want     bool
	}{
		{StateInitializing, StateReady, true}, {StateReady, StateRunning, true}, {StateRunning, StateReady, true},
		{StateRunning, StateSuspended, true}, {StateSuspended, StateRunning, true}, {StateSuspended, StateTerminated, true},
		{StateInitializing, StateRunning, false}, {StateTerminated, StateReady, false}, {StateReady, StateReady, false},
		{StateFailed, StateRunning, false},
	} {
		if got := CanTransition(tc.from, tc.to); got != tc.want {
			t.Errorf("CanTransition(%s, %s) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

// Two processes on one state file: only the holder of the schedules lease fires
// schedules; when it stops, the other takes over.
func TestScheduleLease(t *testing.T) {
	st := openStore(t)
	s, err := ParseSchedule("* * * * * *", "", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	d := twoSteps("tick")
	d.Schedule = s
	ctx := context.Background()
	start := func(c *fakeCaller) (*Runtime, *Scheduler) {
		sched := NewScheduler(nil)
		rt := NewRuntime(RuntimeOptions{Scheduler: sched, Store: st, Caller: c, LeaseTTL: 600 * time.Millisecond})
		if err := rt.Sync(ctx, []Definition{d}); err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return rt, sched
	}
	c1, c2 := newFakeCaller(), newFakeCaller()
	rt1, s1 := start(c1)
	rt2, s2 := start(c2)
	defer func() { _ = rt2.Close(); _ = s2.Close(ctx) }()

	var first *fakeCaller
	select {
	case <-c1.seen:
		first = c1
	case <-c2.seen:
		first = c2
	case <-time.After(5 * time.Second):
		t.Fatal("no scheduled run within 5s")
	}
	// Let the schedule fire a few more times (deterministic signal: the leader's calls).
	for range 4 {
		select {
		case <-first.seen:
		case <-time.After(5 * time.Second):
			t.Fatal("the schedule stopped firing")
		}
	}
	other := map[*fakeCaller]*fakeCaller{c1: c2, c2: c1}[first]
	if n := len(other.got()); n != 0 {
		t.Fatalf("the process without the lease made %d scheduled calls", n)
	}
	// The leader stops (releasing the lease); the other fires from then on.
	leader, leaderSched := rt1, s1
	if first == c2 {
		leader, leaderSched = rt2, s2
	}
	_ = leader.Close()
	_ = leaderSched.Close(ctx)
	select {
	case <-other.seen:
	case <-time.After(5 * time.Second):
		t.Fatal("the other process did not take over the schedules")
	}
	if first == c2 {
		_ = rt1.Close()
		_ = s1.Close(ctx)
	}
}

func TestLease(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		holder string
		at     time.Duration
		want   bool
	}{
		{"a", 0, true},
		{"b", time.Second, false},      // a's lease (10s) is valid
		{"a", 5 * time.Second, true},   // a renews until 15s
		{"b", 12 * time.Second, false}, // still a's
		{"b", 16 * time.Second, true},  // expired: b takes it
		{"a", 17 * time.Second, false},
	} {
		got, err := st.AcquireLease(ctx, "x", tc.holder, now.Add(tc.at), 10*time.Second)
		if err != nil || got != tc.want {
			t.Errorf("AcquireLease(%s at +%s) = %v, %v; want %v", tc.holder, tc.at, got, err, tc.want)
		}
	}
	if err := st.ReleaseLease(ctx, "x", "b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.AcquireLease(ctx, "x", "a", now.Add(18*time.Second), 10*time.Second); !got {
		t.Error("lease not free after ReleaseLease")
	}
}

// TestOnRunEnd: the end of a run is told (to drop working memory), but not a suspension,
// which a resume continues.
func TestOnRunEnd(t *testing.T) {
	f := newFakeCaller()
	f.setDeny("up__echo", "not now")
	var mu sync.Mutex
	var ends []string
	h := &harness{t: t, sched: NewScheduler(nil), store: openStore(t), caller: f, ev: &events{}}
	h.rt = NewRuntime(RuntimeOptions{Scheduler: h.sched, Store: h.store, Caller: f, Record: h.ev.record,
		OnRunEnd: func(_ context.Context, identity string) { mu.Lock(); ends = append(ends, identity); mu.Unlock() }})
	ctx := context.Background()
	if err := h.rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	if err := h.rt.Sync(ctx, []Definition{twoSteps("a")}); err != nil {
		t.Fatal(err)
	}
	got := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string{}, ends...) }
	id, err := h.rt.Run(ctx, "a", "manual", "test")
	if err != nil {
		t.Fatal(err)
	}
	if run := h.waitRun("a", id); run.State != RunSuspended {
		t.Fatalf("run = %+v, want suspended", run)
	}
	if e := got(); len(e) != 0 {
		t.Errorf("a suspended run was told as ended: %v", e)
	}
	f.setDeny("up__echo", "")
	rid, err := h.rt.Resume(ctx, "a", "operator")
	if err != nil {
		t.Fatal(err)
	}
	if run := h.waitRun("a", rid); run.State != RunSucceeded {
		t.Fatalf("resumed run = %+v", run)
	}
	if diff := cmp.Diff([]string{"agent:a"}, got()); diff != "" {
		t.Errorf("run ends told (-want +got):\n%s", diff)
	}
}

// TestRunWithPriority: a run queued at a priority other than the agent's own (the level
// a policy priority condition set) waits at that priority: it overtakes a run of the
// agent's own priority queued before it.
func TestRunWithPriority(t *testing.T) {
	f := newFakeCaller()
	release := make(chan struct{})
	f.tools["up__block"] = func(ctx context.Context, _ map[string]any) (*mcp.CallToolResult, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return text("released"), nil
	}
	ctx := context.Background()
	sched := NewScheduler(&Options{MaxRunning: 1})
	rt := NewRuntime(RuntimeOptions{Scheduler: sched, Store: openStore(t), Caller: f})
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rt.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := sched.Close(cctx); err != nil {
			t.Error(err)
		}
	})
	read := []Step{{Tool: "up__read"}}
	if err := rt.Sync(ctx, []Definition{{Name: "blocker", Steps: []Step{{Tool: "up__block"}}}, {Name: "x", Priority: PriorityNormal, Steps: read}, {Name: "y", Priority: PriorityNormal, Steps: read}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Run(ctx, "blocker", "manual", "test"); err != nil {
		t.Fatal(err)
	}
	if c := <-f.seen; c.Tool != "up__block" {
		t.Fatalf("first call %+v, want up__block", c)
	}
	if _, err := rt.Run(ctx, "x", "manual", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.RunWithPriority(ctx, "y", "manual", "test", PriorityHigh); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.RunWithPriority(ctx, "y", "manual", "test", Priority(9)); err == nil {
		t.Error("RunWithPriority(9): want an error")
	}
	if st := sched.Stats(); st.ByPriority["high"] != 1 || st.ByPriority["normal"] != 1 {
		t.Errorf("queued by priority %v, want one high and one normal", st.ByPriority)
	}
	close(release)
	var order []string
	for range 2 {
		select {
		case c := <-f.seen:
			order = append(order, c.Identity)
		case <-time.After(5 * time.Second):
			t.Fatal("queued runs did not start")
		}
	}
	if diff := cmp.Diff([]string{"agent:y", "agent:x"}, order); diff != "" {
		t.Errorf("run order (-want +got):\n%s", diff)
	}
}

func TestCompileContainer(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *Container
		ok   bool
	}{
		{"none", nil, false},
		{"no image", &Container{Tier: "docker"}, false},
		{"image", &Container{Image: "i"}, true},
		{"gvisor", &Container{Image: "i", Tier: "gvisor"}, true},
		{"unknown tier", &Container{Image: "i", Tier: "vm"}, false},
		{"host without command", &Container{Tier: "none"}, false},
		{"host command", &Container{Tier: "none", Command: []string{"/bin/true"}}, true},
	} {
		if err := compileContainer(tc.c); (err == nil) != tc.ok {
			t.Errorf("%s: compileContainer = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// Without a sandbox and a session server, a container agent cannot load.
	sched := NewScheduler(nil)
	defer sched.Close(context.Background())
	rt := NewRuntime(RuntimeOptions{Scheduler: sched, Store: openStore(t)})
	ctx := context.Background()
	err := rt.Sync(ctx, []Definition{{Name: "c", Kind: "container", Container: &Container{Image: "i"}}})
	if err == nil || !strings.Contains(err.Error(), "no sandbox") {
		t.Errorf("Sync without a sandbox: %v", err)
	}
	if st, _ := rt.Get(ctx, "c", 0); st.State != StateFailed {
		t.Errorf("state %s, want failed", st.State)
	}
	_ = rt.Close()
}
