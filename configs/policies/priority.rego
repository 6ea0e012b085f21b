# priority.rego: the priority of the tasks and agent runs an identity starts.
#
# An identity with a "priority" in data.identities (identities.json) has its task-tool
# calls and its symbi__agent_run requests queued at that level (low, normal, high,
# critical) in symbi's scheduler; the others at the default, normal. A level that is not
# one of the four makes the decision malformed, and symbi denies (fail closed).
package symbi.authz

obligations contains {"type": "priority", "level": level} if {
	input.action == "tools/call"
	level := data.identities[input.identity.id].priority
}
