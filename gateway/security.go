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
	"strconv"
	"strings"
	"sync"
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
	// ApprovalTTL is how long an approval question may be answered, and its answer used
	// (once); 0: DefaultApprovalTTL.
	ApprovalTTL time.Duration
	// Now returns the current time (tests); nil: time.Now.
	Now func() time.Time
	// Limiter enforces rate limits when Enforcer is nil; nil: one in memory.
	Limiter policy.RateLimiter
	// ApprovalKey MACs approval request states (at least 32 bytes). Replicas sharing
	// Approvals share it too, so that an approval asked for by one is checked by
	// another. nil: a random key of this process.
	ApprovalKey []byte
	// Approvals records the approvals used, so that each is used once across every symbi
	// sharing it. nil: remembered in this process.
	Approvals ApprovalLedger
}

// ApprovalLedger records approvals as used: the PostgreSQL state replicas share.
type ApprovalLedger interface {
	// Spend marks the approval with the nonce used until it expires. It reports false
	// when the approval was used before (by any symbi sharing the ledger).
	Spend(ctx context.Context, nonce []byte, expires time.Time) (bool, error)
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

	now         func() time.Time
	approvalTTL time.Duration
	spentMu     sync.Mutex
	spent       map[string]int64 // nonce -> expiry (unix seconds) of approvals already used
	ledger      ApprovalLedger   // nil: spent
}

