package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// End-to-end tests of the experimental tasks of protocol revision 2025-11-25, spoken by
// a raw JSON-RPC client over streamable HTTP (a session per identity) and over stdio
// (`symbi mcp`), in front of test/servers/slowjobs, which knows nothing of tasks.

type rpc2025 struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *taskRPCErr     `json:"error,omitempty"`
}

func (m rpc2025) result(t *testing.T) map[string]any {
	t.Helper()
	var r map[string]any
	if err := json.Unmarshal(m.Result, &r); err != nil {
		t.Fatalf("result: %v: %s", err, m.Result)
	}
	return r
}

// httpSession2025 is a 2025-11-25 streamable HTTP session as one identity.
type httpSession2025 struct {
	t       *testing.T
	url     string
	token   string
	session string
	id      int
}

func (s *httpSession2025) post(msg any) *http.Response {
	s.t.Helper()
	body, _ := json.Marshal(msg)
	req, _ := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+s.token)
	if s.session != "" {
		req.Header.Set("Mcp-Session-Id", s.session)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp
}

// call sends a request and returns its response; a request the server sends on the
// response's stream meanwhile is answered with answer's result.
func (s *httpSession2025) call(method string, params any, answer func(req rpc2025) any) rpc2025 {
	s.t.Helper()
	s.id++
	id := s.id
	resp := s.post(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	defer resp.Body.Close()
	if s.session == "" {
		s.session = resp.Header.Get("Mcp-Session-Id")
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		var m rpc2025
		if err := json.Unmarshal(b, &m); err != nil {
			s.t.Fatalf("%s: HTTP %d: %v: %s", method, resp.StatusCode, err, b)
		}
		return m
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data:")
		if d = strings.TrimSpace(d); !ok || d == "" { // an empty event primes the stream
			continue
		}
		var m rpc2025
		if err := json.Unmarshal([]byte(d), &m); err != nil {
			s.t.Fatalf("%s: %v: %s", method, err, d)
		}
		switch {
		case m.Method != "" && len(m.ID) > 0:
			if answer == nil {
				s.t.Fatalf("%s: unexpected request %s", method, d)
			}
			r := s.post(map[string]any{"jsonrpc": "2.0", "id": m.ID, "result": answer(m)})
			r.Body.Close()
		case m.Method == "" && string(m.ID) == fmt.Sprint(id):
			return m
		}
	}
	s.t.Fatalf("%s: the stream ended without a response", method)
	return rpc2025{}
}

func newSession2025(t *testing.T, s *served, token string) (*httpSession2025, map[string]any) {
	t.Helper()
	hs := &httpSession2025{t: t, url: "http://" + s.addr + "/mcp", token: token}
	init := hs.call("initialize", init2025, nil)
	if init.Error != nil || hs.session == "" || len(init.Result) == 0 {
		t.Fatalf("initialize: %+v session %q %+v", init.Error, hs.session, init)
	}
	resp := hs.post(map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})
	resp.Body.Close()
	return hs, init.result(t)
}

var init2025 = map[string]any{"protocolVersion": "2025-11-25",
	"capabilities": map[string]any{"elicitation": map[string]any{}, "tasks": map[string]any{"list": map[string]any{}, "cancel": map[string]any{}}},
	"clientInfo":   map[string]any{"name": "tasks-2025-e2e", "version": "1"}}

func tasks2025Config(t *testing.T) (cfg, cancelLog string) {
	t.Helper()
	cancelLog = filepath.Join(t.TempDir(), "cancelled.jsonl")
	cfg = writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n", tasksAlice, tasksBob)+
		upstreamTOML("jobs", "jobs", bin(t, "slowjobs", "github.com/symbi-dev/symbi/test/servers/slowjobs"), "-log", cancelLog)+
		"task_tools = [\"slow_*\", \"confirm_delete\", \"failing_job\"]\n")
	return cfg, cancelLog
}

func created2025(t *testing.T, m rpc2025) string {
	t.Helper()
	if m.Error != nil {
		t.Fatalf("tools/call: %+v", m.Error)
	}
	task, _ := m.result(t)["task"].(map[string]any)
	id, _ := task["taskId"].(string)
	if id == "" || task["status"] != "working" || task["createdAt"] == nil || task["lastUpdatedAt"] == nil || task["pollInterval"] == nil {
		t.Fatalf("want a CreateTaskResult, got %s", m.Result)
	}
	return id
}

