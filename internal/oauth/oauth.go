// Package oauth makes symbi an OAuth 2.1 resource server: it validates JWT access tokens
// issued by one configured authorization server, whose signing keys it discovers from the
// issuer's metadata (OpenID Connect discovery or RFC 8414) and caches, and it describes
// symbi as a protected resource (RFC 9728) so MCP clients find that issuer.
//
// Validation fails closed: only asymmetric signatures (RSA, RSA-PSS, ECDSA, EdDSA) are
// accepted, never "none" or an HMAC; the issuer, the audience (this resource), the expiry
// and not-before times (with a small leeway) and any required scopes are checked; and when
// the issuer's keys cannot be had, no token is accepted (ErrUnavailable).
package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Errors a Verify may return (wrapped, with the detail).
var (
	// ErrInvalid: the token is not one this resource accepts (malformed, a bad
	// signature, an unknown key, the wrong issuer or audience, expired, ...).
	ErrInvalid = errors.New("invalid token")
	// ErrInsufficientScope: a valid token that lacks a required scope.
	ErrInsufficientScope = errors.New("insufficient scope")
	// ErrUnavailable: the issuer's metadata or keys could not be fetched, so the token
	// could not be checked (and is not accepted).
	ErrUnavailable = errors.New("token issuer unavailable")
)

// Algorithms are the signature algorithms accepted: asymmetric ones only.
var Algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// Bounds on what is read from the network and kept.
const (
	MaxTokenBytes    = 16 << 10 // a longer bearer token is refused before parsing
	maxDocumentBytes = 1 << 20  // an issuer metadata document or key set
	maxKeys          = 100      // keys kept from one key set
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
	DefaultLeeway = time.Minute
	// DefaultKeysTTL is how long a fetched key set is used before it is fetched again.
	DefaultKeysTTL = time.Hour
	// DefaultMinRefresh is the least time between two fetches of the key set forced by
	// a token naming a key symbi does not know (so such tokens cannot flood the issuer).
	DefaultMinRefresh = 30 * time.Second
	// DefaultIdentityClaim names the claim that becomes the client's identity.
	DefaultIdentityClaim = "sub"
)

// Config configures a Verifier.
type Config struct {
	// Issuer is the authorization server's issuer identifier (the "iss" of its tokens);
	// its metadata is read from Issuer's well-known locations unless JWKSURI is set.
	Issuer string
	// Resource is this resource's canonical URL: a token's "aud" must contain it.
	Resource string
	// JWKSURI, if set, is the issuer's key set, used without discovery.
	JWKSURI string
	// RequiredScopes must all be granted (the "scope" claim, or "scp").
	RequiredScopes []string
	// IdentityClaim names the claim whose value is the identity ("" = "sub").
	IdentityClaim string
	// Leeway is the clock skew allowed (0 = DefaultLeeway).
	Leeway time.Duration
	// KeysTTL, MinRefresh: see DefaultKeysTTL and DefaultMinRefresh (0 = defaults).
	KeysTTL    time.Duration
	MinRefresh time.Duration
	// HTTPClient fetches metadata and keys (nil: a client with a 10s timeout).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now returns the current time (tests); nil: time.Now.
	Now func() time.Time
}

// Token is a validated access token.
type Token struct {
	// Identity is the value of the identity claim.
	Identity string
	// Claims are all of the token's claims.
	Claims map[string]any
	// Scopes are the scopes it grants.
	Scopes []string
	// Expiry is its "exp".
	Expiry time.Time
}

// Verifier validates access tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu        sync.Mutex // guards the fields below; held while fetching (one fetch at a time)
	keys      []jose.JSONWebKey
	fetched   time.Time // when keys were last fetched successfully
	attempted time.Time // when a fetch was last attempted
	lastErr   error
	jwksURI   string // discovered (or configured) key set location
	fetches   int
}

