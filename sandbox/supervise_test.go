package sandbox

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestSuperviseRestartsWithBackoff(t *testing.T) {
	sb := New(&Options{GracePeriod: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu     sync.Mutex
		starts []time.Time
		exits  []ExitStatus
	)
	opts := &SuperviseOptions{
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 80 * time.Millisecond,
		OnStart: func(ctx context.Context, p Process) error {
			mu.Lock()
			defer mu.Unlock()
			starts = append(starts, time.Now())
			return nil
		},
		OnExit: func(p Process, st ExitStatus, restarting bool) {
			mu.Lock()
			defer mu.Unlock()
			exits = append(exits, st)
			if len(exits) == 5 {
				cancel()
			}
			if !restarting && len(exits) < 5 {
				t.Errorf("exit %d: restarting = false before cancel", len(exits))
			}
		},
	}
	err := Supervise(ctx, sb, helperSpec("exit3", nil), opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Supervise = %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(exits) != 5 || len(starts) != 5 {
		t.Fatalf("%d starts, %d exits; want 5 each", len(starts), len(exits))
	}
	for i, st := range exits {
		if st.Code != 3 {
			t.Errorf("exit %d = %+v, want code 3", i, st)
		}
	}
	// The gaps grow: 20, 40, 80, 80 ms at least.
	for i, want := range []time.Duration{20, 40, 80, 80} {
		if gap := starts[i+1].Sub(starts[i]); gap < want*time.Millisecond {
			t.Errorf("gap %d = %v, want >= %v", i, gap, want*time.Millisecond)
		}
	}
}

func TestSuperviseStopsOnCancel(t *testing.T) {
	sb := New(&Options{GracePeriod: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var got Process
	var last ExitStatus
	var restart bool
	opts := &SuperviseOptions{
		OnStart: func(ctx context.Context, p Process) error { got = p; cancel(); return nil },
		OnExit:  func(p Process, st ExitStatus, restarting bool) { last, restart = st, restarting },
	}
	done := make(chan error, 1)
	go func() { done <- Supervise(ctx, sb, helperSpec("sleep", nil), opts) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Supervise = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Supervise did not return after cancel")
	}
	if got == nil || !last.Stopped || restart {
		t.Errorf("last exit %+v restarting %v; want a stopped process and no restart", last, restart)
	}
}

func TestSuperviseOnStartErrorRetries(t *testing.T) {
	sb := New(&Options{GracePeriod: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	opts := &SuperviseOptions{
		MinBackoff: 10 * time.Millisecond,
		OnStart: func(ctx context.Context, p Process) error {
			n++
			if n == 3 {
				cancel()
			}
			return errors.New("handshake failed")
		},
	}
	if err := Supervise(ctx, sb, helperSpec("sleep", nil), opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("Supervise = %v", err)
	}
	if n != 3 {
		t.Errorf("OnStart called %d times, want 3", n)
	}
}
