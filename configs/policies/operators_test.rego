package symbi.authz_test

import data.symbi.authz

test_operator_watches_the_audit_stream if {
	authz.decision.allow with input as {"action": "audit/stream", "identity": {"id": "local"}}
}

test_others_may_not_watch_the_audit_stream if {
	d := authz.decision with input as {"action": "audit/stream", "identity": {"id": "ide"}}
	not d.allow
	d.reason == "the audit stream is for operators"
}

test_unknown_identity_may_not_watch_the_audit_stream if {
	not authz.decision.allow with input as {"action": "audit/stream", "identity": {"id": "stranger"}}
}

test_operator_decides_on_tool_definitions if {
	authz.decision.allow with input as {"action": "tools/approve", "identity": {"id": "local"}, "upstream": "fs", "change": {"tool": "read_file"}}
	authz.decision.allow with input as {"action": "tools/reject", "identity": {"id": "local"}, "upstream": "fs", "change": {"tool": "read_file"}}
}

test_others_may_not_decide_on_tool_definitions if {
	d := authz.decision with input as {"action": "tools/approve", "identity": {"id": "ide"}, "upstream": "fs", "change": {"tool": "read_file"}}
	not d.allow
	d.reason == "deciding on tool definitions is for operators"
	not authz.decision.allow with input as {"action": "tools/reject", "identity": {"id": "stranger"}}
}

test_everyone_opens_the_console if {
	authz.decision.allow with input as {"action": "console/view", "identity": {"id": "ide"}, "console": {"page": "upstreams"}}
}
