package schemapin

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Status is a tool's verification status, as the policy input and the audit trail carry it.
type Status string

// The verification statuses (DESIGN.md).
const (
	StatusVerified          Status = "verified"
	StatusUnsigned          Status = "unsigned"
	StatusInvalid           Status = "invalid"
	StatusRevoked           Status = "revoked"
	StatusKeyChanged        Status = "key_changed"
	StatusDefinitionChanged Status = "definition_changed"
	StatusDisabled          Status = "disabled"
)

// Verification is the outcome of verifying one tool definition.
type Verification struct {
	Status      Status `json:"status"`
	Domain      string `json:"domain,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Reason explains any status other than verified, for operators and the audit trail.
	Reason string `json:"reason,omitempty"`
	// Expired is set when the signature verified but its expires_at has passed (the status
	// is then invalid).
	Expired bool `json:"expired,omitempty"`
}

// Signed is a signed definition to verify.
type Signed struct {
	// Canonical is the signed document in canonical form (see Canonicalize and
	// ToolDefinition).
	Canonical []byte
	// Signature is the padded standard base64 of the DER signature.
	Signature string
	// ExpiresAt is the signature's RFC 3339 expiry, "" if none.
	ExpiresAt string
	// Domain is the domain whose key must have signed.
	Domain string
	// ToolID names the tool for pinning; "" disables pinning for this check.
	ToolID string
}

// VerifierOptions tune a Verifier. Nil means defaults.
type VerifierOptions struct {
	// Pins, when set, enables trust-on-first-use pinning per tool@domain.
	Pins *PinStore
	// GoCompat also accepts the single-hash signatures of the reference Go SDK.
	GoCompat bool
	// Now is the clock for expires_at; nil means time.Now.
	Now func() time.Time
}

// Verifier checks signatures against discovered keys, revocation and pins.
type Verifier struct {
	resolver Resolver
	pins     *PinStore
	sign     *SignOptions
	now      func() time.Time
}

// NewVerifier returns a verifier that finds keys with r.
func NewVerifier(r Resolver, opts *VerifierOptions) *Verifier {
	var o VerifierOptions
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Verifier{resolver: r, pins: o.Pins, sign: &SignOptions{GoCompat: o.GoCompat}, now: o.Now}
}

// Verify checks s, in the order of the reference SDKs: discovery, revocation (a revoked key
// never reaches signature verification), signature, expiry, then the pin. A key is pinned
// only once its signature verified. The error is reserved for failures of the pin store;
// every verification outcome is a Verification.
func (v *Verifier) Verify(ctx context.Context, s Signed) (Verification, error) {
	out := Verification{Domain: s.Domain}
	bad := func(st Status, format string, args ...any) (Verification, error) {
		out.Status, out.Reason = st, fmt.Sprintf(format, args...)
		return out, nil
	}
	doc, err := v.resolver.Resolve(ctx, s.Domain)
	if err != nil {
		return bad(StatusInvalid, "no usable discovery document: %v", err)
	}
	pub, err := doc.PublicKey()
	if err != nil {
		return bad(StatusInvalid, "discovery key unusable: %v", err)
	}
	fp, err := Fingerprint(pub)
	if err != nil {
		return bad(StatusInvalid, "discovery key unusable: %v", err)
	}
	out.Fingerprint = fp
	if revoked, why := doc.Revoked(fp); revoked {
		return bad(StatusRevoked, "key %s revoked: %s", fp, why)
	}
	if err := VerifyCanonical(pub, s.Canonical, s.Signature, v.sign); err != nil {
		return bad(StatusInvalid, "%v", err)
	}
	if s.ExpiresAt != "" {
		exp, err := time.Parse(time.RFC3339, s.ExpiresAt)
		if err != nil {
			return bad(StatusInvalid, "signature expires_at %q unparseable", s.ExpiresAt)
		}
		if v.now().After(exp) {
			out.Expired = true
			return bad(StatusInvalid, "signature expired at %s", s.ExpiresAt)
		}
	}
	if v.pins != nil && s.ToolID != "" {
		pin, err := v.pins.pinFirst(ctx, Pin{ToolID: s.ToolID, Domain: s.Domain, Fingerprint: fp,
			PublicKeyPEM: doc.PublicKeyPEM, DeveloperName: doc.DeveloperName})
		if err != nil {
			return Verification{}, err
		}
		if !strings.EqualFold(pin.Fingerprint, fp) {
			return bad(StatusKeyChanged, "key for %s is %s but %s is pinned; an operator must re-pin", pin.Key(), fp, pin.Fingerprint)
		}
	}
	out.Status = StatusVerified
	return out, nil
}
