package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/agents"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/sandbox"
)

// agentsRuntime is the scheduler and the agents of a serving symbi.
type agentsRuntime struct {
	sched *agents.Scheduler
	rt    *agents.Runtime
	st    *agents.Store
	gw    *gateway.Gateway
	log   *slog.Logger

	// mu serialises reloads (agents_dir changes, SIGHUP) and guards cfg, the
	// configuration whose [[agents]] and agents_dir are in force.
	mu  sync.Mutex
	cfg *config.Config

	resMu     sync.Mutex
	resources map[string]bool // agent names with a symbi://agents/{name} resource
	dirStamp  string
}

// gatewayCaller lets workflow agents call tools through the gateway's chain as
// themselves.
type gatewayCaller struct{ gw *gateway.Gateway }

func (c gatewayCaller) CallTool(ctx context.Context, identity, tool string, args json.RawMessage) (*mcp.CallToolResult, error) {
	res, err := c.gw.CallTool(ctx, gateway.Identity{ID: identity, Kind: "agent"}, tool, args)
	var ge *gateway.Error
	if errors.As(err, &ge) && ge.Kind == gateway.Denied {
		return nil, &agents.DeniedError{Reason: ge.Public}
	}
	return res, err
}

// agentSessions serves container agents their MCP session into the gateway's chain as
// themselves.
type agentSessions struct{ gw *gateway.Gateway }

func (s agentSessions) ServeAs(ctx context.Context, identity string, r io.Reader, w io.Writer, c io.Closer) error {
	return s.gw.ServeAs(ctx, gateway.Identity{ID: identity, Kind: "agent"}, r, w, c)
}

var _ gateway.TaskScheduler = (*agents.Scheduler)(nil)

// startAgents builds the scheduler and the agents' runtime on the state file, loads the
// configured agents and registers the agents' tools and resources on gw.
func startAgents(ctx context.Context, rt *runtime, cfg *config.Config, gw *gateway.Gateway, log *slog.Logger, record func(audit.Event)) (*agentsRuntime, error) {
	st, err := agents.OpenStore(ctx, rt.db)
	if err != nil {
		return nil, err
	}
	placement, _ := agents.ParsePlacement(cfg.Scheduler.Placement) // validated with the configuration
	so := &agents.Options{
		MaxRunning: cfg.Scheduler.MaxRunning, MaxQueued: cfg.Scheduler.MaxQueued, TaskTTL: cfg.Scheduler.TaskTTL.Duration,
		MaxExecution: cfg.Scheduler.MaxExecution.Duration, Placement: placement,
		Logger: log.With("component", "scheduler"), Registerer: gw.Metrics().Registry,
	}
	for _, p := range cfg.Scheduler.Pool {
		so.Pool = append(so.Pool, agents.Resources{MemoryBytes: int64(p.Memory), MilliCPU: int64(p.CPUs * 1000), Slots: p.Slots})
	}
	ar := &agentsRuntime{sched: agents.NewScheduler(so), st: st, gw: gw, cfg: cfg, log: log.With("component", "agents"), resources: map[string]bool{}}
	if rt.sandbox == nil { // Docker is contacted only when a container tier is first used
		rt.sandbox = sandbox.New(&sandbox.Options{Logger: log.With("component", "sandbox"), DockerHost: os.Getenv("DOCKER_HOST"),
			ProtectedPaths: cfg.ProtectedPaths()})
		rt.closers = append(rt.closers, rt.sandbox.Close)
	}
	ar.rt = agents.NewRuntime(agents.RuntimeOptions{
		Scheduler: ar.sched, Store: st, Caller: gatewayCaller{gw}, Record: record, Logger: ar.log,
		Sandbox: rt.sandbox, Sessions: agentSessions{gw},
		OnChange: ar.syncResources, OnRunEnd: rt.endWorkingMemory,
	})
	if err := ar.rt.Recover(ctx); err != nil { // before any run can be queued
		ar.close(time.Second)
		return nil, err
	}
	addAgentBuiltins(gw, ar)
	gw.UseTaskScheduler(ar.sched) // MCP tasks wait their turn with the agents' runs
	if err := ar.reload(ctx); err != nil {
		ar.log.Error("load agents", "err", err)
	}
	return ar, nil
}

// definitions gathers the [[agents]] of cfg and the files under its agents_dir.
func definitions(cfg *config.Config) ([]agents.Definition, error) {
	fromDir, err := loadAgentsDir(cfg)
	if err != nil {
		return nil, err
	}
	all := append(append([]config.Agent(nil), cfg.Agents...), fromDir...)
	defs := make([]agents.Definition, 0, len(all))
	for _, a := range all {
		d, err := definition(a)
		if err != nil {
			return nil, err
		}
		defs = append(defs, d)
	}
	return defs, nil
}

