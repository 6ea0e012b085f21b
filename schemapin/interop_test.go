package schemapin

import (
	"errors"
	"testing"
	"time"
)

func TestInteropFixtures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dir      string
		goCompat bool
		wantOK   bool
	}{
		{"python signs double hash", "python-demo", false, true},
		{"javascript signs double hash", "js-demo", false, true},
		{"go single hash refused by default", "go-demo", false, false},
		{"go single hash with compat", "go-demo", true, true},
		{"python still verifies with compat", "python-demo", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := ParseEnvelope(readFixture(t, tc.dir+"/demo_schema_signed.json"))
			if err != nil {
				t.Fatal(err)
			}
			doc, err := ParseDiscovery(readFixture(t, tc.dir+"/demo_well_known.json"))
			if err != nil {
				t.Fatal(err)
			}
			pub, err := doc.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			err = VerifySchema(pub, env.Schema, env.Signature, &SignOptions{GoCompat: tc.goCompat})
			if tc.wantOK && err != nil {
				t.Fatalf("VerifySchema: %v, want success", err)
			}
			if !tc.wantOK && !errors.Is(err, ErrBadSignature) {
				t.Fatalf("VerifySchema: %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestInteropTamperedFixture(t *testing.T) {
	env, err := ParseEnvelope(readFixture(t, "python-demo/demo_schema_signed.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ParseDiscovery(readFixture(t, "python-demo/demo_well_known.json"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := doc.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(`{"name":"calculate_sum","description":"Calculates the sum of two numbers!","parameters":{}}`)
	if err := VerifySchema(pub, tampered, env.Signature, &SignOptions{GoCompat: true}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered schema: %v, want ErrBadSignature", err)
	}
}

func TestInteropSignedBundle(t *testing.T) {
	data := readFixture(t, "cross-language/signed_bundle.json")
	b, err := ParseBundle(data, nil)
	if err != nil {
		t.Fatalf("ParseBundle: %v", err)
	}
	if !b.Signed || b.AuthorityKID != "schemapin-bundle-authority-2026" {
		t.Errorf("Signed=%v kid=%q", b.Signed, b.AuthorityKID)
	}
	doc, err := b.Resolve(t.Context(), "EXAMPLE.com")
	if err != nil {
		t.Fatal(err)
	}
	if doc.DeveloperName != "Example Corp" {
		t.Errorf("developer = %q", doc.DeveloperName)
	}
	if _, err := b.Resolve(t.Context(), "other.example"); !errors.Is(err, ErrNoDiscovery) {
		t.Errorf("unknown domain: %v, want ErrNoDiscovery", err)
	}

	// The expected authority is enforced when configured.
	if _, err := ParseBundle(data, &BundleOptions{AuthorityFingerprint: b.AuthorityFingerprint}); err != nil {
		t.Errorf("matching authority: %v", err)
	}
	if _, err := ParseBundle(data, &BundleOptions{AuthorityFingerprint: "sha256:00"}); err == nil {
		t.Error("foreign authority accepted")
	}
	// Past its expiry the bundle is refused.
	late := func() time.Time { return time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC) }
	if _, err := ParseBundle(data, &BundleOptions{Now: late}); !errors.Is(err, ErrBundleExpired) {
		t.Errorf("expired bundle: %v, want ErrBundleExpired", err)
	}
	// Any change to the signed content breaks the signature.
	tampered := []byte(string(data[:len(data)-2]) + `,"extra":1}`)
	if _, err := ParseBundle(tampered, nil); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered bundle: %v, want ErrBadSignature", err)
	}
}
