// Package cronspec parses the schedules agents run on: six cron fields with seconds, a
// @descriptor, or an RFC 3339 time for a one-shot run, in an IANA time zone. It wraps the
// robfig/cron parser so the configuration checker and the scheduler read schedules alike.
package cronspec

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

var parser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Spec is a parsed schedule.
type Spec struct {
	At       time.Time     // a one-shot run; zero for a recurring schedule
	Cron     cron.Schedule // a recurring schedule; nil for a one-shot
	Location *time.Location
}

// Parse reads spec in the zone tz ("" = UTC).
func Parse(spec, tz string) (*Spec, error) {
	s := &Spec{Location: time.UTC}
	if tz != "" {
		loc, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("parse schedule: time zone %q: %w", tz, err)
		}
		s.Location = loc
	}
	if at, err := time.Parse(time.RFC3339, spec); err == nil {
		s.At = at
		return s, nil
	}
	trimmed := strings.TrimSpace(spec)
	if strings.HasPrefix(trimmed, "CRON_TZ=") || strings.HasPrefix(trimmed, "TZ=") {
		return nil, fmt.Errorf("parse schedule %q: set the time zone with the timezone key", spec)
	}
	if !strings.HasPrefix(trimmed, "@") && len(strings.Fields(spec)) != 6 {
		return nil, fmt.Errorf("parse schedule %q: want six fields (seconds minutes hours day-of-month month day-of-week), a @descriptor or an RFC 3339 time", spec)
	}
	c, err := parser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("parse schedule %q: %w", spec, err)
	}
	if ss, ok := c.(*cron.SpecSchedule); ok {
		ss.Location = s.Location
	}
	s.Cron = c
	return s, nil
}