// checkAgentsDir checks the agent files under agents_dir as `symbi config validate`
// does the main file: every problem with its file and key (a *config.Error).
func checkAgentsDir(cfg *config.Config) error {
	_, err := loadAgentsDir(cfg)
	return err
}

// loadAgentsDir reads and checks the agent files under agents_dir, also against the
// main file's agents and client identities.
func loadAgentsDir(cfg *config.Config) ([]config.Agent, error) {
	if cfg.AgentsDir == "" {
		return nil, nil
	}
	as, err := config.LoadAgentsDir(cfg.AgentsDir)
	if err != nil {
		return nil, err
	}
	var probs []config.Problem
	for _, a := range as {
		for _, b := range cfg.Agents {
			if a.Name == b.Name {
				probs = append(probs, config.Problem{Key: filepath.Base(a.File) + ": name " + a.Name, Msg: "duplicates an agent in [[agents]]"})
			}
		}
	}
	probs = append(probs, cfg.AgentIdentityProblems(as)...)
	if len(probs) > 0 {
		return nil, &config.Error{File: cfg.AgentsDir, Problems: probs}
	}
	return as, nil
}

// definition translates a checked configuration entry.
func definition(a config.Agent) (agents.Definition, error) {
	prio, err := agents.ParsePriority(a.Priority)
	if err != nil {
		return agents.Definition{}, err
	}
	d := agents.Definition{Name: a.Name, Kind: a.Kind, Identity: a.AgentIdentity(), Priority: prio,
		Timeout: a.Limits.Timeout.Duration, MemoryBytes: int64(a.Limits.Memory), MilliCPU: int64(a.Limits.CPUs * 1000),
		MaxConcurrent: a.Limits.MaxConcurrent}
	if a.Schedule != "" {
		if d.Schedule, err = agents.ParseSchedule(a.Schedule, a.Timezone, a.Jitter.Duration, a.Missed); err != nil {
			return agents.Definition{}, fmt.Errorf("agent %s: %w", a.Name, err)
		}
	}
	if a.Kind == "container" {
		d.Container = &agents.Container{Image: a.Image, Command: a.Command, Tier: sandbox.Tier(a.Sandbox), Env: a.Env}
	}
	for _, s := range a.Steps {
		d.Steps = append(d.Steps, agents.Step{Tool: s.Tool, Arguments: s.Arguments, Save: s.Save, When: s.When,
			Retries: s.Retries, Backoff: s.Backoff.Duration, Timeout: s.Timeout.Duration})
	}
	return d, nil
}

// reload (re)loads every definition; a bad agents_dir keeps the agents as they were.
func (ar *agentsRuntime) reload(ctx context.Context) error {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	defs, err := definitions(ar.cfg)
	if err != nil {
		return fmt.Errorf("reload agents: %w", err)
	}
	return ar.rt.Sync(ctx, defs)
}

// setAgents puts list in force as the [[agents]] of the main file (a SIGHUP or a
// change of the file) through the same Sync as an agents_dir change: added agents are
// loaded and scheduled, removed ones dropped, changed ones reloaded. If the definitions
// cannot be put together (list clashes with agents_dir) nothing changes and applied is
// false; err also reports agents that were put in force but could not be loaded.
func (ar *agentsRuntime) setAgents(ctx context.Context, list []config.Agent) (applied bool, err error) {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	next := *ar.cfg
	next.Agents = slices.Clone(list)
	defs, err := definitions(&next)
	if err != nil {
		return false, fmt.Errorf("reload agents: %w", err)
	}
	ar.cfg = &next
	return true, ar.rt.Sync(ctx, defs)
}

// agentsDir is the agents_dir in force ("" for none).
func (ar *agentsRuntime) agentsDir() string {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	return ar.cfg.AgentsDir
}

// watch starts the agents' schedules and reloads the agents when a file under agents_dir changes, until ctx ends.
// Schedules start firing once the upstreams have had their first connection attempt.
func (ar *agentsRuntime) watch(ctx context.Context, every time.Duration) error {
	ar.gw.WaitReady(ctx)
	if err := ar.rt.Start(ctx); err != nil {
		return err
	}
	dir := ar.agentsDir()
	if dir == "" {
		<-ctx.Done()
		return nil
	}
	ar.dirStamp = agentsDirStamp(dir)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s := agentsDirStamp(dir); s != ar.dirStamp {
			ar.dirStamp = s
			ar.log.Info("agents_dir changed; reloading agents")
			if err := ar.reload(ctx); err != nil {
				ar.log.Error("reload agents", "err", err)
			}
		}
	}
}

