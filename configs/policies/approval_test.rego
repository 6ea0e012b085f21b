package symbi.authz_test

import data.symbi.authz

approval(name) := {"type": "require_approval", "message": sprintf("%s is marked destructive", [name])}

test_destructive_call_needs_approval if {
	d := authz.decision with input as call("ide", "fs__delete_file", "verified", {"destructiveHint": true})
	d.allow
	approval("fs__delete_file") in d.conditions
}

test_listing_destructive_tool_needs_no_approval if {
	d := authz.decision with input as object.union(call("ide", "fs__delete_file", "verified", {"destructiveHint": true}), {"action": "tools/list"})
	not approval("fs__delete_file") in d.conditions
}

test_unannotated_tool_by_default_needs_no_approval if {
	d := authz.decision with input as call("ide", "fs__write_file", "verified", {})
	not approval("fs__write_file") in d.conditions
}

test_unannotated_tool_with_setting_needs_approval if {
	d := authz.decision with input as call("ide", "fs__write_file", "verified", {})
		with data.settings.approve_unannotated as true
	approval("fs__write_file") in d.conditions
}
