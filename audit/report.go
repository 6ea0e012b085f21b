package audit

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Count is one row of a compliance table.
type Count struct {
	Key     string `json:"key"`
	Calls   int    `json:"calls"`   // calls, reads and prompt gets
	Denials int    `json:"denials"` // denied decisions of any action
}

// Notable is a short form of an event worth listing on its own in a review.
type Notable struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Type     Type      `json:"type"`
	Identity string    `json:"identity,omitempty"`
	Upstream string    `json:"upstream,omitempty"`
	Tool     string    `json:"tool,omitempty"`
	Status   string    `json:"status,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

// Compliance is a summary of a period of the trail, as evidence for access reviews:
// who called what, what was denied, which tools failed verification, and which policy,
// approval and key events happened.
type Compliance struct {
	Since                time.Time `json:"since"`
	Until                time.Time `json:"until"`
	Generated            time.Time `json:"generated"`
	Entries              int       `json:"entries"`
	Calls                int       `json:"calls"`
	Denials              int       `json:"denials"`
	ByIdentity           []Count   `json:"by_identity"`
	ByTool               []Count   `json:"by_tool"`
	VerificationFailures []Notable `json:"verification_failures"`
	PolicyChanges        []Notable `json:"policy_changes"`
	Approvals            []Notable `json:"approvals"`
	AuditEvents          []Notable `json:"audit_events"` // key rotations, recoveries, truncation notices
	Integrity            *Report   `json:"integrity,omitempty"`
}

// Summarize builds a compliance summary of the records whose time is in [since, until)
// (zero bounds are open).
func Summarize(recs []Record, since, until time.Time) *Compliance {
	c := &Compliance{Since: since, Until: until, Generated: time.Now().UTC(),
		ByIdentity: []Count{}, ByTool: []Count{}, VerificationFailures: []Notable{},
		PolicyChanges: []Notable{}, Approvals: []Notable{}, AuditEvents: []Notable{}}
	f := Filter{Since: since, Until: until}
	byID, byTool := map[string]*Count{}, map[string]*Count{}
	bump := func(m map[string]*Count, k string, call, deny bool) {
		if k == "" {
			k = "-"
		}
		x := m[k]
		if x == nil {
			x = &Count{Key: k}
			m[k] = x
		}
		if call {
			x.Calls++
		}
		if deny {
			x.Denials++
		}
	}
	for i := range recs {
		ev := &recs[i].Event
		if !f.Match(ev) {
			continue
		}
		c.Entries++
		n := Notable{Seq: recs[i].Seq, Time: ev.Time, Type: ev.Type, Identity: ev.Identity,
			Upstream: ev.Upstream, Tool: ev.Tool, Status: ev.SchemaPin, Reason: ev.Reason}
		call := ev.Type == TypeCall || ev.Type == TypeRead || ev.Type == TypePromptGet
		deny := ev.Decision == Deny
		if call {
			c.Calls++
		}
		if deny {
			c.Denials++
		}
		if call || deny {
			bump(byID, ev.Identity, call, deny)
			target := ev.Tool
			if target == "" {
				target = ev.Resource
			}
			if target == "" {
				target = ev.Prompt
			}
			bump(byTool, target, call, deny)
		}
		switch ev.Type {
		case TypeVerification:
			if ev.SchemaPin != "" && ev.SchemaPin != "verified" && ev.SchemaPin != "unsigned" {
				c.VerificationFailures = append(c.VerificationFailures, n)
			}
		case TypePolicyReloaded, TypeConfigLoaded:
			c.PolicyChanges = append(c.PolicyChanges, n)
		case TypeToolApproved, TypeToolRejected:
			c.Approvals = append(c.Approvals, n)
		case TypeKeyRotated, TypeRecovered, TypeTruncationDetected:
			c.AuditEvents = append(c.AuditEvents, n)
		}
	}
	c.ByIdentity = sortCounts(byID)
	c.ByTool = sortCounts(byTool)
	return c
}

func sortCounts(m map[string]*Count) []Count {
	out := make([]Count, 0, len(m))
	for _, x := range m {
		out = append(out, *x)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Calls+out[i].Denials != out[j].Calls+out[j].Denials {
			return out[i].Calls+out[i].Denials > out[j].Calls+out[j].Denials
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// Markdown renders the summary as a Markdown document.
func (c *Compliance) Markdown() string {
	var b strings.Builder
	span := func(t time.Time) string {
		if t.IsZero() {
			return "(open)"
		}
		return t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(&b, "# symbi audit report\n\n")
	fmt.Fprintf(&b, "- Period: %s to %s\n- Generated: %s\n", span(c.Since), span(c.Until), c.Generated.Format(time.RFC3339))
	if c.Integrity != nil {
		if c.Integrity.Intact {
			fmt.Fprintf(&b, "- Trail integrity: **intact** (%d entries, seq %d to %d, keys %s, anchored: %v)\n",
				c.Integrity.Entries, c.Integrity.FirstSeq, c.Integrity.LastSeq, strings.Join(c.Integrity.Keys, ", "), c.Integrity.Anchored)
			for _, w := range c.Integrity.Writers {
				fmt.Fprintf(&b, "  - writer %s: **intact** (%d entries, seq %d to %d, keys %s, anchored: %v)\n",
					md(w.Writer), w.Entries, w.FirstSeq, w.LastSeq, strings.Join(w.Keys, ", "), w.Anchored)
			}
		} else {
			fmt.Fprintf(&b, "- Trail integrity: **NOT INTACT**: %s\n", md(c.Integrity.Problem.String()))
		}
	}
	fmt.Fprintf(&b, "- Entries in period: %d; calls: %d; denials: %d\n\n", c.Entries, c.Calls, c.Denials)
	table := func(title, col string, rows []Count) {
		fmt.Fprintf(&b, "## %s\n\n", title)
		if len(rows) == 0 {
			b.WriteString("None.\n\n")
			return
		}
		fmt.Fprintf(&b, "| %s | calls | denials |\n| --- | ---: | ---: |\n", col)
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %d | %d |\n", md(r.Key), r.Calls, r.Denials)
		}
		b.WriteString("\n")
	}
	list := func(title string, rows []Notable) {
		fmt.Fprintf(&b, "## %s\n\n", title)
		if len(rows) == 0 {
			b.WriteString("None.\n\n")
			return
		}
		b.WriteString("| seq | time | type | identity | upstream | tool | status | reason |\n| ---: | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, n := range rows {
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", n.Seq, n.Time.UTC().Format(time.RFC3339),
				n.Type, md(n.Identity), md(n.Upstream), md(n.Tool), md(n.Status), md(n.Reason))
		}
		b.WriteString("\n")
	}
	table("Calls and denials by identity", "identity", c.ByIdentity)
	table("Calls and denials by tool", "tool", c.ByTool)
	list("Verification failures", c.VerificationFailures)
	list("Policy and configuration changes", c.PolicyChanges)
	list("Tool approvals and rejections", c.Approvals)
	list("Audit trail events", c.AuditEvents)
	return b.String()
}

// md escapes text for a Markdown table cell.
func md(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	return s
}
