package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The test binary doubles as the upstream: with SANDBOX_HELPER set it acts out a role.
func TestMain(m *testing.M) {
	if role := os.Getenv("SANDBOX_HELPER"); role != "" {
		os.Exit(helper(role))
	}
	os.Exit(m.Run())
}

// extraHelpers are roles registered by files with build tags.
var extraHelpers = map[string]func() int{}

func helper(role string) int {
	if h, ok := extraHelpers[role]; ok {
		return h()
	}
	switch role {
	case "env":
		env := os.Environ()
		sort.Strings(env)
		for _, kv := range env {
			fmt.Println(kv)
		}
		return 0
	case "echo":
		fmt.Fprintln(os.Stderr, "echo ready")
		_, _ = io.Copy(os.Stdout, os.Stdin)
		return 0
	case "exit3":
		return 3
	case "stubborn":
		// Ignores SIGTERM and starts a child in its group, then prints the child's pid.
		signal.Ignore(syscall.SIGTERM)
		c := exec.Command("sleep", "300")
		if err := c.Start(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println(c.Process.Pid)
		select {}
	case "sleep":
		time.Sleep(time.Minute)
		return 0
	case "noisy":
		chunk := bytes.Repeat([]byte("x"), 1024)
		for range 200 {
			os.Stderr.Write(chunk)
		}
		fmt.Println("done")
		return 0
	}
	return 2
}

func helperSpec(role string, extra map[string]string) Spec {
	env := map[string]string{"SANDBOX_HELPER": role}
	for k, v := range extra {
		env[k] = v
	}
	return Spec{Name: "t", Tier: TierNone, Command: []string{os.Args[0]}, Env: env}
}

func startNone(t *testing.T, spec Spec) Process {
	t.Helper()
	sb := New(&Options{GracePeriod: 500 * time.Millisecond})
	p, err := sb.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	return p
}

func TestNoneEnvIsExactlySpecEnvPlusPath(t *testing.T) {
	t.Setenv("SANDBOX_LEAK", "host secret")
	p := startNone(t, helperSpec("env", map[string]string{"FOO": "bar"}))
	out, err := io.ReadAll(p.Stdout())
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Wait(); st.Code != 0 || st.Err != nil {
		t.Fatalf("Wait = %+v", st)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, _, _ := strings.Cut(line, "=")
		names = append(names, k)
	}
	if diff := cmp.Diff([]string{"FOO", "PATH", "SANDBOX_HELPER"}, names); diff != "" {
		t.Errorf("child environment names (-want +got):\n%s", diff)
	}
	if strings.Contains(string(out), "host secret") {
		t.Error("host environment leaked into the child")
	}
}

func TestNoneStdioRoundTrip(t *testing.T) {
	p := startNone(t, helperSpec("echo", nil))
	if p.Tier() != TierNone {
		t.Errorf("Tier() = %q", p.Tier())
	}
	if _, err := strconv.Atoi(p.ID()); err != nil {
		t.Errorf("ID() = %q, want a pid", p.ID())
	}
	r := bufio.NewReader(p.Stdout())
	for _, msg := range []string{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, "second line"} {
		if _, err := io.WriteString(p.Stdin(), msg+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if got != msg+"\n" {
			t.Errorf("echo = %q, want %q", got, msg+"\n")
		}
	}
	p.Stdin().Close()
	st := p.Wait()
	if diff := cmp.Diff(ExitStatus{Code: 0}, st); diff != "" {
		t.Errorf("Wait (-want +got):\n%s", diff)
	}
	errOut, _ := io.ReadAll(p.Stderr())
	if string(errOut) != "echo ready\n" {
		t.Errorf("stderr = %q", errOut)
	}
}

func TestNoneExitCode(t *testing.T) {
	p := startNone(t, helperSpec("exit3", nil))
	if st := p.Wait(); st.Code != 3 || st.Stopped || st.TimedOut || st.Err != nil {
		t.Errorf("Wait = %+v, want code 3", st)
	}
	if st := p.Wait(); st.Code != 3 {
		t.Errorf("second Wait = %+v", st)
	}
}

func TestNoneStopKillsGroup(t *testing.T) {
	p := startNone(t, helperSpec("stubborn", nil))
	line, err := bufio.NewReader(p.Stdout()).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child pid %q: %v", line, err)
	}
	start := time.Now()
	if err := p.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	st := p.Wait()
	if !st.Stopped || st.Code != -1 {
		t.Errorf("Wait = %+v, want stopped by a signal", st)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("Stop returned after %v, before the grace period: SIGTERM was not ignored?", d)
	}
	// The grandchild was in the group: it must be gone (reaped by init or a zombie).
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("child %d survived Stop", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNoneStopContextCutsGrace(t *testing.T) {
	sb := New(&Options{GracePeriod: time.Minute})
	p, err := sb.Start(context.Background(), helperSpec("stubborn", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(p.Stdout()).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Stop(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not honour its context")
	}
}

func TestNoneTimeout(t *testing.T) {
	spec := helperSpec("sleep", nil)
	spec.Timeout = 100 * time.Millisecond
	p := startNone(t, spec)
	st := p.Wait()
	if !st.TimedOut || st.Stopped {
		t.Errorf("Wait = %+v, want TimedOut", st)
	}
}

func TestNoneStderrNeverBlocks(t *testing.T) {
	p := startNone(t, helperSpec("noisy", nil))
	out, err := io.ReadAll(p.Stdout()) // nobody reads stderr meanwhile
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "done\n" {
		t.Errorf("stdout = %q", out)
	}
	p.Wait()
	// The copy into the buffer may still be draining the pipe while we read, so more
	// than the limit can come out; what matters is that the writer never blocked and the
	// tail was kept.
	rest, _ := io.ReadAll(p.Stderr())
	if len(rest) < stderrLimit {
		t.Errorf("kept %d bytes of stderr, want at least the last %d", len(rest), stderrLimit)
	}
}

func TestNoneStats(t *testing.T) {
	p := startNone(t, helperSpec("echo", nil))
	st, err := p.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryBytes == 0 || st.Pids == 0 || st.Time.IsZero() {
		t.Errorf("Stats = %+v, want memory and threads", st)
	}
	p.Stdin().Close()
	p.Wait()
	if _, err := p.Stats(context.Background()); err == nil {
		t.Error("Stats after exit: want an error")
	}
}

func TestNoneStartErrors(t *testing.T) {
	sb := New(nil)
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"missing binary", Spec{Tier: TierNone, Command: []string{"/nonexistent/upstream"}}},
		{"empty command", Spec{Tier: TierNone}},
		{"bad tier", Spec{Tier: "vm", Command: []string{"true"}}},
		{"bad mount", Spec{Tier: TierNone, Command: []string{"true"}, Mounts: []Mount{{Source: "/etc", Target: "/x"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p, err := sb.Start(context.Background(), tc.spec); err == nil {
				p.Stop(context.Background())
				t.Fatal("Start succeeded, want an error")
			}
		})
	}
}

func TestNoneResolvesCommandOnChildPath(t *testing.T) {
	p := startNone(t, Spec{Tier: TierNone, Command: []string{"sh", "-c", "echo $FOO"}, Env: map[string]string{"FOO": "x y"}})
	out, _ := io.ReadAll(p.Stdout())
	if string(out) != "x y\n" {
		t.Errorf("stdout = %q", out)
	}
}
