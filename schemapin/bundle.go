package schemapin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Bundle is a verified SchemaPin trust bundle: discovery and revocation documents for
// several domains, usable offline as a Resolver.
type Bundle struct {
	// Signed reports whether the bundle carried a bundle authority signature that verified.
	Signed bool
	// AuthorityKID and AuthorityFingerprint identify the bundle authority, when signed.
	AuthorityKID         string
	AuthorityFingerprint string
	// ExpiresAt is the bundle's expiry, zero if none.
	ExpiresAt time.Time

	docs map[string]*Discovery // by lowercase domain
}

// BundleOptions tune ParseBundle. Nil means: a signature is required, the embedded
// authority key is trusted (the bundle is self-verifying, as in the reference SDKs), and
// the clock is time.Now.
type BundleOptions struct {
	// AuthorityFingerprint, when set, is the only bundle authority key accepted.
	AuthorityFingerprint string
	// AllowUnsigned accepts pre-v1.4 bundles without bundle_authority and signature.
	AllowUnsigned bool
	// Now is the clock for expires_at; nil means time.Now.
	Now func() time.Time
}

type rawBundle struct {
	Documents   []json.RawMessage `json:"documents"`
	Revocations []json.RawMessage `json:"revocations"`
	Entries     []struct {
		Domain     string          `json:"domain"`
		Discovery  json.RawMessage `json:"discovery"`
		Revocation json.RawMessage `json:"revocation"`
	} `json:"entries"`
	Authority *struct {
		KID          string `json:"kid"`
		PublicKeyPEM string `json:"public_key_pem"`
	} `json:"bundle_authority"`
	SignedAt  string  `json:"signed_at"`
	ExpiresAt string  `json:"expires_at"`
	Signature *string `json:"signature"`
}

// ErrBundleExpired reports a trust bundle whose expires_at has passed.
var ErrBundleExpired = errors.New("trust bundle expired")

// ParseBundle parses a trust bundle and verifies its bundle authority signature: ECDSA
// P-256 over the single SHA-256 of the canonical bundle with "signature" set to "".
func ParseBundle(data []byte, opts *BundleOptions) (*Bundle, error) {
	var o BundleOptions
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(data) > maxBundle {
		return nil, fmt.Errorf("parse bundle: larger than %d bytes", maxBundle)
	}
	var raw rawBundle
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse bundle: %w", err)
	}
	b := &Bundle{docs: map[string]*Discovery{}}
	signed := raw.Authority != nil || raw.Signature != nil
	switch {
	case signed:
		if err := b.verifySignature(data, &raw, &o); err != nil {
			return nil, err
		}
	case !o.AllowUnsigned:
		return nil, errors.New("parse bundle: bundle is not signed (no bundle_authority and signature)")
	}
	if raw.ExpiresAt != "" {
		exp, err := time.Parse(time.RFC3339, raw.ExpiresAt)
		if err != nil {
			return nil, fmt.Errorf("parse bundle: expires_at %q: %w", raw.ExpiresAt, err)
		}
		b.ExpiresAt = exp
		if o.Now().After(exp) {
			return nil, fmt.Errorf("parse bundle: %w at %s", ErrBundleExpired, raw.ExpiresAt)
		}
	}
	if err := b.load(&raw); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bundle) verifySignature(data []byte, raw *rawBundle, o *BundleOptions) error {
	if raw.Authority == nil || raw.Signature == nil || *raw.Signature == "" {
		return errors.New("parse bundle: incomplete signature (bundle_authority and signature are both required)")
	}
	pub, err := ParsePublicKey([]byte(raw.Authority.PublicKeyPEM))
	if err != nil {
		return fmt.Errorf("parse bundle authority: %w", err)
	}
	fp, err := Fingerprint(pub)
	if err != nil {
		return err
	}
	if o.AuthorityFingerprint != "" && !strings.EqualFold(o.AuthorityFingerprint, fp) {
		return fmt.Errorf("parse bundle: authority key %s is not the trusted %s", fp, o.AuthorityFingerprint)
	}
	c, err := bundleSigningInput(data)
	if err != nil {
		return err
	}
	sig, err := decodeSignature(*raw.Signature)
	if err != nil {
		return fmt.Errorf("verify bundle: %w", err)
	}
	if !ecdsa.VerifyASN1(pub, singleDigest(c), sig) {
		return fmt.Errorf("verify bundle: %w", ErrBadSignature)
	}
	b.Signed, b.AuthorityKID, b.AuthorityFingerprint = true, raw.Authority.KID, fp
	return nil
}

