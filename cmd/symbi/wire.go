package main

import (
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/sandbox"
	"github.com/symbi-dev/symbi/schemapin"
	"golang.org/x/sync/errgroup"
)

// runtime is everything a serving symbi owns besides the gateway: state, verification,
// policy, audit and sandbox. close releases it all, in reverse order.
type runtime struct {
	db      *sql.DB
	gate    *schemapin.Gate
	policy  *policy.Watcher
	audit   *audit.Log
	outbox  *audit.Outbox // operator actions other processes queue for the trail
	log     *slog.Logger
	sandbox *sandbox.Sandbox
	http    gateway.HTTPOptions
	// httpSink is the audit trail's HTTP collector sink, if configured (for metrics).
	httpSink *audit.HTTPSink

	context    *contextFeature // memory, knowledge base, RAG and tool search
	agents     *agentsRuntime  // the scheduler and the agents (cmd_agents.go)
	tierEvents []audit.Event   // tiers chosen by risk assessment, recorded once the trail is open
	reaped     bool            // stale containers removed (once, when a container tier is used)
	tiers      []sandbox.Tier  // container tiers in use, for /readyz
	// pins are the SchemaPin settings of each upstream, swapped whole when a reload
	// changes the upstreams.
	pins atomic.Pointer[map[string]schemapin.UpstreamOptions]
	// serving is set once the HTTP options are handed to the server: from then on
	// rt.http may not change (a reload that needs a new sandbox tier says so).
	serving bool

	closers []func() error
}

func (rt *runtime) close() {
	for i := len(rt.closers) - 1; i >= 0; i-- {
		_ = rt.closers[i]()
	}
	rt.closers = nil
}

