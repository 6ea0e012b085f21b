package sandbox

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTierAtLeast(t *testing.T) {
	for _, tc := range []struct {
		have, want Tier
		ok         bool
	}{
		{TierNone, TierNone, true},
		{TierDocker, TierNone, true},
		{TierGVisor, TierDocker, true},
		{TierGVisor, TierGVisor, true},
		{TierDocker, TierGVisor, false},
		{TierNone, TierDocker, false},
		{"", TierNone, false},
		{TierGVisor, "vm", false},
		{"vm", "vm", false},
	} {
		if got := TierAtLeast(tc.have, tc.want); got != tc.ok {
			t.Errorf("TierAtLeast(%q, %q) = %v, want %v", tc.have, tc.want, got, tc.ok)
		}
	}
}

func TestParseTier(t *testing.T) {
	for _, s := range []string{"none", "docker", "gvisor"} {
		if got, err := ParseTier(s); err != nil || string(got) != s {
			t.Errorf("ParseTier(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "Docker", "runsc", "gvisor "} {
		if _, err := ParseTier(s); err == nil {
			t.Errorf("ParseTier(%q): want an error", s)
		}
	}
}

func TestSpecDefaults(t *testing.T) {
	got := Spec{Name: "fs", Image: "local/fs:1"}.WithDefaults()
	want := Spec{Name: "fs", Image: "local/fs:1", Tier: TierDocker, Network: "none",
		Memory: "256m", CPUs: 1, Pids: 128, User: "65534:65534"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WithDefaults (-want +got):\n%s", diff)
	}
	// Explicit values survive.
	in := Spec{Tier: TierGVisor, Image: "i", Network: "bridge", Memory: "1g", CPUs: 0.5, Pids: 10, User: "0:0", Timeout: time.Second}
	if diff := cmp.Diff(in, in.WithDefaults()); diff != "" {
		t.Errorf("WithDefaults changed explicit values (-want +got):\n%s", diff)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want []string // substrings of the joined error; nil = valid
	}{
		{"docker ok", Spec{Image: "x"}, nil},
		{"none ok", Spec{Tier: TierNone, Command: []string{"x"}}, nil},
		{"docker without image", Spec{}, []string{"image: required for tier docker"}},
		{"gvisor without image", Spec{Tier: TierGVisor}, []string{"image: required for tier gvisor"}},
		{"none without command", Spec{Tier: TierNone}, []string{"command: required"}},
		{"every problem at once", Spec{Tier: TierDocker, Memory: "lots", CPUs: -1, Pids: -2, Timeout: -1,
			Mounts: []Mount{{Source: "/var/run/docker.sock", Target: "/s"}}, Env: map[string]string{"A=B": "c"}},
			[]string{"image:", "memory:", "cpus:", "pids:", "timeout:", "mounts[0]:", "env: invalid name"}},
		{"bridge network", Spec{Image: "x", Network: "bridge"}, nil},
		{"named network", Spec{Image: "x", Network: "tools-net"}, nil},
		{"host network refused", Spec{Image: "x", Network: "host"}, []string{`network: network "host"`, `unsafe = ["host_network"]`}},
		{"host network opted in", Spec{Image: "x", Network: "host", Unsafe: []Unsafe{UnsafeHostNetwork}}, nil},
		{"container network refused", Spec{Image: "x", Network: "container:db"}, []string{"joins another container's network", `"container_network"`}},
		{"container network opted in", Spec{Image: "x", Network: "container:db", Unsafe: []Unsafe{UnsafeContainerNetwork}}, nil},
		{"container network needs a name", Spec{Image: "x", Network: "container:", Unsafe: []Unsafe{UnsafeContainerNetwork}}, []string{"names no container"}},
		{"host opt-in does not open container", Spec{Image: "x", Network: "container:db", Unsafe: []Unsafe{UnsafeHostNetwork}}, []string{"container_network"}},
		{"root user refused", Spec{Image: "x", User: "0:0"}, []string{`user: user "0:0" runs as root`, `"root_user"`}},
		{"root uid refused", Spec{Image: "x", User: "0"}, []string{"runs as root"}},
		{"root gid refused", Spec{Image: "x", User: "1000:0"}, []string{"runs as root"}},
		{"root by name refused", Spec{Image: "x", User: "root"}, []string{"numeric uid"}},
		{"user name refused", Spec{Image: "x", User: "node"}, []string{"numeric uid"}},
		{"root opted in", Spec{Image: "x", User: "0:0", Unsafe: []Unsafe{UnsafeRootUser}}, nil},
		{"numeric user", Spec{Image: "x", User: "1000:1000"}, nil},
		{"unknown unsafe", Spec{Image: "x", Unsafe: []Unsafe{"everything"}}, []string{`unsafe option "everything"`}},
		{"none tier ignores container settings", Spec{Tier: TierNone, Command: []string{"x"}, Network: "host", User: "0"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.WithDefaults().Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateMount(t *testing.T) {
	dir := t.TempDir()
	toEtc := filepath.Join(dir, "sneaky")
	if err := os.Symlink("/etc", toEtc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		m       Mount
		wantErr string // "" = valid
	}{
		{"data dir", Mount{Source: dir, Target: "/data"}, ""},
		{"writable data dir", Mount{Source: "/srv/data", Target: "/data", Writable: true}, ""},
		{"home", Mount{Source: "/home/alice/project", Target: "/work"}, ""},
		{"root", Mount{Source: "/", Target: "/host"}, "/ may not be mounted"},
		{"root by dots", Mount{Source: "/srv/..", Target: "/host"}, "parent directory element"},
		{"dots in target", Mount{Source: "/srv", Target: "/a/../proc"}, "parent directory element"},
		{"relative source", Mount{Source: "data", Target: "/data"}, "not absolute"},
		{"relative target", Mount{Source: "/srv", Target: "data"}, "not absolute"},
		{"empty source", Mount{Target: "/data"}, "empty"},
		{"docker socket", Mount{Source: "/var/run/docker.sock", Target: "/var/run/docker.sock"}, "docker.sock"},
		{"docker socket via /run", Mount{Source: "/run/docker.sock", Target: "/s"}, "docker.sock"},
		{"other docker socket", Mount{Source: "/home/alice/.docker/run/docker.sock", Target: "/s"}, "Docker socket"},
		{"parent of docker socket", Mount{Source: "/var", Target: "/v"}, "contains /var/run/docker.sock"},
		{"proc", Mount{Source: "/proc", Target: "/p"}, "inside /proc"},
		{"proc child", Mount{Source: "/proc/1/root", Target: "/p"}, "inside /proc"},
		{"sys", Mount{Source: "/sys/fs/cgroup", Target: "/c"}, "inside /sys"},
		{"etc", Mount{Source: "/etc", Target: "/e"}, "inside /etc"},
		{"etc file", Mount{Source: "/etc/shadow", Target: "/e"}, "inside /etc"},
		{"etc double slash", Mount{Source: "//etc//", Target: "/e"}, "inside /etc"},
		{"symlink to etc", Mount{Source: toEtc, Target: "/e"}, "resolves to /etc"},
		{"etcetera is fine", Mount{Source: "/etcetera", Target: "/e"}, ""},
		{"target root", Mount{Source: "/srv", Target: "/"}, "/ may not be replaced"},
		{"target proc", Mount{Source: "/srv", Target: "/proc/self"}, "inside /proc"},
		{"comma", Mount{Source: "/srv/a,b", Target: "/x"}, "','"},
		{"user runtime dirs", Mount{Source: "/run/user", Target: "/r"}, "inside /run/user"},
		{"a user's runtime dir", Mount{Source: "/run/user/1000", Target: "/r"}, "inside /run/user"},
		{"docker runtime dir", Mount{Source: "/run/docker", Target: "/r"}, "inside /run/docker"},
		{"docker plugins", Mount{Source: "/run/docker/plugins", Target: "/r"}, "inside /run/docker"},
		{"every home", Mount{Source: "/home", Target: "/h"}, "every user's home"},
		{"a whole home", Mount{Source: "/home/alice", Target: "/h"}, "a whole home directory"},
		{"a whole home with slash", Mount{Source: "/home/alice/", Target: "/h"}, "a whole home directory"},
		{"ssh keys", Mount{Source: "/home/alice/.ssh", Target: "/h"}, "hidden entry of a home"},
		{"cloud credentials", Mount{Source: "/home/alice/.aws/credentials", Target: "/h"}, "hidden entry of a home"},
		{"hidden inside a project is fine", Mount{Source: "/home/alice/project/.git", Target: "/h"}, ""},
		{"homeless name is fine", Mount{Source: "/homework", Target: "/h"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateMount(tc.m)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("ValidateMount(%+v) = %v, want nil", tc.m, err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("ValidateMount(%+v) = nil, want an error containing %q", tc.m, tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("ValidateMount(%+v) = %v, want it to contain %q", tc.m, err, tc.wantErr)
			}
		})
	}
}

// TestValidateMountProtected: symbi's own state (data directory, audit trail) may not be
// mounted, nor anything inside it, nor a parent of it, nor a symlink to it.
func TestValidateMountProtected(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "symbi-data")
	if err := os.MkdirAll(filepath.Join(data, "audit"), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(data, link); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(base, "notes")
	for _, tc := range []struct {
		name    string
		source  string
		wantErr string
	}{
		{"data dir", data, "inside " + data},
		{"audit trail", filepath.Join(data, "audit"), "inside " + data},
		{"parent of data dir", base, "contains " + data},
		{"symlink to data dir", link, "resolves to " + data},
		{"a sibling", other, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateMount(Mount{Source: tc.source, Target: "/m"}, data)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("ValidateMount(%s) = %v, want nil", tc.source, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("ValidateMount(%s) = %v, want it to contain %q", tc.source, err, tc.wantErr)
			}
		})
	}
	// Sandbox.Start applies its ProtectedPaths before any container is made.
	sb := New(&Options{ProtectedPaths: []string{data}, DockerHost: "unix:///nonexistent.sock"})
	defer sb.Close()
	_, err := sb.Start(t.Context(), Spec{Name: "up", Image: "x", Mounts: []Mount{{Source: data, Target: "/m"}}})
	if err == nil || !strings.Contains(err.Error(), "mounts[0]") || !strings.Contains(err.Error(), "inside "+data) {
		t.Errorf("Start with the data dir mounted = %v, want a mounts[0] error", err)
	}
}

func FuzzValidateMount(f *testing.F) {
	for _, s := range []string{"/", "/srv", "/srv/..", "/var/run/docker.sock", "//etc", "/proc/1", "rel", "/a\x00b"} {
		f.Add(s, "/data")
	}
	f.Fuzz(func(t *testing.T, src, dst string) {
		if ValidateMount(Mount{Source: src, Target: dst}) != nil {
			return
		}
		// Whatever passes is absolute, free of "..", and none of the denied places.
		c := filepath.Clean(src)
		if !filepath.IsAbs(src) || c == "/" || strings.Contains(src, "/../") || strings.HasSuffix(src, "/..") {
			t.Fatalf("accepted source %q", src)
		}
		for _, d := range deniedSources {
			if within(c, d) || within(d, c) {
				t.Fatalf("accepted source %q near %s", src, d)
			}
		}
	})
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1024", 1024},
		{"512k", 512 << 10},
		{"256m", 256 << 20},
		{"256M", 256 << 20},
		{"64MiB", 64 << 20},
		{"1g", 1 << 30},
		{"2GB", 2 << 30},
		{"100b", 100},
	} {
		got, err := ParseBytes(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "m", "-1m", "0", "1.5g", "lots", "99999999999t"} {
		if got, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, got)
		}
	}
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"256m", "1g", "1024", "64MiB", "", "-1", "9223372036854775807k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err == nil && n <= 0 {
			t.Fatalf("ParseBytes(%q) = %d without error", s, n)
		}
	})
}

func TestAssess(t *testing.T) {
	for _, tc := range []struct {
		name      string
		n         Needs
		tier      Tier
		score     int
		reasonHas string
	}{
		{"benign verified", Needs{Sensitivity: SensitivityPublic, Signed: true, Verified: true}, TierDocker, 0, "signed and verified"},
		{"unsigned local tool", Needs{}, TierDocker, 25, "tools are unsigned"},
		{"signed unverified", Needs{Signed: true}, TierDocker, 15, "not verified"},
		{"network and unsigned", Needs{Network: true}, TierGVisor, 50, "outbound network"},
		{"writes confidential", Needs{FilesystemWrite: true, Sensitivity: SensitivityConfidential, Signed: true, Verified: true}, TierDocker, 35, "confidential"},
		{"external apis capped", Needs{ExternalAPIs: []string{"a", "b", "c", "d"}, Signed: true, Verified: true, Sensitivity: SensitivityPublic}, TierDocker, 20, "a, b, c, d"},
		{"everything", Needs{Network: true, FilesystemWrite: true, ExternalAPIs: []string{"x"}, Sensitivity: SensitivityRestricted}, TierGVisor, 100, "handles restricted data"},
		{"unknown sensitivity is restricted", Needs{Sensitivity: "top", Signed: true, Verified: true}, TierDocker, 25, "treated as restricted"},
		// The word configuration accepts is the word the assessment knows.
		{"restricted as configured", Needs{Sensitivity: "restricted", Signed: true, Verified: true}, TierDocker, 25, "+25 handles restricted data"},
		{"threshold", Needs{Network: true, Sensitivity: SensitivityConfidential, Signed: true, Verified: true}, TierGVisor, 40, "score 40 >= 40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Assess(tc.n)
			if a.Tier != tc.tier || a.Score != tc.score {
				t.Errorf("Assess = %s/%d, want %s/%d; reasons %q", a.Tier, a.Score, tc.tier, tc.score, a.Reasons)
			}
			if !strings.Contains(strings.Join(a.Reasons, "\n"), tc.reasonHas) {
				t.Errorf("reasons %q lack %q", a.Reasons, tc.reasonHas)
			}
			if a.Tier == TierNone {
				t.Error("Assess recommended the none tier")
			}
		})
	}
}

