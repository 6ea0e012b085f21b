package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/gateway"
)

// TestTasksWaitInScheduler: with the runtime's scheduler, a task tool's calls beyond
// max_running wait in its queue as working tasks and run in the order they came; a queued
// task cancelled with tasks/cancel leaves the queue and never reaches the upstream; beyond
// max_queued a call is refused with the scheduler's retryable error.
func TestTasksWaitInScheduler(t *testing.T) {
	started := make(chan string, 16)
	release := make(chan struct{})
	srv := func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "gated-upstream", Version: "1"}, nil)
		s.AddTool(&mcp.Tool{Name: "work", InputSchema: map[string]any{"type": "object"}},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				n := string(req.Params.Arguments)
				started <- n
				select {
				case <-release:
				case <-ctx.Done():
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done " + n}}}, nil
			})
		return s
	}
	sched := agents.NewScheduler(&agents.Options{MaxRunning: 1, MaxQueued: 3})
	ctx, cancel := context.WithCancel(context.Background())
	g := gateway.New(&gateway.Options{
		Upstreams:   []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(srv), TaskTools: []string{"*"}}},
		InitialWait: 10 * time.Second, TaskWindow: 20 * time.Millisecond,
	})
	g.UseTaskScheduler(sched)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	t.Cleanup(func() {
		close(release)
		cancel()
		_ = g.Close()
		wg.Wait()
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := sched.Close(cctx); err != nil {
			t.Error(err)
		}
	})
	g.WaitReady(ctx)
	hs := httptest.NewServer(g.Handler(nil))
	t.Cleanup(hs.Close)
	c := &rawCaller{url: hs.URL + "/mcp", hc: &http.Client{}}

	call := func(n int) (string, error) {
		res, err := c.call("tools/call", "up__work", map[string]any{"name": "up__work", "arguments": map[string]any{"n": n}}, true)
		if err != nil {
			return "", err
		}
		id, _ := res["taskId"].(string)
		if res["resultType"] != "task" || id == "" {
			return "", fmt.Errorf("call %d: want a task, got %v", n, res)
		}
		return id, nil
	}
	get := func(id string) map[string]any {
		t.Helper()
		res, err := c.call("tasks/get", id, map[string]any{"taskId": id}, true)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	waitStatus := func(id, want string) map[string]any {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			res := get(id)
			if res["status"] == want {
				return res
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: want %s, got %v", id, want, res)
			}
		}
	}
	nextStart := func() string {
		t.Helper()
		select {
		case n := <-started:
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("no call reached the upstream")
			return ""
		}
	}

	ids := map[int]string{}
	for n := 1; n <= 4; n++ {
		id, err := call(n)
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = id
		if n == 1 && nextStart() != `{"n":1}` {
			t.Fatal("the first call is not the one running")
		}
	}
	if st := sched.Stats(); st.Running != 1 || st.Queued != 3 {
		t.Fatalf("scheduler: running %d queued %d, want 1 and 3", st.Running, st.Queued)
	}
	for n := 2; n <= 4; n++ {
		if s := get(ids[n])["status"]; s != gateway.TaskWorking {
			t.Errorf("queued task %d: status %v, want working", n, s)
		}
	}
	// Beyond max_queued: the scheduler's retryable refusal.
	if _, err := call(5); err == nil || !strings.Contains(err.Error(), "queue is full") {
		t.Errorf("fifth call: want the scheduler's queue-full refusal, got %v", err)
	}
	// Cancel the queued fourth task: it leaves the queue.
	if _, err := c.call("tasks/cancel", ids[4], map[string]any{"taskId": ids[4]}, true); err != nil {
		t.Fatal(err)
	}
	waitStatus(ids[4], gateway.TaskCancelled)
	if st := sched.Stats(); st.Queued != 2 {
		t.Errorf("after cancel: queued %d, want 2", st.Queued)
	}
	select {
	case n := <-started:
		t.Fatalf("call %s started while the first one holds the only running slot", n)
	default:
	}
	// Release one call at a time: the queued ones run in order.
	for n := 1; n <= 3; n++ {
		release <- struct{}{}
		res := waitStatus(ids[n], gateway.TaskCompleted)
		if text := fmt.Sprint(res["result"]); !strings.Contains(text, fmt.Sprintf(`done {"n":%d}`, n)) {
			t.Errorf("task %d: result %s", n, text)
		}
		if n < 3 {
			if got, want := nextStart(), fmt.Sprintf(`{"n":%d}`, n+1); got != want {
				t.Fatalf("after task %d: started %s, want %s", n, got, want)
			}
		}
	}
	select {
	case n := <-started:
		t.Errorf("call %s reached the upstream; the cancelled task must not", n)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestTaskTimeoutFromStart: a queued task's upstream timeout counts from when its call
// starts, not from when it was queued: a call that waits longer than the timeout and
// then runs briefly completes.
func TestTaskTimeoutFromStart(t *testing.T) {
	srv := func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "timed-upstream", Version: "1"}, nil)
		s.AddTool(&mcp.Tool{Name: "hold", InputSchema: map[string]any{"type": "object"}},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				var a struct {
					MS int `json:"ms"`
				}
				if err := json.Unmarshal(req.Params.Arguments, &a); err != nil {
					return nil, err
				}
				select {
				case <-time.After(time.Duration(a.MS) * time.Millisecond):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("held %d", a.MS)}}}, nil
			})
		return s
	}
	sched := agents.NewScheduler(&agents.Options{MaxRunning: 1})
	ctx, cancel := context.WithCancel(context.Background())
	g := gateway.New(&gateway.Options{
		Upstreams: []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(srv), TaskTools: []string{"*"},
			Timeout: time.Second}},
		InitialWait: 10 * time.Second, TaskWindow: 20 * time.Millisecond,
	})
	g.UseTaskScheduler(sched)
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
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := sched.Close(cctx); err != nil {
			t.Error(err)
		}
	})
	g.WaitReady(ctx)
	hs := httptest.NewServer(g.Handler(nil))
	t.Cleanup(hs.Close)
	c := &rawCaller{url: hs.URL + "/mcp", hc: &http.Client{}}
	var ids []string
	for _, ms := range []int{900, 300} { // the second waits ~900 ms, then runs 300 ms: 1.2 s > 1 s
		res, err := c.call("tools/call", "up__hold", map[string]any{"name": "up__hold", "arguments": map[string]any{"ms": ms}}, true)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res["taskId"].(string)
		if id == "" {
			t.Fatalf("call of %d ms: want a task, got %v", ms, res)
		}
		ids = append(ids, id)
	}
	for i, id := range ids {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			res, err := c.call("tasks/get", id, map[string]any{"taskId": id}, true)
			if err != nil {
				t.Fatal(err)
			}
			if res["status"] == gateway.TaskCompleted {
				break
			}
			if res["status"] != gateway.TaskWorking || time.Now().After(deadline) {
				t.Fatalf("task %d: want completed, got %v", i, res)
			}
		}
	}
}
