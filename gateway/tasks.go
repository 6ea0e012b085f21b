package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
)

// symbi serves the MCP Tasks extension (io.modelcontextprotocol/tasks, SEP-2663) in
// front of upstreams that know nothing of tasks. A tools/call of a task tool (an
// upstream's task_tools, or a tool the upstream marks task-supporting) from a client
// that negotiated the extension (per request in _meta, or for a 2025-11-25 session at
// initialization) is started like any bridged call and watched for a short window:
//
//   - it finishes inside the window: the plain result (the immediate-result shortcut);
//   - the upstream asks for input first: the input-required answer, with no task;
//   - it outlives the window: symbi takes the call over as a task, records it durably
//     and answers with a CreateTaskResult. From then on the upstream's questions are the
//     task's inputRequests (answered with tasks/update), tasks/get reports it (with the
//     result or error inlined once it is over) and tasks/cancel cancels the upstream
//     request (the upstream receives notifications/cancelled).
//
// A task belongs to the identity that created it: any other identity is told the id is
// unknown. Finished tasks stay readable until their TTL, also across a restart; a task
// that was running when symbi stopped is failed with the reason. Every state change is
// audited (type "task").

// TasksExtension is the extension's identifier in capabilities.extensions.
const TasksExtension = "io.modelcontextprotocol/tasks"

// JSON-RPC codes of the 2026-07-28 protocol that tasks use.
const (
	CodeHeaderMismatch            = -32020
	CodeMissingRequiredCapability = -32021
)

// Task statuses, as on the wire.
const (
	TaskWorking       = "working"
	TaskInputRequired = "input_required"
	TaskCompleted     = "completed"
	TaskFailed        = "failed"
	TaskCancelled     = "cancelled"
)

// TypeTask is the audit type of a task's state change (Action "task/<status>").
const TypeTask audit.Type = "task"

// outcomeCancelled is the audit outcome of a task the client cancelled.
const outcomeCancelled audit.Outcome = "cancelled"

// DefaultTaskTTL is how long a finished task stays readable when Options.TaskTTL is 0.
const DefaultTaskTTL = time.Hour

// DefaultTaskWindow is how long a task tool's call runs before it becomes a task.
const DefaultTaskWindow = 300 * time.Millisecond

func (g *Gateway) taskWindow() time.Duration {
	if g.opts.TaskWindow > 0 {
		return g.opts.TaskWindow
	}
	return DefaultTaskWindow
}

// taskPollInterval is the polling interval symbi suggests to clients.
const taskPollInterval = 500 * time.Millisecond

// taskFinal reports whether a status is one a task never leaves.
func taskFinal(status string) bool {
	return status == TaskCompleted || status == TaskFailed || status == TaskCancelled
}

// taskTransition reports whether a task may go from one status to another: working and
// input_required alternate, either may end, and an ended task never changes.
func taskTransition(from, to string) bool {
	switch from {
	case TaskWorking:
		return to == TaskInputRequired || taskFinal(to)
	case TaskInputRequired:
		return to == TaskWorking || taskFinal(to)
	}
	return false
}

// TaskRecord is a task as it is stored.
type TaskRecord struct {
	ID       string
	Owner    string // identity that created the task
	Tool     string // exposed tool name
	Upstream string
	Status   string
	Message  string // why the status is what it is (failed, cancelled)
	Created  time.Time
	Updated  time.Time
	TTL      time.Duration
	Result   json.RawMessage // the tool's result (completed)
	Error    json.RawMessage // JSON-RPC error object (failed)
}

// expired reports whether the record is past its TTL at now.
func (t *TaskRecord) expired(now time.Time) bool {
	return t.TTL > 0 && now.After(t.Created.Add(t.TTL))
}

// TaskStore persists tasks, so that they survive a restart.
type TaskStore interface {
	SaveTask(ctx context.Context, t *TaskRecord) error
	// LoadTask returns the task with the id, or false.
	LoadTask(ctx context.Context, id string) (*TaskRecord, bool, error)
	// FailUnfinished fails every task not final left by a symbi process that is gone
	// (alive reports whether a pid still runs), with the message, and forgets the tasks
	// past their TTL at now.
	FailUnfinished(ctx context.Context, now time.Time, message string, alive func(pid int) bool) (int, error)
}

