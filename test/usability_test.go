package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestRelativePathsFollowTheConfigFile starts `symbi mcp` from another working directory,
// as an IDE does (often from "/"), with a configuration whose data_dir, policy dir and
// upstream command are relative: they must be found beside the configuration file, and
// nothing may be created in the working directory.
func TestRelativePathsFollowTheConfigFile(t *testing.T) {
	home := t.TempDir()
	for _, d := range []string{"bin", "policies"} {
		if err := os.Mkdir(filepath.Join(home, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(mcpgoServer(t), filepath.Join(home, "bin", "server")); err != nil {
		t.Fatal(err)
	}
	// A policy that hides one tool proves the relative policy dir was read.
	pol := "package symbi.authz\n\nimport rego.v1\n\ndefault decision := {\"allow\": true}\n\n" +
		"decision := {\"allow\": false, \"reason\": \"hidden\"} if input.tool.upstream_name == \"crash\"\n"
	if err := os.WriteFile(filepath.Join(home, "policies", "p.rego"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(home, "symbi.toml")
	body := "version = 1\n[server]\ndata_dir = \"state\"\n[policy]\ndir = \"./policies\"\n" +
		"[[upstreams]]\nname = \"mg\"\ncommand = [\"./bin/server\"]\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
	cmd.Dir = elsewhere
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("symbi mcp stderr:\n%s", stderr.String())
		}
	})
	cs := connect(t, &mcp.CommandTransport{Command: cmd}, nil)
	tools := toolNames(t, cs)
	if tools["mg__echo"] == nil {
		t.Errorf("mg__echo not listed: the relative command ./bin/server was not found beside the configuration (tools %v)", keysOf(tools))
	}
	if tools["mg__crash"] != nil {
		t.Errorf("mg__crash listed: the relative policy dir ./policies was not read")
	}
	_ = cs.Close() // symbi exits when stdin closes; the transport waits for it
	if _, err := os.Stat(filepath.Join(home, "state", "audit")); err != nil {
		t.Errorf("no audit trail beside the configuration: %v", err)
	}
	entries, err := os.ReadDir(elsewhere)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("symbi created %s in its working directory", e.Name())
	}
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
