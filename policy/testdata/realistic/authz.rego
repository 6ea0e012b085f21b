# A realistic policy for benchmarks and tests: per-identity allowlists from data,
# SchemaPin status checks, read-only agents, approval for destructive tools, secrets
# redaction, a stricter tier for unsigned tools, and a rate limit.
package symbi.authz

default decision := {"allow": false, "reason": "tool not allowed for this identity"}

bad_status := {"invalid", "revoked", "key_changed", "definition_changed", "disabled"}

identity := data.identities[input.identity.id]

tool_allowed if {
	input.tool
	"*" in identity.tools
}

tool_allowed if input.tool.name in identity.tools

read_only if input.tool.annotations.readOnlyHint == true

destructive if input.tool.annotations.destructiveHint == true

decision := {"allow": true} if {
	not input.tool
	identity
}

decision := {"allow": false, "reason": sprintf("tool is %s", [input.tool.verification.status])} if {
	input.tool.verification.status in bad_status
}

decision := {"allow": false, "reason": "read-only identity"} if {
	not input.tool.verification.status in bad_status
	identity.read_only
	not read_only
	tool_allowed
}

decision := {"allow": true, "conditions": conditions} if {
	not input.tool.verification.status in bad_status
	tool_allowed
	not denied_read_only
}

denied_read_only if {
	identity.read_only
	not read_only
}

conditions := array.concat(
	array.concat(base_conditions, approval_conditions),
	tier_conditions,
)

base_conditions := [
	{"type": "rate_limit", "per_minute": object.get(identity, "per_minute", 600)},
	{"type": "redact_secrets"},
]

approval_conditions := [{"type": "require_approval"}] if destructive else := []

tier_conditions := [{"type": "require_tier", "tier": "gvisor"}] if input.tool.verification.status == "unsigned" else := []
