package schemapin

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

// Mode is an upstream's SchemaPin mode.
type Mode string

// The modes. The zero Mode is ModeTOFU.
const (
	// ModeStrict hides and refuses every tool that does not verify, unsigned ones included.
	ModeStrict Mode = "strict"
	// ModeTOFU verifies signed tools (pinning their keys on first use) and allows unsigned
	// tools, marked unsigned.
	ModeTOFU Mode = "tofu"
	// ModeDisabled skips signature checks; tools are marked disabled. The rug-pull
	// quarantine still applies.
	ModeDisabled Mode = "disabled"
)

// FirstSeen says what happens to a tool the quarantine has never seen.
type FirstSeen string

// The first-seen policies. The zero FirstSeen is FirstSeenApprove.
const (
	FirstSeenApprove FirstSeen = "approve"
	FirstSeenPending FirstSeen = "pending"
)

// UpstreamOptions are one upstream's SchemaPin settings.
type UpstreamOptions struct {
	Mode Mode
	// Domain whose key must sign the upstream's tools; discovered online unless
	// DiscoveryFile or BundleFile is set. It is also the domain of pins; when empty, pins
	// use the upstream's name.
	Domain string
	// DiscoveryFile is a local discovery document (or a directory of {domain}.json).
	DiscoveryFile string
	// BundleFile is a signed trust bundle holding Domain's discovery document.
	BundleFile string
	// ManifestFile lists envelopes {"schema","signature","signed_at"} per tool, as a JSON
	// array or {"tools": [...]}.
	ManifestFile string
	// FirstSeen decides first-seen tools: approved (default) or pending.
	FirstSeen FirstSeen
	// GoCompat also accepts single-hash signatures of the reference Go SDK.
	GoCompat bool
}

// Decision is the gate's verdict on one listed tool.
type Decision struct {
	Verification
	// Name is the tool's name as the upstream listed it.
	Name string `json:"name"`
	// Allowed reports whether the tool may be shown and called.
	Allowed bool `json:"allowed"`
}

// GateOptions tune a Gate. Nil means defaults.
type GateOptions struct {
	// Logger receives one record per tool that is not allowed. Nil discards.
	Logger *slog.Logger
	// HTTPClient is used for online discovery; nil means a default client.
	HTTPClient *http.Client
	// FetchTimeout bounds each discovery fetch; 0 means 10s.
	FetchTimeout time.Duration
	// DiscoveryTTL is how long discovery results (and files) are cached; 0 means 5 minutes.
	DiscoveryTTL time.Duration
	// Resolver, when set, replaces online discovery (for tests, or a ChainResolver).
	Resolver Resolver
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// PinDB keeps the key pins instead of the db given to NewGate: the PostgreSQL
	// database replicas share (see internal/store.OpenPostgres). The quarantine stays in that db.
	PinDB *sql.DB
}

// Gate verifies the tools upstreams list: signatures and key pins, then the rug-pull
// quarantine. It is safe for concurrent use.
type Gate struct {
	pins       *PinStore
	quarantine *Quarantine
	log        *slog.Logger
	now        func() time.Time
	ttl        time.Duration
	online     Resolver

	mu        sync.Mutex
	resolvers map[string]Resolver // by "file:"/"bundle:" path
	manifests map[string]*manifestEntry
}

type manifestEntry struct {
	mod   time.Time
	size  int64
	envs  map[string]*Envelope
	err   error
	until time.Time
}

