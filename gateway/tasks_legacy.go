package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The experimental tasks of protocol revision 2025-11-25, for clients of that revision
// (the go-sdk models none of it, so it is done here on the raw JSON-RPC layer):
//
//   - initialize answers with capabilities.tasks {list, cancel, requests.tools.call},
//     and tools/list marks each tool symbi can run as a task with
//     execution.taskSupport ("optional" or "required"; absent is "forbidden");
//   - a tools/call with params.task {ttl} is decided by the policy like any call, then
//     answered at once with a CreateTaskResult {task}: the upstream call runs on as a
//     task in the same store, scheduler and identity isolation as the 2026-07-28
//     extension's tasks (tasks.go);
//   - tasks/get and tasks/cancel answer with the task, tasks/list pages through the
//     caller's own tasks, tasks/result waits until the task is final and returns what
//     the call would have returned (with _meta io.modelcontextprotocol/related-task);
//   - while the task is input_required, its upstream's questions (elicitation,
//     sampling, roots) are put to the client on a tasks/result in flight, with the
//     related-task _meta, and the answers go back to the upstream;
//   - the creating session is sent notifications/tasks/status on each change.
//
// The SDK drops request fields it does not model, so the raw layer (mapInbound) moves
// a tools/call's params.task into params._meta[metaTaskKey] before the SDK decodes
// it; taskCall takes it out again, so it never reaches an upstream. The SDK cannot
// send a notification it does not know either: notifyTaskStatus sends a progress
// notification with a marker token that the raw layer (idMap.restore) rewrites into
// notifications/tasks/status on its way out.

// tasksRevision is the protocol revision whose experimental tasks symbi serves.
const tasksRevision = "2025-11-25"

// metaTaskKey is where the raw layer puts a tools/call's params.task.
const metaTaskKey = "symbi.dev/task"

// relatedTaskKey associates messages with a task (2025-11-25).
const relatedTaskKey = "io.modelcontextprotocol/related-task"

// DefaultTaskInputTimeout is Options.TaskInputTimeout's default.
const DefaultTaskInputTimeout = 10 * time.Minute

// DefaultTaskSweepInterval is Options.TaskSweepInterval's default.
const DefaultTaskSweepInterval = time.Minute

// legacyTasksPageSize is how many tasks one tasks/list page holds.
const legacyTasksPageSize = 50

// errTaskNoInput is the cause of a task's end when its client never answered.
var errTaskNoInput = errors.New("the task waited for input in vain")

func (g *Gateway) taskInputTimeout() time.Duration {
	if g.opts.TaskInputTimeout > 0 {
		return g.opts.TaskInputTimeout
	}
	return DefaultTaskInputTimeout
}

// tasks2025 reports whether ss is a session of a 2025-11-25 client (one that may use
// that revision's tasks).
func tasks2025(ss *mcp.ServerSession) bool {
	if ss == nil || !legacyClient(ss) {
		return false
	}
	ip := ss.InitializeParams()
	return ip != nil && ip.ProtocolVersion >= tasksRevision
}

// liftTaskParam moves params.task of a tools/call into params._meta[metaTaskKey], so
// that it survives the SDK's decoding. Any other message, or one it cannot read, is
// returned as it is.
func liftTaskParam(data []byte) []byte {
	if !bytes.Contains(data, []byte(`"task"`)) {
		return data
	}
	ms, me, ok := jsonSpan(data, "method")
	if !ok || string(data[ms:me]) != `"tools/call"` {
		return data
	}
	ps, pe, ok := jsonSpan(data, "params")
	if !ok {
		return data
	}
	if _, _, ok := jsonSpan(data[ps:pe], "task"); !ok || !json.Valid(data) {
		return data // an invalid message is the SDK's to answer
	}
	var params map[string]json.RawMessage
	if json.Unmarshal(data[ps:pe], &params) != nil {
		return data
	}
	meta := map[string]json.RawMessage{}
	if raw, ok := params["_meta"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &meta) != nil || meta == nil {
			return data
		}
	}
	meta[metaTaskKey] = params["task"]
	delete(params, "task")
	var mb bytes.Buffer
	enc := json.NewEncoder(&mb)
	enc.SetEscapeHTML(false)
	if enc.Encode(meta) != nil {
		return data
	}
	params["_meta"] = bytes.TrimSpace(mb.Bytes())
	var pb bytes.Buffer
	enc = json.NewEncoder(&pb)
	enc.SetEscapeHTML(false)
	if enc.Encode(params) != nil {
		return data
	}
	out := make([]byte, 0, len(data)+pb.Len())
	out = append(out, data[:ps]...)
	out = append(out, bytes.TrimSpace(pb.Bytes())...)
	return append(out, data[pe:]...)
}

