package test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConfigReloadOnSIGHUP: SIGHUP re-reads the configuration file. A changed bearer token
// applies at once (the old one gets 401, the new one is served); a changed server.listen
// is named as needing a restart; a broken file changes nothing, names every problem with
// its key, and the server goes on with the configuration in force. Each reload is
// recorded in the audit trail.
func TestConfigReloadOnSIGHUP(t *testing.T) {
	const tokA, tokB = "reload-token-a-0123456789abcdef", "reload-token-b-0123456789abcdef"
	dir := t.TempDir()
	cfg := filepath.Join(dir, "symbi.toml")
	write := func(listen, token, extra string) {
		t.Helper()
		body := fmt.Sprintf("version = 1\n[server]\nlisten = %q\ndata_dir = %q\n%s\n[[server.tokens]]\ntoken = %q\nidentity = \"ops\"\n",
			listen, filepath.Join(dir, "data"), extra, token)
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("127.0.0.1:0", tokA, "")
	s := serve(t, cfg)

	status := func(token string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+s.addr+"/mcp",
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	expect := func(step string, want map[string]int) {
		t.Helper()
		for tok, code := range want {
			if got := status(tok); got != code {
				t.Errorf("%s: POST /mcp with token %.16s...: status %d, want %d", step, tok, got, code)
			}
		}
	}
	reloads := 0
	hup := func() {
		t.Helper()
		reloads++
		if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the configuration reload to be logged", func() bool {
			out := s.stderr.String()
			return strings.Count(out, "configuration reloaded")+strings.Count(out, "configuration not reloaded") >= reloads
		})
	}

	expect("at start", map[string]int{tokA: http.StatusOK, tokB: http.StatusUnauthorized})

	write("127.0.0.1:0", tokB, "")
	hup()
	expect("token changed", map[string]int{tokA: http.StatusUnauthorized, tokB: http.StatusOK})
	if strings.Contains(s.stderr.String(), "needs a restart") {
		t.Errorf("a token change was reported as needing a restart:\n%s", s.stderr.String())
	}

	write("127.0.0.1:1", tokB, "metrics_listen = \"127.0.0.1:2\"")
	hup()
	if want := "configuration change needs a restart: server.listen, server.metrics_listen"; !strings.Contains(s.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, s.stderr.String())
	}
	expect("listen changed", map[string]int{tokA: http.StatusUnauthorized, tokB: http.StatusOK})

	// Broken: an unknown key and a value of the wrong type, and a token that would let A
	// in again. Nothing of it applies.
	write("127.0.0.1:0", tokA, "max_message_bytes = \"lots\"\nlisten_twice = true")
	hup()
	out := s.stderr.String()
	for _, want := range []string{"configuration not reloaded", "key=server.max_message_bytes", "key=server.listen_twice"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	expect("broken file", map[string]int{tokA: http.StatusUnauthorized, tokB: http.StatusOK})

	// The reloads are in the audit trail (written in batches: wait for the batch).
	var trail string
	waitFor(t, 10*time.Second, "two config reloads in the audit trail", func() bool {
		stdout, stderr, code := runCLI(t, "audit", "query", "--dir", filepath.Join(dir, "data", "audit"), "--type", "config.loaded", "--format", "json")
		if code != 0 {
			t.Fatalf("audit query: exit %d\n%s", code, stderr)
		}
		trail = stdout
		return strings.Count(stdout, "reload (SIGHUP)") >= 2
	})
	if got := strings.Count(trail, "reload (SIGHUP)"); got != 2 {
		t.Errorf("audit trail has %d config reloads, want 2 (the broken file is not one):\n%s", got, trail)
	}
	if !strings.Contains(trail, "server.listen,server.metrics_listen") {
		t.Errorf("audit trail does not name the keys that need a restart:\n%s", trail)
	}
}
