// Package test holds symbi's end-to-end tests: they build the real symbi binary and real
// MCP servers (the official SDK's everything servers, an mcp-go server, the npm reference
// server) and talk to them with real clients over every transport.
package test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/pgtest"
)

var (
	binDir  string
	bins    = map[string]string{}
	buildMu sync.Mutex
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "symbi-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	pgtest.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bin builds a main package once per test run and returns the binary's path.
func bin(t testing.TB, name, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := bins[name]; ok {
		return p
	}
	out := filepath.Join(binDir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	bins[name] = out
	return out
}

func symbiBin(t testing.TB) string { return bin(t, "symbi", "github.com/symbi-dev/symbi/cmd/symbi") }
func everythingServer(t testing.TB) string {
	return bin(t, "everything-server", "github.com/modelcontextprotocol/go-sdk/conformance/everything-server")
}
func sdkExample(t testing.TB) string {
	return bin(t, "sdk-everything", "github.com/modelcontextprotocol/go-sdk/examples/server/everything")
}
func mcpgoServer(t testing.TB) string {
	return bin(t, "mcpgo", "github.com/symbi-dev/symbi/test/servers/mcpgo")
}

// writeConfig writes a config file whose [server] section points into a temp dir.
func writeConfig(t testing.TB, body string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("version = 1\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = %q\n\n%s", filepath.Join(dir, "data"), body)
	p := filepath.Join(dir, "symbi.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// upstreamTOML renders one stdio upstream.
func upstreamTOML(name, prefix string, argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf("[[upstreams]]\nname = %q\nprefix = %q\ncommand = [%s]\n\n", name, prefix, strings.Join(q, ", "))
}

// served is a running `symbi serve`.
type served struct {
	addr   string
	scheme string // http, or https with server.tls_cert
	// client reaches the server: http.DefaultClient, or with TLS one that trusts the
	// certificate the test gave serveWith.
	client *http.Client
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var addrRE = regexp.MustCompile(`(https?)://([0-9.:]+)/mcp`)

// serve starts `symbi serve --config cfg` and waits until it prints its address and
// /readyz answers 200.
func serve(t testing.TB, cfg string, extraArgs ...string) *served {
	t.Helper()
	return serveWith(t, http.DefaultClient, cfg, extraArgs...)
}

// serveWith is serve, reaching /readyz with client (one that trusts symbi's TLS
// certificate, say).
func serveWith(t testing.TB, client *http.Client, cfg string, extraArgs ...string) *served {
	t.Helper()
	cmd := exec.Command(symbiBin(t), append([]string{"serve", "--config", cfg}, extraArgs...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan error, 1), client: client}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("symbi serve stderr:\n%s", s.stderr.String())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case line := <-lines:
		m := addrRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected first line from symbi serve: %q", line)
		}
		s.scheme, s.addr = m[1], m[2]
	case err := <-s.done:
		s.done <- err // the cleanup waits on it too
		t.Fatalf("symbi serve exited: %v\n%s", err, s.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("symbi serve did not start\n%s", s.stderr.String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.client.Get(s.scheme + "://" + s.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("symbi not ready: %v\n%s", err, s.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// transports lists the ways a go-sdk client reaches symbi.
type transportCase struct {
	name    string
	connect func(t testing.TB, cfg string) mcp.Transport
}

func stdioTransport(t testing.TB, cfg string) mcp.Transport {
	cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("symbi mcp stderr:\n%s", stderr.String())
		}
	})
	return &mcp.CommandTransport{Command: cmd}
}

var transports = []transportCase{
	{"stdio", stdioTransport},
	{"streamable", func(t testing.TB, cfg string) mcp.Transport {
		s := serve(t, cfg)
		return &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}
	}},
	{"sse", func(t testing.TB, cfg string) mcp.Transport {
		s := serve(t, cfg)
		return &mcp.SSEClientTransport{Endpoint: "http://" + s.addr + "/sse"}
	}},
	{"websocket", func(t testing.TB, cfg string) mcp.Transport {
		s := serve(t, cfg)
		return &gateway.WebSocketClientTransport{URL: "ws://" + s.addr + "/ws"}
	}},
}

// connect starts a go-sdk client session over tr.
func connect(t testing.TB, tr mcp.Transport, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	return connectVersion(t, tr, opts, "")
}

// connectVersion is connect asking for a protocol version ("" = the latest).
func connectVersion(t testing.TB, tr mcp.Transport, opts *mcp.ClientOptions, version string) *mcp.ClientSession {
	t.Helper()
	// The SSE client keeps its event stream on Connect's context: it must outlive the call.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, opts)
	var sopts *mcp.ClientSessionOptions
	if version != "" {
		sopts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := c.Connect(ctx, tr, sopts)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

func toolNames(t testing.TB, cs *mcp.ClientSession) map[string]*mcp.Tool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]*mcp.Tool{}
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("list tools: %v", err)
		}
		out[tool.Name] = tool
	}
	return out
}

func callText(t testing.TB, cs *mcp.ClientSession, name string, args any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	return resultText(res), res.IsError
}

func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
