package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/sandbox"
)

// hostEnv is what doctor can tell about where symbi runs: a container (and which), and
// whether its kernel is gVisor's.
type hostEnv struct {
	container string // "" outside a container: "Docker", "Podman", "Kubernetes pod", "container"
	gvisor    bool
}

// envProbe reads the files hostEnv is decided from; tests point it elsewhere.
type envProbe struct {
	root   string // "/" normally
	getenv func(string) string
}

func (p envProbe) read(path string) string {
	b, err := os.ReadFile(p.root + path)
	if err != nil {
		return ""
	}
	return string(b)
}

func (p envProbe) exists(path string) bool {
	_, err := os.Stat(p.root + path)
	return err == nil
}

// detect decides hostEnv. Kubernetes sets KUBERNETES_SERVICE_HOST in every container of
// a pod; Docker and Podman leave a marker file at the root; the cgroup path names the
// runtime on cgroup v1. gVisor's kernel presents itself in /proc/version as a Linux
// 4.4.0 built on a fixed date, and its boot messages in /proc are gVisor's own.
func (p envProbe) detect() hostEnv {
	var e hostEnv
	cgroup := p.read("/proc/1/cgroup")
	switch {
	case p.getenv("KUBERNETES_SERVICE_HOST") != "" || strings.Contains(cgroup, "kubepods"):
		e.container = "Kubernetes pod"
	case p.exists("/.dockerenv") || strings.Contains(cgroup, "/docker"):
		e.container = "Docker"
	case p.exists("/run/.containerenv"):
		e.container = "Podman"
	case strings.Contains(cgroup, "containerd") || p.getenv("container") != "":
		e.container = "container"
	}
	version := p.read("/proc/version")
	e.gvisor = strings.HasPrefix(version, "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016")
	if e.gvisor && e.container == "" {
		// gVisor hides Docker's marker and the cgroup path; its kernel runs sandboxes only.
		e.container = "container"
	}
	return e
}

// reportEnvironment prints doctor's informational lines about where symbi runs and
// which sandbox runtimes the local Docker engine offers. None of it is a failure: an
// upstream that needs a tier that is missing fails its own check.
func reportEnvironment(ctx context.Context, stdout io.Writer, e hostEnv, needsSandbox bool) {
	where := "a host (no container detected)"
	if e.container != "" {
		where = "a container (" + e.container + ")"
	}
	if e.gvisor {
		where += " on gVisor's kernel"
	}
	fmt.Fprintf(stdout, "info %-28s %s\n", "runs in", where)
	if e.container != "" {
		fmt.Fprintf(stdout, "     note: keep data_dir on a volume; the docker and gvisor tiers need a Docker engine reachable from here (a mounted socket gives symbi control of that engine)\n")
	}
	sb := sandbox.New(nil)
	defer sb.Close()
	for _, tier := range []sandbox.Tier{sandbox.TierDocker, sandbox.TierGVisor} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := sb.Available(cctx, tier)
		cancel()
		state := "available"
		if err != nil {
			state = "unavailable: " + err.Error()
			if !needsSandbox {
				state += " (no upstream here needs it)"
			}
		}
		fmt.Fprintf(stdout, "info %-28s %s\n", "sandbox tier "+string(tier), state)
	}
}

// needsSandbox reports whether an enabled stdio upstream of cfg runs in a container tier.
func needsSandbox(cfg *config.Config) bool {
	for _, u := range cfg.Upstreams {
		if u.Disabled || u.URL != "" {
			continue
		}
		tier := cfg.Sandbox.DefaultTier
		if u.Sandbox != nil && u.Sandbox.Tier != "" {
			tier = u.Sandbox.Tier
		}
		if tier != "" && tier != "none" {
			return true
		}
	}
	return false
}
