package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/sandbox"
)

// env is a lookup over a fixed map, so tests never depend on the real environment.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

var testEnv = map[string]string{
	"SYMBI_TEST_TOKEN":  "token-from-env-0123456789",
	"SYMBI_TEST_KEY":    "key-from-env",
	"SYMBI_TEST_REMOTE": "Bearer remote-secret",
}

func ptr(s string) *string { return &s }

func dur(d time.Duration) Duration { return Duration{d} }

func TestParseFullFile(t *testing.T) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("full.toml", data, env(testEnv))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Version: 1,
		Server: Server{
			Listen:                      "0.0.0.0:9090",
			MetricsListen:               "127.0.0.1:9091",
			DataDir:                     "/var/lib/symbi",
			MaxMessageBytes:             1 << 20,
			ShutdownTimeout:             dur(30 * time.Second),
			TLSCert:                     "/etc/symbi/cert.pem",
			TLSKey:                      "/etc/symbi/key.pem",
			TLSClientCA:                 "/etc/symbi/clients-ca.pem",
			AllowedOrigins:              []string{"https://app.example.com", "http://localhost:5173"},
			SessionIdleTimeout:          dur(10 * time.Minute),
			MaxSessions:                 50,
			MaxInflightBytes:            32 << 20,
			MaxInflightBytesPerIdentity: 8 << 20,
			Tokens: []Token{
				{Token: "token-from-env-0123456789", Identity: "ide"},
				{Token: "literal-token-0123456789", Identity: "ci"},
			},
		},
		Upstreams: []Upstream{
			{
				Name:    "everything",
				Command: []string{"everything-server"},
				Args:    []string{"--stdio"},
				Env:     map[string]string{"API_KEY": "key-from-env", "MODE": "demo"},
				Dir:     "/srv/everything",
				Prefix:  ptr("ev"),
				Timeout: dur(15 * time.Second),
				Sandbox: &UpstreamSandbox{
					Tier: "gvisor", Image: "local/fs-server:1", Network: "none", Memory: "256m",
					CPUs: 1.5, Pids: 64, Timeout: dur(5 * time.Minute), Mounts: []string{"/data:/data:rw"},
					Env: map[string]string{"HOME": "/tmp"}, User: "1000:1000",
				},
				SchemaPin: &SchemaPin{
					Mode: "strict", Domain: "tools.example.com", DiscoveryFile: "keys/well-known.json",
					Manifest: "manifest.json", FirstSeen: "pending",
				},
			},
			{
				Name:     "remote",
				URL:      "https://mcp.example.com/mcp",
				Headers:  map[string]string{"Authorization": "Bearer remote-secret"},
				Prefix:   ptr(""),
				Timeout:  dur(DefaultTimeout),
				Disabled: true,
			},
			{
				Name:      "legacy_sse",
				URL:       "http://127.0.0.1:3001/sse",
				Transport: "sse",
				Prefix:    ptr("legacy_sse"),
				Timeout:   dur(DefaultTimeout),
				SchemaPin: &SchemaPin{Mode: "tofu"},
			},
		},
		Policy: Policy{Dir: "./policies"},
		Audit: Audit{Dir: "/var/log/symbi", Fsync: "every", FullArguments: true, SignEvery: 16,
			Syslog: "tcp://127.0.0.1:601", HTTP: "https://siem.example.com/services/collector/raw",
			HTTPHeaders: map[string]string{"Authorization": "key-from-env"}},
		Sandbox: Sandbox{DefaultTier: "docker"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse(full.toml) mismatch (-want +got):\n%s", diff)
	}
}

func TestParseDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want *Config
	}{
		{
			name: "version only",
			in:   "version = 1\n",
			want: &Config{Version: 1, Server: Server{
				Listen: DefaultListen, DataDir: DefaultDataDir,
				MaxMessageBytes: DefaultMaxMessageBytes, ShutdownTimeout: dur(DefaultShutdownTimeout),
				SessionIdleTimeout: dur(DefaultSessionIdleTimeout), MaxSessions: DefaultMaxSessions,
				MaxInflightBytes: 16 * DefaultMaxMessageBytes, MaxInflightBytesPerIdentity: 4 * DefaultMaxMessageBytes,
			}},
		},
		{
			name: "upstream timeout and prefix",
			in: `version = 1
[[upstreams]]
name = "a"
command = ["a-server"]
[[upstreams]]
name = "b"
url = "http://localhost:1/mcp"
prefix = ""
timeout = "0s"
[[upstreams]]
name = "c"
command = ["c-server"]
prefix = "cc"
timeout = "2s"
`,
			want: &Config{
				Version: 1,
				Server: Server{
					Listen: DefaultListen, DataDir: DefaultDataDir,
					MaxMessageBytes: DefaultMaxMessageBytes, ShutdownTimeout: dur(DefaultShutdownTimeout),
					SessionIdleTimeout: dur(DefaultSessionIdleTimeout), MaxSessions: DefaultMaxSessions,
					MaxInflightBytes: 16 * DefaultMaxMessageBytes, MaxInflightBytesPerIdentity: 4 * DefaultMaxMessageBytes,
				},
				Upstreams: []Upstream{
					{Name: "a", Command: []string{"a-server"}, Prefix: ptr("a"), Timeout: dur(60 * time.Second)},
					{Name: "b", URL: "http://localhost:1/mcp", Prefix: ptr(""), Timeout: dur(60 * time.Second)},
					{Name: "c", Command: []string{"c-server"}, Prefix: ptr("cc"), Timeout: dur(2 * time.Second)},
				},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse("t.toml", []byte(tc.in), env(nil))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	if probs := c.validate(); len(probs) != 0 {
		t.Errorf("Default() does not validate: %v", probs)
	}
	if c.Server.Listen != "127.0.0.1:8080" || c.Server.DataDir != "./symbi-data" || len(c.Upstreams) != 0 {
		t.Errorf("Default() = %+v", c.Server)
	}
}

// problems parses in and returns its problems, failing the test if Parse succeeded or
// returned anything but an *Error.
func problems(t *testing.T, in string, lookup map[string]string) []Problem {
	t.Helper()
	c, err := Parse("bad.toml", []byte(in), env(lookup))
	if err == nil {
		t.Fatalf("Parse succeeded, want problems; got %+v", c)
	}
	if c != nil {
		t.Errorf("Parse returned a config together with an error")
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Parse error %T (%v), want *Error", err, err)
	}
	if ce.File != "bad.toml" {
		t.Errorf("Error.File = %q, want bad.toml", ce.File)
	}
	if len(ce.Problems) == 0 {
		t.Fatalf("*Error with no problems")
	}
	return ce.Problems
}

// keys reduces problems to their keys, for cases where the message wording is not the point.
func keys(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Key
	}
	return out
}

func TestParseProblems(t *testing.T) {
	const up = "version = 1\n[[upstreams]]\n"
	for _, tc := range []struct {
		name string
		in   string
		env  map[string]string
		want []Problem
	}{
		{
			name: "unknown keys at several depths",
			in: `version = 1
colour = "blue"
[server]
bogus = 1
[[server.tokens]]
token = "0123456789abcdef"
identity = "x"
qux = 1
[[upstreams]]
name = "a"
command = ["x"]
foo = 1
sandbox = { tier = "none", bar = 2 }
schemapin = { mode = "tofu", baz = 3 }
[policy]
dirs = "p"
[audit]
fsync = "batch"
sync = true
[sandbox]
tier = "docker"
`,
			want: []Problem{
				{"colour", "unknown key"},
				{"server.bogus", "unknown key"},
				{"server.tokens[0].qux", "unknown key"},
				{"upstreams[0].foo", "unknown key"},
				{"upstreams[0].sandbox.bar", "unknown key"},
				{"upstreams[0].schemapin.baz", "unknown key"},
				{"policy.dirs", "unknown key"},
				{"audit.sync", "unknown key"},
				{"sandbox.tier", "unknown key"},
			},
		},
		{
			name: "unknown table",
			in:   "version = 1\n[server.extra]\nx = 1\n",
			want: []Problem{{"server.extra", "unknown key"}}, // its contents are not reported one by one
		},
		{
			name: "wrong version",
			in:   "version = 2\n",
			want: []Problem{{"version", "must be 1 (got 2)"}},
		},
		{
			name: "missing version",
			in:   "[server]\nlisten = \"127.0.0.1:1\"\n",
			want: []Problem{{"version", "must be 1 (got 0)"}},
		},
		{
			name: "bad name",
			in:   up + "name = \"Bad Name\"\ncommand = [\"x\"]\nprefix = \"ok\"\n",
			want: []Problem{{"upstreams[0].name", `must match [a-z0-9_-]{1,32} (got "Bad Name")`}},
		},
		{
			name: "name too long",
			in:   up + "name = \"" + strings.Repeat("a", 33) + "\"\ncommand = [\"x\"]\nprefix = \"ok\"\n",
			want: []Problem{{"upstreams[0].name", `must match [a-z0-9_-]{1,32} (got "` + strings.Repeat("a", 33) + `")`}},
		},
		{
			name: "missing name",
			in:   up + "command = [\"x\"]\nprefix = \"ok\"\n",
			want: []Problem{{"upstreams[0].name", `must match [a-z0-9_-]{1,32} (got "")`}},
		},
		{
			name: "duplicate names",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nprefix = \"p1\"\n[[upstreams]]\nname = \"a\"\ncommand = [\"y\"]\nprefix = \"p2\"\n",
			want: []Problem{{"upstreams[1].name", `duplicates upstreams[0].name "a"`}},
		},
		{
			name: "duplicate prefixes",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nprefix = \"p\"\n[[upstreams]]\nname = \"b\"\ncommand = [\"y\"]\nprefix = \"p\"\n",
			want: []Problem{{"upstreams[1].prefix", "duplicates the prefix of upstreams[0]"}},
		},
		{
			name: "prefix defaulting to another's explicit prefix",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nprefix = \"b\"\n[[upstreams]]\nname = \"b\"\ncommand = [\"y\"]\n",
			want: []Problem{{"upstreams[1].prefix", "duplicates the prefix of upstreams[0]"}},
		},
		{
			name: "unknown key in second upstream",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\n[[upstreams]]\nname = \"b\"\ncommand = [\"y\"]\nversion = 3\n",
			want: []Problem{{"upstreams[1].version", "unknown key"}},
		},
		{
			name: "reserved prefix",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nprefix = \"symbi\"\n",
			want: []Problem{{"upstreams[0].prefix", `"symbi" is reserved for the built-in tools`}},
		},
		{
			name: "reserved prefix by name",
			in:   up + "name = \"symbi\"\ncommand = [\"x\"]\n",
			want: []Problem{{"upstreams[0].prefix", `"symbi" is reserved for the built-in tools`}},
		},
		{
			name: "bad prefix",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nprefix = \"A.B\"\n",
			want: []Problem{{"upstreams[0].prefix", `must match [a-z0-9_-]{1,32} or be empty (got "A.B")`}},
		},
		{
			name: "command and url",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nurl = \"http://h/mcp\"\n",
			want: []Problem{{"upstreams[0]", "has both command and url; choose one"}},
		},
		{
			name: "neither command nor url",
			in:   up + "name = \"a\"\nargs = [\"x\"]\n",
			want: []Problem{{"upstreams[0]", "needs command or url"}},
		},
		{
			name: "empty command",
			in:   up + "name = \"a\"\ncommand = []\n",
			want: []Problem{{"upstreams[0]", "needs command or url"}},
		},
		{
			name: "bad url scheme",
			in:   up + "name = \"a\"\nurl = \"ftp://h/mcp\"\n",
			want: []Problem{{"upstreams[0].url", "must be an http or https URL"}},
		},
		{
			name: "url without host",
			in:   up + "name = \"a\"\nurl = \"http:///mcp\"\n",
			want: []Problem{{"upstreams[0].url", "must be an http or https URL"}},
		},
		{
			name: "bad url transport",
			in:   up + "name = \"a\"\nurl = \"https://h/mcp\"\ntransport = \"websocket\"\n",
			want: []Problem{{"upstreams[0].transport", `must be "streamable" or "sse"`}},
		},
		{
			name: "stdio transport on url",
			in:   up + "name = \"a\"\nurl = \"https://h/mcp\"\ntransport = \"stdio\"\n",
			want: []Problem{{"upstreams[0].transport", `must be "streamable" or "sse"`}},
		},
		{
			name: "sse transport on command",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\ntransport = \"sse\"\n",
			want: []Problem{{"upstreams[0].transport", `a command upstream speaks "stdio"`}},
		},
		{
			name: "env and sandbox on url upstream",
			in:   up + "name = \"a\"\nurl = \"https://h/mcp\"\nenv = { K = \"v\" }\nsandbox = { tier = \"none\" }\n",
			want: []Problem{
				{"upstreams[0].env", "applies only to command upstreams"},
				{"upstreams[0].sandbox", "applies only to command upstreams"},
			},
		},
		{
			name: "headers on command upstream",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nheaders = { Authorization = \"Bearer x\" }\n",
			want: []Problem{{"upstreams[0].headers", "applies only to url upstreams"}},
		},
		{
			name: "negative timeout",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\ntimeout = \"-1s\"\n",
			want: []Problem{{"upstreams[0].timeout", "must not be negative"}},
		},
		{
			name: "bad tier",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nsandbox = { tier = \"kvm\", image = \"i\" }\n",
			want: []Problem{{"upstreams[0].sandbox.tier", "must be one of none, docker, gvisor, auto"}},
		},
		{
			name: "missing tier",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nsandbox = { image = \"i\" }\n",
			want: []Problem{{"upstreams[0].sandbox.tier", "is required (or set [sandbox] default_tier): one of none, docker, gvisor, auto"}},
		},
		{
			name: "missing image",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nsandbox = { tier = \"docker\" }\n",
			want: []Problem{{"upstreams[0].sandbox.image", `is required for tier "docker"`}},
		},
		{
			name: "negative sandbox limits",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\n[upstreams.sandbox]\ntier = \"none\"\ncpus = -1.0\npids = -2\n",
			want: []Problem{
				{"upstreams[0].sandbox.cpus", "must not be negative"},
				{"upstreams[0].sandbox.pids", "must not be negative"},
			},
		},
		{
			name: "bad schemapin mode and first_seen",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nschemapin = { mode = \"trust\", first_seen = \"later\" }\n",
			want: []Problem{
				{"upstreams[0].schemapin.mode", `must be "strict", "tofu" or "disabled"`},
				{"upstreams[0].schemapin.first_seen", `must be "approve" or "pending"`},
			},
		},
		{
			name: "strict without domain",
			in:   up + "name = \"a\"\ncommand = [\"x\"]\nschemapin = { mode = \"strict\" }\n",
			want: []Problem{{"upstreams[0].schemapin", "strict mode needs domain or discovery_file"}},
		},
		{
			name: "short token and missing identity",
			in:   "version = 1\n[[server.tokens]]\ntoken = \"short\"\n",
			want: []Problem{
				{"server.tokens[0].token", "must be at least 16 characters"},
				{"server.tokens[0].identity", "is required"},
			},
		},
		{
			name: "duplicate tokens",
			in:   "version = 1\n[[server.tokens]]\ntoken = \"0123456789abcdef\"\nidentity = \"a\"\n[[server.tokens]]\ntoken = \"env:SYMBI_SAME\"\nidentity = \"b\"\n",
			env:  map[string]string{"SYMBI_SAME": "0123456789abcdef"},
			want: []Problem{{"server.tokens[1].token", "duplicates another token"}},
		},
		{
			name: "env vars not set",
			in: `version = 1
[[server.tokens]]
token = "env:SYMBI_MISSING_TOKEN_VARIABLE"
identity = "ide"
[[upstreams]]
name = "a"
command = ["x"]
env = { B = "env:SYMBI_MISSING_B", A = "env:SYMBI_MISSING_A", C = "plain" }
sandbox = { tier = "none", env = { S = "env:SYMBI_MISSING_S" } }
[[upstreams]]
name = "b"
url = "https://h/mcp"
headers = { Authorization = "env:SYMBI_MISSING_H" }
`,
			want: []Problem{
				{"server.tokens[0].token", "environment variable SYMBI_MISSING_TOKEN_VARIABLE is not set"},
				{"upstreams[0].env.A", "environment variable SYMBI_MISSING_A is not set"},
				{"upstreams[0].env.B", "environment variable SYMBI_MISSING_B is not set"},
				{"upstreams[0].sandbox.env.S", "environment variable SYMBI_MISSING_S is not set"},
				{"upstreams[1].headers.Authorization", "environment variable SYMBI_MISSING_H is not set"},
			},
		},
		{
			name: "server addresses, size, fsync, default tier",
			in: `version = 1
[server]
listen = "localhost"
metrics_listen = "9090"
max_message_bytes = 100
[audit]
fsync = "always"
[sandbox]
default_tier = "vm"
`,
			want: []Problem{
				{"server.listen", "not a host:port address: address localhost: missing port in address"},
				{"server.metrics_listen", "not a host:port address: address 9090: missing port in address"},
				{"server.max_message_bytes", "must be at least 1024"},
				{"sandbox.default_tier", "must be one of none, docker, gvisor, auto"},
				{"audit.fsync", `must be "batch" or "every"`},
			},
		},
		{
			name: "audit http collector in clear off loopback",
			in:   "version = 1\n[audit]\nhttp = \"http://siem.example.com/ingest\"\n",
			want: []Problem{{"audit.http", "must use https unless the collector is on loopback: audit events would travel in clear"}},
		},
		{
			name: "audit http collector not a URL",
			in:   "version = 1\n[audit]\nhttp = \"siem:8088\"\n",
			want: []Problem{{"audit.http", "must be an https:// URL (or http:// to a loopback host)"}},
		},
		{
			name: "audit http headers without a collector",
			in:   "version = 1\n[audit]\nhttp_headers = { Authorization = \"x\" }\n",
			want: []Problem{{"audit.http_headers", "is set but audit.http is not"}},
		},
		{
			name: "audit http header secret not set",
			in:   "version = 1\n[audit]\nhttp = \"https://siem.example.com/ingest\"\nhttp_headers = { Authorization = \"env:SYMBI_NOT_SET_ANYWHERE\" }\n",
			want: []Problem{{"audit.http_headers.Authorization", "environment variable SYMBI_NOT_SET_ANYWHERE is not set"}},
		},
		{
			name: "client CA without server TLS",
			in:   "version = 1\n[server]\ntls_client_ca = \"ca.pem\"\n",
			want: []Problem{{"server.tls_client_ca", "needs server.tls_cert and server.tls_key (client certificates are checked in TLS)"}},
		},
		{
			name: "tls certificate without its key",
			in:   "version = 1\n[server]\ntls_cert = \"cert.pem\"\n",
			want: []Problem{{"server.tls_key", "is required with server.tls_cert"}},
		},
		{
			name: "tls key without its certificate",
			in:   "version = 1\n[server]\ntls_key = \"key.pem\"\n",
			want: []Problem{{"server.tls_cert", "is required with server.tls_key"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problems(t, tc.in, tc.env)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseAllProblemsTogether checks that one file with many mistakes reports every one
// of them, each with its key, rather than stopping at the first.
func TestParseAllProblemsTogether(t *testing.T) {
	in := `version = 2
[server]
listen = "nope"
[[server.tokens]]
token = "short"
[[upstreams]]
name = "UPPER"
prefix = "x"
command = ["a"]
url = "http://h/mcp"
[[upstreams]]
name = "b"
prefix = "x"
url = "gopher://h"
transport = "ws"
env = { K = "v" }
[[upstreams]]
name = "c"
prefix = "symbi"
command = ["c"]
headers = { H = "v" }
sandbox = { tier = "gvisor" }
schemapin = { mode = "strict" }
oops = true
`
	got := keys(problems(t, in, nil))
	want := []string{
		"upstreams[2].oops",
		"version",
		"server.listen",
		"server.tokens[0].token",
		"server.tokens[0].identity",
		"upstreams[0].name",
		"upstreams[0]",
		"upstreams[1].prefix",
		"upstreams[1].url",
		"upstreams[1].transport",
		"upstreams[1].env",
		"upstreams[2].prefix",
		"upstreams[2].headers",
		"upstreams[2].sandbox.image",
		"upstreams[2].schemapin",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem keys mismatch (-want +got):\n%s", diff)
	}
}

func TestParseDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		wantKey string
		wantMsg string // substring
	}{
		{"syntax error line", "version = 1\n\n\nlisten = = 3\n", "listen", "line 4"},
		{"bad table header", "version = 1\n[server x]\nlisten = \"x\"\n", "line 2", "table name"},
		{"bad duration", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\ntimeout = \"soon\"\n", "upstreams[0].timeout", `invalid duration "soon"`},
		{"bad shutdown duration", "version = 1\n[server]\n\nshutdown_timeout = \"10 parsecs\"\n", "server.shutdown_timeout", `unknown unit " parsecs"`},
		{"wrong type", "version = \"1\"\n", "version", "must be an integer (got a string)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problems(t, tc.in, nil)
			if len(got) != 1 {
				t.Fatalf("got %d problems, want 1: %v", len(got), got)
			}
			if tc.wantKey != "" && got[0].Key != tc.wantKey {
				t.Errorf("key = %q, want %q (%v)", got[0].Key, tc.wantKey, got[0])
			}
			if !strings.Contains(got[0].Msg, tc.wantMsg) {
				t.Errorf("msg = %q, want it to contain %q", got[0].Msg, tc.wantMsg)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{File: "f.toml", Problems: []Problem{{"a", "bad"}, {"b.c", "worse"}}}
	want := "config f.toml: 2 problem(s)\n  a: bad\n  b.c: worse"
	if diff := cmp.Diff(want, e.Error()); diff != "" {
		t.Errorf("Error() mismatch (-want +got):\n%s", diff)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(good)
	if err != nil {
		t.Fatalf("Load(good): %v", err)
	}
	if len(c.Upstreams) != 1 || c.Upstreams[0].Name != "a" {
		t.Errorf("Load(good) upstreams = %+v", c.Upstreams)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	var ce *Error
	if err == nil || errors.As(err, &ce) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want a wrapped os.ErrNotExist that is not an *Error", err)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("version = 9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if !errors.As(err, &ce) || ce.File != bad || len(ce.Problems) != 1 || ce.Problems[0].Key != "version" {
		t.Errorf("Load(bad) = %v, want *Error naming %s with one version problem", err, bad)
	}
}

func TestLoadResolvesRealEnvironment(t *testing.T) {
	t.Setenv("SYMBI_CONFIG_TEST_TOKEN", "real-env-token-0123456789")
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte("version = 1\n[[server.tokens]]\ntoken = \"env:SYMBI_CONFIG_TEST_TOKEN\"\nidentity = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Server.Tokens[0].Token; got != "real-env-token-0123456789" {
		t.Errorf("token = %q, want the environment's value", got)
	}
}

func TestRedacted(t *testing.T) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("full.toml", data, env(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redacted()

	var gotTokens []string
	for _, tok := range r.Server.Tokens {
		gotTokens = append(gotTokens, tok.Token)
	}
	if diff := cmp.Diff([]string{"REDACTED", "REDACTED"}, gotTokens); diff != "" {
		t.Errorf("redacted tokens (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"API_KEY": "REDACTED", "MODE": "REDACTED"}, r.Upstreams[0].Env); diff != "" {
		t.Errorf("redacted env (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"Authorization": "REDACTED"}, r.Upstreams[1].Headers); diff != "" {
		t.Errorf("redacted headers (-want +got):\n%s", diff)
	}
	if r.Server.Tokens[0].Identity != "ide" || r.Upstreams[0].Name != "everything" || r.Upstreams[1].URL != c.Upstreams[1].URL {
		t.Errorf("Redacted changed non-secret fields: %+v", r)
	}

	// The original is untouched.
	if c.Server.Tokens[0].Token != "token-from-env-0123456789" ||
		c.Upstreams[0].Env["API_KEY"] != "key-from-env" ||
		c.Upstreams[1].Headers["Authorization"] != "Bearer remote-secret" {
		t.Errorf("Redacted modified the original config: %+v", c)
	}
}

func TestRedactedSandboxEnv(t *testing.T) {
	c, err := Parse("t.toml", []byte(`version = 1
[[upstreams]]
name = "a"
command = ["x"]
sandbox = { tier = "none", env = { DB_PASSWORD = "env:SYMBI_TEST_KEY" } }
`), env(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redacted()
	if got := r.Upstreams[0].Sandbox.Env["DB_PASSWORD"]; got != "REDACTED" {
		t.Error("Redacted leaves upstreams[].sandbox.env values (resolved env: secrets) in clear; got " + got)
	}
	if c.Upstreams[0].Sandbox.Env["DB_PASSWORD"] != "key-from-env" {
		t.Errorf("Redacted modified the original sandbox env")
	}
}

func TestRedactedNil(t *testing.T) {
	r := Default().Redacted()
	if len(r.Server.Tokens) != 0 {
		t.Errorf("tokens = %v", r.Server.Tokens)
	}
}

// TestUnsetEnvReportedOnce: an unset env: variable is one problem, not also a complaint
// about the unresolved "env:NAME" text being a short token.
func TestUnsetEnvReportedOnce(t *testing.T) {
	got := problems(t, "version = 1\n[[server.tokens]]\ntoken = \"env:TOK\"\nidentity = \"x\"\n", nil)
	want := []Problem{{"server.tokens[0].token", "environment variable TOK is not set"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error("an unset env: token is also reported as shorter than 16 characters (-want +got):\n" + diff)
	}
}

// TestDecodeErrorNamesKey: a value of the wrong type or a bad duration is reported with
// the key it belongs to, as the design asks of every problem.
func TestDecodeErrorNamesKey(t *testing.T) {
	var bugs []string
	for _, tc := range []struct{ in, key string }{
		{"version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\ntimeout = \"soon\"\n", "timeout"},
		{"version = \"1\"\n", "version"},
	} {
		got := problems(t, tc.in, nil)
		if !strings.Contains(got[0].Key, tc.key) {
			bugs = append(bugs, fmt.Sprintf("%q reported under key %q, not %q", got[0].Msg, got[0].Key, tc.key))
		}
	}
	if len(bugs) > 0 {
		t.Error("decode errors are not reported under their key: " + strings.Join(bugs, "; "))
	}
}

// TestShutdownTimeoutNegative: a negative shutdown_timeout is a mistake like a negative
// upstream timeout.
func TestShutdownTimeoutNegative(t *testing.T) {
	c, err := Parse("t.toml", []byte("version = 1\n[server]\nshutdown_timeout = \"-5s\"\n"), env(nil))
	if err == nil {
		t.Errorf("negative server.shutdown_timeout accepted (%v)", c.Server.ShutdownTimeout)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Problems[0].Key != "server.shutdown_timeout" {
		t.Errorf("err = %v, want a problem for server.shutdown_timeout", err)
	}
}

// TestPolicyEvalTimeout: [policy] eval_timeout is read as a duration; a negative one is
// refused with its key.
func TestPolicyEvalTimeout(t *testing.T) {
	c, err := Parse("t.toml", []byte("version = 1\n[policy]\neval_timeout = \"250ms\"\n"), env(nil))
	if err != nil || c.Policy.EvalTimeout.Duration != 250*time.Millisecond {
		t.Errorf("eval_timeout = %v (%v), want 250ms", c.Policy.EvalTimeout, err)
	}
	_, err = Parse("t.toml", []byte("version = 1\n[policy]\neval_timeout = \"-1s\"\n"), env(nil))
	var ce *Error
	if !errors.As(err, &ce) || ce.Problems[0].Key != "policy.eval_timeout" {
		t.Errorf("err = %v, want a problem for policy.eval_timeout", err)
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.Duration != 90*time.Second {
		t.Errorf("UnmarshalText(1m30s) = %v, %v", d, err)
	}
	if err := d.UnmarshalText([]byte("90")); err == nil {
		t.Errorf("UnmarshalText(90) succeeded; a unit is required")
	}
	b, err := Duration{90 * time.Second}.MarshalText()
	if err != nil || string(b) != "1m30s" {
		t.Errorf("MarshalText = %q, %v", b, err)
	}
}

func TestExampleConfig(t *testing.T) {
	const path = "../../configs/symbi.example.toml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read example: %v", err)
	}
	c, err := Parse(path, data, env(map[string]string{"SYMBI_TOKEN": "example-token-0123456789"}))
	if err != nil {
		t.Fatalf("the shipped example does not validate: %v", err)
	}
	if len(c.Server.Tokens) != 1 || c.Server.Tokens[0].Token != "example-token-0123456789" {
		t.Errorf("example tokens = %+v, want one resolved from SYMBI_TOKEN", c.Server.Tokens)
	}
	if len(c.Upstreams) == 0 {
		t.Errorf("example has no upstreams")
	}
	// Without SYMBI_TOKEN set, the example names the missing variable.
	// (Every problem is about that key; see TestUnsetEnvReportedOnce for why there may be two.)
	got := problems(t, string(data), nil)
	want := Problem{"server.tokens[0].token", "environment variable SYMBI_TOKEN is not set"}
	if got[0] != want {
		t.Errorf("example without env: first problem %v, want %v", got[0], want)
	}
	for _, p := range got {
		if p.Key != want.Key {
			t.Errorf("example without env: unexpected problem %v", p)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"two empty prefixes", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nprefix = \"\"\n[[upstreams]]\nname = \"b\"\ncommand = [\"y\"]\nprefix = \"\"\n"},
		{"stdio transport on command", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\ntransport = \"stdio\"\n"},
		{"streamable transport on url", "version = 1\n[[upstreams]]\nname = \"a\"\nurl = \"https://h:8443/mcp\"\ntransport = \"streamable\"\n"},
		{"tier none needs no image", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nsandbox = { tier = \"none\" }\n"},
		{"strict with discovery_file", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nschemapin = { mode = \"strict\", discovery_file = \"d.json\" }\n"},
		{"disabled schemapin", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nschemapin = { mode = \"disabled\" }\n"},
		{"name of 32 characters", "version = 1\n[[upstreams]]\nname = \"" + strings.Repeat("a", 32) + "\"\ncommand = [\"x\"]\n"},
		{"empty env value is literal", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nenv = { A = \"\", B = \"environment\" }\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse("ok.toml", []byte(tc.in), env(nil)); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

// TestExampleConfigCommentedExamples uncomments the example's commented-out key lines
// (sandbox, schemapin, URL upstreams, a second token) and checks that they validate too,
// so the documentation cannot drift from the decoder.
func TestExampleConfigCommentedExamples(t *testing.T) {
	data, err := os.ReadFile("../../configs/symbi.example.toml")
	if err != nil {
		t.Fatalf("read example: %v", err)
	}
	keyLine := regexp.MustCompile(`^# ([a-z_]+ = |\[\[)`)
	var out []string
	uncommented := 0
	for _, line := range strings.Split(string(data), "\n") {
		// Alternatives to an active line of the same key would be duplicates.
		if keyLine.MatchString(line) && !strings.HasPrefix(line, "# env = ") && !strings.HasPrefix(line, "# dir = ") {
			line = strings.TrimPrefix(line, "# ")
			uncommented++
		}
		out = append(out, line)
	}
	if uncommented < 10 {
		t.Fatalf("only %d commented key lines found; did the example's layout change?", uncommented)
	}
	c, err := Parse("example-uncommented.toml", []byte(strings.Join(out, "\n")), env(map[string]string{
		"SYMBI_TOKEN": "example-token-0123456789", "SYMBI_CI_TOKEN": "example-ci-token-0123456789",
		"EVERYTHING_KEY": "k", "EMBEDDINGS_KEY": "e", "REMOTE_TOKEN": "Bearer r", "SIEM_TOKEN": "Splunk s",
	}))
	if err != nil {
		t.Fatalf("the example's commented-out keys do not validate: %v", err)
	}
	var names []string
	for _, u := range c.Upstreams {
		names = append(names, u.Name)
	}
	if diff := cmp.Diff([]string{"everything", "remote", "legacy"}, names); diff != "" {
		t.Errorf("upstreams (-want +got):\n%s", diff)
	}
	if s := c.Upstreams[0].Sandbox; s == nil || s.Tier != "gvisor" || s.Env["API_KEY"] != "k" {
		t.Errorf("everything sandbox = %+v", s)
	}
	if p := c.Upstreams[0].SchemaPin; p == nil || p.Mode != "strict" || p.FirstSeen != "pending" {
		t.Errorf("everything schemapin = %+v", p)
	}
}

// TestDefaultTierNeedsImage: with [sandbox] default_tier = "docker", a command upstream
// without a sandbox image cannot start (cmd/symbi/wire.go fails at start-up), so
// validation should say so; and an upstream sandbox table without tier should inherit the
// default tier instead of being rejected.
func TestDefaultTierNeedsImage(t *testing.T) {
	var bugs []string
	_, err := Parse("t.toml", []byte("version = 1\n[sandbox]\ndefault_tier = \"docker\"\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\n"), env(nil))
	if err == nil {
		bugs = append(bugs, "default_tier docker with an image-less command upstream validates but cannot start")
	}
	_, err = Parse("t.toml", []byte("version = 1\n[sandbox]\ndefault_tier = \"docker\"\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nsandbox = { image = \"i\" }\n"), env(nil))
	if err != nil {
		bugs = append(bugs, "a sandbox table without tier does not inherit default_tier: "+err.Error())
	}
	if len(bugs) > 0 {
		t.Error("" + strings.Join(bugs, "; "))
	}
}

// TestMountsValidated: a malformed sandbox mount is a configuration problem reported by
// validation, not a start-up failure (cmd/symbi/wire.go parses host:container[:ro|rw]).
func TestMountsValidated(t *testing.T) {
	_, err := Parse("t.toml", []byte("version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nsandbox = { tier = \"docker\", image = \"i\", mounts = [\"/only-one-part\", \"/a:/b:rx\"] }\n"), env(nil))
	if err == nil {
		t.Errorf("malformed upstreams[].sandbox.mounts entries validate; they fail only at start-up")
	}
}

func TestAuditHTTPCollector(t *testing.T) {
	for _, tc := range []struct{ url string }{
		{"https://siem.example.com/services/collector"},
		{"http://127.0.0.1:8088/ingest"},
		{"http://localhost:8088/ingest"},
		{"http://[::1]:8088/ingest"},
	} {
		c, err := Parse("t.toml", []byte(fmt.Sprintf("version = 1\n[audit]\nhttp = %q\nhttp_headers = { Authorization = \"env:SYMBI_TEST_KEY\" }\n", tc.url)), env(testEnv))
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if got := c.Audit.HTTPHeaders["Authorization"]; got != "key-from-env" {
			t.Errorf("%s: header resolved to %q", tc.url, got)
		}
		if got := c.Redacted().Audit.HTTPHeaders["Authorization"]; got != "REDACTED" {
			t.Errorf("%s: Redacted shows the collector's header: %q", tc.url, got)
		}
	}
}

// TestSandboxIsolationGivenUp: host or container networking, a root user and mounts of
// symbi's own state or of credentials are problems with their keys, unless (for the
// first three) the upstream opts in with sandbox.unsafe.
func TestSandboxIsolationGivenUp(t *testing.T) {
	const head = "version = 1\n[server]\ndata_dir = \"/srv/symbi\"\n[audit]\ndir = \"/var/log/symbi-audit\"\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\n"
	for _, tc := range []struct {
		name    string
		sandbox string
		want    []string // keys with a problem; nil = valid
	}{
		{"defaults", `{ tier = "docker", image = "i" }`, nil},
		{"host network", `{ tier = "docker", image = "i", network = "host" }`, []string{"upstreams[0].sandbox.network"}},
		{"host network opted in", `{ tier = "docker", image = "i", network = "host", unsafe = ["host_network"] }`, nil},
		{"container network", `{ tier = "gvisor", image = "i", network = "container:db" }`, []string{"upstreams[0].sandbox.network"}},
		{"container network opted in", `{ tier = "gvisor", image = "i", network = "container:db", unsafe = ["container_network"] }`, nil},
		{"root", `{ tier = "docker", image = "i", user = "0:0" }`, []string{"upstreams[0].sandbox.user"}},
		{"root by name", `{ tier = "docker", image = "i", user = "root" }`, []string{"upstreams[0].sandbox.user"}},
		{"root opted in", `{ tier = "docker", image = "i", user = "0:0", unsafe = ["root_user"] }`, nil},
		{"unknown opt-in", `{ tier = "docker", image = "i", unsafe = ["host_network", "everything"] }`, []string{"upstreams[0].sandbox.unsafe[1]"}},
		{"tier none has no container", `{ tier = "none", network = "host", user = "0" }`, nil},
		{"data dir", `{ tier = "docker", image = "i", mounts = ["/srv/symbi/keys:/k"] }`, []string{"upstreams[0].sandbox.mounts[0]"}},
		{"audit dir", `{ tier = "docker", image = "i", mounts = ["/var/log/symbi-audit:/a"] }`, []string{"upstreams[0].sandbox.mounts[0]"}},
		{"parent of data dir", `{ tier = "docker", image = "i", mounts = ["/srv:/s"] }`, []string{"upstreams[0].sandbox.mounts[0]"}},
		{"runtime dirs and homes", `{ tier = "docker", image = "i", mounts = ["/run/user/1000:/r", "/run/docker:/d", "/home:/h", "/home/me/.ssh:/s", "/home/me/notes:/n"] }`,
			[]string{"upstreams[0].sandbox.mounts[0]", "upstreams[0].sandbox.mounts[1]", "upstreams[0].sandbox.mounts[2]", "upstreams[0].sandbox.mounts[3]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := head + "sandbox = " + tc.sandbox + "\n"
			if tc.want == nil {
				if _, err := Parse("t.toml", []byte(in), env(nil)); err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			var got []string
			for _, p := range problems(t, in, nil) {
				got = append(got, p.Key)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problem keys (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSensitivityVocabulary: configuration accepts exactly the sensitivity levels the risk
// assessment knows (it once accepted "restricted", which the assessment called unknown).
func TestSensitivityVocabulary(t *testing.T) {
	const head = "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\n"
	for _, l := range sandbox.Sensitivities {
		in := head + fmt.Sprintf("sandbox = { tier = \"none\", sensitivity = %q }\n", l)
		if _, err := Parse("t.toml", []byte(in), env(nil)); err != nil {
			t.Errorf("sensitivity %q: %v", l, err)
		}
		for _, r := range sandbox.Assess(sandbox.Needs{Sensitivity: l}).Reasons {
			if strings.Contains(r, "unknown") {
				t.Errorf("sensitivity %q accepted by configuration but unknown to the assessment: %s", l, r)
			}
		}
	}
	got := problems(t, head+"sandbox = { tier = \"none\", sensitivity = \"secret\" }\n", nil)
	want := []Problem{{"upstreams[0].sandbox.sensitivity", `sensitivity "secret": want one of public, internal, confidential, restricted`}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

// TestHTTPLimitsAndOrigins: the HTTP hardening keys are validated with their keys named,
// and the in-flight limits default to multiples of max_message_bytes.
func TestHTTPLimitsAndOrigins(t *testing.T) {
	got := problems(t, `version = 1
[server]
max_message_bytes = 2048
allowed_origins = ["https://ok.example", "*", "https://*.example.com", "ftp://x", "https://a.example/path", "https://u:p@a.example", "null", "https://a.example:99999", "https://b.example?q=1"]
session_idle_timeout = "10ms"
max_sessions = -1
max_inflight_bytes_per_identity = 1024
max_inflight_bytes = 512
`, nil)
	if diff := cmp.Diff([]string{
		"server.allowed_origins[1]", "server.allowed_origins[2]", "server.allowed_origins[3]", "server.allowed_origins[4]",
		"server.allowed_origins[5]", "server.allowed_origins[6]", "server.allowed_origins[7]", "server.allowed_origins[8]",
		"server.session_idle_timeout", "server.max_sessions", "server.max_inflight_bytes_per_identity", "server.max_inflight_bytes",
	}, keys(got)); diff != "" {
		t.Errorf("problem keys (-want +got):\n%s\n%v", diff, got)
	}
	c, err := Parse("t.toml", []byte("version = 1\n[server]\nmax_message_bytes = 1048576\nallowed_origins = [\"http://127.0.0.1:6274\"]\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.MaxInflightBytesPerIdentity != 4<<20 || c.Server.MaxInflightBytes != 16<<20 {
		t.Errorf("in-flight defaults = %d / %d, want 4 MiB / 16 MiB", c.Server.MaxInflightBytesPerIdentity, c.Server.MaxInflightBytes)
	}
}