// legacyTaskReq is a tools/call's params.task.
type legacyTaskReq struct {
	ttl time.Duration // requested; 0: symbi's
}

// takeTaskParam removes the lifted params.task from a tools/call's _meta and returns
// it (nil when the call has none).
func takeTaskParam(params mcp.Params) *legacyTaskReq {
	p, ok := params.(*mcp.CallToolParamsRaw)
	if !ok || p == nil || p.Meta == nil {
		return nil
	}
	v, ok := p.Meta[metaTaskKey]
	if !ok {
		return nil
	}
	delete(p.Meta, metaTaskKey)
	lt := &legacyTaskReq{}
	if m, ok := v.(map[string]any); ok {
		if ms, ok := m["ttl"].(float64); ok && ms > 0 && ms < float64(1<<53) {
			lt.ttl = time.Duration(ms) * time.Millisecond
		}
	}
	return lt
}

type legacyTaskKey struct{}

// legacyTaskFrom returns the 2025-11-25 task the call in ctx is to become, if any.
func legacyTaskFrom(ctx context.Context) *legacyTaskReq {
	lt, _ := ctx.Value(legacyTaskKey{}).(*legacyTaskReq)
	return lt
}

// legacyTaskSupport says how symbi runs a tool for 2025-11-25 clients: as
// taskSupport, except that tasks run on the bridge, so the tools of an upstream that
// itself speaks 2026-07-28 are not offered as tasks.
func (g *Gateway) legacyTaskSupport(ti *ToolInfo) string {
	support := g.taskSupport(ti)
	if support == "" {
		return ""
	}
	if u := g.upstream(ti.Upstream); u == nil || u.primary.modern() {
		return ""
	}
	return support
}

// legacyTaskCall prepares a 2025-11-25 session's tools/call (lt: its params.task, if
// any): a task-augmented call of a tool symbi runs as a task becomes one at once; a
// required-task tool called without params.task, or params.task on a tool that is not
// a task tool, is -32601, as the revision says.
func (g *Gateway) legacyTaskCall(ctx context.Context, r *Request, lt *legacyTaskReq) (context.Context, error) {
	support := g.legacyTaskSupport(r.Tool)
	if lt == nil {
		if support == "required" {
			return ctx, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound,
				Message: fmt.Sprintf("tool %q must be called as a task (params.task)", r.Name)}
		}
		return ctx, nil
	}
	if support == "" {
		return ctx, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound,
			Message: fmt.Sprintf("tool %q cannot be called as a task (its execution.taskSupport is forbidden)", r.Name)}
	}
	if !g.tasksAvailable(r.Identity.ID) {
		return ctx, &Error{Kind: Unavailable, Public: fmt.Sprintf("%q has too many unfinished tasks; wait for some to end, then retry", r.Identity.ID)}
	}
	ctx = context.WithValue(ctx, taskWindowKey{}, true)
	return context.WithValue(ctx, legacyTaskKey{}, lt), nil
}

// legacyTask is a task on the 2025-11-25 wire.
type legacyTask struct {
	TaskID        string `json:"taskId"`
	Status        string `json:"status"`
	StatusMessage string `json:"statusMessage,omitempty"`
	CreatedAt     string `json:"createdAt"`
	LastUpdatedAt string `json:"lastUpdatedAt"`
	TTL           *int64 `json:"ttl"` // null: unlimited
	PollInterval  int64  `json:"pollInterval,omitempty"`
}

// legacyCreateTaskResult answers a task-augmented tools/call.
type legacyCreateTaskResult struct {
	mcp.ResultBase
	Task legacyTask `json:"task"`
}

// legacyTaskResult answers tasks/get and tasks/cancel.
type legacyTaskResult struct {
	mcp.ResultBase
	legacyTask
}

