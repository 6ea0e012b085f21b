package config

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseBus(t *testing.T) {
	in := `version = 1
[server]
data_dir = "data"
[bus]
visibility_timeout = "10s"
max_attempts = 3
default_ttl = "1h"
max_ttl = "48h"
max_payload = "64k"
rate = 50.5
burst = 100
key_file = "secrets/bus.key"
`
	c, err := Parse("/etc/symbi/symbi.toml", []byte(in), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Bus{VisibilityTimeout: dur(10 * time.Second), MaxAttempts: 3, DefaultTTL: dur(time.Hour), MaxTTL: dur(48 * time.Hour),
		MaxPayload: 64 << 10, Rate: 50.5, Burst: 100, KeyFile: "/etc/symbi/secrets/bus.key"}
	if diff := cmp.Diff(want, c.Bus); diff != "" {
		t.Errorf("[bus] (-want +got):\n%s", diff)
	}
	if got := c.BusKeyFile(); got != "/etc/symbi/secrets/bus.key" {
		t.Errorf("BusKeyFile = %s", got)
	}
	c.Bus.KeyFile = ""
	if got, want := c.BusKeyFile(), filepath.Join("/etc/symbi/data", "keys", "bus_master.key"); got != want {
		t.Errorf("default BusKeyFile = %s, want %s", got, want)
	}
}

func TestBusProblems(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Problem
	}{
		{"negatives", `visibility_timeout = "-1s"
max_attempts = -1
default_ttl = "-1s"
max_ttl = "-1s"
rate = -1.0
burst = -1`, []Problem{
			{Key: "bus.visibility_timeout", Msg: "must not be negative"},
			{Key: "bus.default_ttl", Msg: "must not be negative"},
			{Key: "bus.max_ttl", Msg: "must not be negative"},
			{Key: "bus.max_attempts", Msg: "must not be negative"},
			{Key: "bus.rate", Msg: "must be a non-negative number of messages a second"},
			{Key: "bus.burst", Msg: "must not be negative"},
		}},
		{"default above max", `default_ttl = "2h"
max_ttl = "1h"`, []Problem{{Key: "bus.default_ttl", Msg: "must not exceed bus.max_ttl (1h0m0s)"}}},
		{"default above the default max", `default_ttl = "200h"`, []Problem{{Key: "bus.default_ttl", Msg: "must not exceed bus.max_ttl (168h0m0s)"}}},
		{"payload too large", `max_payload = "65m"`, []Problem{{Key: "bus.max_payload", Msg: "must be between 0 and 64m"}}},
		{"burst without rate", `burst = 5`, []Problem{{Key: "bus.burst", Msg: "needs bus.rate (without a rate there is no limit)"}}},
		{"unknown key", `rat = 5`, []Problem{{Key: "bus.rat", Msg: "unknown key"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.toml", []byte("version = 1\n[bus]\n"+tc.in+"\n"), env(nil))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse = %v, want problems", err)
			}
			if diff := cmp.Diff(tc.want, e.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
