package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
)

// TestTaskResultConditions: the policy's result conditions apply to a task's inlined
// result as they do to the synchronous call's.
func TestTaskResultConditions(t *testing.T) {
	srv := func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "secret-upstream", Version: "1"}, nil)
		s.AddTool(&mcp.Tool{Name: "slow_secret", InputSchema: map[string]any{"type": "object"}},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				time.Sleep(200 * time.Millisecond)
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "key=" + resultSecret}}}, nil
			})
		return s
	}
	for _, tt := range []struct {
		name   string
		conds  []policy.Condition
		secret bool
	}{
		{"no conditions", nil, true},
		{"redact_secrets", []policy.Condition{{Type: policy.CondRedactSecrets}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			g := gateway.New(&gateway.Options{
				Upstreams:   []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(srv), TaskTools: []string{"slow_*"}}},
				InitialWait: 10 * time.Second, TaskWindow: 20 * time.Millisecond,
			})
			g.UsePolicy(gateway.PolicyOptions{Engine: engineFunc(func(*policy.Input) policy.Decision {
				return policy.Decision{Allow: true, Conditions: tt.conds}
			})})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // owned: ends when ctx is cancelled at cleanup
				defer wg.Done()
				_ = g.Run(ctx)
			}()
			t.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait() })
			g.WaitReady(ctx)
			hs := httptest.NewServer(g.Handler(nil))
			t.Cleanup(hs.Close)
			c := &rawCaller{url: hs.URL + "/mcp", hc: &http.Client{}}

			res, err := c.call("tools/call", "up__slow_secret", map[string]any{"name": "up__slow_secret", "arguments": map[string]any{}}, true)
			if err != nil {
				t.Fatal(err)
			}
			id, _ := res["taskId"].(string)
			if id == "" {
				t.Fatalf("no task: %v", res)
			}
			deadline := time.Now().Add(10 * time.Second)
			for res["status"] != "completed" {
				if time.Now().After(deadline) {
					t.Fatalf("task did not complete: %v", res)
				}
				time.Sleep(20 * time.Millisecond)
				if res, err = c.call("tasks/get", id, map[string]any{"taskId": id}, true); err != nil {
					t.Fatal(err)
				}
			}
			text := fmt.Sprint(res["result"])
			if got := strings.Contains(text, resultSecret); got != tt.secret {
				t.Errorf("secret in the task's result = %v, want %v: %s", got, tt.secret, text)
			}
			if !strings.Contains(text, "key=AKIA") {
				t.Errorf("result lost its text: %s", text)
			}
		})
	}
}

// TestTasksPerIdentityBound: beyond MaxTasksPerIdentity unfinished tasks, a task tool's
// call is served synchronously; once a task ends, calls become tasks again.
func TestTasksPerIdentityBound(t *testing.T) {
	srv := func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "slow-upstream", Version: "1"}, nil)
		s.AddTool(&mcp.Tool{Name: "slow", InputSchema: map[string]any{"type": "object"}},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				select {
				case <-time.After(300 * time.Millisecond):
				case <-ctx.Done():
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "slow done"}}}, nil
			})
		return s
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := gateway.New(&gateway.Options{
		Upstreams:   []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(srv), TaskTools: []string{"*"}}},
		InitialWait: 10 * time.Second, TaskWindow: 20 * time.Millisecond, MaxTasksPerIdentity: 1,
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait() })
	g.WaitReady(ctx)
	hs := httptest.NewServer(g.Handler(nil))
	t.Cleanup(hs.Close)
	c := &rawCaller{url: hs.URL + "/mcp", hc: &http.Client{}}
	call := func() map[string]any {
		t.Helper()
		res, err := c.call("tools/call", "up__slow", map[string]any{"name": "up__slow", "arguments": map[string]any{}}, true)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := call()
	id, _ := first["taskId"].(string)
	if first["resultType"] != "task" || id == "" {
		t.Fatalf("first call: want a task, got %v", first)
	}
	if second := call(); second["resultType"] == "task" || !strings.Contains(fmt.Sprint(second["content"]), "slow done") {
		t.Fatalf("second call while the first task runs: want the synchronous result, got %v", second)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := c.call("tasks/get", id, map[string]any{"taskId": id}, true)
		if err != nil {
			t.Fatal(err)
		}
		if res["status"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first task did not complete: %v", res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The task's watcher releases its slot right after storing the outcome.
	for deadline := time.Now().Add(10 * time.Second); ; {
		third := call()
		if third["resultType"] == "task" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the first task ended: want a task again, got %v", third)
		}
	}
}
