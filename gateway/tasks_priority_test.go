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
	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
)

// priorityPolicy gives a call the priority named in its "prio" argument; "urgent" is not
// a level, so a decision carrying it is malformed and denies.
const priorityPolicy = `package symbi.authz
default decision := {"allow": true}
decision := {"allow": true, "conditions": [{"type": "priority", "level": input.arguments.prio}]} if input.arguments.prio
`

// TestTaskPriorityFromPolicy: a policy priority condition sets the priority a task tool's
// call waits at in the scheduler: with the only running slot taken, a critical call runs
// before a normal one queued earlier, and a low one last; the audit record carries the
// level. A condition with an unknown level denies the call (fail closed) and nothing is
// queued.
func TestTaskPriorityFromPolicy(t *testing.T) {
	started := make(chan string, 16)
	release := make(chan struct{})
	srv := func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "gated-upstream", Version: "1"}, nil)
		s.AddTool(&mcp.Tool{Name: "work", InputSchema: map[string]any{"type": "object"}},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				started <- string(req.Params.Arguments)
				select {
				case <-release:
				case <-ctx.Done():
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil
			})
		return s
	}
	eng, err := policy.Compile(context.Background(), policy.Bundle{Modules: []policy.Module{{Name: "p.rego", Source: priorityPolicy}}})
	if err != nil {
		t.Fatal(err)
	}
	sched := agents.NewScheduler(&agents.Options{MaxRunning: 1, MaxQueued: 10})
	ctx, cancel := context.WithCancel(context.Background())
	g := gateway.New(&gateway.Options{
		Upstreams:   []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(srv), TaskTools: []string{"*"}}},
		InitialWait: 10 * time.Second, TaskWindow: 20 * time.Millisecond,
	})
	g.UsePolicy(gateway.PolicyOptions{Engine: eng})
	trail, err := audit.Open(&audit.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = trail.Close() })
	g.UseAudit(gateway.AuditOptions{Log: trail})
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

	call := func(n int, prio string) (map[string]any, error) {
		args := map[string]any{"n": n}
		if prio != "" {
			args["prio"] = prio
		}
		return c.call("tools/call", "up__work", map[string]any{"name": "up__work", "arguments": args}, true)
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
	if _, err := call(1, ""); err != nil {
		t.Fatal(err)
	}
	if got := nextStart(); got != `{"n":1}` {
		t.Fatalf("first call: started %s", got)
	}
	for _, q := range []struct {
		n    int
		prio string
	}{{2, "low"}, {3, ""}, {4, "critical"}} {
		res, err := call(q.n, q.prio)
		if err != nil {
			t.Fatal(err)
		}
		if res["resultType"] != "task" {
			t.Fatalf("call %d: want a task, got %v", q.n, res)
		}
	}
	st := sched.Stats()
	if want := map[string]int{"low": 1, "normal": 1, "high": 0, "critical": 1}; fmt.Sprint(st.ByPriority) != fmt.Sprint(want) {
		t.Errorf("queued by priority %v, want %v", st.ByPriority, want)
	}

	// An unknown level: the decision is malformed, the call denied, nothing queued.
	if _, err := call(5, "urgent"); err == nil || !strings.Contains(err.Error(), "denied") {
		t.Errorf("call with level urgent: want a denial, got %v", err)
	}
	if q := sched.Stats().Queued; q != 3 {
		t.Errorf("after the denied call: queued %d, want 3", q)
	}

	for _, want := range []string{`"n":4`, `"n":3`, `"n":2`} {
		release <- struct{}{}
		if got := nextStart(); !strings.Contains(got, want) {
			t.Fatalf("started %s, want the call with %s", got, want)
		}
	}
	if err := trail.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	levels := map[string]bool{}
	for _, r := range trail.Recent(100) {
		for _, cd := range r.Event.Conditions {
			if cd.Type == policy.CondPriority {
				levels[cd.Level] = true
			}
		}
	}
	for _, l := range []string{"low", "critical"} {
		if !levels[l] {
			t.Errorf("no audit record carries the priority condition with level %s (got %v)", l, levels)
		}
	}
}
