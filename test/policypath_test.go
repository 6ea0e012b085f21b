package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// End-to-end tests of the request path's promises: the shipped example policies mask
// secrets on reads and prompts, not only on tool calls; unknown tools are refused before
// any policy or upstream; duplicate argument keys are refused; metric labels stay bounded.

// TestShippedPolicyMasksReadsAndPrompts: configs/policies/secrets.rego promises that
// credentials are masked in resource reads and prompt gets. A resource and a prompt of a
// real upstream that carry an AWS key come back masked, and the prompt's argument
// reaches the upstream masked.
func TestShippedPolicyMasksReadsAndPrompts(t *testing.T) {
	// Absolute: relative paths in a configuration resolve against the file's directory.
	shipped, err := filepath.Abs("../configs/policies")
	if err != nil {
		t.Fatal(err)
	}
	cs := connect(t, stdioTransport(t, mgPolicyConfig(t, shipped)), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const key = "AKIAIOSFODNN7EXAMPLE"

	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcpgo://credentials"})
	if err != nil {
		t.Fatalf("read resource: %v", err)
	}
	if len(rr.Contents) != 1 {
		t.Fatalf("contents = %+v", rr.Contents)
	}
	if text := rr.Contents[0].Text; strings.Contains(text, key) || !strings.Contains(text, "AKIA****") || !strings.Contains(text, "region=us-east-1") {
		t.Errorf("resource text = %q, want the key masked and the rest kept", text)
	}

	pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "mg__greet", Arguments: map[string]string{"name": "Ada " + key}})
	if err != nil {
		t.Fatalf("get prompt: %v", err)
	}
	if len(pr.Messages) != 1 {
		t.Fatalf("messages = %+v", pr.Messages)
	}
	if text := pr.Messages[0].Content.(*mcp.TextContent).Text; strings.Contains(text, key) || !strings.Contains(text, "Say hello to Ada AKIA****") {
		t.Errorf("prompt text = %q, want the key masked", text)
	}

	// What holds no secret passes unchanged.
	rr, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcpgo://greeting"})
	if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text != "hello from mcp-go" {
		t.Errorf("read mcpgo://greeting = %v %+v", err, rr)
	}
}

// rpc posts one JSON-RPC request to a streamable HTTP endpoint (2025-11-25 session sid)
// and returns the response message.
func rpc(t testing.TB, url, sid, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && strings.Contains(d, `"id"`) {
				data = []byte(d)
			}
		}
	}
	var m map[string]any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("response %q: %v", data, err)
		}
	}
	if m == nil {
		m = map[string]any{}
	}
	m["_session"] = resp.Header.Get("Mcp-Session-Id")
	return m
}

// TestDuplicateArgumentKeysRefused: a tools/call whose arguments repeat a key, at the
// top or deeper, is refused with -32602 and never reaches the policy's allow or the
// upstream; the same call without the repetition goes through.
func TestDuplicateArgumentKeysRefused(t *testing.T) {
	s := serve(t, writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))))
	url := "http://" + s.addr + "/mcp"
	init := rpc(t, url, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid, _ := init["_session"].(string)
	rpc(t, url, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	for _, tc := range []struct {
		name, args string
		refused    bool
	}{
		{"top", `{"message":"/etc/shadow","message":"/tmp/ok"}`, true},
		{"escaped", `{"message":"/etc/shadow","mess\u0061ge":"/tmp/ok"}`, true},
		{"nested", `{"message":"x","opts":{"a":1,"a":2}}`, true},
		{"in_array", `{"message":"x","list":[{"k":1},{"k":1,"k":2}]}`, true},
		{"distinct", `{"message":"/tmp/ok","opts":{"a":1,"b":2}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rpc(t, url, sid, fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"mg__echo","arguments":%s}}`, tc.args))
			e, isErr := resp["error"].(map[string]any)
			if !tc.refused {
				if isErr {
					t.Fatalf("refused: %v", e)
				}
				return
			}
			if !isErr {
				t.Fatalf("not refused: %v", resp)
			}
			if code, _ := e["code"].(float64); code != -32602 {
				t.Errorf("code = %v, want -32602", e["code"])
			}
			if msg, _ := e["message"].(string); !strings.Contains(msg, "repeat the key") {
				t.Errorf("message = %q", msg)
			}
		})
	}
}

// TestMetricLabelsBounded: calls to made-up tool names add no series of their own; they
// count under tool="unknown".
func TestMetricLabelsBounded(t *testing.T) {
	s := serve(t, writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))))
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "mg__echo", Arguments: map[string]any{"message": "hi"}}); err != nil {
		t.Fatal(err)
	}
	const made = 50
	for i := range made {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: fmt.Sprintf("made_up_%d", i)}); err == nil {
			t.Fatalf("made_up_%d: call succeeded", i)
		}
		if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: fmt.Sprintf("made_up_prompt_%d", i)}); err == nil {
			t.Fatalf("made_up_prompt_%d: get succeeded", i)
		}
	}
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(body, []byte("made_up")) {
		t.Errorf("/metrics names made-up tools:\n%s", grepLines(string(body), "made_up"))
	}
	want := fmt.Sprintf(`symbi_requests_total{method="tools/call",tool="unknown",upstream=""} %d`, made)
	if !bytes.Contains(body, []byte(want)) {
		t.Errorf("/metrics lacks %s:\n%s", want, grepLines(string(body), "symbi_requests_total"))
	}
	if !bytes.Contains(body, []byte(`symbi_requests_total{method="tools/call",tool="mg__echo",upstream="mg"} 1`)) {
		t.Errorf("/metrics lacks the known tool:\n%s", grepLines(string(body), "symbi_requests_total"))
	}
}

// TestPolicyEvalTimeout: [policy] eval_timeout bounds an evaluation; a policy stuck in a
// long computation denies the call, and the client is told the evaluation timed out.
func TestPolicyEvalTimeout(t *testing.T) {
	dir := policyDir(t, map[string]string{"slow.rego": `package symbi.authz

decision := {"allow": true} if input.action != "tools/call"

decision := {"allow": true} if {
	input.action == "tools/call"
	count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)]) > 0
}
`})
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+fmt.Sprintf("[policy]\ndir = %q\neval_timeout = \"50ms\"\n", dir))
	cs := connect(t, stdioTransport(t, cfg), nil)
	res, err := call(t, cs, "mg__echo", map[string]any{"message": "hi"})
	wantRefused(t, "call under a slow policy", res, err, "policy evaluation timed out after 50ms")
}
