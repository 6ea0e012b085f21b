package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestUpstreamCrashRestarts(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
	cs := connect(t, stdioTransport(t, cfg), nil)
	if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": "before"}); isErr || text != "echo: before" {
		t.Fatalf("before crash: %q %v", text, isErr)
	}
	// The upstream exits in the middle of the call: the client gets a clear tool error
	// quickly, not a hang and not a dead session.
	start := time.Now()
	text, isErr := callText(t, cs, "mg__crash", map[string]any{})
	if !isErr || !strings.Contains(text, `upstream "mg"`) {
		t.Fatalf("crash call = %q (error %v), want a tool error naming the upstream", text, isErr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("crash call took %v", d)
	}
	// It comes back by itself (restart with backoff).
	waitFor(t, 30*time.Second, "upstream restart", func() bool {
		text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": "after"})
		return !isErr && text == "echo: after"
	})
	text, _ = callText(t, cs, "symbi__upstreams", map[string]any{})
	if !strings.Contains(text, `"restarts":1`) {
		t.Errorf("symbi__upstreams after a restart = %s", text)
	}
}

func TestUpstreamHangTimesOut(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+"timeout = \"1s\"\n")
	cs := connect(t, stdioTransport(t, cfg), nil)
	start := time.Now()
	text, isErr := callText(t, cs, "mg__sleep", map[string]any{"ms": 60000})
	if !isErr || !strings.Contains(text, "did not answer within 1s") {
		t.Fatalf("hanging call = %q (error %v)", text, isErr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("hanging call returned after %v, want about 1s", d)
	}
	// The upstream and the session are still usable.
	if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": "ok"}); isErr || text != "echo: ok" {
		t.Fatalf("after timeout: %q %v", text, isErr)
	}
}

func TestUpstreamGarbageIsSkipped(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
	cs := connect(t, stdioTransport(t, cfg), nil)
	for i := range 3 {
		if text, isErr := callText(t, cs, "mg__garbage", map[string]any{}); isErr || text != "still here" {
			t.Fatalf("garbage call %d = %q %v", i, text, isErr)
		}
	}
	if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": "x"}); isErr || text != "echo: x" {
		t.Fatalf("after garbage: %q %v", text, isErr)
	}
}

func TestUpstreamGetsOnlyConfiguredEnvironment(t *testing.T) {
	t.Setenv("SYMBI_TEST_LEAK", "must-not-leak")
	t.Setenv("SYMBI_TEST_KEY", "secret-value")
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+"env = { API_KEY = \"env:SYMBI_TEST_KEY\" }\n")
	cs := connect(t, stdioTransport(t, cfg), nil)
	text, isErr := callText(t, cs, "mg__env", map[string]any{})
	if isErr {
		t.Fatal(text)
	}
	got := strings.Split(text, ",")
	want := map[string]bool{"PATH": true, "API_KEY": true}
	if len(got) != len(want) || !want[got[0]] || !want[got[1]] {
		t.Errorf("upstream environment = %v, want exactly PATH and API_KEY", got)
	}
}

// rawStdio drives `symbi mcp` with hand-written lines.
type rawStdio struct {
	in  io.WriteCloser
	out *bufio.Reader
}

func startRaw(t *testing.T, cfg string) *rawStdio {
	cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("symbi mcp did not exit when stdin closed")
		}
		if t.Failed() {
			t.Logf("stderr:\n%s", stderr.String())
		}
	})
	return &rawStdio{in: in, out: bufio.NewReaderSize(out, 1<<20)}
}

func (r *rawStdio) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(r.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func (r *rawStdio) recv(t *testing.T) map[string]any {
	t.Helper()
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := r.out.ReadString('\n')
		ch <- res{l, err}
	}()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatalf("read: %v", got.err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(got.line), &m); err != nil {
			t.Fatalf("stdout carried a non-JSON line %q", got.line)
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no answer from symbi mcp")
	}
	return nil
}

func TestClientGarbageGetsSpecErrors(t *testing.T) {
	cfg := writeConfig(t, "")
	r := startRaw(t, cfg)
	r.send(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if m := r.recv(t); m["result"] == nil {
		t.Fatalf("initialize: %v", m)
	}
	r.send(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	big := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"symbi__status","arguments":{"pad":"` + strings.Repeat("x", 5<<20) + `"}}}`
	for _, tc := range []struct {
		name, line string
		code       float64
	}{
		{"not json", "hello there", -32700},
		{"truncated json", `{"jsonrpc":"2.0","id":2,"method":`, -32700},
		{"batch", `[{"jsonrpc":"2.0","id":3,"method":"ping"}]`, -32600},
		{"oversized", big, -32600},
		{"unknown method", `{"jsonrpc":"2.0","id":4,"method":"no/such"}`, -32601},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.send(t, tc.line)
			m := r.recv(t)
			e, _ := m["error"].(map[string]any)
			if e == nil || e["code"] != tc.code {
				t.Fatalf("answer = %v, want error code %v", m, tc.code)
			}
		})
	}
	// The session survived all of it.
	r.send(t, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"symbi__status","arguments":{}}}`)
	m := r.recv(t)
	if m["id"] != float64(5) || m["result"] == nil {
		t.Fatalf("after garbage: %v", m)
	}
}

func TestHTTPUpstreamRestartIsTransparent(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	startUp := func() *exec.Cmd {
		cmd := exec.Command(mcpgoServer(t), "-http", addr)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "mcpgo http", func() bool { return dialOK(addr) })
		return cmd
	}
	up := startUp()
	t.Cleanup(func() { _ = up.Process.Kill(); _ = up.Wait() })
	cfg := writeConfig(t, fmt.Sprintf("[[upstreams]]\nname = \"remote\"\nurl = \"http://%s/mcp\"\nheaders = { X-Test = \"yes\" }\n", addr))
	cs := connect(t, stdioTransport(t, cfg), nil)
	if text, isErr := callText(t, cs, "remote__echo", map[string]any{"message": "one"}); isErr || text != "echo: one" {
		t.Fatalf("first call: %q %v", text, isErr)
	}
	// The upstream restarts and forgets its sessions; symbi re-initializes.
	_ = up.Process.Kill()
	_ = up.Wait()
	up = startUp()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "remote__echo", Arguments: map[string]any{"message": "two"}})
	if err != nil || res.IsError || resultText(res) != "echo: two" {
		t.Fatalf("call after upstream restart: %v %+v", err, res)
	}
}