func contentText(r map[string]any) string {
	content, _ := r["content"].([]any)
	var parts []string
	for _, c := range content {
		if m, ok := c.(map[string]any); ok {
			parts = append(parts, fmt.Sprint(m["text"]))
		}
	}
	return strings.Join(parts, "\n")
}

func relatedTaskID(r map[string]any) any {
	meta, _ := r["_meta"].(map[string]any)
	rt, _ := meta["io.modelcontextprotocol/related-task"].(map[string]any)
	return rt["taskId"]
}

func TestTasks2025HTTP(t *testing.T) {
	cfg, cancelLog := tasks2025Config(t)
	s := serve(t, cfg)
	alice, init := newSession2025(t, s, tasksAlice)
	bob, _ := newSession2025(t, s, tasksBob)

	caps, _ := init["capabilities"].(map[string]any)
	tc, _ := caps["tasks"].(map[string]any)
	req, _ := tc["requests"].(map[string]any)
	tools, _ := req["tools"].(map[string]any)
	if tc["list"] == nil || tc["cancel"] == nil || tools["call"] == nil {
		t.Fatalf("capabilities: %v", caps)
	}
	support := map[string]any{}
	for _, raw := range alice.call("tools/list", map[string]any{}, nil).result(t)["tools"].([]any) {
		tool := raw.(map[string]any)
		ex, _ := tool["execution"].(map[string]any)
		support[tool["name"].(string)] = ex["taskSupport"]
	}
	if support["jobs__slow_compute"] != "optional" || support["jobs__confirm_delete"] != "optional" || support["jobs__greet"] != nil {
		t.Fatalf("taskSupport: %v", support)
	}
	if m := alice.call("tools/call", map[string]any{"name": "jobs__greet", "arguments": map[string]any{"name": "x"}, "task": map[string]any{}}, nil); m.Error == nil || m.Error.Code != -32601 {
		t.Fatalf("task on a forbidden tool: %+v", m)
	}

	// A task, seen only by its owner, whose result tasks/result waits for.
	id := created2025(t, alice.call("tools/call", map[string]any{"name": "jobs__slow_compute",
		"arguments": map[string]any{"seconds": 1, "label": "e2e"}, "task": map[string]any{"ttl": 600000}}, nil))
	if got := alice.call("tasks/get", map[string]any{"taskId": id}, nil).result(t); got["status"] != "working" || got["ttl"] != float64(600000) {
		t.Fatalf("tasks/get: %v", got)
	}
	for _, m := range []string{"tasks/get", "tasks/result", "tasks/cancel"} {
		if r := bob.call(m, map[string]any{"taskId": id}, nil); r.Error == nil || r.Error.Code != -32602 {
			t.Fatalf("bob's %s of alice's task: %+v", m, r)
		}
	}
	if l := bob.call("tasks/list", map[string]any{}, nil).result(t); len(l["tasks"].([]any)) != 0 {
		t.Fatalf("bob's tasks/list: %v", l)
	}
	if l := alice.call("tasks/list", map[string]any{}, nil).result(t); len(l["tasks"].([]any)) != 1 || l["tasks"].([]any)[0].(map[string]any)["taskId"] != id {
		t.Fatalf("alice's tasks/list: %v", l)
	}
	out := alice.call("tasks/result", map[string]any{"taskId": id}, nil)
	if r := out.result(t); !strings.Contains(contentText(r), "computed e2e after 1s") || relatedTaskID(r) != id {
		t.Fatalf("tasks/result: %s", out.Result)
	}
	if got := alice.call("tasks/get", map[string]any{"taskId": id}, nil).result(t); got["status"] != "completed" {
		t.Fatalf("finished: %v", got)
	}

	// The upstream's question is put on tasks/result's stream, marked with the task.
	ask := created2025(t, alice.call("tools/call", map[string]any{"name": "jobs__confirm_delete",
		"arguments": map[string]any{"filename": "x.txt"}, "task": map[string]any{}}, nil))
	waitFor(t, 20*time.Second, "the task to wait for input", func() bool {
		return alice.call("tasks/get", map[string]any{"taskId": ask}, nil).result(t)["status"] == "input_required"
	})
	asked := false
	out = alice.call("tasks/result", map[string]any{"taskId": ask}, func(req rpc2025) any {
		var p map[string]any
		_ = json.Unmarshal(req.Params, &p)
		if req.Method != "elicitation/create" || p["message"] != "Delete x.txt?" || relatedTaskID(p) != ask {
			t.Errorf("question: %s %v", req.Method, p)
		}
		asked = true
		return map[string]any{"action": "accept", "content": map[string]any{"confirm": true}}
	})
	if r := out.result(t); !asked || contentText(r) != "deleted x.txt" {
		t.Fatalf("tasks/result after the answer: asked %v %s", asked, out.Result)
	}

	// A tool error fails the task; tasks/result still returns it.
	fail := created2025(t, alice.call("tools/call", map[string]any{"name": "jobs__failing_job", "arguments": map[string]any{}, "task": map[string]any{}}, nil))
	if r := alice.call("tasks/result", map[string]any{"taskId": fail}, nil).result(t); r["isError"] != true {
		t.Fatalf("failing job's result: %v", r)
	}
	if got := alice.call("tasks/get", map[string]any{"taskId": fail}, nil).result(t); got["status"] != "failed" {
		t.Fatalf("failing job: %v", got)
	}

	// Cancellation answers with the cancelled task and reaches the upstream.
	running := created2025(t, alice.call("tools/call", map[string]any{"name": "jobs__slow_compute",
		"arguments": map[string]any{"seconds": 60, "label": "long"}, "task": map[string]any{}}, nil))
	if got := alice.call("tasks/cancel", map[string]any{"taskId": running}, nil).result(t); got["status"] != "cancelled" || got["taskId"] != running {
		t.Fatalf("tasks/cancel: %v", got)
	}
	if r := alice.call("tasks/cancel", map[string]any{"taskId": running}, nil); r.Error == nil || r.Error.Code != -32602 {
		t.Fatalf("cancel a cancelled task: %+v", r)
	}
	waitFor(t, 10*time.Second, "the upstream to receive notifications/cancelled", func() bool {
		b, _ := os.ReadFile(cancelLog)
		return bytes.Contains(b, []byte("requestId"))
	})
	waitFor(t, 10*time.Second, "the tasks' lifecycle in the audit trail", func() bool {
		out, _, _ := runCLI(t, "audit", "query", "--dir", filepath.Join(dataDirOf(cfg), "audit"), "--type", "task", "--format", "json")
		for _, want := range []string{`"task/created"`, `"task/input_required"`, `"task/completed"`, `"task/cancelled"`, id, ask, running, `"alice"`} {
			if !strings.Contains(out, want) {
				return false
			}
		}
		return true
	})

	// After a restart, a finished task is still readable, with its result; one that was
	// running has failed.
	still := created2025(t, alice.call("tools/call", map[string]any{"name": "jobs__slow_compute",
		"arguments": map[string]any{"seconds": 60, "label": "cut"}, "task": map[string]any{}}, nil))
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.done:
		s.done <- err // the cleanup waits on it too
	case <-time.After(20 * time.Second):
		t.Fatal("symbi did not stop")
	}
	s2 := serve(t, cfg)
	alice2, _ := newSession2025(t, s2, tasksAlice)
	if r := alice2.call("tasks/result", map[string]any{"taskId": id}, nil).result(t); !strings.Contains(contentText(r), "computed e2e after 1s") {
		t.Fatalf("tasks/result after a restart: %v", r)
	}
	got := alice2.call("tasks/get", map[string]any{"taskId": still}, nil).result(t)
	if got["status"] != "failed" || !strings.Contains(fmt.Sprint(got["statusMessage"]), "symbi stopped while the task was running") {
		t.Fatalf("running task after a restart: %v", got)
	}
	bob2, _ := newSession2025(t, s2, tasksBob)
	if r := bob2.call("tasks/get", map[string]any{"taskId": id}, nil); r.Error == nil || r.Error.Code != -32602 {
		t.Fatalf("bob after a restart: %+v", r)
	}
}

