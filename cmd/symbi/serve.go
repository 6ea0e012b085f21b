package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
)

var version = "dev"

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "symbi %s\n", version)
	return 0
}

// commonFlags are the flags of mcp and serve.
type commonFlags struct {
	config    string
	logLevel  string
	logFormat string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "configuration file (TOML); none: built-in defaults, no upstreams")
	fs.StringVar(&c.logLevel, "log-level", envOr("SYMBI_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", envOr("SYMBI_LOG_FORMAT", "text"), "log format on stderr: text (key=value) or json (one object per line)")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// newLogger returns the logger of mcp and serve, writing to w (stderr: in `symbi mcp`
// stdout carries only the protocol) at level, as key=value text or as JSON lines.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parse log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: must be text or json", format)
}

// loadConfig reads the file, or returns the built-in default when path is "".
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// app is a configured gateway with everything it needs, ready to serve.
type app struct {
	cfg *config.Config
	log *slog.Logger
	gw  *gateway.Gateway
	rt  *runtime
	// reloaders run on SIGHUP after the policy reload (the TLS certificate). Set them
	// before start.
	reloaders []func()
	// configPath is the configuration file ("" for the built-in defaults); running is the
	// configuration in force, updated by SIGHUP with the keys it applies (reload.go). Only
	// the reload goroutine touches running.
	configPath string
	running    *config.Config
	mode       string // serve or mcp
}

// start runs the gateway and the runtime's loops until the returned stop is called.
// SIGHUP re-reads the configuration file (reloadConfig), reloads the policy (and the TLS
// certificate) and re-lists every upstream; a
// quarantine decision made by `symbi tools approve|reject` re-lists them too
// (watchDecisions).
//
// stop cancels them and waits for them until ctx ends, then closes the runtime (which
// flushes the audit trail) in any case: the process exits on time even if something
// ignored its cancellation.
func (a *app) start() (stop func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	stopControl, err := a.startControl(ctx, a.mode)
	if err != nil {
		a.log.Warn("no control socket: symbi ls and symbi logs cannot reach this process", "err", err)
		stopControl = func() {}
	}
	fileChanged := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); a.watchConfigFile(ctx, configPoll, fileChanged) }() // owned: ends at cancel
	go func() { defer wg.Done(); _ = a.gw.Run(ctx) }()                               // owned: ends at cancel
	go func() { defer wg.Done(); _ = a.rt.run(ctx) }()                               // owned: ends at cancel
	go func() { defer wg.Done(); a.watchDecisions(ctx, decisionPoll) }()             // owned: ends at cancel
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() { // owned: ends at cancel
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.reload(ctx)
			case <-fileChanged:
				a.log.Info("configuration file changed; reloading it", "file", a.configPath)
				a.reloadConfigAs(ctx, "reload (file changed)")
			}
		}
	}()
	return func(ctx context.Context) {
		signal.Stop(hup)
		cancel()
		stopControl()
		stopped := make(chan struct{})
		go func() { wg.Wait(); close(stopped) }() // owned: ends when the loops do (or with the process)
		select {
		case <-stopped:
		case <-ctx.Done():
			a.log.Error("gateway did not stop within shutdown_timeout; flushing the audit trail and exiting anyway")
		}
		a.rt.close()
	}
}

// reload re-reads the configuration and the policy and re-lists every upstream's tools.
func (a *app) reload(ctx context.Context) {
	a.log.Info("reload requested (SIGHUP)")
	a.reloadConfig(ctx)
	if err := a.rt.policy.Reload(ctx); err != nil {
		a.log.Error("reload policy", "err", err)
	}
	for _, r := range a.reloaders {
		r()
	}
	a.relist(ctx)
}

// configPoll is how often a running symbi looks at its configuration file for changes
// (`symbi add|remove` also send SIGHUP, which is immediate).
var configPoll = 2 * time.Second

