// Package config decodes symbi's one versioned TOML configuration file. Decoding is strict:
// unknown keys are errors that name them, every validation problem is reported together
// with its key, and values written "env:NAME" are resolved from the environment. It only
// decodes and validates; translating the result into each package's options is the
// caller's job.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/symbi-dev/symbi/sandbox"
)

// CurrentVersion is the only configuration version this build understands.
const CurrentVersion = 1

// Config is the whole file.
type Config struct {
	Version   int        `toml:"version"`
	Server    Server     `toml:"server"`
	Upstreams []Upstream `toml:"upstreams"`
	Policy    Policy     `toml:"policy"`
	Audit     Audit      `toml:"audit"`
	Sandbox   Sandbox    `toml:"sandbox"`
	Scheduler Scheduler  `toml:"scheduler"`
	Agents    []Agent    `toml:"agents"`
	AgentsDir string     `toml:"agents_dir"` // *.toml files of [[agents]], hot-reloaded
	Context   Context    `toml:"context"`
	Bus       Bus        `toml:"bus"`
	OAuth     OAuth      `toml:"oauth"`
	State     State      `toml:"state"`
}

// Server configures the listeners and the state directory.
type Server struct {
	Listen          string   `toml:"listen"`
	MetricsListen   string   `toml:"metrics_listen"`
	DataDir         string   `toml:"data_dir"`
	Tokens          []Token  `toml:"tokens"`
	MaxMessageBytes int64    `toml:"max_message_bytes"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// TLSCert and TLSKey are PEM files (certificate chain, private key) for HTTPS on
	// Listen; both or neither.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// TLSClientCA is a PEM bundle of CAs for client certificates (mutual TLS): a client
	// that presents a certificate they verify is authenticated as its URI SAN or common
	// name. Needs TLSCert.
	TLSClientCA string `toml:"tls_client_ca"`
	// InputTimeout bounds how long a call waits for the client's answer when the
	// upstream asked for input mid-call and symbi bridges the question to a 2026-07-28
	// client; then the call is cancelled and audited as abandoned. 0 = 30s.
	InputTimeout Duration `toml:"input_timeout"`
	// MaxPendingInputs and MaxPendingInputsPerIdentity bound such calls pending at
	// once, in total and per identity; beyond them a new one is refused with a
	// retryable error. 0 = 256 and 16.
	MaxPendingInputs            int `toml:"max_pending_inputs"`
	MaxPendingInputsPerIdentity int `toml:"max_pending_inputs_per_identity"`
	// AllowedOrigins are browser origins ("https://app.example.com") that may use symbi
	// besides the same origin; a request with any other Origin header is refused (403).
	AllowedOrigins []string `toml:"allowed_origins"`
	// SessionIdleTimeout closes a stateful HTTP session with no request open for so long.
	SessionIdleTimeout Duration `toml:"session_idle_timeout"`
	// MaxSessions caps open client sessions; beyond it a new one is refused (503).
	MaxSessions int `toml:"max_sessions"`
	// MaxInflightBytes and MaxInflightBytesPerIdentity bound the request bytes being
	// handled at once, in all and per identity; beyond them a request is refused with
	// 503 or 429 and Retry-After.
	MaxInflightBytes            int64 `toml:"max_inflight_bytes"`
	MaxInflightBytesPerIdentity int64 `toml:"max_inflight_bytes_per_identity"`
}

// Token maps a bearer token to a client identity.
type Token struct {
	Token    string `toml:"token"`
	Identity string `toml:"identity"`
}

// Upstream is one third-party MCP server behind symbi.
type Upstream struct {
	Name      string            `toml:"name"`
	Command   []string          `toml:"command"`
	Args      []string          `toml:"args"`
	Env       map[string]string `toml:"env"`
	Dir       string            `toml:"dir"`
	URL       string            `toml:"url"`
	Transport string            `toml:"transport"` // "" (stdio or streamable by URL), "streamable", "sse"
	Headers   map[string]string `toml:"headers"`
	Prefix    *string           `toml:"prefix"` // nil: the upstream's name; "": names unchanged
	Timeout   Duration          `toml:"timeout"`
	Disabled  bool              `toml:"disabled"`
	Sandbox   *UpstreamSandbox  `toml:"sandbox"`
	SchemaPin *SchemaPin        `toml:"schemapin"`
	// TaskTools lists upstream tool names (path.Match globs; "*" = all) symbi runs as
	// MCP tasks for clients that negotiated the tasks extension; TaskRequired, those of
	// them a client must call as a task.
	TaskTools    []string `toml:"task_tools"`
	TaskRequired []string `toml:"task_required"`
}

// UpstreamSandbox selects the sandbox tier an upstream's command runs in.
type UpstreamSandbox struct {
	Tier    string            `toml:"tier"`
	Image   string            `toml:"image"`
	Network string            `toml:"network"`
	Memory  string            `toml:"memory"`
	CPUs    float64           `toml:"cpus"`
	Pids    int64             `toml:"pids"`
	Timeout Duration          `toml:"timeout"`
	Mounts  []string          `toml:"mounts"` // "host:container[:rw]"
	Env     map[string]string `toml:"env"`
	User    string            `toml:"user"` // numeric "uid[:gid]"; 0 needs unsafe = ["root_user"]
	// Unsafe lists isolation given up on purpose: "host_network" (network = "host"),
	// "container_network" (network = "container:NAME"), "root_user" (uid or gid 0).
	// Each start of such an upstream logs a warning.
	Unsafe []string `toml:"unsafe"`
	// Declared needs, for tier = "auto" (the risk assessment) and `symbi doctor`.
	Sensitivity  string   `toml:"sensitivity"`   // public, internal (default), confidential, restricted
	ExternalAPIs []string `toml:"external_apis"` // third-party services the server calls
}

// SchemaPin configures tool-definition verification for one upstream.
type SchemaPin struct {
	Mode          string `toml:"mode"` // strict, tofu (default), disabled
	Domain        string `toml:"domain"`
	DiscoveryFile string `toml:"discovery_file"`
	BundleFile    string `toml:"bundle_file"` // a signed v1.4 trust bundle holding the domain's key
	Manifest      string `toml:"manifest"`    // a file, or an https:// URL fetched at start-up
	FirstSeen     string `toml:"first_seen"`  // approve (default) or pending
}

// Policy configures the policy engine.
type Policy struct {
	Dir string `toml:"dir"`
	// EvalTimeout bounds one policy evaluation; one that takes longer denies. 0: 1s.
	EvalTimeout Duration `toml:"eval_timeout"`
}

// Audit configures the audit trail.
type Audit struct {
	Dir           string `toml:"dir"`
	Fsync         string `toml:"fsync"` // "batch" (default) or "every"
	FullArguments bool   `toml:"full_arguments"`
	// SignEvery signs at least every Nth entry (and the last of each write batch); the
	// entries between are covered by the hash chain and the next signature. 1 (the
	// default) signs every entry; larger values trade per-entry signatures for throughput.
	SignEvery int `toml:"sign_every"`
	// Syslog also sends every event to a syslog collector (RFC 5424), "udp://host:514"
	// or "tcp://host:601".
	Syslog string `toml:"syslog"`
	// HTTP also ships every event to an HTTP collector (a SIEM's ingest endpoint) as
	// NDJSON batches: an https URL, or http to a loopback host. HTTPHeaders go with every
	// request; values may be "env:NAME".
	HTTP        string            `toml:"http"`
	HTTPHeaders map[string]string `toml:"http_headers"`
	// OnFailure is what symbi does with requests while the trail cannot record them
	// (a write failed): "refuse" (the default) or "continue" (served, counted, logged).
	OnFailure string `toml:"on_failure"`
	// KeyFile is the trail's Ed25519 signing key; default <data_dir>/keys/audit_ed25519.key,
	// outside the trail. Its public half is written beside it with ".pub" appended.
	KeyFile string `toml:"key_file"`
}

// Sandbox holds defaults for upstreams that do not choose a tier.
type Sandbox struct {
	DefaultTier string `toml:"default_tier"`
}

// Duration is a time.Duration written as a Go duration string ("60s").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("parse duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults, in one place.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultDataDir         = "./symbi-data"
	DefaultTimeout         = 60 * time.Second
	DefaultMaxMessageBytes = 4 << 20
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultSessionIdleTimeout and DefaultMaxSessions bound HTTP sessions; the in-flight
	// byte limits default to multiples of max_message_bytes (DefaultInflightMessages,
	// DefaultInflightMessagesPerIdentity).
	DefaultSessionIdleTimeout          = 30 * time.Minute
	DefaultMaxSessions                 = 1000
	DefaultInflightMessages            = 16
	DefaultInflightMessagesPerIdentity = 4
	MaxNameLen                         = 32
)

var nameRE = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)

// Problem is one validation error, tied to its key.
type Problem struct {
	Key string
	Msg string
}

func (p Problem) String() string { return p.Key + ": " + p.Msg }

// Error lists every problem found in a file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: %d problem(s)", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load reads, decodes, resolves and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve config path: %w", err)
	}
	c, err := Parse(abs, data, os.LookupEnv)
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = path // as the user wrote it
	}
	return c, err
}

// Default is the configuration used when no file is given: no upstreams, local state.
func Default() *Config {
	c := &Config{Version: CurrentVersion}
	c.applyDefaults()
	return c
}

// Parse decodes data (named file in messages), resolving env: values with lookup.
// Relative paths in it are resolved against the directory of file (see ResolvePaths).
// Every problem is reported, each with its key: unknown keys and values of the wrong type
// do not stop the decoding of the rest, and what could be decoded is validated too. Only a
// TOML syntax error, past which the file cannot be read, is reported alone.
func Parse(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var c Config
	probs, ok := decodeAll(data, &c)
	if !ok {
		return nil, &Error{File: file, Problems: probs}
	}
	c.applyDefaults()
	bad := map[string]bool{} // keys with a problem already: one problem per key
	for _, p := range probs {
		bad[p.Key] = true
	}
	envProbs := c.resolveEnv(lookup)
	for _, p := range envProbs {
		bad[p.Key] = true
	}
	probs = append(probs, envProbs...)
	c.ResolvePaths(filepath.Dir(file))
	for _, p := range c.validate() {
		if !covered(bad, p.Key) {
			probs = append(probs, p)
		}
	}
	if len(probs) > 0 {
		return nil, &Error{File: file, Problems: probs}
	}
	return &c, nil
}

// covered reports whether a validation problem for key follows from a problem already
// reported for key itself, a key inside it or the key it is in (a command of the wrong
// type also leaves its upstream without a command).
func covered(bad map[string]bool, key string) bool {
	for k := range bad {
		if k == key || inside(k, key) || inside(key, k) {
			return true
		}
	}
	return false
}

// inside reports whether key is a key within outer (outer.x, outer[0]).
func inside(key, outer string) bool {
	rest, ok := strings.CutPrefix(key, outer)
	return ok && rest != "" && (rest[0] == '.' || rest[0] == '[')
}

var lastKeyRE = regexp.MustCompile(`last key "([^"]+)"`)

