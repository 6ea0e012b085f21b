package schemapin

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"github.com/symbi-dev/symbi/internal/fixtures"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readFixture reads the reference project's interop data in place, from ../shared beside
// the checkout: fixtures.Dir skips without it, or fails in CI (SYMBI_REQUIRE_SHARED=1).
func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtures.Dir(t, "schemapin"), name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestFingerprintMatchesOpenSSL(t *testing.T) {
	doc, err := ParseDiscovery(readFixture(t, "python-demo/demo_well_known.json"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := doc.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Fingerprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	// openssl pkey -pubin -outform DER | openssl dgst -sha256
	const want = "sha256:23126becd9f4f73aff0088cfd07512acf4b61ee114ef9717259c8db54b7b60f7"
	if got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	schema := []byte(`{"name":"echo","description":"<says> & \u2028 back","inputSchema":{"type":"object"}}`)
	sameSchemaReordered := []byte(`{"inputSchema":{"type":"object"},"description":"<says> & \u2028 back","name":"echo"}`)
	sig, err := SignSchema(priv, schema, nil)
	if err != nil {
		t.Fatal(err)
	}
	goSig, err := SignSchema(priv, schema, &SignOptions{GoCompat: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		pub    *ecdsa.PublicKey
		schema []byte
		sig    string
		opts   *SignOptions
		wantOK bool
	}{
		{"same schema", &priv.PublicKey, schema, sig, nil, true},
		{"key order does not matter", &priv.PublicKey, sameSchemaReordered, sig, nil, true},
		{"other key", &other.PublicKey, schema, sig, nil, false},
		{"changed schema", &priv.PublicKey, []byte(`{"name":"echo2"}`), sig, nil, false},
		{"go form refused by default", &priv.PublicKey, schema, goSig, nil, false},
		{"go form with compat", &priv.PublicKey, schema, goSig, &SignOptions{GoCompat: true}, true},
		{"not base64", &priv.PublicKey, schema, "!!!", nil, false},
		{"empty signature", &priv.PublicKey, schema, "", nil, false},
		{"unpadded base64 refused", &priv.PublicKey, schema, strings.TrimRight(sig, "="), nil, strings.TrimRight(sig, "=") == sig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifySchema(tc.pub, tc.schema, tc.sig, tc.opts)
			if tc.wantOK != (err == nil) {
				t.Fatalf("VerifySchema = %v, want ok=%v", err, tc.wantOK)
			}
			if err != nil && !errors.Is(err, ErrBadSignature) {
				t.Errorf("error %v does not wrap ErrBadSignature", err)
			}
		})
	}
}

func TestKeyPEM(t *testing.T) {
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	secDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: secDER})
	for name, data := range map[string][]byte{"pkcs8": pkcs8, "sec1": sec1} {
		got, err := ParsePrivateKey(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Equal(priv) {
			t.Errorf("%s: parsed key differs", name)
		}
	}
	pubPEM, err := MarshalPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&priv.PublicKey) {
		t.Error("public key round trip differs")
	}

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384PEM, err := MarshalPublicKey(&p384.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	edPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER})
	for _, tc := range []struct {
		name string
		fn   func() error
	}{
		{"public: P-384 refused", func() error { _, err := ParsePublicKey(p384PEM); return err }},
		{"public: private PEM refused", func() error { _, err := ParsePublicKey(pkcs8); return err }},
		{"public: not PEM", func() error { _, err := ParsePublicKey([]byte("MOCK")); return err }},
		{"private: ed25519 refused", func() error { _, err := ParsePrivateKey(edPEM); return err }},
		{"private: public PEM refused", func() error { _, err := ParsePrivateKey(pubPEM); return err }},
	} {
		if err := tc.fn(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
