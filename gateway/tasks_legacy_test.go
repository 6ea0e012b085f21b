package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/store"
)

// taskLineClient is a 2025-11-25 client speaking raw JSON-RPC over a line stream (the way
// `symbi mcp` is spoken to): calls may run concurrently; requests from the server and
// notifications are collected.
type taskLineClient struct {
	t  *testing.T
	mu sync.Mutex
	w  io.Writer
	id int

	pending  map[string]chan taskRPCMsg
	requests chan taskRPCMsg
	notes    chan taskRPCMsg
}

type taskRPCMsg struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// serveTaskLineClient serves one session to identity through g.ServeAs and returns its
// client, initialized as a 2025-11-25 client that can answer elicitation.
func serveTaskLineClient(t *testing.T, ctx context.Context, g *gateway.Gateway, identity string) (*taskLineClient, map[string]any) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &taskLineClient{t: t, w: inW, pending: map[string]chan taskRPCMsg{}, requests: make(chan taskRPCMsg, 16), notes: make(chan taskRPCMsg, 64)}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // owned: ends when the session ends (cleanup)
		defer wg.Done()
		_ = g.ServeAs(sctx, gateway.Identity{ID: identity, Kind: "client"}, inR, outW, taskCloser(func() error {
			_ = inR.Close()
			return outW.Close()
		}))
		_ = outW.Close()
	}()
	go func() { // owned: ends when the server's output closes
		defer wg.Done()
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m taskRPCMsg
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			switch {
			case m.Method != "" && len(m.ID) > 0:
				c.requests <- m
			case m.Method != "":
				select {
				case c.notes <- m:
				default:
				}
			default:
				c.mu.Lock()
				ch := c.pending[string(m.ID)]
				delete(c.pending, string(m.ID))
				c.mu.Unlock()
				if ch != nil {
					ch <- m
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = inW.Close()
		_ = outR.Close()
		wg.Wait()
	})
	init, e := c.call("initialize", map[string]any{"protocolVersion": "2025-11-25",
		"capabilities": map[string]any{"elicitation": map[string]any{}, "tasks": map[string]any{"list": map[string]any{}, "cancel": map[string]any{}}},
		"clientInfo":   map[string]any{"name": "tasks-2025", "version": "1"}})
	if e != nil {
		t.Fatalf("initialize: %v", e)
	}
	c.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})
	return c, init
}

type taskCloser func() error

func (f taskCloser) Close() error { return f() }

func (c *taskLineClient) send(msg any) {
	b, _ := json.Marshal(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.w.Write(append(b, '\n')); err != nil {
		c.t.Errorf("write: %v", err)
	}
}

// start sends a request and returns where its response arrives.
func (c *taskLineClient) start(method string, params any) <-chan taskRPCMsg {
	ch := make(chan taskRPCMsg, 1)
	c.mu.Lock()
	c.id++
	id := c.id
	c.pending[fmt.Sprint(id)] = ch
	c.mu.Unlock()
	c.send(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	return ch
}

type taskRPCError struct {
	Code    int
	Message string
}

func (e *taskRPCError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

func waitRPC(t *testing.T, ch <-chan taskRPCMsg) (map[string]any, *taskRPCError) {
	t.Helper()
	select {
	case m := <-ch:
		if m.Error != nil {
			return nil, &taskRPCError{m.Error.Code, m.Error.Message}
		}
		var res map[string]any
		if err := json.Unmarshal(m.Result, &res); err != nil {
			t.Fatalf("result: %v: %s", err, m.Result)
		}
		return res, nil
	case <-time.After(15 * time.Second):
		t.Fatal("no response")
		return nil, nil
	}
}

func (c *taskLineClient) call(method string, params any) (map[string]any, *taskRPCError) {
	c.t.Helper()
	return waitRPC(c.t, c.start(method, params))
}

// legacyTaskServer is an upstream that knows nothing of tasks.
func legacyTaskServer(release <-chan struct{}) func() *mcp.Server {
	return func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "plain-upstream", Version: "1"}, nil)
		obj := map[string]any{"type": "object"}
		text := func(s string) *mcp.CallToolResult {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
		}
		s.AddTool(&mcp.Tool{Name: "work", InputSchema: obj}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			select {
			case <-release:
				return text("done"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
		s.AddTool(&mcp.Tool{Name: "ask", InputSchema: obj}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "Your name?", RequestedSchema: map[string]any{
				"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}})
			if err != nil {
				return nil, err
			}
			return text(fmt.Sprintf("hello %v", res.Content["name"])), nil
		})
		s.AddTool(&mcp.Tool{Name: "boom", InputSchema: obj}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			r := text("it broke")
			r.IsError = true
			return r, nil
		})
		s.AddTool(&mcp.Tool{Name: "must", InputSchema: obj}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return text("must done"), nil
		})
		s.AddTool(&mcp.Tool{Name: "plain", InputSchema: obj}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return text("plain done"), nil
		})
		return s
	}
}

