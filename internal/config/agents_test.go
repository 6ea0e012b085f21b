package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseAgents(t *testing.T) {
	const file = `
version = 1
agents_dir = "./agents.d"

[scheduler]
max_running = 8
max_queued = 100
task_ttl = "30m"
input_timeout = "2m"
placement = "best_fit"
[[scheduler.pool]]
memory = "4g"
cpus = 2.0

[[agents]]
name = "nightly-report"
schedule = "0 0 2 * * *"
timezone = "Europe/Paris"
jitter = "30s"
missed = "run_once"
priority = "high"
limits = { timeout = "5m", memory = "256m", max_concurrent = 2 }
steps = [
  { tool = "fs__read_text_file", arguments = { path = "/data/in.txt" }, save = "doc" },
  { tool = "kb__ingest", arguments = { text = "{{ .doc.text }}" }, when = "{{ .doc.text }}", retries = 2, backoff = "2s" },
]
`
	c, err := Parse("agents.toml", []byte(file), env(nil))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Scheduler{MaxRunning: 8, MaxQueued: 100, TaskTTL: dur(30 * time.Minute), InputTimeout: dur(2 * time.Minute), Placement: "best_fit",
		Pool: []PoolPartition{{Memory: 4 << 30, CPUs: 2}}}
	if diff := cmp.Diff(want, c.Scheduler); diff != "" {
		t.Errorf("scheduler mismatch (-want +got):\n%s", diff)
	}
	wantAgent := Agent{Name: "nightly-report", Kind: "workflow", Schedule: "0 0 2 * * *", Timezone: "Europe/Paris", Jitter: dur(30 * time.Second),
		Missed: "run_once", Priority: "high", Limits: AgentLimits{Timeout: dur(5 * time.Minute), Memory: 256 << 20, MaxConcurrent: 2},
		Steps: []Step{
			{Tool: "fs__read_text_file", Arguments: map[string]any{"path": "/data/in.txt"}, Save: "doc"},
			{Tool: "kb__ingest", Arguments: map[string]any{"text": "{{ .doc.text }}"}, When: "{{ .doc.text }}", Retries: 2, Backoff: dur(2 * time.Second)},
		}}
	if diff := cmp.Diff([]Agent{wantAgent}, c.Agents); diff != "" {
		t.Errorf("agents mismatch (-want +got):\n%s", diff)
	}
	if c.AgentsDir != "./agents.d" || c.Agents[0].AgentIdentity() != "agent:nightly-report" {
		t.Errorf("agents_dir %q identity %q", c.AgentsDir, c.Agents[0].AgentIdentity())
	}
}

func TestAgentProblems(t *testing.T) {
	const file = `
version = 1
[scheduler]
max_running = -1
input_timeout = "-1s"
placement = "worst_fit"
[[scheduler.pool]]
slots = -2

[[agents]]
name = "Bad Name"
kind = "daemon"
schedule = "0 2 * * *"
priority = "urgent"
limits = { timeout = "-1s", max_concurrent = -1 }

[[agents]]
name = "twice"
timezone = "Europe/Paris"
steps = [
  { arguments = { a = "{{ .x " }, save = "1x", retries = 11 },
  { tool = "a b", when = "{{ if }}", save = "ok" },
  { tool = "t", save = "ok" },
]

[[agents]]
name = "twice"
kind = "container"
steps = [{ tool = "t", bogus = 1 }]

[[agents]]
name = "wf"
image = "x"
steps = [{ tool = "t" }]

[[agents]]
name = "steps"
kind = "container"
image = "i"
steps = [{ tool = "t" }]

[[agents]]
name = "box"
kind = "container"
sandbox = "vm"
image = "i"
env = { SYMBI_IDENTITY = "root", OK = "1" }

[[agents]]
name = "host"
kind = "container"
sandbox = "none"
`
	_, err := Parse("bad.toml", []byte(file), env(nil))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Parse: %v, want *Error", err)
	}
	var got []string
	for _, p := range ce.Problems {
		got = append(got, p.Key)
	}
	want := []string{
		"agents[2].steps[0].bogus",
		"scheduler.max_running", "scheduler.input_timeout", "scheduler.placement", "scheduler.pool[0].slots",
		"agents[0].name", "agents[0].kind", "agents[0].schedule", "agents[0].priority", "agents[0].limits.timeout",
		"agents[0].limits.max_concurrent",
		"agents[1].schedule", "agents[1].steps[0].tool", "agents[1].steps[0].save", "agents[1].steps[0].arguments.a",
		"agents[1].steps[0].retries", "agents[1].steps[1].tool", "agents[1].steps[1].when", "agents[1].steps[2].save",
		"agents[2].image", "agents[3].kind", "agents[4].steps", "agents[5].sandbox", "agents[5].env", "agents[6].command",
		"agents[2].name",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem keys mismatch (-want +got):\n%s\n%v", diff, ce)
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"256m", 256 << 20, true}, {"1g", 1 << 30, true}, {"512K", 512 << 10, true}, {"100", 100, true}, {"2gb", 2 << 30, true},
		{"lots", 0, false}, {"-1m", 0, false}, {"", 0, false}, {"99999999999g", 0, false},
	} {
		got, err := ParseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestLoadAgentsDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.toml", "[[agents]]\nname = \"a\"\nsteps = [{ tool = \"x__y\" }]\n")
	write("b.toml", "[[agents]]\nname = \"b\"\nschedule = \"@every 1m\"\nsteps = [{ tool = \"x__y\" }]\n")
	write("ignored.txt", "not toml")
	as, err := LoadAgentsDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 2 || as[0].Name != "a" || as[1].Name != "b" || as[1].File != filepath.Join(dir, "b.toml") {
		t.Errorf("LoadAgentsDir = %+v", as)
	}
	write("c.toml", "[[agents]]\nname = \"a\"\nsteps = []\nextra = 1\n")
	_, err = LoadAgentsDir(dir)
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("LoadAgentsDir with a bad file: %v", err)
	}
	var got []string
	for _, p := range ce.Problems {
		got = append(got, p.Key)
	}
	want := []string{"c.toml: agents[0].extra", "c.toml: agents[0].steps", "c.toml: name a"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem keys mismatch (-want +got):\n%s", diff)
	}
}

func TestAgentIdentityOfAClient(t *testing.T) {
	const file = `
version = 1
[[server.tokens]]
token = "0123456789abcdef0123"
identity = "agent:spy"
[[server.tokens]]
token = "abcdef0123456789abcd"
identity = "ide"

[[agents]]
name = "spy"
steps = [{ tool = "t" }]

[[agents]]
name = "other"
identity = "ide"
steps = [{ tool = "t" }]

[[agents]]
name = "fine"
steps = [{ tool = "t" }]
`
	var got []string
	for _, p := range problems(t, file, nil) {
		got = append(got, p.String())
	}
	want := []string{
		`agents[0].identity: "agent:spy" is the identity of a server.tokens client`,
		`agents[1].identity: "ide" is the identity of a server.tokens client`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}
