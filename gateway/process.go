package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Process is a running upstream command: its stdio carries MCP.
type Process interface {
	Stdin() io.WriteCloser
	Stdout() io.ReadCloser
	// Wait blocks until the process has exited and describes how it ended.
	Wait() error
	// Stop ends the process: stdin is closed first, then it is signalled, then killed.
	// It is idempotent and bounded by ctx.
	Stop(ctx context.Context) error
	// Tier names the sandbox tier the process runs in ("none" for a host process).
	Tier() string
}

// ProcessStats is one sample of a process's resource use.
type ProcessStats struct {
	CPUSeconds  float64
	MemoryBytes uint64
	MemoryLimit uint64
	ReadBytes   uint64
	WriteBytes  uint64
}

// StatsProcess is a Process that can report its resource use (the sandbox tiers).
type StatsProcess interface {
	Process
	Stats(ctx context.Context) (ProcessStats, error)
}

// Launcher starts an upstream's command, on the host or in a sandbox tier.
type Launcher func(ctx context.Context) (Process, error)

// HostLauncher runs argv as a host process (the explicit, unisolated "none" tier) with
// exactly env plus PATH as its environment, in its own process group. Its stderr is
// logged line by line.
func HostLauncher(name string, argv []string, env map[string]string, dir string, logger *slog.Logger) Launcher {
	if logger == nil {
		logger = discardLogger
	}
	return func(ctx context.Context) (Process, error) {
		if len(argv) == 0 {
			return nil, errors.New("start upstream: empty command")
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = childEnv(env)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, fmt.Errorf("start upstream %s: %w", name, err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, fmt.Errorf("start upstream %s: %w", name, err)
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return nil, fmt.Errorf("start upstream %s: %w", name, err)
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start upstream %s: %w", name, err)
		}
		p := &hostProcess{cmd: cmd, stdin: stdin, stdout: stdout, exited: make(chan struct{})}
		p.logDone = make(chan struct{})
		go func() { // owned: ends when the child's stderr closes, awaited in Wait
			defer close(p.logDone)
			sc := bufio.NewScanner(stderr)
			sc.Buffer(make([]byte, 4096), 64<<10)
			for sc.Scan() {
				logger.Debug("upstream stderr", "upstream", name, "line", sc.Text())
			}
		}()
		go func() { // owned: reaps the child; Wait and Stop observe p.exited
			<-p.logDone
			p.err = cmd.Wait()
			close(p.exited)
		}()
		return p, nil
	}
}

// childEnv is the environment a host child gets: the configured variables plus PATH.
func childEnv(env map[string]string) []string {
	out := make([]string, 0, len(env)+1)
	if _, ok := env["PATH"]; !ok {
		out = append(out, "PATH="+os.Getenv("PATH"))
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

type hostProcess struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  io.ReadCloser
	logDone chan struct{}
	exited  chan struct{}
	err     error
	stop    sync.Once
}

func (p *hostProcess) Stdin() io.WriteCloser   { return p.stdin }
func (p *hostProcess) Stdout() io.ReadCloser   { return p.stdout }
func (p *hostProcess) Tier() string            { return "none" }
func (p *hostProcess) Wait() error             { <-p.exited; return p.err }
func (p *hostProcess) signal(s syscall.Signal) { _ = syscall.Kill(-p.cmd.Process.Pid, s) }

func (p *hostProcess) Stop(ctx context.Context) error {
	p.stop.Do(func() {
		_ = p.stdin.Close()
		for _, step := range []struct {
			sig  syscall.Signal
			wait time.Duration
		}{{0, 2 * time.Second}, {syscall.SIGTERM, 3 * time.Second}, {syscall.SIGKILL, 5 * time.Second}} {
			if step.sig != 0 {
				p.signal(step.sig)
			}
			t := time.NewTimer(step.wait)
			select {
			case <-p.exited:
				t.Stop()
				return
			case <-ctx.Done():
				t.Stop()
				p.signal(syscall.SIGKILL)
				return
			case <-t.C:
			}
		}
	})
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop upstream process: %w", ctx.Err())
	}
}
