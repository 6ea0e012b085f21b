//go:build integration

package test

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const agentClientImage = "symbi-e2e-agentclient:test"

var agentImageOnce sync.Once
var agentImageErr error

// agentImage builds the container-agent fixture (a static MCP client) and an image
// FROM scratch holding it, once per test binary.
func agentImage(t testing.TB) string {
	t.Helper()
	agentImageOnce.Do(func() {
		agentImageErr = buildScratchImage("../agents/testdata/agentclient", "agentclient", agentClientImage)
	})
	if agentImageErr != nil {
		t.Fatal(agentImageErr)
	}
	return agentClientImage
}

// containerAgentPolicy denies mg__add to agent:box and allows everything else.
const containerAgentPolicy = `package symbi.authz

default decision := {"allow": true}

decision := {"allow": false, "reason": "box may not add"} if {
	input.action == "tools/call"
	input.identity.id == "agent:box"
	input.tool.upstream_name == "add"
}
`

// TestContainerAgentThroughSymbi: a container agent (the fixture image, in the docker
// and gvisor tiers, no network) calls back into symbi over its stdio as agent:box: a
// symbi__ built-in tool is allowed, an upstream tool the policy denies it is refused;
// the audit trail records both as agent:box over transport "container"; the run is
// suspended with the policy's reason, and so is the agent.
func TestContainerAgentThroughSymbi(t *testing.T) {
	img := agentImage(t)
	for _, tier := range []string{"docker", "gvisor"} {
		t.Run(tier, func(t *testing.T) {
			pol := policyDir(t, map[string]string{"authz.rego": containerAgentPolicy})
			cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+fmt.Sprintf(`[policy]
dir = %q

[[agents]]
name = "box"
kind = "container"
image = %q
sandbox = %q
command = ["/agentclient", "symbi__status", "mg__add={\"a\":1,\"b\":2}", "symbi__status"]
env = { MODE = "test" }
limits = { timeout = "2m", memory = "64m", cpus = 0.5 }
`, pol, img, tier))
			s := serve(t, cfg)
			url := "http://" + s.addr + "/mcp"
			auditDir := filepath.Join(dataDirOf(cfg), "audit")

			agentsCLI(t, url, "run", "box")
			var st agentStatus
			waitFor(t, 90*time.Second, "box suspended", func() bool {
				st = agentState(t, url, "box")
				return st.State == "suspended" || st.State == "ready" && len(st.Runs) > 0
			})
			const reason = "call of mg__add: denied by policy: box may not add"
			if st.State != "suspended" || st.Reason != reason || st.Identity != "agent:box" {
				t.Errorf("box = %+v, want suspended with %q", st, reason)
			}
			if len(st.Runs) != 1 || st.Runs[0].State != "suspended" || st.Runs[0].Reason != reason || st.Runs[0].Step != 2 {
				t.Errorf("box's runs = %+v, want one run suspended after 2 calls", st.Runs)
			}
			recs, out := auditQuery(t, auditDir, "--identity", "agent:box", "--type", "call")
			var got []string
			for _, r := range recs {
				got = append(got, r.Tool+" "+r.Decision+" "+r.Outcome)
			}
			want := []string{"symbi__status allow ok", "mg__add deny denied"}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("audited calls of agent:box %q, want %q", got, want)
			}
			if !strings.Contains(out, `"transport":"container"`) {
				t.Errorf("the calls are not audited with transport container:\n%s", out)
			}
			runs, _ := auditQuery(t, auditDir, "--identity", "agent:box", "--type", "agent.run")
			if len(runs) != 1 || runs[0].Reason != reason {
				t.Errorf("audited runs of box %+v, want one with the denial", runs)
			}
		})
	}
}