func legacyTaskGateway(t *testing.T, release <-chan struct{}, o gateway.Options) (*gateway.Gateway, *gateway.SQLTaskStore, context.Context) {
	t.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := gateway.OpenTaskStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	o.Upstreams = []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(legacyTaskServer(release)),
		TaskTools: []string{"work", "ask", "boom"}, TaskRequired: []string{"must"}}}
	o.InitialWait, o.TaskStore = 10*time.Second, ts
	ctx, cancel := context.WithCancel(context.Background())
	g := gateway.New(&o)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		_ = g.Close()
		wg.Wait()
		_ = db.Close()
	})
	g.WaitReady(ctx)
	return g, ts, ctx
}

func taskOf(t *testing.T, res map[string]any) map[string]any {
	t.Helper()
	task, _ := res["task"].(map[string]any)
	if task == nil || task["taskId"] == "" || task["status"] != "working" || task["createdAt"] == nil || task["lastUpdatedAt"] == nil {
		t.Fatalf("want a CreateTaskResult, got %v", res)
	}
	return task
}

func waitTaskStatus(t *testing.T, c *taskLineClient, id, want string) map[string]any {
	t.Helper()
	var last map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		res, e := c.call("tasks/get", map[string]any{"taskId": id})
		if e != nil {
			t.Fatalf("tasks/get: %v", e)
		}
		if last = res; res["status"] == want {
			return res
		}
	}
	t.Fatalf("task %s: want %s, got %v", id, want, last)
	return nil
}

func taskText(res map[string]any) string {
	content, _ := res["content"].([]any)
	if len(content) == 0 {
		return ""
	}
	c, _ := content[0].(map[string]any)
	s, _ := c["text"].(string)
	return s
}

func relatedTask(m map[string]any) any {
	meta, _ := m["_meta"].(map[string]any)
	rt, _ := meta["io.modelcontextprotocol/related-task"].(map[string]any)
	return rt["taskId"]
}

