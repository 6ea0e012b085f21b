package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/internal/config"
)

// mainRun runs the whole CLI and returns its exit code and output.
func mainRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// mainWriteConfig writes a configuration file into a fresh temporary directory.
func mainWriteConfig(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const mainGoodConfig = `version = 1
[[server.tokens]]
token = "env:SYMBI_MAIN_TEST_TOKEN"
identity = "ide"
[[upstreams]]
name = "alpha"
command = ["alpha-server"]
env = { API_KEY = "env:SYMBI_MAIN_TEST_KEY", PLAIN = "visible-but-masked" }
[[upstreams]]
name = "beta"
url = "https://beta.example.com/mcp"
headers = { Authorization = "Bearer literal-header-secret" }
prefix = ""
`

const mainBadConfig = `version = 3
[server]
listen = "nowhere"
lisen = "typo"
[[upstreams]]
name = "Alpha"
prefix = "a"
command = ["x"]
url = "http://h/mcp"
`

const (
	mainSecretToken = "cli-test-token-0123456789"
	mainSecretKey   = "cli-test-api-key-secret"
)

func TestMainRun(t *testing.T) {
	t.Setenv("SYMBI_MAIN_TEST_TOKEN", mainSecretToken)
	t.Setenv("SYMBI_MAIN_TEST_KEY", mainSecretKey)
	good := mainWriteConfig(t, "good.toml", mainGoodConfig)
	bad := mainWriteConfig(t, "bad.toml", mainBadConfig)
	missing := filepath.Join(t.TempDir(), "missing.toml")

	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string // substrings
		wantStderr []string // substrings
		notStdout  []string // substrings that must not appear
	}{
		{name: "no args", args: nil, wantCode: 2, wantStderr: []string{"usage: symbi <command>", "config", "serve", "mcp", "version"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: []string{`unknown command "frobnicate"`, "usage: symbi"}},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStderr: []string{"usage: symbi"}},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStderr: []string{"usage: symbi"}},
		{name: "--help", args: []string{"--help"}, wantCode: 0, wantStderr: []string{"usage: symbi"}},
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: []string{"symbi "}},

		{name: "config validate good", args: []string{"config", "validate", good}, wantCode: 0,
			wantStdout: []string{good + ": ok", "2 upstream(s): alpha, beta"}},
		{name: "config validate bad", args: []string{"config", "validate", bad}, wantCode: 1,
			wantStderr: []string{
				bad + ": 5 problem(s)",
				"  server.lisen: unknown key",
				"  version: must be 1 (got 3)",
				"  server.listen: not a host:port address",
				"  upstreams[0].name: must match",
				"  upstreams[0]: has both command and url",
			}},
		{name: "config validate missing file", args: []string{"config", "validate", missing}, wantCode: 2,
			wantStderr: []string{"symbi config:", "missing.toml"}},
		{name: "config no subcommand", args: []string{"config"}, wantCode: 2, wantStderr: []string{"usage: symbi config"}},
		{name: "config validate without file", args: []string{"config", "validate"}, wantCode: 2, wantStderr: []string{"usage: symbi config"}},
		{name: "config validate two files", args: []string{"config", "validate", good, bad}, wantCode: 2, wantStderr: []string{"usage: symbi config"}},
		{name: "config unknown subcommand", args: []string{"config", "check", good}, wantCode: 2, wantStderr: []string{"usage: symbi config"}},
		{name: "config show bad", args: []string{"config", "show", bad}, wantCode: 1, wantStderr: []string{"version: must be 1"}},
		{name: "config show redacts", args: []string{"config", "show", good}, wantCode: 0,
			wantStdout: []string{"REDACTED", `identity = "ide"`, `name = "alpha"`, `url = "https://beta.example.com/mcp"`},
			notStdout:  []string{mainSecretToken, mainSecretKey, "literal-header-secret", "visible-but-masked", "env:"}},

		{name: "mcp bad config", args: []string{"mcp", "--config", bad}, wantCode: 2,
			wantStderr: []string{"symbi mcp:", "version: must be 1 (got 3)", "upstreams[0]: has both command and url"}},
		{name: "mcp missing config", args: []string{"mcp", "--config", missing}, wantCode: 2, wantStderr: []string{"symbi mcp:", "missing.toml"}},
		{name: "mcp extra argument", args: []string{"mcp", "stray"}, wantCode: 2, wantStderr: []string{"unexpected arguments"}},
		{name: "mcp bad log level", args: []string{"mcp", "--log-level", "loud", "--config", good}, wantCode: 2, wantStderr: []string{"log level"}},
		{name: "serve bad log format", args: []string{"serve", "--log-format", "xml", "--config", good}, wantCode: 2,
			wantStderr: []string{"symbi serve:", `log format "xml": must be text or json`}},
		{name: "serve unknown flag", args: []string{"serve", "--port", "80"}, wantCode: 2, wantStderr: []string{"flag provided but not defined: -port"}},
		{name: "serve bad config", args: []string{"serve", "--config", bad}, wantCode: 2, wantStderr: []string{"symbi serve:", "server.listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := mainRun(t, tc.args...)
			if code != tc.wantCode {
				t.Errorf("run(%q) = %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.wantCode, stdout, stderr)
			}
			for _, s := range tc.wantStdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.wantStderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			for _, s := range tc.notStdout {
				if strings.Contains(stdout, s) {
					t.Errorf("stdout contains %q:\n%s", s, stdout)
				}
			}
		})
	}
}

