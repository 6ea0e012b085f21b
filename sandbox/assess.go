package sandbox

import (
	"fmt"
	"strings"
)

// Sensitivity is how sensitive the data an upstream handles is.
type Sensitivity string

// Sensitivity levels, least sensitive first: the one vocabulary of configuration
// (upstreams[].sandbox.sensitivity), the assessment and its reasons.
const (
	SensitivityPublic       Sensitivity = "public"
	SensitivityInternal     Sensitivity = "internal"
	SensitivityConfidential Sensitivity = "confidential"
	SensitivityRestricted   Sensitivity = "restricted"
)

// Sensitivities lists the levels, least sensitive first.
var Sensitivities = []Sensitivity{SensitivityPublic, SensitivityInternal, SensitivityConfidential, SensitivityRestricted}

// ParseSensitivity parses a level as written in configuration; "" is the default,
// internal.
func ParseSensitivity(s string) (Sensitivity, error) {
	if s == "" {
		return SensitivityInternal, nil
	}
	for _, l := range Sensitivities {
		if string(l) == s {
			return l, nil
		}
	}
	names := make([]string, len(Sensitivities))
	for i, l := range Sensitivities {
		names[i] = string(l)
	}
	return "", fmt.Errorf("sensitivity %q: want one of %s", s, strings.Join(names, ", "))
}

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
	case SensitivityRestricted:
		add(25, "handles restricted data")
	default:
		add(25, fmt.Sprintf("declares unknown data sensitivity %q (treated as restricted)", n.Sensitivity))
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
