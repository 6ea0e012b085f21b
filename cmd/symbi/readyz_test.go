package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/sandbox"
)

type fakeTiers map[sandbox.Tier]error

func (f fakeTiers) Available(_ context.Context, t sandbox.Tier) error { return f[t] }

func TestTierReadyCheck(t *testing.T) {
	down := errors.New("runtime runsc not registered")
	for _, tc := range []struct {
		name   string
		have   fakeTiers
		tiers  []sandbox.Tier
		ok     bool
		detail map[string]string
	}{
		{"all available", fakeTiers{}, []sandbox.Tier{sandbox.TierDocker, sandbox.TierGVisor}, true,
			map[string]string{"docker": "available", "gvisor": "available"}},
		{"a later tier down", fakeTiers{sandbox.TierGVisor: down}, []sandbox.Tier{sandbox.TierDocker, sandbox.TierGVisor}, false,
			map[string]string{"docker": "available", "gvisor": down.Error()}},
		{"the first tier down", fakeTiers{sandbox.TierDocker: down}, []sandbox.Tier{sandbox.TierDocker, sandbox.TierGVisor}, false,
			map[string]string{"docker": down.Error(), "gvisor": "available"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, detail := tierReadyCheck(tc.have, tc.tiers)()
			if ok != tc.ok {
				t.Errorf("ready = %v, want %v", ok, tc.ok)
			}
			if diff := cmp.Diff(tc.detail, detail); diff != "" {
				t.Errorf("detail (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReadyzChecksEveryTier: with upstreams in two tiers, the /readyz sandbox check covers
// both (it used to check only the tier of the first sandboxed upstream).
func TestReadyzChecksEveryTier(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock")) // no daemon: nothing is touched
	cfg := config.Default()
	cfg.Server.DataDir = t.TempDir()
	rt := &runtime{http: gateway.HTTPOptions{ReadyChecks: map[string]func() (bool, any){}}}
	defer rt.close()
	log := slog.New(slog.DiscardHandler)
	for _, u := range []config.Upstream{
		{Name: "a", Command: []string{"srv"}, Sandbox: &config.UpstreamSandbox{Tier: "docker", Image: "x"}},
		{Name: "b", Command: []string{"srv"}, Sandbox: &config.UpstreamSandbox{Tier: "gvisor", Image: "x"}},
		{Name: "c", Command: []string{"srv"}, Sandbox: &config.UpstreamSandbox{Tier: "docker", Image: "x"}},
		{Name: "d", Command: []string{"srv"}, Sandbox: &config.UpstreamSandbox{Tier: "none"}},
	} {
		if _, _, err := rt.launcher(t.Context(), cfg, u, log); err != nil {
			t.Fatal(err)
		}
	}
	check := rt.http.ReadyChecks["sandbox"]
	if check == nil {
		t.Fatal("no sandbox ready check")
	}
	ok, detail := check()
	d, isMap := detail.(map[string]string)
	if !isMap {
		t.Fatalf("detail %#v, want one entry per tier", detail)
	}
	var tiers []string
	for tier := range d {
		tiers = append(tiers, tier)
	}
	slices.Sort(tiers)
	if diff := cmp.Diff([]string{"docker", "gvisor"}, tiers); diff != "" {
		t.Errorf("tiers checked (-want +got):\n%s", diff)
	}
	if ok {
		t.Error("ready with no Docker daemon")
	}
}