// NewGate creates the pin and quarantine tables on db if needed and returns a Gate.
func NewGate(ctx context.Context, db *sql.DB, opts *GateOptions) (*Gate, error) {
	var o GateOptions
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DiscoveryTTL <= 0 {
		o.DiscoveryTTL = 5 * time.Minute
	}
	pinDB := db
	if o.PinDB != nil {
		pinDB = o.PinDB
	}
	pins, err := NewPinStore(ctx, pinDB)
	if err != nil {
		return nil, err
	}
	q, err := NewQuarantine(ctx, db)
	if err != nil {
		return nil, err
	}
	pins.now, q.now = o.Now, o.Now
	online := o.Resolver
	if online == nil {
		online = NewCachedResolver(NewWellKnownResolver(&WellKnownOptions{
			Client: o.HTTPClient, Timeout: o.FetchTimeout, Logger: o.Logger}), o.DiscoveryTTL, o.Now)
	}
	return &Gate{pins: pins, quarantine: q, log: o.Logger, now: o.Now, ttl: o.DiscoveryTTL, online: online,
		resolvers: map[string]Resolver{}, manifests: map[string]*manifestEntry{}}, nil
}

// Pins returns the gate's key pin store (for operator commands).
func (g *Gate) Pins() *PinStore { return g.pins }

// Quarantine returns the gate's quarantine store (for operator commands).
func (g *Gate) Quarantine() *Quarantine { return g.quarantine }

// Check verifies one tool as upstream listed it (raw MCP tool JSON) and records it in the
// quarantine. Signatures are looked for in the tool's _meta["schemapin/signature"], then
// the upstream's manifest, then an inline inputSchema.signature. The error is reserved for
// failures of symbi's own state; a malformed tool is a Decision with status invalid.
func (g *Gate) Check(ctx context.Context, upstream string, opts UpstreamOptions, tool []byte) (Decision, error) {
	d, err := g.check(ctx, upstream, opts, tool)
	if err != nil {
		return Decision{Name: d.Name, Verification: Verification{Status: StatusInvalid, Reason: "internal error"}}, err
	}
	if !d.Allowed {
		g.log.Info("schemapin tool held back", "upstream", upstream, "tool", d.Name,
			"status", string(d.Status), "reason", d.Reason, "fingerprint", d.Fingerprint)
	}
	return d, nil
}

func (g *Gate) check(ctx context.Context, upstream string, opts UpstreamOptions, tool []byte) (Decision, error) {
	p, err := parseTool(tool)
	if err != nil {
		return Decision{Verification: Verification{Status: StatusInvalid, Reason: err.Error()}}, nil
	}
	d := Decision{Name: p.name}
	domain := opts.Domain
	if domain == "" {
		domain = upstream
	}
	switch opts.Mode {
	case ModeDisabled:
		d.Verification = Verification{Status: StatusDisabled}
	case ModeStrict, ModeTOFU, "":
		sig, expires := p.metaSig, p.metaExpiry
		var entry *Envelope // the manifest entry the signature came from, if it did
		if sig == "" && opts.ManifestFile != "" {
			envs, err := g.manifest(opts.ManifestFile)
			if err != nil {
				d.Verification = Verification{Status: StatusInvalid, Domain: domain, Reason: err.Error()}
				return d, nil
			}
			if e := envs[p.name]; e != nil {
				sig, expires, entry = e.Signature, e.ExpiresAt, e
			}
		}
		if sig == "" {
			sig = p.inlineSig
		}
		if sig == "" {
			// A tool whose key is pinned lost its signature: a downgrade, not an unsigned tool.
			pin, pinned, err := g.pins.Get(ctx, p.name, domain)
			if err != nil {
				return d, err
			}
			if pinned {
				d.Verification = Verification{Status: StatusInvalid, Domain: domain, Fingerprint: pin.Fingerprint,
					Reason: "signature missing for a tool whose key is pinned"}
				return d, nil
			}
			d.Verification = Verification{Status: StatusUnsigned, Domain: opts.Domain, Reason: "no signature"}
			break
		}
		res := g.resolver(opts)
		if res == nil {
			d.Verification = Verification{Status: StatusInvalid, Domain: domain,
				Reason: "tool is signed but the upstream has no schemapin domain, discovery_file or bundle"}
			return d, nil
		}
		v := NewVerifier(res, &VerifierOptions{Pins: g.pins, GoCompat: opts.GoCompat, Now: g.now})
		d.Verification, err = v.Verify(ctx, Signed{Canonical: p.canonical, Signature: sig, ExpiresAt: expires, Domain: domain, ToolID: p.name})
		if err != nil {
			return d, err
		}
		if d.Status == StatusInvalid && entry != nil {
			if signed, err := SignedForm(entry.Schema); err == nil && !bytes.Equal(signed, p.canonical) {
				d.Reason += "; the upstream lists a definition that differs from the manifest's signed schema"
			}
		}
	default:
		return d, fmt.Errorf("check tool %s: unknown schemapin mode %q", p.name, opts.Mode)
	}

	switch d.Status {
	case StatusVerified, StatusDisabled:
		d.Allowed = true
	case StatusUnsigned:
		d.Allowed = opts.Mode != ModeStrict
		if !d.Allowed {
			d.Reason = "unsigned tool in strict mode"
		}
	}
	if !d.Allowed {
		return d, nil // an unverifiable tool is not recorded as a definition to approve
	}
	obs, err := g.quarantine.Observe(ctx, upstream, p.name, p.canonical, opts.FirstSeen != FirstSeenPending)
	if err != nil {
		return d, err
	}
	switch obs.State {
	case StatePending:
		d.Status, d.Allowed = StatusDefinitionChanged, false
		d.Reason = "definition changed since it was approved; awaiting approval (symbi tools pending)"
		if obs.FirstSeen {
			d.Reason = "new tool awaiting approval (symbi tools pending)"
		}
	case StateRejected:
		d.Status, d.Allowed = StatusDefinitionChanged, false
		d.Reason = "definition rejected by an operator"
	}
	return d, nil
}