// agentsDirStamp fingerprints the *.toml files of dir by name, size and time.
func agentsDirStamp(dir string) string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.toml"))
	sort.Strings(files)
	var b strings.Builder
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s|%d|%d\n", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (ar *agentsRuntime) close(timeout time.Duration) {
	_ = ar.rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := ar.sched.Close(ctx); err != nil {
		ar.log.Error("close scheduler", "err", err)
	}
	if err := ar.st.Flush(ctx); err != nil { // the runs' last rows, written in the background
		ar.log.Error("save agents' state", "err", err)
	}
}

// syncResources keeps one symbi://agents/{name} resource per agent; adding or removing
// one makes the SDK send notifications/resources/list_changed.
func (ar *agentsRuntime) syncResources() {
	names := ar.rt.Names()
	ar.resMu.Lock()
	defer ar.resMu.Unlock()
	seen := map[string]bool{}
	for _, n := range names {
		seen[n] = true
		if ar.resources[n] {
			continue
		}
		ar.resources[n] = true
		name := n
		ar.gw.AddBuiltinResource(&mcp.Resource{
			URI: "symbi://agents/" + name, Name: "agent-" + name, Title: "Agent " + name,
			Description: "The agent's definition summary, lifecycle state and recent runs (JSON).", MIMEType: "application/json",
		}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			st, err := ar.rt.Get(ctx, name, 10)
			if err != nil {
				return nil, mcp.ResourceNotFoundError(req.Params.URI)
			}
			return jsonResource(req.Params.URI, st)
		})
	}
	var gone []string
	for n := range ar.resources {
		if !seen[n] {
			gone = append(gone, "symbi://agents/"+n)
			delete(ar.resources, n)
		}
	}
	if len(gone) > 0 {
		ar.gw.Server().RemoveResources(gone...)
	}
}

func jsonResource(uri string, v any) (*mcp.ReadResourceResult, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", uri, err)
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(b)}}}, nil
}

type agentNameIn struct {
	Name string `json:"name" jsonschema:"the agent's name"`
}

type agentReasonIn struct {
	Name   string `json:"name" jsonschema:"the agent's name"`
	Reason string `json:"reason,omitempty" jsonschema:"why (recorded in the audit trail)"`
}

type agentStatusIn struct {
	Name string `json:"name" jsonschema:"the agent's name"`
	Runs int    `json:"runs,omitempty" jsonschema:"how many recent runs to include (default 10, at most 100)"`
}

type agentsListOut struct {
	Agents []agents.Status `json:"agents"`
}

type agentRunOut struct {
	Agent string `json:"agent"`
	RunID string `json:"run_id,omitempty"`
	State string `json:"state"`
	// Priority is set when a policy priority condition chose the run's priority.
	Priority string `json:"priority,omitempty"`
}

// agentError is what a refused agent operation tells the client.
func agentError(err error) error {
	var ref *agents.Refusal
	if errors.As(err, &ref) {
		return errors.New(agents.Describe(err))
	}
	return err
}

// runAgent queues a manual run of the named agent for the caller of ctx, at the
// priority a policy priority condition set on the call ("" when none: the agent's own).
func runAgent(ctx context.Context, rt *agents.Runtime, name string) (id, priority string, err error) {
	if r, ok := gateway.RequestFrom(ctx); ok && r.Priority() != "" {
		p, err := agents.ParsePriority(r.Priority())
		if err != nil { // the policy package validated it: not reached
			return "", "", err
		}
		id, err := rt.RunWithPriority(ctx, name, "manual", callerIdentity(ctx), p)
		return id, p.String(), err
	}
	id, err = rt.Run(ctx, name, "manual", callerIdentity(ctx))
	return id, "", err
}