// stdio2025 is `symbi mcp` spoken to as a 2025-11-25 client.
type stdio2025 struct {
	t   *testing.T
	in  io.Writer
	mu  sync.Mutex
	id  int
	res map[string]chan rpc2025
	req chan rpc2025
	not chan rpc2025
}

func startStdio2025(t *testing.T, cfg string) *stdio2025 {
	t.Helper()
	cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &stdio2025{t: t, in: stdin, res: map[string]chan rpc2025{}, req: make(chan rpc2025, 8), not: make(chan rpc2025, 256)}
	done := make(chan struct{})
	go func() { // ends when symbi's stdout closes
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m rpc2025
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			switch {
			case m.Method != "" && len(m.ID) > 0:
				c.req <- m
			case m.Method != "":
				select {
				case c.not <- m:
				default:
				}
			default:
				c.mu.Lock()
				ch := c.res[string(m.ID)]
				c.mu.Unlock()
				if ch != nil {
					ch <- m
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("symbi mcp stderr:\n%s", stderr.String())
		}
	})
	if m := c.call("initialize", init2025); m.Error != nil {
		t.Fatalf("initialize: %+v", m.Error)
	}
	c.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})
	return c
}

func (c *stdio2025) send(msg any) {
	b, _ := json.Marshal(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		c.t.Errorf("write: %v", err)
	}
}