// errTaskCancelled is the cause of a task's context when the client cancelled it.
var errTaskCancelled = errors.New("cancelled by the client")

// taskCreated carries a CreateTaskResult out of the tool handler (whose result type is
// fixed) to the middleware, which answers with it.
type taskCreated struct{ res mcp.Result }

func (*taskCreated) Error() string { return "the call became a task" }

// taskInput is a question of the upstream that a task waits on.
type taskInput struct {
	ask    *bridgeAsk
	asking bool // a 2025-11-25 tasks/result is putting it to the client now
}

// taskRun is a live task: its record and the call behind it.
type taskRun struct {
	mu     sync.Mutex
	rec    TaskRecord
	inputs map[string]*taskInput
	p      *pendingCall

	// legacy is set for a task a 2025-11-25 client created (params.task): its wire
	// shapes are that revision's, its questions go out on tasks/result, and ss (the
	// creating session) is told of its status changes.
	legacy bool
	ss     *mcp.ServerSession
	// done is closed once the task is final; changed is closed (and replaced) when a
	// question arrives.
	done    chan struct{}
	changed chan struct{}
	// inputTimer fails the task when input_required lasts inputTimeout.
	inputTimer   *time.Timer
	inputTimeout time.Duration
}

// taskTable is the gateway's tasks.
type taskTable struct {
	mu     sync.Mutex
	live   map[string]*taskRun // tasks started by this symbi, until they expire
	active map[string]int      // identity -> its unfinished tasks
	sched  TaskScheduler       // queues task tools' calls; nil: they start at once
}

// DefaultMaxTasksPerIdentity is Options.MaxTasksPerIdentity's default.
const DefaultMaxTasksPerIdentity = 64

// tasksAvailable reports whether the identity may have one more unfinished task (a
// soft bound: calls deciding at once may pass it by a few).
func (g *Gateway) tasksAvailable(identity string) bool {
	limit := g.opts.MaxTasksPerIdentity
	if limit <= 0 {
		limit = DefaultMaxTasksPerIdentity
	}
	g.tasks.mu.Lock()
	defer g.tasks.mu.Unlock()
	return g.tasks.active[identity] < limit
}

// taskResult is the wire shape of a CreateTaskResult, and of tasks/get (a DetailedTask)
// with Result, Error and InputRequests where they apply.
type taskResult struct {
	mcp.ResultBase
	ResultType     string              `json:"resultType"`
	TaskID         string              `json:"taskId"`
	Status         string              `json:"status"`
	StatusMessage  string              `json:"statusMessage,omitempty"`
	CreatedAt      string              `json:"createdAt"`
	LastUpdatedAt  string              `json:"lastUpdatedAt"`
	TTLMs          int64               `json:"ttlMs"`
	PollIntervalMs int64               `json:"pollIntervalMs,omitempty"`
	Result         json.RawMessage     `json:"result,omitempty"`
	Error          json.RawMessage     `json:"error,omitempty"`
	InputRequests  mcp.InputRequestMap `json:"inputRequests,omitempty"`
}

// ackResult is the empty answer of tasks/cancel and tasks/update.
type ackResult struct {
	mcp.ResultBase
	ResultType string `json:"resultType"`
}

// taskParams are the parameters of tasks/get, tasks/cancel and tasks/update.
type taskParams struct {
	mcp.ParamsBase
	TaskID         string                     `json:"taskId"`
	InputResponses map[string]json.RawMessage `json:"inputResponses,omitempty"`
}

// tasksListParams are the parameters of tasks/list (2025-11-25).
type tasksListParams struct {
	mcp.ParamsBase
	Cursor string `json:"cursor,omitempty"`
}

// registerTaskMethods makes the SDK accept the tasks methods; the middleware answers
// them (serveTasks) before these handlers would run.
func registerTaskMethods(s *mcp.Server) {
	never := func(context.Context, *mcp.ServerSession, *taskParams) (*ackResult, error) {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "tasks method not served"}
	}
	for _, m := range []string{"tasks/get", "tasks/cancel", "tasks/update", "tasks/result"} {
		if err := mcp.AddReceivingCustomMethod(s, m, never); err != nil {
			panic(err) // a programming error: the SDK took the name
		}
	}
	// tasks/list is removed by the extension; 2025-11-25 still has it: served to
	// 2025-11-25 sessions, -32601 to the others (by the middleware).
	if err := mcp.AddReceivingCustomMethod(s, "tasks/list", func(context.Context, *mcp.ServerSession, *tasksListParams) (*ackResult, error) {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "tasks/list is not supported"}
	}); err != nil {
		panic(err)
	}
}