// UsePolicy installs the policy step; call it before Run. It returns the step so tests
// can drive it.
func (g *Gateway) UsePolicy(o PolicyOptions) {
	enf := o.Enforcer
	if enf == nil {
		var lim policy.RateLimiter = policy.NewLimiter(nil)
		if o.Limiter != nil {
			lim = o.Limiter
		}
		enf = &policy.Enforcer{Limiter: lim}
	}
	log := o.Logger
	if log == nil {
		log = g.log
	}
	key := o.ApprovalKey
	if len(key) < 32 {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	p := &policyStep{g: g, eng: o.Engine, enf: enf, log: log, key: key,
		now: o.Now, approvalTTL: o.ApprovalTTL, spent: map[string]int64{}, ledger: o.Approvals}
	if p.now == nil {
		p.now = time.Now
	}
	if p.approvalTTL <= 0 {
		p.approvalTTL = DefaultApprovalTTL
	}
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

func (p *policyStep) decide(ctx context.Context, in *policy.Input) (d policy.Decision) {
	if p.g.tracer != nil && !listAction(in.Action) { // trace.go
		end := p.g.tracePolicy(ctx, in)
		defer func() { end(d) }()
	}
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
				if !ok || (!ti.Builtin && p.g.listBuiltinOnly.Load()) {
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
	case "tools/call", "prompts/get", "resources/read", "resources/subscribe", "completion/complete":
		return p.gate(ctx, r, id, next)
	}
	return next(ctx, r)
}

func verdictOf(d policy.Decision) verdict {
	v := verdict{decision: "deny", reason: d.Reason}
	if d.Allow {
		v.decision = "allow"
	}
	for _, c := range d.Conditions {
		v.conditions = append(v.conditions, audit.Condition{Type: c.Type, Paths: c.Paths, Level: c.Level})
	}
	return v
}

// gate decides a tools/call, prompts/get, resources/read, resources/subscribe or
// completion/complete and enforces every condition of an allow on it: require_tier and
// rate_limit on every one; block_secrets, redact_secrets and redact on its arguments
// before it is forwarded and on its result after; require_approval by asking the human
// (tools/call, prompts/get, resources/read). A condition that cannot be honoured for the
// request refuses it, saying so (fail closed). A request about a tool, prompt or resource
// that the gateway does not expose is NotFound and never reaches the policy or an upstream.
func (p *policyStep) gate(ctx context.Context, r *Request, id policy.Identity, next Handler) (mcp.Result, error) {
	in := &policy.Input{Action: r.Method, Identity: id, Upstream: r.Upstream}
	var args map[string]any // what conditions on "arguments" act on
	limitKey := r.Method + "\x00" + r.Name
	switch r.Method {
	case "tools/call":
		if r.Tool == nil {
			return nil, &Error{Kind: NotFound, Public: fmt.Sprintf("unknown tool %q", r.Name)}
		}
		a, err := decodeArguments(r.Arguments)
		if err != nil {
			return nil, &Error{Kind: Invalid, Public: err.Error()}
		}
		args, limitKey = a, r.Name
		in.Tool, in.Arguments = r.Tool.policyTool, a
	case "prompts/get":
		if r.Upstream == "" {
			return nil, &Error{Kind: NotFound, Public: fmt.Sprintf("unknown prompt %q", r.Name)}
		}
		pp, _ := r.Raw.GetParams().(*mcp.GetPromptParams)
		args = map[string]any{}
		for k, v := range pp.Arguments {
			args[k] = v
		}
		in.Prompt, in.Arguments = &policy.Prompt{Name: r.Name}, args
	case "resources/read", "resources/subscribe":
		if r.Upstream == "" && !p.g.isBuiltinResource(r.URI) {
			return nil, resourceNotFound(r.URI)
		}
		in.Action, in.Resource = policy.ActionResourcesRead, &policy.Resource{URI: r.URI}
		// A read has no arguments but its URI: secret conditions look at that.
		args, limitKey = map[string]any{"uri": r.URI}, r.Method+"\x00"+r.URI
	case "completion/complete":
		cp, _ := r.Raw.GetParams().(*mcp.CompleteParams)
		if r.Upstream == "" || cp == nil || cp.Ref == nil {
			return next(ctx, r) // nothing serves it: answered with no values, no upstream asked
		}
		// A completion is decided as the prompt or resource it completes.
		if r.URI != "" {
			in.Action, in.Resource = policy.ActionResourcesRead, &policy.Resource{URI: r.URI}
		} else {
			in.Action, in.Prompt = policy.ActionPromptsGet, &policy.Prompt{Name: r.Name}
		}
		args = completionArgs(cp)
		in.Arguments = args
		limitKey = r.Method + "\x00" + r.Name + r.URI
	}
	tier := p.g.upstreamTier(r.Upstream)
	if tier != "" {
		in.Sandbox = &policy.Sandbox{Tier: tier}
	}
	d := p.decide(ctx, in)
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
	r.priority = d.Priority()
	if c, ok := d.Find(policy.CondRequireApproval); ok {
		switch r.Method {
		case "tools/call", "prompts/get", "resources/read":
			r.approval = &c
		default:
			return nil, p.refuse(r, policy.CondRequireApproval,
				fmt.Sprintf("the policy requires a human's approval, which symbi cannot ask for on %s", r.Method), nil)
		}
	}
	newArgs, findings, err := p.enf.BeforeCall(d, policy.Call{Identity: id.ID, Tool: limitKey, Tier: tier, Arguments: args})
	r.findings = append(r.findings, findings...)
	if err != nil {
		var ref *policy.Refusal
		if errors.As(err, &ref) {
			return nil, p.refuse(r, ref.Condition, ref.Reason, err)
		}
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	if err := p.setArguments(r, newArgs); err != nil {
		return nil, err
	}
	// A call that becomes a task has its result later: the task applies these then.
	r.afterTask = func(res mcp.Result) (mcp.Result, error) { return p.afterResult(d, r, res) }
	res, err := next(ctx, r)
	if err != nil {
		return res, err
	}
	return p.afterResult(d, r, res)
}

// refuse records that a condition refused r and returns the error for the client.
func (p *policyStep) refuse(r *Request, condition, reason string, err error) error {
	r.verdict.decision, r.verdict.reason = "deny", reason
	p.g.metrics.denials.WithLabelValues(r.Method, condition).Inc()
	return &Error{Kind: Denied, Public: reason, Err: err}
}

// completionArgs is what the conditions of a completion act on: the arguments already
// given (context) and the one being completed.
func completionArgs(cp *mcp.CompleteParams) map[string]any {
	args := map[string]any{}
	if cp.Context != nil {
		for k, v := range cp.Context.Arguments {
			args[k] = v
		}
	}
	args[cp.Argument.Name] = cp.Argument.Value
	return args
}

// setArguments puts the arguments the conditions produced (masked or not) into the
// request that goes on. They are exactly what the policy and the conditions saw.
func (p *policyStep) setArguments(r *Request, args map[string]any) error {
	internal := func(err error) error {
		return &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	strs := func(m map[string]any) (map[string]string, error) {
		out := make(map[string]string, len(m))
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("set argument %q: %T is not a string", k, v)
			}
			out[k] = s
		}
		return out, nil
	}
	switch params := r.Raw.GetParams().(type) {
	case *mcp.CallToolParamsRaw:
		b, err := json.Marshal(args)
		if err != nil {
			return internal(fmt.Errorf("encode arguments: %w", err))
		}
		r.Arguments = b
	case *mcp.GetPromptParams:
		m, err := strs(args)
		if err != nil {
			return internal(err)
		}
		params.Arguments = m
	case *mcp.CompleteParams:
		m, err := strs(args)
		if err != nil {
			return internal(err)
		}
		params.Argument.Value = m[params.Argument.Name]
		delete(m, params.Argument.Name)
		if params.Context != nil {
			params.Context.Arguments = m
		}
	case *mcp.ReadResourceParams, *mcp.SubscribeParams:
		if uri, _ := args["uri"].(string); uri != r.URI {
			return p.refuse(r, "redact", "the policy masks part of this resource's URI, and a URI cannot be masked without reading another resource", nil)
		}
	}
	return nil
}

// afterResult applies result conditions (redaction, secret scanning) to the result of a
// gated request. A subscription has no content; later reads are decided on their own.
func (p *policyStep) afterResult(d policy.Decision, r *Request, res mcp.Result) (mcp.Result, error) {
	var out mcp.Result
	switch x := res.(type) {
	case *rawCallResult:
		// Scanned as the SDK's type would be: its decoded form is what the conditions
		// see, and an unchanged result stays raw.
		dec, err := x.decoded()
		if err != nil {
			return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
		}
		red, err := p.afterResult(d, r, dec)
		if err != nil || red == mcp.Result(dec) {
			if err == nil {
				return res, nil
			}
			return red, err
		}
		return red, nil
	case *mcp.CallToolResult:
		if x == nil || x.NeedsInput() || len(x.InputRequests) > 0 {
			return res, nil
		}
		out = &mcp.CallToolResult{}
	case *mcp.GetPromptResult:
		if x == nil || x.NeedsInput() || len(x.InputRequests) > 0 {
			return res, nil
		}
		out = &mcp.GetPromptResult{}
	case *mcp.ReadResourceResult:
		if x == nil || x.NeedsInput() || len(x.InputRequests) > 0 {
			return res, nil
		}
		out = &mcp.ReadResourceResult{}
	case *mcp.CompleteResult:
		if x == nil {
			return res, nil
		}
		out = &mcp.CompleteResult{}
	default:
		return res, nil
	}
	internal := func(err error) (mcp.Result, error) {
		return nil, &Error{Kind: Internal, Public: "could not enforce the policy's conditions", Err: err}
	}
	var m map[string]any
	b, err := json.Marshal(res)
	if err != nil {
		return internal(fmt.Errorf("encode result: %w", err))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return internal(fmt.Errorf("decode result: %w", err))
	}
	red, findings, err := p.enf.AfterCall(d, m)
	r.findings = append(r.findings, findings...)
	if err != nil {
		var ref *policy.Refusal
		if !errors.As(err, &ref) {
			return internal(err)
		}
		rerr := p.refuse(r, ref.Condition, ref.Reason, err)
		if r.Method == "tools/call" {
			// A tool's withheld result is a tool error, not a protocol error.
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: ref.Reason}}}, nil
		}
		return nil, rerr
	}
	if red == nil {
		return res, nil
	}
	if b, err = json.Marshal(red); err != nil {
		return internal(fmt.Errorf("encode redacted result: %w", err))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return internal(fmt.Errorf("decode redacted result: %w", err))
	}
	return out, nil
}

