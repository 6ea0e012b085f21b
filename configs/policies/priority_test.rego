package symbi.authz_test

import data.symbi.authz

test_identity_priority if {
	d := authz.decision with input as call("ci-agent", "fs__read_file", "verified", {"readOnlyHint": true})
	{"type": "priority", "level": "low"} in d.conditions
}

test_no_priority_by_default if {
	d := authz.decision with input as call("ide", "everything__echo", "verified", {"openWorldHint": false})
	every c in d.conditions { c.type != "priority" }
}

test_priority_only_on_calls if {
	d := authz.decision with input as {"action": "tools/list", "identity": {"id": "ci-agent"},
		"tool": {"name": "fs__read_file", "annotations": {"readOnlyHint": true}, "verification": {"status": "verified"}}}
	every c in d.conditions { c.type != "priority" }
}