// buildRuntime opens the state and the security parts the configuration asks for and
// builds the gateway on top of them. On error everything opened so far is closed.
func buildRuntime(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *gateway.Gateway, _ *runtime, err error) {
	rt := &runtime{log: log, http: gateway.HTTPOptions{Routes: map[string]http.Handler{}, Public: map[string]http.Handler{}, ReadyChecks: map[string]func() (bool, any){}}}
	defer func() {
		if err != nil {
			rt.close()
		}
	}()
	if rt.db, err = store.Open(filepath.Join(cfg.Server.DataDir, store.FileName)); err != nil {
		return nil, nil, err
	}
	rt.closers = append(rt.closers, rt.db.Close)
	shared, err := openSharedState(ctx, cfg.State, log)
	if err != nil {
		return nil, nil, err
	}
	if shared != nil {
		rt.closers = append(rt.closers, shared.db.Close)
	}

	if rt.gate, err = schemapin.NewGate(ctx, rt.db, &schemapin.GateOptions{Logger: log.With("component", "schemapin"), PinDB: shared.pinDB()}); err != nil {
		return nil, nil, fmt.Errorf("open schemapin state: %w", err)
	}

	if rt.policy, err = policy.NewWatcher(ctx, cfg.Policy.Dir, &policy.Options{Logger: log.With("component", "policy"), EvalTimeout: cfg.Policy.EvalTimeout.Duration}); err != nil {
		return nil, nil, fmt.Errorf("load policy: %w", err)
	}
	rt.http.ReadyChecks["policy"] = func() (bool, any) {
		st := rt.policy.Status()
		return !st.Degraded(), struct {
			policy.Status
			Cache policy.CacheInfo `json:"cache"`
		}{st, rt.policy.Engine().CacheInfo()}
	}

	ap := auditPathsOf(cfg)
	auditDir := ap.dir
	if moved, err := audit.MoveKey(filepath.Join(auditDir, audit.KeyFileName), ap.key); err != nil {
		return nil, nil, err
	} else if moved {
		log.Info("audit signing key moved out of the trail", "from", auditDir, "to", ap.key)
	}
	fsync := audit.FsyncBatch
	if cfg.Audit.Fsync == "every" {
		fsync = audit.FsyncEvery
	}
	var sinks []audit.Sink
	if cfg.Audit.Syslog != "" {
		u, _ := url.Parse(cfg.Audit.Syslog) // validated with the configuration
		sink, err := audit.NewSyslogSink(audit.SyslogOptions{Network: u.Scheme, Addr: u.Host})
		if err != nil {
			return nil, nil, fmt.Errorf("open audit syslog sink: %w", err)
		}
		sinks = append(sinks, sink)
	}
	if cfg.Audit.HTTP != "" {
		sink, err := audit.NewHTTPSink(audit.HTTPSinkOptions{URL: cfg.Audit.HTTP, Headers: cfg.Audit.HTTPHeaders,
			Logger: log.With("component", "audit_http")})
		if err != nil {
			for _, s := range sinks {
				_ = s.Close()
			}
			return nil, nil, fmt.Errorf("open audit http sink: %w", err)
		}
		sinks = append(sinks, sink)
		rt.httpSink = sink
	}
	if rt.audit, err = audit.Open(&audit.Options{Dir: auditDir, KeyPath: ap.key, AnchorPath: ap.anchor, Logger: log.With("component", "audit"), Fsync: fsync,
		RecordArguments: cfg.Audit.FullArguments, SignInterval: cfg.Audit.SignEvery, Sinks: sinks}); err != nil {
		for _, s := range sinks { // the trail owns its sinks only once it is open
			_ = s.Close()
		}
		return nil, nil, fmt.Errorf("open audit trail: %w", err)
	}
	rt.closers = append(rt.closers, rt.audit.Close)
	rt.http.ReadyChecks["audit"] = func() (bool, any) {
		if err := rt.audit.Err(); err != nil {
			what := "refusing requests until symbi restarts on a working trail"
			if cfg.Audit.OnFailure == "continue" {
				what = "serving requests unrecorded (on_failure = continue)"
			}
			return false, map[string]string{"status": "failed", "error": err.Error(), "requests": what}
		}
		return true, map[string]string{"status": "recording", "writer": rt.audit.Writer()}
	}
	if rt.outbox, err = audit.NewOutbox(ctx, rt.db); err != nil {
		return nil, nil, err
	}
	if _, err := rt.outbox.Drain(ctx, rt.audit); err != nil {
		return nil, nil, fmt.Errorf("record queued operator actions: %w", err)
	}
	rt.http.Routes["/audit/stream"] = auditStreamGuard(rt.policy, rt.audit, log, rt.audit.Handler())

	signer, err := builtinSigner(cfg.Server.DataDir)
	if err != nil {
		return nil, nil, err
	}
	rt.http.Public[schemapin.WellKnownPath] = signer.wellKnown

	opts := &gateway.Options{
		SignBuiltin:     signer.sign,
		Version:         version,
		Logger:          log,
		MaxMessageBytes: int(cfg.Server.MaxMessageBytes),
		Tokens:          map[string]string{},
		ClientCerts:     cfg.Server.TLSClientCA != "",

		InputTimeout:                cfg.Server.InputTimeout.Duration,
		MaxPendingInputs:            cfg.Server.MaxPendingInputs,
		MaxPendingInputsPerIdentity: cfg.Server.MaxPendingInputsPerIdentity,
	}
	for _, t := range cfg.Server.Tokens {
		opts.Tokens[t.Token] = t.Identity
	}
	if opts.OAuth, err = oauthVerifier(cfg, log); err != nil {
		return nil, nil, err
	}
	pinOpts := map[string]schemapin.UpstreamOptions{}
	for _, u := range cfg.Upstreams {
		if u.Disabled {
			continue
		}
		uc, po, err := rt.upstreamConfig(ctx, cfg, u, log)
		if err != nil {
			return nil, nil, err
		}
		opts.Upstreams = append(opts.Upstreams, uc)
		pinOpts[u.Name] = po
	}
	rt.pins.Store(&pinOpts)
	record := func(ev audit.Event) {
		actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := rt.audit.Append(actx, ev); err != nil {
			log.Error("append audit event", "err", err)
		}
	}
	pinLog := log.With("component", "schemapin")
	opts.ToolFilter = func(ctx context.Context, upstream string, raw []json.RawMessage) []gateway.ToolDecision {
		// The settings in force: a reload that adds an upstream swaps them (reload.go).
		return gateway.VerificationFilter(rt.gate, *rt.pins.Load(), pinLog, record)(ctx, upstream, raw)
	}
	opts.OnUpstreamState = func(name, state, reason string) {
		typ := audit.TypeUpstreamUp
		if state != gateway.StateUp {
			typ = audit.TypeUpstreamDown
		}
		record(audit.Event{Type: typ, Upstream: name, Reason: reason})
	}
	taskStore, err := openTaskStore(ctx, shared.or(rt.db), log)
	if err != nil {
		return nil, nil, err
	}
	opts.TaskStore = taskStore
	opts.TaskTTL = cfg.Scheduler.TaskTTL.Duration
	opts.TaskInputTimeout = cfg.Scheduler.InputTimeout.Duration
	gw := gateway.New(opts)
	closeTracing, err := useTracing(ctx, gw, log) // tracing.go
	if err != nil {
		return nil, nil, err
	}
	rt.closers = append(rt.closers, closeTracing)
	// Calls waiting for a client's input are shown, not judged: a full bridge refuses
	// new such calls with a retryable error, but serves everything else.
	rt.http.ReadyChecks["bridged_calls"] = func() (bool, any) { return true, gw.BridgeStatus() }
	addAuditBuiltins(gw, rt.audit)
	if err := rt.addContext(ctx, gw, cfg.Context, log.With("component", "context")); err != nil {
		return nil, nil, err
	}
	gw.UseAudit(gateway.AuditOptions{Log: rt.audit, FullArguments: cfg.Audit.FullArguments,
		ContinueOnFailure: cfg.Audit.OnFailure == "continue"})
	gw.UsePolicy(shared.policyOptions(gateway.PolicyOptions{Engine: rt.policy, Logger: log.With("component", "policy")}))
	registerPolicyCacheMetrics(gw.Metrics().Registry, rt.policy)
	if rt.httpSink != nil {
		registerHTTPSinkMetrics(gw.Metrics().Registry, rt.httpSink)
	}
	bn := newBusNotifier(gw, log.With("component", "bus"))
	rt.closers = append(rt.closers, bn.Close)
	b, err := openBus(ctx, rt, cfg, log.With("component", "bus"), record, bn.arrived)
	if err != nil {
		return nil, nil, fmt.Errorf("open bus: %w", err)
	}
	rt.closers = append(rt.closers, b.Close)
	bt := &busTools{bus: b, policy: rt.policy, log: log.With("component", "bus"), record: record,
		visibility: b.Visibility(), maxAttempts: b.MaxAttempts()}
	addBusBuiltins(gw, bt)
	addBusResource(gw, bt)
	if rt.agents, err = startAgents(ctx, rt, cfg, gw, log, record); err != nil {
		return nil, nil, fmt.Errorf("start agents: %w", err)
	}
	rt.closers = append(rt.closers, func() error { rt.agents.close(cfg.Server.ShutdownTimeout.Duration); return nil })
	if err := rt.mountConsole(gw, taskStore, log); err != nil {
		return nil, nil, err
	}
	for _, ev := range rt.tierEvents {
		record(ev)
	}
	record(audit.Event{Type: audit.TypeConfigLoaded, Detail: map[string]string{"upstreams": upstreamNames(cfg), "policy_dir": cfg.Policy.Dir}})
	rt.serving = true
	return gw, rt, nil
}

