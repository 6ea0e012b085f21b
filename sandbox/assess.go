package sandbox

import (
	"fmt"
	"strings"
)

// Sensitivity is how sensitive the data an upstream handles is.
type Sensitivity string

// Sensitivity levels.
const (
	SensitivityPublic       Sensitivity = "public"
	SensitivityInternal     Sensitivity = "internal"
	SensitivityConfidential Sensitivity = "confidential"
	SensitivitySecret       Sensitivity = "secret"
)

// Needs are what an upstream declares it needs, as written in its configuration.
type Needs struct {
	Network         bool        // outbound network access
	FilesystemWrite bool        // writable host mounts
	ExternalAPIs    []string    // third-party services it calls (hosts or names)
	Sensitivity     Sensitivity // of the data it sees; "" = internal
	Signed          bool        // its tool definitions carry SchemaPin signatures
	Verified        bool        // and those signatures verified against a pinned key
}

// Assessment is the outcome of Assess.
type Assessment struct {
	Tier    Tier     `json:"tier"`    // the recommended tier: docker or gvisor, never none
	Score   int      `json:"score"`   // 0 (benign) to 100
	Reasons []string `json:"reasons"` // one line per contribution, then the conclusion
}

// GVisorThreshold is the score from which Assess recommends gVisor.
const GVisorThreshold = 40

// Assess maps declared needs to a tier with a score and human-readable reasons. It never
// recommends the none tier: that is a deliberate development choice, not an assessment.
func Assess(n Needs) Assessment {
	var a Assessment
	add := func(points int, reason string) {
		a.Score += points
		a.Reasons = append(a.Reasons, fmt.Sprintf("+%d %s", points, reason))
	}
	if n.Network {
		add(25, "needs outbound network")
	}
	if n.FilesystemWrite {
		add(20, "writes to host files")
	}
	if k := len(n.ExternalAPIs); k > 0 {
		p := 10 + 5*(k-1)
		if p > 20 {
			p = 20
		}
		add(p, fmt.Sprintf("calls external APIs (%s)", strings.Join(n.ExternalAPIs, ", ")))
	}
	switch n.Sensitivity {
	case SensitivityPublic:
	case "", SensitivityInternal:
		add(5, "handles internal data")
	case SensitivityConfidential:
		add(15, "handles confidential data")
	case SensitivitySecret:
		add(25, "handles secret data")
	default:
		add(25, fmt.Sprintf("declares unknown data sensitivity %q (treated as secret)", n.Sensitivity))
	}
	switch {
	case n.Signed && n.Verified:
		a.Reasons = append(a.Reasons, "+0 tools are signed and verified")
	case n.Signed:
		add(10, "tools are signed but not verified")
	default:
		add(20, "tools are unsigned")
	}
	if a.Score > 100 {
		a.Score = 100
	}
	if a.Score >= GVisorThreshold {
		a.Tier = TierGVisor
		a.Reasons = append(a.Reasons, fmt.Sprintf("score %d >= %d: gvisor", a.Score, GVisorThreshold))
	} else {
		a.Tier = TierDocker
		a.Reasons = append(a.Reasons, fmt.Sprintf("score %d < %d: docker", a.Score, GVisorThreshold))
	}
	return a
}