func TestExitStatusString(t *testing.T) {
	for _, tc := range []struct {
		st   ExitStatus
		want string
	}{
		{ExitStatus{Code: 0}, "exited 0"},
		{ExitStatus{Code: 137, OOMKilled: true}, "killed: out of memory (exit 137)"},
		{ExitStatus{Code: 143, TimedOut: true}, "stopped: execution timeout (exit 143)"},
		{ExitStatus{Code: -1, Stopped: true}, "stopped (exit -1)"},
		{ExitStatus{Code: -1, Err: errors.New("lost")}, "failed: lost"},
	} {
		if got := tc.st.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.st, got, tc.want)
		}
	}
}

func TestLogBufferDropsOldest(t *testing.T) {
	b := newLogBuffer(4)
	b.Write([]byte("abc"))
	b.Write([]byte("def"))
	b.Close()
	got := make([]byte, 10)
	n, _ := b.Read(got)
	if string(got[:n]) != "cdef" {
		t.Errorf("kept %q, want %q", got[:n], "cdef")
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Error("Write after Close: want an error")
	}
}

// TestUnsafeOptInLogged: an unsafe opt-in is not silent: every start logs a warning that
// names it.
func TestUnsafeOptInLogged(t *testing.T) {
	var buf lockedBuf
	sb := New(&Options{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	defer sb.Close()
	p, err := sb.Start(t.Context(), Spec{Name: "up", Tier: TierNone, Command: []string{"true"}, Unsafe: []Unsafe{UnsafeRootUser}})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	if err := p.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "sandbox isolation weakened") || !strings.Contains(out, "unsafe=root_user") {
		t.Errorf("log does not warn about the opt-in:\n%s", out)
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