// legacyTaskList answers tasks/list.
type legacyTaskList struct {
	mcp.ResultBase
	Tasks      []legacyTask `json:"tasks"`
	NextCursor string       `json:"nextCursor,omitempty"`
}

// rawResult is a result already encoded.
type rawResult struct {
	mcp.ResultBase
	raw json.RawMessage
}

func (r *rawResult) MarshalJSON() ([]byte, error) { return r.raw, nil }

func legacyWire(rec *TaskRecord) legacyTask {
	w := legacyTask{TaskID: rec.ID, Status: rec.Status, StatusMessage: rec.Message,
		CreatedAt: rec.Created.UTC().Format(time.RFC3339Nano), LastUpdatedAt: rec.Updated.UTC().Format(time.RFC3339Nano)}
	if rec.TTL > 0 {
		ms := rec.TTL.Milliseconds()
		w.TTL = &ms
	}
	if !taskFinal(rec.Status) {
		w.PollInterval = taskPollInterval.Milliseconds()
	}
	return w
}

// toolError reports whether an encoded tool result has isError set.
func toolError(result json.RawMessage) bool {
	var r struct {
		IsError bool `json:"isError"`
	}
	return json.Unmarshal(result, &r) == nil && r.IsError
}

// serveLegacyTasks answers tasks/get, tasks/result, tasks/list and tasks/cancel for a
// 2025-11-25 session.
func (g *Gateway) serveLegacyTasks(ctx context.Context, ss *mcp.ServerSession, method string, req mcp.Request) (mcp.Result, error) {
	id, transport := g.identify(ss, req.GetExtra())
	r := &Request{Method: method, Identity: id, Session: ss, Transport: transport, Raw: req}
	if method == "tasks/list" {
		p, _ := req.GetParams().(*tasksListParams)
		cursor := ""
		if p != nil {
			cursor = p.Cursor
		}
		return g.listLegacyTasks(ctx, id.ID, cursor)
	}
	p, _ := req.GetParams().(*taskParams)
	if p == nil || p.TaskID == "" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "missing params.taskId"}
	}
	t, rec := g.findTask(ctx, p.TaskID, id.ID)
	if rec == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("Failed to retrieve task: unknown task %q", p.TaskID)}
	}
	switch method {
	case "tasks/get":
		if t != nil {
			t.mu.Lock()
			rec = &TaskRecord{}
			*rec = t.rec
			t.mu.Unlock()
		}
		return &legacyTaskResult{legacyTask: legacyWire(rec)}, nil
	case "tasks/cancel":
		return g.cancelLegacyTask(ctx, r, t, rec)
	case "tasks/result":
		return g.legacyTaskOutcome(ctx, r, t, rec)
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: method + " is not supported"}
}

// cancelLegacyTask cancels a task that is not final and answers with it once it is
// cancelled; a final task is -32602.
func (g *Gateway) cancelLegacyTask(ctx context.Context, r *Request, t *taskRun, rec *TaskRecord) (mcp.Result, error) {
	if taskFinal(rec.Status) {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("Cannot cancel task: already in terminal status %q", rec.Status)}
	}
	if t == nil {
		// Not running in this process (another replica's): it cannot be reached from here.
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the task runs in another symbi process; cancel it there"}
	}
	g.auditTask(r, rec, "cancel_requested", "")
	t.p.cancel(errTaskCancelled)
	wait, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	select {
	case <-t.done:
	case <-wait.Done():
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the task did not stop in time; ask again with tasks/get"}
	}
	t.mu.Lock()
	out := legacyWire(&t.rec)
	t.mu.Unlock()
	if out.Status != TaskCancelled {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("Cannot cancel task: it ended %s first", out.Status)}
	}
	return &legacyTaskResult{legacyTask: out}, nil
}

