# main.rego: how the example policies combine into one decision.
#
# symbi asks for data.symbi.authz.decision. Here it is assembled from two sets that the
# other files of this directory add to:
#
#   deny contains reason          any reason denies the request (all reasons are reported)
#   obligations contains cond     conditions attached to an allow (redaction, approval, ...)
#
# Delete a file to drop its rules; add a file to add rules. Keep this one.
package symbi.authz

# SchemaPin outcomes that deny, as the built-in default policy does.
bad_status := {
	"invalid": "tool signature is invalid",
	"revoked": "tool signing key is revoked",
	"key_changed": "tool signing key changed since it was pinned",
	"definition_changed": "tool definition changed since it was pinned; approve it with symbi tools approve",
	"disabled": "tool is disabled",
}

deny contains bad_status[input.tool.verification.status]

deny contains "tool has no verification status" if {
	input.tool
	not input.tool.verification.status
}

default decision := {"allow": false, "reason": "policy error: no decision"}

decision := {"allow": false, "reason": concat("; ", sort([r | some r in deny]))} if count(deny) > 0

decision := {"allow": true, "conditions": [c | some c in obligations]} if count(deny) == 0
