package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// End-to-end tests of MCP tasks (io.modelcontextprotocol/tasks) that symbi adds in
// front of an upstream that knows nothing of tasks (test/servers/slowjobs), spoken on
// the 2026-07-28 stateless HTTP wire with two bearer tokens.

const (
	tasksAlice = "alice-token-0123456789abcdef"
	tasksBob   = "bob-token-0123456789abcdefgh"
)

// tasksConfig writes a configuration with alice's and bob's tokens and the slowjobs
// upstream (prefix "jobs") whose slow_compute runs as a task. It returns the file and
// the file where slowjobs records the notifications/cancelled it receives.
func tasksConfig(t *testing.T) (cfg, cancelLog string) {
	t.Helper()
	cancelLog = filepath.Join(t.TempDir(), "cancelled.jsonl")
	cfg = writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n", tasksAlice, tasksBob)+
		upstreamTOML("jobs", "jobs", bin(t, "slowjobs", "github.com/symbi-dev/symbi/test/servers/slowjobs"), "-log", cancelLog)+
		"task_tools = [\"slow_*\"]\n")
	return cfg, cancelLog
}

type taskRPCErr struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// taskRPC sends one 2026-07-28 request to s as the token's identity, declaring the tasks
// extension when tasks is set, and returns its result (or error).
func taskRPC(t *testing.T, s *served, token, method, name string, params map[string]any, tasks bool) (map[string]any, *taskRPCErr) {
	t.Helper()
	caps := map[string]any{}
	if tasks {
		caps["extensions"] = map[string]any{"io.modelcontextprotocol/tasks": map[string]any{}}
	}
	if params == nil {
		params = map[string]any{}
	}
	params["_meta"] = map[string]any{
		"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
		"io.modelcontextprotocol/clientCapabilities": caps,
		"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "tasks-test", "version": "1"},
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/mcp", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", method)
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var msg struct {
		Result map[string]any `json:"result"`
		Error  *taskRPCErr    `json:"error"`
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && strings.Contains(d, `"id"`) {
				if err := json.Unmarshal([]byte(d), &msg); err != nil {
					t.Fatalf("%s: %v: %s", method, err, d)
				}
			}
		}
	} else if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil {
		t.Fatalf("%s: HTTP %d: %v", method, resp.StatusCode, err)
	}
	if msg.Result == nil && msg.Error == nil {
		t.Fatalf("%s: HTTP %d: no result and no error", method, resp.StatusCode)
	}
	return msg.Result, msg.Error
}

// startTask calls jobs__slow_compute as alice and expects a task; it returns its id.
func startTask(t *testing.T, s *served, seconds int) string {
	t.Helper()
	res, e := taskRPC(t, s, tasksAlice, "tools/call", "jobs__slow_compute",
		map[string]any{"name": "jobs__slow_compute", "arguments": map[string]any{"seconds": seconds, "label": "e2e"}}, true)
	if e != nil {
		t.Fatalf("tools/call: %+v", e)
	}
	id, _ := res["taskId"].(string)
	if res["resultType"] != "task" || id == "" || res["status"] != "working" {
		t.Fatalf("want a CreateTaskResult, got %v", res)
	}
	return id
}

func getTask(t *testing.T, s *served, token, id string) (map[string]any, *taskRPCErr) {
	t.Helper()
	return taskRPC(t, s, token, "tasks/get", id, map[string]any{"taskId": id}, true)
}

// pollTask polls alice's task until its status is final.
func pollTask(t *testing.T, s *served, id string) map[string]any {
	t.Helper()
	var last map[string]any
	waitFor(t, 20*time.Second, "task "+id+" to end", func() bool {
		res, e := getTask(t, s, tasksAlice, id)
		if e != nil {
			t.Fatalf("tasks/get: %+v", e)
		}
		last = res
		st := res["status"]
		return st == "completed" || st == "failed" || st == "cancelled"
	})
	return last
}

