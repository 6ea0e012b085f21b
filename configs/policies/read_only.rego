# read_only.rego: read-only agents.
#
# An identity with "read_only": true in data.identities may only use tools that declare
# the MCP annotation readOnlyHint: true. Tool annotations come from the upstream, so this
# relies on honest upstreams: pair it with SchemaPin verification (main.rego denies tools
# whose definition changed or whose signature is invalid).
package symbi.authz

deny contains "read-only identity: tool is not annotated readOnlyHint" if {
	input.tool
	identity.read_only == true
	not input.tool.annotations.readOnlyHint == true
}
