# operators.rego: who may watch the live audit stream (/audit/stream) and decide on
# pending tool definitions in the web console (/ui).
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

# The web console's approve and reject buttons (the rug-pull quarantine) make a changed
# tool callable again: keep them to operators too. Reading the console (console/view) is
# left to every authenticated identity; its audit pages are decided as audit/stream.
deny contains "deciding on tool definitions is for operators" if {
	input.action in {"tools/approve", "tools/reject"}
	not identity.operator
}
