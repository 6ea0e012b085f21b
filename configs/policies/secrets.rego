# secrets.rego: keep credentials out of tool traffic.
#
#  - every tool call, resource read and prompt get has its arguments and text results
#    scanned, and credentials masked (redact_secrets: AKIA****, ghp_****, ...);
#  - a tool that may reach the outside world (MCP annotation openWorldHint, true unless
#    the tool says otherwise) must not receive credentials in its arguments: the call is
#    refused (block_secrets on arguments);
#  - fields named in data.secrets.redact_paths (secrets.json), per tool name glob, are
#    masked whatever they contain (redact).
package symbi.authz

scanned_actions := {"tools/call", "resources/read", "prompts/get"}

obligations contains {"type": "redact_secrets"} if input.action in scanned_actions

obligations contains {"type": "block_secrets", "paths": ["arguments"]} if {
	input.action == "tools/call"
	not input.tool.annotations.openWorldHint == false
}

obligations contains {"type": "redact", "paths": paths} if {
	input.action == "tools/call"
	paths := sort([p |
		some pattern, ps in data.secrets.redact_paths
		glob.match(pattern, [], input.tool.name)
		some p in ps
	])
	count(paths) > 0
}
