//go:build integration

package sandbox

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// These tests need a Docker daemon with the runsc runtime (.ci/docker.sh sets one up).

const probeImage = "symbi-probe:test"

var (
	probeOnce sync.Once
	probeBin  string
	probeErr  error
)

// buildProbe compiles testdata/probe statically and builds the image FROM scratch
// through the Docker API. Once per test binary.
func buildProbe(tb testing.TB, sb *Sandbox) string {
	tb.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "symbi-probe-")
		if err != nil {
			probeErr = err
			return
		}
		probeBin = filepath.Join(dir, "probe")
		cmd := exec.Command("go", "build", "-trimpath", "-o", probeBin, "./testdata/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("build probe: %v\n%s", err, out)
			return
		}
		probeErr = buildImage(context.Background(), sb, probeBin)
	})
	if probeErr != nil {
		tb.Fatal(probeErr)
	}
	return probeBin
}

func buildImage(ctx context.Context, sb *Sandbox, bin string) error {
	d, err := sb.dockerClient()
	if err != nil {
		return err
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
		{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\n")},
		{"probe", 0o755, body},
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
	res, err := d.cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{probeImage}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read build output: %w", err)
		}
		if msg.Error != "" {
			return fmt.Errorf("build image: %s", msg.Error)
		}
	}
}

func newSandbox(tb testing.TB) *Sandbox {
	tb.Helper()
	sb := New(&Options{GracePeriod: 2 * time.Second})
	ctx := context.Background()
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		if err := sb.Available(ctx, tier); err != nil {
			tb.Fatalf("tier %s unavailable (run .ci/docker.sh): %v", tier, err)
		}
	}
	buildProbe(tb, sb)
	tb.Cleanup(func() {
		if err := sb.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		assertNoContainers(tb, sb.opts.Instance)
	})
	return sb
}

// assertNoContainers checks that no container of the given instance exists.
func assertNoContainers(tb testing.TB, instance string) {
	tb.Helper()
	cli, err := client.New()
	if err != nil {
		tb.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: client.Filters{}.Add("label", LabelInstance+"="+instance)})
	if err != nil {
		tb.Fatal(err)
	}
	if len(list.Items) != 0 {
		tb.Errorf("%d containers of instance %s left behind", len(list.Items), instance)
	}
}

func containerExists(tb testing.TB, id string) bool {
	tb.Helper()
	cli, err := client.New()
	if err != nil {
		tb.Fatal(err)
	}
	defer cli.Close()
	_, err = cli.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil && isNotFound(err) {
		return false
	}
	if err != nil {
		tb.Fatal(err)
	}
	return true
}

func probeSpec(tier Tier) Spec {
	if tier == TierNone {
		return Spec{Name: "probe", Tier: TierNone, Command: []string{probeBin}}
	}
	return Spec{Name: "probe", Tier: tier, Image: probeImage, Memory: "64m", Pids: 64}
}

// startProbe starts spec and connects an MCP client to it; both are closed when the
// test ends.
func startProbe(ctx context.Context, t *testing.T, sb *Sandbox, spec Spec) (Process, *mcp.ClientSession) {
	t.Helper()
	p, err := sb.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	cs := connect(ctx, t, p)
	t.Cleanup(func() { cs.Close() })
	return p, cs
}

// connect runs the MCP handshake over the process's stdio.
func connect(ctx context.Context, tb testing.TB, p Process) *mcp.ClientSession {
	tb.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "symbi-test", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.IOTransport{Reader: p.Stdout(), Writer: p.Stdin()}, nil)
	if err != nil {
		stderr := drain(p.Stderr())
		tb.Fatalf("connect to %s upstream: %v; stderr: %s", p.Tier(), err, stderr)
	}
	return cs
}

// drain returns what stderr holds now without waiting for more.
func drain(r io.Reader) string {
	ch := make(chan string, 1)
	go func() {
		b := make([]byte, 4096)
		n, _ := r.Read(b)
		ch <- string(b[:n])
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(100 * time.Millisecond):
		return ""
	}
}

