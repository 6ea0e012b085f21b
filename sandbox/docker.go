package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// Labels on every container symbi starts.
const (
	LabelManaged  = "symbi.managed"  // "true"
	LabelUpstream = "symbi.upstream" // Spec.Name
	LabelInstance = "symbi.instance" // Options.Instance of the Sandbox that started it
	LabelTier     = "symbi.tier"     // docker or gvisor
	LabelHost     = "symbi.host"     // hostname of the symbi process
	LabelPID      = "symbi.pid"      // pid of the symbi process
	LabelPIDStart = "symbi.pidstart" // start time of that process (clock ticks since boot)
)

// GVisorPidsOverhead is added to Spec.Pids in the gvisor tier: the host pids limit covers
// gVisor's own threads (about 50 idle) as well as the upstream's.
const GVisorPidsOverhead = 128

// dockerRunner starts hardened containers through the Docker Engine API.
type dockerRunner struct {
	cli  *client.Client
	opts Options
	log  *slog.Logger
	host string
	pid  int
	// pidStart tells this process from a later one that reuses its pid.
	pidStart string
}

func newDockerRunner(o Options) (*dockerRunner, error) {
	var copts []client.Opt
	if o.DockerHost != "" {
		copts = append(copts, client.WithHost(o.DockerHost))
	}
	// The API version is negotiated on first use (down to 1.41 for Debian's docker.io).
	cli, err := client.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("create docker client: %w: %w", err, ErrUnavailable)
	}
	host, _ := os.Hostname()
	pid := os.Getpid()
	return &dockerRunner{cli: cli, opts: o, log: o.Logger, host: host, pid: pid, pidStart: procStart(pid)}, nil
}

// procStart returns field 22 of /proc/pid/stat (the start time), or "" if unreadable.
func procStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func (d *dockerRunner) available(ctx context.Context, tier Tier) error {
	if _, err := d.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("ping docker: %w: %w", err, ErrUnavailable)
	}
	if tier != TierGVisor {
		return nil
	}
	info, err := d.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return fmt.Errorf("read docker info: %w: %w", err, ErrUnavailable)
	}
	if _, ok := info.Info.Runtimes[d.opts.GVisorRuntime]; !ok {
		return fmt.Errorf("find runtime %s: not registered with docker: %w", d.opts.GVisorRuntime, ErrUnavailable)
	}
	return nil
}

// containerConfig translates a defaulted, validated Spec into the container's
// configuration. Exposed to tests: the hardening lives here.
func (d *dockerRunner) containerConfig(spec Spec) (*container.Config, *container.HostConfig, error) {
	mem, err := ParseBytes(spec.Memory)
	if err != nil {
		return nil, nil, err
	}
	env := make([]string, 0, len(spec.Env))
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	labels := map[string]string{
		LabelManaged:  "true",
		LabelUpstream: spec.Name,
		LabelInstance: d.opts.Instance,
		LabelTier:     string(spec.Tier),
		LabelHost:     d.host,
		LabelPID:      strconv.Itoa(d.pid),
		LabelPIDStart: d.pidStart,
	}
	cfg := &container.Config{
		Image:        spec.Image,
		User:         spec.User,
		Env:          env,
		WorkingDir:   spec.Dir,
		Labels:       labels,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
		OpenStdin:    true,
		StdinOnce:    true, // our closing stdin is the upstream's EOF
		Tty:          false,
	}
	if len(spec.Command) > 0 {
		cfg.Entrypoint = spec.Command // replaces the image's entrypoint and its cmd
	}
	if spec.Network == "none" {
		cfg.NetworkDisabled = true
	}
	pids := spec.Pids
	if spec.Tier == TierGVisor {
		// gVisor's sentry and gofer run in the container's cgroup: their threads count.
		pids += GVisorPidsOverhead
	}
	init := true
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(spec.Network),
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": "rw,noexec,nosuid,nodev," + DefaultTmpfs},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		// The MCP stream is attached, not logged: no copy of tool traffic on the host disk.
		LogConfig: container.LogConfig{Type: "none"},
		// A tiny init (docker-init) forwards SIGTERM and reaps zombies.
		Init: &init,
		Resources: container.Resources{
			Memory:     mem,
			MemorySwap: mem, // no swap on top of the limit
			NanoCPUs:   int64(spec.CPUs * 1e9),
			PidsLimit:  &pids,
		},
	}
	if spec.Tier == TierGVisor {
		hc.Runtime = d.opts.GVisorRuntime
	}
	for _, m := range spec.Mounts {
		if err := ValidateMount(m); err != nil {
			return nil, nil, err
		}
		hc.Mounts = append(hc.Mounts, mount.Mount{
			Type:     mount.TypeBind,
			Source:   m.Source,
			Target:   m.Target,
			ReadOnly: !m.Writable,
		})
	}
	return cfg, hc, nil
}

func containerName(upstream string) string {
	var b strings.Builder
	b.WriteString("symbi-")
	for _, r := range upstream {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() > 40 {
			break
		}
	}
	fmt.Fprintf(&b, "-%08x", rand.Uint32())
	return b.String()
}

