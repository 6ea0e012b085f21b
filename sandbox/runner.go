package sandbox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Options configure a Sandbox. The zero value (or nil) means defaults.
type Options struct {
	Logger        *slog.Logger  // nil: discard
	DockerHost    string        // "": unix:///var/run/docker.sock (callers pass DOCKER_HOST here)
	Instance      string        // value of the symbi.instance label; "": a random UUID
	GracePeriod   time.Duration // SIGTERM to SIGKILL on Stop; 0: 5s
	GVisorRuntime string        // Docker runtime name for the gvisor tier; "": "runsc"
	// ProtectedPaths are host paths no mount may expose, besides the built-in denylist:
	// symbi's own state (data directory, audit trail, keys).
	ProtectedPaths []string
}

// Sandbox starts upstream processes in the tier their Spec asks for. It implements
// Runner. Safe for concurrent use.
type Sandbox struct {
	opts Options
	log  *slog.Logger
	none *noneRunner

	mu     sync.Mutex
	docker *dockerRunner // created on first use
	closed bool
}

var _ Runner = (*Sandbox)(nil)

// New returns a Sandbox. It does not contact Docker until a container tier is used.
func New(opts *Options) *Sandbox {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Instance == "" {
		o.Instance = uuid.NewString()
	}
	if o.GracePeriod <= 0 {
		o.GracePeriod = 5 * time.Second
	}
	if o.GVisorRuntime == "" {
		o.GVisorRuntime = "runsc"
	}
	return &Sandbox{
		opts: o,
		log:  o.Logger,
		none: &noneRunner{log: o.Logger, grace: o.GracePeriod},
	}
}

// Instance is the value of the symbi.instance label on this Sandbox's containers.
func (s *Sandbox) Instance() string { return s.opts.Instance }

// Start applies the defaults to spec, validates it and starts it in its tier.
func (s *Sandbox) Start(ctx context.Context, spec Spec) (Process, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("validate sandbox spec %s: %w", spec.Name, err)
	}
	for i, m := range spec.Mounts {
		if err := ValidateMount(m, s.opts.ProtectedPaths...); err != nil {
			return nil, fmt.Errorf("validate sandbox spec %s: mounts[%d]: %w", spec.Name, i, err)
		}
	}
	for _, u := range spec.Unsafe {
		s.log.Warn("sandbox isolation weakened by an unsafe opt-in", "upstream", spec.Name, "unsafe", string(u),
			"network", spec.Network, "user", spec.User)
	}
	if spec.Tier == TierNone {
		s.log.Warn("upstream runs without isolation", "upstream", spec.Name, "tier", TierNone)
		return s.none.Start(ctx, spec)
	}
	d, err := s.dockerClient()
	if err != nil {
		return nil, err
	}
	return d.Start(ctx, spec)
}

// Available reports whether tier can be used here: nil, or an error wrapping
// ErrUnavailable that says why.
func (s *Sandbox) Available(ctx context.Context, tier Tier) error {
	if !tier.Valid() {
		return fmt.Errorf("check tier %q: unknown tier", tier)
	}
	if tier == TierNone {
		return nil
	}
	d, err := s.dockerClient()
	if err != nil {
		return err
	}
	return d.available(ctx, tier)
}

// Reap removes containers labelled as symbi's that this Sandbox did not start: the
// leftovers of a symbi that crashed. It returns how many it removed.
func (s *Sandbox) Reap(ctx context.Context) (int, error) {
	d, err := s.dockerClient()
	if err != nil {
		return 0, err
	}
	return d.reap(ctx, false)
}

// Close removes every container this Sandbox started that is still present and releases
// the Docker client. Idempotent. Host processes in the none tier are the caller's to Stop.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	d := s.docker
	s.docker, s.closed = nil, true
	s.mu.Unlock()
	if d == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.opts.GracePeriod+10*time.Second)
	defer cancel()
	_, err := d.reap(ctx, true)
	if cerr := d.cli.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close docker client: %w", cerr)
	}
	return err
}

func (s *Sandbox) dockerClient() (*dockerRunner, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("use sandbox: closed: %w", ErrUnavailable)
	}
	if s.docker != nil {
		return s.docker, nil
	}
	d, err := newDockerRunner(s.opts)
	if err != nil {
		return nil, err
	}
	s.docker = d
	return d, nil
}
