package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/schemapin"
)

// VerificationFilter is the SchemaPin gate as a ToolFilter: every listed tool is
// verified against its upstream's settings and pinned; what may not be shown is hidden.
// A failure of symbi's own state hides the tool (fail closed).
func VerificationFilter(gate *schemapin.Gate, opts map[string]schemapin.UpstreamOptions, log *slog.Logger, rec func(audit.Event)) ToolFilter {
	if log == nil {
		log = discardLogger
	}
	return func(ctx context.Context, upstream string, raw []json.RawMessage) []ToolDecision {
		out := make([]ToolDecision, len(raw))
		for i, t := range raw {
			d, err := gate.Check(ctx, upstream, opts[upstream], t)
			if err != nil {
				log.Error("verify tool", "upstream", upstream, "err", err)
				out[i] = ToolDecision{Hidden: true, Verification: Verification{Status: "invalid", Reason: "verification failed: " + err.Error()}}
				continue
			}
			v := Verification{Status: string(d.Status), Domain: d.Domain, Fingerprint: d.Fingerprint, Reason: d.Reason}
			out[i] = ToolDecision{Verification: v, Hidden: !d.Allowed}
			if rec != nil && (d.Status != "verified" && d.Status != "unsigned" || !d.Allowed) {
				rec(audit.Event{Type: audit.TypeVerification, Upstream: upstream, Tool: d.Name, SchemaPin: string(d.Status),
					Reason: d.Reason, Decision: map[bool]audit.Decision{true: audit.Allow, false: audit.Deny}[d.Allowed]})
			}
		}
		return out
	}
}

// Decision fields the policy step leaves on the Request for the audit step.
type verdict struct {
	decision   string // "allow" or "deny"
	reason     string
	conditions []audit.Condition
}

// PolicyOptions configures the policy step.
type PolicyOptions struct {
	Engine   policy.Engine
	Enforcer *policy.Enforcer // nil: a default enforcer with a rate limiter
	Logger   *slog.Logger
}

// policyStep decides every gated request with the policy engine: lists are filtered,
// calls, reads and prompt gets are refused when denied, and the conditions of an allow
// are enforced (redaction, secret scanning, rate limits, tier, approval).
type policyStep struct {
	g   *Gateway
	eng policy.Engine
	enf *policy.Enforcer
	log *slog.Logger
	key []byte // MACs approval request states
}