// upstreamConfig builds the gateway's configuration of one upstream and its SchemaPin
// settings, at start-up and when a reload adds or changes the upstream.
func (rt *runtime) upstreamConfig(ctx context.Context, cfg *config.Config, u config.Upstream, log *slog.Logger) (gateway.UpstreamConfig, schemapin.UpstreamOptions, error) {
	uc := gateway.UpstreamConfig{
		Name: u.Name, Prefix: *u.Prefix, URL: u.URL, SSE: u.Transport == "sse",
		Headers: u.Headers, Timeout: u.Timeout.Duration, TaskTools: u.TaskTools, TaskRequired: u.TaskRequired,
	}
	if len(u.Command) > 0 {
		launch, tier, err := rt.launcher(ctx, cfg, u, log)
		if err != nil {
			return uc, schemapin.UpstreamOptions{}, err
		}
		uc.Launch, uc.Tier = launch, tier
	}
	p := u.SchemaPin
	if p == nil {
		return uc, schemapin.UpstreamOptions{}, nil
	}
	manifest := p.Manifest
	if manifest != "" {
		var err error
		if manifest, err = manifestFile(ctx, http.DefaultClient, cfg.Server.DataDir, u.Name, manifest, log); err != nil {
			return uc, schemapin.UpstreamOptions{}, err
		}
	}
	return uc, schemapin.UpstreamOptions{
		Mode: schemapin.Mode(p.Mode), Domain: p.Domain, DiscoveryFile: p.DiscoveryFile, BundleFile: p.BundleFile,
		ManifestFile: manifest, FirstSeen: schemapin.FirstSeen(p.FirstSeen),
	}, nil
}