// clientHasTasks reports whether the request's client negotiated the tasks extension:
// in the request's _meta client capabilities (2026-07-28, or a per-request opt-in), or
// at initialization (2025-11-25).
func clientHasTasks(ss *mcp.ServerSession, params mcp.Params) bool {
	if params != nil {
		if caps, ok := params.GetMeta()[mcp.MetaKeyClientCapabilities].(map[string]any); ok {
			ext, _ := caps["extensions"].(map[string]any)
			if _, ok := ext[TasksExtension]; ok {
				return true
			}
			if legacyClient(ss) {
				return sessionHasTasks(ss)
			}
			return false
		}
	}
	return sessionHasTasks(ss)
}

func sessionHasTasks(ss *mcp.ServerSession) bool {
	if ss == nil {
		return false
	}
	ip := ss.InitializeParams()
	if ip == nil || ip.Capabilities == nil {
		return false
	}
	_, ok := ip.Capabilities.Extensions[TasksExtension]
	return ok
}

// taskSupport says how symbi runs a tool: "" (never as a task), "optional" or
// "required".
func (g *Gateway) taskSupport(ti *ToolInfo) string {
	if ti == nil || ti.Builtin {
		return ""
	}
	u := g.upstream(ti.Upstream)
	if u == nil {
		return ""
	}
	for _, p := range u.cfg.TaskRequired {
		if ok, _ := path.Match(p, ti.UpstreamName); ok {
			return "required"
		}
	}
	for _, p := range u.cfg.TaskTools {
		if ok, _ := path.Match(p, ti.UpstreamName); ok {
			return "optional"
		}
	}
	return ti.TaskSupport
}

type taskWindowKey struct{}

// taskWindowFrom reports whether the call in ctx may become a task.
func taskWindowFrom(ctx context.Context) bool {
	ok, _ := ctx.Value(taskWindowKey{}).(bool)
	return ok
}

// taskCall prepares a tools/call for tasks: it refuses a required-task tool to a client
// without the extension, and marks ctx when the call may become a task.
func (g *Gateway) taskCall(ctx context.Context, r *Request) (context.Context, error) {
	lt := takeTaskParam(r.Raw.GetParams()) // never forwarded
	if tasks2025(r.Session) {
		return g.legacyTaskCall(ctx, r, lt) // tasks_legacy.go
	}
	support := g.taskSupport(r.Tool)
	if support == "" {
		return ctx, nil
	}
	has := clientHasTasks(r.Session, r.Raw.GetParams())
	if !has {
		if support == "required" {
			data, _ := json.Marshal(map[string]any{"requiredCapabilities": map[string]any{"extensions": map[string]any{TasksExtension: map[string]any{}}}})
			return ctx, &jsonrpc.Error{Code: CodeMissingRequiredCapability,
				Message: fmt.Sprintf("tool %q must be called as a task: declare the %s extension", r.Name, TasksExtension), Data: data}
		}
		return ctx, nil
	}
	if r.Session == nil || legacyClient(r.Session) {
		// Tasks run on the bridge, which 2026-07-28 clients use; a 2025-11-25 session
		// is served synchronously.
		return ctx, nil
	}
	return context.WithValue(ctx, taskWindowKey{}, true), nil
}

