// Package policy decides every request that passes through the symbi gateway with an embedded
// OPA/Rego engine: it owns the policy input document, the decision and its conditions, the
// Rego engine with prepared queries, loading policies (and JSON data) from a directory with
// hot reload, and the reusable helpers that the gateway uses to enforce conditions (path
// redaction, sandbox tier ordering, per identity and tool rate limiting). Secret scanning
// lives in the subpackage policy/secrets.
//
// The package decides; the gateway enforces. The gateway builds an [Input] for each list,
// call, read or message, asks an [Engine] (a [Watcher] in production, which serves the
// policy directory and reloads it), and applies the returned [Decision]: it hides or
// refuses what is denied and enforces the conditions of what is allowed, with the
// [Enforcer] for require_tier, rate_limit, block_secrets, redact_secrets and redact, and
// through MCP elicitation for require_approval.
//
// Policies are written in Rego, package symbi.authz, rule decision:
//
//	package symbi.authz
//
//	decision := {"allow": true} if input.tool.verification.status == "verified"
//
// Every engine fails closed: a policy that does not compile, an evaluation error, a missing
// decision or one of the wrong shape all produce a denial whose Reason says why.
package policy

import (
	"context"
	"errors"
)

// Actions that the gateway asks the policy about. The action is the MCP method (or the
// symbi runtime operation) being decided.
const (
	ActionToolsList         = "tools/list"
	ActionToolsCall         = "tools/call"
	ActionResourcesList     = "resources/list"
	ActionResourcesRead     = "resources/read"
	ActionPromptsList       = "prompts/list"
	ActionPromptsGet        = "prompts/get"
	ActionCompletion        = "completion/complete"
	ActionAgentsCreate      = "agents/create"
	ActionBusSend           = "bus/send"
	ActionBusPublish        = "bus/publish"
	ActionBusSubscribe      = "bus/subscribe"
	ActionResourcesAllocate = "resources/allocate"
	// ActionAuditStream is a client opening the live audit event stream (/audit/stream).
	ActionAuditStream = "audit/stream"
	// ActionConsoleView is a client opening a page of the web console (/ui); the page
	// is in input.console.page.
	ActionConsoleView = "console/view"
	// ActionToolsApprove and ActionToolsReject are an operator's decision on a pending
	// tool definition (the rug-pull quarantine) made in the web console; the definition
	// is in input.change (tool, hash, first_seen).
	ActionToolsApprove = "tools/approve"
	ActionToolsReject  = "tools/reject"
)

// Verification statuses of a tool definition, as reported by SchemaPin.
const (
	StatusVerified          = "verified"
	StatusUnsigned          = "unsigned"
	StatusInvalid           = "invalid"
	StatusRevoked           = "revoked"
	StatusKeyChanged        = "key_changed"
	StatusDefinitionChanged = "definition_changed"
	StatusDisabled          = "disabled"
)

// Input is the document a policy sees as `input`. Fields are present where they apply:
// a tools/list decision about one tool carries Tool but no Arguments, a resources/read
// carries Resource, and so on. Empty fields are left out of the document, so a policy can
// test presence with `input.tool`.
type Input struct {
	Action    string         `json:"action"`
	Identity  Identity       `json:"identity"`
	Upstream  string         `json:"upstream,omitempty"`
	Tool      *Tool          `json:"tool,omitempty"`
	Arguments map[string]any `json:"arguments,omitempty"`
	Resource  *Resource      `json:"resource,omitempty"`
	Prompt    *Prompt        `json:"prompt,omitempty"`
	Sandbox   *Sandbox       `json:"sandbox,omitempty"`
	// Extra holds further top-level fields for actions that need them (agents, the bus).
	// A key that collides with one of the fields above is ignored.
	Extra map[string]any `json:"-"`
}

// Identity is the client or agent on whose behalf the request is made.
type Identity struct {
	ID     string         `json:"id"`
	Kind   string         `json:"kind,omitempty"` // "client" or "agent"
	Claims map[string]any `json:"claims,omitempty"`
}