// New checks cfg and returns a Verifier; it fetches nothing until first used.
func New(cfg Config) (*Verifier, error) {
	if err := checkURL(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("oauth issuer: %w", err)
	}
	if err := checkURL(cfg.Resource); err != nil {
		return nil, fmt.Errorf("oauth resource: %w", err)
	}
	if cfg.JWKSURI != "" {
		if err := checkURL(cfg.JWKSURI); err != nil {
			return nil, fmt.Errorf("oauth jwks_uri: %w", err)
		}
	}
	if cfg.IdentityClaim == "" {
		cfg.IdentityClaim = DefaultIdentityClaim
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.KeysTTL == 0 {
		cfg.KeysTTL = DefaultKeysTTL
	}
	if cfg.MinRefresh == 0 {
		cfg.MinRefresh = DefaultMinRefresh
	}
	v := &Verifier{cfg: cfg, client: cfg.HTTPClient, log: cfg.Logger, now: cfg.Now, jwksURI: cfg.JWKSURI}
	if v.client == nil {
		v.client = &http.Client{Timeout: 10 * time.Second}
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// checkURL accepts an absolute http or https URL without a fragment.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an absolute http(s) URL without user info or fragment", s)
	}
	return nil
}

// Config returns the configuration in force (with defaults filled in).
func (v *Verifier) Config() Config { return v.cfg }

// Verify validates raw, a compact JWS access token.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Token, error) {
	if len(raw) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxTokenBytes)
	}
	tok, err := jwt.ParseSigned(raw, Algorithms)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want one signature", ErrInvalid)
	}
	h := tok.Headers[0]
	keys, err := v.keysFor(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	var std jwt.Claims
	var all map[string]any
	verified := false
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		if tok.Claims(k.Key, &std, &all) == nil {
			verified = true
			break
		}
	}
	if !verified {
		if h.KeyID == "" {
			return nil, fmt.Errorf("%w: signature does not verify with any of the issuer's keys", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: signature does not verify with key %q", ErrInvalid, h.KeyID)
	}
	return v.checkClaims(&std, all)
}

// checkClaims validates the claims of a token whose signature verified.
func (v *Verifier) checkClaims(std *jwt.Claims, all map[string]any) (*Token, error) {
	if std.Expiry == nil {
		return nil, fmt.Errorf("%w: no exp claim", ErrInvalid)
	}
	err := std.ValidateWithLeeway(jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Resource}, Time: v.now()}, v.cfg.Leeway)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, fmt.Errorf("%w: issuer %q is not %q", ErrInvalid, std.Issuer, v.cfg.Issuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, fmt.Errorf("%w: audience %q does not include %q", ErrInvalid, []string(std.Audience), v.cfg.Resource)
	default:
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	id, _ := all[v.cfg.IdentityClaim].(string)
	if id == "" {
		return nil, fmt.Errorf("%w: no %s claim (a non-empty string) to name the identity", ErrInvalid, v.cfg.IdentityClaim)
	}
	scopes := scopesOf(all)
	for _, s := range v.cfg.RequiredScopes {
		if !slices.Contains(scopes, s) {
			return nil, fmt.Errorf("%w: scope %q is required", ErrInsufficientScope, s)
		}
	}
	return &Token{Identity: id, Claims: all, Scopes: scopes, Expiry: std.Expiry.Time()}, nil
}

// scopesOf reads the granted scopes: "scope" as a space-separated string (RFC 9068) or
// a list, else "scp" likewise.
func scopesOf(claims map[string]any) []string {
	for _, name := range []string{"scope", "scp"} {
		switch s := claims[name].(type) {
		case string:
			return strings.Fields(s)
		case []any:
			var out []string
			for _, e := range s {
				if str, ok := e.(string); ok {
					out = append(out, str)
				}
			}
			return out
		}
	}
	return nil
}

// keysFor returns the keys a token naming kid may have been signed with: the key with
// that id, or, without one, all keys. A kid symbi does not know makes it fetch the key
// set again (at most once per MinRefresh); still unknown, the token is invalid.
func (v *Verifier) keysFor(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if v.lastErr != nil && now.Sub(v.attempted) < v.cfg.MinRefresh {
		// The last fetch failed moments ago: answer with it rather than ask again.
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, v.lastErr)
	}
	if v.fetched.IsZero() || now.Sub(v.fetched) >= v.cfg.KeysTTL {
		if err := v.refreshLocked(ctx, now); err != nil {
			return nil, err
		}
	}
	if ks := match(v.keys, kid); len(ks) > 0 {
		return ks, nil
	}
	if kid == "" {
		return nil, fmt.Errorf("%w: the issuer published no usable signing key", ErrInvalid)
	}
	if now.Sub(v.attempted) >= v.cfg.MinRefresh {
		v.log.Info("oauth: token names an unknown key; fetching the issuer's keys again", "kid", kid)
		if err := v.refreshLocked(ctx, now); err != nil {
			return nil, err
		}
		if ks := match(v.keys, kid); len(ks) > 0 {
			return ks, nil
		}
	}
	return nil, fmt.Errorf("%w: unknown signing key %q", ErrInvalid, kid)
}

func match(keys []jose.JSONWebKey, kid string) []jose.JSONWebKey {
	if kid == "" {
		return keys
	}
	for _, k := range keys {
		if k.KeyID == kid {
			return []jose.JSONWebKey{k}
		}
	}
	return nil
}

// Check fetches the issuer's metadata and keys now, reporting whether the issuer is
// reachable and how many signing keys it publishes (for doctor and readiness).
func (v *Verifier) Check(ctx context.Context) (keys int, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.refreshLocked(ctx, v.now()); err != nil {
		return 0, err
	}
	return len(v.keys), nil
}

// Fetches is how many times the key set was fetched (tests).
func (v *Verifier) Fetches() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetches
}