// decodeProblem names the key a decoding error is about, where the decoder says.
func decodeProblem(err error) Problem {
	var perr toml.ParseError
	if errors.As(err, &perr) {
		key := perr.LastKey
		if key == "" {
			key = fmt.Sprintf("line %d", perr.Position.Line)
		}
		msg := perr.Message
		if perr.Position.Line > 0 {
			msg = fmt.Sprintf("%s (line %d)", msg, perr.Position.Line)
		}
		return Problem{Key: key, Msg: msg}
	}
	if m := lastKeyRE.FindStringSubmatch(err.Error()); m != nil {
		return Problem{Key: m[1], Msg: err.Error()}
	}
	return Problem{Key: "(file)", Msg: err.Error()}
}

func (c *Config) applyDefaults() {
	if c.Server.Listen == "" {
		c.Server.Listen = DefaultListen
	}
	if c.Server.DataDir == "" {
		c.Server.DataDir = DefaultDataDir
	}
	if c.Server.MaxMessageBytes == 0 {
		c.Server.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Server.ShutdownTimeout.Duration == 0 {
		c.Server.ShutdownTimeout.Duration = DefaultShutdownTimeout
	}
	if c.Server.SessionIdleTimeout.Duration == 0 {
		c.Server.SessionIdleTimeout.Duration = DefaultSessionIdleTimeout
	}
	if c.Server.MaxSessions == 0 {
		c.Server.MaxSessions = DefaultMaxSessions
	}
	if c.Server.MaxInflightBytesPerIdentity == 0 {
		c.Server.MaxInflightBytesPerIdentity = DefaultInflightMessagesPerIdentity * c.Server.MaxMessageBytes
	}
	if c.Server.MaxInflightBytes == 0 {
		c.Server.MaxInflightBytes = DefaultInflightMessages * c.Server.MaxMessageBytes
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Timeout.Duration == 0 {
			u.Timeout.Duration = DefaultTimeout
		}
		if u.Prefix == nil {
			p := u.Name
			u.Prefix = &p
		}
	}
}

// secretRef resolves "env:NAME" values.
func secretRef(key, v string, lookup func(string) (string, bool)) (string, *Problem) {
	name, ok := strings.CutPrefix(v, "env:")
	if !ok {
		return v, nil
	}
	val, found := lookup(name)
	if !found {
		return "", &Problem{Key: key, Msg: fmt.Sprintf("environment variable %s is not set", name)}
	}
	return val, nil
}

func (c *Config) resolveEnv(lookup func(string) (string, bool)) []Problem {
	var probs []Problem
	res := func(key string, p *string) {
		v, prob := secretRef(key, *p, lookup)
		if prob != nil {
			probs = append(probs, *prob)
			return
		}
		*p = v
	}
	resMap := func(key string, m map[string]string) {
		for _, k := range sortedKeys(m) {
			v := m[k]
			res(key+"."+k, &v)
			m[k] = v
		}
	}
	for i := range c.Server.Tokens {
		res(fmt.Sprintf("server.tokens[%d].token", i), &c.Server.Tokens[i].Token)
	}
	resMap("audit.http_headers", c.Audit.HTTPHeaders)
	res("context.embedder_key", &c.Context.EmbedderKey)
	if name, ok := strings.CutPrefix(c.Context.Store, "env:"); ok {
		// An empty URL would silently mean the local SQLite store instead of the database.
		if v, found := lookup(name); found && v == "" {
			probs = append(probs, Problem{Key: "context.store", Msg: fmt.Sprintf(`environment variable %s is empty (for the SQLite store write store = "")`, name)})
		}
	}
	res("context.store", &c.Context.Store)
	if name, ok := strings.CutPrefix(c.State.Store, "env:"); ok {
		if v, found := lookup(name); found && v == "" {
			probs = append(probs, Problem{Key: "state.store", Msg: fmt.Sprintf(`environment variable %s is empty (for the SQLite state write store = "")`, name)})
		}
	}
	res("state.store", &c.State.Store)
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		resMap(fmt.Sprintf("upstreams[%d].env", i), u.Env)
		resMap(fmt.Sprintf("upstreams[%d].headers", i), u.Headers)
		if u.Sandbox != nil {
			resMap(fmt.Sprintf("upstreams[%d].sandbox.env", i), u.Sandbox.Env)
		}
	}
	return probs
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	tiers      = []string{"none", "docker", "gvisor", "auto"}
	pinModes   = []string{"", "strict", "tofu", "disabled"}
	firstSeens = []string{"", "approve", "pending"}
)

