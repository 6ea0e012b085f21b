package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/sandbox"
)

// Audit event types the runtime records.
const (
	TypeAgentState audit.Type = "agent.state" // a lifecycle transition
	TypeAgentRun   audit.Type = "agent.run"   // a run ended, or was refused
)

// Definition is one agent as configured.
type Definition struct {
	Name     string
	Kind     string // "workflow" (or "") or "container"
	Identity string // "" = agent:<name>
	Schedule *Schedule
	Priority Priority
	// Limits.
	Timeout       time.Duration // per run; 0 = the scheduler's MaxExecution
	MemoryBytes   int64         // reserved from the pool per run
	MilliCPU      int64         // reserved from the pool per run
	MaxConcurrent int           // runs at once; 0 = 1
	Steps         []Step        // workflow agents
	Container     *Container    // container agents
}

// ID is the identity the agent acts as.
func (d *Definition) ID() string {
	if d.Identity != "" {
		return d.Identity
	}
	return "agent:" + d.Name
}

// RuntimeOptions configures a Runtime.
type RuntimeOptions struct {
	Scheduler *Scheduler // required
	Store     *Store     // required
	Caller    ToolCaller // required for workflow agents
	// Sandbox starts container agents' containers and Sessions serves them an MCP
	// session as the agent; both are required for container agents.
	Sandbox  sandbox.Runner
	Sessions SessionServer
	// Record receives lifecycle and run events for the audit trail; nil: none.
	Record func(audit.Event)
	// OnChange is told when agents are added or removed (for list_changed); nil: none.
	OnChange func()
	// OnRunEnd is told the identity of an agent whose last active run ended (succeeded,
	// failed or was cancelled; not suspended: a resume continues it), so that its working
	// memory can be dropped; nil: none. It is called with the runtime's lock held and
	// must not call the Runtime.
	OnRunEnd func(ctx context.Context, identity string)
	Logger   *slog.Logger
	Now      func() time.Time
	// LeaseTTL bounds how long the schedules of a symbi that stopped without releasing
	// them stay with it: only one process sharing the state file fires schedules (the
	// holder of a lease it renews); 0: 15s.
	LeaseTTL time.Duration
}

// scheduleLease names the lease of the process that fires schedules.
const scheduleLease = "schedules"

// Runtime runs agents: it keeps their lifecycle, fires their schedules and submits their
// runs to the scheduler. It owns its schedule loop; Close stops it.
type Runtime struct {
	o   RuntimeOptions
	log *slog.Logger

	mu     sync.Mutex
	agents map[string]*agent

	dropMu sync.Mutex
	drops  []dropped // runs the scheduler dropped before they ran; the loop records them

	holder      string // this process, as a lease holder
	leader      bool   // holds the schedules lease; only the loop touches it
	wake        chan struct{}
	recoverOnce sync.Once
	recoverErr  error
	startOnce   sync.Once
	closeOnce   sync.Once
	cancel      context.CancelFunc
	done        chan struct{}
}

type agent struct {
	def    Definition
	wf     *workflow
	state  State
	reason string
	since  time.Time
	due    time.Time           // next scheduled run; zero = none
	active map[string]*liveRun // queued or running runs by run id
	resume *RunRecord          // the suspended run a resume continues
	missed bool                // due is a missed run fired at start-up
}

type dropped struct {
	agent string
	rec   *RunRecord
	info  Info
}

type liveRun struct {
	task string
	rec  *RunRecord
}

// NewRuntime builds a runtime; call Start to load state and fire schedules.
func NewRuntime(o RuntimeOptions) *Runtime {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
	}
	return &Runtime{o: o, log: o.Logger, agents: map[string]*agent{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
		holder: uuid.NewString()}
}

// Recover marks runs that were queued or running when symbi last stopped as failed.
// Call it before the first Run; Start calls it if it has not run.
func (r *Runtime) Recover(ctx context.Context) error {
	r.recoverOnce.Do(func() {
		failed, err := r.o.Store.FailInterrupted(ctx, r.o.Now())
		if err != nil {
			r.recoverErr = fmt.Errorf("recover agent runs: %w", err)
			return
		}
		for _, f := range failed {
			r.record(audit.Event{Type: TypeAgentRun, Outcome: audit.OutcomeInternal, Reason: f.Reason,
				Detail: map[string]string{"agent": f.Agent, "run": f.ID, "state": string(RunFailed)}})
		}
	})
	return r.recoverErr
}

