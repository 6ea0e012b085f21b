# allowlist.rego: per-identity tool allowlists.
#
# data.identities (identities.json) maps an identity id (the stdio client is "local"; HTTP
# clients are named by [[server.tokens]] identity) to the tools it may see and call, as
# glob patterns over the exposed tool name ("<prefix>__<name>"): "*" is every tool,
# "fs__*" every tool of the fs upstream. An identity not listed gets no tool at all.
# Tools that are denied are also hidden from tools/list.
package symbi.authz

identity := data.identities[input.identity.id]

tool_allowed if {
	some pattern in identity.tools
	glob.match(pattern, [], input.tool.name)
}

deny contains "tool not allowed for this identity" if {
	input.tool
	not tool_allowed
}
