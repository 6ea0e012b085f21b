package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/internal/pgtest"
)

// replicaPolicy: mg__add is limited to 2 calls a minute per identity, mg__echo needs a
// human's approval, everything else is allowed.
const replicaPolicy = `package symbi.authz

decision := {"allow": true, "conditions": [{"type": "rate_limit", "per_minute": 2}]} if {
	input.action == "tools/call"
	input.tool.name == "mg__add"
} else := {"allow": true, "conditions": [{"type": "require_approval", "message": "echo needs a human"}]} if {
	input.action == "tools/call"
	input.tool.name == "mg__echo"
} else := {"allow": true}
`

// replicaClient connects to s as the token's identity, a 2026-07-28 client that can
// elicit but answers approval questions itself (by retrying with the request state).
func replicaClient(t *testing.T, s *served, token string) *mcp.ClientSession {
	t.Helper()
	return connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}},
		&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
			ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				t.Error("the SDK answered an approval question; the test answers them")
				return &mcp.ElicitResult{Action: "decline"}, nil
			}})
}

// askApproval calls mg__echo and expects symbi's approval question; it returns the
// request state to answer it with.
func askApproval(t *testing.T, cs *mcp.ClientSession, message string) string {
	t.Helper()
	res, err := call(t, cs, "mg__echo", map[string]any{"message": message})
	if err != nil {
		t.Fatalf("mg__echo: %v", err)
	}
	if _, ok := res.InputRequests["symbi_approval"].(*mcp.ElicitParams); !ok || !strings.HasPrefix(res.RequestState, "symbi-approval:") {
		t.Fatalf("mg__echo = %+v, want an approval question", res)
	}
	return res.RequestState
}

// answerApproval retries mg__echo with the approval state and a yes.
func answerApproval(cs *mcp.ClientSession, message, state string) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: "mg__echo", Arguments: map[string]any{"message": message},
		RequestState: state, InputResponses: mcp.InputResponseMap{"symbi_approval": &mcp.ElicitResult{Action: "accept", Content: map[string]any{"approve": true}}}})
}