// watchConfigFile signals changed when the configuration file's size or modification
// time changes, until ctx ends.
func (a *app) watchConfigFile(ctx context.Context, every time.Duration, changed chan<- struct{}) {
	if a.configPath == "" {
		return
	}
	stamp := func() string {
		fi, err := os.Stat(a.configPath)
		if err != nil {
			return "missing"
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := stamp(); cur != last {
			last = cur
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}
}

// decisionPoll is how often a running symbi looks for quarantine decisions made by
// another process (`symbi tools approve|reject` on the same data_dir).
var decisionPoll = 2 * time.Second

// watchDecisions re-lists every upstream when an operator approves or rejects a tool
// definition from another process, so the decision applies without a signal.
func (a *app) watchDecisions(ctx context.Context, every time.Duration) {
	q := a.rt.gate.Quarantine()
	last, err := q.Decisions(ctx)
	if err != nil {
		a.log.Warn("read quarantine decisions", "err", err)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := q.Decisions(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("read quarantine decisions", "err", err)
			}
			continue
		}
		if n != last {
			last = n
			a.log.Info("quarantine decision recorded; re-listing upstreams")
			a.relist(ctx)
		}
	}
}

// relist re-lists every upstream's tools, prompts and resources.
func (a *app) relist(ctx context.Context) {
	for _, st := range a.gw.Status() {
		if st.State == gateway.StateDown || st.State == gateway.StateStopped {
			continue // it lists everything when it connects again
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := a.gw.Refresh(rctx, st.Name); err != nil && st.State == gateway.StateStarting {
			a.log.Debug("re-list upstream (starting: it lists when it connects)", "upstream", st.Name, "err", err)
		} else if err != nil {
			a.log.Warn("re-list upstream", "upstream", st.Name, "err", err)
		}
		cancel()
	}
}

func setup(ctx context.Context, name string, args []string, stderr io.Writer) (*app, *flag.FlagSet, int) {
	fs := flag.NewFlagSet("symbi "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf commonFlags
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, fs, 0
		}
		return nil, fs, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "symbi %s: unexpected arguments %q\n", name, fs.Args())
		return nil, fs, 2
	}
	log, err := newLogger(stderr, cf.logLevel, cf.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "symbi %s: %v\n", name, err)
		return nil, fs, 2
	}
	cfg, err := loadConfig(cf.config)
	if err != nil {
		fmt.Fprintf(stderr, "symbi %s: %v\n", name, err)
		return nil, fs, 2
	}
	if err := os.MkdirAll(cfg.Server.DataDir, 0o700); err != nil {
		fmt.Fprintf(stderr, "symbi %s: create data dir: %v\n", name, err)
		return nil, fs, 2
	}
	gw, rt, err := buildRuntime(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "symbi %s: %v\n", name, err)
		return nil, fs, 2
	}
	running := *cfg
	return &app{cfg: cfg, log: log, gw: gw, rt: rt, configPath: cf.config, running: &running, mode: name}, fs, 0
}

// runMCP serves one client over stdio.
func runMCP(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, _, code := setup(ctx, "mcp", args, stderr)
	if a == nil {
		return code
	}
	stop := a.start()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.Duration)
		defer cancel()
		stop(sctx)
	}()
	a.gw.WaitReady(ctx)
	a.log.Info("serving MCP on stdio", "upstreams", len(a.cfg.Upstreams))
	if err := a.gw.ServeStdio(ctx, os.Stdin, stdout, os.Stdin); err != nil {
		a.log.Error("stdio session ended", "err", err)
		return 1
	}
	return 0
}

