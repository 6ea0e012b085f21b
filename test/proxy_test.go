package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/schemapin"
)

// proxyConfig puts three real upstreams behind symbi: the official SDK's conformance
// server, its example "everything" server, and an mcp-go server.
func proxyConfig(t testing.TB) string {
	return writeConfig(t,
		upstreamTOML("conf", "conf", everythingServer(t))+
			upstreamTOML("sdk", "sdk", sdkExample(t))+
			upstreamTOML("mg", "mg", mcpgoServer(t)))
}

func TestBuiltinToolsWithoutUpstreams(t *testing.T) {
	cfg := writeConfig(t, "")
	for _, tc := range transports {
		t.Run(tc.name, func(t *testing.T) {
			cs := connect(t, tc.connect(t, cfg), nil)
			tools := toolNames(t, cs)
			for _, want := range []string{"symbi__status", "symbi__upstreams", "symbi__tools"} {
				if tools[want] == nil {
					t.Errorf("tool %s missing; have %v", want, keys(tools))
				}
			}
			text, isErr := callText(t, cs, "symbi__status", map[string]any{})
			if isErr || !strings.Contains(text, `"upstreams":0`) {
				t.Errorf("symbi__status = %q (error %v)", text, isErr)
			}
		})
	}
}

func TestProxyAcrossTransports(t *testing.T) {
	cfg := proxyConfig(t)
	for _, tc := range transports {
		t.Run(tc.name, func(t *testing.T) {
			cs := connect(t, tc.connect(t, cfg), nil)
			tools := toolNames(t, cs)
			for _, want := range []string{"conf__test_simple_text", "sdk__greet", "mg__echo", "mg__add", "symbi__status"} {
				if tools[want] == nil {
					t.Fatalf("tool %s missing; have %v", want, keys(tools))
				}
			}
			for name := range tools {
				if len(name) > 64 {
					t.Errorf("tool name %q longer than 64", name)
				}
			}
			if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": "hi"}); isErr || text != "echo: hi" {
				t.Errorf("mg__echo = %q (error %v)", text, isErr)
			}
			if text, isErr := callText(t, cs, "conf__test_simple_text", map[string]any{}); isErr || text == "" {
				t.Errorf("conf__test_simple_text = %q (error %v)", text, isErr)
			}
			if text, isErr := callText(t, cs, "sdk__greet", map[string]any{"name": "symbi"}); isErr || !strings.Contains(text, "symbi") {
				t.Errorf("sdk__greet = %q (error %v)", text, isErr)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// Prompts are namespaced and routed.
			pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "mg__greet", Arguments: map[string]string{"name": "Ada"}})
			if err != nil {
				t.Fatalf("get prompt: %v", err)
			}
			if len(pr.Messages) != 1 || !strings.Contains(pr.Messages[0].Content.(*mcp.TextContent).Text, "Ada") {
				t.Errorf("prompt messages = %+v", pr.Messages)
			}
			// Resources keep their URIs and are routed to the upstream that listed them.
			rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "mcpgo://greeting"})
			if err != nil {
				t.Fatalf("read resource: %v", err)
			}
			if len(rr.Contents) != 1 || rr.Contents[0].Text != "hello from mcp-go" {
				t.Errorf("resource contents = %+v", rr.Contents)
			}
			rr, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static-text"})
			if err != nil || len(rr.Contents) == 0 {
				t.Errorf("read test://static-text: %v %+v", err, rr)
			}
			// Templates route too.
			rr, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://template/42/data"})
			if err != nil || len(rr.Contents) == 0 || !strings.Contains(rr.Contents[0].Text, "42") {
				t.Errorf("read template resource: %v %+v", err, rr)
			}
			// An unknown tool is a protocol error, not a hang.
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "mg__nope"}); err == nil {
				t.Error("calling an unknown tool succeeded")
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestBuiltinToolsAreSigned: symbi signs its own tools and publishes its key, so a
// SchemaPin-aware client can verify symbi itself.
func TestBuiltinToolsAreSigned(t *testing.T) {
	s := serve(t, writeConfig(t, ""))
	resp, err := http.Get("http://" + s.addr + schemapin.WellKnownPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	doc, err := schemapin.ParseDiscovery(body)
	if err != nil {
		t.Fatalf("discovery document: %v\n%s", err, body)
	}
	pub, err := schemapin.ParsePublicKey([]byte(doc.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	n := 0
	for name, tool := range toolNames(t, cs) {
		if !strings.HasPrefix(name, "symbi__") {
			continue
		}
		n++
		sig, _ := tool.Meta[schemapin.MetaKey].(string)
		raw, _ := json.Marshal(tool)
		canon, _, err := schemapin.ToolDefinition(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemapin.VerifyCanonical(pub, canon, sig, nil); err != nil {
			t.Errorf("%s: signature does not verify against /.well-known/schemapin.json: %v", name, err)
		}
		// A changed definition must not verify.
		tool.Description += " (changed)"
		raw, _ = json.Marshal(tool)
		canon, _, _ = schemapin.ToolDefinition(raw)
		if schemapin.VerifyCanonical(pub, canon, sig, nil) == nil {
			t.Errorf("%s: a changed definition still verifies", name)
		}
	}
	if n < 3 {
		t.Errorf("checked %d built-in tools, want at least 3", n)
	}
}
