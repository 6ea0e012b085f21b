package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/internal/config"
)

func TestAgentsUsage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no command", nil, 2, "usage: symbi agents"},
		{"help", []string{"help"}, 0, "usage: symbi agents"},
		{"unknown command", []string{"restart", "x"}, 2, `unknown command "restart"`},
		{"list takes no name", []string{"list", "x"}, 2, "list takes no arguments"},
		{"run needs a name", []string{"run"}, 2, "run takes one NAME"},
		{"unreachable symbi", []string{"list", "--url", "http://127.0.0.1:1/mcp"}, 2, "connect to http://127.0.0.1:1/mcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"agents"}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("symbi agents %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
			}
		})
	}
}

func TestAgentDefinition(t *testing.T) {
	d, err := definition(config.Agent{Name: "n", Kind: "workflow", Schedule: "0 0 2 * * *", Timezone: "Europe/Paris", Missed: "run_once",
		Priority: "critical", Limits: config.AgentLimits{Timeout: config.Duration{Duration: time.Minute}, Memory: 1 << 20, CPUs: 0.5, MaxConcurrent: 3},
		Steps: []config.Step{{Tool: "a__b", Save: "x", Retries: 2, Backoff: config.Duration{Duration: time.Second}}}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Schedule == nil || d.Schedule.Location.String() != "Europe/Paris" || d.Schedule.Missed != agents.MissedRunOnce {
		t.Errorf("schedule %+v", d.Schedule)
	}
	d.Schedule = nil
	want := agents.Definition{Name: "n", Kind: "workflow", Identity: "agent:n", Priority: agents.PriorityCritical, Timeout: time.Minute,
		MemoryBytes: 1 << 20, MilliCPU: 500, MaxConcurrent: 3, Steps: []agents.Step{{Tool: "a__b", Save: "x", Retries: 2, Backoff: time.Second}}}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("definition mismatch (-want +got):\n%s", diff)
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{"0.0.0.0:8080": "127.0.0.1:8080", "[::]:80": "127.0.0.1:80", "10.0.0.1:9": "10.0.0.1:9", ":7": "127.0.0.1:7"} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}

// symbi config validate checks the files under agents_dir too.
func TestConfigValidateAgentsDir(t *testing.T) {
	dir := t.TempDir()
	agentsDir := filepath.Join(dir, "agents.d")
	if err := os.Mkdir(agentsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "symbi.toml")
	body := fmt.Sprintf("version = 1\nagents_dir = %q\n\n[[agents]]\nname = \"a\"\nsteps = [{ tool = \"x__y\" }]\n", agentsDir)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(agentsDir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("b.toml", "[[agents]]\nname = \"b\"\nsteps = [{ tool = \"x__y\" }]\n")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"config", "validate", cfg}, &stdout, &stderr); code != 0 {
		t.Fatalf("validate with good agent files: exit %d\n%s", code, stderr.String())
	}
	write("c.toml", "[[agents]]\nname = \"a\"\nschedule = \"0 2 * * *\"\nsteps = [{ tool = \"x__y\" }]\n")
	stdout.Reset()
	stderr.Reset()
	code := run(context.Background(), []string{"config", "validate", cfg}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "c.toml: agents[0].schedule: parse schedule") {
		t.Errorf("validate with a bad agent file: exit %d\n%s", code, stderr.String())
	}
	write("c.toml", "[[agents]]\nname = \"a\"\nsteps = [{ tool = \"x__y\" }]\n")
	stderr.Reset()
	code = run(context.Background(), []string{"config", "validate", cfg}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "c.toml: name a: duplicates an agent in [[agents]]") {
		t.Errorf("validate with an agent defined twice: exit %d\n%s", code, stderr.String())
	}
}
