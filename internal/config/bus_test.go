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

func TestParseBusNATS(t *testing.T) {
	for _, tc := range []struct {
		name, in         string
		want             Bus
		listen, storeDir string
	}{
		{"external", `transport = "nats"
nats_url = "nats://a:4222,tls://b:4222"
nats_credentials_file = "bus.creds"
nats_ca_file = "/etc/ssl/ca.pem"
nats_prefix = "TEAM_A"
nats_replicas = 3
nats_max_bytes = "64m"`, Bus{Transport: "nats", NATSURL: "nats://a:4222,tls://b:4222", NATSCredentialsFile: "/etc/symbi/bus.creds",
			NATSCAFile: "/etc/ssl/ca.pem", NATSPrefix: "TEAM_A", NATSReplicas: 3, NATSMaxBytes: 64 << 20}, DefaultBusNATSListen, "/etc/symbi/data/nats"},
		{"embedded", `transport = "nats"
[bus.nats_embedded]
listen = "0.0.0.0:4333"
store_dir = "js"`, Bus{Transport: "nats", NATSEmbedded: &BusNATSEmbedded{Listen: "0.0.0.0:4333", StoreDir: "/etc/symbi/js"}}, "0.0.0.0:4333", "/etc/symbi/js"},
		{"embedded defaults", `transport = "nats"
[bus.nats_embedded]`, Bus{Transport: "nats", NATSEmbedded: &BusNATSEmbedded{}}, DefaultBusNATSListen, "/etc/symbi/data/nats"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("/etc/symbi/symbi.toml", []byte("version = 1\n[server]\ndata_dir = \"data\"\n[bus]\n"+tc.in+"\n"), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.Bus); diff != "" {
				t.Errorf("[bus] (-want +got):\n%s", diff)
			}
			if got := c.BusNATSListen(); got != tc.listen {
				t.Errorf("listen = %s, want %s", got, tc.listen)
			}
			if got := c.BusNATSStoreDir(); got != tc.storeDir {
				t.Errorf("store dir = %s, want %s", got, tc.storeDir)
			}
		})
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
		{"unknown transport", `transport = "kafka"`, []Problem{{Key: "bus.transport", Msg: `must be "local" or "nats"`}}},
		{"nats without a server", `transport = "nats"`, []Problem{{Key: "bus.transport", Msg: `"nats" needs bus.nats_url or [bus.nats_embedded]`}}},
		{"nats keys on local", `nats_url = "nats://h:4222"
nats_prefix = "X"
[bus.nats_embedded]`, []Problem{{Key: "bus.nats_url", Msg: `needs bus.transport = "nats"`}, {Key: "bus.nats_prefix", Msg: `needs bus.transport = "nats"`},
			{Key: "bus.nats_embedded", Msg: `needs bus.transport = "nats"`}}},
		{"nats bucket bound on local", `nats_max_bytes = "1g"`, []Problem{{Key: "bus.nats_max_bytes", Msg: `needs bus.transport = "nats"`}}},
		{"both servers", `transport = "nats"
nats_url = "nats://h:4222"
[bus.nats_embedded]`, []Problem{{Key: "bus.nats_url", Msg: "give bus.nats_url or [bus.nats_embedded], not both"}}},
		{"bad urls", `transport = "nats"
nats_url = "http://h:4222, nats://, nats://u:p@h:4222"`, []Problem{{Key: "bus.nats_url", Msg: `"http://h:4222" must be nats://host:port or tls://host:port`},
			{Key: "bus.nats_url", Msg: `"nats://" must be nats://host:port or tls://host:port`}, {Key: "bus.nats_url", Msg: "must not hold credentials: use bus.nats_credentials_file"}}},
		{"bad prefix and replicas", `transport = "nats"
nats_url = "nats://h:4222"
nats_prefix = "a.b"
nats_replicas = 7`, []Problem{{Key: "bus.nats_prefix", Msg: "must be 1 to 64 letters, digits, - or _"}, {Key: "bus.nats_replicas", Msg: "must be between 0 and 5"}}},
		{"embedded", `transport = "nats"
nats_credentials_file = "x.creds"
nats_replicas = 3
[bus.nats_embedded]
listen = "4222"`, []Problem{{Key: "bus.nats_credentials_file", Msg: "needs bus.nats_url (the embedded server has no authentication)"},
			{Key: "bus.nats_embedded.listen", Msg: "must be host:port"}, {Key: "bus.nats_replicas", Msg: "the embedded server is a single node: at most 1"}}},
		{"unknown embedded key", `transport = "nats"
[bus.nats_embedded]
port = 1`, []Problem{{Key: "bus.nats_embedded.port", Msg: "unknown key"}}},
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