// Tool describes the tool a request is about.
type Tool struct {
	Name         string         `json:"name"`                    // as exposed by symbi: "<prefix>__<name>"
	UpstreamName string         `json:"upstream_name,omitempty"` // as the upstream calls it
	Annotations  map[string]any `json:"annotations,omitempty"`   // MCP tool annotations (readOnlyHint, destructiveHint, ...)
	Verification Verification   `json:"verification"`
}

// Verification is the SchemaPin outcome for a tool definition.
type Verification struct {
	Status      string `json:"status,omitempty"`
	Domain      string `json:"domain,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Resource is the resource a request is about.
type Resource struct {
	URI string `json:"uri"`
}

// Prompt is the prompt a request is about.
type Prompt struct {
	Name string `json:"name"`
}

// Sandbox is the isolation of the upstream that would serve the request.
type Sandbox struct {
	Tier string `json:"tier"`
}

// Condition types a policy may attach to an allow.
const (
	CondRedact          = "redact"
	CondRedactSecrets   = "redact_secrets"
	CondBlockSecrets    = "block_secrets"
	CondRateLimit       = "rate_limit"
	CondRequireTier     = "require_tier"
	CondRequireApproval = "require_approval"
	CondPriority        = "priority"
)

// Priority levels a priority condition may set, lowest first.
var priorityLevels = []string{"low", "normal", "high", "critical"}

// PriorityLevels lists the levels of a priority condition, lowest first.
func PriorityLevels() []string { return append([]string(nil), priorityLevels...) }

func priorityRank(level string) int {
	for i, l := range priorityLevels {
		if l == level {
			return i
		}
	}
	return -1
}

// Decision is a policy's answer. When Allow is true the gateway must enforce every
// condition, and must refuse the request if it cannot.
type Decision struct {
	Allow      bool        `json:"allow"`
	Reason     string      `json:"reason,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
}

// Condition is one obligation attached to an allow. Which fields are set depends on Type.
type Condition struct {
	Type string `json:"type"`
	// Paths, for redact: the JSON paths to redact, rooted at "arguments" or "result"
	// (see [ParsePath]). For redact_secrets and block_secrets: optional roots to scan
	// ("arguments", "result"); empty means both.
	Paths []string `json:"paths,omitempty"`
	// Mode, for redact: "mask" (the default: replace the value with "****") or "remove".
	Mode string `json:"mode,omitempty"`
	// Tier, for require_tier: the least isolation that satisfies the policy.
	Tier string `json:"tier,omitempty"`
	// PerMinute and Burst, for rate_limit: the sustained rate and the bucket size
	// (Burst 0 means PerMinute).
	PerMinute int `json:"per_minute,omitempty"`
	Burst     int `json:"burst,omitempty"`
	// Message, for require_approval: optional text shown to the human.
	Message string `json:"message,omitempty"`
	// Level, for priority: the priority of the task or agent run the request creates
	// (low, normal, high or critical).
	Level string `json:"level,omitempty"`
}

// Find returns the first condition of the given type.
func (d Decision) Find(typ string) (Condition, bool) {
	for _, c := range d.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return Condition{}, false
}

// Priority returns the level the decision's priority conditions set: the highest when
// there are several, "" when there are none.
func (d Decision) Priority() string {
	best := ""
	for _, c := range d.Conditions {
		if c.Type == CondPriority && priorityRank(c.Level) > priorityRank(best) {
			best = c.Level
		}
	}
	return best
}

// Engine decides requests. Implementations are safe for concurrent use.
//
// Decide always returns a decision the caller can act on. When err is non-nil the decision
// is a denial (fail closed) whose Reason is safe to show a client; err carries the detail
// for logs and the audit trail.
type Engine interface {
	Decide(ctx context.Context, in *Input) (Decision, error)
}

// ErrEvaluate wraps every evaluation failure returned by an engine: an evaluation error,
// a missing decision, or a malformed one.
var ErrEvaluate = errors.New("policy evaluation failed")

// deny builds a fail-closed decision for an evaluation failure.
func deny(reason string) Decision {
	return Decision{Allow: false, Reason: reason}
}