// legacyTaskOutcome is tasks/result: it waits until the task is final, putting the
// task's questions to the client meanwhile, and returns what the tools/call would have
// returned, with the related-task _meta.
func (g *Gateway) legacyTaskOutcome(ctx context.Context, r *Request, t *taskRun, rec *TaskRecord) (mcp.Result, error) {
	if t != nil {
		for {
			t.mu.Lock()
			final := taskFinal(t.rec.Status)
			var key string
			var in *taskInput
			if !final {
				for _, k := range slices.Sorted(maps.Keys(t.inputs)) {
					if v := t.inputs[k]; !v.asking {
						key, in = k, v
						v.asking = true
						break
					}
				}
			}
			changed := t.changed
			t.mu.Unlock()
			if final {
				break
			}
			if in != nil {
				resp, err := askLegacy(ctx, r.Session, t.rec.ID, in.ask.req)
				t.mu.Lock()
				in.asking = false
				working := false
				if err == nil {
					if _, still := t.inputs[key]; still {
						in.ask.reply <- resp // buffered: never blocks
						delete(t.inputs, key)
						working = t.deliverLocked(nil)
					}
				}
				t.mu.Unlock()
				if working {
					g.persistTask(r, t, TaskWorking)
				}
				if err != nil {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("put the task's question to the client: %v", err)}
				}
				continue
			}
			select {
			case <-t.done:
			case <-changed:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		t.mu.Lock()
		rec = &TaskRecord{}
		*rec = t.rec
		t.mu.Unlock()
	}
	for !taskFinal(rec.Status) {
		// Running in another process (a replica on the same database): wait for the
		// store to show its end.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(taskPollInterval):
		}
		next, ok, err := g.opts.TaskStore.LoadTask(ctx, rec.ID)
		if err != nil || !ok {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the task was lost"}
		}
		rec = next
	}
	related := map[string]any{"taskId": rec.ID}
	if len(rec.Result) > 0 {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(rec.Result, &m); err != nil || m == nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the task's result is unreadable"}
		}
		meta := map[string]any{}
		if raw, ok := m["_meta"]; ok {
			_ = json.Unmarshal(raw, &meta)
		}
		if meta == nil {
			meta = map[string]any{}
		}
		meta[relatedTaskKey] = related
		mb, err := json.Marshal(meta)
		if err != nil {
			return nil, fmt.Errorf("encode task result: %w", err)
		}
		m["_meta"] = mb
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encode task result: %w", err)
		}
		return &rawResult{raw: b}, nil
	}
	je := &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "task " + rec.Status + ": " + rec.Message}
	if len(rec.Error) > 0 {
		var stored jsonrpc.Error
		if json.Unmarshal(rec.Error, &stored) == nil && stored.Message != "" {
			je = &stored
		}
	}
	return nil, je
}

// askLegacy puts an upstream's question to a 2025-11-25 client, on the request of ctx
// (a tasks/result), with the related-task _meta.
func askLegacy(ctx context.Context, ss *mcp.ServerSession, taskID string, req mcp.InputRequest) (mcp.InputResponse, error) {
	if ss == nil {
		return nil, errors.New("no client session")
	}
	withTask := func(m mcp.Meta) mcp.Meta {
		out := mcp.Meta{}
		for k, v := range m {
			out[k] = v
		}
		out[relatedTaskKey] = map[string]any{"taskId": taskID}
		return out
	}
	switch p := req.(type) {
	case *mcp.ElicitParams:
		c := *p
		c.Meta = withTask(p.Meta)
		return ss.Elicit(ctx, &c)
	case *mcp.CreateMessageWithToolsParams:
		c := *p
		c.Meta = withTask(p.Meta)
		return ss.CreateMessageWithTools(ctx, &c)
	case *mcp.CreateMessageParams:
		c := *p
		c.Meta = withTask(p.Meta)
		return ss.CreateMessage(ctx, &c)
	case *mcp.ListRootsParams:
		c := *p
		c.Meta = withTask(p.Meta)
		return ss.ListRoots(ctx, &c)
	}
	return nil, fmt.Errorf("cannot ask the client %T", req)
}

