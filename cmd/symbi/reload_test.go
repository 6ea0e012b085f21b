package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/internal/config"
)

// TestDiffConfig: the keys that changed between two files, split into those a SIGHUP
// applies (the tokens) and those that need a restart, each named.
func TestDiffConfig(t *testing.T) {
	const base = `version = 1
[server]
listen = "127.0.0.1:8080"
data_dir = "data"
[[server.tokens]]
token = "token-a-0123456789abcdef"
identity = "alice"
[policy]
eval_timeout = "1s"
[[upstreams]]
name = "one"
command = ["true"]
[[upstreams]]
name = "two"
command = ["true"]
`
	parse := func(t *testing.T, src string) *config.Config {
		t.Helper()
		c, err := config.Parse("/etc/symbi/symbi.toml", []byte(src), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name string
		cur  string
		want configDiff
	}{
		{"unchanged", base, configDiff{}},
		{"token changed", replace(base, "token-a-", "token-b-"), configDiff{Live: []string{"server.tokens"}}},
		{"identity changed", replace(base, `"alice"`, `"bob"`), configDiff{Live: []string{"server.tokens"}}},
		{"listen", replace(base, "8080", "8081"), configDiff{Restart: []string{"server.listen"}}},
		{"data_dir", replace(base, `"data"`, `"other"`), configDiff{Restart: []string{"server.data_dir"}}},
		{"metrics and token", replace(replace(base, "data_dir = \"data\"\n", "data_dir = \"data\"\nmetrics_listen = \"127.0.0.1:9090\"\n"), "token-a-", "token-c-"),
			configDiff{Live: []string{"server.tokens"}, Restart: []string{"server.metrics_listen"}}},
		{"tls", replace(base, "data_dir = \"data\"\n", "data_dir = \"data\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"),
			configDiff{Restart: []string{"server.tls_cert", "server.tls_key"}}},
		{"policy", replace(base, `"1s"`, `"2s"`), configDiff{Restart: []string{"policy.eval_timeout"}}},
		{"audit", base + "[audit]\nfsync = \"every\"\n", configDiff{Restart: []string{"audit.fsync"}}},
		{"upstream changed", replace(base, "name = \"two\"\ncommand = [\"true\"]", "name = \"two\"\ncommand = [\"false\"]"),
			configDiff{Live: []string{"upstreams.two"}}},
		{"upstream added", base + "[[upstreams]]\nname = \"three\"\ncommand = [\"true\"]\n", configDiff{Live: []string{"upstreams.three"}}},
		{"upstream removed and renamed", replace(base, `name = "one"`, `name = "uno"`), configDiff{Live: []string{"upstreams.one", "upstreams.uno"}}},
		{"upstreams reordered", `version = 1
[server]
listen = "127.0.0.1:8080"
data_dir = "data"
[[server.tokens]]
token = "token-a-0123456789abcdef"
identity = "alice"
[policy]
eval_timeout = "1s"
[[upstreams]]
name = "two"
command = ["true"]
[[upstreams]]
name = "one"
command = ["true"]
`, configDiff{}},
		{"scheduler", base + "[scheduler]\nmax_running = 3\n", configDiff{Restart: []string{"scheduler.max_running"}}},
		{"agents_dir", "agents_dir = \"agents\"\n" + base, configDiff{Restart: []string{"agents_dir"}}},
		{"agent added", base + agentTOML("late", "hi"), configDiff{Live: []string{"agents.late"}}},
		{"agent and listen", replace(base, "8080", "8081") + agentTOML("late", "hi"),
			configDiff{Live: []string{"agents.late"}, Restart: []string{"server.listen"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := diffConfig(parse(t, base), parse(t, tc.cur))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("diffConfig mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDiffConfigAgents: each [[agents]] entry added, removed or changed is a live key
// "agents.NAME", and the reload is told which were added, removed and changed.
func TestDiffConfigAgents(t *testing.T) {
	const head = "version = 1\n[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"data\"\n"
	parse := func(t *testing.T, src string) *config.Config {
		t.Helper()
		c, err := config.Parse("/etc/symbi/symbi.toml", []byte(src), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ab := head + agentTOML("a", "hi") + agentTOML("b", "hi")
	for _, tc := range []struct {
		name                     string
		old, cur                 string
		live                     []string
		added, removed, modified []string
	}{
		{"unchanged", ab, ab, nil, nil, nil, nil},
		{"reordered", ab, head + agentTOML("b", "hi") + agentTOML("a", "hi"), nil, nil, nil, nil},
		{"added", head, ab, []string{"agents.a", "agents.b"}, []string{"a", "b"}, nil, nil},
		{"removed", ab, head + agentTOML("b", "hi"), []string{"agents.a"}, nil, []string{"a"}, nil},
		{"all removed", ab, head, []string{"agents.a", "agents.b"}, nil, []string{"a", "b"}, nil},
		{"changed", ab, head + agentTOML("a", "hi") + agentTOML("b", "bye"), []string{"agents.b"}, nil, nil, []string{"b"}},
		{"schedule set", ab, head + agentTOML("a", "hi") + agentTOML("b", "hi") + "schedule = \"0 * * * * *\"\n",
			[]string{"agents.b"}, nil, nil, []string{"b"}},
		{"renamed and changed", ab, head + agentTOML("c", "hi") + agentTOML("b", "bye"),
			[]string{"agents.a", "agents.b", "agents.c"}, []string{"c"}, []string{"a"}, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := parse(t, tc.old), parse(t, tc.cur)
			if diff := cmp.Diff(configDiff{Live: tc.live}, diffConfig(old, cur)); diff != "" {
				t.Errorf("diffConfig mismatch (-want +got):\n%s", diff)
			}
			added, removed, modified := agentChanges(old.Agents, cur.Agents)
			if diff := cmp.Diff([][]string{tc.added, tc.removed, tc.modified}, [][]string{added, removed, modified}); diff != "" {
				t.Errorf("agentChanges (added, removed, changed) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// agentTOML is a workflow agent that echoes message through upstream "one".
func agentTOML(name, message string) string {
	return "[[agents]]\nname = \"" + name + "\"\nsteps = [{ tool = \"one__echo\", arguments = { message = \"" + message + "\" } }]\n"
}

// replace replaces the first old in s, which must be there.
func replace(s, old, new string) string {
	if !strings.Contains(s, old) {
		panic("replace: " + old + " not in the text")
	}
	return strings.Replace(s, old, new, 1)
}