// Start recovers interrupted runs and starts the schedule loop, which runs until Close.
func (r *Runtime) Start(ctx context.Context) error {
	if err := r.Recover(ctx); err != nil {
		return err
	}
	r.startOnce.Do(func() {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r.cancel = cancel
		go func() { // owned by the runtime: Close waits for it
			defer close(r.done)
			r.loop(lctx)
		}()
	})
	return nil
}

// Close stops the schedule loop (runs belong to the scheduler, which its owner closes).
// It is idempotent.
func (r *Runtime) Close() error {
	r.closeOnce.Do(func() {
		r.startOnce.Do(func() {}) // a later Start starts nothing
		if r.cancel != nil {
			r.cancel()
			<-r.done
		}
	})
	return nil
}

func (r *Runtime) record(ev audit.Event) {
	if r.o.Record != nil {
		r.o.Record(ev)
	}
}

// Sync makes the runtime's agents those of defs: new ones are loaded (initializing, then
// ready or failed), changed ones are reloaded keeping a suspended or terminated state, and
// missing ones are removed. An agent's persisted state and schedule carry across
// restarts. It returns the problems of definitions that could not be loaded.
func (r *Runtime) Sync(ctx context.Context, defs []Definition) error {
	var errs []error
	changed := false
	r.mu.Lock()
	seen := map[string]bool{}
	for _, d := range defs {
		seen[d.Name] = true
		old := r.agents[d.Name]
		if old != nil && reflect.DeepEqual(old.def, d) {
			continue
		}
		a := &agent{def: d, active: map[string]*liveRun{}}
		if old != nil {
			a.active, a.resume = old.active, old.resume
			a.state, a.reason, a.since = old.state, old.reason, old.since
		} else {
			changed = true
			a.state, a.since = StateInitializing, r.o.Now()
		}
		r.agents[d.Name] = a
		if err := r.load(ctx, a, old != nil); err != nil {
			errs = append(errs, err)
		}
	}
	for name := range r.agents {
		if !seen[name] {
			delete(r.agents, name)
			changed = true
			r.record(audit.Event{Type: TypeAgentState, Identity: "symbi", IdentityKind: "internal", Reason: "definition removed",
				Detail: map[string]string{"agent": name, "to": "removed"}})
		}
	}
	r.mu.Unlock()
	r.poke()
	if changed && r.o.OnChange != nil {
		r.o.OnChange()
	}
	return errors.Join(errs...)
}

// load checks a (new or changed) definition and restores or sets its state and
// schedule. The caller holds mu.
func (r *Runtime) load(ctx context.Context, a *agent, reload bool) error {
	d := &a.def
	var err error
	switch d.Kind {
	case "", "workflow":
		if r.o.Caller == nil {
			err = errors.New("no tool caller for workflow agents")
		} else {
			a.wf, err = compileWorkflow(d.Steps)
		}
	case "container":
		switch {
		case r.o.Sandbox == nil || r.o.Sessions == nil:
			err = errors.New("no sandbox for container agents")
		case len(d.Steps) > 0:
			err = errors.New("a container agent has no steps")
		default:
			err = compileContainer(d.Container)
		}
	default:
		err = fmt.Errorf("kind %q is not supported", d.Kind)
	}
	if reload && a.state != StateInitializing && a.state != StateFailed {
		if err != nil { // a broken new definition: the agent stops taking runs
			if a.state != StateTerminated {
				_ = r.transition(ctx, a, StateFailed, "invalid definition: "+err.Error(), "symbi")
			}
			return fmt.Errorf("load agent %s: %w", d.Name, err)
		}
	} else {
		if a.state == StateFailed {
			_ = r.transition(ctx, a, StateInitializing, "definition changed", "symbi")
		}
		if err != nil {
			_ = r.transition(ctx, a, StateFailed, "invalid definition: "+err.Error(), "symbi")
			return fmt.Errorf("load agent %s: %w", d.Name, err)
		}
		rec, ok, lerr := r.o.Store.LoadState(ctx, d.Name)
		if lerr != nil {
			_ = r.transition(ctx, a, StateFailed, "load state: "+lerr.Error(), "symbi")
			return lerr
		}
		switch {
		case ok && (rec.State == StateSuspended || rec.State == StateTerminated):
			// Restored as it was left; recorded as a transition from initializing.
			a.state, a.reason, a.since = rec.State, rec.Reason, rec.Updated
			r.record(audit.Event{Type: TypeAgentState, Identity: d.ID(), IdentityKind: "agent", Reason: "restored: " + rec.Reason,
				Detail: map[string]string{"agent": d.Name, "from": string(StateInitializing), "to": string(rec.State), "by": "symbi"}})
			if rec.State == StateSuspended {
				r.restoreSuspendedRun(ctx, a)
			}
		default:
			if err := r.transition(ctx, a, StateReady, "loaded", "symbi"); err != nil {
				return err
			}
		}
	}
	return r.schedule(ctx, a)
}