// addAgentBuiltins registers the agents' tools and the symbi://agents and
// symbi://scheduler resources.
func addAgentBuiltins(gw *gateway.Gateway, ar *agentsRuntime) {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)}
	act := &mcp.ToolAnnotations{OpenWorldHint: new(false)}
	p := gateway.BuiltinPrefix + "__"
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "agents_list", Title: "Agents",
		Description: "List symbi's agents with their kind, identity, lifecycle state (initializing, ready, running, suspended, terminated, failed) and why, schedule and next run.",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, agentsListOut, error) {
		return nil, agentsListOut{Agents: ar.rt.List()}, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "agent_status", Title: "Agent status",
		Description: "Show one agent's lifecycle state, schedule, next run and its recent runs (trigger, state, reason, steps done).",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in agentStatusIn) (*mcp.CallToolResult, agents.Status, error) {
		n := in.Runs
		if n <= 0 {
			n = 10
		}
		st, err := ar.rt.Get(ctx, in.Name, min(n, 100))
		return nil, st, err
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "agent_run", Title: "Run an agent",
		Description: "Queue a run of an agent now. The run acts as the agent's own identity, so policy and audit see the agent. Refusals (queue full, max_concurrent reached) are retryable.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in agentNameIn) (*mcp.CallToolResult, agentRunOut, error) {
		id, prio, err := runAgent(ctx, ar.rt, in.Name)
		if err != nil {
			return nil, agentRunOut{}, agentError(err)
		}
		return nil, agentRunOut{Agent: in.Name, RunID: id, State: string(agents.RunQueued), Priority: prio}, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "agent_suspend", Title: "Suspend an agent",
		Description: "Suspend an agent: its runs in progress stop at their current step and its schedule is held until it is resumed.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in agentReasonIn) (*mcp.CallToolResult, agentRunOut, error) {
		if err := ar.rt.Suspend(ctx, in.Name, in.Reason, callerIdentity(ctx)); err != nil {
			return nil, agentRunOut{}, err
		}
		return nil, agentRunOut{Agent: in.Name, State: string(agents.StateSuspended)}, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "agent_resume", Title: "Resume an agent",
		Description: "Resume a suspended agent: the run it was suspended in continues at the step it stopped at (run_id); with no such run it is ready again.",
		Annotations: act,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in agentNameIn) (*mcp.CallToolResult, agentRunOut, error) {
		id, err := ar.rt.Resume(ctx, in.Name, callerIdentity(ctx))
		if err != nil {
			return nil, agentRunOut{}, agentError(err)
		}
		st, err := ar.rt.Get(ctx, in.Name, 0)
		if err != nil {
			return nil, agentRunOut{}, err
		}
		return nil, agentRunOut{Agent: in.Name, RunID: id, State: string(st.State)}, nil
	})
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: p + "agent_terminate", Title: "Terminate an agent",
		Description: "Terminate an agent for good: runs in progress are cancelled and it never runs again.",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(false)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in agentReasonIn) (*mcp.CallToolResult, agentRunOut, error) {
		if err := ar.rt.Terminate(ctx, in.Name, in.Reason, callerIdentity(ctx)); err != nil {
			return nil, agentRunOut{}, err
		}
		return nil, agentRunOut{Agent: in.Name, State: string(agents.StateTerminated)}, nil
	})
	gw.AddBuiltinResource(&mcp.Resource{URI: "symbi://agents", Name: "agents", Title: "Agents",
		Description: "Every agent with its lifecycle state, schedule and next run (JSON).", MIMEType: "application/json",
	}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return jsonResource(req.Params.URI, agentsListOut{Agents: ar.rt.List()})
	})
	gw.AddBuiltinResource(&mcp.Resource{URI: "symbi://scheduler", Name: "scheduler", Title: "Scheduler",
		Description: "The scheduler's queue by priority, running tasks, limits, pool use and counts of refusals and preemptions (JSON).", MIMEType: "application/json",
	}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return jsonResource(req.Params.URI, ar.sched.Stats())
	})
}

const agentsUsage = `usage: symbi agents <command> [--url URL] [--token TOKEN] [NAME]

talks to a running symbi (symbi serve) over MCP, through its chain: the token's identity
is what policy decides and the audit trail records.

commands:
  list                       every agent with its state, schedule and next run
  status NAME [--runs N]     one agent and its recent runs
  run NAME                   queue a run now
  suspend NAME [--reason R]  stop its runs at the current step and hold its schedule
  resume NAME                continue the suspended run, or make it ready again
  terminate NAME [--reason R]

flags:
  --url URL      symbi's MCP endpoint (default http://<server.listen of --config>/mcp, or http://127.0.0.1:8080/mcp)
  --config FILE  read server.listen from this configuration
  --token TOKEN  bearer token (default $SYMBI_TOKEN)
  --json         print the tool's JSON result
`

