package schemapin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
)

// GenerateKey returns a new ECDSA P-256 signing key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// ParsePublicKey parses a PEM "PUBLIC KEY" block (DER SubjectPublicKeyInfo) holding an
// ECDSA P-256 key.
func ParsePublicKey(pemData []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("parse public key: no PEM block")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("parse public key: PEM type %q, want PUBLIC KEY", block.Type)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	ec, ok := k.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("parse public key: not an ECDSA P-256 key")
	}
	return ec, nil
}

// ParsePrivateKey parses a PEM private key: PKCS#8 ("PRIVATE KEY") or SEC1
// ("EC PRIVATE KEY"), ECDSA P-256 only.
func ParsePrivateKey(pemData []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("parse private key: no PEM block")
	}
	var key *ecdsa.PrivateKey
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("parse private key: not an ECDSA key")
		}
		key = ec
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		key = k
	default:
		return nil, fmt.Errorf("parse private key: unsupported PEM type %q", block.Type)
	}
	if key.Curve != elliptic.P256() {
		return nil, errors.New("parse private key: not a P-256 key")
	}
	return key, nil
}

// MarshalPublicKey encodes pub as a PEM "PUBLIC KEY" block (SPKI).
func MarshalPublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// MarshalPrivateKey encodes priv as a PEM "PRIVATE KEY" block (PKCS#8).
func MarshalPrivateKey(priv *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Fingerprint returns "sha256:" followed by the lowercase hex SHA-256 of the DER
// SubjectPublicKeyInfo of pub, the key identifier revocation lists and pins use.
func Fingerprint(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("fingerprint key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// SignOptions tune signing and verification. The zero value (or nil) is the interoperable
// form of the reference Python, JavaScript and Rust SDKs.
type SignOptions struct {
	// GoCompat selects the single-hash form of the reference Go SDK (the ECDSA digest is
	// SHA-256(canonical) instead of SHA-256(SHA-256(canonical))). When verifying, both forms
	// are accepted; when signing, only the Go form is produced. Off by default: such
	// signatures do not verify with the other SDKs.
	GoCompat bool
}

// schemaDigest is the ECDSA digest of a canonical schema: the reference SDKs sign with
// ECDSA-SHA256 over the message SHA-256(canonical), a double hash.
func schemaDigest(canonical []byte) []byte {
	h1 := sha256.Sum256(canonical)
	h2 := sha256.Sum256(h1[:])
	return h2[:]
}

// singleDigest is the digest of the reference Go SDK and of trust bundles: one hash.
func singleDigest(canonical []byte) []byte {
	h := sha256.Sum256(canonical)
	return h[:]
}

// SignCanonical signs canonical (already in canonical form) and returns the padded
// standard base64 of the ASN.1 DER signature.
func SignCanonical(priv *ecdsa.PrivateKey, canonical []byte, opts *SignOptions) (string, error) {
	digest := schemaDigest(canonical)
	if opts != nil && opts.GoCompat {
		digest = singleDigest(canonical)
	}
	return signDigest(priv, digest)
}

func signDigest(priv *ecdsa.PrivateKey, digest []byte) (string, error) {
	sig, err := ecdsa.SignASN1(rand.Reader, priv, digest)
	if err != nil {
		return "", fmt.Errorf("sign schema: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// SignSchema signs the JSON document schema in its SignedForm.
func SignSchema(priv *ecdsa.PrivateKey, schema []byte, opts *SignOptions) (string, error) {
	c, err := SignedForm(schema)
	if err != nil {
		return "", fmt.Errorf("sign schema: %w", err)
	}
	return SignCanonical(priv, c, opts)
}

// ErrBadSignature reports a signature that does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// VerifyCanonical checks sigB64 over canonical with pub. It returns nil or an error
// wrapping ErrBadSignature (or a decoding error).
func VerifyCanonical(pub *ecdsa.PublicKey, canonical []byte, sigB64 string, opts *SignOptions) error {
	sig, err := decodeSignature(sigB64)
	if err != nil {
		return err
	}
	if ecdsa.VerifyASN1(pub, schemaDigest(canonical), sig) {
		return nil
	}
	if opts != nil && opts.GoCompat && ecdsa.VerifyASN1(pub, singleDigest(canonical), sig) {
		return nil
	}
	return fmt.Errorf("verify schema: %w", ErrBadSignature)
}

// VerifySchema checks sigB64 over the SignedForm of the JSON document schema.
func VerifySchema(pub *ecdsa.PublicKey, schema []byte, sigB64 string, opts *SignOptions) error {
	c, err := SignedForm(schema)
	if err != nil {
		return fmt.Errorf("verify schema: %w", err)
	}
	return VerifyCanonical(pub, c, sigB64, opts)
}

// decodeSignature accepts padded standard base64 (what every reference SDK writes). A
// DER ECDSA P-256 signature is at most 72 bytes; anything much longer is refused early.
func decodeSignature(sigB64 string) ([]byte, error) {
	if len(sigB64) == 0 || len(sigB64) > 256 {
		return nil, fmt.Errorf("decode signature: %w: bad length", ErrBadSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return nil, fmt.Errorf("decode signature: %w: %v", ErrBadSignature, err)
	}
	return sig, nil
}
