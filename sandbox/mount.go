package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// deniedSources are host paths that must never be mounted into a sandbox: neither
// themselves, nor anything inside them, nor any directory that contains them.
var deniedSources = []string{
	"/proc",
	"/sys",
	"/dev",
	"/etc",
	"/boot",
	"/root",
	"/var/run/docker.sock",
	"/run/docker.sock",
	"/var/run/containerd",
	"/run/containerd",
	"/var/lib/docker",
	"/var/lib/containerd",
	"/run/docker", // the daemon's runtime state and plugin sockets
	"/var/run/docker",
	"/run/user", // per-user runtime dirs: session bus, rootless Docker and Podman sockets
	"/var/run/user",
}

// homesDir holds the users' home directories. Neither it nor a whole home directory may
// be mounted, nor a hidden entry of a home (~/.ssh, ~/.aws, ~/.docker, ~/.config hold
// credentials); a folder inside a home (a project) may.
const homesDir = "/home"

// deniedTargets are container paths a mount may not cover.
var deniedTargets = []string{"/proc", "/sys", "/dev"}

// ValidateMount checks a host mount against the denylist: both paths absolute and free
// of ".." components, the source neither "/" nor a Docker socket, /proc, /sys, /dev, /etc,
// /run/user, /run/docker, the protected paths (symbi's own state: its data and audit
// directories) (or inside, or a parent of, any of them), nor /home, a whole home
// directory (under /home, or the $HOME of this process) or a hidden entry of one; the
// target neither "/" nor inside /proc, /sys or /dev. When the source exists, its symlinks
// are resolved and the real path is checked too.
func ValidateMount(m Mount, protected ...string) error {
	if err := checkPath("source", m.Source); err != nil {
		return err
	}
	if err := checkPath("target", m.Target); err != nil {
		return err
	}
	denied := slices.Clone(deniedSources)
	for _, p := range protected {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("resolve protected path %s: %w", p, err)
		}
		denied = append(denied, abs)
		if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
			denied = append(denied, real)
		}
	}
	if err := checkSource(m.Source, denied); err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(m.Source); err == nil && real != filepath.Clean(m.Source) {
		if err := checkSource(real, denied); err != nil {
			return fmt.Errorf("source %s resolves to %s: %w", m.Source, real, err)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("resolve source %s: %w", m.Source, err)
	}
	t := filepath.Clean(m.Target)
	if t == "/" {
		return errors.New("target: / may not be replaced")
	}
	for _, d := range deniedTargets {
		if within(t, d) {
			return fmt.Errorf("target %s: inside %s", m.Target, d)
		}
	}
	if strings.ContainsAny(m.Source, ",:") || strings.ContainsAny(m.Target, ",:") {
		return errors.New("paths may not contain ',' or ':'")
	}
	return nil
}

func checkPath(what, p string) error {
	if p == "" {
		return fmt.Errorf("%s: empty", what)
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("%s: contains NUL", what)
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%s %s: not absolute", what, p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("%s %s: contains a parent directory element", what, p)
		}
	}
	return nil
}

func checkSource(p string, denied []string) error {
	s := filepath.Clean(p)
	if s == "/" {
		return errors.New("source: / may not be mounted")
	}
	for _, d := range denied {
		if within(s, d) {
			return fmt.Errorf("source %s: inside %s", p, d)
		}
		if within(d, s) {
			return fmt.Errorf("source %s: contains %s", p, d)
		}
	}
	if strings.HasSuffix(s, ".sock") && strings.Contains(filepath.Base(s), "docker") {
		return fmt.Errorf("source %s: a Docker socket", p)
	}
	return checkHomes(p, s)
}

// checkHomes refuses /home, a whole home directory and the hidden entries of a home.
func checkHomes(p, s string) error {
	if s == homesDir {
		return fmt.Errorf("source %s: holds every user's home directory", p)
	}
	homes := []string{}
	if rest, ok := strings.CutPrefix(s, homesDir+"/"); ok {
		user, _, _ := strings.Cut(rest, "/")
		homes = append(homes, homesDir+"/"+user)
	}
	if h, err := os.UserHomeDir(); err == nil && filepath.IsAbs(h) && filepath.Clean(h) != "/" {
		homes = append(homes, filepath.Clean(h))
	}
	for _, h := range homes {
		switch {
		case within(h, s):
			return fmt.Errorf("source %s: a whole home directory (%s); mount a folder inside it", p, h)
		case within(s, h):
			first, _, _ := strings.Cut(strings.TrimPrefix(s, h+"/"), "/")
			if strings.HasPrefix(first, ".") {
				return fmt.Errorf("source %s: inside %s/%s, a hidden entry of a home directory (credentials live there)", p, h, first)
			}
		}
	}
	return nil
}

// within reports whether p is dir or inside it (both clean and absolute).
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// ParseBytes parses a size such as "256m", "1g", "512k", "1024" or "64MiB" into bytes
// (binary units, as Docker does).
func ParseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		case 't':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("parse size %q: want a positive number with an optional k, m, g unit", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("parse size %q: too large", s)
	}
	return n * mult, nil
}