func (c *stdio2025) start(method string, params any) <-chan rpc2025 {
	ch := make(chan rpc2025, 1)
	c.mu.Lock()
	c.id++
	id := c.id
	c.res[fmt.Sprint(id)] = ch
	c.mu.Unlock()
	c.send(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	return ch
}

func waitRPC2025(t *testing.T, ch <-chan rpc2025) rpc2025 {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(60 * time.Second):
		t.Fatal("no response")
		return rpc2025{}
	}
}

func (c *stdio2025) call(method string, params any) rpc2025 {
	c.t.Helper()
	return waitRPC2025(c.t, c.start(method, params))
}

// statusNote waits for notifications/tasks/status of the task with the status.
func (c *stdio2025) statusNote(id, status string) {
	c.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case n := <-c.not:
			var p map[string]any
			_ = json.Unmarshal(n.Params, &p)
			if n.Method == "notifications/tasks/status" && p["taskId"] == id && p["status"] == status {
				return
			}
		case <-deadline:
			c.t.Fatalf("no notifications/tasks/status %s for %s", status, id)
		}
	}
}

func TestTasks2025Stdio(t *testing.T) {
	cfg, _ := tasks2025Config(t)
	c := startStdio2025(t, cfg)

	id := created2025(t, c.call("tools/call", map[string]any{"name": "jobs__slow_compute",
		"arguments": map[string]any{"seconds": 1, "label": "stdio"}, "task": map[string]any{}}))
	c.statusNote(id, "completed")
	out := c.call("tasks/result", map[string]any{"taskId": id})
	if r := out.result(t); !strings.Contains(contentText(r), "computed stdio after 1s") || relatedTaskID(r) != id {
		t.Fatalf("tasks/result: %s %+v", out.Result, out.Error)
	}
	if l := c.call("tasks/list", map[string]any{}).result(t); len(l["tasks"].([]any)) != 1 {
		t.Fatalf("tasks/list: %v", l)
	}

	ask := created2025(t, c.call("tools/call", map[string]any{"name": "jobs__confirm_delete",
		"arguments": map[string]any{"filename": "y.txt"}, "task": map[string]any{}}))
	c.statusNote(ask, "input_required")
	pending := c.start("tasks/result", map[string]any{"taskId": ask})
	select {
	case req := <-c.req:
		var p map[string]any
		_ = json.Unmarshal(req.Params, &p)
		if req.Method != "elicitation/create" || relatedTaskID(p) != ask {
			t.Fatalf("question: %s %v", req.Method, p)
		}
		c.send(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": map[string]any{"action": "decline"}})
	case <-time.After(30 * time.Second):
		t.Fatal("the question never came")
	}
	c.statusNote(ask, "working")
	if r := waitRPC2025(t, pending).result(t); contentText(r) != "kept y.txt" {
		t.Fatalf("tasks/result after declining: %v", r)
	}
	c.statusNote(ask, "completed")
}