// runAgents implements `symbi agents list|status|run|suspend|resume|terminate`.
func runAgents(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, agentsUsage)
		return 2
	}
	cmd := args[0]
	tool := map[string]string{"list": "agents_list", "status": "agent_status", "run": "agent_run",
		"suspend": "agent_suspend", "resume": "agent_resume", "terminate": "agent_terminate"}[cmd]
	switch {
	case cmd == "-h" || cmd == "--help" || cmd == "help":
		fmt.Fprint(stderr, agentsUsage)
		return 0
	case tool == "":
		fmt.Fprintf(stderr, "symbi agents: unknown command %q\n\n%s", cmd, agentsUsage)
		return 2
	}
	fs := spFlags("agents "+cmd, stderr)
	url := fs.String("url", "", "symbi's MCP endpoint")
	cfgPath := fs.String("config", "", "configuration file (for server.listen)")
	token := fs.String("token", os.Getenv("SYMBI_TOKEN"), "bearer token")
	reason := fs.String("reason", "", "suspend/terminate: why")
	runs := fs.Int("runs", 10, "status: how many recent runs")
	asJSON := fs.Bool("json", false, "print the JSON result")
	pos, ok := spParse(fs, args[1:])
	if !ok {
		return 2
	}
	in := map[string]any{}
	switch {
	case cmd == "list" && len(pos) == 0:
	case cmd != "list" && len(pos) == 1:
		in["name"] = pos[0]
	default:
		return spUsageErr(stderr, fs, "%s takes %s", cmd, map[bool]string{true: "no arguments", false: "one NAME"}[cmd == "list"])
	}
	switch cmd {
	case "suspend", "terminate":
		if *reason != "" {
			in["reason"] = *reason
		}
	case "status":
		in["runs"] = *runs
	}
	endpoint := *url
	if endpoint == "" {
		listen, scheme := config.DefaultListen, "http"
		if *cfgPath != "" {
			cfg, err := config.Load(*cfgPath)
			if err != nil {
				fmt.Fprintln(stderr, "symbi agents:", err)
				return 2
			}
			listen = cfg.Server.Listen
			if cfg.Server.TLSCert != "" {
				scheme = "https"
			}
		}
		endpoint = scheme + "://" + dialable(listen) + "/mcp"
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: bearer{token: *token, next: http.DefaultTransport}}
	c := mcp.NewClient(&mcp.Implementation{Name: "symbi-agents-cli", Version: version}, nil)
	cs, err := c.Connect(cctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		fmt.Fprintf(stderr, "symbi agents: connect to %s: %v\n", endpoint, err)
		return 2
	}
	defer cs.Close()
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: gateway.BuiltinPrefix + "__" + tool, Arguments: in})
	if err != nil {
		fmt.Fprintf(stderr, "symbi agents %s: %v\n", cmd, err)
		return 1
	}
	if res.IsError {
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				fmt.Fprintf(stderr, "symbi agents %s: %s\n", cmd, tc.Text)
			}
		}
		return 1
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		fmt.Fprintln(stderr, "symbi agents:", err)
		return 1
	}
	if *asJSON {
		var v any
		_ = json.Unmarshal(b, &v)
		out, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	printAgents(stdout, cmd, b)
	return 0
}

// printAgents prints a tool's result for people.
func printAgents(w io.Writer, cmd string, b []byte) {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	defer tw.Flush()
	row := func(s agents.Status) {
		next := "-"
		if !s.NextRun.IsZero() {
			next = s.NextRun.UTC().Format(time.RFC3339)
		}
		sched := s.Schedule
		if sched == "" {
			sched = "on demand"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.State, s.Identity, sched, next, s.Reason)
	}
	switch cmd {
	case "list":
		var out agentsListOut
		_ = json.Unmarshal(b, &out)
		fmt.Fprintln(tw, "NAME\tSTATE\tIDENTITY\tSCHEDULE\tNEXT RUN\tREASON")
		for _, s := range out.Agents {
			row(s)
		}
	case "status":
		var s agents.Status
		_ = json.Unmarshal(b, &s)
		fmt.Fprintln(tw, "NAME\tSTATE\tIDENTITY\tSCHEDULE\tNEXT RUN\tREASON")
		row(s)
		if len(s.Runs) > 0 {
			fmt.Fprintln(tw, "\nRUN\tTRIGGER\tSTATE\tSTEPS\tCREATED\tREASON")
			for _, r := range s.Runs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Trigger, r.State, r.Step, r.Created.UTC().Format(time.RFC3339), r.Reason)
			}
		}
	default:
		var out agentRunOut
		_ = json.Unmarshal(b, &out)
		fmt.Fprintf(tw, "%s\t%s\t%s\n", out.Agent, out.State, out.RunID)
	}
}

// dialable turns a listen address into one a client can dial (0.0.0.0 and :: become
// loopback).
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.token == "" {
		return b.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