// TestLegacyTasks: a 2025-11-25 client uses that revision's experimental tasks in front
// of an upstream that knows nothing of them: the capability and the tools'
// taskSupport are advertised, a task-augmented call becomes a task at once, tasks/get,
// tasks/list (only the caller's), tasks/result (blocking, with the related-task _meta;
// a tool error fails the task), tasks/cancel, the input an upstream asks for on
// tasks/result, and notifications/tasks/status to the creating session.
func TestLegacyTasks(t *testing.T) {
	release := make(chan struct{})
	g, _, ctx := legacyTaskGateway(t, release, gateway.Options{})
	alice, init := serveTaskLineClient(t, ctx, g, "alice")
	bob, _ := serveTaskLineClient(t, ctx, g, "bob")

	caps, _ := init["capabilities"].(map[string]any)
	tc, _ := caps["tasks"].(map[string]any)
	if req, _ := tc["requests"].(map[string]any); tc["list"] == nil || tc["cancel"] == nil || req["tools"].(map[string]any)["call"] == nil {
		t.Fatalf("capabilities.tasks: %v", caps)
	}
	list, e := alice.call("tools/list", map[string]any{})
	if e != nil {
		t.Fatal(e)
	}
	support := map[string]any{}
	for _, raw := range list["tools"].([]any) {
		tool := raw.(map[string]any)
		if ex, ok := tool["execution"].(map[string]any); ok {
			support[tool["name"].(string)] = ex["taskSupport"]
		}
	}
	if support["up__work"] != "optional" || support["up__must"] != "required" || support["up__plain"] != nil {
		t.Fatalf("execution.taskSupport: %v", support)
	}

	// A tool that is not a task tool refuses params.task; a required one refuses a call
	// without it; both -32601.
	if _, e := alice.call("tools/call", map[string]any{"name": "up__plain", "arguments": map[string]any{}, "task": map[string]any{}}); e == nil || e.Code != -32601 {
		t.Fatalf("task on a forbidden tool: %v", e)
	}
	if _, e := alice.call("tools/call", map[string]any{"name": "up__must", "arguments": map[string]any{}}); e == nil || e.Code != -32601 {
		t.Fatalf("required tool without task: %v", e)
	}
	// Without params.task an optional tool is an ordinary call.
	if res, e := alice.call("tools/call", map[string]any{"name": "up__boom", "arguments": map[string]any{}}); e != nil || res["task"] != nil || res["isError"] != true {
		t.Fatalf("plain call of a task tool: %v %v", res, e)
	}

	// A task-augmented call is a task at once, with the ttl asked for.
	res, e := alice.call("tools/call", map[string]any{"name": "up__work", "arguments": map[string]any{}, "task": map[string]any{"ttl": 60000}})
	if e != nil {
		t.Fatal(e)
	}
	task := taskOf(t, res)
	id := task["taskId"].(string)
	if task["ttl"] != float64(60000) || task["pollInterval"] == nil {
		t.Fatalf("task: %v", task)
	}
	got, e := alice.call("tasks/get", map[string]any{"taskId": id})
	if e != nil || got["taskId"] != id || got["status"] != "working" {
		t.Fatalf("tasks/get: %v %v", got, e)
	}

	// Bob does not see it.
	for _, m := range []string{"tasks/get", "tasks/result", "tasks/cancel"} {
		if _, e := bob.call(m, map[string]any{"taskId": id}); e == nil || e.Code != -32602 {
			t.Fatalf("bob's %s of alice's task: %v", m, e)
		}
	}
	if l, e := bob.call("tasks/list", map[string]any{}); e != nil || len(l["tasks"].([]any)) != 0 {
		t.Fatalf("bob's tasks/list: %v %v", l, e)
	}
	if l, e := alice.call("tasks/list", map[string]any{}); e != nil || len(l["tasks"].([]any)) != 1 || l["tasks"].([]any)[0].(map[string]any)["taskId"] != id {
		t.Fatalf("alice's tasks/list: %v %v", l, e)
	}
	if _, e := alice.call("tasks/list", map[string]any{"cursor": "bogus"}); e == nil || e.Code != -32602 {
		t.Fatalf("tasks/list with a bad cursor: %v", e)
	}

	// tasks/result blocks until the task ends, then returns the tool's result.
	pending := alice.start("tasks/result", map[string]any{"taskId": id})
	select {
	case m := <-pending:
		t.Fatalf("tasks/result answered before the task ended: %+v", m)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	out, e := waitRPC(t, pending)
	if e != nil || taskText(out) != "done" || relatedTask(out) != id {
		t.Fatalf("tasks/result: %v %v", out, e)
	}
	if got := waitTaskStatus(t, alice, id, "completed"); got["pollInterval"] != nil {
		t.Fatalf("a final task suggests polling: %v", got)
	}
	waitNote(t, alice, id, "completed")

	// A tool error fails the task; tasks/result still returns the result.
	res, e = alice.call("tools/call", map[string]any{"name": "up__boom", "arguments": map[string]any{}, "task": map[string]any{}})
	if e != nil {
		t.Fatal(e)
	}
	boom := taskOf(t, res)["taskId"].(string)
	out, e = alice.call("tasks/result", map[string]any{"taskId": boom})
	if e != nil || out["isError"] != true || taskText(out) != "it broke" || relatedTask(out) != boom {
		t.Fatalf("tasks/result of a tool error: %v %v", out, e)
	}
	waitTaskStatus(t, alice, boom, "failed")

	// The upstream's question goes to the client on tasks/result, marked with the task.
	res, e = alice.call("tools/call", map[string]any{"name": "up__ask", "arguments": map[string]any{}, "task": map[string]any{}})
	if e != nil {
		t.Fatal(e)
	}
	ask := taskOf(t, res)["taskId"].(string)
	waitTaskStatus(t, alice, ask, "input_required")
	waitNote(t, alice, ask, "input_required")
	pending = alice.start("tasks/result", map[string]any{"taskId": ask})
	select {
	case req := <-alice.requests:
		var p map[string]any
		_ = json.Unmarshal(req.Params, &p)
		if req.Method != "elicitation/create" || p["message"] != "Your name?" || relatedTask(p) != ask {
			t.Fatalf("question: %s %v", req.Method, p)
		}
		alice.send(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": map[string]any{"action": "accept", "content": map[string]any{"name": "Ann"}}})
	case <-time.After(10 * time.Second):
		t.Fatal("the question never reached the client")
	}
	out, e = waitRPC(t, pending)
	if e != nil || taskText(out) != "hello Ann" {
		t.Fatalf("tasks/result after the answer: %v %v", out, e)
	}

	// tasks/cancel answers with the cancelled task; a final task cannot be cancelled.
	res, e = alice.call("tools/call", map[string]any{"name": "up__ask", "arguments": map[string]any{}, "task": map[string]any{}})
	if e != nil {
		t.Fatal(e)
	}
	cancelled := taskOf(t, res)["taskId"].(string)
	got, e = alice.call("tasks/cancel", map[string]any{"taskId": cancelled})
	if e != nil || got["status"] != "cancelled" || got["taskId"] != cancelled {
		t.Fatalf("tasks/cancel: %v %v", got, e)
	}
	if _, e := alice.call("tasks/cancel", map[string]any{"taskId": cancelled}); e == nil || e.Code != -32602 {
		t.Fatalf("cancel a cancelled task: %v", e)
	}
	if _, e := alice.call("tasks/result", map[string]any{"taskId": cancelled}); e == nil {
		t.Fatal("tasks/result of a cancelled task has no error")
	}
	if _, e := alice.call("tasks/get", map[string]any{"taskId": "nope"}); e == nil || e.Code != -32602 {
		t.Fatalf("unknown task: %v", e)
	}
}

// waitNote waits for notifications/tasks/status of the task with the status.
func waitNote(t *testing.T, c *taskLineClient, id, status string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case n := <-c.notes:
			if n.Method == "notifications/progress" && strings.Contains(string(n.Params), "symbi") {
				t.Fatalf("a marker progress notification leaked: %s", n.Params)
			}
			var p map[string]any
			_ = json.Unmarshal(n.Params, &p)
			if n.Method == "notifications/tasks/status" && p["taskId"] == id && p["status"] == status {
				if p["createdAt"] == nil || p["lastUpdatedAt"] == nil {
					t.Fatalf("status notification: %v", p)
				}
				return
			}
		case <-deadline:
			t.Fatalf("no notifications/tasks/status %s for %s", status, id)
		}
	}
}

