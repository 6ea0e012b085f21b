package symbi.authz_test

import data.symbi.authz

test_read_only_agent_reads if {
	authz.decision.allow with input as call("ci-agent", "fs__read_file", "verified", {"readOnlyHint": true})
}

test_read_only_agent_cannot_write if {
	d := authz.decision with input as call("ci-agent", "fs__write_file", "verified", {"readOnlyHint": false})
	not d.allow
	d.reason == "read-only identity: tool is not annotated readOnlyHint"
}

test_unannotated_tool_is_not_read_only if {
	not authz.decision.allow with input as call("ci-agent", "git__commit", "verified", {})
}

test_other_identities_unaffected if {
	authz.decision.allow with input as call("ide", "fs__write_file", "verified", {})
}