func callJSON(ctx context.Context, tb testing.TB, cs *mcp.ClientSession, tool string, args map[string]any, out any) error {
	tb.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("tool error: %v", res.Content)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

type report struct {
	UID          int      `json:"uid"`
	GID          int      `json:"gid"`
	CapEff       string   `json:"cap_eff"`
	NoNewPrivs   string   `json:"no_new_privs"`
	Seccomp      string   `json:"seccomp"`
	RootWritable bool     `json:"root_writable"`
	TmpWritable  bool     `json:"tmp_writable"`
	Interfaces   []string `json:"interfaces"`
	MemoryLimit  string   `json:"memory_limit"`
	PidsLimit    string   `json:"pids_limit"`
	MemTotal     string   `json:"mem_total"`
	Uname        string   `json:"uname"`
	ProcVersion  string   `json:"proc_version"`
	Dmesg        string   `json:"dmesg"`
	EnvNames     []string `json:"env_names"`
}

func TestIntegrationProbeFromInside(t *testing.T) {
	t.Setenv("SYMBI_HOST_SECRET", "must not leak")
	sb := newSandbox(t)
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		t.Run(string(tier), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			spec := probeSpec(tier)
			spec.Env = map[string]string{"GREETING": "hello"}
			p, err := sb.Start(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			id := p.ID()
			cs := connect(ctx, t, p)
			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(tools.Tools) != 4 {
				t.Errorf("tools/list returned %d tools, want 4", len(tools.Tools))
			}
			var r report
			if err := callJSON(ctx, t, cs, "probe", nil, &r); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %+v", tier, r)
			if r.UID != 65534 || r.GID != 65534 {
				t.Errorf("uid:gid = %d:%d, want 65534:65534", r.UID, r.GID)
			}
			if strings.Trim(r.CapEff, "0") != "" {
				t.Errorf("CapEff = %q, want none", r.CapEff)
			}
			if r.RootWritable {
				t.Error("/ is writable")
			}
			if !r.TmpWritable {
				t.Error("/tmp is not writable")
			}
			for _, i := range r.Interfaces {
				if i != "lo" {
					t.Errorf("interface %q present; want only lo", i)
				}
			}
			switch tier {
			case TierDocker:
				if r.MemoryLimit != "67108864" {
					t.Errorf("cgroup memory limit = %q, want 67108864", r.MemoryLimit)
				}
			case TierGVisor:
				// gVisor mounts no cgroupfs by default; it sizes its memory to the limit.
				if r.MemTotal != "65536 kB" {
					t.Errorf("MemTotal = %q, want 65536 kB", r.MemTotal)
				}
			}
			for _, k := range r.EnvNames {
				switch k {
				case "GREETING", "PATH", "HOSTNAME", "HOME":
				default:
					t.Errorf("unexpected environment variable %s", k)
				}
			}
			if !strings.Contains(strings.Join(r.EnvNames, ","), "GREETING") {
				t.Error("spec environment missing")
			}
			gvisorSays := strings.Contains(r.Dmesg, "gVisor")
			if tier == TierGVisor && !gvisorSays {
				t.Errorf("no gVisor evidence in dmesg %q / version %q", r.Dmesg, r.ProcVersion)
			}
			if tier == TierDocker {
				if gvisorSays {
					t.Error("docker tier reports gVisor")
				}
				if r.NoNewPrivs != "1" || r.Seccomp != "2" {
					t.Errorf("NoNewPrivs=%s Seccomp=%s, want 1 and 2 (filter)", r.NoNewPrivs, r.Seccomp)
				}
				if !strings.HasPrefix(r.Dmesg, "error:") {
					t.Errorf("the kernel log is readable from the docker tier: %.80q", r.Dmesg)
				}
			}
			st, err := p.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s stats: %+v", tier, st)
			if st.MemoryBytes == 0 || st.MemoryLimit != 64<<20 {
				t.Errorf("Stats = %+v, want memory usage under a 64 MiB limit", st)
			}
			cs.Close()
			if err := p.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if containerExists(t, id) {
				t.Error("container remains after Stop")
			}
		})
	}
}

func TestIntegrationMemoryHogIsOOMKilled(t *testing.T) {
	sb := newSandbox(t)
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		t.Run(string(tier), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			p, cs := startProbe(ctx, t, sb, probeSpec(tier))
			var out struct {
				AllocatedMiB int `json:"allocated_mib"`
			}
			err := callJSON(ctx, t, cs, "hog", map[string]any{"max_mib": 1024}, &out)
			if err == nil {
				t.Fatalf("hog survived with %d MiB under a 64 MiB limit", out.AllocatedMiB)
			}
			st := p.Wait()
			t.Logf("%s: call error %v; exit %s", tier, err, st)
			if !st.OOMKilled {
				t.Errorf("Wait = %+v, want OOMKilled", st)
			}
		})
	}
}

