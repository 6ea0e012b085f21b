package schemapin

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Discovery is a SchemaPin discovery document, as served at
// https://{domain}/.well-known/schemapin.json.
type Discovery struct {
	SchemaVersion      string   `json:"schema_version"`
	DeveloperName      string   `json:"developer_name"`
	PublicKeyPEM       string   `json:"public_key_pem"`
	RevokedKeys        []string `json:"revoked_keys,omitempty"`
	Contact            string   `json:"contact,omitempty"`
	RevocationEndpoint string   `json:"revocation_endpoint,omitempty"`

	// Revocation is the standalone revocation document that came with this discovery
	// document (fetched from RevocationEndpoint, or carried by a trust bundle), if any.
	Revocation *RevocationDocument `json:"-"`
}

// RevocationDocument is a standalone SchemaPin revocation document (v1.2+).
type RevocationDocument struct {
	SchemaVersion string       `json:"schema_version,omitempty"`
	Domain        string       `json:"domain,omitempty"`
	IssuedAt      string       `json:"issued_at,omitempty"`
	RevokedKeys   []RevokedKey `json:"revoked_keys"`
}

// RevokedKey is one entry of a revocation document.
type RevokedKey struct {
	Fingerprint string `json:"fingerprint"`
	RevokedAt   string `json:"revoked_at,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// maxDocument bounds every document this package parses (discovery, revocation, bundle
// entries, envelopes); trust bundles get maxBundle.
const (
	maxDocument = 64 << 10
	maxBundle   = 8 << 20
)

// ParseDiscovery parses and checks a discovery document. The public key must be present;
// whether it parses is checked when it is used, so that one bad entry of a bundle does not
// spoil the others.
func ParseDiscovery(data []byte) (*Discovery, error) {
	if len(data) > maxDocument {
		return nil, fmt.Errorf("parse discovery: document larger than %d bytes", maxDocument)
	}
	var d Discovery
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("parse discovery: %w", err)
	}
	if err := d.check(); err != nil {
		return nil, err
	}
	return &d, nil
}

func (d *Discovery) check() error {
	if strings.TrimSpace(d.PublicKeyPEM) == "" {
		return errors.New("parse discovery: public_key_pem missing")
	}
	return nil
}

// PublicKey parses the document's public key.
func (d *Discovery) PublicKey() (*ecdsa.PublicKey, error) {
	return ParsePublicKey([]byte(d.PublicKeyPEM))
}

// ParseRevocation parses a standalone revocation document.
func ParseRevocation(data []byte) (*RevocationDocument, error) {
	if len(data) > maxDocument {
		return nil, fmt.Errorf("parse revocation: document larger than %d bytes", maxDocument)
	}
	var r RevocationDocument
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("parse revocation: %w", err)
	}
	return &r, nil
}

// Revoked reports whether fingerprint appears in the inline revoked_keys or in the
// standalone revocation document, and the reason given, if any. Entries are compared
// exactly (fingerprints are lowercase); a malformed entry never matches, which is the
// reference SDKs' behaviour too (their demo documents carry placeholder entries).
func (d *Discovery) Revoked(fingerprint string) (bool, string) {
	for _, fp := range d.RevokedKeys {
		if strings.EqualFold(fp, fingerprint) {
			return true, "listed in revoked_keys"
		}
	}
	if d.Revocation != nil {
		for _, k := range d.Revocation.RevokedKeys {
			if strings.EqualFold(k.Fingerprint, fingerprint) {
				reason := "listed in the revocation document"
				if k.Reason != "" {
					reason += ": " + k.Reason
				}
				return true, reason
			}
		}
	}
	return false, ""
}

// NewDiscovery builds the discovery document for pub, as symbi publishes for its own
// built-in tools.
func NewDiscovery(pub *ecdsa.PublicKey, developer, contact string) (*Discovery, error) {
	p, err := MarshalPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return &Discovery{
		SchemaVersion: "1.2",
		DeveloperName: developer,
		PublicKeyPEM:  string(p),
		RevokedKeys:   []string{},
		Contact:       contact,
	}, nil
}

// MarshalIndent renders the document as indented JSON without HTML escaping.
func (d *Discovery) MarshalIndent() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode discovery: %w", err)
	}
	return buf.Bytes(), nil
}

// A Resolver finds the discovery document (with any revocation data) for a domain.
type Resolver interface {
	Resolve(ctx context.Context, domain string) (*Discovery, error)
}

// ErrNoDiscovery reports that a resolver has no discovery document for a domain.
var ErrNoDiscovery = errors.New("no discovery document")

// StaticResolver returns the same document for every domain (a discovery file named in an
// upstream's configuration, or one given on the command line).
type StaticResolver struct{ Doc *Discovery }

// Resolve implements Resolver.
func (s StaticResolver) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	if s.Doc == nil {
		return nil, fmt.Errorf("resolve %s: %w", domain, ErrNoDiscovery)
	}
	return s.Doc, nil
}

// ChainResolver tries resolvers in order and returns the first document found. Only
// ErrNoDiscovery moves on to the next resolver; other errors stop the chain.
type ChainResolver []Resolver

// Resolve implements Resolver.
func (c ChainResolver) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	for _, r := range c {
		d, err := r.Resolve(ctx, domain)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, ErrNoDiscovery) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("resolve %s: %w", domain, ErrNoDiscovery)
}

// WellKnownHandler serves doc as JSON, for symbi's own /.well-known/schemapin.json.
func WellKnownHandler(doc *Discovery) http.Handler {
	body, err := doc.MarshalIndent()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err != nil {
			http.Error(w, "discovery document unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Write(body)
	})
}
