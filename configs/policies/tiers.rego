# tiers.rego: unsigned tools run in a stricter sandbox.
#
# A tool whose definition is not signed (SchemaPin status "unsigned") is only served by an
# upstream running in the tier of data.settings.unsigned_tier (settings.json, default
# gvisor) or stricter (none < docker < gvisor); symbi refuses the call otherwise.
package symbi.authz

default unsigned_tier := "gvisor"

unsigned_tier := data.settings.unsigned_tier

obligations contains {"type": "require_tier", "tier": unsigned_tier} if {
	input.tool.verification.status == "unsigned"
}
