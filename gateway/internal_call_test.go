package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
)

// denyAgent is a policy that records what it is asked and denies tools/call to the
// identity "agent:bad".
type denyAgent struct {
	mu   sync.Mutex
	seen []policy.Identity
}

func (e *denyAgent) Decide(_ context.Context, in *policy.Input) (policy.Decision, error) {
	if in.Action != policy.ActionToolsCall {
		return policy.Decision{Allow: true}, nil
	}
	e.mu.Lock()
	e.seen = append(e.seen, in.Identity)
	e.mu.Unlock()
	if in.Identity.ID == "agent:bad" {
		return policy.Decision{Allow: false, Reason: "agents may not call this"}, nil
	}
	return policy.Decision{Allow: true}, nil
}

func TestCallTool(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := gateway.New(&gateway.Options{
		Upstreams:   []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: pipeLauncher}},
		InitialWait: 10 * time.Second,
	})
	eng := &denyAgent{}
	g.UsePolicy(gateway.PolicyOptions{Engine: eng})
	trail, err := audit.Open(&audit.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()
	g.UseAudit(gateway.AuditOptions{Log: trail})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends at cancel
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	defer func() { cancel(); _ = g.Close(); wg.Wait() }()
	g.WaitReady(ctx)

	agent := gateway.Identity{ID: "agent:a", Kind: "agent"}
	res, err := g.CallTool(ctx, agent, "up__echo", json.RawMessage(`{"message":"hi"}`))
	if err != nil {
		t.Fatalf("CallTool: %v", err)
	}
	if res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "echo: hi" {
		t.Errorf("CallTool result %+v", res)
	}

	_, err = g.CallTool(ctx, gateway.Identity{ID: "agent:bad", Kind: "agent"}, "up__echo", json.RawMessage(`{"message":"hi"}`))
	var ge *gateway.Error
	if !errors.As(err, &ge) || ge.Kind != gateway.Denied || ge.Public != "denied by policy: agents may not call this" {
		t.Errorf("denied CallTool: %v, want a Denied error with the policy's reason", err)
	}

	_, err = g.CallTool(ctx, agent, "up__nope", nil)
	if !errors.As(err, &ge) || ge.Kind != gateway.Invalid {
		t.Errorf("CallTool of an unknown tool: %v, want Invalid", err)
	}

	// A built-in tool; the internal session is not a client session.
	res, err = g.CallTool(ctx, agent, "symbi__status", nil)
	if err != nil || res.IsError {
		t.Fatalf("CallTool(symbi__status) = %+v, %v", res, err)
	}
	var st struct {
		Sessions int `json:"sessions"`
	}
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &st); err != nil || st.Sessions != 0 {
		t.Errorf("symbi__status sessions = %d (%v), want 0", st.Sessions, err)
	}

	if _, err := g.CallTool(ctx, gateway.Identity{}, "up__echo", nil); !errors.As(err, &ge) || ge.Kind != gateway.Invalid {
		t.Errorf("CallTool without identity: %v, want Invalid", err)
	}

	eng.mu.Lock()
	wantSeen := []policy.Identity{{ID: "agent:a", Kind: "agent"}, {ID: "agent:bad", Kind: "agent"}, {ID: "agent:a", Kind: "agent"}}
	if diff := cmp.Diff(wantSeen, eng.seen); diff != "" {
		t.Errorf("identities the policy saw (-want +got):\n%s", diff)
	}
	eng.mu.Unlock()

	if err := trail.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	type row struct{ Identity, Kind, Transport, Tool, Decision, Outcome string }
	var got []row
	for _, r := range trail.Recent(100) {
		if r.Event.Type == audit.TypeCall {
			got = append(got, row{r.Event.Identity, r.Event.IdentityKind, r.Event.Transport, r.Event.Tool, string(r.Event.Decision), string(r.Event.Outcome)})
		}
	}
	want := []row{
		{"agent:a", "agent", "internal", "up__echo", "allow", "ok"},
		{"agent:bad", "agent", "internal", "up__echo", "deny", "denied"},
		{"agent:a", "agent", "internal", "up__nope", "allow", "not_found"},
		{"agent:a", "agent", "internal", "symbi__status", "allow", "ok"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audited calls (-want +got):\n%s", diff)
	}

	_ = g.Close()
	if _, err := g.CallTool(ctx, agent, "up__echo", nil); !errors.As(err, &ge) {
		t.Errorf("CallTool after Close: %v, want an error", err)
	}
}