func (d *dockerRunner) Start(ctx context.Context, spec Spec) (Process, error) {
	cfg, hc, err := d.containerConfig(spec)
	if err != nil {
		return nil, fmt.Errorf("configure container %s: %w", spec.Name, err)
	}
	name := containerName(spec.Name)
	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: name, Config: cfg, HostConfig: hc})
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", spec.Name, err)
	}
	id := created.ID
	log := d.log.With("upstream", spec.Name, "tier", spec.Tier, "container", shortID(id))
	for _, w := range created.Warnings {
		log.Warn("docker warning", "warning", w)
	}
	fail := func(err error) (Process, error) {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, rerr := d.cli.ContainerRemove(rctx, id, client.ContainerRemoveOptions{Force: true}); rerr != nil {
			log.Warn("remove container after failed start", "err", rerr)
		}
		return nil, err
	}

	att, err := d.cli.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return fail(fmt.Errorf("attach container %s: %w", spec.Name, err))
	}
	// The wait is registered before the start, so that no exit can be missed. Its
	// context lives as long as the process.
	wctx, wcancel := context.WithCancel(context.Background())
	waitRes := d.cli.ContainerWait(wctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := d.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		wcancel()
		att.Close()
		return fail(fmt.Errorf("start container %s: %w", spec.Name, err))
	}

	outR, outW := io.Pipe()
	p := &containerProcess{
		d:         d,
		id:        id,
		tier:      spec.Tier,
		conn:      att.HijackedResponse,
		stdin:     &attachStdin{h: att.HijackedResponse},
		stdout:    outR,
		stderr:    newLogBuffer(stderrLimit),
		log:       log,
		wcancel:   wcancel,
		exitState: newExitState(),
	}
	p.wg.Add(2)
	go func() { // demultiplex the attach stream; owned by p
		defer p.wg.Done()
		_, err := stdcopy.StdCopy(outW, p.stderr, att.Reader)
		if err == nil {
			err = io.EOF
		}
		outW.CloseWithError(err)
		p.stderr.Close()
	}()
	go func() {
		defer p.wg.Done()
		p.wait(waitRes)
	}()
	if spec.Timeout > 0 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.enforceTimeout(spec.Timeout, p.d.opts.GracePeriod+10*time.Second, p.log, p.terminate)
		}()
	}
	log.Debug("container started", "name", name)
	return p, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// attachStdin writes to the hijacked attach connection; Close half-closes it, which the
// daemon passes on as EOF (the container has StdinOnce).
type attachStdin struct {
	h    client.HijackedResponse
	once sync.Once
	err  error
}

func (s *attachStdin) Write(p []byte) (int, error) { return s.h.Conn.Write(p) }
func (s *attachStdin) Close() error {
	s.once.Do(func() { s.err = s.h.CloseWrite() })
	return s.err
}

// containerProcess is a Process in the docker or gvisor tier.
type containerProcess struct {
	d       *dockerRunner
	id      string
	tier    Tier
	conn    client.HijackedResponse
	stdin   *attachStdin
	stdout  *io.PipeReader
	stderr  *logBuffer
	log     *slog.Logger
	wg      sync.WaitGroup
	wcancel context.CancelFunc
	exitState

	stopOnce sync.Once
	stopErr  error
}

func (p *containerProcess) wait(res client.ContainerWaitResult) {
	st := ExitStatus{Code: -1}
	select {
	case r := <-res.Result:
		st.Code = int(r.StatusCode)
		if r.Error != nil && r.Error.Message != "" {
			st.Err = fmt.Errorf("wait for container: %s", r.Error.Message)
		}
	case err := <-res.Error:
		st.Err = fmt.Errorf("wait for container: %w", err)
	}
	// The wait result does not say why; the container's state does. The engine learns
	// of an OOM kill from a separate event that can land just after the exit (seen with
	// gVisor under load), so a SIGKILL exit (137) is looked at again for a moment before
	// it is taken as anything but an OOM kill.
	for attempt := 0; ; attempt++ {
		ictx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ins, err := p.d.cli.ContainerInspect(ictx, p.id, client.ContainerInspectOptions{})
		cancel()
		if err == nil && ins.Container.State != nil {
			st.OOMKilled = ins.Container.State.OOMKilled
			if st.Err != nil && !ins.Container.State.Running {
				st.Code, st.Err = ins.Container.State.ExitCode, nil
			}
		}
		if err != nil || st.OOMKilled || st.Code != 137 || attempt == oomSettleAttempts {
			break
		}
		time.Sleep(oomSettleDelay)
	}
	p.finish(st, p.log, "container")
}

// How long a SIGKILL exit is re-inspected for the engine's late OOM flag (up to 3 s; only
// a container killed by SIGKILL pays it).
const (
	oomSettleAttempts = 30
	oomSettleDelay    = 100 * time.Millisecond
)

