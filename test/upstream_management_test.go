package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestAddRemoveLive: `symbi add` appends an upstream to the file of a running
// `symbi serve` and signals it; a connected client is told the tools changed and sees the
// new upstream's tools; `symbi ls` shows both upstreams with their state, tool count and
// tier; `symbi logs` prints the new upstream's stderr; `symbi remove` takes it away again
// and its tools disappear. The file keeps its comments throughout, and the changes are in
// the audit trail.
func TestAddRemoveLive(t *testing.T) {
	srv := mcpgoServer(t)
	cfg := writeConfig(t, "# The first upstream: kept as it is.\n"+upstreamTOML("first", "first", srv)+"# A closing comment.\n")
	s := serve(t, cfg)
	changed := make(chan struct{}, 16)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	hasPrefix := func(prefix string) bool {
		for name := range toolNames(t, cs) {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		}
		return false
	}
	if !hasPrefix("first__") || hasPrefix("second__") {
		t.Fatalf("tools at start: %v", keys(toolNames(t, cs)))
	}

	// A stdio upstream that says something on stderr before serving.
	script := fmt.Sprintf("echo second-upstream-says-hello >&2; (sleep 8; echo second-upstream-later >&2) & exec %q", srv)
	stdout, stderr, code := runCLI(t, "add", "--config", cfg, "second", "--", "sh", "-c", script)
	if code != 0 {
		t.Fatalf("symbi add: exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, fmt.Sprintf("told symbi serve (pid %d) to reload", s.cmd.Process.Pid)) {
		t.Errorf("symbi add did not signal the running symbi:\n%s", stdout)
	}
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no notifications/tools/list_changed after symbi add")
	}
	waitFor(t, 30*time.Second, "the added upstream's tools", func() bool { return hasPrefix("second__") })
	if text, isErr := callText(t, cs, "second__echo", map[string]any{"message": "hi"}); isErr {
		t.Errorf("call the added upstream's tool: %s", text)
	}
	body, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# The first upstream: kept as it is.\n", "# A closing comment.\n", "name = \"second\""} {
		if !strings.Contains(string(body), want) {
			t.Errorf("config after add lacks %q:\n%s", want, body)
		}
	}

	// symbi ls, as a table and as JSON.
	stdout, stderr, code = runCLI(t, "ls", "--config", cfg)
	if code != 0 {
		t.Fatalf("symbi ls: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"symbi serve (pid", "first", "second", "up", "none"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("symbi ls lacks %q:\n%s", want, stdout)
		}
	}
	stdout, _, _ = runCLI(t, "ls", "--config", cfg, "--json")
	var procs []struct {
		PID       int `json:"pid"`
		Upstreams []struct {
			Name         string         `json:"name"`
			State        string         `json:"state"`
			Tools        int            `json:"tools"`
			Tier         string         `json:"tier"`
			Verification map[string]int `json:"verification"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal([]byte(stdout), &procs); err != nil {
		t.Fatalf("symbi ls --json: %v\n%s", err, stdout)
	}
	if len(procs) != 1 || procs[0].PID != s.cmd.Process.Pid || len(procs[0].Upstreams) != 2 {
		t.Fatalf("symbi ls --json: %s", stdout)
	}
	for _, u := range procs[0].Upstreams {
		if u.State != "up" || u.Tools == 0 || u.Tier != "none" || u.Verification["unsigned"] != u.Tools {
			t.Errorf("symbi ls --json: upstream %+v", u)
		}
	}

	// symbi logs: the stderr ring of the running upstream.
	waitFor(t, 10*time.Second, "the upstream's stderr in symbi logs", func() bool {
		stdout, _, code := runCLI(t, "logs", "--config", cfg, "second")
		return code == 0 && strings.Contains(stdout, "second-upstream-says-hello")
	})
	// symbi logs -f: what is there, then what comes.
	{
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, symbiBin(t), "logs", "--config", cfg, "-f", "second")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var seen []string
		started := time.Now()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if sc.Text() == "second-upstream-later" {
				break
			}
		}
		t.Logf("symbi logs -f: the later line after %s", time.Since(started).Round(time.Millisecond))
		cancel()
		_ = cmd.Wait()
		if len(seen) < 2 || seen[0] != "second-upstream-says-hello" || seen[len(seen)-1] != "second-upstream-later" {
			t.Errorf("symbi logs -f printed %q", seen)
		}
	}
	if _, stderr, code := runCLI(t, "logs", "--config", cfg, "nosuch"); code == 0 || !strings.Contains(stderr, "no upstream") {
		t.Errorf("symbi logs of an unknown upstream: exit %d, %s", code, stderr)
	}

	// symbi remove: the tools go.
	drainCh(changed)
	stdout, stderr, code = runCLI(t, "remove", "--config", cfg, "second")
	if code != 0 {
		t.Fatalf("symbi remove: exit %d\n%s%s", code, stdout, stderr)
	}
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no notifications/tools/list_changed after symbi remove")
	}
	waitFor(t, 30*time.Second, "the removed upstream's tools to go", func() bool { return !hasPrefix("second__") })
	if !hasPrefix("first__") {
		t.Error("the remaining upstream's tools went too")
	}
	body, _ = os.ReadFile(cfg)
	if strings.Contains(string(body), "second") || !strings.Contains(string(body), "# A closing comment.\n") {
		t.Errorf("config after remove:\n%s", body)
	}
	if _, _, code := runCLI(t, "remove", "--config", cfg, "second"); code != 1 {
		t.Errorf("removing a missing upstream: exit %d, want 1", code)
	}

	// An edit that would break the file is refused, and the file is left alone.
	before, _ := os.ReadFile(cfg)
	if _, stderr, code := runCLI(t, "add", "--config", cfg, "first", "--", "x"); code != 1 || !strings.Contains(stderr, "nothing written") {
		t.Errorf("adding a duplicate name: exit %d\n%s", code, stderr)
	}
	if after, _ := os.ReadFile(cfg); string(after) != string(before) {
		t.Errorf("a refused add changed the file:\n%s", after)
	}

	// The reloads are audited with what they did to the upstreams.
	waitFor(t, 15*time.Second, "the upstream changes in the audit trail", func() bool {
		out, _, _ := runCLI(t, "audit", "query", "--dir", filepath.Join(filepath.Dir(cfg), "data", "audit"), "--type", "config.loaded", "--format", "json")
		return strings.Contains(out, `"upstreams_added":"second"`) && strings.Contains(out, `"upstreams_removed":"second"`)
	})
}

// TestLsStdio: `symbi ls` reaches a `symbi mcp` too (through its control socket), and
// after it exits, reports the configured upstreams as not running.
func TestLsStdio(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("first", "first", mcpgoServer(t)))
	cs := connect(t, stdioTransport(t, cfg), nil)
	if len(toolNames(t, cs)) == 0 {
		t.Fatal("no tools")
	}
	stdout, stderr, code := runCLI(t, "ls", "--config", cfg)
	if code != 0 || !strings.Contains(stdout, "symbi mcp (pid") || !strings.Contains(stdout, "first") {
		t.Fatalf("symbi ls: exit %d\n%s%s", code, stdout, stderr)
	}
	_ = cs.Close()
	waitFor(t, 15*time.Second, "symbi ls to see no running symbi", func() bool {
		stdout, _, code := runCLI(t, "ls", "--config", cfg)
		return code == 0 && strings.Contains(stdout, "no running symbi") && strings.Contains(stdout, "first")
	})
}

func drainCh(ch chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestClientConfig: `symbi client config` prints, for each client, JSON naming the symbi
// binary and the configuration by absolute paths; --write merges the entry into an
// existing file and keeps the other entries.
func TestClientConfig(t *testing.T) {
	cfg := writeConfig(t, "")
	for _, tc := range []struct{ client, top string }{
		{"claude-desktop", "mcpServers"}, {"claude-code", "mcpServers"}, {"vscode", "servers"}, {"cursor", "mcpServers"},
	} {
		stdout, stderr, code := runCLI(t, "client", "config", tc.client, "--config", cfg)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", tc.client, code, stderr)
		}
		var doc map[string]map[string]struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
		}
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
			t.Fatalf("%s: output is not JSON: %v\n%s", tc.client, err, stdout)
		}
		e, ok := doc[tc.top]["symbi"]
		if !ok {
			t.Fatalf("%s: no %s.symbi in\n%s", tc.client, tc.top, stdout)
		}
		if !filepath.IsAbs(e.Command) || e.Command != resolved(t, symbiBin(t)) {
			t.Errorf("%s: command %q, want the absolute path of the binary %q", tc.client, e.Command, symbiBin(t))
		}
		if len(e.Args) != 3 || e.Args[0] != "mcp" || e.Args[1] != "--config" || !filepath.IsAbs(e.Args[2]) || e.Args[2] != cfg {
			t.Errorf("%s: args %q", tc.client, e.Args)
		}
	}

	// --write merges into a file that has other servers and keys.
	file := filepath.Join(t.TempDir(), "claude_desktop_config.json")
	if err := os.WriteFile(file, []byte(`{"globalShortcut": "Ctrl+Space", "mcpServers": {"other": {"command": "/usr/bin/other", "args": ["x"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCLI(t, "client", "config", "claude-desktop", "--config", cfg, "--write", "--file", file); code != 0 {
		t.Fatalf("--write: exit %d\n%s", code, stderr)
	}
	var merged struct {
		GlobalShortcut string                    `json:"globalShortcut"`
		MCPServers     map[string]map[string]any `json:"mcpServers"`
	}
	b, _ := os.ReadFile(file)
	if err := json.Unmarshal(b, &merged); err != nil {
		t.Fatalf("merged file: %v\n%s", err, b)
	}
	if merged.GlobalShortcut != "Ctrl+Space" || merged.MCPServers["other"]["command"] != "/usr/bin/other" || merged.MCPServers["symbi"]["command"] != resolved(t, symbiBin(t)) {
		t.Errorf("merged file:\n%s", b)
	}
	// A file that is not JSON is left alone.
	bad := filepath.Join(t.TempDir(), "mcp.json")
	if err := os.WriteFile(bad, []byte("// comment\n{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, code := runCLI(t, "client", "config", "cursor", "--config", cfg, "--write", "--file", bad); code != 1 {
		t.Errorf("--write into a file that is not JSON: exit %d, want 1", code)
	}
	if b, _ := os.ReadFile(bad); string(b) != "// comment\n{}" {
		t.Errorf("the file that is not JSON was changed:\n%s", b)
	}
}

func resolved(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	a, err := filepath.Abs(r)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