// restoreSuspendedRun finds the run a resume should continue after a restart.
func (r *Runtime) restoreSuspendedRun(ctx context.Context, a *agent) {
	runs, err := r.o.Store.Runs(ctx, a.def.Name, 20)
	if err != nil {
		r.log.Error("load runs", "agent", a.def.Name, "err", err)
		return
	}
	for i := range runs {
		if runs[i].State == RunSuspended {
			a.resume = &runs[i]
			return
		}
	}
}

// schedule sets the agent's next due time from its persisted schedule, applying the
// missed-run policy. The caller holds mu.
func (r *Runtime) schedule(ctx context.Context, a *agent) error {
	s := a.def.Schedule
	a.due = time.Time{}
	if s == nil {
		return r.o.Store.DeleteSchedule(ctx, a.def.Name)
	}
	now := r.o.Now()
	spec, due, done, ok, err := r.o.Store.LoadSchedule(ctx, a.def.Name)
	if err != nil {
		return err
	}
	a.missed = false
	if ok && spec == s.Spec+"|"+s.Location.String() {
		switch {
		case done:
			return nil
		case !due.IsZero() && due.After(now):
			a.due = due
			return nil
		case !due.IsZero():
			if s.Missed == MissedRunOnce {
				a.due, a.missed = now, true // fire at once, as a "missed" run
				return r.o.Store.SaveSchedule(ctx, a.def.Name, spec, a.due, false)
			}
			r.record(audit.Event{Type: TypeAgentRun, Identity: a.def.ID(), IdentityKind: "agent", Reason: "missed while symbi was not running; skipped",
				Detail: map[string]string{"agent": a.def.Name, "due": due.UTC().Format(time.RFC3339), "state": "skipped"}})
		}
	}
	return r.advance(ctx, a, now)
}

// advance moves the agent's due time to its next firing after now. The caller holds mu.
func (r *Runtime) advance(ctx context.Context, a *agent, now time.Time) error {
	s := a.def.Schedule
	key := s.Spec + "|" + s.Location.String()
	next, more := s.Next(now)
	if !more {
		a.due = time.Time{}
		return r.o.Store.SaveSchedule(ctx, a.def.Name, key, time.Time{}, true)
	}
	a.due = s.jittered(next)
	return r.o.Store.SaveSchedule(ctx, a.def.Name, key, a.due, false)
}

