package sandbox

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// exitState is the exit bookkeeping every tier shares: it records why a process ended
// (its own exit, a Stop, the execution timeout) and lets Wait observe it.
type exitState struct {
	done chan struct{} // closed once status is final

	mu       sync.Mutex
	status   ExitStatus
	timedOut bool
	stopped  bool
}

func newExitState() exitState { return exitState{done: make(chan struct{})} }

// finish records how the process ended and releases Wait.
func (e *exitState) finish(st ExitStatus, log *slog.Logger, what string) {
	e.mu.Lock()
	st.TimedOut, st.Stopped = e.timedOut, e.stopped
	e.status = st
	e.mu.Unlock()
	close(e.done)
	log.Debug(what+" exited", "status", st.String())
}

// markStopped notes that the process is being stopped on purpose.
func (e *exitState) markStopped() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
}

// Wait blocks until the process has exited and returns how.
func (e *exitState) Wait() ExitStatus {
	<-e.done
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

// enforceTimeout terminates the process once d has passed, unless it exits first;
// terminate gets grace to do it.
func (e *exitState) enforceTimeout(d, grace time.Duration, log *slog.Logger, terminate func(context.Context) error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.done:
		return
	case <-t.C:
	}
	e.mu.Lock()
	e.timedOut = true
	e.mu.Unlock()
	log.Warn("execution timeout", "timeout", d)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	_ = terminate(ctx)
}
