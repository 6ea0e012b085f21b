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
)

// contextPolicy allows everything except: mg__secret is for alice only, and bob may not
// read shared memory.
const contextPolicy = `package symbi.authz

default decision := {"allow": true}

decision := {"allow": false, "reason": "secret is for alice"} if {
	input.tool.name == "mg__secret"
	input.identity.id != "alice"
}

decision := {"allow": false, "reason": "bob may not read shared memory"} if {
	input.action == "context/read"
	input.context.scope == "shared"
	input.identity.id == "bob"
}
`

const (
	aliceToken = "alice-token-0123456789abcdef"
	bobToken   = "bob-token-0123456789abcdef01"
)

// callJSON calls a tool and decodes its structured result; it fails the test on a
// protocol error or an error result.
func callJSON(t *testing.T, cs *mcp.ClientSession, name string, args any, out any) {
	t.Helper()
	res, err := call(t, cs, name, args)
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	if res.IsError {
		t.Fatalf("call %s: error result %q", name, resultText(res))
	}
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("call %s: decode %s: %v", name, b, err)
	}
}

func connectAs(t *testing.T, s *served, token string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	return connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}}, opts)
}

type searchResult struct {
	Results []struct {
		ID, Doc, Text string
		Metadata      map[string]string
	}
}

type memories struct {
	Memories []struct {
		ID, Kind, Content, Owner string
	}
}

func (m memories) contents() string {
	var s []string
	for _, x := range m.Memories {
		s = append(s, x.Content)
	}
	return strings.Join(s, " | ")
}

func stop(t *testing.T, s *served) {
	t.Helper()
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("symbi did not stop")
	}
}

