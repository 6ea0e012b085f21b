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