func (r *Runtime) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// loop fires due schedules until ctx ends, while this process holds the schedules lease.
func (r *Runtime) loop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	defer func() {
		if r.leader {
			if err := r.o.Store.ReleaseLease(context.WithoutCancel(ctx), scheduleLease, r.holder); err != nil {
				r.log.Error("release schedules lease", "err", err)
			}
		}
	}()
	renewed := time.Time{}
	for {
		now := r.o.Now()
		if now.Sub(renewed) >= r.o.LeaseTTL/3 {
			r.lead(ctx, now)
			renewed = now
		}
		var next time.Time
		if r.leader {
			next = r.fire(ctx, now)
		} else {
			r.fire(ctx, time.Time{}) // runs dropped by the scheduler are still recorded
		}
		wait := r.o.LeaseTTL / 3
		if !next.IsZero() {
			wait = min(max(next.Sub(now), time.Millisecond), wait)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

// lead takes or renews the schedules lease. Taking it over reloads every schedule from
// the state file (another process may have moved them), applying the missed-run policy.
func (r *Runtime) lead(ctx context.Context, now time.Time) {
	ok, err := r.o.Store.AcquireLease(ctx, scheduleLease, r.holder, now, r.o.LeaseTTL)
	if err != nil {
		r.log.Error("acquire schedules lease", "err", err)
		ok = false
	}
	if ok && !r.leader {
		r.log.Info("firing schedules: this process holds the schedules lease")
		r.mu.Lock()
		for _, a := range r.agents {
			if err := r.schedule(ctx, a); err != nil {
				r.log.Error("load schedule", "agent", a.def.Name, "err", err)
			}
		}
		r.mu.Unlock()
	}
	if !ok && r.leader {
		r.log.Warn("schedules lease lost to another process")
	}
	r.leader = ok
}

// fire starts the runs that are due and returns the earliest next due time. A zero now
// fires nothing.
func (r *Runtime) fire(ctx context.Context, now time.Time) time.Time {
	type due struct {
		name, trigger string
	}
	var fired []due
	var next time.Time
	r.dropMu.Lock()
	drops := r.drops
	r.drops = nil
	r.dropMu.Unlock()
	r.mu.Lock()
	for _, d := range drops {
		a := r.agents[d.agent]
		if a == nil || a.active[d.rec.ID] == nil {
			continue
		}
		out := stepOutcome{RunCancelled, d.info.Reason}
		if a.state == StateSuspended {
			out.state = RunSuspended
		}
		r.finishRun(ctx, a, d.rec, out)
	}
	for _, a := range r.agents {
		if a.due.IsZero() || now.IsZero() {
			continue
		}
		if !a.due.After(now) {
			trigger := "schedule"
			if a.missed {
				trigger, a.missed = "missed", false
			}
			fired = append(fired, due{a.def.Name, trigger})
			if err := r.advance(ctx, a, now); err != nil {
				r.log.Error("advance schedule", "agent", a.def.Name, "err", err)
				a.due = time.Time{}
			}
		}
		if !a.due.IsZero() && (next.IsZero() || a.due.Before(next)) {
			next = a.due
		}
	}
	r.mu.Unlock()
	sort.Slice(fired, func(i, j int) bool { return fired[i].name < fired[j].name })
	for _, f := range fired {
		if _, err := r.Run(ctx, f.name, f.trigger, "symbi"); err != nil {
			r.log.Info("scheduled run not started", "agent", f.name, "err", err)
		}
	}
	return next
}

// StateError is a request the agent's state does not allow (running a suspended
// agent, resuming a ready one).
type StateError struct {
	Agent string
	State State
	Op    string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("agent %s is %s: cannot %s", e.Agent, e.State, e.Op)
}

// ErrNoAgent is returned for an agent name that is not defined.
var ErrNoAgent = errors.New("no such agent")

// Run queues a run of the agent; trigger says why (schedule, manual, resume) and by
// who asked. It returns the run's id, or a *Refusal, *StateError or ErrNoAgent.
func (r *Runtime) Run(ctx context.Context, name, trigger, by string) (string, error) {
	return r.run(ctx, name, trigger, by, -1)
}

// RunWithPriority is Run at priority p instead of the agent's own: the level a policy's
// priority condition set on the request that asked for the run.
func (r *Runtime) RunWithPriority(ctx context.Context, name, trigger, by string, p Priority) (string, error) {
	if p < 0 || p >= numPriorities {
		return "", fmt.Errorf("run agent %s: invalid priority %d", name, p)
	}
	return r.run(ctx, name, trigger, by, p)
}

// run is Run at priority p; a negative p is the agent's own.
func (r *Runtime) run(ctx context.Context, name, trigger, by string, p Priority) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.agents[name]
	if a == nil {
		return "", fmt.Errorf("run agent %s: %w", name, ErrNoAgent)
	}
	if a.state != StateReady && a.state != StateRunning {
		err := &StateError{Agent: name, State: a.state, Op: "run"}
		r.record(audit.Event{Type: TypeAgentRun, Identity: a.def.ID(), IdentityKind: "agent", Outcome: audit.OutcomeDenied, Reason: err.Error(),
			Detail: map[string]string{"agent": name, "trigger": trigger, "by": by, "state": "refused"}})
		return "", err
	}
	rec := &RunRecord{ID: uuid.NewString(), Agent: name, Identity: a.def.ID(), Trigger: trigger, State: RunQueued, Created: r.o.Now()}
	if p < 0 {
		p = a.def.Priority
	}
	return rec.ID, r.submit(ctx, a, rec, by, p)
}

// submit queues rec for a at priority prio. The caller holds mu.
func (r *Runtime) submit(ctx context.Context, a *agent, rec *RunRecord, by string, prio Priority) error {
	limit := max(a.def.MaxConcurrent, 1)
	if len(a.active) >= limit {
		err := &Refusal{Reason: fmt.Sprintf("agent %s already has %d run(s) in progress (limits.max_concurrent %d)", a.def.Name, len(a.active), limit),
			Retryable: true, RetryAfter: time.Second}
		r.record(audit.Event{Type: TypeAgentRun, Identity: a.def.ID(), IdentityKind: "agent", Outcome: audit.OutcomeUnavailable, Reason: err.Reason,
			Detail: map[string]string{"agent": a.def.Name, "trigger": rec.Trigger, "by": by, "state": "refused"}})
		return err
	}
	if err := r.o.Store.SaveRun(ctx, rec); err != nil {
		return err
	}
	id, err := r.o.Scheduler.Submit(Spec{
		Owner: a.def.ID(), Priority: prio, Timeout: a.def.Timeout, Label: a.def.Name,
		Demand: Resources{MemoryBytes: a.def.MemoryBytes, MilliCPU: a.def.MilliCPU},
		Run:    func(ctx context.Context) (any, error) { return nil, r.execute(ctx, a.def.Name, rec) },
		OnDrop: func(in Info) { // under the scheduler's lock: hand it to the loop
			r.dropMu.Lock()
			r.drops = append(r.drops, dropped{a.def.Name, rec, in})
			r.dropMu.Unlock()
			r.poke()
		},
	})
	if err != nil {
		rec.State, rec.Reason, rec.Finished = RunFailed, Describe(err), r.o.Now()
		_ = r.o.Store.SaveRun(context.WithoutCancel(ctx), rec)
		r.record(audit.Event{Type: TypeAgentRun, Identity: a.def.ID(), IdentityKind: "agent", Outcome: audit.OutcomeUnavailable, Reason: rec.Reason,
			Detail: map[string]string{"agent": a.def.Name, "run": rec.ID, "trigger": rec.Trigger, "by": by, "state": "refused"}})
		return err
	}
	a.active[rec.ID] = &liveRun{task: id, rec: rec}
	return nil
}

// execute is a run's task: it moves the agent to running, runs the steps and records
// how it ended.
func (r *Runtime) execute(ctx context.Context, name string, rec *RunRecord) error {
	bg := context.WithoutCancel(ctx)
	r.mu.Lock()
	a := r.agents[name]
	if a == nil || a.active[rec.ID] == nil {
		r.mu.Unlock()
		return errors.New("agent removed before the run started")
	}
	switch a.state {
	case StateReady, StateSuspended:
		if a.state == StateSuspended && rec.Trigger != "resume" {
			r.finishRun(bg, a, rec, stepOutcome{RunCancelled, "agent is suspended"})
			r.mu.Unlock()
			return errors.New("agent is suspended")
		}
		if err := r.transition(bg, a, StateRunning, "run "+rec.ID+" ("+rec.Trigger+")", rec.Identity); err != nil {
			r.finishRun(bg, a, rec, stepOutcome{RunFailed, err.Error()})
			r.mu.Unlock()
			return err
		}
	case StateRunning:
	default:
		r.finishRun(bg, a, rec, stepOutcome{RunCancelled, "agent is " + string(a.state)})
		r.mu.Unlock()
		return fmt.Errorf("agent is %s", a.state)
	}
	wf, id, def := a.wf, a.def.ID(), a.def
	rec.State = RunRunning
	if err := r.o.Store.SaveRun(bg, rec); err != nil {
		r.log.Error("save run", "agent", name, "err", err)
	}
	r.mu.Unlock()

	call := func(ctx context.Context, tool string, args json.RawMessage) (*mcp.CallToolResult, error) {
		return r.o.Caller.CallTool(ctx, id, tool, args)
	}
	var out stepOutcome
	if def.Kind == "container" {
		out = r.runContainer(ctx, def, rec)
	} else {
		out = wf.run(ctx, call, rec, func() {
			if err := r.o.Store.SaveRun(bg, rec); err != nil {
				r.log.Error("save run progress", "agent", name, "err", err)
			}
		})
	}
	if out.state == RunCancelled && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		out = stepOutcome{RunSuspended, fmt.Sprintf("limit: run exceeded its timeout (%s)", a.def.Timeout)}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.agents[name]; cur != nil {
		a = cur
	}
	if out.state == RunCancelled && a.state == StateSuspended {
		out.state = RunSuspended // stopped by a suspension: resuming continues here
	}
	r.finishRun(bg, a, rec, out)
	if out.state != RunSucceeded {
		return errors.New(out.reason)
	}
	return nil
}

// finishRun records a run's end and moves the agent on. The caller holds mu.
func (r *Runtime) finishRun(ctx context.Context, a *agent, rec *RunRecord, out stepOutcome) {
	delete(a.active, rec.ID)
	rec.State, rec.Reason, rec.Finished = out.state, out.reason, r.o.Now()
	if err := r.o.Store.SaveRun(ctx, rec); err != nil {
		r.log.Error("save run", "agent", a.def.Name, "err", err)
	}
	outcome := audit.OutcomeOK
	switch out.state {
	case RunFailed:
		outcome = audit.OutcomeError
	case RunSuspended:
		outcome = audit.OutcomeDenied
	case RunCancelled:
		outcome = audit.OutcomeUnavailable
	}
	r.record(audit.Event{Type: TypeAgentRun, Identity: rec.Identity, IdentityKind: "agent", Outcome: outcome, Reason: out.reason,
		Detail: map[string]string{"agent": a.def.Name, "run": rec.ID, "trigger": rec.Trigger, "state": string(out.state), "steps": fmt.Sprint(rec.Step)}})
	if out.state != RunSuspended && len(a.active) == 0 && r.o.OnRunEnd != nil {
		r.o.OnRunEnd(ctx, rec.Identity)
	}
	switch {
	case out.state == RunSuspended:
		a.resume = rec
		if a.state == StateRunning {
			_ = r.transition(ctx, a, StateSuspended, out.reason, rec.Identity)
		}
	case a.state == StateRunning && len(a.active) == 0:
		_ = r.transition(ctx, a, StateReady, "run "+rec.ID+" "+string(out.state), rec.Identity)
	case a.state == StateRunning:
		// Other runs go on.
	}
}

// transition moves a to state to, persisting and recording it. The caller holds mu.
func (r *Runtime) transition(ctx context.Context, a *agent, to State, reason, by string) error {
	from := a.state
	if !CanTransition(from, to) {
		return &TransitionError{Agent: a.def.Name, From: from, To: to}
	}
	now := r.o.Now()
	if err := r.o.Store.SaveState(ctx, a.def.Name, to, reason, now); err != nil {
		return fmt.Errorf("transition agent %s: %w", a.def.Name, err)
	}
	a.state, a.reason, a.since = to, reason, now
	r.record(audit.Event{Type: TypeAgentState, Identity: a.def.ID(), IdentityKind: "agent", Reason: reason,
		Detail: map[string]string{"agent": a.def.Name, "from": string(from), "to": string(to), "by": by}})
	return nil
}

// Suspend stops the agent: its runs in progress stop at their current step (a resume
// continues there) and its schedule is held.
func (r *Runtime) Suspend(ctx context.Context, name, reason, by string) error {
	if reason == "" {
		reason = "suspended by " + by
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.agents[name]
	if a == nil {
		return fmt.Errorf("suspend agent %s: %w", name, ErrNoAgent)
	}
	if err := r.transition(ctx, a, StateSuspended, reason, by); err != nil {
		return err
	}
	for _, lr := range a.active {
		_ = r.o.Scheduler.Cancel(lr.task, a.def.ID(), reason)
	}
	return nil
}

// Resume lets a suspended agent go on: the run it was suspended in continues at the
// step it stopped at; with no such run the agent is ready again.
func (r *Runtime) Resume(ctx context.Context, name, by string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.agents[name]
	if a == nil {
		return "", fmt.Errorf("resume agent %s: %w", name, ErrNoAgent)
	}
	if a.state != StateSuspended {
		return "", &StateError{Agent: name, State: a.state, Op: "resume"}
	}
	if a.resume == nil {
		return "", r.transition(ctx, a, StateReady, "resumed by "+by, by)
	}
	prev := a.resume
	rec := &RunRecord{ID: uuid.NewString(), Agent: name, Identity: a.def.ID(), Trigger: "resume", State: RunQueued, Step: prev.Step,
		Vars: prev.Vars, Created: r.o.Now()}
	if err := r.submit(ctx, a, rec, by, a.def.Priority); err != nil {
		return "", err
	}
	a.resume = nil
	return rec.ID, nil
}

// Terminate stops the agent for good: runs in progress are cancelled and it never runs
// again (until its state is cleared).
func (r *Runtime) Terminate(ctx context.Context, name, reason, by string) error {
	if reason == "" {
		reason = "terminated by " + by
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.agents[name]
	if a == nil {
		return fmt.Errorf("terminate agent %s: %w", name, ErrNoAgent)
	}
	if err := r.transition(ctx, a, StateTerminated, reason, by); err != nil {
		return err
	}
	a.due, a.resume = time.Time{}, nil
	for _, lr := range a.active {
		_ = r.o.Scheduler.Cancel(lr.task, a.def.ID(), reason)
	}
	return nil
}

// Status is an agent as the tools and resources show it.
type Status struct {
	Name     string      `json:"name"`
	Kind     string      `json:"kind"`
	Identity string      `json:"identity"`
	State    State       `json:"state"`
	Reason   string      `json:"reason,omitempty"`
	Since    time.Time   `json:"since"`
	Priority string      `json:"priority"`
	Schedule string      `json:"schedule,omitempty"`
	Timezone string      `json:"timezone,omitempty"`
	NextRun  time.Time   `json:"next_run,omitzero"`
	Active   int         `json:"active_runs"`
	Steps    int         `json:"steps"`
	Runs     []RunRecord `json:"recent_runs,omitempty"`
}

func (a *agent) status() Status {
	s := Status{Name: a.def.Name, Kind: a.def.Kind, Identity: a.def.ID(), State: a.state, Reason: a.reason, Since: a.since,
		Priority: a.def.Priority.String(), NextRun: a.due, Active: len(a.active), Steps: len(a.def.Steps)}
	if s.Kind == "" {
		s.Kind = "workflow"
	}
	if a.def.Schedule != nil {
		s.Schedule, s.Timezone = a.def.Schedule.Spec, a.def.Schedule.Location.String()
	}
	return s
}

// List returns every agent, by name.
func (r *Runtime) List() []Status {
	r.mu.Lock()
	out := make([]Status, 0, len(r.agents))
	for _, a := range r.agents {
		out = append(out, a.status())
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns one agent with its most recent runs.
func (r *Runtime) Get(ctx context.Context, name string, runs int) (Status, error) {
	r.mu.Lock()
	a := r.agents[name]
	if a == nil {
		r.mu.Unlock()
		return Status{}, fmt.Errorf("get agent %s: %w", name, ErrNoAgent)
	}
	s := a.status()
	r.mu.Unlock()
	if runs > 0 {
		rs, err := r.o.Store.Runs(ctx, name, runs)
		if err != nil {
			return Status{}, err
		}
		s.Runs = rs
	}
	return s, nil
}

// Names lists the agents' names, sorted.
func (r *Runtime) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.agents))
	for n := range r.agents {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