// selfSigner holds symbi's own SchemaPin key, which signs the built-in tools.
type selfSigner struct {
	key       *ecdsa.PrivateKey
	fp        string
	wellKnown http.Handler
}

func (s *selfSigner) sign(tool []byte) (string, string, error) {
	sig, err := schemapin.SignTool(s.key, tool)
	return sig, s.fp, err
}

// builtinSigner loads symbi's SchemaPin key from DATA_DIR/schemapin/private_key.pem,
// creating it (0600) on first start, and prepares its discovery document.
func builtinSigner(dataDir string) (*selfSigner, error) {
	dir := filepath.Join(dataDir, "schemapin")
	path := filepath.Join(dir, "private_key.pem")
	pemData, err := os.ReadFile(path)
	var key *ecdsa.PrivateKey
	switch {
	case errors.Is(err, os.ErrNotExist):
		if key, err = schemapin.GenerateKey(); err != nil {
			return nil, fmt.Errorf("generate schemapin key: %w", err)
		}
		pemData, err = schemapin.MarshalPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode schemapin key: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create schemapin key dir: %w", err)
		}
		won, err := createExclusive(path, pemData)
		if err != nil {
			return nil, fmt.Errorf("write schemapin key: %w", err)
		}
		if !won { // another symbi starting on the same data_dir created it first: use that one
			return builtinSigner(dataDir)
		}
		pub, err := schemapin.MarshalPublicKey(&key.PublicKey)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "public_key.pem"), pub, 0o644)
		}
		if err != nil {
			return nil, fmt.Errorf("write schemapin public key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("read schemapin key: %w", err)
	default:
		if key, err = schemapin.ParsePrivateKey(pemData); err != nil {
			return nil, fmt.Errorf("read schemapin key %s: %w", path, err)
		}
	}
	fp, err := schemapin.Fingerprint(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("fingerprint schemapin key: %w", err)
	}
	doc, err := schemapin.NewDiscovery(&key.PublicKey, "symbi", "")
	if err != nil {
		return nil, fmt.Errorf("build schemapin discovery document: %w", err)
	}
	return &selfSigner{key: key, fp: fp, wellKnown: schemapin.WellKnownHandler(doc)}, nil
}

// run runs the runtime's own loops (policy and agents hot reload, recording operator
// actions) until ctx ends.
func (rt *runtime) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return rt.policy.Run(ctx) })
	g.Go(func() error { rt.recordOperatorActions(ctx, rt.log, operatorPoll); return nil })
	if rt.agents != nil {
		g.Go(func() error { return rt.agents.watch(ctx, agentsDirPoll) })
	}
	if rt.context != nil {
		g.Go(func() error { rt.context.maintain(ctx); return nil })
	}
	return g.Wait()
}

// operatorPoll is how often a running symbi records operator actions: policy reloads
// (file changes, SIGHUP) and decisions other processes queued in the audit outbox.
var operatorPoll = time.Second

