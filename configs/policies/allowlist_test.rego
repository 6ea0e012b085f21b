package symbi.authz_test

import data.symbi.authz

test_local_may_call_anything if {
	authz.decision.allow with input as call("local", "anything__at_all", "verified", {})
}

test_glob_pattern_matches if {
	authz.decision.allow with input as call("ide", "everything__echo", "verified", {})
}

test_tool_outside_allowlist_denied if {
	d := authz.decision with input as call("ide", "github__create_issue", "verified", {})
	not d.allow
	d.reason == "tool not allowed for this identity"
}

test_unknown_identity_gets_no_tools if {
	not authz.decision.allow with input as call("stranger", "fs__read_file", "verified", {})
}

test_allowlist_from_other_data if {
	authz.decision.allow with input as call("bob", "x__y", "verified", {})
		with data.identities as {"bob": {"tools": ["x__*"]}}
}