func (c *Config) validate() []Problem {
	var probs []Problem
	add := func(key, format string, args ...any) {
		probs = append(probs, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Version != CurrentVersion {
		add("version", "must be %d (got %d)", CurrentVersion, c.Version)
	}
	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		add("server.listen", "not a host:port address: %v", err)
	}
	if c.Server.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.Server.MetricsListen); err != nil {
			add("server.metrics_listen", "not a host:port address: %v", err)
		}
	}
	switch {
	case c.Server.TLSCert != "" && c.Server.TLSKey == "":
		add("server.tls_key", "is required with server.tls_cert")
	case c.Server.TLSKey != "" && c.Server.TLSCert == "":
		add("server.tls_cert", "is required with server.tls_key")
	}
	if c.Server.TLSClientCA != "" && c.Server.TLSCert == "" {
		add("server.tls_client_ca", "needs server.tls_cert and server.tls_key (client certificates are checked in TLS)")
	}
	if c.Server.ShutdownTimeout.Duration < 0 {
		add("server.shutdown_timeout", "must not be negative")
	}
	if c.Policy.EvalTimeout.Duration < 0 {
		add("policy.eval_timeout", "must not be negative")
	}
	if c.Server.InputTimeout.Duration < 0 {
		add("server.input_timeout", "must not be negative")
	}
	if c.Server.MaxPendingInputs < 0 {
		add("server.max_pending_inputs", "must not be negative")
	}
	if c.Server.MaxPendingInputsPerIdentity < 0 {
		add("server.max_pending_inputs_per_identity", "must not be negative")
	}
	if n, max := c.Server.MaxPendingInputsPerIdentity, c.Server.MaxPendingInputs; n > 0 && max > 0 && n > max {
		add("server.max_pending_inputs_per_identity", "must not exceed server.max_pending_inputs (%d)", max)
	}
	if c.Server.MaxMessageBytes < 1024 {
		add("server.max_message_bytes", "must be at least 1024")
	}
	for i, o := range c.Server.AllowedOrigins {
		if msg := checkOrigin(o); msg != "" {
			add(fmt.Sprintf("server.allowed_origins[%d]", i), "%s (got %q)", msg, o)
		}
	}
	if c.Server.SessionIdleTimeout.Duration < time.Second {
		add("server.session_idle_timeout", "must be at least 1s")
	}
	if c.Server.MaxSessions < 1 {
		add("server.max_sessions", "must be at least 1")
	}
	if c.Server.MaxInflightBytesPerIdentity < c.Server.MaxMessageBytes {
		add("server.max_inflight_bytes_per_identity", "must be at least server.max_message_bytes (%d)", c.Server.MaxMessageBytes)
	}
	if c.Server.MaxInflightBytes < c.Server.MaxInflightBytesPerIdentity {
		add("server.max_inflight_bytes", "must be at least server.max_inflight_bytes_per_identity (%d)", c.Server.MaxInflightBytesPerIdentity)
	}
	seenTok := map[string]bool{}
	for i, t := range c.Server.Tokens {
		key := fmt.Sprintf("server.tokens[%d]", i)
		if len(t.Token) < 16 {
			add(key+".token", "must be at least 16 characters")
		}
		if t.Identity == "" {
			add(key+".identity", "is required")
		}
		if seenTok[t.Token] && t.Token != "" {
			add(key+".token", "duplicates another token")
		}
		seenTok[t.Token] = true
	}
	if c.Sandbox.DefaultTier != "" && !slices.Contains(tiers, c.Sandbox.DefaultTier) {
		add("sandbox.default_tier", "must be one of %s", strings.Join(tiers, ", "))
	}
	if c.Audit.Fsync != "" && c.Audit.Fsync != "batch" && c.Audit.Fsync != "every" {
		add("audit.fsync", `must be "batch" or "every"`)
	}
	if c.Audit.OnFailure != "" && c.Audit.OnFailure != "refuse" && c.Audit.OnFailure != "continue" {
		add("audit.on_failure", `must be "refuse" or "continue"`)
	}
	if c.Audit.SignEvery < 0 {
		add("audit.sign_every", "must not be negative")
	}
	if c.Audit.Syslog != "" {
		if u, err := url.Parse(c.Audit.Syslog); err != nil || (u.Scheme != "udp" && u.Scheme != "tcp") || u.Host == "" || u.Port() == "" {
			add("audit.syslog", `must be "udp://host:port" or "tcp://host:port"`)
		}
	}
	if c.Audit.HTTP != "" {
		u, err := url.Parse(c.Audit.HTTP)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			add("audit.http", "must be an https:// URL (or http:// to a loopback host)")
		case u.Scheme == "http" && !loopbackHost(u.Hostname()):
			add("audit.http", "must use https unless the collector is on loopback: audit events would travel in clear")
		}
	} else if len(c.Audit.HTTPHeaders) > 0 {
		add("audit.http_headers", "is set but audit.http is not")
	}
	names := map[string]int{}
	prefixes := map[string]int{}
	for i, u := range c.Upstreams {
		key := fmt.Sprintf("upstreams[%d]", i)
		if !nameRE.MatchString(u.Name) {
			add(key+".name", "must match [a-z0-9_-]{1,32} (got %q)", u.Name)
		} else if j, dup := names[u.Name]; dup {
			add(key+".name", "duplicates upstreams[%d].name %q", j, u.Name)
		} else {
			names[u.Name] = i
		}
		if p := *u.Prefix; p != "" {
			if !nameRE.MatchString(p) {
				add(key+".prefix", "must match [a-z0-9_-]{1,32} or be empty (got %q)", p)
			} else if p == "symbi" {
				add(key+".prefix", `"symbi" is reserved for the built-in tools`)
			} else if j, dup := prefixes[p]; dup {
				add(key+".prefix", "duplicates the prefix of upstreams[%d]", j)
			} else {
				prefixes[p] = i
			}
		}
		switch {
		case len(u.Command) == 0 && u.URL == "":
			add(key, "needs command or url")
		case len(u.Command) > 0 && u.URL != "":
			add(key, "has both command and url; choose one")
		case u.URL != "":
			pu, err := url.Parse(u.URL)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				add(key+".url", "must be an http or https URL")
			}
			if u.Transport != "" && u.Transport != "streamable" && u.Transport != "sse" {
				add(key+".transport", `must be "streamable" or "sse"`)
			}
			if len(u.Env) > 0 {
				add(key+".env", "applies only to command upstreams")
			}
			if u.Sandbox != nil {
				add(key+".sandbox", "applies only to command upstreams")
			}
		default:
			if u.Transport != "" && u.Transport != "stdio" {
				add(key+".transport", `a command upstream speaks "stdio"`)
			}
			if len(u.Headers) > 0 {
				add(key+".headers", "applies only to url upstreams")
			}
			if t := c.Sandbox.DefaultTier; u.Sandbox == nil && (t == "docker" || t == "gvisor" || t == "auto") {
				add(key+".sandbox.image", "is required: [sandbox] default_tier is %q", t)
			}
		}
		if u.Timeout.Duration < 0 {
			add(key+".timeout", "must not be negative")
		}
		if s := u.Sandbox; s != nil {
			tier := s.Tier
			if tier == "" {
				tier = c.Sandbox.DefaultTier
			}
			switch {
			case tier == "":
				add(key+".sandbox.tier", "is required (or set [sandbox] default_tier): one of %s", strings.Join(tiers, ", "))
			case !slices.Contains(tiers, tier):
				add(key+".sandbox.tier", "must be one of %s", strings.Join(tiers, ", "))
			}
			if (tier == "docker" || tier == "gvisor" || tier == "auto") && s.Image == "" {
				add(key+".sandbox.image", "is required for tier %q", tier)
			}
			for j, m := range s.Mounts {
				pm, err := ParseMount(m)
				if err == nil {
					err = sandbox.ValidateMount(sandbox.Mount{Source: pm.Source, Target: pm.Target, Writable: pm.Writable}, c.ProtectedPaths()...)
				}
				if err != nil {
					add(fmt.Sprintf("%s.sandbox.mounts[%d]", key, j), "%v", err)
				}
			}
			var unsafe []sandbox.Unsafe
			for j, name := range s.Unsafe {
				u, err := sandbox.ParseUnsafe(name)
				if err != nil {
					add(fmt.Sprintf("%s.sandbox.unsafe[%d]", key, j), "%v", err)
				}
				unsafe = append(unsafe, u)
			}
			if tier != "none" {
				if err := sandbox.CheckNetwork(s.Network, unsafe); err != nil {
					add(key+".sandbox.network", "%v", err)
				}
				if err := sandbox.CheckUser(s.User, unsafe); err != nil {
					add(key+".sandbox.user", "%v", err)
				}
			}
			if _, err := sandbox.ParseSensitivity(s.Sensitivity); err != nil {
				add(key+".sandbox.sensitivity", "%v", err)
			}
			if s.CPUs < 0 {
				add(key+".sandbox.cpus", "must not be negative")
			}
			if s.Pids < 0 {
				add(key+".sandbox.pids", "must not be negative")
			}
		}
		for j, g := range u.TaskTools {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				add(fmt.Sprintf("%s.task_tools[%d]", key, j), "must be a tool name or glob (%q is not)", g)
			}
		}
		for j, g := range u.TaskRequired {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				add(fmt.Sprintf("%s.task_required[%d]", key, j), "must be a tool name or glob (%q is not)", g)
			}
		}
		if p := u.SchemaPin; p != nil {
			if !slices.Contains(pinModes, p.Mode) {
				add(key+".schemapin.mode", `must be "strict", "tofu" or "disabled"`)
			}
			if !slices.Contains(firstSeens, p.FirstSeen) {
				add(key+".schemapin.first_seen", `must be "approve" or "pending"`)
			}
			if strings.Contains(p.Manifest, "://") && !strings.HasPrefix(p.Manifest, "https://") {
				add(key+".schemapin.manifest", "must be a local file or an https:// URL")
			}
			if p.Mode == "strict" && p.Domain == "" && p.DiscoveryFile == "" {
				add(key+".schemapin", "strict mode needs domain or discovery_file")
			}
			if p.BundleFile != "" && p.Domain == "" {
				add(key+".schemapin.bundle_file", "needs schemapin.domain (the bundle may hold several domains)")
			}
		}
	}
	probs = append(probs, c.validateAgents()...)
	c.Context.validate(add)
	c.Bus.validate(add)
	c.OAuth.validate(add)
	c.State.Validate(add)
	return probs
}