// recordOperatorActions writes to the trail every policy reload, successful or not, and
// every event another process (symbi tools approve|reject) queued in the outbox.
func (rt *runtime) recordOperatorActions(ctx context.Context, log *slog.Logger, every time.Duration) {
	last := rt.policy.Status()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := rt.policy.Status()
		if st.Reloads != last.Reloads || st.Errors != last.Errors {
			ev := audit.Event{Type: audit.TypePolicyReloaded, Identity: "symbi", IdentityKind: "operator", Outcome: audit.OutcomeOK,
				Detail: map[string]string{"dir": st.Dir, "revision": st.Revision, "files": strings.Join(st.Files, ","),
					"reloads": fmt.Sprint(st.Reloads - last.Reloads), "failed": fmt.Sprint(st.Errors - last.Errors)}}
			if st.Errors != last.Errors {
				ev.Outcome, ev.Error = audit.OutcomeInvalid, st.LastError
				ev.Reason = "policy reload failed; the previous policy keeps serving"
			}
			last = st
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := rt.audit.Append(actx, ev); err != nil {
				log.Error("append audit event", "type", string(ev.Type), "err", err)
			}
			cancel()
		}
		if _, err := rt.outbox.Drain(ctx, rt.audit); err != nil && ctx.Err() == nil {
			log.Error("record queued operator actions", "err", err)
		}
	}
}

// agentsDirPoll is how often agents_dir is checked for changed agent files.
var agentsDirPoll = 2 * time.Second

// launcher picks how an upstream's command runs: on the host (tier none) or in a
// sandbox tier.
func (rt *runtime) launcher(ctx context.Context, cfg *config.Config, u config.Upstream, log *slog.Logger) (gateway.Launcher, string, error) {
	argv := append(append([]string{}, u.Command...), u.Args...)
	tier := cfg.Sandbox.DefaultTier
	var sb config.UpstreamSandbox
	if u.Sandbox != nil {
		sb = *u.Sandbox
		if sb.Tier != "" {
			tier = sb.Tier
		}
	}
	if tier == "auto" {
		a := assess(u)
		tier = string(a.Tier)
		log.Info("sandbox tier assessed", "upstream", u.Name, "tier", tier, "score", a.Score, "reasons", strings.Join(a.Reasons, "; "))
		rt.tierEvents = append(rt.tierEvents, audit.Event{Type: audit.TypeTierChosen, Upstream: u.Name, SandboxTier: tier,
			Reason: strings.Join(a.Reasons, "; "), Detail: map[string]string{"score": fmt.Sprint(a.Score)}})
	}
	if tier == "" {
		tier = "none"
	}
	if tier != "none" && sb.Image == "" {
		return nil, "", fmt.Errorf("upstream %s: sandbox tier %s needs sandbox.image", u.Name, tier)
	}
	if rt.sandbox == nil {
		// Docker is contacted only when a container tier is first used.
		rt.sandbox = sandbox.New(&sandbox.Options{Logger: log.With("component", "sandbox"), DockerHost: os.Getenv("DOCKER_HOST"),
			ProtectedPaths: cfg.ProtectedPaths()})
		rt.closers = append(rt.closers, rt.sandbox.Close)
	}
	if tier != "none" && !rt.reaped {
		rt.reaped = true
		if n, err := rt.sandbox.Reap(ctx); err != nil {
			log.Warn("reap stale sandbox containers", "err", err)
		} else if n > 0 {
			log.Info("removed stale sandbox containers", "count", n)
		}
	}
	if tier != "none" && !slices.Contains(rt.tiers, sandbox.Tier(tier)) && rt.serving {
		log.Warn("/readyz checks this sandbox tier after a restart", "upstream", u.Name, "tier", tier)
	} else if tier != "none" && !slices.Contains(rt.tiers, sandbox.Tier(tier)) {
		// /readyz checks every tier in use, not only the first one configured.
		rt.tiers = append(rt.tiers, sandbox.Tier(tier))
		rt.http.ReadyChecks["sandbox"] = tierReadyCheck(rt.sandbox, slices.Clone(rt.tiers))
	}
	env := map[string]string{}
	for k, v := range u.Env {
		env[k] = v
	}
	for k, v := range sb.Env {
		env[k] = v
	}
	spec := sandbox.Spec{
		Name: u.Name, Command: argv, Env: env, Dir: u.Dir, Tier: sandbox.Tier(tier), Image: sb.Image,
		Network: sb.Network, Memory: sb.Memory, CPUs: sb.CPUs, Pids: sb.Pids, Timeout: sb.Timeout.Duration, User: sb.User,
	}
	for _, name := range sb.Unsafe {
		spec.Unsafe = append(spec.Unsafe, sandbox.Unsafe(name))
		log.Warn("sandbox isolation weakened by an unsafe opt-in", "upstream", u.Name, "unsafe", name, "tier", tier)
	}
	for _, m := range sb.Mounts {
		pm, err := config.ParseMount(m)
		if err != nil {
			return nil, "", fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		spec.Mounts = append(spec.Mounts, sandbox.Mount{Source: pm.Source, Target: pm.Target, Writable: pm.Writable})
	}
	sbx := rt.sandbox
	return func(ctx context.Context) (gateway.Process, error) {
		p, err := sbx.Start(ctx, spec)
		if err != nil {
			return nil, err
		}
		sp := &sandboxProcess{p: p, tail: gateway.NewStderrTail()}
		sp.logStderr(log.With("upstream", u.Name))
		return sp, nil
	}, tier, nil
}

// tierChecker reports whether a sandbox tier can be used (a *sandbox.Sandbox).
type tierChecker interface {
	Available(ctx context.Context, tier sandbox.Tier) error
}

// tierReadyCheck is the /readyz check of the sandbox: ready when every tier in use is
// available; the detail says, per tier, "available" or why not.
func tierReadyCheck(sbx tierChecker, tiers []sandbox.Tier) func() (bool, any) {
	return func() (bool, any) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ok := true
		detail := make(map[string]string, len(tiers))
		for _, t := range tiers {
			detail[string(t)] = "available"
			if err := sbx.Available(ctx, t); err != nil {
				ok, detail[string(t)] = false, err.Error()
			}
		}
		return ok, detail
	}
}

