package config

import (
	"path/filepath"
	"strings"
)

// ResolvePaths makes every relative host path in c relative to base, the directory of
// the configuration file, so that symbi finds the same state, keys, policies and
// certificates whatever directory it is started from (an IDE may start `symbi mcp` from
// "/"). Load and Parse call it; Default does not (with no file, paths stay relative to
// the working directory). Paths inside a sandbox container (an upstream's dir and
// command in a container tier, mount targets) and URLs are left alone. Calling it twice
// changes nothing more: absolute paths stay as they are.
//
// Every key that names a file or directory on the host is resolved here; a new such key
// belongs here too (TestResolvePathsCoversEveryPathKey checks it).
func (c *Config) ResolvePaths(base string) {
	if base == "" || base == "." {
		return // relative to the working directory already
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	abs(&c.Server.DataDir)
	abs(&c.Server.TLSCert)
	abs(&c.Server.TLSKey)
	abs(&c.Server.TLSClientCA)
	abs(&c.Policy.Dir)
	abs(&c.Audit.Dir)
	abs(&c.Audit.KeyFile)
	abs(&c.Bus.KeyFile)
	abs(&c.Bus.NATSCredentialsFile)
	abs(&c.Bus.NATSCAFile)
	if c.Bus.NATSEmbedded != nil {
		abs(&c.Bus.NATSEmbedded.StoreDir)
	}
	abs(&c.AgentsDir)
	for i := range c.Context.IngestRoots {
		abs(&c.Context.IngestRoots[i])
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if c.hostTier(u) {
			abs(&u.Dir)
			// A command written as a relative path (./server.sh) is a file beside the
			// configuration; a bare name (npx) is looked up in PATH.
			if len(u.Command) > 0 && relativeCommand(u.Command[0]) {
				abs(&u.Command[0])
			}
		}
		if p := u.SchemaPin; p != nil {
			abs(&p.DiscoveryFile)
			abs(&p.BundleFile)
			if !strings.Contains(p.Manifest, "://") {
				abs(&p.Manifest)
			}
		}
		if s := u.Sandbox; s != nil {
			for j, m := range s.Mounts {
				src, rest, ok := strings.Cut(m, ":")
				if ok && relativeMountSource(src) {
					s.Mounts[j] = filepath.Join(base, src) + ":" + rest
				}
			}
		}
	}
}

// hostTier reports whether u's command runs as a host process (tier none), where its dir
// and command are host paths.
func (c *Config) hostTier(u *Upstream) bool {
	tier := c.Sandbox.DefaultTier
	if u.Sandbox != nil && u.Sandbox.Tier != "" {
		tier = u.Sandbox.Tier
	}
	return tier == "" || tier == "none"
}

func relativeCommand(s string) bool {
	return strings.HasPrefix(s, "./") || strings.HasPrefix(s, "../")
}

// relativeMountSource reports whether a mount's host side is written relative to the
// configuration file: "./x" or "../x" ("x" alone would read like a Docker volume name).
func relativeMountSource(s string) bool {
	return s == "." || s == ".." || relativeCommand(s)
}
