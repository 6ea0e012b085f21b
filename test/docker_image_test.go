//go:build integration

package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The image the repository's Dockerfile builds, run as a user would run it.

const (
	imageTag       = "symbi-e2e-image:test"
	localBuildBase = "symbi-local/golang:1.26-bookworm" // .ci/baseimages.sh
)

// docker runs the docker CLI and returns its trimmed standard output.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := dockerErr(args...)
	if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func dockerErr(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\n%s", err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// buildImage builds the Dockerfile at the repository root. The build stage starts from
// $SYMBI_BUILD_IMAGE, else the image .ci/baseimages.sh makes, else the public
// golang:1.26-bookworm if the engine has it; the modules come through the host's GOPROXY.
func buildImage(t *testing.T) {
	t.Helper()
	base := os.Getenv("SYMBI_BUILD_IMAGE")
	if base == "" {
		for _, img := range []string{localBuildBase, "golang:1.26-bookworm"} {
			if _, err := dockerErr("image", "inspect", img); err == nil {
				base = img
				break
			}
		}
	}
	if base == "" {
		t.Fatalf("no Go build image: run .ci/baseimages.sh (scripts/test.sh setup) or set SYMBI_BUILD_IMAGE")
	}
	goenv := func(k string) string {
		out, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		return strings.TrimSpace(string(out))
	}
	args := []string{"build", "-t", imageTag,
		"--build-arg", "BUILD_IMAGE=" + base,
		"--build-arg", "GOPROXY=" + goenv("GOPROXY"),
		"--build-arg", "GOSUMDB=" + goenv("GOSUMDB"),
		"--build-arg", "VERSION=e2e",
		// The host's network: the build reaches the module proxy as the host does.
		"--network", "host",
		".."}
	start := time.Now()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	cached := strings.Count(string(out), "Using cache")
	t.Logf("docker build from %s: %s (%d steps from cache); image %s bytes", base,
		time.Since(start).Round(time.Second), cached, docker(t, "image", "inspect", "-f", "{{.Size}}", imageTag))
}

func TestDockerImage(t *testing.T) {
	buildImage(t)

	// The configuration baked into the image validates.
	token := "e2e-token-0123456789abcdef"
	out, err := dockerErr("run", "--rm", "-e", "SYMBI_TOKEN="+token, imageTag, "config", "validate", "/etc/symbi/symbi.toml")
	if err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("config validate of the image's configuration: %v\n%s", err, out)
	}
	if v := docker(t, "run", "--rm", imageTag, "version"); v != "symbi e2e" {
		t.Errorf("symbi version in the image: %q", v)
	}
	// Nothing but symbi in it: there is no shell to run.
	if _, err := dockerErr("run", "--rm", "--entrypoint", "/bin/sh", imageTag, "-c", "true"); err == nil {
		t.Error("the runtime image has a shell")
	}

	// Run it as in Kubernetes: read-only root, /tmp a tmpfs, a volume for data_dir, our
	// configuration mounted over the image's.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "symbi.toml")
	if err := os.WriteFile(cfg, []byte(`version = 1
[server]
listen = "0.0.0.0:8080"
data_dir = "/var/lib/symbi"
[[server.tokens]]
token = "env:SYMBI_TOKEN"
identity = "e2e-operator"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("symbi-e2e-image-%d", os.Getpid())
	id := docker(t, "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp",
		"--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"-v", cfg+":/etc/symbi/symbi.toml:ro", "-e", "SYMBI_TOKEN="+token, imageTag)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := exec.Command("docker", "logs", id).CombinedOutput()
			t.Logf("container logs:\n%s", logs)
		}
		_, _ = dockerErr("rm", "-f", "-v", id)
	})
	ip := docker(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", id)
	if ip == "" {
		t.Fatal("the container has no IP address")
	}
	base := "http://" + ip + ":8080"

	// /healthz and /readyz answer without a token, as probes do.
	waitFor(t, 60*time.Second, "/healthz of the container", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
	// /mcp needs the token.
	resp, err := http.Post(base+"/mcp", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /mcp without a token: %d, want 401", resp.StatusCode)
	}

	// A built-in tool over streamable HTTP with the token.
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: base + "/mcp",
		HTTPClient: &http.Client{Transport: bearerTransport{token}}}, nil)
	if _, ok := toolNames(t, cs)["symbi__status"]; !ok {
		t.Fatal("symbi__status is not listed")
	}
	text, isErr := callText(t, cs, "symbi__status", map[string]any{})
	if isErr || text == "" {
		t.Fatalf("symbi__status: error=%v %q", isErr, text)
	}

	// The process runs as the image's non-root user, in every uid and gid.
	pid := docker(t, "inspect", "-f", "{{.State.Pid}}", id)
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") {
			for _, v := range f[1:] {
				if v != "10001" {
					t.Errorf("container process %s %v: want 10001 throughout", f[0], f[1:])
					break
				}
			}
		}
	}
	if user := docker(t, "exec", id, "/usr/local/bin/symbi", "version"); user != "symbi e2e" {
		t.Errorf("docker exec symbi version: %q", user)
	}

	// State went to the volume: the SQLite file and the audit trail, owned by symbi.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	doctor, _ := exec.CommandContext(ctx, "docker", "exec", "-e", "SYMBI_TOKEN="+token, id,
		"/usr/local/bin/symbi", "doctor", "--config", "/etc/symbi/symbi.toml").CombinedOutput()
	for _, want := range []string{"ok   data dir writable", "ok   state (SQLite)", "container"} {
		if !strings.Contains(string(doctor), want) {
			t.Errorf("symbi doctor in the container does not report %q:\n%s", want, doctor)
		}
	}
	t.Logf("symbi doctor in the container:\n%s", doctor)
}
