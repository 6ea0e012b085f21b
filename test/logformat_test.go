package test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// checkJSONLines fails unless every line of stderr is one JSON object with time, level
// and msg, and some line has the message want.
func checkJSONLines(t *testing.T, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	found := false
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("stderr line %d is not JSON (%v): %q", i+1, err, line)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if s, ok := rec[k].(string); !ok || s == "" {
				t.Errorf("stderr line %d has no %s: %q", i+1, k, line)
			}
		}
		if rec["msg"] == want {
			found = true
		}
	}
	if !found {
		t.Errorf("no log record %q among %d lines:\n%s", want, len(lines), stderr)
	}
}

// TestLogFormatJSONMCP runs `symbi mcp --log-format json` with an upstream, makes a call
// through it and checks that stderr holds only JSON lines while stdout stays the MCP
// stream (the client session would break otherwise).
func TestLogFormatJSONMCP(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("conf", "conf", everythingServer(t)))
	cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg, "--log-format", "json", "--log-level", "debug")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "logjson", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, stderr.String())
	}
	if _, ok := toolNames(t, cs)["conf__test_simple_text"]; !ok {
		t.Fatalf("conf__test_simple_text not listed\n%s", stderr.String())
	}
	if _, isErr := callText(t, cs, "conf__test_simple_text", map[string]any{}); isErr {
		t.Errorf("call failed\n%s", stderr.String())
	}
	if err := cs.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	checkJSONLines(t, stderr.String(), "serving MCP on stdio")
}

// TestLogFormatJSONServe does the same for `symbi serve`, through its shutdown, with the
// format chosen by SYMBI_LOG_FORMAT.
func TestLogFormatJSONServe(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("conf", "conf", everythingServer(t)))
	t.Setenv("SYMBI_LOG_FORMAT", "json")
	s := serve(t, cfg)
	if err := s.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		s.done <- err // the cleanup waits on it too
		if err != nil {
			t.Errorf("symbi serve exited: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("symbi serve did not stop")
	}
	stderr := s.stderr.String()
	if strings.Count(stderr, "\n") < 2 {
		t.Fatalf("too few log lines to check:\n%s", stderr)
	}
	checkJSONLines(t, stderr, "shutting down")
}