func (p *containerProcess) Stdin() io.WriteCloser { return p.stdin }
func (p *containerProcess) Stdout() io.ReadCloser { return p.stdout }
func (p *containerProcess) Stderr() io.Reader     { return p.stderr }
func (p *containerProcess) Tier() Tier            { return p.tier }
func (p *containerProcess) ID() string            { return p.id }

// terminate sends SIGTERM, then SIGKILL after the grace period or when ctx ends, and
// returns once the container has exited (or, failing that, when ctx ends).
func (p *containerProcess) terminate(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if _, err := p.d.cli.ContainerKill(ctx, p.id, client.ContainerKillOptions{Signal: "SIGTERM"}); err != nil {
		p.log.Debug("send SIGTERM to container", "err", err)
	}
	t := time.NewTimer(p.d.opts.GracePeriod)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, kerr := p.d.cli.ContainerKill(kctx, p.id, client.ContainerKillOptions{Signal: "SIGKILL"})
	// An error here usually means the container exited meanwhile: wait for the news.
	select {
	case <-p.done:
		return nil
	case <-kctx.Done():
		if kerr != nil {
			return fmt.Errorf("kill container %s: %w", shortID(p.id), kerr)
		}
		return fmt.Errorf("kill container %s: still running", shortID(p.id))
	}
}

func (p *containerProcess) Stop(ctx context.Context) error {
	p.stopOnce.Do(func() {
		p.markStopped()
		err := p.terminate(ctx)
		rctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, rerr := p.d.cli.ContainerRemove(rctx, p.id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); rerr != nil && !goneOrGoing(rerr) {
			err = errors.Join(err, fmt.Errorf("remove container %s: %w", shortID(p.id), rerr))
		}
		p.wcancel()
		p.conn.Close()
		p.stdout.Close()
		p.wg.Wait()
		p.stopErr = err
	})
	return p.stopErr
}

func isNotFound(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "no such container")
}

// goneOrGoing reports whether a container removal failed only because the container is
// already gone or another caller (its own symbi, or a reaper) is removing it.
func goneOrGoing(err error) bool {
	return isNotFound(err) || (err != nil && strings.Contains(strings.ToLower(err.Error()), "already in progress"))
}

// Stats takes one sample from the container stats API.
func (p *containerProcess) Stats(ctx context.Context) (Stats, error) {
	res, err := p.d.cli.ContainerStats(ctx, p.id, client.ContainerStatsOptions{Stream: false})
	if err != nil {
		return Stats{}, fmt.Errorf("read container stats: %w", err)
	}
	defer res.Body.Close()
	var s container.StatsResponse
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		return Stats{}, fmt.Errorf("decode container stats: %w", err)
	}
	return statsFromDocker(s), nil
}

func statsFromDocker(s container.StatsResponse) Stats {
	out := Stats{
		Time:        s.Read,
		CPUSeconds:  float64(s.CPUStats.CPUUsage.TotalUsage) / 1e9,
		MemoryBytes: s.MemoryStats.Usage,
		MemoryLimit: s.MemoryStats.Limit,
		Pids:        s.PidsStats.Current,
	}
	// As docker stats does: page cache that can be reclaimed is not usage.
	for _, k := range []string{"inactive_file", "total_inactive_file"} {
		if v, ok := s.MemoryStats.Stats[k]; ok && v < out.MemoryBytes {
			out.MemoryBytes -= v
			break
		}
	}
	for _, e := range s.BlkioStats.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			out.ReadBytes += e.Value
		case "write":
			out.WriteBytes += e.Value
		}
	}
	if out.Time.IsZero() {
		out.Time = time.Now()
	}
	return out
}

// reap removes managed containers: with own, those of this Sandbox; otherwise those
// whose symbi process on this host is gone.
func (d *dockerRunner) reap(ctx context.Context, own bool) (int, error) {
	f := client.Filters{}.Add("label", LabelManaged+"=true")
	if own {
		f = f.Add("label", LabelInstance+"="+d.opts.Instance)
	}
	list, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return 0, fmt.Errorf("list symbi containers: %w", err)
	}
	n := 0
	var errs []error
	for _, c := range list.Items {
		if !own && !d.stale(c.Labels) {
			continue
		}
		if _, err := d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !goneOrGoing(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", shortID(c.ID), err))
			continue
		}
		n++
		d.log.Info("removed container", "container", shortID(c.ID), "upstream", c.Labels[LabelUpstream],
			"instance", c.Labels[LabelInstance], "reason", map[bool]string{true: "close", false: "stale"}[own])
	}
	return n, errors.Join(errs...)
}

// stale reports whether the symbi process that started a container is gone. Containers
// of other hosts sharing the daemon are left alone, as are those of live processes.
func (d *dockerRunner) stale(labels map[string]string) bool {
	if labels[LabelInstance] == d.opts.Instance {
		return false
	}
	if labels[LabelHost] != d.host {
		return false
	}
	pid, err := strconv.Atoi(labels[LabelPID])
	if err != nil || pid <= 0 {
		return true
	}
	start := procStart(pid)
	if start == "" {
		return true // no such process
	}
	return labels[LabelPIDStart] != "" && start != labels[LabelPIDStart] // pid reused
}
