package config

import (
	"math"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
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

	// Transport is where the bus keeps its messages: "local" (the state store, default)
	// or "nats" (JetStream on a NATS server, shared by every symbi that uses it).
	Transport string `toml:"transport"`
	// NATSURL is an external NATS server or cluster (comma-separated URLs, nats:// or
	// tls://) with JetStream; with transport "nats", exactly one of it and NATSEmbedded.
	NATSURL string `toml:"nats_url"`
	// NATSCredentialsFile is a NATS credentials (.creds) file for NATSURL; optional.
	NATSCredentialsFile string `toml:"nats_credentials_file"`
	// NATSCAFile is the CA bundle that verifies a tls:// NATSURL; default: system roots.
	NATSCAFile string `toml:"nats_ca_file"`
	// NATSPrefix names the bus's JetStream buckets and subjects; symbi instances with the
	// same prefix (and master key) share a bus. Default SYMBI_BUS.
	NATSPrefix string `toml:"nats_prefix"`
	// NATSReplicas is how many copies a clustered JetStream keeps; 0: 1.
	NATSReplicas int `toml:"nats_replicas"`
	// NATSMaxBytes bounds the messages bucket on the NATS server; 0: unlimited. A full
	// bucket refuses new messages, it never drops stored ones.
	NATSMaxBytes Bytes `toml:"nats_max_bytes"`
	// NATSEmbedded runs a NATS server inside this symbi for the others to join.
	NATSEmbedded *BusNATSEmbedded `toml:"nats_embedded"`
}

// BusNATSEmbedded is a NATS server with JetStream run inside symbi.
type BusNATSEmbedded struct {
	// Listen is the client address (host:port); default 127.0.0.1:4222. The server has
	// no authentication: keep it on loopback or a private network.
	Listen string `toml:"listen"`
	// StoreDir is JetStream's directory; default <data_dir>/nats.
	StoreDir string `toml:"store_dir"`
}

// Bus transports.
const (
	BusLocal = "local"
	BusNATS  = "nats"
)

// DefaultBusNATSListen is the embedded NATS server's default address.
const DefaultBusNATSListen = "127.0.0.1:4222"

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
	b.validateNATS(add)
}

func (b *Bus) validateNATS(add func(key, format string, args ...any)) {
	switch b.Transport {
	case "", BusLocal:
		for _, k := range []struct {
			key string
			set bool
		}{{"bus.nats_url", b.NATSURL != ""}, {"bus.nats_credentials_file", b.NATSCredentialsFile != ""}, {"bus.nats_ca_file", b.NATSCAFile != ""},
			{"bus.nats_prefix", b.NATSPrefix != ""}, {"bus.nats_replicas", b.NATSReplicas != 0}, {"bus.nats_max_bytes", b.NATSMaxBytes != 0}, {"bus.nats_embedded", b.NATSEmbedded != nil}} {
			if k.set {
				add(k.key, "needs bus.transport = \"nats\"")
			}
		}
		return
	case BusNATS:
	default:
		add("bus.transport", "must be \"local\" or \"nats\"")
		return
	}
	switch {
	case b.NATSURL == "" && b.NATSEmbedded == nil:
		add("bus.transport", "\"nats\" needs bus.nats_url or [bus.nats_embedded]")
	case b.NATSURL != "" && b.NATSEmbedded != nil:
		add("bus.nats_url", "give bus.nats_url or [bus.nats_embedded], not both")
	}
	if b.NATSURL != "" {
		for _, u := range strings.Split(b.NATSURL, ",") {
			p, err := url.Parse(strings.TrimSpace(u))
			if err != nil || (p.Scheme != "nats" && p.Scheme != "tls") || p.Host == "" || (p.Path != "" && p.Path != "/") {
				add("bus.nats_url", "%q must be nats://host:port or tls://host:port", strings.TrimSpace(u))
				continue
			}
			if p.User != nil {
				add("bus.nats_url", "must not hold credentials: use bus.nats_credentials_file")
			}
		}
	} else {
		if b.NATSCredentialsFile != "" {
			add("bus.nats_credentials_file", "needs bus.nats_url (the embedded server has no authentication)")
		}
		if b.NATSCAFile != "" {
			add("bus.nats_ca_file", "needs bus.nats_url")
		}
	}
	if b.NATSPrefix != "" && !natsPrefix.MatchString(b.NATSPrefix) {
		add("bus.nats_prefix", "must be 1 to 64 letters, digits, - or _")
	}
	if b.NATSMaxBytes < 0 {
		add("bus.nats_max_bytes", "must not be negative")
	}
	if b.NATSReplicas < 0 || b.NATSReplicas > 5 {
		add("bus.nats_replicas", "must be between 0 and 5")
	}
	if e := b.NATSEmbedded; e != nil {
		if e.Listen != "" {
			host, port, err := net.SplitHostPort(e.Listen)
			if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 || host == "" {
				add("bus.nats_embedded.listen", "must be host:port")
			}
		}
		if b.NATSReplicas > 1 {
			add("bus.nats_replicas", "the embedded server is a single node: at most 1")
		}
	}
}

var natsPrefix = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// BusNATSListen is the embedded NATS server's address.
func (c *Config) BusNATSListen() string {
	if e := c.Bus.NATSEmbedded; e != nil && e.Listen != "" {
		return e.Listen
	}
	return DefaultBusNATSListen
}

// BusNATSStoreDir is the embedded NATS server's JetStream directory.
func (c *Config) BusNATSStoreDir() string {
	if e := c.Bus.NATSEmbedded; e != nil && e.StoreDir != "" {
		return e.StoreDir
	}
	return filepath.Join(c.Server.DataDir, "nats")
}

// BusKeyFile is the bus master key's path: KeyFile, or its default in the data directory.
func (c *Config) BusKeyFile() string {
	if c.Bus.KeyFile != "" {
		return c.Bus.KeyFile
	}
	return filepath.Join(c.Server.DataDir, "keys", "bus_master.key")
}
