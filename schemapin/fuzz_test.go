package schemapin

import (
	"testing"
)

// FuzzParseDocuments feeds the parsers at the trust boundary (discovery documents,
// revocation documents, envelopes, manifests, trust bundles, tool definitions) arbitrary
// input: none may panic, and what they accept must be usable.
func FuzzParseDocuments(f *testing.F) {
	for _, s := range []string{
		`{"schema_version":"1.1","developer_name":"x","public_key_pem":"-----BEGIN PUBLIC KEY-----\nMOCK\n-----END PUBLIC KEY-----","revoked_keys":["sha256:00"]}`,
		`{"schema_version":"1.2","domain":"x","revoked_keys":[{"fingerprint":"sha256:ab","reason":"superseded"}]}`,
		`{"schema":{"name":"a"},"signature":"MEUCIQ==","signed_at":"2026-01-01T00:00:00Z"}`,
		`[{"schema":{"name":"a"},"signature":"MEU="}]`,
		`{"tools":[{"schema":{"name":"a"},"signature":"MEU="}]}`,
		`{"schemapin_bundle_version":"1.4","documents":[{"domain":"a","public_key_pem":"x"}],"revocations":[{"domain":"a","revoked_keys":[]}],"bundle_authority":{"kid":"k","public_key_pem":"x"},"signature":"MEU="}`,
		`{"entries":[{"domain":"a","discovery":{"public_key_pem":"x"},"revocation":null}]}`,
		`{"name":"t","inputSchema":{"type":"object","signature":"MEU="},"_meta":{"schemapin/signature":{"signature":"x","expires_at":"2026-01-01T00:00:00Z"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if d, err := ParseDiscovery(data); err == nil {
			d.Revoked("sha256:00")
			d.PublicKey()
		}
		ParseRevocation(data)
		if e, err := ParseEnvelope(data); err == nil {
			if _, err := Canonicalize(e.Schema); err != nil {
				t.Fatalf("accepted envelope has a schema that does not canonicalize: %v", err)
			}
		}
		parseManifest(data)
		if b, err := ParseBundle(data, &BundleOptions{AllowUnsigned: true}); err == nil {
			for _, d := range b.Domains() {
				if _, err := b.Resolve(t.Context(), d); err != nil {
					t.Fatalf("bundle lists %q but cannot resolve it: %v", d, err)
				}
			}
		}
		if c, name, err := ToolDefinition(data); err == nil {
			if name == "" {
				t.Fatal("tool accepted without a name")
			}
			c2, err := Canonicalize(c)
			if err != nil || string(c2) != string(c) {
				t.Fatalf("tool definition not canonical: %q", c)
			}
		}
	})
}