// ProtectedPaths are symbi's own state directories (data and audit), which no sandbox
// mount may expose.
func (c *Config) ProtectedPaths() []string {
	paths := []string{c.Server.DataDir}
	if c.Audit.Dir != "" {
		paths = append(paths, c.Audit.Dir)
	}
	return paths
}

// Mount is a parsed sandbox mount.
type Mount struct {
	Source, Target string
	Writable       bool
}

// ParseMount parses "host:container[:ro|rw]" (read-only unless rw). Both paths must be
// absolute by now: a host path written ./x or ../x in the file has been resolved against
// the configuration file's directory (ResolvePaths).
func ParseMount(s string) (Mount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Mount{}, fmt.Errorf("mount %q: want host:container[:ro|rw]", s)
	}
	m := Mount{Source: parts[0], Target: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "rw":
			m.Writable = true
		case "ro":
		default:
			return Mount{}, fmt.Errorf("mount %q: mode must be ro or rw", s)
		}
	}
	if !strings.HasPrefix(m.Source, "/") {
		return Mount{}, fmt.Errorf("mount %q: the host path must be absolute, or start with ./ or ../ (relative to the configuration file)", s)
	}
	if !strings.HasPrefix(m.Target, "/") {
		return Mount{}, fmt.Errorf("mount %q: the container path must be absolute", s)
	}
	return m, nil
}

