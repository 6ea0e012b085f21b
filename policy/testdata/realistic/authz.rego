# A realistic policy for benchmarks and tests: per-identity allowlists from data,
# SchemaPin status checks, read-only agents, approval for destructive tools, secrets
# redaction, a stricter tier for unsigned tools, and a rate limit.
#
# It is written as one ordered rule (if ... else ...): the first branch that holds
# decides, and the evaluator never has to compare several complete definitions.
package symbi.authz

bad_status := {"invalid", "revoked", "key_changed", "definition_changed", "disabled"}

identity := data.identities[input.identity.id]

tool_allowed if "*" in identity.tools

tool_allowed if input.tool.name in identity.tools

decision := {"allow": false, "reason": sprintf("tool is %s", [input.tool.verification.status])} if {
	input.tool.verification.status in bad_status
} else := {"allow": true} if {
	not input.tool
	identity
} else := {"allow": false, "reason": "tool not allowed for this identity"} if {
	not tool_allowed
} else := {"allow": false, "reason": "read-only identity"} if {
	identity.read_only
	not input.tool.annotations.readOnlyHint
} else := {"allow": true, "conditions": conditions}

default per_minute := 600

per_minute := identity.per_minute

conditions := [c |
	some c in [
		{"type": "rate_limit", "per_minute": per_minute},
		{"type": "redact_secrets"},
		approval,
		tier,
	]
	c != null
]

default approval := null

approval := {"type": "require_approval"} if input.tool.annotations.destructiveHint

default tier := null

tier := {"type": "require_tier", "tier": "gvisor"} if input.tool.verification.status == "unsigned"
