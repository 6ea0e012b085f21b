# The built-in default policy of symbi, used when no [policy] dir is configured.
#
# Tools whose definition is verified by SchemaPin, or unsigned, are allowed. Tools whose
# signature is invalid, whose key is revoked or changed, whose definition changed since it
# was pinned, or that are disabled, are denied (and hidden from tools/list). A tool with no
# verification status at all is denied. Requests that are not about a tool (resources,
# prompts, the runtime's own operations) are allowed.
package symbi.authz

allowed_statuses := {"verified", "unsigned"}

denied_reasons := {
	"invalid": "tool signature is invalid",
	"revoked": "tool signing key is revoked",
	"key_changed": "tool signing key changed since it was pinned",
	"definition_changed": "tool definition changed since it was pinned; approve it with symbi tools approve",
	"disabled": "tool is disabled",
}

default decision := {"allow": false, "reason": "tool has no recognised verification status"}

decision := {"allow": true} if not input.tool

decision := {"allow": true} if input.tool.verification.status in allowed_statuses

decision := {"allow": false, "reason": denied_reasons[input.tool.verification.status]}