// UsePolicy installs the policy step; call it before Run. It returns the step so tests
// can drive it.
func (g *Gateway) UsePolicy(o PolicyOptions) {
	enf := o.Enforcer
	if enf == nil {
		enf = &policy.Enforcer{Limiter: policy.NewLimiter(nil)}
	}
	log := o.Logger
	if log == nil {
		log = g.log
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	p := &policyStep{g: g, eng: o.Engine, enf: enf, log: log, key: key}
	g.policy = p
	g.rebuildChain()
}

func (g *Gateway) identityInput(r *Request) policy.Identity {
	return policy.Identity{ID: r.Identity.ID, Kind: r.Identity.Kind, Claims: r.Identity.Claims}
}

// toolInput builds a tool's policy input (once per listed tool: see newToolInfo).
func toolInput(ti *ToolInfo) *policy.Tool {
	var ann map[string]any
	if ti.Tool != nil && ti.Tool.Annotations != nil {
		b, _ := json.Marshal(ti.Tool.Annotations)
		_ = json.Unmarshal(b, &ann)
	}
	return &policy.Tool{Name: ti.Name, UpstreamName: ti.UpstreamName, Annotations: ann,
		Verification: policy.Verification{Status: ti.Verification.Status, Domain: ti.Verification.Domain, Fingerprint: ti.Verification.Fingerprint}}
}

func (p *policyStep) decide(ctx context.Context, in *policy.Input) policy.Decision {
	d, err := p.eng.Decide(ctx, in)
	if err != nil {
		// The engine fails closed: d is a denial whose Reason is safe to show; the error
		// itself is for operators.
		p.log.Error("evaluate policy", "action", in.Action, "err", err)
		if d.Allow || d.Reason == "" {
			d = policy.Decision{Allow: false, Reason: "policy evaluation failed"}
		}
	}
	return d
}

func (p *policyStep) run(ctx context.Context, r *Request, next Handler) (mcp.Result, error) {
	id := p.g.identityInput(r)
	switch r.Method {
	case "tools/list":
		res, err := next(ctx, r)
		if lr, ok := res.(*mcp.ListToolsResult); ok && err == nil {
			lr.Tools = slices.DeleteFunc(lr.Tools, func(t *mcp.Tool) bool {
				ti, ok := p.g.Tool(t.Name)
				if !ok {
					return true
				}
				d := p.decide(ctx, &policy.Input{Action: policy.ActionToolsList, Identity: id, Upstream: ti.Upstream, Tool: ti.policyTool, Sandbox: p.g.sandboxInput(ti.Upstream)})
				return !d.Allow
			})
		}
		return res, err
	case "prompts/list":
		res, err := next(ctx, r)
		if lr, ok := res.(*mcp.ListPromptsResult); ok && err == nil {
			lr.Prompts = slices.DeleteFunc(lr.Prompts, func(pr *mcp.Prompt) bool {
				up := p.g.promptRoute(pr.Name).upstream
				d := p.decide(ctx, &policy.Input{Action: "prompts/list", Identity: id, Upstream: up, Prompt: &policy.Prompt{Name: pr.Name}})
				return !d.Allow
			})
		}
		return res, err
	case "resources/list":
		res, err := next(ctx, r)
		if lr, ok := res.(*mcp.ListResourcesResult); ok && err == nil {
			lr.Resources = slices.DeleteFunc(lr.Resources, func(rs *mcp.Resource) bool {
				d := p.decide(ctx, &policy.Input{Action: "resources/list", Identity: id, Upstream: p.g.resourceUpstream(rs.URI), Resource: &policy.Resource{URI: rs.URI}})
				return !d.Allow
			})
		}
		return res, err
	case "resources/templates/list":
		res, err := next(ctx, r)
		if lr, ok := res.(*mcp.ListResourceTemplatesResult); ok && err == nil {
			lr.ResourceTemplates = slices.DeleteFunc(lr.ResourceTemplates, func(rt *mcp.ResourceTemplate) bool {
				d := p.decide(ctx, &policy.Input{Action: "resources/list", Identity: id, Upstream: p.g.templateUpstream(rt.URITemplate), Resource: &policy.Resource{URI: rt.URITemplate}})
				return !d.Allow
			})
		}
		return res, err
	case "tools/call":
		return p.call(ctx, r, id, next)
	case "resources/read", "resources/subscribe", "prompts/get", "completion/complete":
		in := &policy.Input{Action: r.Method, Identity: id, Upstream: r.Upstream, Sandbox: p.g.sandboxInput(r.Upstream)}
		switch r.Method {
		case "resources/subscribe":
			in.Action = "resources/read"
		case "completion/complete":
			in.Action = "prompts/get"
			if r.URI != "" {
				in.Action = "resources/read"
			}
		}
		if in.Action == "prompts/get" {
			in.Prompt = &policy.Prompt{Name: r.Name}
		} else {
			in.Resource = &policy.Resource{URI: r.URI}
		}
		d := p.decide(ctx, in)
		r.verdict = verdictOf(d)
		if !d.Allow {
			p.g.metrics.denials.WithLabelValues(r.Method, "policy").Inc()
			return nil, &Error{Kind: Denied, Public: "denied by policy: " + d.Reason}
		}
		return next(ctx, r)
	}
	return next(ctx, r)
}

func verdictOf(d policy.Decision) verdict {
	v := verdict{decision: "deny", reason: d.Reason}
	if d.Allow {
		v.decision = "allow"
	}
	for _, c := range d.Conditions {
		v.conditions = append(v.conditions, audit.Condition{Type: c.Type, Paths: c.Paths})
	}
	return v
}

// call decides and enforces a tools/call.
func (p *policyStep) call(ctx context.Context, r *Request, id policy.Identity, next Handler) (mcp.Result, error) {
	if r.Tool == nil {
		return next(ctx, r) // unknown tool: the SDK answers with its own error
	}
	var args map[string]any
	if len(r.Arguments) > 0 {
		if err := json.Unmarshal(r.Arguments, &args); err != nil {
			return nil, &Error{Kind: Invalid, Public: "tool arguments must be a JSON object", Err: err}
		}
	}
	tier := p.g.upstreamTier(r.Upstream)
	var sb *policy.Sandbox
	if tier != "" {
		sb = &policy.Sandbox{Tier: tier}
	}
	d := p.decide(ctx, &policy.Input{Action: policy.ActionToolsCall, Identity: id, Upstream: r.Upstream, Tool: r.Tool.policyTool,
		Arguments: args, Sandbox: sb})
	r.verdict = verdictOf(d)
	if !d.Allow {
		reason := d.Reason
		if reason == "" {
			reason = "not allowed"
		}
		p.g.metrics.denials.WithLabelValues(r.Method, "policy").Inc()
		return nil, &Error{Kind: Denied, Public: "denied by policy: " + reason}
	}
	if len(d.Conditions) == 0 {
		return next(ctx, r)
	}
	newArgs, findings, err := p.enf.BeforeCall(d, policy.Call{Identity: id.ID, Tool: r.Name, Tier: tier, Arguments: args})
	if err != nil {
		var ref *policy.Refusal
		if errors.As(err, &ref) {
			r.verdict.decision, r.verdict.reason = "deny", ref.Reason
			p.g.metrics.denials.WithLabelValues(r.Method, ref.Condition).Inc()
			return nil, &Error{Kind: Denied, Public: ref.Reason, Err: err}
		}
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	r.findings = append(r.findings, findings...)
	if newArgs != nil {
		b, err := json.Marshal(newArgs)
		if err != nil {
			return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
		}
		r.Arguments = b
	}
	if c, ok := d.Find(policy.CondRequireApproval); ok {
		r.approval = &c
	}
	res, err := next(ctx, r)
	if err != nil {
		return res, err
	}
	ctr, ok := res.(*mcp.CallToolResult)
	if !ok || ctr == nil || ctr.NeedsInput() || len(ctr.InputRequests) > 0 {
		return res, nil
	}
	return p.afterCall(d, ctr, r)
}

// afterCall applies result conditions (redaction, secret scanning) to a tool result.
func (p *policyStep) afterCall(d policy.Decision, res *mcp.CallToolResult, r *Request) (mcp.Result, error) {
	var m map[string]any
	b, err := json.Marshal(res)
	if err != nil {
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	out, findings, err := p.enf.AfterCall(d, m)
	r.findings = append(r.findings, findings...)
	if err != nil {
		var ref *policy.Refusal
		if errors.As(err, &ref) {
			r.verdict.decision, r.verdict.reason = "deny", ref.Reason
			p.g.metrics.denials.WithLabelValues(r.Method, ref.Condition).Inc()
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: ref.Reason}}}, nil
		}
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	if out == nil {
		return res, nil
	}
	b, err = json.Marshal(out)
	if err != nil {
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	var red mcp.CallToolResult
	if err := json.Unmarshal(b, &red); err != nil {
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	return &red, nil
}

const (
	approvalStatePrefix = "symbi-approval:"
	approvalInputKey    = "symbi_approval"
)

// approve asks the human behind the client whether a call may go ahead, as an
// input-required elicitation: 2026-07-28 clients answer it by retrying; for
// 2025-11-25 clients the SDK turns it into an elicitation request on the session. The
// request state is a MAC over identity, tool and arguments, so an approval cannot be
// replayed for another call. It returns (nil, nil) when approved.
func (p *policyStep) approve(r *Request, params *mcp.CallToolParamsRaw, message string) (*mcp.CallToolResult, error) {
	mac := p.approvalMAC(r)
	if state, ok := strings.CutPrefix(params.RequestState, approvalStatePrefix); ok {
		if !hmac.Equal([]byte(state), []byte(mac)) {
			return nil, &Error{Kind: Denied, Public: "approval does not match this call"}
		}
		resp, _ := params.InputResponses[approvalInputKey].(*mcp.ElicitResult)
		delete(params.InputResponses, approvalInputKey)
		params.RequestState = ""
		if resp == nil || resp.Action != "accept" || resp.Content["approve"] != true {
			r.verdict.decision, r.verdict.reason = "deny", "declined by the user"
			p.g.metrics.denials.WithLabelValues(r.Method, policy.CondRequireApproval).Inc()
			return nil, &Error{Kind: Denied, Public: "the call was not approved"}
		}
		return nil, nil
	}
	if !clientCanElicit(r) {
		r.verdict.decision, r.verdict.reason = "deny", "approval required but the client cannot be asked"
		p.g.metrics.denials.WithLabelValues(r.Method, policy.CondRequireApproval).Inc()
		return nil, &Error{Kind: Denied, Public: "this call needs a human's approval, but the client does not support elicitation"}
	}
	if message == "" {
		args := string(r.Arguments)
		if len(args) > 500 {
			args = args[:500] + "…"
		}
		message = fmt.Sprintf("Allow %q to call %s with arguments %s?", r.Identity.ID, r.Name, args)
	}
	return &mcp.CallToolResult{
		InputRequests: mcp.InputRequestMap{approvalInputKey: &mcp.ElicitParams{
			Message: message,
			RequestedSchema: map[string]any{
				"type":       "object",
				"properties": map[string]any{"approve": map[string]any{"type": "boolean", "title": "Approve this call"}},
				"required":   []string{"approve"},
			},
		}},
		RequestState: approvalStatePrefix + mac,
	}, nil
}

// clientCanElicit reports whether the client declared the elicitation capability: at
// initialization (2025-11-25) or with the request (2026-07-28).
func clientCanElicit(r *Request) bool {
	if r.Session != nil && legacyClient(r.Session) {
		ip := r.Session.InitializeParams()
		return ip.Capabilities != nil && ip.Capabilities.Elicitation != nil
	}
	caps, ok := r.Raw.GetParams().GetMeta()[mcp.MetaKeyClientCapabilities].(map[string]any)
	if !ok {
		return false
	}
	_, ok = caps["elicitation"]
	return ok
}

func (p *policyStep) approvalMAC(r *Request) string {
	h := hmac.New(sha256.New, p.key)
	fmt.Fprintf(h, "%s\x00%s\x00", r.Identity.ID, r.Name)
	h.Write(r.Arguments)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// AuditOptions configures the audit step.
type AuditOptions struct {
	Log *audit.Log
	// FullArguments records full arguments (after redaction) instead of their shape.
	FullArguments bool
}

// UseAudit installs the audit step: every gated request is recorded with its
// identity, decision, conditions, verification status, tier, outcome and latency.
func (g *Gateway) UseAudit(o AuditOptions) {
	g.audit = &o
	g.rebuildChain()
	if o.Log == nil {
		return
	}
	stat := func(name, help string, f func(audit.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(o.Log.Stats()) })
	}
	g.metrics.Registry.MustRegister(
		stat("symbi_audit_events_appended_total", "Events accepted by the audit trail.", func(s audit.Stats) float64 { return float64(s.Appended) }),
		stat("symbi_audit_entries_written_total", "Entries written to the audit trail.", func(s audit.Stats) float64 { return float64(s.Written) }),
		stat("symbi_audit_events_rejected_total", "Events refused because the audit queue stayed full (each one also fails loudly).", func(s audit.Stats) float64 { return float64(s.Rejected) }),
		stat("symbi_audit_sink_dropped_total", "Records an extra audit sink did not get.", func(s audit.Stats) float64 { return float64(s.SinkDropped) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "symbi_audit_queue_length", Help: "Events waiting to be written to the audit trail."},
			func() float64 { return float64(o.Log.Stats().QueueLen) }),
	)
}

func (g *Gateway) record(ev audit.Event) {
	if g.audit == nil || g.audit.Log == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := g.audit.Log.Append(ctx, ev); err != nil {
		g.log.Error("append audit event", "type", string(ev.Type), "err", err)
	}
}

func (g *Gateway) auditStep(ctx context.Context, r *Request, next Handler) (mcp.Result, error) {
	if r.Method == "tools/list" || r.Method == "prompts/list" || r.Method == "resources/list" || r.Method == "resources/templates/list" || r.Method == "logging/setLevel" {
		res, err := next(ctx, r)
		g.record(audit.Event{Type: audit.TypeList, Action: r.Method, Identity: r.Identity.ID, IdentityKind: r.Identity.Kind,
			SessionID: sessionID(r.Session), Transport: r.Transport, Outcome: outcomeOf(res, err), Error: errText(err)})
		return res, err
	}
	start := time.Now()
	res, err := next(ctx, r)
	ev := audit.Event{
		Type: audit.TypeCall, Action: r.Method, Identity: r.Identity.ID, IdentityKind: r.Identity.Kind,
		SessionID: sessionID(r.Session), Transport: r.Transport, Upstream: r.Upstream,
		Decision: audit.Decision(r.verdict.decision), Reason: r.verdict.reason, Conditions: r.verdict.conditions,
		Outcome: outcomeOf(res, err), Error: errText(err), Latency: time.Since(start),
		SandboxTier: g.upstreamTier(r.Upstream),
	}
	switch r.Method {
	case "tools/call":
		ev.Tool = r.Name
		if r.Tool != nil {
			ev.SchemaPin = r.Tool.Verification.Status
		}
		if len(r.Arguments) > 0 {
			ev.Arguments = r.Arguments
		}
	case "prompts/get":
		ev.Type, ev.Prompt = audit.TypePromptGet, r.Name
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		ev.Type, ev.Resource = audit.TypeRead, r.URI
	}
	for _, f := range r.findings {
		ev.Conditions = append(ev.Conditions, audit.Condition{Type: "secret_found", Paths: []string{f.Path}, Tier: f.RuleID})
	}
	if ev.Decision == "" {
		ev.Decision = audit.Allow
		var ge *Error
		if errors.As(err, &ge) && ge.Kind == Denied {
			ev.Decision = audit.Deny
		}
	}
	g.record(ev)
	return res, err
}

func sessionID(ss *mcp.ServerSession) string {
	if ss == nil {
		return ""
	}
	return ss.ID()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func outcomeOf(res mcp.Result, err error) audit.Outcome {
	if err != nil {
		var ge *Error
		if errors.As(err, &ge) {
			switch ge.Kind {
			case Denied:
				return audit.OutcomeDenied
			case Invalid:
				return audit.OutcomeInvalid
			case NotFound:
				return audit.OutcomeNotFound
			case Unavailable:
				return audit.OutcomeUnavailable
			}
			return audit.OutcomeInternal
		}
		var je *jsonrpc.Error
		if errors.As(err, &je) && je.Code == jsonrpc.CodeInvalidParams {
			return audit.OutcomeInvalid
		}
		return audit.OutcomeError
	}
	if ctr, ok := res.(*mcp.CallToolResult); ok && ctr != nil && ctr.IsError {
		return audit.OutcomeError
	}
	return audit.OutcomeOK
}