// TestContextAndKnowledge runs the context features through the built binary: `symbi kb
// ingest`, ingest and search over MCP (text and an upstream resource read through
// symbi), memory isolated per identity, shared memory under policy, tool search that
// never shows a hidden tool, RAG with a sampling client and without, the symbi://
// resources, everything still there after a restart, and no content in the audit trail.
func TestContextAndKnowledge(t *testing.T) {
	dir := policyDir(t, map[string]string{"authz.rego": contextPolicy})
	cfg := writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n", aliceToken, bobToken)+
		upstreamTOML("mg", "mg", mcpgoServer(t))+fmt.Sprintf("[policy]\ndir = %q\n", dir))

	// The operator's CLI ingests a directory before symbi runs.
	docs := t.TempDir()
	for name, text := range map[string]string{
		"gateway.md": "# Gateway\n\nThe quokka-7 release moved the audit trail to hash chains.\n\nUpstreams run in gVisor sandboxes.",
		"policy.md":  "# Policy\n\nPolicies are written in Rego and reloaded without a restart.",
	} {
		if err := os.WriteFile(filepath.Join(docs, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, stderr, code := runCLI(t, "kb", "ingest", "--config", cfg, "--meta", "team=core", docs); code != 0 || !strings.Contains(out, "ingested 2 of 2 files") {
		t.Fatalf("kb ingest: exit %d\n%s\n%s", code, out, stderr)
	}
	if out, _, code := runCLI(t, "kb", "search", "--config", cfg, "quokka-7"); code != 0 || !strings.Contains(out, "gateway.md") {
		t.Fatalf("kb search: exit %d\n%s", code, out)
	}

	s := serve(t, cfg)
	sampled := make(chan string, 4)
	alice := connectAs(t, s, aliceToken, &mcp.ClientOptions{
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			prompt := req.Params.Messages[0].Content.(*mcp.TextContent).Text
			sampled <- prompt
			return &mcp.CreateMessageResult{Model: "fake-model", Role: "assistant",
				Content: &mcp.TextContent{Text: "Rego, reloaded live [1]."}}, nil
		},
	})
	bob := connectAs(t, s, bobToken, nil)

	var info struct {
		ID     string
		Chunks int
	}
	callJSON(t, alice, "symbi__knowledge_ingest", map[string]any{"text": "Zanzibar tokens expire after nine days.", "title": "Tokens", "id": "tokens", "metadata": map[string]string{"team": "auth"}}, &info)
	if info.ID != "tokens" || info.Chunks != 1 {
		t.Errorf("ingest = %+v", info)
	}
	callJSON(t, alice, "symbi__knowledge_ingest", map[string]any{"uri": "mcpgo://greeting", "title": "Greeting"}, &info)

	var sr searchResult
	callJSON(t, bob, "symbi__knowledge_search", map[string]any{"query": "when do zanzibar tokens expire"}, &sr)
	if len(sr.Results) == 0 || sr.Results[0].Doc != "tokens" {
		t.Errorf("search = %+v, want the tokens document first", sr)
	}
	callJSON(t, bob, "symbi__knowledge_search", map[string]any{"query": "audit trail", "filter": map[string]string{"team": "core"}}, &sr)
	if len(sr.Results) == 0 || !strings.Contains(sr.Results[0].Text, "quokka-7") {
		t.Errorf("filtered search = %+v, want the CLI-ingested gateway.md", sr)
	}
	callJSON(t, bob, "symbi__knowledge_search", map[string]any{"query": "greeting hello", "limit": 1}, &sr)
	if len(sr.Results) != 1 || sr.Results[0].Metadata["source"] != "mcpgo://greeting" {
		t.Errorf("resource ingest not found: %+v", sr)
	}

	// Memory is per identity.
	var stored struct{ ID string }
	callJSON(t, alice, "symbi__memory_store", map[string]any{"kind": "long", "content": "My locker code is 4711", "metadata": map[string]string{"topic": "locker"}}, &stored)
	var m memories
	callJSON(t, bob, "symbi__memory_recall", map[string]any{"query": "locker code"}, &m)
	if strings.Contains(m.contents(), "4711") {
		t.Errorf("bob recalled alice's memory: %s", m.contents())
	}
	callJSON(t, alice, "symbi__memory_recall", map[string]any{"query": "what is my locker code", "kind": "long"}, &m)
	if len(m.Memories) == 0 || m.Memories[0].Content != "My locker code is 4711" {
		t.Errorf("alice's recall = %s", m.contents())
	}

	// Shared memory: readable as the policy allows.
	callJSON(t, alice, "symbi__memory_store", map[string]any{"kind": "shared", "content": "Team lunch is on Friday"}, &stored)
	callJSON(t, bob, "symbi__memory_store", map[string]any{"kind": "shared", "content": "Bob's shared note about lunch"}, &stored)
	res, err := call(t, bob, "symbi__memory_recall", map[string]any{"query": "lunch", "kind": "shared"})
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "bob may not read shared memory") {
		t.Errorf("bob's shared recall = %v %v, want the policy's denial", resultText(res), err)
	}
	callJSON(t, bob, "symbi__memory_recall", map[string]any{"query": "lunch"}, &m)
	if strings.Contains(m.contents(), "Team lunch") {
		t.Errorf("bob's recall of all kinds includes shared memory: %s", m.contents())
	}
	callJSON(t, alice, "symbi__memory_recall", map[string]any{"query": "lunch", "kind": "shared"}, &m)
	if !strings.Contains(m.contents(), "Team lunch is on Friday") || !strings.Contains(m.contents(), "Bob's shared note") {
		t.Errorf("alice's shared recall = %s", m.contents())
	}

	// Tool search: bob never sees mg__secret, alice does.
	var found struct{ Tools []struct{ Name string } }
	for _, q := range []string{"secret", "return a secret value", "mg__secret"} {
		callJSON(t, bob, "symbi__tools_search", map[string]any{"query": q, "limit": 50}, &found)
		for _, tl := range found.Tools {
			if tl.Name == "mg__secret" {
				t.Errorf("bob's tool search %q returned the hidden mg__secret", q)
			}
		}
	}
	callJSON(t, alice, "symbi__tools_search", map[string]any{"query": "echo a message back", "limit": 3}, &found)
	if len(found.Tools) == 0 || found.Tools[0].Name != "mg__echo" {
		t.Errorf("alice's tool search = %+v, want mg__echo first", found)
	}
	callJSON(t, alice, "symbi__tools_search", map[string]any{"query": "secret", "limit": 50}, &found)
	if !strings.Contains(fmt.Sprint(found), "mg__secret") {
		t.Errorf("alice's tool search misses mg__secret, which she may see: %+v", found)
	}

	// RAG: with sampling the client's model answers with citations; without, ranked context.
	var ans struct {
		Answer, Model, Note string
		Citations           []string
		Context             []struct{ ID string }
	}
	callJSON(t, alice, "symbi__rag_answer", map[string]any{"question": "How are policies written?"}, &ans)
	if ans.Answer != "Rego, reloaded live [1]." || ans.Model != "fake-model" || len(ans.Citations) != 1 || ans.Citations[0] != ans.Context[0].ID {
		t.Errorf("rag_answer with sampling = %+v", ans)
	}
	select {
	case p := <-sampled:
		if !strings.Contains(p, "Rego") || !strings.Contains(p, "Question: How are policies written?") {
			t.Errorf("sampling prompt lacks the context or question:\n%s", p)
		}
	default:
		t.Error("the client's model was not asked")
	}
	ans.Answer, ans.Model, ans.Note, ans.Citations, ans.Context = "", "", "", nil, nil
	callJSON(t, bob, "symbi__rag_answer", map[string]any{"question": "How are policies written?"}, &ans)
	if ans.Answer != "" || len(ans.Context) == 0 || !strings.Contains(ans.Note, "sampling") {
		t.Errorf("rag_answer without sampling = %+v", ans)
	}

	// Resources.
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rr, err := alice.ReadResource(rctx, &mcp.ReadResourceParams{URI: "symbi://memory/long"})
	if err != nil || !strings.Contains(rr.Contents[0].Text, "4711") {
		t.Errorf("read symbi://memory/long as alice: %v %v", rr, err)
	}
	rr, err = bob.ReadResource(rctx, &mcp.ReadResourceParams{URI: "symbi://memory/long"})
	if err != nil || strings.Contains(rr.Contents[0].Text, "4711") {
		t.Errorf("read symbi://memory/long as bob: %v %v", rr, err)
	}
	rr, err = bob.ReadResource(rctx, &mcp.ReadResourceParams{URI: "symbi://knowledge/tokens"})
	if err != nil || rr.Contents[0].Text != "Zanzibar tokens expire after nine days." {
		t.Errorf("read symbi://knowledge/tokens: %v %v", rr, err)
	}

	// Restart: knowledge and memory persist.
	_ = alice.Close()
	_ = bob.Close()
	stop(t, s)
	s2 := serve(t, cfg)
	alice = connectAs(t, s2, aliceToken, nil)
	callJSON(t, alice, "symbi__knowledge_search", map[string]any{"query": "zanzibar"}, &sr)
	if len(sr.Results) == 0 || sr.Results[0].Doc != "tokens" {
		t.Errorf("after restart, search = %+v", sr)
	}
	callJSON(t, alice, "symbi__memory_recall", map[string]any{"query": "locker"}, &m)
	if !strings.Contains(m.contents(), "4711") {
		t.Errorf("after restart, alice's recall = %s", m.contents())
	}
	// Updates and deletes are visible at once.
	callJSON(t, alice, "symbi__knowledge_ingest", map[string]any{"text": "Zanzibar tokens now expire after two days.", "id": "tokens"}, &info)
	callJSON(t, alice, "symbi__knowledge_search", map[string]any{"query": "zanzibar"}, &sr)
	if len(sr.Results) == 0 || !strings.Contains(sr.Results[0].Text, "two days") || strings.Contains(fmt.Sprint(sr), "nine days") {
		t.Errorf("after update, search = %+v", sr)
	}
	var del struct {
		Chunks int `json:"chunks_deleted"`
	}
	callJSON(t, alice, "symbi__knowledge_delete", map[string]any{"id": "tokens"}, &del)
	callJSON(t, alice, "symbi__knowledge_search", map[string]any{"query": "zanzibar"}, &sr)
	if del.Chunks != 1 || strings.Contains(fmt.Sprint(sr), "Zanzibar") {
		t.Errorf("after delete (%d chunks), search = %+v", del.Chunks, sr)
	}
	_ = alice.Close()
	stop(t, s2)

	// The audit trail has the context decisions, with hashes, and none of the content.
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	_, raw := auditQuery(t, auditDir)
	denied := false
	for _, line := range strings.Split(raw, "\n") {
		if strings.Contains(line, `"context/read"`) && strings.Contains(line, `"identity":"bob"`) && strings.Contains(line, `"decision":"deny"`) {
			denied = true
		}
	}
	if !denied {
		t.Errorf("bob's denied shared read is not in the audit trail:\n%s", raw)
	}
	if !strings.Contains(raw, "content_sha256") {
		t.Error("the audit trail has no content hashes")
	}
	all, err := os.ReadDir(auditDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		b, err := os.ReadFile(filepath.Join(auditDir, e.Name()))
		if err != nil {
			continue
		}
		for _, secret := range []string{"locker code is", "Team lunch", "Zanzibar"} {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, secret) {
					t.Errorf("audit file %s contains content %q:\n%s", e.Name(), secret, line)
				}
			}
		}
	}
}

