package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadSmoke runs the whole tool once with tiny counts, so it does not rot: it builds
// symbi and the upstream, measures both targets and both protocol generations, and
// prints the table.
func TestLoadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs symbi and an upstream server; skipped with -short")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(root) // the tool builds ./cmd/symbi relative to the repository root
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := &config{n: 40, c: 4, serial: 10, warmup: 2, timeout: time.Minute, kind: "everything",
		tool: "test_simple_text", args: map[string]any{}, protocols: []string{"2026-07-28", "2025-11-25"}}
	var out strings.Builder
	if err := bench(ctx, cfg, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"direct  2026-07-28", "symbi  2025-11-25", "throughput kept", "VmHWM"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every phase completed all its calls without errors.
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) == 11 && (f[0] == "direct" || f[0] == "symbi") {
			if f[4] != "0" {
				t.Errorf("errors in %q", line)
			}
		}
	}
}