// bundleSigningInput is the canonical bundle with "signature" set to "".
func bundleSigningInput(data []byte) ([]byte, error) {
	v, err := decodeJSON(data)
	if err != nil {
		return nil, fmt.Errorf("parse bundle: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("parse bundle: not a JSON object")
	}
	m["signature"] = ""
	return canonicalValue(m)
}

func (b *Bundle) load(raw *rawBundle) error {
	for i, d := range raw.Documents {
		var dom struct {
			Domain string `json:"domain"`
		}
		if err := json.Unmarshal(d, &dom); err != nil || dom.Domain == "" {
			return fmt.Errorf("parse bundle: documents[%d]: domain missing", i)
		}
		doc, err := ParseDiscovery(d)
		if err != nil {
			return fmt.Errorf("parse bundle: documents[%d]: %w", i, err)
		}
		b.docs[strings.ToLower(dom.Domain)] = doc
	}
	for i, e := range raw.Entries {
		if e.Domain == "" {
			return fmt.Errorf("parse bundle: entries[%d]: domain missing", i)
		}
		doc, err := ParseDiscovery(e.Discovery)
		if err != nil {
			return fmt.Errorf("parse bundle: entries[%d]: %w", i, err)
		}
		if len(e.Revocation) > 0 && !bytes.Equal(e.Revocation, []byte("null")) {
			rev, err := ParseRevocation(e.Revocation)
			if err != nil {
				return fmt.Errorf("parse bundle: entries[%d]: %w", i, err)
			}
			doc.Revocation = rev
		}
		b.docs[strings.ToLower(e.Domain)] = doc
	}
	for i, r := range raw.Revocations {
		rev, err := ParseRevocation(r)
		if err != nil {
			return fmt.Errorf("parse bundle: revocations[%d]: %w", i, err)
		}
		doc := b.docs[strings.ToLower(rev.Domain)]
		if doc == nil {
			continue // revocations for a domain the bundle has no key for change nothing
		}
		if doc.Revocation == nil {
			doc.Revocation = rev
		} else {
			merged := *doc.Revocation
			merged.RevokedKeys = append(append([]RevokedKey(nil), merged.RevokedKeys...), rev.RevokedKeys...)
			doc.Revocation = &merged
		}
	}
	return nil
}

// Domains lists the domains the bundle holds documents for.
func (b *Bundle) Domains() []string {
	out := make([]string, 0, len(b.docs))
	for d := range b.docs {
		out = append(out, d)
	}
	return out
}

// Resolve implements Resolver.
func (b *Bundle) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	if d := b.docs[strings.ToLower(domain)]; d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("resolve %s in trust bundle: %w", domain, ErrNoDiscovery)
}

// SignBundle signs a trust bundle (a JSON object) as a bundle authority: it stamps
// schemapin_bundle_version "1.4", bundle_authority, signed_at and expires_at (when not
// zero), and the signature. It returns the signed bundle as canonical JSON.
func SignBundle(priv *ecdsa.PrivateKey, kid string, bundle []byte, signedAt, expiresAt time.Time) ([]byte, error) {
	v, err := decodeJSON(bundle)
	if err != nil {
		return nil, fmt.Errorf("sign bundle: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("sign bundle: not a JSON object")
	}
	pubPEM, err := MarshalPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	m["schemapin_bundle_version"] = "1.4"
	m["bundle_authority"] = map[string]any{"kid": kid, "public_key_pem": string(pubPEM)}
	m["signed_at"] = signedAt.UTC().Format(time.RFC3339)
	if !expiresAt.IsZero() {
		m["expires_at"] = expiresAt.UTC().Format(time.RFC3339)
	} else {
		delete(m, "expires_at")
	}
	m["signature"] = ""
	c, err := canonicalValue(m)
	if err != nil {
		return nil, err
	}
	sig, err := signDigest(priv, singleDigest(c))
	if err != nil {
		return nil, err
	}
	m["signature"] = sig
	return canonicalValue(m)
}
