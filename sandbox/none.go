package sandbox

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// noneRunner runs upstreams as plain host processes: no isolation at all.
type noneRunner struct {
	log   *slog.Logger
	grace time.Duration
}

func (r *noneRunner) Start(ctx context.Context, spec Spec) (Process, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("start process: empty command")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start process: %w", err)
	}
	cmd := exec.Command(spec.Command[0], spec.Command[1:]...)
	cmd.Env = noneEnv(spec.Env)
	cmd.Dir = spec.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p := lookPath(spec.Command[0], cmd.Env); p != "" {
		cmd.Path = p
		cmd.Err = nil
	}

	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, fmt.Errorf("create stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, fmt.Errorf("create stderr pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll(inR, inW, outR, outW, errR, errW)
		return nil, fmt.Errorf("start process %s: %w", spec.Command[0], err)
	}
	closeAll(inR, outW, errW) // the child holds its ends

	p := &hostProcess{
		cmd:       cmd,
		stdin:     inW,
		stdout:    outR,
		stderr:    newLogBuffer(stderrLimit),
		exitState: newExitState(),
		grace:     r.grace,
		log:       r.log.With("upstream", spec.Name, "tier", TierNone, "pid", cmd.Process.Pid),
	}
	p.wg.Add(2)
	go func() { // owned by p: Wait/Stop wait for wg
		defer p.wg.Done()
		_, _ = io.Copy(p.stderr, errR)
		errR.Close()
		p.stderr.Close()
	}()
	go func() {
		defer p.wg.Done()
		p.wait()
	}()
	if spec.Timeout > 0 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.enforceTimeout(spec.Timeout, p.grace, p.log, p.terminate)
		}()
	}
	p.log.Debug("process started")
	return p, nil
}

// noneEnv builds the child's environment: exactly env, plus the host PATH unless env
// sets one. Sorted, for reproducibility.
func noneEnv(env map[string]string) []string {
	out := make([]string, 0, len(env)+1)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	if _, ok := env["PATH"]; !ok {
		path := os.Getenv("PATH")
		if path == "" {
			path = "/usr/local/bin:/usr/bin:/bin"
		}
		out = append(out, "PATH="+path)
	}
	sort.Strings(out)
	return out
}

// lookPath resolves a bare command name against the child's PATH rather than ours.
func lookPath(name string, env []string) string {
	if strings.Contains(name, "/") {
		return ""
	}
	for _, kv := range env {
		if path, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, dir := range strings.Split(path, ":") {
				if dir == "" {
					continue
				}
				f := dir + "/" + name
				if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
					return f
				}
			}
		}
	}
	return ""
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// hostProcess is a Process in the none tier.
type hostProcess struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	stderr *logBuffer
	grace  time.Duration
	log    *slog.Logger
	wg     sync.WaitGroup
	exitState

	stopOnce sync.Once
	stopErr  error
}

func (p *hostProcess) wait() {
	err := p.cmd.Wait()
	st := ExitStatus{Code: p.cmd.ProcessState.ExitCode()}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		st.Err = fmt.Errorf("wait for process: %w", err)
	}
	// Whatever is left of the group dies with its leader.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.finish(st, p.log, "process")
}

func (p *hostProcess) Stdin() io.WriteCloser { return p.stdin }
func (p *hostProcess) Stdout() io.ReadCloser { return p.stdout }
func (p *hostProcess) Stderr() io.Reader     { return p.stderr }
func (p *hostProcess) Tier() Tier            { return TierNone }
func (p *hostProcess) ID() string            { return strconv.Itoa(p.cmd.Process.Pid) }

// terminate signals the process group: SIGTERM, then SIGKILL after the grace period or
// when ctx ends. It returns once the leader has exited.
func (p *hostProcess) terminate(ctx context.Context) error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(p.grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	p.log.Debug("process ignored SIGTERM; killing group")
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, err)
	}
	<-p.done
	return nil
}

func (p *hostProcess) Stop(ctx context.Context) error {
	p.stopOnce.Do(func() {
		p.markStopped()
		p.stopErr = p.terminate(ctx)
		p.stdin.Close()
		p.wg.Wait()
		p.stdout.Close()
	})
	return p.stopErr
}

// Stats reads /proc for the group leader (children are not counted).
func (p *hostProcess) Stats(ctx context.Context) (Stats, error) {
	select {
	case <-p.done:
		return Stats{}, errors.New("read process stats: process has exited")
	default:
	}
	pid := p.cmd.Process.Pid
	st := Stats{Time: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stats{}, fmt.Errorf("read process stats: %w", err)
	}
	// Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		f := strings.Fields(s[i+1:])
		if len(f) > 17 {
			ut, _ := strconv.ParseUint(f[11], 10, 64)
			stime, _ := strconv.ParseUint(f[12], 10, 64)
			st.CPUSeconds = float64(ut+stime) / 100 // USER_HZ is 100 on Linux
			threads, _ := strconv.ParseUint(f[17], 10, 64)
			st.Pids = threads
		}
	}
	if kv, err := readKV(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		if rss, ok := kv["VmRSS"]; ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(rss, " kB"), 10, 64)
			st.MemoryBytes = n << 10
		}
	}
	if kv, err := readKV(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		st.ReadBytes, _ = strconv.ParseUint(kv["read_bytes"], 10, 64)
		st.WriteBytes, _ = strconv.ParseUint(kv["write_bytes"], 10, 64)
	}
	return st, nil
}

func readKV(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	return kv, sc.Err()
}
