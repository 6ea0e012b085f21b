package gateway_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/pgtest"
	"github.com/symbi-dev/symbi/internal/replicas"
	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/policy"
)

// TestApprovalSharedByReplicas: two gateways with one approval key and one ledger (the
// PostgreSQL state replicas share) accept an approval asked by one and answered through
// the other, once; a ledger that cannot answer refuses the approval (fails closed).
func TestApprovalSharedByReplicas(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	db, err := store.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := replicas.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	key, err := replicas.ApprovalKey(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	broken, err := store.OpenPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // every use fails

	eng := engineFunc(func(in *policy.Input) policy.Decision {
		if strings.HasSuffix(in.Action, "/list") {
			return policy.Decision{Allow: true}
		}
		return policy.Decision{Allow: true, Conditions: []policy.Condition{{Type: policy.CondRequireApproval, Message: "approve?"}}}
	})
	client := func(ledger gateway.ApprovalLedger) *mcp.ClientSession {
		_, connect := testGateway(t, condServer, gateway.PolicyOptions{Engine: eng, ApprovalKey: key, Approvals: ledger})
		return connect(&mcp.ClientOptions{
			MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
			ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return nil, errors.New("not used: the test answers input requests itself")
			},
		}, "")
	}
	r1, r2 := client(replicas.NewApprovals(db)), client(replicas.NewApprovals(db))
	down := client(replicas.NewApprovals(broken))

	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	yes := mcp.InputResponseMap{"symbi_approval": &mcp.ElicitResult{Action: "accept", Content: map[string]any{"approve": true}}}
	callTool := func(cs *mcp.ClientSession, text, state string) (*mcp.CallToolResult, error) {
		p := &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": text}, RequestState: state}
		if state != "" {
			p.InputResponses = yes
		}
		return cs.CallTool(cctx, p)
	}
	ask := func(cs *mcp.ClientSession, text string) string {
		t.Helper()
		res, err := callTool(cs, text, "")
		if err != nil || res.RequestState == "" {
			t.Fatalf("first call did not ask for approval: %v %+v", err, res)
		}
		return res.RequestState
	}
	ran := func(res *mcp.CallToolResult, err error, text string) bool {
		return err == nil && !res.IsError && len(res.Content) > 0 && strings.Contains(res.Content[0].(*mcp.TextContent).Text, "got text="+text)
	}

	state := ask(r1, "one")
	if res, err := callTool(r2, "one", state); !ran(res, err, "one") {
		t.Fatalf("asked on 1, answered on 2: %v %+v", err, res)
	}
	for name, cs := range map[string]*mcp.ClientSession{"replica 1": r1, "replica 2": r2} {
		if _, err := callTool(cs, "one", state); err == nil || !strings.Contains(err.Error(), "already used") {
			t.Errorf("replay on %s: %v, want already used", name, err)
		}
	}
	state = ask(r2, "two")
	if _, err := callTool(down, "two", state); err == nil || !strings.Contains(err.Error(), "could not be checked") {
		t.Errorf("with the ledger down: %v, want a refusal", err)
	}
	if res, err := callTool(r1, "two", state); !ran(res, err, "two") {
		t.Errorf("the refusal spent the approval: %v %+v", err, res)
	}
}
