# operators.rego: who may watch the live audit stream (/audit/stream).
#
# The stream shows every identity's calls as they happen, so keep it to the identities
# marked "operator": true in data.identities (identities.json). symbi asks with
# input.action == "audit/stream" and the identity of the bearer token; a denied client
# gets 403 with the reason, and the refusal is recorded in the audit trail.
package symbi.authz

deny contains "the audit stream is for operators" if {
	input.action == "audit/stream"
	not identity.operator
}