// TestTaskInputTimeout: a task that waits for input longer than input_timeout fails with
// the reason, and its upstream call is cancelled; the periodic sweep then deletes it
// from the store once its TTL has passed, while the gateway runs.
func TestTaskInputTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	g, ts, ctx := legacyTaskGateway(t, release, gateway.Options{TaskInputTimeout: 200 * time.Millisecond, TaskSweepInterval: 20 * time.Millisecond})
	alice, _ := serveTaskLineClient(t, ctx, g, "alice")
	res, e := alice.call("tools/call", map[string]any{"name": "up__ask", "arguments": map[string]any{}, "task": map[string]any{"ttl": 1500}})
	if e != nil {
		t.Fatal(e)
	}
	id := taskOf(t, res)["taskId"].(string)
	waitTaskStatus(t, alice, id, "input_required")
	failed := waitTaskStatus(t, alice, id, "failed")
	if msg, _ := failed["statusMessage"].(string); !strings.Contains(msg, "no input arrived within 200ms") || !strings.Contains(msg, "cancelled") {
		t.Fatalf("statusMessage: %q", msg)
	}
	if _, e := alice.call("tasks/result", map[string]any{"taskId": id}); e == nil || !strings.Contains(e.Message, "no input arrived") {
		t.Fatalf("tasks/result: %v", e)
	}
	if _, ok, err := ts.LoadTask(ctx, id); err != nil || !ok {
		t.Fatalf("the failed task is not stored: %v %v", ok, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, ok, err := ts.LoadTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the expired task is still stored")
		}
	}
	if _, e := alice.call("tasks/get", map[string]any{"taskId": id}); e == nil || e.Code != -32602 {
		t.Fatalf("expired task: %v", e)
	}
}