// TestReplicasSharePostgres runs two `symbi serve` on one PostgreSQL ([state] store),
// each with its own data_dir: a key pinned through the first is enforced by the second,
// the rate limit is one for both, a task created on the first is read on the second (by
// its owner only), an approval is used once across both; each replica's own audit trail
// verifies.
func TestReplicasSharePostgres(t *testing.T) {
	pg := pgtest.URL(t)
	keyDir := t.TempDir()
	policies := policyDir(t, map[string]string{"authz.rego": replicaPolicy})

	// Two developer keys for one domain: replica 1 is shown tools signed with the first,
	// replica 2 (later) the same tools signed with the second, as after a key swap.
	type signed struct{ discovery, manifest string }
	sign := func(name string) signed {
		priv, pub := keygen(t, filepath.Join(keyDir, name))
		doc, stderr, code := runCLI(t, "schemapin", "wellknown", "--key", pub, "--developer", name)
		if code != 0 {
			t.Fatalf("wellknown: exit %d\n%s", code, stderr)
		}
		s := signed{filepath.Join(keyDir, name+".json"), filepath.Join(keyDir, name+"-manifest.json")}
		if err := os.WriteFile(s.discovery, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		var manifest []json.RawMessage
		for _, raw := range listRawTools(t, mcpgoServer(t)) {
			manifest = append(manifest, signTool(t, priv, raw))
		}
		mb, _ := json.Marshal(manifest)
		if err := os.WriteFile(s.manifest, mb, 0o600); err != nil {
			t.Fatal(err)
		}
		return s
	}
	k1, k2 := sign("first"), sign("second")

	config := func(k signed) string {
		return writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n", tasksAlice, tasksBob)+
			upstreamTOML("mg", "mg", mcpgoServer(t))+
			upstreamTOML("sig", "sig", mcpgoServer(t))+
			fmt.Sprintf("schemapin = { mode = \"tofu\", domain = \"example.test\", discovery_file = %q, manifest = %q }\n\n", k.discovery, k.manifest)+
			upstreamTOML("jobs", "jobs", bin(t, "slowjobs", "github.com/symbi-dev/symbi/test/servers/slowjobs"), "-log", filepath.Join(t.TempDir(), "cancelled.jsonl"))+
			"task_tools = [\"slow_*\"]\n\n"+
			fmt.Sprintf("[policy]\ndir = %q\n\n[state]\nstore = %q\n", policies, pg))
	}
	cfg1, cfg2 := config(k1), config(k2)
	if dataDirOf(cfg1) == dataDirOf(cfg2) {
		t.Fatal("the replicas share a data_dir")
	}

	// Replica 1 pins the first key on first use.
	s1 := serve(t, cfg1)
	a1 := replicaClient(t, s1, tasksAlice)
	st := toolStatuses(t, a1)["sig__echo"]
	if st.Verification.Status != "verified" || !strings.HasPrefix(st.Verification.Fingerprint, "sha256:") {
		t.Fatalf("replica 1: sig__echo verification = %+v, want verified", st.Verification)
	}
	pinned := st.Verification.Fingerprint

	// Replica 2 sees the tools signed with another key: a rug pull, refused.
	s2 := serve(t, cfg2)
	a2 := replicaClient(t, s2, tasksAlice)
	if toolNames(t, a2)["sig__echo"] != nil {
		t.Errorf("replica 2 lists sig__echo signed with a key other than the one replica 1 pinned")
	}
	if _, err := call(t, a2, "sig__echo", map[string]any{"message": "x"}); err == nil {
		t.Error("replica 2 ran sig__echo signed with another key")
	}
	waitFor(t, 10*time.Second, "replica 2 to record the key change", func() bool {
		recs, _ := auditQuery(t, filepath.Join(dataDirOf(cfg2), "audit"), "--type", "verification")
		for _, r := range recs {
			if r.Tool == "echo" && r.SchemaPin == "key_changed" {
				return true
			}
		}
		return false
	})
	// The pins are in PostgreSQL, not in either data_dir; the CLI reads them with --state.
	pinsIn := func(args ...string) map[string]string {
		out, stderr, code := runCLI(t, append([]string{"schemapin", "pins", "list", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("pins list %v: exit %d\n%s", args, code, stderr)
		}
		var list []struct {
			ToolID      string `json:"tool_id"`
			Domain      string `json:"domain"`
			Fingerprint string `json:"fingerprint"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("pins list %v: %v: %s", args, err, out)
		}
		m := map[string]string{}
		for _, p := range list {
			m[p.ToolID+"@"+p.Domain] = p.Fingerprint
		}
		return m
	}
	if got := pinsIn("--state", pg)["echo@example.test"]; got != pinned {
		t.Errorf("shared pin of echo@example.test = %q, want %q (replica 1's key)", got, pinned)
	}
	for i, cfg := range []string{cfg1, cfg2} {
		if got := pinsIn("--data-dir", dataDirOf(cfg)); len(got) != 0 {
			t.Errorf("replica %d keeps pins in its data_dir: %v", i+1, got)
		}
	}
	if _, stderr, code := runCLI(t, "schemapin", "pins", "list", "--state", "mysql://u:s3cret@h/db"); code != 2 || strings.Contains(stderr, "s3cret") {
		t.Errorf("pins list with a non-PostgreSQL --state: exit %d, %q", code, stderr)
	}
	if st := toolStatuses(t, a1)["sig__echo"]; st.Verification.Status != "verified" || st.Verification.Fingerprint != pinned {
		t.Errorf("replica 1 after replica 2 started: sig__echo = %+v, want verified with %s", st.Verification, pinned)
	}

	// One rate limit (2 a minute) for both replicas.
	for i, cs := range []*mcp.ClientSession{a1, a2} {
		if text, isErr := callText(t, cs, "mg__add", map[string]any{"a": i, "b": 1}); isErr || text != fmt.Sprint(i+1) {
			t.Fatalf("replica %d: mg__add = %q (error %v)", i+1, text, isErr)
		}
	}
	res, err := call(t, a2, "mg__add", map[string]any{"a": 1, "b": 1})
	wantRefused(t, "third call within a minute, on replica 2", res, err, "rate limit")
	res, err = call(t, a1, "mg__add", map[string]any{"a": 1, "b": 1})
	wantRefused(t, "third call within a minute, on replica 1", res, err, "rate limit")
	if text, isErr := callText(t, replicaClient(t, s2, tasksBob), "mg__add", map[string]any{"a": 2, "b": 2}); isErr || text != "4" {
		t.Errorf("bob's first call was refused by alice's limit: %q", text)
	}

	// A task created on replica 1 is read on replica 2, by its owner only.
	id := startTask(t, s1, 1)
	if _, e := getTask(t, s2, tasksBob, id); e == nil || e.Code != -32602 {
		t.Errorf("bob's tasks/get of alice's task %s on replica 2: %+v, want unknown (-32602)", id, e)
	}
	final := pollTask(t, s2, id)
	if result, _ := final["result"].(map[string]any); final["status"] != "completed" || !strings.Contains(fmt.Sprint(result["content"]), "computed e2e after 1s") {
		t.Errorf("alice's task read on replica 2: %v, want completed with its result", final)
	}

	// An approval asked on replica 1 can be answered on replica 2 (one key) ...
	state := askApproval(t, a1, "one")
	if res, err := answerApproval(a2, "one", state); err != nil || res.IsError || resultText(res) != "echo: one" {
		t.Errorf("approval asked on 1, answered on 2: %v %+v", err, res)
	}
	// ... and once only: used on one replica, refused on the other.
	res, err = answerApproval(a1, "one", state)
	wantRefused(t, "approval used on 2, replayed on 1", res, err, "already used")
	state = askApproval(t, a1, "two")
	if res, err := answerApproval(a1, "two", state); err != nil || res.IsError || resultText(res) != "echo: two" {
		t.Errorf("approval on replica 1: %v %+v", err, res)
	}
	res, err = answerApproval(a2, "two", state)
	wantRefused(t, "approval used on 1, replayed on 2", res, err, "already used")

	// symbi doctor reaches the shared state.
	if out, stderr, _ := runCLI(t, "doctor", "--config", cfg2); !strings.Contains(out, "ok   shared state (PostgreSQL)") {
		t.Errorf("doctor does not report the shared state as ok:\n%s%s", out, stderr)
	}

	// Each replica keeps its own audit trail, and each verifies.
	for i, cfg := range []string{cfg1, cfg2} {
		auditDir := filepath.Join(dataDirOf(cfg), "audit")
		recs, raw := auditQuery(t, auditDir, "--type", "call")
		if len(recs) == 0 {
			t.Errorf("replica %d recorded no calls:\n%s", i+1, raw)
		}
		if out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir); code != 0 {
			t.Errorf("replica %d: audit verify: exit %d\n%s%s", i+1, code, out, stderr)
		}
	}
}
