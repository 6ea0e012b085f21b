# approval.rego: a human approves destructive tool calls.
#
# A call to a tool annotated destructiveHint: true carries require_approval: symbi asks
# the user through MCP elicitation on the client that made the call ("allow this call to
# X with these arguments?") and refuses it if the client cannot ask or the user declines.
#
# MCP's default for an unannotated tool is destructiveHint true (when readOnlyHint is not
# true). Requiring approval for every unannotated tool is safer and noisier; set
# "approve_unannotated": true in settings.json to do so.
package symbi.authz

destructive if input.tool.annotations.destructiveHint == true

destructive if {
	data.settings.approve_unannotated == true
	not input.tool.annotations.readOnlyHint == true
	not input.tool.annotations.destructiveHint == false
}

obligations contains {"type": "require_approval", "message": sprintf("%s is marked destructive", [input.tool.name])} if {
	input.action == "tools/call"
	destructive
}
