package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slowPolicy allows, after counting to four million: seconds of evaluation.
const slowPolicy = `package symbi.authz

decision := {"allow": true} if {
	count([1 | some i in numbers.range(1, 2000); some j in numbers.range(1, 2000)]) > 0
}
`

// TestEvalTimeout: an evaluation that outlives its time bound denies, says so in the
// reason, and wraps ErrTimeout; the bound is the Watcher's EvalTimeout.
func TestEvalTimeout(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "slow.rego"), []byte(slowPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(context.Background(), dir, &Options{EvalTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	in := &Input{Action: ActionToolsCall, Identity: Identity{ID: "a"}, Tool: &Tool{Name: "t"}}
	for i := range 2 { // errors are never cached: the second evaluation is bounded too
		d, err := w.Decide(context.Background(), in)
		if d.Allow {
			t.Fatalf("decision %d allows", i)
		}
		if want := "policy evaluation timed out after 20ms"; d.Reason != want {
			t.Errorf("reason = %q, want %q", d.Reason, want)
		}
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrEvaluate) {
			t.Errorf("err = %v, want ErrTimeout and ErrEvaluate", err)
		}
	}

	// A caller's own cancellation is not reported as a timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := w.Decide(ctx, in)
	if d.Allow || errors.Is(err, ErrTimeout) || strings.Contains(d.Reason, "timed out") {
		t.Errorf("cancelled: %+v %v, want a denial that is not a timeout", d, err)
	}
}

// TestEvalTimeoutDefault: without an explicit bound an evaluation gets
// DefaultEvalTimeout, and a fast policy is not affected.
func TestEvalTimeoutDefault(t *testing.T) {
	w, err := NewWatcher(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.timeout != DefaultEvalTimeout {
		t.Errorf("timeout = %s, want %s", w.timeout, DefaultEvalTimeout)
	}
	d, err := w.Decide(context.Background(), &Input{Action: ActionToolsCall, Identity: Identity{ID: "a"},
		Tool: &Tool{Name: "t", Verification: Verification{Status: StatusVerified}}})
	if err != nil || !d.Allow {
		t.Errorf("default policy: %+v %v", d, err)
	}
}
