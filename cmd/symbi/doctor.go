package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/catalog"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/sandbox"
)

// runDoctor checks that a configuration can run here: the file, the state directory,
// the policy, each upstream's command and sandbox tier (with its risk assessment).
// Exit 0 when everything is in order, 1 when something is not.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("symbi doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (TOML); none: the built-in defaults")
	probeTimeout := fs.Duration("timeout", 30*time.Second, "how long each upstream may take to start, initialize and list its tools")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	problems := 0
	check := func(name string, err error, detail string) {
		mark := "ok  "
		if err != nil {
			mark, detail = "FAIL", err.Error()
			problems++
		}
		fmt.Fprintf(stdout, "%s %-28s %s\n", mark, name, detail)
	}

	cfg, err := loadConfig(*path)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			check("config", fmt.Errorf("%d problem(s)", len(ce.Problems)), "")
			for _, p := range ce.Problems {
				fmt.Fprintf(stdout, "     %s\n", p)
			}
			return 1
		}
		check("config", err, "")
		return 1
	}
	check("config", nil, fmt.Sprintf("%d upstream(s): %s", len(cfg.Upstreams), upstreamNames(cfg)))

	err = os.MkdirAll(cfg.Server.DataDir, 0o700)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(cfg.Server.DataDir, ".doctor-*"); err == nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	check("data dir writable", err, cfg.Server.DataDir)
	if err == nil {
		db, err := store.Open(filepath.Join(cfg.Server.DataDir, store.FileName))
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
		}
		check("state (SQLite)", err, filepath.Join(cfg.Server.DataDir, store.FileName))
	}
	if cfg.State.Shared() {
		check("shared state (PostgreSQL)", checkSharedState(ctx, cfg.State), "pins, approvals, tasks, rate limits; audit per replica")
	}

	if cfg.Server.TLSCert != "" {
		_, err := loadCertificate(cfg.Server.TLSCert, cfg.Server.TLSKey, cfg.Server.TLSClientCA)
		check("TLS certificate", err, cfg.Server.TLSCert)
	}

	if cfg.OAuth.Enabled() {
		detail, err := checkOAuthIssuer(ctx, cfg)
		check("OAuth issuer", err, detail)
	}

	w, err := policy.NewWatcher(ctx, cfg.Policy.Dir, nil)
	detail := "built-in default policy"
	if err == nil && cfg.Policy.Dir != "" {
		st := w.Status()
		detail = fmt.Sprintf("%s: %d file(s), revision %.12s", cfg.Policy.Dir, len(st.Files), st.Revision)
	}
	if err == nil {
		if ci := w.Engine().CacheInfo(); ci.Cacheable {
			detail += "; decisions cached by " + strings.Join(ci.KeyPaths, ", ")
		} else {
			detail += "; decisions not cached: " + ci.Reason
		}
	}
	check("policy compiles", err, detail)
	doctorTracing(ctx, check) // tracing.go

	cat, err := catalog.Load()
	check("server catalog", err, fmt.Sprintf("%d well-known servers built in: symbi add --list, symbi add NAME", len(cat)))
	cd, cw := consoleDoctor(cfg)
	fmt.Fprintf(stdout, "info %-28s %s\n", "web console", cd)
	if cw != "" {
		fmt.Fprintf(stdout, "WARN %-28s %s\n", "web console", cw)
	}
	reportEnvironment(ctx, stdout, envProbe{getenv: os.Getenv}.detect(), needsSandbox(cfg))
	for _, in := range instances(cfg.Server.DataDir) {
		fmt.Fprintf(stdout, "info %-28s pid %d, config %s (symbi ls, symbi logs NAME)\n", "running symbi "+in.Mode, in.PID, in.Config)
	}

	var sb *sandbox.Sandbox
	// The launchers of the running symbi, without its start-up reaping of stale
	// containers (a running symbi's would not be stale).
	rt := &runtime{http: gateway.HTTPOptions{ReadyChecks: map[string]func() (bool, any){}}, reaped: true}
	defer rt.close()
	for _, u := range cfg.Upstreams {
		name := "upstream " + u.Name
		if u.Disabled {
			fmt.Fprintf(stdout, "skip %-28s disabled\n", name)
			continue
		}
		if u.URL != "" {
			a := assess(u)
			res, err := probe(ctx, *probeTimeout, gateway.UpstreamConfig{Name: u.Name, URL: u.URL, SSE: u.Transport == "sse",
				Headers: u.Headers, Timeout: u.Timeout.Duration})
			check(name, err, fmt.Sprintf("%s %s: %s (remote; assessment: %s, score %d)", transportOf(u), u.URL, res, a.Tier, a.Score))
			continue
		}
		tier := cfg.Sandbox.DefaultTier
		if u.Sandbox != nil && u.Sandbox.Tier != "" {
			tier = u.Sandbox.Tier
		}
		if tier == "" {
			tier = "none"
		}
		a := assess(u)
		if tier == "auto" {
			tier = string(a.Tier)
		}
		var err error
		var res probeResult
		if tier != "none" {
			if sb == nil {
				sb = sandbox.New(nil)
				defer sb.Close()
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = sb.Available(cctx, sandbox.Tier(tier))
			cancel()
		}
		if err == nil {
			// Really start it, as symbi would: its process, initialize, tools/list.
			var launch gateway.Launcher
			if launch, _, err = rt.launcher(ctx, cfg, u, quietLog); err == nil {
				res, err = probe(ctx, *probeTimeout, gateway.UpstreamConfig{Name: u.Name, Launch: launch, Timeout: u.Timeout.Duration})
			}
		}
		check(name, err, fmt.Sprintf("stdio %q in tier %s: %s", strings.Join(u.Command, " "), tier, res))
		fmt.Fprintf(stdout, "     risk assessment: %s (score %d)\n", a.Tier, a.Score)
		for _, r := range a.Reasons {
			fmt.Fprintf(stdout, "       - %s\n", r)
		}
		if srv, ok := catalogMatch(cat, u); ok {
			fmt.Fprintf(stdout, "     catalog: %s (suggested tier %s; policy: %s)\n", srv.Name, srv.Tier, srv.Policy)
			for _, k := range srv.RequiredEnv() {
				if _, set := u.Env[k]; !set {
					fmt.Fprintf(stdout, "WARN %-28s the catalog says it needs %s in env (%s)\n", name, k, srv.Env[k])
				}
			}
		}
		if tier == "none" {
			fmt.Fprintf(stdout, "     note: tier none runs the server as a host process with symbi's privileges (development only)\n")
		}
		if u.Sandbox != nil {
			for _, opt := range u.Sandbox.Unsafe {
				fmt.Fprintf(stdout, "WARN %-28s isolation weakened on purpose: unsafe %q (network %q, user %q)\n", name, opt, u.Sandbox.Network, u.Sandbox.User)
			}
		}
	}
	if problems > 0 {
		fmt.Fprintf(stdout, "\n%d problem(s)\n", problems)
		return 1
	}
	fmt.Fprintln(stdout, "\nall checks passed")
	return 0
}

// catalogMatch finds the catalog server an upstream runs: the same command.
func catalogMatch(cat []catalog.Server, u config.Upstream) (catalog.Server, bool) {
	for _, srv := range cat {
		if slices.Equal(srv.Command, u.Command) {
			return srv, true
		}
	}
	return catalog.Server{}, false
}

func transportOf(u config.Upstream) string {
	if u.Transport == "sse" {
		return "sse"
	}
	return "streamable HTTP"
}

var quietLog = slog.New(slog.DiscardHandler)

// probeResult describes a started upstream for doctor's report.
type probeResult struct{ gateway.ProbeResult }

func (r probeResult) String() string {
	if r.Protocol == "" {
		return "not started"
	}
	return fmt.Sprintf("started %s, protocol %s, %d tool(s)", r.Server, r.Protocol, r.Tools)
}

// probe starts one upstream and lists its tools, bounded by timeout.
func probe(ctx context.Context, timeout time.Duration, uc gateway.UpstreamConfig) (probeResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if uc.Timeout == 0 || uc.Timeout > timeout {
		uc.Timeout = timeout
	}
	res, err := gateway.Probe(ctx, uc, quietLog)
	return probeResult{res}, err
}