func TestTasksLifecycle(t *testing.T) {
	cfg, cancelLog := tasksConfig(t)
	s := serve(t, cfg)

	// A plain client (no extension) gets the ordinary synchronous call.
	res, e := taskRPC(t, s, tasksAlice, "tools/call", "jobs__slow_compute",
		map[string]any{"name": "jobs__slow_compute", "arguments": map[string]any{"seconds": 1, "label": "sync"}}, false)
	if e != nil || res["taskId"] != nil || !strings.Contains(fmt.Sprint(res["content"]), "computed sync after 1s") {
		t.Fatalf("synchronous call: %v %+v", res, e)
	}
	// Without the extension, tasks/get is refused with -32021.
	if _, e := taskRPC(t, s, tasksAlice, "tasks/get", "x", map[string]any{"taskId": "x"}, false); e == nil || e.Code != -32021 {
		t.Fatalf("tasks/get without the extension: %+v", e)
	}

	// Created, polled to completion, the result inlined.
	id := startTask(t, s, 1)
	done := pollTask(t, s, id)
	result, _ := done["result"].(map[string]any)
	if done["status"] != "completed" || !strings.Contains(fmt.Sprint(result["content"]), "computed e2e after 1s") || done["error"] != nil {
		t.Fatalf("finished task: %v", done)
	}

	// Another identity cannot see it, nor cancel it: the id is unknown to bob.
	if _, e := getTask(t, s, tasksBob, id); e == nil || e.Code != -32602 {
		t.Fatalf("bob's tasks/get of alice's task: %+v", e)
	}
	running := startTask(t, s, 60)
	if _, e := taskRPC(t, s, tasksBob, "tasks/cancel", running, map[string]any{"taskId": running}, true); e == nil || e.Code != -32602 {
		t.Fatalf("bob's tasks/cancel of alice's task: %+v", e)
	}
	if res, _ := getTask(t, s, tasksAlice, running); res["status"] != "working" {
		t.Fatalf("after bob's cancel alice's task is %v", res["status"])
	}

	// Alice's cancellation is acknowledged, reaches the upstream, and the task ends
	// cancelled.
	ack, e := taskRPC(t, s, tasksAlice, "tasks/cancel", running, map[string]any{"taskId": running}, true)
	if e != nil || ack["resultType"] != "complete" || ack["taskId"] != nil {
		t.Fatalf("cancel ack: %v %+v", ack, e)
	}
	if st := pollTask(t, s, running)["status"]; st != "cancelled" {
		t.Fatalf("cancelled task ended %v", st)
	}
	waitFor(t, 10*time.Second, "the upstream to receive notifications/cancelled", func() bool {
		b, _ := os.ReadFile(cancelLog)
		return bytes.Contains(b, []byte("requestId"))
	})

	// Every state change is in the audit trail, with the identity.
	waitFor(t, 10*time.Second, "the tasks' lifecycle in the audit trail", func() bool {
		out, _, _ := runCLI(t, "audit", "query", "--dir", filepath.Join(dataDirOf(cfg), "audit"), "--type", "task", "--format", "json")
		for _, want := range []string{`"task/created"`, `"task/completed"`, `"task/cancel_requested"`, `"task/cancelled"`, id, running, `"alice"`} {
			if !strings.Contains(out, want) {
				return false
			}
		}
		return true
	})
}

func TestTasksSurviveRestart(t *testing.T) {
	cfg, _ := tasksConfig(t)
	s := serve(t, cfg)
	finished := startTask(t, s, 1)
	if st := pollTask(t, s, finished)["status"]; st != "completed" {
		t.Fatalf("task ended %v", st)
	}
	running := startTask(t, s, 60)

	// Stop symbi while the second task runs, then start it again on the same data_dir.
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.done:
		s.done <- err // the cleanup waits on it too
	case <-time.After(20 * time.Second):
		t.Fatal("symbi did not stop")
	}
	s2 := serve(t, cfg)

	res, e := getTask(t, s2, tasksAlice, finished)
	if e != nil || res["status"] != "completed" || !strings.Contains(fmt.Sprint(res["result"]), "computed e2e after 1s") {
		t.Fatalf("finished task after a restart: %v %+v", res, e)
	}
	res, e = getTask(t, s2, tasksAlice, running)
	errObj, _ := res["error"].(map[string]any)
	if e != nil || res["status"] != "failed" || !strings.Contains(fmt.Sprint(errObj["message"]), "symbi stopped while the task was running") {
		t.Fatalf("running task after a restart: %v %+v", res, e)
	}
	if _, e := getTask(t, s2, tasksBob, finished); e == nil || e.Code != -32602 {
		t.Fatalf("bob's tasks/get after a restart: %+v", e)
	}
}
