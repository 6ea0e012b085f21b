package schemapin

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Envelope is a signed schema as the reference tools write it:
// {"schema": ..., "signature": ..., "signed_at": ...}, optionally with "expires_at"
// (v1.4) and "domain".
type Envelope struct {
	Schema    json.RawMessage `json:"schema"`
	Signature string          `json:"signature"`
	SignedAt  string          `json:"signed_at,omitempty"`
	ExpiresAt string          `json:"expires_at,omitempty"`
	Domain    string          `json:"domain,omitempty"`
}

// ParseEnvelope parses a signed-schema envelope. The schema must be a JSON object and the
// signature non-empty.
func ParseEnvelope(data []byte) (*Envelope, error) {
	if len(data) > maxDocument {
		return nil, fmt.Errorf("parse envelope: larger than %d bytes", maxDocument)
	}
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("parse envelope: %w", err)
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return &e, nil
}

func (e *Envelope) check() error {
	if len(e.Schema) == 0 || e.Schema[0] != '{' {
		return errors.New("parse envelope: schema is not a JSON object")
	}
	if !utf8.Valid(e.Schema) {
		return errors.New("parse envelope: schema is not valid UTF-8")
	}
	if e.Signature == "" {
		return errors.New("parse envelope: signature missing")
	}
	return nil
}

// SignEnvelope signs schema (any JSON object) with priv and returns the envelope, stamped
// with signedAt (and expiresAt unless zero). What is signed is SignedForm(schema), and that
// is also the envelope's schema, so that any SchemaPin verifier (which checks the envelope's
// schema as a whole) agrees with symbi's gate (which checks the tool as its upstream lists
// it).
func SignEnvelope(priv *ecdsa.PrivateKey, schema []byte, signedAt, expiresAt time.Time) (*Envelope, error) {
	c, err := SignedForm(schema)
	if err != nil {
		return nil, fmt.Errorf("sign envelope: %w", err)
	}
	if len(c) == 0 || c[0] != '{' {
		return nil, errors.New("sign envelope: schema is not a JSON object")
	}
	sig, err := SignCanonical(priv, c, nil)
	if err != nil {
		return nil, err
	}
	e := &Envelope{Schema: c, Signature: sig, SignedAt: signedAt.UTC().Format(time.RFC3339)}
	if !expiresAt.IsZero() {
		e.ExpiresAt = expiresAt.UTC().Format(time.RFC3339)
	}
	return e, nil
}