func TestIntegrationForkBombHitsPidsLimit(t *testing.T) {
	sb := newSandbox(t)
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		t.Run(string(tier), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			spec := probeSpec(tier)
			spec.Pids = 32
			spec.Memory = "512m"
			p, cs := startProbe(ctx, t, sb, spec)
			var out struct {
				Started int    `json:"started"`
				Error   string `json:"error"`
			}
			err := callJSON(ctx, t, cs, "forkbomb", map[string]any{"max": 500}, &out)
			t.Logf("%s: forkbomb %+v, err %v", tier, out, err)
			switch {
			case err == nil:
				if out.Started >= 32 || !strings.Contains(out.Error, "EAGAIN") {
					t.Errorf("forkbomb started %d processes (error %q); want EAGAIN below 32", out.Started, out.Error)
				}
			case tier == TierGVisor:
				// In gVisor the limit covers the whole sandbox (sentry threads included):
				// the bomb takes the sandbox down rather than being refused inside it.
				st := p.Wait()
				t.Logf("%s: sandbox ended: %s", tier, st)
				if st.Code == 0 {
					t.Errorf("Wait = %+v, want a failure", st)
				}
			default:
				t.Errorf("forkbomb call failed: %v; exit %s", err, p.Wait())
			}
		})
	}
}

func TestIntegrationTimeout(t *testing.T) {
	sb := newSandbox(t)
	spec := probeSpec(TierDocker)
	spec.Timeout = time.Second
	start := time.Now()
	p, err := sb.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())
	st := p.Wait()
	if !st.TimedOut {
		t.Errorf("Wait = %+v, want TimedOut", st)
	}
	t.Logf("timed out after %v: %s", time.Since(start), st)
}

func TestIntegrationCommandOverrideAndEOF(t *testing.T) {
	sb := newSandbox(t)
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		t.Run(string(tier), func(t *testing.T) {
			spec := probeSpec(tier)
			spec.Command = []string{"/probe", "oneshot"}
			startCtx, cancel := context.WithCancel(context.Background())
			p, err := sb.Start(startCtx, spec)
			cancel() // the stream must not depend on the start context
			if err != nil {
				t.Fatal(err)
			}
			defer p.Stop(context.Background())
			out, err := io.ReadAll(p.Stdout())
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != "ok\n" {
				t.Errorf("stdout = %q, want %q", out, "ok\n")
			}
			if st := p.Wait(); st.Code != 0 || st.OOMKilled || st.Err != nil {
				t.Errorf("Wait = %+v", st)
			}
			// And an MCP server ends when its stdin closes.
			p2, err := sb.Start(context.Background(), probeSpec(tier))
			if err != nil {
				t.Fatal(err)
			}
			defer p2.Stop(context.Background())
			p2.Stdin().Close()
			done := make(chan ExitStatus, 1)
			go func() { done <- p2.Wait() }()
			select {
			case st := <-done:
				t.Logf("%s: after stdin EOF: %s", tier, st)
			case <-time.After(30 * time.Second):
				t.Error("upstream kept running after stdin EOF")
			}
		})
	}
}

func TestIntegrationReapRemovesStaleContainers(t *testing.T) {
	sb := newSandbox(t)
	// A "crashed symbi": a runner whose process is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	crashed, err := newDockerRunner(Options{Instance: "crashed-" + sb.Instance(), GracePeriod: time.Second, GVisorRuntime: "runsc", Logger: sb.log})
	if err != nil {
		t.Fatal(err)
	}
	crashed.pid, crashed.pidStart = dead.Process.Pid, "1"
	var ids []string
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		p, err := crashed.Start(context.Background(), probeSpec(tier).WithDefaults())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop(context.Background())
		ids = append(ids, p.ID())
	}
	// A live one of ours must survive the reaping.
	live, err := sb.Start(context.Background(), probeSpec(TierDocker))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Stop(context.Background())

	n, err := sb.Reap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing else may reap on this engine meanwhile: `make integration` runs the
	// packages that start containers one at a time (-p 1).
	if n < 2 {
		t.Errorf("Reap removed %d containers, want at least 2", n)
	}
	for _, id := range ids {
		if containerExists(t, id) {
			t.Errorf("stale container %s survived Reap", shortID(id))
		}
	}
	if !containerExists(t, live.ID()) {
		t.Error("Reap removed a live container")
	}
	assertNoContainers(t, "crashed-"+sb.Instance())
}