// TestMainConfigValidateEveryProblemLine checks that each problem is one stderr line of the
// form "  key: message", in the order config.Parse reports them, and nothing goes to stdout.
func TestMainConfigValidateEveryProblemLine(t *testing.T) {
	bad := mainWriteConfig(t, "bad.toml", mainBadConfig)
	code, stdout, stderr := mainRun(t, "config", "validate", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	var gotKeys []string
	for _, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n")[1:] {
		k, _, ok := strings.Cut(strings.TrimPrefix(line, "  "), ": ")
		if !ok || !strings.HasPrefix(line, "  ") {
			t.Errorf("malformed problem line %q", line)
		}
		gotKeys = append(gotKeys, k)
	}
	want := []string{"server.lisen", "version", "server.listen", "upstreams[0].name", "upstreams[0]"}
	if diff := cmp.Diff(want, gotKeys); diff != "" {
		t.Errorf("problem keys (-want +got):\n%s", diff)
	}
}

// TestMainConfigShowRoundTrip: what `config show` prints, for a file without secrets, is
// itself a valid configuration equal to the original.
func TestMainConfigShowRoundTrip(t *testing.T) {
	src := `version = 1
[server]
listen = "127.0.0.1:9999"
shutdown_timeout = "3s"
[[upstreams]]
name = "alpha"
command = ["alpha-server", "--flag"]
timeout = "90s"
sandbox = { tier = "gvisor", image = "local/a:1", cpus = 0.5, mounts = ["/a:/b"] }
schemapin = { mode = "strict", domain = "example.com" }
[[upstreams]]
name = "beta"
url = "http://127.0.0.1:1/sse"
transport = "sse"
prefix = ""
[audit]
fsync = "every"
`
	path := mainWriteConfig(t, "src.toml", src)
	code, stdout, stderr := mainRun(t, "config", "show", path)
	if code != 0 {
		t.Fatalf("config show exit %d: %s", code, stderr)
	}
	want, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.Parse("shown.toml", []byte(stdout), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config show output does not parse: %v\n%s", err, stdout)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

// mainSyncBuffer is a bytes.Buffer safe to read while run writes to it.
type mainSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *mainSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *mainSyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMainServeRunsAndStops starts `symbi serve` on a free port with no upstreams, checks
// /healthz, then cancels the context and expects a clean exit 0.
func TestMainServeRunsAndStops(t *testing.T) {
	dir := t.TempDir()
	path := mainWriteConfig(t, "serve.toml", `version = 1
[server]
listen = "127.0.0.1:0"
data_dir = "`+filepath.ToSlash(filepath.Join(dir, "data"))+`"
shutdown_timeout = "2s"
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr mainSyncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", path, "--log-level", "warn"}, &stdout, &stderr) }()

	addrRE := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/mcp`)
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		select {
		case code := <-done:
			t.Fatalf("serve exited early with %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("serve printed no address\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Errorf("GET /healthz: %v", err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /healthz = %s", resp.Status)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exit %d after cancel, want 0\nstderr:\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("data_dir not created: %v", err)
	}
}

// TestMainServeListenInUse: an address that cannot be bound is a configuration error (2).
func TestMainServeListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	path := mainWriteConfig(t, "serve.toml", `version = 1
[server]
listen = "`+ln.Addr().String()+`"
data_dir = "`+filepath.ToSlash(filepath.Join(dir, "data"))+`"
`)
	code, _, stderr := mainRun(t, "serve", "--config", path)
	if code != 2 || !strings.Contains(stderr, "listen") {
		t.Errorf("serve on a busy address = %d, want 2 with a listen error; stderr:\n%s", code, stderr)
	}
}
