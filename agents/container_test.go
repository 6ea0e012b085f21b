package agents_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/sandbox"
)

// sessions serves container agents' sessions from a real gateway.
type sessions struct{ g *gateway.Gateway }

func (s sessions) ServeAs(ctx context.Context, id string, r io.Reader, w io.Writer, c io.Closer) error {
	return s.g.ServeAs(ctx, gateway.Identity{ID: id, Kind: "agent"}, r, w, c)
}

// containerPolicy denies symbi__secret to agent:box.
const containerPolicy = `package symbi.authz
default decision := {"allow": true}
decision := {"allow": false, "reason": "box may not read secrets"} if {
	input.action == "tools/call"
	input.identity.id == "agent:box"
	input.tool.name == "symbi__secret"
}
`

type none struct{}
type pingOut struct {
	Pong bool `json:"pong"`
}

// TestContainerAgent runs the fixture agent (a static MCP client) as a container agent
// in the unisolated tier against a real gateway: its calls act as agent:box, are decided
// by the policy and audited with transport "container"; a denied call stops the
// container and suspends the agent with the policy's reason; the run's timeout is a
// limit that suspends it; terminate kills a running container.
func TestContainerAgent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agentclient")
	build := exec.Command("go", "build", "-o", bin, "./testdata/agentclient")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fixture: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := gateway.New(&gateway.Options{InitialWait: time.Second})
	var mu sync.Mutex
	calls := map[string]int{}
	for _, name := range []string{"ping", "secret"} {
		gateway.AddBuiltinTool(g, &mcp.Tool{Name: gateway.BuiltinPrefix + "__" + name},
			func(ctx context.Context, _ *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, pingOut, error) {
				mu.Lock()
				calls[name]++
				mu.Unlock()
				return nil, pingOut{Pong: true}, nil
			})
	}
	eng, err := policy.Compile(ctx, policy.Bundle{Modules: []policy.Module{{Name: "p.rego", Source: containerPolicy}}})
	if err != nil {
		t.Fatal(err)
	}
	g.UsePolicy(gateway.PolicyOptions{Engine: eng})
	trail, err := audit.Open(&audit.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	g.UseAudit(gateway.AuditOptions{Log: trail})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends at cancel
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	st, err := agents.OpenStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	sched := agents.NewScheduler(nil)
	sb := sandbox.New(nil)
	rt := agents.NewRuntime(agents.RuntimeOptions{Scheduler: sched, Store: st, Sandbox: sb, Sessions: sessions{g}})
	t.Cleanup(func() {
		_ = rt.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if err := sched.Close(cctx); err != nil {
			t.Error(err)
		}
		cancel()
		_ = g.Close()
		wg.Wait()
		_ = sb.Close()
		_ = trail.Close()
		if err := st.Flush(cctx); err != nil {
			t.Error(err)
		}
		_ = db.Close()
	})
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	def := func(name string, timeout time.Duration, args ...string) agents.Definition {
		return agents.Definition{Name: name, Kind: "container", Priority: agents.PriorityNormal, Timeout: timeout,
			Container: &agents.Container{Tier: sandbox.TierNone, Command: append([]string{bin}, args...)}}
	}
	if err := rt.Sync(ctx, []agents.Definition{
		def("box", 0, "symbi__ping", "symbi__secret", "symbi__ping"),
		def("fine", 0, "symbi__ping", "symbi__ping"),
		def("slow", 300*time.Millisecond, "symbi__ping", "sleep=30s"),
		def("long", 0, "sleep=30s"),
		def("crash", 0, "symbi__ping", "exit=7"),
	}); err != nil {
		t.Fatal(err)
	}
	lastRun := func(name string) (agents.Status, agents.RunRecord) {
		t.Helper()
		var s agents.Status
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			var err error
			if s, err = rt.Get(ctx, name, 1); err != nil {
				t.Fatal(err)
			}
			if len(s.Runs) == 1 && s.Active == 0 && s.Runs[0].State != agents.RunQueued && s.Runs[0].State != agents.RunRunning {
				return s, s.Runs[0]
			}
		}
		t.Fatalf("no finished run of %s: %+v", name, s)
		return s, agents.RunRecord{}
	}
	for _, name := range []string{"box", "fine", "slow", "crash"} {
		if _, err := rt.Run(ctx, name, "manual", "test"); err != nil {
			t.Fatal(err)
		}
	}

	s, run := lastRun("fine")
	if run.State != agents.RunSucceeded || run.Step != 2 || s.State != agents.StateReady {
		t.Errorf("fine: agent %s, run %+v; want ready after a succeeded run of 2 calls", s.State, run)
	}
	s, run = lastRun("box")
	if run.State != agents.RunSuspended || s.State != agents.StateSuspended ||
		run.Reason != "call of symbi__secret: denied by policy: box may not read secrets" || s.Reason != run.Reason {
		t.Errorf("box: agent %s (%q), run %+v; want suspended by the denial", s.State, s.Reason, run)
	}
	s, run = lastRun("slow")
	if run.State != agents.RunSuspended || s.State != agents.StateSuspended || !strings.Contains(run.Reason, "limit: run exceeded its timeout") {
		t.Errorf("slow: agent %s, run %+v; want suspended by its timeout", s.State, run)
	}
	s, run = lastRun("crash")
	if run.State != agents.RunFailed || s.State != agents.StateReady || !strings.Contains(run.Reason, "exited 7") {
		t.Errorf("crash: agent %s, run %+v; want a failed run (exit 7)", s.State, run)
	}

	// Terminate kills a running container.
	if _, err := rt.Run(ctx, "long", "manual", "test"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s, _ := rt.Get(ctx, "long", 0); s.State == agents.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("long never ran")
		}
	}
	time.Sleep(200 * time.Millisecond) // the container is up
	start := time.Now()
	if err := rt.Terminate(ctx, "long", "", "test"); err != nil {
		t.Fatal(err)
	}
	s, run = lastRun("long")
	if run.State != agents.RunCancelled || s.State != agents.StateTerminated || time.Since(start) > 15*time.Second {
		t.Errorf("long: agent %s, run %+v after %s; want terminated, run cancelled", s.State, run, time.Since(start))
	}

	mu.Lock()
	if calls["secret"] != 0 || calls["ping"] < 5 {
		t.Errorf("tool calls %v: want the denied secret never called, ping 5 times or more", calls)
	}
	mu.Unlock()
	if err := trail.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var box []string
	for _, r := range trail.Recent(1000) {
		ev := r.Event
		if ev.Type == audit.TypeCall && ev.Identity == "agent:box" {
			box = append(box, ev.Tool+" "+string(ev.Decision)+" "+ev.Transport+" "+ev.IdentityKind)
		}
	}
	want := []string{"symbi__ping allow container agent", "symbi__secret deny container agent"}
	if strings.Join(box, "|") != strings.Join(want, "|") {
		t.Errorf("audited calls of agent:box %q, want %q (the container stopped at the denial)", box, want)
	}
}
