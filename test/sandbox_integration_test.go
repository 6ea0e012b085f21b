//go:build integration

package test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// These tests run upstreams in the real Docker and gVisor tiers behind the real symbi
// binary (.ci/docker.sh sets up Docker with the runsc runtime).

const e2eProbeImage = "symbi-e2e-probe:test"

var probeImageOnce sync.Once
var probeImageErr error

func dockerClient(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// probeImage builds the sandbox package's probe server statically and an image FROM
// scratch holding it, once per test binary.
func probeImage(t testing.TB) string {
	t.Helper()
	probeImageOnce.Do(func() { probeImageErr = buildScratchImage("../sandbox/testdata/probe", "probe", e2eProbeImage) })
	if probeImageErr != nil {
		t.Fatal(probeImageErr)
	}
	return e2eProbeImage
}

// buildScratchImage builds the Go package pkg as a static binary called name and an
// image FROM scratch, tagged tag, whose entry point it is.
func buildScratchImage(pkg, name, tag string) error {
	bin := filepath.Join(binDir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v\n%s", name, err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, fmt.Appendf(nil, "FROM scratch\nCOPY %s /%s\nENTRYPOINT [\"/%s\"]\n", name, name, name)},
		{name, 0o755, body},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return err
	}
	defer cli.Close()
	res, err := cli.ImageBuild(context.Background(), &buf, client.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if msg.Error != "" {
			return fmt.Errorf("build image %s: %s", tag, msg.Error)
		}
	}
}

type probeReport struct {
	UID          int      `json:"uid"`
	CapEff       string   `json:"cap_eff"`
	RootWritable bool     `json:"root_writable"`
	Interfaces   []string `json:"interfaces"`
	Dmesg        string   `json:"dmesg"`
	ProcVersion  string   `json:"proc_version"`
	EnvNames     []string `json:"env_names"`
}

func TestSandboxedUpstreamThroughSymbi(t *testing.T) {
	img := probeImage(t)
	for _, tier := range []string{"docker", "gvisor"} {
		t.Run(tier, func(t *testing.T) {
			t.Setenv("SYMBI_SECRET_FOR_TEST", "must-not-leak")
			cfg := writeConfig(t, fmt.Sprintf("[[upstreams]]\nname = \"box\"\ncommand = [\"/probe\"]\nenv = { MODE = \"test\" }\n"+
				"sandbox = { tier = %q, image = %q, memory = \"64m\", pids = 64 }\n", tier, img))
			s := serve(t, cfg)
			cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "box__probe", Arguments: map[string]any{}})
			if err != nil || res.IsError {
				t.Fatalf("probe: %v %+v", err, res)
			}
			var rep probeReport
			b, _ := json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.UID == 0 || rep.RootWritable || strings.Trim(rep.CapEff, "0") != "" {
				t.Errorf("inside the %s tier: uid %d, / writable %v, CapEff %s", tier, rep.UID, rep.RootWritable, rep.CapEff)
			}
			for _, ifc := range rep.Interfaces {
				if ifc != "lo" {
					t.Errorf("network interface %q inside a network=none sandbox", ifc)
				}
			}
			for _, e := range rep.EnvNames {
				if e == "SYMBI_SECRET_FOR_TEST" {
					t.Error("the host environment leaked into the sandbox")
				}
			}
			if tier == "gvisor" && !strings.Contains(rep.Dmesg+rep.ProcVersion, "gVisor") {
				t.Errorf("no gVisor evidence: dmesg %q, /proc/version %q", rep.Dmesg, rep.ProcVersion)
			}
			// The tier is visible to operators.
			resp, err := http.Get("http://" + s.addr + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), `"tier":"`+tier+`"`) {
				t.Errorf("/readyz does not show tier %s: %s", tier, body)
			}
		})
	}
}

// TestSandboxOOMReported: a memory hog in the docker tier is OOM-killed; the client
// gets a tool error that says so, metrics count it, and the upstream comes back.
func TestSandboxOOMReported(t *testing.T) {
	img := probeImage(t)
	cfg := writeConfig(t, fmt.Sprintf("[[upstreams]]\nname = \"box\"\ncommand = [\"/probe\"]\n"+
		"sandbox = { tier = \"docker\", image = %q, memory = \"64m\" }\n", img))
	s := serve(t, cfg)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	text, isErr := callText(t, cs, "box__hog", map[string]any{"max_mib": 1024})
	if !isErr || !strings.Contains(text, "out of memory") {
		t.Fatalf("hog result = %q (error %v), want a tool error naming the OOM kill", text, isErr)
	}
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `symbi_upstream_exits_total{reason="oom",upstream="box"} 1`) {
		t.Errorf("metrics do not count the OOM kill:\n%s", grepLines(string(body), "symbi_upstream_exits_total"))
	}
	waitFor(t, 60*time.Second, "the upstream back after the OOM kill", func() bool {
		_, isErr := callText(t, cs, "box__echo", map[string]any{"text": "back"})
		return !isErr
	})
}

// TestNoContainerLeftAfterKill: symbi killed with SIGKILL leaves its container behind;
// the next start reaps it.
func TestNoContainerLeftAfterKill(t *testing.T) {
	img := probeImage(t)
	cli := dockerClient(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "symbi.toml")
	cfg := fmt.Sprintf("version = 1\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = %q\n[[upstreams]]\nname = \"box\"\ncommand = [\"/probe\"]\nsandbox = { tier = \"docker\", image = %q }\n", filepath.Join(dir, "data"), img)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := func() map[string]bool {
		f := client.Filters{}
		f.Add("label", "symbi.managed=true")
		f.Add("label", "symbi.upstream=box")
		list, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, c := range list.Items {
			out[c.ID] = true
		}
		return out
	}
	before := ids()
	s := serve(t, cfgPath)
	var stale string
	waitFor(t, 30*time.Second, "the upstream container", func() bool {
		for id := range ids() {
			if !before[id] {
				stale = id
				return true
			}
		}
		return false
	})
	_ = s.cmd.Process.Kill()
	err := <-s.done
	s.done <- err // the cleanup waits on it too
	if !ids()[stale] {
		t.Fatal("the container vanished with symbi; the test cannot show reaping")
	}
	serve(t, cfgPath)
	waitFor(t, 30*time.Second, "the stale container reaped", func() bool { return !ids()[stale] })
}