// assess is the risk assessment of an upstream from what its configuration declares.
func assess(u config.Upstream) sandbox.Assessment {
	n := sandbox.Needs{Network: u.URL != ""}
	if sb := u.Sandbox; sb != nil {
		n.Network = n.Network || (sb.Network != "" && sb.Network != "none")
		n.ExternalAPIs = sb.ExternalAPIs
		n.Sensitivity = sandbox.Sensitivity(sb.Sensitivity) // one vocabulary, validated with the configuration
		for _, m := range sb.Mounts {
			if pm, err := config.ParseMount(m); err == nil && pm.Writable {
				n.FilesystemWrite = true
			}
		}
	}
	if p := u.SchemaPin; p != nil && p.Mode == "strict" {
		n.Signed, n.Verified = true, true
	}
	return sandbox.Assess(n)
}

// sandboxProcess adapts a sandbox.Process to the gateway's Process.
type sandboxProcess struct {
	p    sandbox.Process
	tail *gateway.StderrTail // the last lines of its stderr
	once sync.Once
}

func (s *sandboxProcess) StderrTail() *gateway.StderrTail { return s.tail }

var _ gateway.StderrProcess = (*sandboxProcess)(nil)

func (s *sandboxProcess) Stdin() io.WriteCloser          { return s.p.Stdin() }
func (s *sandboxProcess) Stdout() io.ReadCloser          { return s.p.Stdout() }
func (s *sandboxProcess) Stop(ctx context.Context) error { return s.p.Stop(ctx) }
func (s *sandboxProcess) Tier() string                   { return string(s.p.Tier()) }

func (s *sandboxProcess) Stats(ctx context.Context) (gateway.ProcessStats, error) {
	st, err := s.p.Stats(ctx)
	if err != nil {
		return gateway.ProcessStats{}, err
	}
	return gateway.ProcessStats{CPUSeconds: st.CPUSeconds, MemoryBytes: st.MemoryBytes, MemoryLimit: st.MemoryLimit, ReadBytes: st.ReadBytes, WriteBytes: st.WriteBytes}, nil
}

var _ gateway.StatsProcess = (*sandboxProcess)(nil)

func (s *sandboxProcess) Wait() error {
	st := s.p.Wait()
	if st.Code == 0 && !st.OOMKilled && !st.TimedOut && st.Err == nil {
		return nil
	}
	return exitError{st}
}

// exitError reports how a sandboxed process ended; ExitKind feeds the gateway's metrics.
type exitError struct{ st sandbox.ExitStatus }

func (e exitError) Error() string { return e.st.String() }

func (e exitError) ExitKind() string {
	switch {
	case e.st.OOMKilled:
		return "oom"
	case e.st.TimedOut:
		return "timeout"
	}
	return "exit"
}