// resolver picks the discovery source of an upstream: its bundle, its discovery file, or
// online discovery of its domain. Nil means it has none.
func (g *Gate) resolver(opts UpstreamOptions) Resolver {
	var key string
	var mk func() Resolver
	switch {
	case opts.BundleFile != "":
		key = "bundle:" + opts.BundleFile
		mk = func() Resolver { return bundleFile{path: opts.BundleFile, now: g.now} }
	case opts.DiscoveryFile != "":
		key = "file:" + opts.DiscoveryFile
		mk = func() Resolver { return FileResolver{Path: opts.DiscoveryFile} }
	case opts.Domain != "":
		return g.online
	default:
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.resolvers[key]
	if r == nil {
		r = NewCachedResolver(mk(), g.ttl, g.now)
		g.resolvers[key] = r
	}
	return r
}

// bundleFile resolves from a signed trust bundle file, read on each (cached) lookup.
type bundleFile struct {
	path string
	now  func() time.Time
}

func (b bundleFile) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	data, err := readBounded(b.path, maxBundle)
	if err != nil {
		return nil, fmt.Errorf("read trust bundle: %w", err)
	}
	bundle, err := ParseBundle(data, &BundleOptions{Now: b.now})
	if err != nil {
		return nil, fmt.Errorf("read trust bundle %s: %w", b.path, err)
	}
	return bundle.Resolve(ctx, domain)
}

// manifest returns the envelopes of a manifest file, re-read when it changes (checked at
// most once a second).
func (g *Gate) manifest(path string) (map[string]*Envelope, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.manifests[path]
	now := g.now()
	if e != nil && now.Before(e.until) {
		return e.envs, e.err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if e != nil && fi.ModTime().Equal(e.mod) && fi.Size() == e.size {
		e.until = now.Add(time.Second)
		return e.envs, e.err
	}
	e = &manifestEntry{mod: fi.ModTime(), size: fi.Size(), until: now.Add(time.Second)}
	data, err := readBounded(path, maxBundle)
	if err == nil {
		e.envs, err = parseManifest(data)
	}
	if err != nil {
		e.err = fmt.Errorf("read manifest %s: %w", path, err)
	}
	g.manifests[path] = e
	return e.envs, e.err
}
