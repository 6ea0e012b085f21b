package config

import (
	"math"
	"path/filepath"
	"time"
)

// Bus configures the agent bus (symbi__bus_* tools). Zero values take the defaults.
type Bus struct {
	// VisibilityTimeout is how long a delivered, unacknowledged message stays hidden
	// before it is delivered again; 0: 30s.
	VisibilityTimeout Duration `toml:"visibility_timeout"`
	// MaxAttempts is how many deliveries a message gets before it is dead-lettered; 0: 5.
	MaxAttempts int `toml:"max_attempts"`
	// DefaultTTL is a message's lifetime unless its sender asks for another; 0: 24h.
	DefaultTTL Duration `toml:"default_ttl"`
	// MaxTTL is the longest lifetime a sender may ask for (and the longest request
	// timeout); 0: 168h.
	MaxTTL Duration `toml:"max_ttl"`
	// MaxPayload bounds one message's payload; 0: 1m.
	MaxPayload Bytes `toml:"max_payload"`
	// Rate is how many messages a second each sender may send (a token bucket per
	// identity; send, publish, request and reply each take a token); 0: unlimited.
	Rate float64 `toml:"rate"`
	// Burst is how many tokens a sender may save up; 0: Rate rounded up.
	Burst int `toml:"burst"`
	// KeyFile is the master key that wraps the bus's keys kept in the state store;
	// default <data_dir>/keys/bus_master.key, outside the state file.
	KeyFile string `toml:"key_file"`
}

// Bus defaults, applied by the bus when a key is zero.
const (
	DefaultBusVisibility  = 30 * time.Second
	DefaultBusMaxAttempts = 5
	DefaultBusTTL         = 24 * time.Hour
	DefaultBusMaxTTL      = 7 * 24 * time.Hour
	DefaultBusMaxPayload  = 1 << 20
	maxBusPayload         = 64 << 20
)

func (b *Bus) validate(add func(key, format string, args ...any)) {
	for _, d := range []struct {
		key string
		v   Duration
	}{{"bus.visibility_timeout", b.VisibilityTimeout}, {"bus.default_ttl", b.DefaultTTL}, {"bus.max_ttl", b.MaxTTL}} {
		if d.v.Duration < 0 {
			add(d.key, "must not be negative")
		}
	}
	if b.MaxAttempts < 0 {
		add("bus.max_attempts", "must not be negative")
	}
	ttl, maxTTL := b.DefaultTTL.Duration, b.MaxTTL.Duration
	if ttl == 0 {
		ttl = DefaultBusTTL
	}
	if maxTTL == 0 {
		maxTTL = DefaultBusMaxTTL
	}
	if ttl > 0 && maxTTL > 0 && ttl > maxTTL {
		add("bus.default_ttl", "must not exceed bus.max_ttl (%s)", maxTTL)
	}
	if b.MaxPayload < 0 || b.MaxPayload > maxBusPayload {
		add("bus.max_payload", "must be between 0 and 64m")
	}
	if b.Rate < 0 || math.IsNaN(b.Rate) || math.IsInf(b.Rate, 0) {
		add("bus.rate", "must be a non-negative number of messages a second")
	}
	if b.Burst < 0 {
		add("bus.burst", "must not be negative")
	}
	if b.Burst > 0 && b.Rate == 0 {
		add("bus.burst", "needs bus.rate (without a rate there is no limit)")
	}
}

// BusKeyFile is the bus master key's path: KeyFile, or its default in the data directory.
func (c *Config) BusKeyFile() string {
	if c.Bus.KeyFile != "" {
		return c.Bus.KeyFile
	}
	return filepath.Join(c.Server.DataDir, "keys", "bus_master.key")
}
