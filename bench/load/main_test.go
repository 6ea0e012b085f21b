package main

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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
		if len(f) == 12 && (f[0] == "direct" || f[0] == "symbi") {
			if f[4] != "0" {
				t.Errorf("errors in %q", line)
			}
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "100", want: 100},
		{in: "100B", want: 100},
		{in: "512KiB", want: 512 << 10},
		{in: "4MB", want: 4_000_000},
		{in: "4MiB", want: 4 << 20},
		{in: " 4 MiB ", want: 4 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "1GB", want: 1_000_000_000},
		{in: "2GiB", wantErr: true},
		{in: "99999999999999999999", wantErr: true},
		{in: "", wantErr: true},
		{in: "MiB", wantErr: true},
		{in: "-4MB", wantErr: true},
		{in: "4mb", wantErr: true},
		{in: "4.5MB", wantErr: true},
		{in: "4 XB", wantErr: true},
	} {
		got, err := parseSize(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, error %t", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseFlags(t *testing.T) {
	defaults := config{n: 5000, c: 16, serial: 1000, warmup: 50, timeout: time.Minute, kind: "everything",
		tool: "test_simple_text", args: map[string]any{}, protocols: []string{"2026-07-28", "2025-11-25"},
		refusedWait: time.Second}
	payload := defaults
	payload.n, payload.serial, payload.kind, payload.tool, payload.args = 64, 0, "mcpgo", "echo", map[string]any{"message": "hello"}
	payload.protocols, payload.payload, payload.noDirect = []string{"2025-11-25"}, 4_000_000, true
	payload.serverTOML, payload.refusedWait = "max_inflight_bytes = 1073741824", 100*time.Millisecond
	for _, tc := range []struct {
		name    string
		args    []string
		want    *config
		wantErr string
	}{
		{name: "defaults unchanged", args: nil, want: &defaults},
		{name: "payload mode", args: []string{"-kind", "mcpgo", "-payload", "4MB", "-n", "64", "-serial", "0",
			"-protocols", "2025-11-25", "-no-direct", "-server-toml", "max_inflight_bytes = 1073741824", "-refused-wait", "100ms"}, want: &payload},
		{name: "payload needs mcpgo", args: []string{"-payload", "4MB"}, wantErr: "-payload needs -kind mcpgo"},
		{name: "bad payload", args: []string{"-kind", "mcpgo", "-payload", "4 lots"}, wantErr: "parse -payload"},
		{name: "negative wait", args: []string{"-refused-wait", "-1s"}, wantErr: "-refused-wait"},
		{name: "no protocols", args: []string{"-protocols", " , "}, wantErr: "-protocols"},
		{name: "zero clients", args: []string{"-c", "0"}, wantErr: "must be positive"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "unknown kind", args: []string{"-kind", "other"}, wantErr: "unknown -kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFlags(%q) error = %v, want one containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(config{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("parseFlags(%q) (-want +got):\n%s", tc.args, diff)
			}
		})
	}
}

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want int
	}{
		{"calling \"tools/call\": rejected by transport: sending \"tools/call\": Too Many Requests", 0},
		{"calling \"tools/call\": rejected by transport: sending \"tools/call\": Service Unavailable", 1},
		{"calling \"tools/call\": Bad Request", -1},
	} {
		if got := refusal(errors.New(tc.msg)); got != tc.want {
			t.Errorf("refusal(%q) = %d, want %d", tc.msg, got, tc.want)
		}
	}
}
