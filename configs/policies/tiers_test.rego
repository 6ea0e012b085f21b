package symbi.authz_test

import data.symbi.authz

test_unsigned_requires_gvisor if {
	d := authz.decision with input as call("local", "fs__read_file", "unsigned", {"openWorldHint": false})
	{"type": "require_tier", "tier": "gvisor"} in d.conditions
}

test_verified_has_no_tier_condition if {
	d := authz.decision with input as call("local", "fs__read_file", "verified", {"openWorldHint": false})
	every c in d.conditions { c.type != "require_tier" }
}

test_tier_from_settings if {
	d := authz.decision with input as call("local", "fs__read_file", "unsigned", {})
		with data.settings.unsigned_tier as "docker"
	{"type": "require_tier", "tier": "docker"} in d.conditions
}
