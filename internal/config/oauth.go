package config

import (
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// OAuth makes symbi an OAuth 2.1 resource server ([oauth]): HTTP clients may present a JWT
// access token from Issuer, alongside server.tokens and client certificates. An empty
// Issuer leaves it off.
type OAuth struct {
	// Issuer is the authorization server's issuer identifier; its signing keys are found
	// through its OpenID Connect or RFC 8414 metadata (or JWKSURI).
	Issuer string `toml:"issuer"`
	// Resource is symbi's canonical URL as clients reach it (e.g. "https://symbi.example.com/mcp"):
	// tokens must carry it in "aud", and it is the "resource" of the metadata document.
	Resource string `toml:"resource"`
	// JWKSURI, if set, is the issuer's key set, used instead of discovery.
	JWKSURI string `toml:"jwks_uri"`
	// RequiredScopes must all be granted by a token.
	RequiredScopes []string `toml:"required_scopes"`
	// IdentityClaim names the claim that becomes input.identity.id ("" = "sub").
	IdentityClaim string `toml:"identity_claim"`
	// Leeway is the clock skew allowed on exp and nbf ("" = 60s; at most 5m).
	Leeway Duration `toml:"leeway"`
}

// Enabled reports whether [oauth] is configured.
func (o *OAuth) Enabled() bool { return o.Issuer != "" }

var claimName = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

func (o *OAuth) validate(add func(key, format string, args ...any)) {
	if !o.Enabled() {
		if o.Resource != "" || o.JWKSURI != "" || len(o.RequiredScopes) > 0 || o.IdentityClaim != "" || o.Leeway.Duration != 0 {
			add("oauth.issuer", "is required when other [oauth] keys are set")
		}
		return
	}
	checkOAuthURL(add, "oauth.issuer", o.Issuer)
	if o.Resource == "" {
		add("oauth.resource", "is required with oauth.issuer: symbi's URL as clients reach it, e.g. \"https://symbi.example.com/mcp\"")
	} else {
		checkOAuthURL(add, "oauth.resource", o.Resource)
		if u, err := url.Parse(o.Resource); err == nil && u.RawQuery != "" {
			add("oauth.resource", "must not have a query (RFC 9728)")
		}
	}
	if o.JWKSURI != "" {
		checkOAuthURL(add, "oauth.jwks_uri", o.JWKSURI)
	}
	for i, s := range o.RequiredScopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			add("oauth.required_scopes", "entry %d (%q) is empty or has a space, quote or backslash", i, s)
		} else if slices.Contains(o.RequiredScopes[:i], s) {
			add("oauth.required_scopes", "entry %d (%q) is repeated", i, s)
		}
	}
	if o.IdentityClaim != "" && !claimName.MatchString(o.IdentityClaim) {
		add("oauth.identity_claim", "must be a claim name (letters, digits, _ . : -), got %q", o.IdentityClaim)
	}
	if o.Leeway.Duration < 0 || o.Leeway.Duration > 5*time.Minute {
		add("oauth.leeway", "must be between 0 and 5m (got %s)", o.Leeway.Duration)
	}
}

// checkOAuthURL accepts an absolute https URL, or http to a loopback host (a local
// issuer in development), without user info or fragment.
func checkOAuthURL(add func(key, format string, args ...any), key, s string) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || (u.Scheme != "https" && u.Scheme != "http") {
		add(key, "must be an absolute https URL without user info or fragment (got %q)", s)
		return
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			add(key, "must be https (http only for a loopback host), got %q", s)
		}
	}
}