func TestIntegrationCloseRemovesOwnContainers(t *testing.T) {
	sb := New(&Options{GracePeriod: time.Second})
	buildProbe(t, sb)
	var ids []string
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		p, err := sb.Start(context.Background(), probeSpec(tier))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID())
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, id := range ids {
		if containerExists(t, id) {
			t.Errorf("container %s survived Close", shortID(id))
		}
	}
	if _, err := sb.Start(context.Background(), probeSpec(TierDocker)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Start after Close = %v, want ErrUnavailable", err)
	}
}

func TestIntegrationUnknownRuntimeUnavailable(t *testing.T) {
	sb := New(&Options{GVisorRuntime: "no-such-runtime"})
	defer sb.Close()
	if err := sb.Available(context.Background(), TierGVisor); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Available = %v, want ErrUnavailable", err)
	}
	bad := New(&Options{DockerHost: "unix:///nonexistent.sock"})
	defer bad.Close()
	if err := bad.Available(context.Background(), TierDocker); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Available without a daemon = %v, want ErrUnavailable", err)
	}
}

func init() {
	// A symbi that starts a container in each tier, says so, and waits to be killed.
	extraHelpers["symbi-with-containers"] = func() int {
		sb := New(nil)
		for _, tier := range []Tier{TierDocker, TierGVisor} {
			p, err := sb.Start(context.Background(), Spec{Name: "orphan", Tier: tier, Image: probeImage})
			if err != nil {
				fmt.Println("error", err)
				return 1
			}
			fmt.Println(p.ID())
		}
		fmt.Println("ready")
		select {}
	}
}

func TestIntegrationNothingLeftAfterSymbiIsKilled(t *testing.T) {
	sb := newSandbox(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{"SANDBOX_HELPER=symbi-with-containers"}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		if strings.HasPrefix(sc.Text(), "error") {
			t.Fatal(sc.Text())
		}
		ids = append(ids, sc.Text())
	}
	if len(ids) != 2 {
		t.Fatalf("helper started %d containers", len(ids))
	}
	cmd.Process.Kill() // SIGKILL: no chance to clean up
	cmd.Wait()
	for _, id := range ids {
		if !containerExists(t, id) {
			t.Fatalf("container %s vanished before the reaping: the test proves nothing", shortID(id))
		}
	}
	// The next symbi reaps at start-up.
	n, err := sb.Reap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Errorf("Reap removed %d, want 2", n)
	}
	for _, id := range ids {
		if containerExists(t, id) {
			t.Errorf("container %s left behind after symbi was killed", shortID(id))
		}
	}
}

func TestIntegrationOOMKilledUpstreamComesBack(t *testing.T) {
	sb := newSandbox(t)
	for _, tier := range []Tier{TierDocker, TierGVisor} {
		t.Run(string(tier), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			sessions := make(chan *mcp.ClientSession, 4)
			exits := make(chan ExitStatus, 4)
			opts := &SuperviseOptions{
				MinBackoff: 100 * time.Millisecond,
				OnStart: func(ctx context.Context, p Process) error {
					c := mcp.NewClient(&mcp.Implementation{Name: "symbi-test", Version: "1"}, nil)
					cs, err := c.Connect(ctx, &mcp.IOTransport{Reader: p.Stdout(), Writer: p.Stdin()}, nil)
					if err != nil {
						return err
					}
					sessions <- cs
					return nil
				},
				OnExit: func(p Process, st ExitStatus, restarting bool) { exits <- st },
			}
			supDone := make(chan error, 1)
			go func() { supDone <- Supervise(ctx, sb, probeSpec(tier), opts) }()

			first := <-sessions
			var out struct{}
			if err := callJSON(ctx, t, first, "hog", map[string]any{"max_mib": 1024}, &out); err == nil {
				t.Fatal("hog survived")
			}
			first.Close()
			select {
			case st := <-exits:
				if !st.OOMKilled {
					t.Errorf("exit = %s, want an OOM kill", st)
				}
			case <-ctx.Done():
				t.Fatal("no exit reported")
			}
			var second *mcp.ClientSession
			select {
			case second = <-sessions:
			case <-ctx.Done():
				t.Fatal("the upstream did not come back")
			}
			var r report
			if err := callJSON(ctx, t, second, "probe", nil, &r); err != nil {
				t.Fatalf("probe after restart: %v", err)
			}
			second.Close()
			cancel()
			if err := <-supDone; !errors.Is(err, context.Canceled) {
				t.Errorf("Supervise = %v", err)
			}
		})
	}
}