// adopt turns the bridged call p, which outlived the window, into a task owned by r's
// identity, and returns its CreateTaskResult once the task is stored.
func (g *Gateway) adopt(r *Request, u *upstream, p *pendingCall, lt *legacyTaskReq) (mcp.Result, error) {
	p.mu.Lock()
	if p.over {
		p.mu.Unlock()
		return nil, &Error{Kind: Internal, Public: "the call ended while it became a task"}
	}
	p.over, p.attached, p.current = true, true, nil
	if p.idle != nil {
		p.idle.Stop()
	}
	p.mu.Unlock()
	g.bridge.remove(p)
	bg := g.runCtx()
	p.round.Store(&bg)

	now := time.Now().UTC()
	t := &taskRun{p: p, inputs: map[string]*taskInput{}, rec: TaskRecord{
		ID: rand.Text(), Owner: r.Identity.ID, Tool: r.Name, Upstream: u.cfg.Name,
		Status: TaskWorking, Created: now, Updated: now, TTL: g.taskTTL(),
	}, done: make(chan struct{}), changed: make(chan struct{}), inputTimeout: g.taskInputTimeout()}
	if lt != nil {
		t.legacy, t.ss = true, r.Session
		if lt.ttl > 0 && lt.ttl < t.rec.TTL { // a client may ask for less, never for more
			t.rec.TTL = lt.ttl
		}
	}
	if err := g.saveTask(&t.rec); err != nil {
		p.cancel(fmt.Errorf("store the task: %w", err))
		return nil, &Error{Kind: Unavailable, Public: "symbi could not record the task; retry later", Err: err}
	}
	g.tasks.mu.Lock()
	if g.tasks.live == nil {
		g.tasks.live = map[string]*taskRun{}
	}
	g.tasks.live[t.rec.ID] = t
	if g.tasks.active == nil {
		g.tasks.active = map[string]int{}
	}
	g.tasks.active[t.rec.Owner]++
	g.tasks.mu.Unlock()
	g.auditTask(r, &t.rec, "created", "")
	var res mcp.Result
	if t.legacy {
		res = &legacyCreateTaskResult{Task: legacyWire(&t.rec)}
	} else {
		w := taskWire(&t.rec, nil)
		w.ResultType = "task"
		res = w
	}
	if !g.goOwned(func() { g.watchTask(r, t) }) {
		p.cancel(errShutdown)
	}
	return res, nil
}

func (g *Gateway) taskTTL() time.Duration {
	if g.opts.TaskTTL > 0 {
		return g.opts.TaskTTL
	}
	return DefaultTaskTTL
}

// watchTask follows a task's call: its questions become the task's inputRequests, its
// end the task's outcome.
func (g *Gateway) watchTask(r *Request, t *taskRun) {
	p := t.p
	for {
		select {
		case a := <-p.asks:
			t.mu.Lock()
			t.inputs[rand.Text()] = &taskInput{ask: a}
			changed := t.setStatus(TaskInputRequired, "")
			close(t.changed)
			t.changed = make(chan struct{})
			if t.inputTimer == nil {
				d := t.inputTimeout
				t.inputTimer = time.AfterFunc(d, func() {
					p.cancel(fmt.Errorf("%w: no input arrived within %s", errTaskNoInput, d))
				})
			}
			t.mu.Unlock()
			if changed {
				g.persistTask(r, t, "input_required")
			}
		case <-p.finished:
			if p.err == nil && p.res != nil && r.afterTask != nil {
				// The policy's result conditions (redaction, secret scanning), as the
				// synchronous call would have had them.
				p.res, p.err = r.afterTask(p.res)
			}
			status, msg, result, rpcErr := taskOutcome(p)
			if t.legacy && status == TaskCompleted && toolError(result) {
				// 2025-11-25: a tool result with isError fails the task (tasks/result
				// still returns the result).
				status, msg = TaskFailed, "the tool reported an error"
			}
			t.mu.Lock()
			if t.inputTimer != nil {
				t.inputTimer.Stop()
			}
			t.inputs = map[string]*taskInput{}
			t.rec.Result, t.rec.Error = result, rpcErr
			t.setStatus(status, msg)
			t.mu.Unlock()
			g.persistTask(r, t, status)
			close(t.done)
			g.tasks.mu.Lock()
			if g.tasks.active[t.rec.Owner]--; g.tasks.active[t.rec.Owner] <= 0 {
				delete(g.tasks.active, t.rec.Owner)
			}
			// Forget the tasks past their TTL (they stay in the store until a restart).
			now := time.Now()
			for id, o := range g.tasks.live {
				o.mu.Lock()
				gone := taskFinal(o.rec.Status) && o.rec.expired(now)
				o.mu.Unlock()
				if gone {
					delete(g.tasks.live, id)
				}
			}
			g.tasks.mu.Unlock()
			return
		}
	}
}

