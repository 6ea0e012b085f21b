package symbi.authz_test

import data.symbi.authz

# Helpers shared by the tests of this directory.
call(identity, tool_name, status, annotations) := {
	"action": "tools/call",
	"identity": {"id": identity, "kind": "client"},
	"tool": {"name": tool_name, "annotations": annotations, "verification": {"status": status}},
	"arguments": {},
}

test_revoked_tool_denied if {
	d := authz.decision with input as call("local", "fs__read_file", "revoked", {})
	not d.allow
	d.reason == "tool signing key is revoked"
}

test_tool_without_status_denied if {
	d := authz.decision with input as {"action": "tools/call", "identity": {"id": "local"}, "tool": {"name": "fs__read_file"}}
	not d.allow
}

test_reasons_are_joined if {
	d := authz.decision with input as call("nobody", "fs__read_file", "revoked", {})
	d.reason == "tool not allowed for this identity; tool signing key is revoked"
}

test_resources_list_allowed if {
	authz.decision.allow with input as {"action": "resources/list", "identity": {"id": "local"}}
}