const (
	approvalStatePrefix = "symbi-approval:"
	approvalInputKey    = "symbi_approval"
	// DefaultApprovalTTL is how long a human has to answer an approval question, and how
	// long the answer may be used (once).
	DefaultApprovalTTL = 5 * time.Minute
	// maxSpentApprovals bounds the approvals remembered as used until they expire; beyond
	// it new answers are refused (fail closed) until old ones expire.
	maxSpentApprovals = 1 << 16
)

// approvalAsk is what a request that needs approval answers with first: the question
// for the human and the state the client sends back with the answer.
type approvalAsk struct {
	requests mcp.InputRequestMap
	state    string
}

// approve asks the human behind the client whether a request may go ahead, as an
// input-required elicitation: 2026-07-28 clients answer it by retrying; for 2025-11-25
// clients the SDK turns it into an elicitation request on the session. The request state
// carries a fresh nonce and an expiry, MACed together with the identity, the method, the
// target and the arguments: an answer is good for this one request, once, until it
// expires. approve returns (nil, nil) when approved; it then removes the state and its
// answer from *state and responses, so the upstream never sees them.
func (p *policyStep) approve(r *Request, state *string, responses mcp.InputResponseMap, message string) (*approvalAsk, error) {
	if st, ok := strings.CutPrefix(*state, approvalStatePrefix); ok {
		if err := p.checkApproval(r, st); err != nil {
			return nil, p.refuse(r, policy.CondRequireApproval, err.Error(), nil)
		}
		resp, _ := responses[approvalInputKey].(*mcp.ElicitResult)
		delete(responses, approvalInputKey)
		*state = ""
		if resp == nil || resp.Action != "accept" || resp.Content["approve"] != true {
			r.verdict.decision, r.verdict.reason = "deny", "declined by the user"
			p.g.metrics.denials.WithLabelValues(r.Method, policy.CondRequireApproval).Inc()
			return nil, &Error{Kind: Denied, Public: "the request was not approved"}
		}
		return nil, nil
	}
	if !clientCanElicit(r) {
		return nil, p.refuse(r, policy.CondRequireApproval,
			"this request needs a human's approval, but the client does not support elicitation", nil)
	}
	target, args := approvalTarget(r)
	if message == "" {
		if len(args) > 500 {
			args = args[:500] + "…"
		}
		message = fmt.Sprintf("Allow %q to %s %s with arguments %s?", r.Identity.ID, approvalVerb[r.Method], target, args)
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	exp := p.now().Add(p.approvalTTL).Unix()
	return &approvalAsk{
		requests: mcp.InputRequestMap{approvalInputKey: &mcp.ElicitParams{
			Message: message,
			RequestedSchema: map[string]any{
				"type":       "object",
				"properties": map[string]any{"approve": map[string]any{"type": "boolean", "title": "Approve this request"}},
				"required":   []string{"approve"},
			},
		}},
		state: approvalStatePrefix + p.approvalToken(r, nonce[:], exp),
	}, nil
}

// approveRequest asks for the approval the policy required of r, if it did (see approve).
func (g *Gateway) approveRequest(r *Request, state *string, responses mcp.InputResponseMap) (*approvalAsk, error) {
	if r.approval == nil || g.policy == nil {
		return nil, nil
	}
	return g.policy.approve(r, state, responses, r.approval.Message)
}

// isBuiltinResource reports whether uri is one of symbi's own resources.
func (g *Gateway) isBuiltinResource(uri string) bool {
	_, ok := g.builtinRes.Load(uri)
	return ok || g.isBuiltinTemplate(uri)
}

var approvalVerb = map[string]string{"tools/call": "call", "prompts/get": "get the prompt", "resources/read": "read"}

// approvalTarget names what r is about and renders its arguments, for the question and
// the MAC.
func approvalTarget(r *Request) (target, args string) {
	switch params := r.Raw.GetParams().(type) {
	case *mcp.GetPromptParams:
		b, _ := json.Marshal(params.Arguments) // keys sorted: the same bytes on the retry
		return r.Name, string(b)
	case *mcp.ReadResourceParams:
		return r.URI, "{}"
	}
	return r.Name, string(r.Arguments)
}

// approvalToken is nonce.expiry.mac, base64url, where the MAC binds them to r.
func (p *policyStep) approvalToken(r *Request, nonce []byte, exp int64) string {
	e := base64.RawURLEncoding
	return e.EncodeToString(nonce) + "." + strconv.FormatInt(exp, 10) + "." + e.EncodeToString(p.approvalMAC(r, nonce, exp))
}

func (p *policyStep) approvalMAC(r *Request, nonce []byte, exp int64) []byte {
	target, args := approvalTarget(r)
	h := hmac.New(sha256.New, p.key)
	h.Write(nonce)
	fmt.Fprintf(h, "\x00%d\x00%s\x00%s\x00%s\x00", exp, r.Identity.ID, r.Method, target)
	h.Write([]byte(args))
	return h.Sum(nil)
}

// checkApproval verifies an approval state for r and spends it: it must be the one
// issued for this request, unexpired, and not used before.
func (p *policyStep) checkApproval(r *Request, state string) error {
	parts := strings.Split(state, ".")
	if len(parts) != 3 {
		return errors.New("approval does not match this request")
	}
	nonce, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	exp, err2 := strconv.ParseInt(parts[1], 10, 64)
	mac, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || len(nonce) != 16 || !hmac.Equal(mac, p.approvalMAC(r, nonce, exp)) {
		return errors.New("approval does not match this request")
	}
	now := p.now()
	if now.Unix() >= exp {
		return errors.New("the approval has expired; make the request again to be asked anew")
	}
	if p.ledger != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fresh, err := p.ledger.Spend(ctx, nonce, time.Unix(exp, 0))
		if err != nil {
			p.log.Error("record approval as used", "err", err)
			return errors.New("the approval could not be checked; try again later")
		}
		if !fresh {
			return errors.New("this approval was already used; make the request again to be asked anew")
		}
		return nil
	}
	p.spentMu.Lock()
	defer p.spentMu.Unlock()
	key := string(nonce)
	if _, used := p.spent[key]; used {
		return errors.New("this approval was already used; make the request again to be asked anew")
	}
	if len(p.spent) >= maxSpentApprovals {
		for k, e := range p.spent {
			if now.Unix() >= e {
				delete(p.spent, k)
			}
		}
		if len(p.spent) >= maxSpentApprovals {
			return errors.New("too many approvals in flight; try again later")
		}
	}
	p.spent[key] = exp
	return nil
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

// AuditOptions configures the audit step.
type AuditOptions struct {
	Log *audit.Log
	// FullArguments records full arguments (after redaction) instead of their shape.
	FullArguments bool
	// ContinueOnFailure serves requests while the trail cannot record them (a write
	// error broke it). The default refuses them, retryably, until symbi is restarted
	// on a working trail: no call goes unrecorded.
	ContinueOnFailure bool
}

// UseAudit installs the audit step: every gated request is recorded with its
// identity, decision, conditions, verification status, tier, outcome and latency.
func (g *Gateway) UseAudit(o AuditOptions) {
	g.audit = &o
	g.rebuildChain()
	if o.Log == nil {
		return
	}
	g.auditRefused = prometheus.NewCounter(prometheus.CounterOpts{Name: "symbi_audit_refused_total",
		Help: "Requests refused because the audit trail could not record them ([audit] on_failure = \"refuse\")."})
	g.auditUnrecorded = prometheus.NewCounter(prometheus.CounterOpts{Name: "symbi_audit_unrecorded_total",
		Help: "Requests served although the audit trail could not record them ([audit] on_failure = \"continue\")."})
	g.metrics.Registry.MustRegister(g.auditRefused, g.auditUnrecorded,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "symbi_audit_failed", Help: "1 while the audit trail cannot record events (a write failed)."},
			func() float64 {
				if o.Log.Err() != nil {
					return 1
				}
				return 0
			}))
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
	if g.audit.Log != nil {
		if err := g.audit.Log.Err(); err != nil {
			if !g.audit.ContinueOnFailure {
				g.auditRefused.Inc()
				return nil, &Error{Kind: Unavailable, Public: "audit trail cannot record calls; refused until it is repaired", Err: err}
			}
			g.auditUnrecorded.Inc()
		}
	}
	if r.Method == "tools/list" || r.Method == "prompts/list" || r.Method == "resources/list" || r.Method == "resources/templates/list" || r.Method == "logging/setLevel" {
		res, err := next(ctx, r)
		g.recordTraced(ctx, audit.Event{Type: audit.TypeList, Action: r.Method, Identity: r.Identity.ID, IdentityKind: r.Identity.Kind,
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
	g.recordTraced(ctx, ev)
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
	if toolResultIsError(res) {
		return audit.OutcomeError
	}
	return audit.OutcomeOK
}

// resourceNotFound is the refusal of a resource no upstream serves: -32602 with the URI
// in the error's data (SEP-2164).
func resourceNotFound(uri string) *Error {
	data, _ := json.Marshal(map[string]string{"uri": uri})
	return &Error{Kind: NotFound, Public: fmt.Sprintf("resource %q not found", uri), Data: data}
}
