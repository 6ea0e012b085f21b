package sandbox

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
)

// The hardening is a pure translation of the Spec: checked here without a daemon.
func TestContainerConfigHardening(t *testing.T) {
	d := &dockerRunner{opts: Options{Instance: "inst-1", GVisorRuntime: "runsc"}, host: "h", pid: 42, pidStart: "99"}
	for _, tc := range []struct {
		name    string
		spec    Spec
		runtime string
		pids    int64
		network string
	}{
		{"docker defaults", Spec{Name: "fs", Image: "local/fs:1"}, "", DefaultPids, "none"},
		{"gvisor", Spec{Name: "fs", Image: "local/fs:1", Tier: TierGVisor, Pids: 32}, "runsc", 32 + GVisorPidsOverhead, "none"},
		{"network opened", Spec{Name: "web", Image: "i", Network: "bridge"}, "", DefaultPids, "bridge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, hc, err := d.containerConfig(tc.spec.WithDefaults())
			if err != nil {
				t.Fatal(err)
			}
			if cfg.User != DefaultUser {
				t.Errorf("User = %q", cfg.User)
			}
			if !hc.ReadonlyRootfs || hc.Privileged {
				t.Errorf("ReadonlyRootfs=%v Privileged=%v", hc.ReadonlyRootfs, hc.Privileged)
			}
			if diff := cmp.Diff([]string{"ALL"}, hc.CapDrop); diff != "" || len(hc.CapAdd) != 0 {
				t.Errorf("CapDrop %v CapAdd %v", hc.CapDrop, hc.CapAdd)
			}
			if diff := cmp.Diff([]string{"no-new-privileges"}, hc.SecurityOpt); diff != "" {
				t.Errorf("SecurityOpt (no seccomp override allowed) (-want +got):\n%s", diff)
			}
			if string(hc.NetworkMode) != tc.network || cfg.NetworkDisabled != (tc.network == "none") {
				t.Errorf("NetworkMode=%q NetworkDisabled=%v", hc.NetworkMode, cfg.NetworkDisabled)
			}
			if !strings.Contains(hc.Tmpfs["/tmp"], "size=16m") || !strings.Contains(hc.Tmpfs["/tmp"], "noexec") {
				t.Errorf("Tmpfs = %v", hc.Tmpfs)
			}
			if hc.Runtime != tc.runtime {
				t.Errorf("Runtime = %q, want %q", hc.Runtime, tc.runtime)
			}
			if hc.PidsLimit == nil || *hc.PidsLimit != tc.pids {
				t.Errorf("PidsLimit = %v, want %d", hc.PidsLimit, tc.pids)
			}
			if hc.Memory != 256<<20 || hc.MemorySwap != hc.Memory || hc.NanoCPUs != 1e9 {
				t.Errorf("Memory=%d MemorySwap=%d NanoCPUs=%d", hc.Memory, hc.MemorySwap, hc.NanoCPUs)
			}
			if hc.LogConfig.Type != "none" || hc.Init == nil || !*hc.Init {
				t.Errorf("LogConfig=%v Init=%v", hc.LogConfig, hc.Init)
			}
			if !cfg.OpenStdin || !cfg.StdinOnce || cfg.Tty || !cfg.AttachStdout || !cfg.AttachStderr {
				t.Errorf("stdio config %+v", cfg)
			}
			wantLabels := map[string]string{LabelManaged: "true", LabelUpstream: tc.spec.Name, LabelInstance: "inst-1",
				LabelTier: string(tc.spec.WithDefaults().Tier), LabelHost: "h", LabelPID: "42", LabelPIDStart: "99"}
			if diff := cmp.Diff(wantLabels, cfg.Labels); diff != "" {
				t.Errorf("Labels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestContainerConfigEnvCommandMounts(t *testing.T) {
	d := &dockerRunner{opts: Options{Instance: "i"}}
	spec := Spec{Name: "fs", Image: "img", Command: []string{"node", "server.js"}, Env: map[string]string{"B": "2", "A": "1"},
		User: "1000:1000", Memory: "64m", CPUs: 0.5, Timeout: time.Minute,
		Mounts: []Mount{{Source: "/srv/data", Target: "/data"}, {Source: "/srv/out", Target: "/out", Writable: true}}}
	cfg, hc, err := d.containerConfig(spec.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"A=1", "B=2"}, cfg.Env); diff != "" {
		t.Errorf("Env (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"node", "server.js"}, []string(cfg.Entrypoint)); diff != "" || len(cfg.Cmd) != 0 {
		t.Errorf("Entrypoint %v Cmd %v", cfg.Entrypoint, cfg.Cmd)
	}
	if cfg.User != "1000:1000" || hc.Memory != 64<<20 || hc.NanoCPUs != 5e8 {
		t.Errorf("User=%q Memory=%d NanoCPUs=%d", cfg.User, hc.Memory, hc.NanoCPUs)
	}
	want := []mount.Mount{
		{Type: mount.TypeBind, Source: "/srv/data", Target: "/data", ReadOnly: true},
		{Type: mount.TypeBind, Source: "/srv/out", Target: "/out"},
	}
	if diff := cmp.Diff(want, hc.Mounts); diff != "" {
		t.Errorf("Mounts (-want +got):\n%s", diff)
	}
	spec.Mounts = append(spec.Mounts, Mount{Source: "/var/run/docker.sock", Target: "/s"})
	if _, _, err := d.containerConfig(spec.WithDefaults()); err == nil {
		t.Error("docker socket mount accepted")
	}
}

func TestStatsFromDocker(t *testing.T) {
	var s container.StatsResponse
	s.Read = time.Unix(100, 0)
	s.CPUStats.CPUUsage.TotalUsage = 2_500_000_000
	s.MemoryStats.Usage = 10 << 20
	s.MemoryStats.Limit = 64 << 20
	s.MemoryStats.Stats = map[string]uint64{"inactive_file": 2 << 20}
	s.PidsStats.Current = 7
	s.BlkioStats.IoServiceBytesRecursive = []container.BlkioStatEntry{
		{Op: "read", Value: 100}, {Op: "Read", Value: 20}, {Op: "write", Value: 5}, {Op: "total", Value: 125},
	}
	want := Stats{Time: time.Unix(100, 0), CPUSeconds: 2.5, MemoryBytes: 8 << 20, MemoryLimit: 64 << 20,
		ReadBytes: 120, WriteBytes: 5, Pids: 7}
	if diff := cmp.Diff(want, statsFromDocker(s)); diff != "" {
		t.Errorf("statsFromDocker (-want +got):\n%s", diff)
	}
}

func TestStale(t *testing.T) {
	d := &dockerRunner{opts: Options{Instance: "me"}, host: "h"}
	self := procStart(1)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"mine", map[string]string{LabelInstance: "me", LabelHost: "h", LabelPID: "999999999"}, false},
		{"other host", map[string]string{LabelInstance: "x", LabelHost: "other", LabelPID: "999999999"}, false},
		{"dead pid", map[string]string{LabelInstance: "x", LabelHost: "h", LabelPID: "999999999"}, true},
		{"no pid", map[string]string{LabelInstance: "x", LabelHost: "h"}, true},
		{"live pid", map[string]string{LabelInstance: "x", LabelHost: "h", LabelPID: "1", LabelPIDStart: self}, false},
		{"pid reused", map[string]string{LabelInstance: "x", LabelHost: "h", LabelPID: "1", LabelPIDStart: self + "0"}, true},
	} {
		if got := d.stale(tc.labels); got != tc.want {
			t.Errorf("%s: stale = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestContainerName(t *testing.T) {
	n := containerName("my upstream/../x")
	if !strings.HasPrefix(n, "symbi-my_upstream_.._x-") {
		t.Errorf("containerName = %q", n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.-", r)) {
			t.Errorf("containerName %q has %q", n, r)
		}
	}
}

func TestGoneOrGoing(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("Error response from daemon: No such container: 4b8789237c08"), true},
		{errors.New("Error response from daemon: removal of container 4b87 is already in progress"), true},
		{errors.New("Error response from daemon: cannot remove a running container"), false},
		{errors.New("dial unix /var/run/docker.sock: connect: connection refused"), false},
	} {
		if got := goneOrGoing(tc.err); got != tc.want {
			t.Errorf("goneOrGoing(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
