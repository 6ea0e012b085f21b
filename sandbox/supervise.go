package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// SuperviseOptions configure Supervise. nil means defaults.
type SuperviseOptions struct {
	Logger *slog.Logger // nil: discard
	// MinBackoff is the delay before the first restart; it doubles per quick failure up to
	// MaxBackoff. 0: 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter is how long a process must run for the backoff to reset. 0: 30s.
	StableAfter time.Duration
	// OnStart is called with every new process (the first and each restart), before
	// Supervise waits for it; it typically connects the MCP session. An error stops that
	// process and counts as a failed start.
	OnStart func(ctx context.Context, p Process) error
	// OnExit is called with how each process ended (OOM kills included) and whether a
	// restart follows. The gateway reports it in tool errors, audit and metrics.
	OnExit func(p Process, st ExitStatus, restarting bool)
	// StopTimeout bounds the Stop of the current process when ctx ends. 0: 10s.
	StopTimeout time.Duration
}

// Supervise keeps spec running: it starts it, waits for it to die and restarts it with
// exponential backoff, until ctx ends; then it stops the current process and returns
// ctx's error. A spec that cannot be started at all is retried with the same backoff.
func Supervise(ctx context.Context, r Runner, spec Spec, opts *SuperviseOptions) error {
	var o SuperviseOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.StableAfter <= 0 {
		o.StableAfter = 30 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	log := o.Logger.With("upstream", spec.Name)
	delay := o.MinBackoff
	for {
		started := time.Now()
		p, err := r.Start(ctx, spec)
		if err == nil && o.OnStart != nil {
			if serr := o.OnStart(ctx, p); serr != nil {
				err = fmt.Errorf("prepare upstream %s: %w", spec.Name, serr)
				stopBounded(p, o.StopTimeout)
				st := p.Wait()
				if o.OnExit != nil {
					o.OnExit(p, st, ctx.Err() == nil)
				}
			}
		}
		if err == nil {
			exited := make(chan ExitStatus, 1)
			go func() { exited <- p.Wait() }() // ends when p ends; p is stopped below on ctx end
			var st ExitStatus
			select {
			case st = <-exited:
			case <-ctx.Done():
				serr := stopBounded(p, o.StopTimeout)
				st = <-exited
				if o.OnExit != nil {
					o.OnExit(p, st, false)
				}
				return errors.Join(ctx.Err(), serr)
			}
			// Release the dead process's resources (its container) before the next.
			stopBounded(p, o.StopTimeout)
			restarting := ctx.Err() == nil
			if o.OnExit != nil {
				o.OnExit(p, st, restarting)
			}
			log.Warn("upstream exited", "status", st.String(), "oom_killed", st.OOMKilled, "restarting", restarting)
			if time.Since(started) >= o.StableAfter {
				delay = o.MinBackoff
			}
		} else {
			log.Warn("start upstream", "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, o.MaxBackoff)
	}
}

func stopBounded(p Process, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return p.Stop(ctx)
}