func (s *sandboxProcess) logStderr(log *slog.Logger) {
	s.once.Do(func() {
		go func() { // owned by the process: ends when its stderr closes
			s.tail.Consume(s.p.Stderr(), func(line string) { log.Debug("upstream stderr", "line", line) })
		}()
	})
}

// registerPolicyCacheMetrics exports the decision cache of the policy in force. A reload
// starts a new engine with an empty cache, so hits and misses are counters of the current
// policy: they fall back to zero at a reload, which Prometheus' rate() reads as a reset.
func registerPolicyCacheMetrics(reg *prometheus.Registry, w *policy.Watcher) {
	info := func() policy.CacheInfo { return w.Engine().CacheInfo() }
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "symbi_policy_cache_hits_total",
			Help: "Policy decisions answered from the decision cache (current policy)."},
			func() float64 { return float64(info().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "symbi_policy_cache_misses_total",
			Help: "Policy decisions evaluated because the cache had no answer (current policy)."},
			func() float64 { return float64(info().Misses) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "symbi_policy_cache_entries",
			Help: "Decisions held in the policy decision cache."},
			func() float64 { return float64(info().Entries) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "symbi_policy_cacheable",
			Help: "1 when the policy in force is deterministic and its decisions are cached."},
			func() float64 {
				if info().Cacheable {
					return 1
				}
				return 0
			}),
	)
}

// auditStreamGuard asks the policy whether the authenticated client may watch the live
// audit stream (action "audit/stream"): the stream shows every identity's calls, so a
// policy can keep it to operators. A denial is answered 403 with the policy's reason and
// recorded in the trail. The built-in default policy allows it (it is not about a tool).
func auditStreamGuard(eng policy.Engine, trail *audit.Log, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := gateway.RequestIdentity(r)
		d, err := eng.Decide(r.Context(), &policy.Input{Action: policy.ActionAuditStream,
			Identity: policy.Identity{ID: id.ID, Kind: id.Kind, Claims: id.Claims}})
		if err != nil {
			log.Error("policy decision for the audit stream", "identity", id.ID, "err", err)
		}
		if !d.Allow {
			reason := d.Reason
			if reason == "" {
				reason = "denied by policy"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := trail.Append(ctx, audit.Event{Type: audit.TypeDecision, Action: policy.ActionAuditStream,
				Identity: id.ID, IdentityKind: id.Kind, Decision: audit.Deny, Reason: reason, Outcome: audit.OutcomeDenied}); err != nil {
				log.Error("append audit event", "type", string(audit.TypeDecision), "err", err)
			}
			http.Error(w, "symbi: audit stream: "+reason, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// registerHTTPSinkMetrics exports the delivery counters of the audit HTTP collector sink.
func registerHTTPSinkMetrics(reg *prometheus.Registry, sink *audit.HTTPSink) {
	counter := func(name, help string, f func(audit.HTTPSinkStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(sink.Stats())) })
	}
	reg.MustRegister(
		counter("symbi_audit_http_sent_total", "Audit records the HTTP collector accepted.",
			func(s audit.HTTPSinkStats) uint64 { return s.Sent }),
		counter("symbi_audit_http_dropped_total", "Audit records the HTTP collector never got (the file trail has them).",
			func(s audit.HTTPSinkStats) uint64 { return s.Dropped }),
		counter("symbi_audit_http_failures_total", "Batches given up on after retries or refused by the collector.",
			func(s audit.HTTPSinkStats) uint64 { return s.Failures }),
		counter("symbi_audit_http_retries_total", "Repeated deliveries after a 5xx, 429 or network error.",
			func(s audit.HTTPSinkStats) uint64 { return s.Retries }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "symbi_audit_http_buffered", Help: "Audit records waiting for the HTTP collector."},
			func() float64 { return float64(sink.Stats().Buffered) }),
	)
}

// createExclusive writes data (0600) to path unless a file is there already: it writes a
// temporary file and hard-links it, so two processes creating the same key at once
// agree on one and nobody reads it half written. It reports whether it created path.
func createExclusive(path string, data []byte) (bool, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new*")
	if err != nil {
		return false, err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	if err := os.Link(f.Name(), path); errors.Is(err, os.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, nil
}