// TestWorkingMemoryEndsWithAgentRun: an agent's working memory lives for its run and is
// dropped at its end, so the next run starts without it (its TTL alone would keep it
// for an hour). Each run writes what it saw to shared memory, which a client reads.
func TestWorkingMemoryEndsWithAgentRun(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+`
[[agents]]
name = "scribe"
steps = [
  { tool = "symbi__memory_recall", arguments = { kind = "working" }, save = "before" },
  { tool = "symbi__memory_store", arguments = { kind = "working", content = "scratch xyzzy" } },
  { tool = "symbi__memory_recall", arguments = { kind = "working" }, save = "during" },
  { tool = "symbi__memory_store", arguments = { kind = "shared", content = "before=[{{ .before.text }}] during=[{{ .during.text }}]" } },
]
`)
	s := serve(t, cfg)
	url := "http://" + s.addr + "/mcp"
	for run := 1; run <= 2; run++ {
		agentsCLI(t, url, "run", "scribe")
		waitFor(t, 20*time.Second, fmt.Sprintf("run %d of scribe", run), func() bool {
			n := 0
			for _, r := range agentState(t, url, "scribe").Runs {
				if r.State == "succeeded" {
					n++
				}
			}
			return n == run
		})
	}
	reader := connect(t, &mcp.StreamableClientTransport{Endpoint: url}, nil)
	var m memories
	callJSON(t, reader, "symbi__memory_recall", map[string]any{"kind": "shared", "limit": 10}, &m)
	if len(m.Memories) != 2 {
		t.Fatalf("shared memories = %s, want one per run", m.contents())
	}
	for _, mem := range m.Memories {
		before, during, ok := strings.Cut(mem.Content, "during=")
		if !ok || strings.Contains(before, "xyzzy") || !strings.Contains(during, "xyzzy") {
			t.Errorf("a run saw %q: want its own working memory during the run and none left by the run before", mem.Content)
		}
	}
}

