// Package audit records every decision and call in an append-only trail whose entries are
// hash-chained and Ed25519-signed, and verifies such trails offline. It records; it does not
// decide: callers (the gateway, the scheduler) hand it events after they have decided.
//
// The trail is a directory of JSONL segments ("seg-<first seq>.jsonl", one entry per line)
// plus a signed head checkpoint ("head.json"). Each entry carries prev_hash and
// hash = SHA-256(prev hash || canonical bytes) and an Ed25519 signature over the hash, so an
// edited, deleted, reordered or truncated record is detected by Verify without the writer.
// Beyond the file trail, a Log fans events out to extra Sinks (syslog RFC 5424 and batched
// NDJSON over HTTP(S) to a collector are built in), to live subscribers (SSE and WebSocket
// via Handler) and to an in-memory Recent buffer.
package audit

import (
	"bytes"
	"encoding/json"
	"sort"
	"time"
)

// Type names what an event records.
type Type string

// Event types. The gateway uses the request-path ones; the audit package itself writes
// TypeGenesis, TypeKeyRotated, TypeRecovered and TypeTruncationDetected.
const (
	TypeSessionOpened      Type = "session.opened"
	TypeSessionClosed      Type = "session.closed"
	TypeList               Type = "list"       // tools/list, resources/list, prompts/list (Action says which)
	TypeCall               Type = "call"       // tools/call
	TypeRead               Type = "read"       // resources/read
	TypePromptGet          Type = "prompt.get" // prompts/get
	TypeDecision           Type = "decision"   // a policy decision recorded on its own
	TypeVerification       Type = "verification"
	TypeTierChosen         Type = "sandbox.tier"
	TypeUpstreamUp         Type = "upstream.up"
	TypeUpstreamDown       Type = "upstream.down"
	TypePolicyReloaded     Type = "policy.reloaded"
	TypeToolApproved       Type = "tool.approved"
	TypeToolRejected       Type = "tool.rejected"
	TypeConfigLoaded       Type = "config.loaded"
	TypeKeyRotated         Type = "key.rotated"
	TypeGenesis            Type = "audit.genesis"
	TypeRecovered          Type = "audit.recovered"
	TypeTruncationDetected Type = "audit.truncation_detected"
)

// Decision is the policy verdict recorded with an event.
type Decision string

// Decisions.
const (
	Allow Decision = "allow"
	Deny  Decision = "deny"
)

// Outcome is how the recorded operation ended.
type Outcome string

// Outcomes, aligned with the gateway's error kinds.
const (
	OutcomeOK          Outcome = "ok"
	OutcomeError       Outcome = "error" // the tool ran and reported an error
	OutcomeDenied      Outcome = "denied"
	OutcomeInvalid     Outcome = "invalid"
	OutcomeNotFound    Outcome = "not_found"
	OutcomeUnavailable Outcome = "unavailable"
	OutcomeInternal    Outcome = "internal"
	OutcomeAbandoned   Outcome = "abandoned" // the call waited for its client, who never came back
)

// Condition is a policy condition that was applied. For redactions it names what was
// redacted (the paths), never the redacted value.
type Condition struct {
	Type      string   `json:"type"`
	Paths     []string `json:"paths,omitempty"`
	Tier      string   `json:"tier,omitempty"`
	PerMinute int      `json:"per_minute,omitempty"`
	Level     string   `json:"level,omitempty"` // priority
}

// Event is one audit record: what happened (Type, Action, Tool...), when (Time), where
// (Upstream, Transport, Source), who (Identity), and how it ended (Decision, Outcome).
// Zero-valued fields are omitted from the trail.
type Event struct {
	ID           string        `json:"id"`            // UUID; filled by Append when empty
	Time         time.Time     `json:"time"`          // filled by Append when zero
	Seq          uint64        `json:"seq,omitempty"` // position in the trail; set by the writer
	Type         Type          `json:"type"`
	Identity     string        `json:"identity,omitempty"`
	IdentityKind string        `json:"identity_kind,omitempty"` // "client" or "agent"
	SessionID    string        `json:"session_id,omitempty"`
	Transport    string        `json:"transport,omitempty"` // stdio, http, sse, ws
	Source       string        `json:"source,omitempty"`    // remote address, when known
	Action       string        `json:"action,omitempty"`    // MCP method, e.g. tools/call
	Upstream     string        `json:"upstream,omitempty"`
	Tool         string        `json:"tool,omitempty"`
	Resource     string        `json:"resource,omitempty"`
	Prompt       string        `json:"prompt,omitempty"`
	Decision     Decision      `json:"decision,omitempty"`
	Reason       string        `json:"reason,omitempty"`
	Conditions   []Condition   `json:"conditions,omitempty"`
	SchemaPin    string        `json:"schemapin,omitempty"` // verification status
	SandboxTier  string        `json:"sandbox_tier,omitempty"`
	Outcome      Outcome       `json:"outcome,omitempty"`
	Error        string        `json:"error,omitempty"` // internal error text, for operators
	Latency      time.Duration `json:"latency_ns,omitempty"`
	// ArgShape is the shape (keys and JSON types) of the arguments. Append computes it
	// from Arguments when it is nil.
	ArgShape any `json:"arg_shape,omitempty"`
	// Arguments are the full arguments. Append drops them unless Options.RecordArguments.
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// PublicKey is the base64 Ed25519 public key named by genesis and key rotation entries.
	PublicKey string            `json:"public_key,omitempty"`
	Detail    map[string]string `json:"detail,omitempty"`
}

// Limits that keep an argument shape small whatever the arguments are.
const (
	shapeMaxDepth = 8
	shapeMaxKeys  = 64
	shapeMaxElems = 4
)

// ArgumentShape returns the shape of v: objects become maps from key to the shape of the
// value, arrays the list of their distinct element shapes, and scalars the name of their
// JSON type ("string", "number", "bool", "null"). v may be raw JSON (json.RawMessage or
// []byte) or a decoded value. Values never appear in the result. Invalid JSON yields
// "invalid".
func ArgumentShape(v any) any {
	switch raw := v.(type) {
	case json.RawMessage:
		return shapeOfJSON(raw)
	case []byte:
		return shapeOfJSON(raw)
	}
	// Normalise any Go value through JSON so structs and typed maps are handled alike.
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any, []any, string, bool, float64, json.Number:
		return shape(v, 0)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "invalid"
	}
	return shapeOfJSON(b)
}

func shapeOfJSON(raw []byte) any {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "invalid"
	}
	return shape(v, 0)
}

func shape(v any, depth int) any {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case float64, json.Number:
		return "number"
	case map[string]any:
		if depth >= shapeMaxDepth {
			return "object"
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make(map[string]any, min(len(keys), shapeMaxKeys))
		for i, k := range keys {
			if i == shapeMaxKeys {
				out["…"] = "truncated"
				break
			}
			out[k] = shape(x[k], depth+1)
		}
		return out
	case []any:
		if depth >= shapeMaxDepth {
			return "array"
		}
		out := []any{}
		seen := map[string]bool{}
		for _, e := range x {
			s := shape(e, depth+1)
			b, _ := json.Marshal(s)
			if seen[string(b)] {
				continue
			}
			seen[string(b)] = true
			out = append(out, s)
			if len(out) == shapeMaxElems {
				break
			}
		}
		return out
	default:
		return "unknown"
	}
}
