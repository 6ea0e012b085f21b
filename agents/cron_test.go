package agents

import (
	"testing"
	"time"
)

func TestScheduleNext(t *testing.T) {
	base := time.Date(2026, 3, 28, 23, 59, 58, 0, time.UTC)
	for _, tc := range []struct {
		name, spec, tz string
		after          time.Time
		want           time.Time
		more           bool
	}{
		{"seconds field", "*/5 * * * * *", "", base, time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC), true},
		{"daily at 02:00 UTC", "0 0 2 * * *", "", base, time.Date(2026, 3, 29, 2, 0, 0, 0, time.UTC), true},
		// Paris moves to summer time on 2026-03-29: 02:30 local does not exist that day,
		// so the next 02:30 is on the 30th, 00:30 UTC.
		{"time zone across DST", "0 30 2 * * *", "Europe/Paris", base, time.Date(2026, 3, 30, 0, 30, 0, 0, time.UTC), true},
		{"descriptor", "@every 90s", "", base, base.Add(90 * time.Second), true},
		{"one-shot ahead", "2026-04-01T10:00:00Z", "", base, time.Date(2026, 4, 1, 10, 0, 0, 0, time.UTC), true},
		{"one-shot passed", "2026-03-01T10:00:00Z", "", base, time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.spec, tc.tz, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			got, more := s.Next(tc.after)
			if !got.Equal(tc.want) || more != tc.more {
				t.Errorf("Next(%s) = %s, %v; want %s, %v", tc.after, got.UTC(), more, tc.want, tc.more)
			}
		})
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, tc := range []struct {
		name, spec, tz, missed string
		jitter                 time.Duration
	}{
		{"five fields", "0 2 * * *", "", "", 0},
		{"bad field", "0 0 25 * * *", "", "", 0},
		{"tz in spec", "CRON_TZ=UTC 0 0 2 * * *", "", "", 0},
		{"unknown zone", "0 0 2 * * *", "Mars/Olympus", "", 0},
		{"bad missed policy", "0 0 2 * * *", "", "catch_up", 0},
		{"negative jitter", "0 0 2 * * *", "", "", -time.Second},
		{"empty", "", "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseSchedule(tc.spec, tc.tz, tc.jitter, tc.missed); err == nil {
				t.Errorf("ParseSchedule(%q, %q, %s, %q): no error", tc.spec, tc.tz, tc.jitter, tc.missed)
			}
		})
	}
}

func TestScheduleJitter(t *testing.T) {
	s, err := ParseSchedule("0 0 * * * *", "", 10*time.Second, "run_once")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := map[time.Duration]bool{}
	for range 200 {
		d := s.jittered(base).Sub(base)
		if d < 0 || d >= 10*time.Second {
			t.Fatalf("jitter %s outside [0, 10s)", d)
		}
		seen[d.Truncate(time.Second)] = true
	}
	if len(seen) < 5 {
		t.Errorf("jitter took only %d distinct seconds in 200 draws", len(seen))
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"0 0 2 * * *", "*/5 * * * * *", "@every 1m", "2026-01-01T00:00:00Z", "0 0 0 31 2 *", "a b c d e f"} {
		f.Add(s, "UTC")
	}
	f.Fuzz(func(t *testing.T, spec, tz string) {
		s, err := ParseSchedule(spec, tz, 0, "")
		if err != nil {
			return
		}
		// Next must terminate and never go backwards.
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		if n, more := s.Next(at); more && !n.After(at) {
			t.Errorf("Next(%s) = %s, not after", at, n)
		}
	})
}