// TestToolsListSearchMode: with [context] tools_list = "search", tools/list shows only
// symbi's own tools; the upstream tools are found with symbi__tools_search (with their
// input schemas) and called by name or through symbi__tools_call, under the same policy.
func TestToolsListSearchMode(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+"[context]\ntools_list = \"search\"\n")
	s := serve(t, cfg)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lr, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, tl := range lr.Tools {
		listed[tl.Name] = true
		if !strings.HasPrefix(tl.Name, "symbi__") {
			t.Errorf("tools/list shows upstream tool %s in search mode", tl.Name)
		}
	}
	if !listed["symbi__tools_search"] || !listed["symbi__tools_call"] {
		t.Fatalf("tools/list lacks the search and call tools: %v", listed)
	}
	var found struct {
		Tools []struct {
			Name        string
			InputSchema map[string]any
		}
	}
	callJSON(t, cs, "symbi__tools_search", map[string]any{"query": "echo a message back", "limit": 3}, &found)
	if len(found.Tools) == 0 || found.Tools[0].Name != "mg__echo" {
		t.Fatalf("tools_search = %+v, want mg__echo first", found)
	}
	if props, _ := found.Tools[0].InputSchema["properties"].(map[string]any); props["message"] == nil {
		t.Errorf("found tool's schema = %v, want its message parameter", found.Tools[0].InputSchema)
	}
	res, err := call(t, cs, "mg__echo", map[string]any{"message": "direct"})
	if err != nil || res.IsError || !strings.Contains(resultText(res), "direct") {
		t.Errorf("direct call of a found tool: %v %v", resultText(res), err)
	}
	res, err = call(t, cs, "symbi__tools_call", map[string]any{"name": "mg__echo", "arguments": map[string]any{"message": "proxied"}})
	if err != nil || res.IsError || !strings.Contains(resultText(res), "proxied") {
		t.Errorf("symbi__tools_call: %v %v", resultText(res), err)
	}
	res, err = call(t, cs, "symbi__tools_call", map[string]any{"name": "mg__nope"})
	if err != nil || !res.IsError {
		t.Errorf("symbi__tools_call of an unknown tool: %v %v, want a tool error", resultText(res), err)
	}
}
