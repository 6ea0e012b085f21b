package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDoctor(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream string
		code     int
		want     []string
	}{
		{"defaults", "", 0, []string{"ok   policy compiles", "decisions cached by input.", "info web console", "/ui/ (symbi serve; no tokens: local browsers only", "all checks passed"}},
		{"missing command", "[[upstreams]]\nname = \"gone\"\ncommand = [\"/nonexistent/mcp-server\"]\n", 1,
			[]string{"FAIL upstream gone", "risk assessment: docker", "tier none runs the server as a host process"}},
		// doctor starts the upstream and shows why it failed in the server's own words.
		{"failing server shows its stderr", "[[upstreams]]\nname = \"typo\"\ncommand = [\"sh\", \"-c\", \"echo 'npm error 404 Not Found: @modelcontextprotocol/server-everythin' >&2; exit 1\"]\n", 1,
			[]string{"FAIL upstream typo", "stderr: npm error 404 Not Found: @modelcontextprotocol/server-everythin"}},
		{"auto tier assessed", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"auto\", image = \"x\", network = \"bridge\", sensitivity = \"restricted\" }\n", -1,
			[]string{"risk assessment: gvisor", "needs outbound network", "+25 handles restricted data"}},
		// Isolation given up is refused unless opted in, and an opt-in is shown.
		{"host network refused", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"docker\", image = \"x\", network = \"host\" }\n", 1,
			[]string{"upstreams[0].sandbox.network", `unsafe = ["host_network"]`}},
		{"container network refused", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"gvisor\", image = \"x\", network = \"container:db\" }\n", 1,
			[]string{"upstreams[0].sandbox.network", "container_network"}},
		{"root refused", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"docker\", image = \"x\", user = \"0:0\" }\n", 1,
			[]string{"upstreams[0].sandbox.user", "root_user"}},
		{"data dir mount refused", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"docker\", image = \"x\", mounts = [\"DATA/audit:/a\"] }\n", 1,
			[]string{"upstreams[0].sandbox.mounts[0]", "inside DATA"}},
		{"unknown unsafe refused", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"docker\", image = \"x\", unsafe = [\"all\"] }\n", 1,
			[]string{"upstreams[0].sandbox.unsafe[0]"}},
		// The shared state is checked by connecting; the URL's password is never shown.
		{"shared state unreachable", "[state]\nstore = \"postgres://symbi:s3cret-pw@127.0.0.1:1/symbi?connect_timeout=2\"\n", 1,
			[]string{"FAIL shared state (PostgreSQL)"}},
		{"opt-in shown", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"docker\", image = \"x\", network = \"host\", unsafe = [\"host_network\"] }\n", -1,
			[]string{"WARN upstream web", `unsafe "host_network"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "c.toml")
			data := filepath.Join(dir, "data")
			tc.upstream = strings.ReplaceAll(tc.upstream, "DATA", data)
			for i, w := range tc.want {
				tc.want[i] = strings.ReplaceAll(w, "DATA", data)
			}
			body := "version = 1\n[server]\ndata_dir = " + strings.ReplaceAll(`"`+data+`"`, `\`, `\\`) + "\n" + tc.upstream
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := run(context.Background(), []string{"doctor", "--config", cfg}, &out, &errb)
			if tc.code >= 0 && code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.code, out.String(), errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String()+errb.String(), "s3cret-pw") {
				t.Errorf("output shows a password:\n%s%s", out.String(), errb.String())
			}
		})
	}
}

// TestDoctorCatalog: doctor names the built-in catalog, and for an upstream that runs a
// catalog server, its suggested tier and policy notes and the environment it lacks.
func TestDoctorCatalog(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.toml")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"add", "--config", cfg, "--no-reload", "github"}, &out, &errb); code != 0 {
		t.Fatalf("symbi add github: exit %d\n%s%s", code, out.String(), errb.String())
	}
	// Without the env line the catalog asks for (and no time to really start it: npx
	// would fetch the package).
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, "env = ") {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(cfg, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	run(context.Background(), []string{"doctor", "--config", cfg, "--timeout", "1ms"}, &out, &errb)
	for _, w := range []string{"ok   server catalog", "well-known servers built in", "catalog: github (suggested tier gvisor",
		"WARN upstream github", "needs GITHUB_PERSONAL_ACCESS_TOKEN"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("doctor output lacks %q:\n%s", w, out.String())
		}
	}
}