// taskOutcome reads how a task's call ended: a result (completed, a tool error too),
// a protocol error (failed) or a cancellation.
func taskOutcome(p *pendingCall) (status, msg string, result, rpcErr json.RawMessage) {
	switch {
	case errors.Is(p.cause, errTaskCancelled):
		return TaskCancelled, "cancelled by the client", nil, nil
	case errors.Is(p.cause, errTaskNoInput):
		msg = p.cause.Error() + "; the upstream call was cancelled"
		b, _ := json.Marshal(&jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg})
		return TaskFailed, msg, nil, b
	case errors.Is(p.cause, context.DeadlineExceeded):
		msg = fmt.Sprintf("the upstream did not finish within its timeout of %s", p.upstream.cfg.Timeout)
		b, _ := json.Marshal(&jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg})
		return TaskFailed, msg, nil, b
	case p.cause != nil && p.err != nil:
		msg = "symbi stopped while the task was running"
		b, _ := json.Marshal(&jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: msg})
		return TaskFailed, msg, nil, b
	}
	if p.err != nil {
		var je *jsonrpc.Error
		var ge *Error
		switch {
		case errors.As(p.err, &je):
		case errors.As(p.err, &ge):
			je = ge.RPCError()
		default:
			je = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the call failed"}
		}
		b, _ := json.Marshal(je)
		return TaskFailed, je.Message, nil, b
	}
	b, err := json.Marshal(p.res)
	if err != nil || p.res == nil {
		b, _ = json.Marshal(&jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the upstream returned no result"})
		return TaskFailed, "the upstream returned no result", nil, b
	}
	return TaskCompleted, "", b, nil
}

// setStatus moves the task to status if that is a valid transition; the caller holds
// t.mu. It reports whether the status changed.
func (t *taskRun) setStatus(status, msg string) bool {
	if t.rec.Status == status || !taskTransition(t.rec.Status, status) {
		return false
	}
	t.rec.Status, t.rec.Message, t.rec.Updated = status, msg, time.Now().UTC()
	return true
}

// persistTask stores the task's record and audits its new status.
func (g *Gateway) persistTask(r *Request, t *taskRun, status string) {
	t.mu.Lock()
	rec := t.rec
	t.mu.Unlock()
	if err := g.saveTask(&rec); err != nil {
		g.log.Error("store task", "task", rec.ID, "err", err)
	}
	g.auditTask(r, &rec, status, rec.Message)
	if t.legacy {
		g.notifyTaskStatus(t.ss, &rec) // tasks_legacy.go
	}
}

func (g *Gateway) saveTask(rec *TaskRecord) error {
	if g.opts.TaskStore == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return g.opts.TaskStore.SaveTask(ctx, rec)
}

// auditTask records a task's state change.
func (g *Gateway) auditTask(r *Request, rec *TaskRecord, event, reason string) {
	ev := audit.Event{Type: TypeTask, Action: "task/" + event, Identity: r.Identity.ID, IdentityKind: r.Identity.Kind,
		SessionID: sessionID(r.Session), Transport: r.Transport, Upstream: rec.Upstream, Tool: rec.Tool,
		Outcome: audit.OutcomeOK, Reason: reason, Detail: map[string]string{"task": rec.ID, "status": rec.Status}}
	switch rec.Status {
	case TaskFailed:
		ev.Outcome = audit.OutcomeError
	case TaskCancelled:
		ev.Outcome = outcomeCancelled
	}
	g.record(ev)
}

// taskWire renders a record (and its pending questions) as the wire's task.
func taskWire(rec *TaskRecord, inputs map[string]*taskInput) *taskResult {
	res := &taskResult{ResultType: "complete", TaskID: rec.ID, Status: rec.Status, StatusMessage: rec.Message,
		CreatedAt: rec.Created.UTC().Format(time.RFC3339Nano), LastUpdatedAt: rec.Updated.UTC().Format(time.RFC3339Nano),
		TTLMs: rec.TTL.Milliseconds()}
	if !taskFinal(rec.Status) {
		res.PollIntervalMs = taskPollInterval.Milliseconds()
	}
	switch rec.Status {
	case TaskCompleted:
		res.Result = rec.Result
	case TaskFailed:
		res.Error = rec.Error
	case TaskInputRequired:
		if len(inputs) > 0 {
			res.InputRequests = mcp.InputRequestMap{}
			for k, in := range inputs {
				res.InputRequests[k] = in.ask.req
			}
		}
	}
	return res
}

