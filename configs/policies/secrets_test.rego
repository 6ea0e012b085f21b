package symbi.authz_test

import data.symbi.authz

test_calls_are_scanned if {
	d := authz.decision with input as call("local", "fs__read_file", "verified", {"openWorldHint": false})
	{"type": "redact_secrets"} in d.conditions
	not {"type": "block_secrets", "paths": ["arguments"]} in d.conditions
}

test_open_world_tools_get_no_secrets if {
	d := authz.decision with input as call("local", "web__fetch", "verified", {})
	{"type": "block_secrets", "paths": ["arguments"]} in d.conditions
}

test_configured_paths_redacted if {
	d := authz.decision with input as call("ide", "everything__echo", "verified", {"openWorldHint": false})
	{"type": "redact", "paths": ["arguments.password", "result.structuredContent.token"]} in d.conditions
}

test_lists_have_no_conditions if {
	d := authz.decision with input as {"action": "resources/list", "identity": {"id": "local"}}
	d.conditions == []
}
