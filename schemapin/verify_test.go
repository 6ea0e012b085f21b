package schemapin

import (
	"context"
	"crypto/ecdsa"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/symbi-dev/symbi/internal/store"
)

type testKey struct {
	priv *ecdsa.PrivateKey
	fp   string
	doc  *Discovery
}

func newTestKey(t testing.TB) testKey {
	t.Helper()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	fp, err := Fingerprint(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := NewDiscovery(&priv.PublicKey, "Test Dev", "")
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv, fp, doc}
}

func newPinStore(t testing.TB) *PinStore {
	t.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ps, err := NewPinStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// mapResolver serves documents by domain; its map can be changed between checks.
type mapResolver map[string]*Discovery

func (m mapResolver) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	if d := m[domain]; d != nil {
		return d, nil
	}
	return nil, ErrNoDiscovery
}

func TestVerifier(t *testing.T) {
	k1, k2 := newTestKey(t), newTestKey(t)
	schema := []byte(`{"name":"echo","description":"says it back"}`)
	canon, _ := Canonicalize(schema)
	sig1, _ := SignCanonical(k1.priv, canon, nil)
	sig2, _ := SignCanonical(k2.priv, canon, nil)
	goSig1, _ := SignCanonical(k1.priv, canon, &SignOptions{GoCompat: true})
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

	revokedInline := *k1.doc
	revokedInline.RevokedKeys = []string{k1.fp}
	revokedDoc := *k1.doc
	revokedDoc.Revocation = &RevocationDocument{RevokedKeys: []RevokedKey{{Fingerprint: k1.fp, Reason: "key_compromise"}}}
	mockKey := Discovery{PublicKeyPEM: "-----BEGIN PUBLIC KEY-----\nMOCK\n-----END PUBLIC KEY-----"}

	type step struct {
		doc       *Discovery
		sig       string
		canon     []byte
		expiresAt string
		goCompat  bool
		want      Verification
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"verified and pinned, then same key again", []step{
			{doc: k1.doc, sig: sig1, want: Verification{Status: StatusVerified, Fingerprint: k1.fp}},
			{doc: k1.doc, sig: sig1, want: Verification{Status: StatusVerified, Fingerprint: k1.fp}},
		}},
		{"key change after pin", []step{
			{doc: k1.doc, sig: sig1, want: Verification{Status: StatusVerified, Fingerprint: k1.fp}},
			{doc: k2.doc, sig: sig2, want: Verification{Status: StatusKeyChanged, Fingerprint: k2.fp}},
			{doc: k2.doc, sig: sig2, want: Verification{Status: StatusKeyChanged, Fingerprint: k2.fp}},
		}},
		{"no pin before a verified signature", []step{
			{doc: k2.doc, sig: sig1, want: Verification{Status: StatusInvalid, Fingerprint: k2.fp}},
			{doc: k1.doc, sig: sig1, want: Verification{Status: StatusVerified, Fingerprint: k1.fp}},
		}},
		{"tampered definition", []step{
			{doc: k1.doc, sig: sig1, canon: []byte(`{"description":"says it back!","name":"echo"}`), want: Verification{Status: StatusInvalid, Fingerprint: k1.fp}},
		}},
		{"revoked inline", []step{{doc: &revokedInline, sig: sig1, want: Verification{Status: StatusRevoked, Fingerprint: k1.fp}}}},
		{"revoked by revocation document", []step{{doc: &revokedDoc, sig: sig1, want: Verification{Status: StatusRevoked, Fingerprint: k1.fp}}}},
		{"revoked key is never pinned", []step{
			{doc: &revokedInline, sig: sig1, want: Verification{Status: StatusRevoked, Fingerprint: k1.fp}},
			{doc: k2.doc, sig: sig2, want: Verification{Status: StatusVerified, Fingerprint: k2.fp}},
		}},
		{"expired signature reported", []step{{doc: k1.doc, sig: sig1, expiresAt: "2026-01-01T00:00:00Z", want: Verification{Status: StatusInvalid, Fingerprint: k1.fp, Expired: true}}}},
		{"unexpired signature", []step{{doc: k1.doc, sig: sig1, expiresAt: "2027-01-01T00:00:00Z", want: Verification{Status: StatusVerified, Fingerprint: k1.fp}}}},
		{"unparseable expiry refused", []step{{doc: k1.doc, sig: sig1, expiresAt: "soon", want: Verification{Status: StatusInvalid, Fingerprint: k1.fp}}}},
		{"go form without compat", []step{{doc: k1.doc, sig: goSig1, want: Verification{Status: StatusInvalid, Fingerprint: k1.fp}}}},
		{"go form with compat", []step{{doc: k1.doc, sig: goSig1, goCompat: true, want: Verification{Status: StatusVerified, Fingerprint: k1.fp}}}},
		{"no discovery", []step{{doc: nil, sig: sig1, want: Verification{Status: StatusInvalid}}}},
		{"unusable key", []step{{doc: &mockKey, sig: sig1, want: Verification{Status: StatusInvalid}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pins := newPinStore(t)
			res := mapResolver{}
			for i, st := range tc.steps {
				res["tools.example.com"] = st.doc
				v := NewVerifier(res, &VerifierOptions{Pins: pins, GoCompat: st.goCompat, Now: func() time.Time { return now }})
				c := canon
				if st.canon != nil {
					c = st.canon
				}
				got, err := v.Verify(t.Context(), Signed{Canonical: c, Signature: st.sig, ExpiresAt: st.expiresAt, Domain: "tools.example.com", ToolID: "echo"})
				if err != nil {
					t.Fatal(err)
				}
				st.want.Domain = "tools.example.com"
				if diff := cmp.Diff(st.want, got, cmpopts.IgnoreFields(Verification{}, "Reason")); diff != "" {
					t.Errorf("step %d (-want +got):\n%s", i, diff)
				}
				if got.Status != StatusVerified && got.Reason == "" {
					t.Errorf("step %d: status %s without a reason", i, got.Status)
				}
			}
		})
	}
}

