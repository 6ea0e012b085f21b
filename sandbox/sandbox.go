// Package sandbox runs upstream MCP servers as isolated processes attached to their stdio.
//
// It owns the isolation tiers (an explicit unisolated "none" tier for development, "docker"
// with runc and "gvisor" with runsc), the container hardening and resource limits, the
// validation of host mounts, the reaping of containers left behind by a crashed symbi, and a
// risk assessment that maps an upstream's declared needs to a tier, and Supervise, which
// restarts a dead upstream with backoff. It does not speak MCP, decide policy or export
// metrics: the gateway does, using the ExitStatus it reports and Process.Stats.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Tier is an isolation level. The zero value is not a tier; use Normalize or ParseTier.
type Tier string

// The tiers, weakest first.
const (
	TierNone   Tier = "none"   // a host process: development only, no isolation
	TierDocker Tier = "docker" // a hardened container with the runc runtime
	TierGVisor Tier = "gvisor" // the same container with the runsc (gVisor) runtime
)

// rank orders tiers: unknown < none < docker < gvisor.
func (t Tier) rank() int {
	switch t {
	case TierNone:
		return 1
	case TierDocker:
		return 2
	case TierGVisor:
		return 3
	}
	return 0
}

// Valid reports whether t is one of the known tiers.
func (t Tier) Valid() bool { return t.rank() > 0 }

// String returns the tier's name.
func (t Tier) String() string { return string(t) }

// ParseTier parses a tier name as written in configuration.
func ParseTier(s string) (Tier, error) {
	t := Tier(s)
	if !t.Valid() {
		return "", fmt.Errorf("parse tier %q: want one of none, docker, gvisor", s)
	}
	return t, nil
}

// TierAtLeast reports whether have isolates at least as strongly as want
// (none < docker < gvisor). An unknown have never satisfies; an unknown want is
// satisfied by nothing.
func TierAtLeast(have, want Tier) bool {
	return have.Valid() && want.Valid() && have.rank() >= want.rank()
}

// Mount is a host path made visible inside the container.
type Mount struct {
	Source   string // absolute host path
	Target   string // absolute path in the container
	Writable bool   // read-only unless set
}

// Spec describes one upstream process to run.
type Spec struct {
	Name    string            // upstream name, for labels and logs
	Command []string          // argv; for containers, empty means the image's entrypoint
	Env     map[string]string // the ONLY environment the process gets (plus PATH in the none tier)
	Dir     string            // working directory; empty = inherited (none) or the image's
	Tier    Tier              // "" = TierDocker
	Image   string            // container image; required for docker and gvisor
	Network string            // "" = "none"; "bridge" or another Docker network name opens it
	Memory  string            // memory limit, e.g. "256m"; "" = DefaultMemory
	CPUs    float64           // CPU limit; 0 = DefaultCPUs
	Pids    int64             // pids limit; 0 = DefaultPids
	Timeout time.Duration     // execution timeout; the process is stopped after it (0 = none)
	Mounts  []Mount           // validated with ValidateMount
	User    string            // numeric "uid[:gid]"; "" = DefaultUser (nobody); 0 needs UnsafeRootUser
	// Unsafe lists the isolation this upstream gives up on purpose (see Unsafe): network
	// "host" or "container:..." and a root user are refused without it.
	Unsafe []Unsafe
}

// Defaults applied by WithDefaults.
const (
	DefaultMemory  = "256m"
	DefaultCPUs    = 1.0
	DefaultPids    = 128
	DefaultUser    = "65534:65534"
	DefaultNetwork = "none"
	DefaultTmpfs   = "size=16m,mode=1777"
)

// WithDefaults returns a copy of s with the empty fields set to their defaults.
func (s Spec) WithDefaults() Spec {
	if s.Tier == "" {
		s.Tier = TierDocker
	}
	if s.Network == "" {
		s.Network = DefaultNetwork
	}
	if s.Memory == "" {
		s.Memory = DefaultMemory
	}
	if s.CPUs == 0 {
		s.CPUs = DefaultCPUs
	}
	if s.Pids == 0 {
		s.Pids = DefaultPids
	}
	if s.User == "" {
		s.User = DefaultUser
	}
	return s
}