// listLegacyTasks is tasks/list: the owner's tasks within their TTL, newest first, a
// page at a time (the cursor is the offset of the next page).
func (g *Gateway) listLegacyTasks(ctx context.Context, owner, cursor string) (mcp.Result, error) {
	offset := 0
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		n, cerr := strconv.Atoi(strings.TrimPrefix(string(b), "o:"))
		if err != nil || cerr != nil || !strings.HasPrefix(string(b), "o:") || n < 0 {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid cursor"}
		}
		offset = n
	}
	now := time.Now()
	var recs []TaskRecord
	if l, ok := g.opts.TaskStore.(interface {
		RecentTasks(ctx context.Context, owner string, limit int, now time.Time) ([]TaskRecord, error)
	}); ok {
		var err error
		if recs, err = l.RecentTasks(ctx, owner, offset+legacyTasksPageSize+1, now); err != nil {
			g.log.Error("list tasks", "identity", owner, "err", err)
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "could not list the tasks"}
		}
	} else {
		g.tasks.mu.Lock()
		for _, t := range g.tasks.live {
			t.mu.Lock()
			if t.rec.Owner == owner && !(taskFinal(t.rec.Status) && t.rec.expired(now)) {
				recs = append(recs, t.rec)
			}
			t.mu.Unlock()
		}
		g.tasks.mu.Unlock()
		slices.SortFunc(recs, func(a, b TaskRecord) int {
			if c := b.Created.Compare(a.Created); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
	}
	out := &legacyTaskList{Tasks: []legacyTask{}}
	if offset > len(recs) {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid cursor"}
	}
	page := recs[offset:]
	if len(page) > legacyTasksPageSize {
		page = page[:legacyTasksPageSize]
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte("o:" + strconv.Itoa(offset+legacyTasksPageSize)))
	}
	for i := range page {
		rec := &page[i]
		if t := g.liveTask(rec.ID); t != nil { // the live status is the newest
			t.mu.Lock()
			*rec = t.rec
			t.mu.Unlock()
		}
		out.Tasks = append(out.Tasks, legacyWire(rec))
	}
	return out, nil
}

func (g *Gateway) liveTask(id string) *taskRun {
	g.tasks.mu.Lock()
	defer g.tasks.mu.Unlock()
	return g.tasks.live[id]
}

// legacyTasksMiddleware advertises the 2025-11-25 tasks to clients of that revision:
// capabilities.tasks in the initialize result, execution.taskSupport on the tools
// symbi runs as tasks in tools/list.
func (g *Gateway) legacyTasksMiddleware(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		if method != "initialize" && method != "tools/list" {
			return next(ctx, method, req)
		}
		res, err := next(ctx, method, req)
		if err != nil || res == nil {
			return res, err
		}
		switch method {
		case "initialize":
			ir, ok := res.(*mcp.InitializeResult)
			if !ok || ir.ProtocolVersion < tasksRevision || ir.ProtocolVersion >= "2026-07-28" {
				return res, nil
			}
			return withCapabilityTasks(ir)
		default:
			ss, _ := req.GetSession().(*mcp.ServerSession)
			lr, ok := res.(*mcp.ListToolsResult)
			if !ok || !tasks2025(ss) {
				return res, nil
			}
			return g.withTaskSupport(lr)
		}
	}
}

func withCapabilityTasks(ir *mcp.InitializeResult) (mcp.Result, error) {
	b, err := json.Marshal(ir)
	if err != nil {
		return nil, fmt.Errorf("encode initialize result: %w", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode initialize result: %w", err)
	}
	caps := map[string]json.RawMessage{}
	if raw, ok := m["capabilities"]; ok {
		if err := json.Unmarshal(raw, &caps); err != nil || caps == nil {
			caps = map[string]json.RawMessage{}
		}
	}
	caps["tasks"] = json.RawMessage(`{"list":{},"cancel":{},"requests":{"tools":{"call":{}}}}`)
	if m["capabilities"], err = json.Marshal(caps); err != nil {
		return nil, fmt.Errorf("encode capabilities: %w", err)
	}
	if b, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("encode initialize result: %w", err)
	}
	return &rawResult{raw: b}, nil
}

func (g *Gateway) withTaskSupport(lr *mcp.ListToolsResult) (mcp.Result, error) {
	support := map[string]string{}
	for _, t := range lr.Tools {
		if ti, ok := g.Tool(t.Name); ok {
			if s := g.legacyTaskSupport(ti); s != "" {
				support[t.Name] = s
			}
		}
	}
	if len(support) == 0 {
		return lr, nil
	}
	b, err := json.Marshal(lr)
	if err != nil {
		return nil, fmt.Errorf("encode tools: %w", err)
	}
	var m map[string]json.RawMessage
	var tools []map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode tools: %w", err)
	}
	if err := json.Unmarshal(m["tools"], &tools); err != nil {
		return nil, fmt.Errorf("decode tools: %w", err)
	}
	for _, t := range tools {
		var name string
		_ = json.Unmarshal(t["name"], &name)
		if s := support[name]; s != "" {
			t["execution"] = json.RawMessage(`{"taskSupport":"` + s + `"}`)
		}
	}
	if m["tools"], err = json.Marshal(tools); err != nil {
		return nil, fmt.Errorf("encode tools: %w", err)
	}
	if b, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("encode tools: %w", err)
	}
	return &rawResult{raw: b}, nil
}