// serveTasks answers tasks/get, tasks/cancel, tasks/update and tasks/list.
func (g *Gateway) serveTasks(ctx context.Context, ss *mcp.ServerSession, method string, req mcp.Request) (mcp.Result, error) {
	if tasks2025(ss) {
		return g.serveLegacyTasks(ctx, ss, method, req) // tasks_legacy.go
	}
	if method == "tasks/list" || method == "tasks/result" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: method + " is not supported (tasks/get inlines the result)"}
	}
	p, _ := req.GetParams().(*taskParams)
	if p == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "missing params"}
	}
	if !clientHasTasks(ss, p) {
		data, _ := json.Marshal(map[string]any{"requiredCapabilities": map[string]any{"extensions": map[string]any{TasksExtension: map[string]any{}}}})
		return nil, &jsonrpc.Error{Code: CodeMissingRequiredCapability, Message: method + " needs the " + TasksExtension + " extension", Data: data}
	}
	if extra := req.GetExtra(); extra != nil && extra.Header != nil {
		if name := strings.TrimSpace(extra.Header.Get("Mcp-Name")); name != "" && name != p.TaskID {
			return nil, &jsonrpc.Error{Code: CodeHeaderMismatch, Message: "header mismatch: Mcp-Name does not match params.taskId"}
		}
	}
	id, transport := g.identify(ss, req.GetExtra())
	r := &Request{Method: method, Identity: id, Session: ss, Transport: transport, Raw: req}
	unknown := &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown task %q", p.TaskID)}
	t, rec := g.findTask(ctx, p.TaskID, id.ID)
	if rec == nil {
		return nil, unknown
	}
	switch method {
	case "tasks/get":
		if t == nil {
			return taskWire(rec, nil), nil
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		return taskWire(&t.rec, t.inputs), nil
	case "tasks/cancel":
		if t != nil {
			t.mu.Lock()
			final := taskFinal(t.rec.Status)
			t.mu.Unlock()
			if !final {
				g.auditTask(r, rec, "cancel_requested", "")
				t.p.cancel(errTaskCancelled)
			}
		}
		return &ackResult{ResultType: "complete"}, nil
	case "tasks/update":
		if t != nil {
			t.deliver(p.InputResponses)
		}
		return &ackResult{ResultType: "complete"}, nil
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: method + " is not supported"}
}

// deliver hands the client's answers to the questions they name; answers to questions
// the task is not waiting on are ignored. The task is working again once every question
// is answered.
func (t *taskRun) deliver(responses map[string]json.RawMessage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deliverLocked(responses)
}

// deliverLocked is deliver with t.mu held; it reports whether the task is working
// again.
func (t *taskRun) deliverLocked(responses map[string]json.RawMessage) bool {
	for k, raw := range responses {
		in := t.inputs[k]
		if in == nil || !json.Valid(raw) {
			continue
		}
		var m mcp.InputResponseMap
		if err := json.Unmarshal(fmt.Appendf(nil, `{"k":%s}`, raw), &m); err != nil || m["k"] == nil {
			continue
		}
		in.ask.reply <- m["k"] // buffered: never blocks
		delete(t.inputs, k)
	}
	if len(t.inputs) == 0 {
		if t.inputTimer != nil {
			t.inputTimer.Stop()
			t.inputTimer = nil
		}
		return t.setStatus(TaskWorking, "")
	}
	return false
}

// findTask returns the identity's task: live (t set) or from the store (only rec).
// Another identity's task, or an expired one, is not found.
func (g *Gateway) findTask(ctx context.Context, id, owner string) (*taskRun, *TaskRecord) {
	now := time.Now()
	g.tasks.mu.Lock()
	t := g.tasks.live[id]
	if t != nil {
		t.mu.Lock()
		expired := taskFinal(t.rec.Status) && t.rec.expired(now)
		rec := t.rec
		t.mu.Unlock()
		if expired {
			delete(g.tasks.live, id)
			t = nil
		} else {
			g.tasks.mu.Unlock()
			if rec.Owner != owner {
				return nil, nil
			}
			return t, &rec
		}
	}
	g.tasks.mu.Unlock()
	if g.opts.TaskStore == nil || id == "" {
		return nil, nil
	}
	rec, ok, err := g.opts.TaskStore.LoadTask(ctx, id)
	if err != nil {
		g.log.Error("load task", "task", id, "err", err)
		return nil, nil
	}
	if !ok || rec.Owner != owner || rec.expired(now) {
		return nil, nil
	}
	return nil, rec
}