// Redacted returns a copy safe to print: token, env and header values are masked.
func (c *Config) Redacted() *Config {
	cp := *c
	cp.Server.Tokens = slices.Clone(c.Server.Tokens)
	for i := range cp.Server.Tokens {
		cp.Server.Tokens[i].Token = "REDACTED"
	}
	cp.Upstreams = slices.Clone(c.Upstreams)
	for i := range cp.Upstreams {
		cp.Upstreams[i].Env = maskValues(cp.Upstreams[i].Env)
		cp.Upstreams[i].Headers = maskValues(cp.Upstreams[i].Headers)
		if sb := cp.Upstreams[i].Sandbox; sb != nil {
			sbc := *sb
			sbc.Env = maskValues(sb.Env)
			cp.Upstreams[i].Sandbox = &sbc
		}
	}
	cp.Audit.HTTPHeaders = maskValues(c.Audit.HTTPHeaders)
	if cp.Context.EmbedderKey != "" {
		cp.Context.EmbedderKey = "REDACTED"
	}
	if cp.Context.Store != "" {
		cp.Context.Store = "REDACTED" // a database URL may carry a password
	}
	if cp.State.Store != "" {
		cp.State.Store = "REDACTED"
	}
	return &cp
}

// loopbackHost reports whether host (no port) is "localhost" or a loopback IP.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func maskValues(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = "REDACTED"
	}
	return out
}

// checkOrigin says what is wrong with a browser origin, or "" if nothing: it must be
// scheme://host[:port] with scheme http or https, and nothing more (no path, no "*").
func checkOrigin(o string) string {
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return "not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return `must start with "http://" or "https://"`
	case u.Host == "" || u.Hostname() == "" || strings.Contains(u.Host, "*"):
		return "must name one host (no wildcards)"
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "must be only scheme://host[:port], as a browser sends it in Origin"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "has an invalid port"
		}
	}
	return ""
}
