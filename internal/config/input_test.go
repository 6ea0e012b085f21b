package config

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPendingInputKeys: the bounds on calls waiting for a client's input parse, and
// every bad value is reported with its key.
func TestPendingInputKeys(t *testing.T) {
	c, err := Parse("ok.toml", []byte("version = 1\n[server]\ninput_timeout = \"5s\"\nmax_pending_inputs = 100\nmax_pending_inputs_per_identity = 10\n"), env(nil))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got := []any{c.Server.InputTimeout.Duration, c.Server.MaxPendingInputs, c.Server.MaxPendingInputsPerIdentity}
	if diff := cmp.Diff([]any{5 * time.Second, 100, 10}, got); diff != "" {
		t.Errorf("parsed bounds mismatch (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name, in string
		want     []string // keys
	}{
		{"negative", "version = 1\n[server]\ninput_timeout = \"-1s\"\nmax_pending_inputs = -1\nmax_pending_inputs_per_identity = -2\n",
			[]string{"server.input_timeout", "server.max_pending_inputs", "server.max_pending_inputs_per_identity"}},
		{"per identity above total", "version = 1\n[server]\nmax_pending_inputs = 4\nmax_pending_inputs_per_identity = 5\n",
			[]string{"server.max_pending_inputs_per_identity"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var keys []string
			for _, p := range problems(t, tc.in, nil) {
				keys = append(keys, p.Key)
			}
			if diff := cmp.Diff(tc.want, keys); diff != "" {
				t.Errorf("problem keys mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
