package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// agentsPolicy allows everything but mg__add for the agent "adder" and, as a marker a
// client can observe, mg__env for everyone (%s is an extra condition of both: "false"
// lifts the denials).
const agentsPolicy = `package symbi.authz

default decision := {"allow": true}

decision := {"allow": false, "reason": "agents may not add"} if {
	input.action == "tools/call"
	input.identity.id == "agent:adder"
	input.identity.kind == "agent"
	input.tool.upstream_name == "add"
	%[1]s
}

decision := {"allow": false, "reason": "marker"} if {
	input.action == "tools/call"
	input.tool.upstream_name == "env"
	%[1]s
}
`

type agentRun struct {
	ID      string `json:"id"`
	Trigger string `json:"trigger"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
	Step    int    `json:"step"`
}

type agentStatus struct {
	Name     string     `json:"name"`
	Identity string     `json:"identity"`
	State    string     `json:"state"`
	Reason   string     `json:"reason"`
	NextRun  string     `json:"next_run"`
	Runs     []agentRun `json:"recent_runs"`
}

// agentsCLI runs `symbi agents ARGS --url URL` and returns stdout; it fails the test
// on a non-zero exit.
func agentsCLI(t *testing.T, url string, args ...string) string {
	t.Helper()
	out, stderr, code := runCLI(t, append(append([]string{"agents"}, args...), "--url", url)...)
	if code != 0 {
		t.Fatalf("symbi agents %v: exit %d\n%s", args, code, stderr)
	}
	return out
}

func agentState(t *testing.T, url, name string) agentStatus {
	t.Helper()
	var st agentStatus
	if err := json.Unmarshal([]byte(agentsCLI(t, url, "status", name, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAgents: a workflow agent runs on its schedule and on demand, as its own identity
// in the audit trail; a policy denial suspends it with the policy's reason; once the
// policy allows, resume continues the run at the denied step. The CLI, the tools and the
// resources show it all.
func TestAgents(t *testing.T) {
	pol := policyDir(t, map[string]string{"authz.rego": fmt.Sprintf(agentsPolicy, "true")})
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+fmt.Sprintf(`[policy]
dir = %q

[scheduler]
max_running = 4

[[agents]]
name = "ticker"
schedule = "* * * * * *"
steps = [
  { tool = "mg__echo", arguments = { message = "tick" }, save = "first" },
  { tool = "mg__echo", arguments = { message = "{{ .first.text }} again" } },
]

[[agents]]
name = "adder"
priority = "high"
limits = { timeout = "30s" }
steps = [
  { tool = "mg__echo", arguments = { message = "before adding" }, save = "e" },
  { tool = "mg__add", arguments = { a = 1, b = 2 }, when = "{{ .e.text }}" },
]
`, pol))
	s := serve(t, cfg)
	url := "http://" + s.addr + "/mcp"
	auditDir := filepath.Join(dataDirOf(cfg), "audit")

	// On its schedule, as itself.
	waitFor(t, 20*time.Second, "a scheduled run of ticker", func() bool {
		for _, r := range agentState(t, url, "ticker").Runs {
			if r.Trigger == "schedule" && r.State == "succeeded" && r.Step == 2 {
				return true
			}
		}
		return false
	})
	recs, _ := auditQuery(t, auditDir, "--identity", "agent:ticker", "--type", "call", "--tool", "mg__echo")
	if len(recs) < 2 || recs[0].Decision != "allow" || recs[0].Outcome != "ok" {
		t.Fatalf("audit calls of agent:ticker = %+v, want allowed echo calls", recs)
	}

	// On demand: denied at step 2, so suspended with the policy's reason.
	out := agentsCLI(t, url, "run", "adder")
	if !strings.Contains(out, "adder") || !strings.Contains(out, "queued") {
		t.Errorf("symbi agents run: %q", out)
	}
	var st agentStatus
	waitFor(t, 20*time.Second, "adder suspended", func() bool {
		st = agentState(t, url, "adder")
		return st.State == "suspended"
	})
	if st.Reason != "step 2 (mg__add): denied by policy: agents may not add" || st.Identity != "agent:adder" {
		t.Errorf("suspended adder = %+v", st)
	}
	if len(st.Runs) != 1 || st.Runs[0].Trigger != "manual" || st.Runs[0].State != "suspended" || st.Runs[0].Step != 1 {
		t.Errorf("adder's runs = %+v, want one manual run suspended after step 1", st.Runs)
	}
	denied, _ := auditQuery(t, auditDir, "--identity", "agent:adder", "--tool", "mg__add")
	if len(denied) != 1 || denied[0].Decision != "deny" || denied[0].Reason != "agents may not add" {
		t.Errorf("audit of the denied call = %+v", denied)
	}
	if _, stderr, code := runCLI(t, "agents", "run", "adder", "--url", url); code != 1 || !strings.Contains(stderr, "agent adder is suspended: cannot run") {
		t.Errorf("run of a suspended agent: exit %d %q, want 1 and the reason", code, stderr)
	}

	// The policy now allows it; resume continues at step 2 (step 1 is not repeated).
	marker := connect(t, &mcp.StreamableClientTransport{Endpoint: url}, nil)
	if _, err := call(t, marker, "mg__env", map[string]any{}); err == nil || !strings.Contains(err.Error(), "marker") {
		t.Fatalf("mg__env before the policy change: %v, want the marker denial", err)
	}
	writeAtomic(t, filepath.Join(pol, "authz.rego"), []byte(fmt.Sprintf(agentsPolicy, "false")))
	waitFor(t, 20*time.Second, "the policy reload", func() bool {
		_, err := call(t, marker, "mg__env", map[string]any{})
		return err == nil
	})
	agentsCLI(t, url, "resume", "adder")
	waitFor(t, 20*time.Second, "adder's resumed run", func() bool {
		st = agentState(t, url, "adder")
		return st.State == "ready" && len(st.Runs) == 2 && st.Runs[0].State == "succeeded"
	})
	if st.Runs[0].Trigger != "resume" || st.Runs[0].Step != 2 {
		t.Errorf("resumed run = %+v", st.Runs[0])
	}
	echoes, _ := auditQuery(t, auditDir, "--identity", "agent:adder", "--tool", "mg__echo")
	adds, _ := auditQuery(t, auditDir, "--identity", "agent:adder", "--tool", "mg__add", "--decision", "allow")
	if len(echoes) != 1 || len(adds) != 1 || adds[0].Outcome != "ok" {
		t.Errorf("adder's audited calls: %d echo, %d allowed add (%+v); want 1 and 1", len(echoes), len(adds), adds)
	}
	transitions, _ := auditQuery(t, auditDir, "--identity", "agent:adder", "--type", "agent.state")
	var got []string
	for _, r := range transitions {
		got = append(got, r.Reason)
	}
	if len(transitions) < 5 {
		t.Errorf("adder's recorded transitions: %q, want initializing>ready>running>suspended>running>ready", got)
	}

	// The list, the resources and the metrics.
	list := agentsCLI(t, url, "list")
	for _, want := range []string{"adder", "ticker", "agent:ticker", "* * * * * *"} {
		if !strings.Contains(list, want) {
			t.Errorf("symbi agents list lacks %q:\n%s", want, list)
		}
	}
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: url}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lr, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	uris := map[string]bool{}
	for _, r := range lr.Resources {
		uris[r.URI] = true
	}
	for _, u := range []string{"symbi://agents", "symbi://agents/adder", "symbi://agents/ticker", "symbi://scheduler"} {
		if !uris[u] {
			t.Errorf("resources/list lacks %s", u)
		}
	}
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "symbi://agents/adder"})
	if err != nil {
		t.Fatal(err)
	}
	var res agentStatus
	if err := json.Unmarshal([]byte(rr.Contents[0].Text), &res); err != nil || res.State != "ready" {
		t.Errorf("symbi://agents/adder = %s (%v)", rr.Contents[0].Text, err)
	}
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`symbi_scheduler_queued{priority="high"}`, `symbi_scheduler_tasks_total{state="succeeded"}`, "symbi_scheduler_wait_seconds_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestAgentsDirHotReload: an agent file dropped into agents_dir appears without a
// restart (and a resources/list_changed tells clients); a broken file is reported and
// leaves the agents as they were.
func TestAgentsDirHotReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "agents.d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// agents_dir is a top-level key: it goes before writeConfig's [server] table.
	cfg := filepath.Join(t.TempDir(), "symbi.toml")
	body := fmt.Sprintf("version = 1\nagents_dir = %q\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = %q\n\n%s",
		dir, filepath.Join(filepath.Dir(cfg), "data"), upstreamTOML("mg", "mg", mcpgoServer(t)))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	s := serve(t, cfg)
	url := "http://" + s.addr + "/mcp"
	changed := make(chan struct{}, 10)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: url}, &mcp.ClientOptions{
		ResourceListChangedHandler: func(context.Context, *mcp.ResourceListChangedRequest) { changed <- struct{}{} },
	})
	if out := agentsCLI(t, url, "list"); strings.Contains(out, "late") {
		t.Fatalf("agent listed before its file exists:\n%s", out)
	}
	writeAtomic(t, filepath.Join(dir, "late.toml"), []byte("[[agents]]\nname = \"late\"\nsteps = [{ tool = \"mg__echo\", arguments = { message = \"hi\" } }]\n"))
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("no resources/list_changed after an agent file appeared")
	}
	if out := agentsCLI(t, url, "list"); !strings.Contains(out, "late") || !strings.Contains(out, "ready") {
		t.Errorf("symbi agents list after the reload:\n%s", out)
	}
	writeAtomic(t, filepath.Join(dir, "broken.toml"), []byte("[[agents]]\nname = \"broken\"\nbogus = 1\n"))
	waitFor(t, 20*time.Second, "the broken file to be reported", func() bool {
		return strings.Contains(s.stderr.String(), "broken.toml: agents[0].bogus")
	})
	if out := agentsCLI(t, url, "list"); !strings.Contains(out, "late") {
		t.Errorf("a broken file removed the other agents:\n%s", out)
	}
	_ = cs
}

// TestAgentsConfigReloadOnSIGHUP: an agent added to [[agents]] of the main file is loaded
// on SIGHUP (listed, scheduled, run on demand as itself), changing the file's other agent
// reloads it, and a removed agent goes; no reload names agents as needing a restart, and
// each is recorded in the audit trail with the agents it added and removed.
func TestAgentsConfigReloadOnSIGHUP(t *testing.T) {
	up := upstreamTOML("mg", "mg", mcpgoServer(t))
	stay := "[[agents]]\nname = \"stay\"\nsteps = [{ tool = \"mg__echo\", arguments = { message = \"%s\" } }]\n"
	late := "[[agents]]\nname = \"late\"\nschedule = \"* * * * * *\"\nsteps = [{ tool = \"mg__echo\", arguments = { message = \"late\" } }]\n"
	cfg := writeConfig(t, up+fmt.Sprintf(stay, "one"))
	s := serve(t, cfg)
	url := "http://" + s.addr + "/mcp"
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	head, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(string(head), fmt.Sprintf(stay, "one"))
	hup := func(body string) {
		t.Helper()
		writeAtomic(t, cfg, []byte(base+body))
		if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	if out := agentsCLI(t, url, "list"); strings.Contains(out, "late") || !strings.Contains(out, "stay") {
		t.Fatalf("symbi agents list at start:\n%s", out)
	}

	// Added: listed, on its schedule and on demand, as itself.
	hup(fmt.Sprintf(stay, "one") + late)
	waitFor(t, 20*time.Second, "late to be listed after SIGHUP", func() bool {
		return strings.Contains(agentsCLI(t, url, "list"), "late")
	})
	if out := agentsCLI(t, url, "run", "late"); !strings.Contains(out, "late") || !strings.Contains(out, "queued") {
		t.Errorf("symbi agents run late: %q", out)
	}
	waitFor(t, 20*time.Second, "a scheduled and an on-demand run of late", func() bool {
		var sched, manual bool
		for _, r := range agentState(t, url, "late").Runs {
			if r.State == "succeeded" {
				sched = sched || r.Trigger == "schedule"
				manual = manual || r.Trigger != "schedule"
			}
		}
		return sched && manual
	})
	if recs, _ := auditQuery(t, auditDir, "--identity", "agent:late", "--type", "call", "--tool", "mg__echo"); len(recs) == 0 || recs[0].Decision != "allow" {
		t.Errorf("audit calls of agent:late = %+v, want allowed echo calls", recs)
	}

	// Changed: the new definition is in force (its run echoes the new message).
	hup(fmt.Sprintf(stay, "two") + late)
	waitFor(t, 20*time.Second, "the changed agent stay to be reloaded", func() bool {
		return strings.Contains(s.stderr.String(), "changed=stay")
	})
	agentsCLI(t, url, "run", "stay")
	waitFor(t, 20*time.Second, "a run of the changed agent stay", func() bool {
		for _, r := range agentState(t, url, "stay").Runs {
			if r.State == "succeeded" {
				return true
			}
		}
		return false
	})

	// Removed: gone from the list and from status.
	hup(fmt.Sprintf(stay, "two"))
	waitFor(t, 20*time.Second, "late to be gone after SIGHUP", func() bool {
		return !strings.Contains(agentsCLI(t, url, "list"), "late")
	})
	if _, _, code := runCLI(t, "agents", "status", "late", "--url", url); code == 0 {
		t.Errorf("symbi agents status late: exit 0 after the agent was removed")
	}
	if out := agentsCLI(t, url, "list"); !strings.Contains(out, "stay") {
		t.Errorf("removing late removed stay too:\n%s", out)
	}
	if strings.Contains(s.stderr.String(), "needs a restart") {
		t.Errorf("an agents change was reported as needing a restart:\n%s", s.stderr.String())
	}

	// Audited: the reloads with the agents they added and removed, and late's removal.
	waitFor(t, 10*time.Second, "the agent reloads in the audit trail", func() bool {
		out, stderr, code := runCLI(t, "audit", "query", "--dir", auditDir, "--type", "config.loaded", "--format", "json")
		if code != 0 {
			t.Fatalf("audit query: exit %d\n%s", code, stderr)
		}
		return strings.Contains(out, `"agents_added":"late"`) && strings.Contains(out, `"agents_changed":"stay"`) &&
			strings.Contains(out, `"agents_removed":"late"`)
	})
	waitFor(t, 10*time.Second, "late's removal in the audit trail", func() bool {
		out, _, _ := runCLI(t, "audit", "query", "--dir", auditDir, "--type", "agent.state", "--format", "json")
		return strings.Contains(out, `"to":"removed"`) && strings.Contains(out, `"agent":"late"`)
	})
}
