package agents

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/symbi-dev/symbi/internal/cronspec"
)

// MissedPolicy says what happens to a run that was due while symbi was not running.
type MissedPolicy string

// Missed-run policies.
const (
	// MissedSkip forgets missed runs; the schedule resumes at its next time.
	MissedSkip MissedPolicy = "skip"
	// MissedRunOnce runs once at start-up however many runs were missed.
	MissedRunOnce MissedPolicy = "run_once"
)

// Schedule is when an agent runs: a cron expression with seconds in a time zone, or one
// point in time (one-shot), with optional jitter.
type Schedule struct {
	Spec     string
	Location *time.Location
	Jitter   time.Duration
	Missed   MissedPolicy

	spec *cronspec.Spec
}

// ParseSchedule reads spec: six cron fields ("0 30 2 * * *"), a descriptor ("@daily",
// "@every 10m") or an RFC 3339 time for a one-shot run. tz is an IANA zone ("" = UTC);
// missed is "skip" (default) or "run_once".
func ParseSchedule(spec, tz string, jitter time.Duration, missed string) (*Schedule, error) {
	s := &Schedule{Spec: spec, Jitter: jitter, Missed: MissedPolicy(missed), Location: time.UTC}
	if s.Missed == "" {
		s.Missed = MissedSkip
	}
	if s.Missed != MissedSkip && s.Missed != MissedRunOnce {
		return nil, fmt.Errorf("parse schedule: missed policy %q: want skip or run_once", missed)
	}
	if jitter < 0 {
		return nil, fmt.Errorf("parse schedule: jitter must not be negative")
	}
	sp, err := cronspec.Parse(spec, tz)
	if err != nil {
		return nil, err
	}
	s.spec, s.Location = sp, sp.Location
	return s, nil
}

// OneShot reports whether the schedule fires once.
func (s *Schedule) OneShot() bool { return !s.spec.At.IsZero() }

// Next is the first time strictly after t that the schedule fires, without jitter; false
// when it never fires again.
func (s *Schedule) Next(t time.Time) (time.Time, bool) {
	if s.OneShot() {
		return s.spec.At, s.spec.At.After(t)
	}
	n := s.spec.Cron.Next(t)
	return n, !n.IsZero()
}

// jittered adds a random delay in [0, Jitter) to t.
func (s *Schedule) jittered(t time.Time) time.Time {
	if s.Jitter <= 0 {
		return t
	}
	return t.Add(rand.N(s.Jitter))
}