// Status notifications: notifyTaskStatus sends a progress notification whose token is
// taskNoteToken and whose _meta[taskNoteKey] is the task; idMap.restore (on every
// client connection's way out) turns it into notifications/tasks/status. taskNotes
// counts those not yet rewritten, so that the rewrite costs nothing when there are none.

const (
	taskNoteToken = "symbi-task-status~"
	taskNoteKey   = "symbi.dev/task-status"
)

var taskNotes atomic.Int64

// notifyTaskStatus tells ss (a 2025-11-25 session) that the task changed.
func (g *Gateway) notifyTaskStatus(ss *mcp.ServerSession, rec *TaskRecord) {
	if ss == nil {
		return
	}
	ctx, cancel := context.WithTimeout(g.runCtx(), 2*time.Second)
	defer cancel()
	taskNotes.Add(1)
	err := ss.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: taskNoteToken,
		Meta: mcp.Meta{taskNoteKey: legacyWire(rec)}})
	if err != nil {
		taskNotes.Add(-1)
		g.log.Debug("notify task status", "task", rec.ID, "err", err)
	}
}

// rewriteTaskNotes turns the marked progress notifications in out (encoded messages, or
// SSE events carrying them) into notifications/tasks/status.
func rewriteTaskNotes(out []byte) []byte {
	if taskNotes.Load() <= 0 {
		return out
	}
	mark := []byte(`"` + taskNoteToken + `"`)
	if !bytes.Contains(out, mark) {
		return out
	}
	var b []byte
	for {
		i := bytes.Index(out, mark)
		if i < 0 {
			break
		}
		start := bytes.LastIndexByte(out[:i], '\n') + 1
		end := len(out)
		if j := bytes.IndexByte(out[i:], '\n'); j >= 0 {
			end = i + j
		}
		line := out[start:end]
		prefix := []byte(nil)
		if k := bytes.IndexByte(line, '{'); k > 0 {
			prefix, line = line[:k], line[k:] // "data: " of an SSE event
		}
		var msg struct {
			Params struct {
				Meta map[string]json.RawMessage `json:"_meta"`
			} `json:"params"`
		}
		task := json.RawMessage(nil)
		if json.Unmarshal(line, &msg) == nil {
			task = msg.Params.Meta[taskNoteKey]
		}
		b = append(b, out[:start]...)
		if task != nil {
			b = append(b, prefix...)
			b = append(b, `{"jsonrpc":"2.0","method":"notifications/tasks/status","params":`...)
			b = append(b, task...)
			b = append(b, '}')
			taskNotes.Add(-1)
		} else {
			b = append(b, out[start:end]...)
		}
		out = out[end:]
	}
	return append(b, out...)
}

// sweepTasks deletes, every TaskSweepInterval until ctx ends, the finished tasks past
// their TTL: from memory, and from the store when it can.
func (g *Gateway) sweepTasks(ctx context.Context) {
	d := g.opts.TaskSweepInterval
	if d <= 0 {
		d = DefaultTaskSweepInterval
	}
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		g.sweepTasksOnce(ctx, time.Now())
	}
}

// taskSweeper is a TaskStore that deletes expired tasks by itself.
type taskSweeper interface {
	DeleteExpired(ctx context.Context, now time.Time) (int, error)
}

func (g *Gateway) sweepTasksOnce(ctx context.Context, now time.Time) {
	g.tasks.mu.Lock()
	for id, t := range g.tasks.live {
		t.mu.Lock()
		gone := taskFinal(t.rec.Status) && t.rec.expired(now)
		t.mu.Unlock()
		if gone {
			delete(g.tasks.live, id)
		}
	}
	g.tasks.mu.Unlock()
	if s, ok := g.opts.TaskStore.(taskSweeper); ok {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if n, err := s.DeleteExpired(sctx, now); err != nil {
			g.log.Warn("delete expired tasks", "err", err)
		} else if n > 0 {
			g.log.Debug("expired tasks deleted", "count", n)
		}
	}
}