// declaredTaskSupport reads execution.taskSupport from an upstream's tool definition:
// "optional" or "required" ("forbidden", absent or unreadable: "").
func declaredTaskSupport(raw json.RawMessage) string {
	var t struct {
		Execution struct {
			TaskSupport string `json:"taskSupport"`
		} `json:"execution"`
	}
	if json.Unmarshal(raw, &t) != nil {
		return ""
	}
	switch t.Execution.TaskSupport {
	case "optional", "required":
		return t.Execution.TaskSupport
	}
	return ""
}

// jsonRPCError renders an internal error with the message as a JSON-RPC error object.
func jsonRPCError(message string) ([]byte, error) {
	b, err := json.Marshal(&jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: message})
	if err != nil {
		return nil, fmt.Errorf("encode error: %w", err)
	}
	return b, nil
}

// TaskScheduler queues the upstream calls of task tools with the runtime's other work,
// so that max_running, max_queued, priorities and per-owner fairness bound them too
// (agents.Scheduler implements it; set with UseTaskScheduler).
type TaskScheduler interface {
	// ScheduleCall queues a call for owner at priority ("" is normal). run is called
	// once the call may start, with a context that ends when the scheduler stops the
	// work (its cancel, a timeout, shutdown); dropped is called instead, without
	// blocking, when the call ends without having run (cancelled or pushed out while
	// queued). cancel ends the call, queued or running. A refusal (a full queue) is an
	// error, retryable where the scheduler says so.
	ScheduleCall(owner, priority, label string, run func(context.Context), dropped func(error)) (cancel func(), err error)
}

// UseTaskScheduler makes the calls of task tools from clients with the tasks extension
// wait their turn in s; nil starts them at once.
func (g *Gateway) UseTaskScheduler(s TaskScheduler) {
	g.tasks.mu.Lock()
	defer g.tasks.mu.Unlock()
	g.tasks.sched = s
}

func (g *Gateway) taskScheduler() TaskScheduler {
	g.tasks.mu.Lock()
	defer g.tasks.mu.Unlock()
	return g.tasks.sched
}

// errSchedulerStopped is the cause of a scheduled call's context when the scheduler
// ended it (its execution limit, or shutdown).
var errSchedulerStopped = errors.New("the scheduler stopped the call")

// scheduleCall queues the bridged call p (body runs it) in the scheduler, owned by the
// caller's identity at the priority the policy set (normal when it set none). The
// call is answered, or becomes a task, as if it had started: while queued it is a
// working task that tasks/cancel takes out of the queue. A full queue refuses the call
// with a retryable error.
func (g *Gateway) scheduleCall(s TaskScheduler, r *Request, p *pendingCall, body func(context.Context), cancelTimeout context.CancelFunc) error {
	run := func(sctx context.Context) {
		stop := context.AfterFunc(sctx, func() { p.cancel(errSchedulerStopped) })
		defer stop()
		// The upstream's timeout counts from here: time in the queue is not the call's.
		rctx, cancel := context.WithTimeout(p.ctx, p.upstream.cfg.Timeout)
		defer cancel()
		body(rctx)
	}
	dropped := func(err error) { // with the scheduler's lock held: must not block
		end := func() { // endCall reads why p's context ended (a cancelled task), if it did
			defer cancelTimeout()
			g.endCall(p, p.ctx, nil, &Error{Kind: Unavailable, Public: fmt.Sprintf("the call did not run: %v", err), Err: err})
		}
		if !g.goOwned(end) {
			end()
		}
	}
	cancel, err := s.ScheduleCall(r.Identity.ID, r.priority, r.Name, run, dropped)
	if err != nil {
		return &Error{Kind: Unavailable, Public: err.Error(), Err: err}
	}
	// Whatever ends the call (tasks/cancel, its timeout, abandonment, shutdown, its
	// end) ends its place in the scheduler: a queued call leaves the queue.
	context.AfterFunc(p.ctx, cancel)
	return nil
}
