package schemapin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSignedForm(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"mcp tool: only what defines the tool",
			`{"name":"t","inputSchema":{"type":"object","signature":"x"},"execution":{"taskSupport":"forbidden"},"_meta":{"k":1},"icons":[],"title":"T"}`,
			`{"inputSchema":{"type":"object"},"name":"t","title":"T"}`},
		{"mcp tool keeps numbers and unknown annotation keys as sent",
			`{"name":"t","inputSchema":{"default":1.0},"annotations":{"x-vendor":true,"readOnlyHint":false}}`,
			`{"annotations":{"readOnlyHint":false,"x-vendor":true},"inputSchema":{"default":1.0},"name":"t"}`},
		{"reference schema signed whole",
			`{"name":"calculate_sum","description":"d","parameters":{"type":"object"},"extra":1}`,
			`{"description":"d","extra":1,"name":"calculate_sum","parameters":{"type":"object"}}`},
		{"name that is not a string: signed whole", `{"name":1,"inputSchema":{}}`, `{"inputSchema":{},"name":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SignedForm([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("SignedForm(%s) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// TestSignListedToolVerifiesAtGate: a tool signed as its upstream lists it (the README's
// `symbi schemapin sign --schema tool.json`, execution and all) verifies when the gate
// checks the same listing through a manifest, and the envelope also verifies the way a
// reference SDK checks one (over its whole schema).
func TestSignListedToolVerifiesAtGate(t *testing.T) {
	k := newTestKey(t)
	listed := `{"name":"create_entities","title":"Create","description":"d","inputSchema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"n":{"type":"number","default":1.0}}},"annotations":{"readOnlyHint":false,"x-vendor":"kept"},"execution":{"taskSupport":"forbidden"},"outputSchema":{"type":"object"},"_meta":{"ui":1}}`
	env, err := SignEnvelope(k.priv, []byte(listed), time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.doc.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyCanonical(pub, mustCanonical(t, env.Schema), env.Signature, nil); err != nil {
		t.Errorf("envelope does not verify over its whole schema (reference SDK view): %v", err)
	}
	manifest := filepath.Join(t.TempDir(), "manifest.json")
	mb, _ := json.Marshal([]*Envelope{env})
	if err := os.WriteFile(manifest, mb, 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGate(t, &GateOptions{Resolver: mapResolver{"tools.example.com": k.doc}})
	opts := UpstreamOptions{Mode: ModeStrict, Domain: "tools.example.com", ManifestFile: manifest}
	d, err := g.Check(t.Context(), "up", opts, []byte(listed))
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != StatusVerified || !d.Allowed {
		t.Fatalf("listed tool: %s allowed=%v (%s), want verified", d.Status, d.Allowed, d.Reason)
	}
	// The same tool re-encoded (1.0 as 1, the unknown annotation key dropped) is not what
	// was signed, and the reason says the listing differs from the manifest.
	reencoded := `{"name":"create_entities","title":"Create","description":"d","inputSchema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"n":{"type":"number","default":1}}},"annotations":{"readOnlyHint":false},"outputSchema":{"type":"object"}}`
	d, err = g.Check(t.Context(), "up2", opts, []byte(reencoded))
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != StatusInvalid || d.Allowed {
		t.Fatalf("re-encoded tool: %s allowed=%v, want invalid", d.Status, d.Allowed)
	}
	if want := "differs from the manifest's signed schema"; !strings.Contains(d.Reason, want) {
		t.Errorf("reason %q does not say %q", d.Reason, want)
	}
}

func mustCanonical(t testing.TB, doc []byte) []byte {
	t.Helper()
	c, err := Canonicalize(doc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