// refreshLocked fetches the key set (discovering its location first if need be).
// On failure the keys are dropped: a token is not accepted on keys symbi could not
// confirm (fail closed).
func (v *Verifier) refreshLocked(ctx context.Context, now time.Time) error {
	v.attempted = now
	err := v.fetchLocked(ctx)
	if err != nil {
		v.keys, v.fetched, v.lastErr = nil, time.Time{}, err
		v.log.Warn("oauth: fetch the issuer's keys", "issuer", v.cfg.Issuer, "err", err)
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	v.fetched, v.lastErr = now, nil
	return nil
}

func (v *Verifier) fetchLocked(ctx context.Context) error {
	if v.cfg.JWKSURI == "" {
		// Discovered anew on every fetch: an issuer may move its keys.
		uri, err := v.discover(ctx)
		if err != nil {
			return err
		}
		v.jwksURI = uri
	}
	v.fetches++
	var set jose.JSONWebKeySet
	if err := v.getJSON(ctx, v.jwksURI, &set); err != nil {
		return fmt.Errorf("key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, k := range set.Keys {
		if len(keys) == maxKeys {
			break
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch k.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return fmt.Errorf("key set %s has no public signing key", v.jwksURI)
	}
	v.keys = keys
	return nil
}

// Metadata is the part of an authorization server's metadata symbi reads.
type Metadata struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// MetadataURLs are where an issuer's metadata may be: OpenID Connect discovery, then
// RFC 8414 (its well-known segment inserted before the issuer's path), then the
// appended form some servers use for RFC 8414.
func MetadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	path := strings.TrimSuffix(u.Path, "/")
	at := func(p string) string { c := *u; c.Path, c.RawPath = p, ""; return c.String() }
	out := []string{at(path + "/.well-known/openid-configuration"), at("/.well-known/oauth-authorization-server" + path)}
	if path != "" {
		out = append(out, at(path+"/.well-known/oauth-authorization-server"))
	}
	return out
}

// discover reads the issuer's metadata and returns its jwks_uri.
func (v *Verifier) discover(ctx context.Context) (string, error) {
	var errs []error
	for _, u := range MetadataURLs(v.cfg.Issuer) {
		var md Metadata
		if err := v.getJSON(ctx, u, &md); err != nil {
			errs = append(errs, err)
			continue
		}
		if md.Issuer != v.cfg.Issuer {
			return "", fmt.Errorf("metadata at %s names issuer %q, not %q", u, md.Issuer, v.cfg.Issuer)
		}
		if err := checkURL(md.JWKSURI); err != nil {
			return "", fmt.Errorf("metadata at %s: jwks_uri: %w", u, err)
		}
		if strings.HasPrefix(v.cfg.Issuer, "https:") && !strings.HasPrefix(md.JWKSURI, "https:") {
			return "", fmt.Errorf("metadata at %s: jwks_uri %q is not https", u, md.JWKSURI)
		}
		return md.JWKSURI, nil
	}
	return "", fmt.Errorf("discover the issuer's metadata: %w", errors.Join(errs...))
}

// getJSON GETs u and decodes its JSON body (at most maxDocumentBytes) into dst.
func (v *Verifier) getJSON(ctx context.Context, u string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("GET %s: document larger than %d bytes", u, maxDocumentBytes)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// ResourceMetadata is the Protected Resource Metadata document (RFC 9728) describing
// this resource.
type ResourceMetadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	SigningAlgsSupported   []string `json:"resource_signing_alg_values_supported,omitempty"`
	ResourceName           string   `json:"resource_name,omitempty"`
}

// WellKnownPath is the root of the Protected Resource Metadata well-known URIs.
const WellKnownPath = "/.well-known/oauth-protected-resource"

// MetadataPaths are the paths on symbi's listener that serve the resource's metadata:
// the well-known path with the resource URL's path appended (RFC 9728 section 3.1,
// which MCP clients try first), and the bare well-known path.
func MetadataPaths(resource string) []string {
	u, err := url.Parse(resource)
	if err != nil {
		return []string{WellKnownPath}
	}
	p := strings.TrimSuffix(u.Path, "/")
	if p == "" {
		return []string{WellKnownPath}
	}
	return []string{WellKnownPath + p, WellKnownPath}
}

// MetadataURL is the absolute URL of the resource's metadata (the first of
// MetadataPaths), for the resource_metadata parameter of a challenge.
func MetadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil {
		return ""
	}
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: MetadataPaths(resource)[0]}
	return c.String()
}

// Metadata returns the resource's metadata document.
func (v *Verifier) Metadata() ResourceMetadata {
	return ResourceMetadata{
		Resource:               v.cfg.Resource,
		AuthorizationServers:   []string{v.cfg.Issuer},
		ScopesSupported:        v.cfg.RequiredScopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "symbi",
	}
}

// MetadataHandler serves Metadata as JSON.
func (v *Verifier) MetadataHandler() http.Handler {
	body, _ := json.Marshal(v.Metadata())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		// Clients in browsers fetch it across origins (RFC 9728 section 3).
		w.Header().Set("Access-Control-Allow-Origin", "*")
		_, _ = w.Write(body)
	})
}
