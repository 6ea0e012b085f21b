package symbi.authz_test

import data.symbi.authz

tool(name, status, ann) := {"name": name, "verification": {"status": status}, "annotations": ann}

test_allowlisted_tool_allowed if {
	d := authz.decision with input as {"action": "tools/call", "identity": {"id": "ide"}, "tool": tool("everything__echo", "verified", {})}
	d.allow
	{"type": "rate_limit", "per_minute": 120} in d.conditions
}

test_other_tool_denied if {
	d := authz.decision with input as {"action": "tools/call", "identity": {"id": "ide"}, "tool": tool("other__x", "verified", {})}
	not d.allow
}

test_read_only_identity if {
	d := authz.decision with input as {"action": "tools/call", "identity": {"id": "ci-bot"}, "tool": tool("fs__read_file", "verified", {"readOnlyHint": true})}
	d.allow
	d2 := authz.decision with input as {"action": "tools/call", "identity": {"id": "ci-bot"}, "tool": tool("fs__read_file", "verified", {})}
	not d2.allow
}

test_destructive_needs_approval if {
	d := authz.decision with input as {"action": "tools/call", "identity": {"id": "ide"}, "tool": tool("fs__delete_file", "verified", {"destructiveHint": true})}
	{"type": "require_approval"} in d.conditions
}

test_unsigned_needs_gvisor if {
	d := authz.decision with input as {"action": "tools/call", "identity": {"id": "admin"}, "tool": tool("any__thing", "unsigned", {})}
	{"type": "require_tier", "tier": "gvisor"} in d.conditions
}

test_revoked_denied if {
	d := authz.decision with input as {"action": "tools/call", "identity": {"id": "admin"}, "tool": tool("any__thing", "revoked", {})}
	d.reason == "tool is revoked"
}

test_lists_allowed_for_known_identities if {
	authz.decision.allow with input as {"action": "resources/list", "identity": {"id": "admin"}}
	not authz.decision.allow with input as {"action": "resources/list", "identity": {"id": "stranger"}}
}