func TestPinStoreOperator(t *testing.T) {
	k1, k2 := newTestKey(t), newTestKey(t)
	pins := newPinStore(t)
	schema := []byte(`{"name":"echo"}`)
	canon, _ := Canonicalize(schema)
	sig1, _ := SignCanonical(k1.priv, canon, nil)
	sig2, _ := SignCanonical(k2.priv, canon, nil)
	res := mapResolver{"d": k1.doc}
	v := NewVerifier(res, &VerifierOptions{Pins: pins})
	check := func(sig string, want Status) {
		t.Helper()
		got, err := v.Verify(t.Context(), Signed{Canonical: canon, Signature: sig, Domain: "d", ToolID: "echo"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != want {
			t.Fatalf("status %s (%s), want %s", got.Status, got.Reason, want)
		}
	}
	check(sig1, StatusVerified)
	res["d"] = k2.doc
	check(sig2, StatusKeyChanged)

	// An operator re-pins the new key.
	if err := pins.Pin(t.Context(), Pin{ToolID: "echo", Domain: "d", Fingerprint: k2.fp}); err != nil {
		t.Fatal(err)
	}
	check(sig2, StatusVerified)
	list, err := pins.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Fingerprint != k2.fp || list[0].Source != "operator" || list[0].Key() != "echo@d" {
		t.Errorf("List = %+v", list)
	}

	// Unpinning lets the next verified key pin itself.
	res["d"] = k1.doc
	check(sig1, StatusKeyChanged)
	if ok, err := pins.Unpin(t.Context(), "echo", "d"); err != nil || !ok {
		t.Fatalf("Unpin = %v, %v", ok, err)
	}
	if ok, _ := pins.Unpin(t.Context(), "echo", "d"); ok {
		t.Error("second Unpin reported a pin")
	}
	check(sig1, StatusVerified)
	p, ok, err := pins.Get(t.Context(), "echo", "d")
	if err != nil || !ok || p.Fingerprint != k1.fp || p.Source != "tofu" {
		t.Errorf("Get = %+v %v %v", p, ok, err)
	}
}