// runServe serves MCP over HTTP until ctx ends, then drains.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, _, code := setup(ctx, "serve", args, stderr)
	if a == nil {
		return code
	}
	ln, err := net.Listen("tcp", a.cfg.Server.Listen)
	if err != nil {
		a.rt.close() // nothing started yet: release the state and the audit trail
		fmt.Fprintf(stderr, "symbi serve: listen: %v\n", err)
		return 2
	}
	var cert *certificate
	if a.cfg.Server.TLSCert != "" {
		if cert, err = loadCertificate(a.cfg.Server.TLSCert, a.cfg.Server.TLSKey, a.cfg.Server.TLSClientCA); err != nil {
			ln.Close()
			a.rt.close()
			fmt.Fprintf(stderr, "symbi serve: server.tls_cert: %v\n", err)
			return 2
		}
		a.reloaders = append(a.reloaders, func() {
			if err := cert.reload(); err != nil {
				a.log.Error("reload TLS certificate; keeping the previous one", "err", err)
				return
			}
			a.log.Info("TLS certificate reloaded", "file", a.cfg.Server.TLSCert)
		})
	}
	if !loopbackAddr(ln.Addr()) {
		if len(a.cfg.Server.Tokens) == 0 && a.cfg.Server.TLSClientCA == "" && !a.cfg.OAuth.Enabled() {
			a.log.Warn("no tokens configured: only loopback clients will be served", "listen", ln.Addr().String())
		}
		if cert == nil {
			a.log.Warn("serving plain HTTP on a non-loopback address: bearer tokens and tool traffic travel in clear; set server.tls_cert and server.tls_key, or terminate TLS in front of symbi",
				"listen", ln.Addr().String())
		}
	}
	var metricsLn net.Listener
	if a.cfg.Server.MetricsListen != "" {
		if metricsLn, err = net.Listen("tcp", a.cfg.Server.MetricsListen); err != nil {
			ln.Close()
			a.rt.close()
			fmt.Fprintf(stderr, "symbi serve: listen metrics: %v\n", err)
			return 2
		}
	}
	stop := a.start()
	stopped := false
	defer func() { // on an early return; the normal path stops within shutdown_timeout below
		if !stopped {
			sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout.Duration)
			defer cancel()
			stop(sctx)
		}
	}()

	hopts := a.rt.http
	hopts.NoMetrics = metricsLn != nil
	hopts.AllowedOrigins = a.cfg.Server.AllowedOrigins
	hopts.Limits = gateway.HTTPLimits{
		SessionIdleTimeout:          a.cfg.Server.SessionIdleTimeout.Duration,
		MaxSessions:                 a.cfg.Server.MaxSessions,
		MaxInflightBytes:            a.cfg.Server.MaxInflightBytes,
		MaxInflightBytesPerIdentity: a.cfg.Server.MaxInflightBytesPerIdentity,
	}
	srv := &http.Server{
		Handler:           a.gw.Handler(&hopts),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if cert != nil {
		srv.TLSConfig = cert.config()
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }() // owned: ends at Shutdown
	var msrv *http.Server
	if metricsLn != nil {
		msrv = &http.Server{Handler: a.gw.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(metricsLn) }() // owned: ends at Shutdown
	}
	fmt.Fprintf(stdout, "symbi serving on %s://%s/mcp (sse: /sse, websocket: /ws)\n", scheme, ln.Addr())
	a.log.Info("serving MCP over HTTP", "addr", ln.Addr().String(), "tls", cert != nil, "upstreams", len(a.cfg.Upstreams))

	exit := 0
	select {
	case <-ctx.Done():
		a.log.Info("shutting down", "timeout", a.cfg.Server.ShutdownTimeout.String())
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http server failed", "err", err)
			exit = 1
		}
	}
	// The whole shutdown fits in shutdown_timeout: requests in flight get three
	// quarters of it to drain; then the gateway stops (calls still pending are cancelled,
	// upstreams closed) and the audit trail is flushed, in what remains.
	timeout := a.cfg.Server.ShutdownTimeout.Duration
	sctx, scancel := context.WithTimeout(context.Background(), timeout)
	defer scancel()
	dctx, dcancel := context.WithTimeout(sctx, timeout*3/4)
	defer dcancel()
	if err := srv.Shutdown(dctx); err != nil {
		a.log.Warn("shutdown did not drain in time", "err", err)
		_ = srv.Close()
	}
	if msrv != nil {
		if err := msrv.Shutdown(dctx); err != nil {
			_ = msrv.Close()
		}
	}
	stopped = true
	stop(sctx)
	return exit
}

func loopbackAddr(a net.Addr) bool {
	host, _, _ := net.SplitHostPort(a.String())
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// runConfig implements `symbi config validate FILE` and `symbi config show FILE`.
func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || (args[0] != "validate" && args[0] != "show") {
		fmt.Fprintln(stderr, "usage: symbi config validate FILE | symbi config show FILE")
		return 2
	}
	cfg, err := config.Load(args[1])
	if err == nil {
		err = checkAgentsDir(cfg) // cmd_agents.go
	}
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "%s: %d problem(s)\n", args[1], len(ce.Problems))
			for _, p := range ce.Problems {
				fmt.Fprintf(stderr, "  %s\n", p)
			}
			return 1
		}
		fmt.Fprintf(stderr, "symbi config: %v\n", err)
		return 2
	}
	if args[0] == "show" {
		if err := writeTOML(stdout, cfg.Redacted()); err != nil {
			fmt.Fprintf(stderr, "symbi config: %v\n", err)
			return 2
		}
		return 0
	}
	fmt.Fprintf(stdout, "%s: ok (%d upstream(s): %s)\n", args[1], len(cfg.Upstreams), upstreamNames(cfg))
	return 0
}

func upstreamNames(cfg *config.Config) string {
	names := make([]string, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		names = append(names, u.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
