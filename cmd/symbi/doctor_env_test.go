package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDetectEnvironment(t *testing.T) {
	const gvisorVersion = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n"
	const hostVersion = "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n"
	tests := []struct {
		name  string
		files map[string]string
		env   map[string]string
		want  hostEnv
	}{
		{"host", map[string]string{"proc/version": hostVersion, "proc/1/cgroup": "0::/init.scope\n"}, nil, hostEnv{}},
		{"docker marker", map[string]string{".dockerenv": "", "proc/version": hostVersion}, nil, hostEnv{container: "Docker"}},
		{"docker cgroup v1", map[string]string{"proc/1/cgroup": "12:pids:/docker/0123abcd\n"}, nil, hostEnv{container: "Docker"}},
		{"docker on gvisor", map[string]string{".dockerenv": "", "proc/version": gvisorVersion}, nil, hostEnv{container: "Docker", gvisor: true}},
		{"gvisor without markers", map[string]string{"proc/version": gvisorVersion}, nil, hostEnv{container: "container", gvisor: true}},
		{"kubernetes env", map[string]string{"proc/version": hostVersion}, map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, hostEnv{container: "Kubernetes pod"}},
		{"kubernetes cgroup", map[string]string{"proc/1/cgroup": "11:memory:/kubepods/burstable/pod1/abc\n"}, nil, hostEnv{container: "Kubernetes pod"}},
		{"podman", map[string]string{"run/.containerenv": ""}, nil, hostEnv{container: "Podman"}},
		{"other", nil, map[string]string{"container": "systemd-nspawn"}, hostEnv{container: "container"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got := envProbe{root: root, getenv: func(k string) string { return tc.env[k] }}.detect()
			if got != tc.want {
				t.Errorf("detect() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReportEnvironment(t *testing.T) {
	var out bytes.Buffer
	reportEnvironment(context.Background(), &out, hostEnv{container: "Kubernetes pod", gvisor: true}, false)
	for _, want := range []string{"a container (Kubernetes pod) on gVisor's kernel", "keep data_dir on a volume", "sandbox tier docker", "sandbox tier gvisor"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	reportEnvironment(context.Background(), &out, hostEnv{}, false)
	if !strings.Contains(out.String(), "a host (no container detected)") || strings.Contains(out.String(), "keep data_dir") {
		t.Errorf("host report:\n%s", out.String())
	}
}
