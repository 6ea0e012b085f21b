package test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestClientSnippetsInREADME checks that the client set-up snippets in the README are
// valid and, run as written (with this build of symbi), give a working MCP server.
func TestClientSnippetsInREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	var commands [][]string
	for _, b := range blocks {
		var doc struct {
			MCPServers map[string]struct {
				Command string   `json:"command"`
				Args    []string `json:"args"`
			} `json:"mcpServers"` // Claude Desktop
			Servers map[string]struct {
				Type    string   `json:"type"`
				Command string   `json:"command"`
				Args    []string `json:"args"`
			} `json:"servers"` // VS Code
		}
		if err := json.Unmarshal([]byte(b[1]), &doc); err != nil {
			t.Fatalf("README json block is not valid JSON: %v\n%s", err, b[1])
		}
		for _, s := range doc.MCPServers {
			commands = append(commands, append([]string{s.Command}, s.Args...))
		}
		for _, s := range doc.Servers {
			if s.Type != "stdio" {
				t.Errorf("VS Code snippet type = %q", s.Type)
			}
			commands = append(commands, append([]string{s.Command}, s.Args...))
		}
	}
	// Claude Code: `claude mcp add symbi -- symbi mcp --config ...`
	for _, m := range regexp.MustCompile(`claude mcp add symbi -- (.*)`).FindAllStringSubmatch(string(readme), -1) {
		commands = append(commands, strings.Fields(m[1]))
	}
	if len(commands) != 3 {
		t.Fatalf("found %d stdio client snippets in the README, want 3 (Claude Desktop, VS Code, Claude Code)", len(commands))
	}
	for _, argv := range commands {
		t.Run(strings.Join(argv, " "), func(t *testing.T) {
			if argv[0] != "symbi" || len(argv) < 4 || argv[1] != "mcp" || argv[2] != "--config" {
				t.Fatalf("snippet runs %q, want symbi mcp --config FILE", argv)
			}
			cmd := exec.Command(symbiBin(t), append(argv[1:3], cfg)...)
			cs := connect(t, &mcp.CommandTransport{Command: cmd}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "mg__echo", Arguments: map[string]any{"message": "from a client snippet"}})
			if err != nil || res.IsError || resultText(res) != "echo: from a client snippet" {
				t.Fatalf("call through the snippet's command: %v %+v", err, res)
			}
		})
	}
}