// Validate reports every problem in s (after defaults) together.
func (s Spec) Validate() error {
	var errs []error
	if !s.Tier.Valid() {
		errs = append(errs, fmt.Errorf("tier %q: want one of none, docker, gvisor", s.Tier))
	}
	if s.Tier == TierNone && len(s.Command) == 0 {
		errs = append(errs, errors.New("command: required for tier none"))
	}
	if s.Tier != TierNone && s.Image == "" {
		errs = append(errs, fmt.Errorf("image: required for tier %s", s.Tier))
	}
	if s.Memory != "" {
		if _, err := ParseBytes(s.Memory); err != nil {
			errs = append(errs, fmt.Errorf("memory: %w", err))
		}
	}
	if s.CPUs < 0 {
		errs = append(errs, fmt.Errorf("cpus: %v is negative", s.CPUs))
	}
	if s.Pids < 0 {
		errs = append(errs, fmt.Errorf("pids: %d is negative", s.Pids))
	}
	if s.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: %v is negative", s.Timeout))
	}
	for i, m := range s.Mounts {
		if err := ValidateMount(m); err != nil {
			errs = append(errs, fmt.Errorf("mounts[%d]: %w", i, err))
		}
	}
	for _, u := range s.Unsafe {
		if _, err := ParseUnsafe(string(u)); err != nil {
			errs = append(errs, fmt.Errorf("unsafe: %w", err))
		}
	}
	if s.Tier != TierNone {
		if err := CheckNetwork(s.Network, s.Unsafe); err != nil {
			errs = append(errs, fmt.Errorf("network: %w", err))
		}
		if err := CheckUser(s.User, s.Unsafe); err != nil {
			errs = append(errs, fmt.Errorf("user: %w", err))
		}
	}
	for k := range s.Env {
		if k == "" || containsAny(k, "=\x00") {
			errs = append(errs, fmt.Errorf("env: invalid name %q", k))
		}
	}
	return errors.Join(errs...)
}

func containsAny(s, chars string) bool {
	for _, c := range s {
		for _, d := range chars {
			if c == d {
				return true
			}
		}
	}
	return false
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code      int   // exit code; -1 if unknown (killed by a signal in the none tier, or lost)
	OOMKilled bool  // the kernel killed it for exceeding its memory limit
	TimedOut  bool  // it ran past Spec.Timeout and was stopped
	Stopped   bool  // Stop was called
	Err       error // a failure to run or observe the process, not its exit code
}

// String describes the exit for logs and tool errors.
func (e ExitStatus) String() string {
	switch {
	case e.OOMKilled:
		return fmt.Sprintf("killed: out of memory (exit %d)", e.Code)
	case e.TimedOut:
		return fmt.Sprintf("stopped: execution timeout (exit %d)", e.Code)
	case e.Stopped:
		return fmt.Sprintf("stopped (exit %d)", e.Code)
	case e.Err != nil:
		return fmt.Sprintf("failed: %v", e.Err)
	}
	return fmt.Sprintf("exited %d", e.Code)
}

// Stats is one resource-usage sample of a process.
type Stats struct {
	Time        time.Time
	CPUSeconds  float64 // total CPU time consumed (user + system)
	MemoryBytes uint64  // current memory usage
	MemoryLimit uint64  // 0 = unknown or unlimited
	ReadBytes   uint64  // block I/O read
	WriteBytes  uint64  // block I/O written
	Pids        uint64  // current number of processes/threads, 0 if unknown
}

// Process is a running upstream. Its stdio carries the MCP stream.
type Process interface {
	// Stdin is the process's standard input; closing it sends EOF.
	Stdin() io.WriteCloser
	// Stdout is the process's standard output.
	Stdout() io.ReadCloser
	// Stderr is the process's standard error. Read it, or it is discarded once its
	// buffer is full; it ends when the process exits.
	Stderr() io.Reader
	// Wait blocks until the process has exited and returns how. Safe to call many times.
	Wait() ExitStatus
	// Stop ends the process: SIGTERM, then SIGKILL after a grace period or when ctx ends,
	// then releases its resources (the container is removed). Idempotent.
	Stop(ctx context.Context) error
	// Stats samples the process's resource usage once.
	Stats(ctx context.Context) (Stats, error)
	// Tier is the tier the process actually runs in.
	Tier() Tier
	// ID identifies the process: a pid for none, a container ID otherwise.
	ID() string
}

// Runner starts processes.
type Runner interface {
	Start(ctx context.Context, spec Spec) (Process, error)
}

// ErrUnavailable reports that a tier cannot be used here (no Docker daemon, no runsc
// runtime). Callers check it with errors.Is.
var ErrUnavailable = errors.New("sandbox tier unavailable")
