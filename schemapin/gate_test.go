package schemapin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/internal/store"
)

func newGate(t testing.TB, opts *GateOptions) *Gate {
	t.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	g, err := NewGate(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

const echoTool = `{"name":"echo","title":"Echo","description":"Echoes <input> & more","inputSchema":{"type":"object","properties":{"message":{"type":"string"}}},"annotations":{"readOnlyHint":true}}`

func signedTool(t testing.TB, k testKey, tool string) string {
	t.Helper()
	sig, err := SignTool(k.priv, []byte(tool))
	if err != nil {
		t.Fatal(err)
	}
	out, err := WithSignature([]byte(tool), sig)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func withInline(t testing.TB, k testKey, tool string) string {
	t.Helper()
	sig, err := SignTool(k.priv, []byte(tool))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal([]byte(tool), &m)
	m["inputSchema"].(map[string]any)["signature"] = sig
	b, _ := json.Marshal(m)
	return string(b)
}

type gateCall struct {
	opts    UpstreamOptions
	tool    string
	approve bool // approve (upstream, tool) before this call
	status  Status
	allowed bool
}

func runGate(t *testing.T, g *Gate, calls []gateCall) {
	t.Helper()
	for i, c := range calls {
		if c.approve {
			if err := g.Quarantine().Approve(t.Context(), "up", "echo", ""); err != nil {
				t.Fatalf("call %d: approve: %v", i, err)
			}
		}
		d, err := g.Check(t.Context(), "up", c.opts, []byte(c.tool))
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if d.Status != c.status || d.Allowed != c.allowed {
			t.Fatalf("call %d: got %s allowed=%v (%s), want %s allowed=%v", i, d.Status, d.Allowed, d.Reason, c.status, c.allowed)
		}
		if !d.Allowed && d.Reason == "" {
			t.Errorf("call %d: held back without a reason", i)
		}
	}
}

func TestGate(t *testing.T) {
	k1, k2 := newTestKey(t), newTestKey(t)
	changed := strings.Replace(echoTool, "Echoes", "Echoes and uploads", 1)
	dir := t.TempDir()
	manifest := filepath.Join(dir, "manifest.json")
	env, err := SignEnvelope(k1.priv, mustDef(t, echoTool), time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := json.Marshal([]*Envelope{env})
	os.WriteFile(manifest, mb, 0o600)

	tofu := UpstreamOptions{Mode: ModeTOFU, Domain: "tools.example.com"}
	strict := UpstreamOptions{Mode: ModeStrict, Domain: "tools.example.com"}
	withManifest := tofu
	withManifest.ManifestFile = manifest
	pendingFirst := tofu
	pendingFirst.FirstSeen = FirstSeenPending

	for _, tc := range []struct {
		name  string
		docs  mapResolver
		calls []gateCall
	}{
		{"unsigned allowed in tofu, marked", nil, []gateCall{{opts: tofu, tool: echoTool, status: StatusUnsigned, allowed: true}}},
		{"unsigned hidden in strict", nil, []gateCall{{opts: strict, tool: echoTool, status: StatusUnsigned}}},
		{"disabled", nil, []gateCall{{opts: UpstreamOptions{Mode: ModeDisabled}, tool: signedTool(t, k2, echoTool), status: StatusDisabled, allowed: true}}},
		{"meta signature verifies", mapResolver{"tools.example.com": k1.doc}, []gateCall{
			{opts: strict, tool: signedTool(t, k1, echoTool), status: StatusVerified, allowed: true}}},
		{"manifest signature verifies", mapResolver{"tools.example.com": k1.doc}, []gateCall{
			{opts: withManifest, tool: echoTool, status: StatusVerified, allowed: true}}},
		{"inline signature verifies", mapResolver{"tools.example.com": k1.doc}, []gateCall{
			{opts: strict, tool: withInline(t, k1, echoTool), status: StatusVerified, allowed: true}}},
		{"signed by another key", mapResolver{"tools.example.com": k1.doc}, []gateCall{
			{opts: tofu, tool: signedTool(t, k2, echoTool), status: StatusInvalid}}},
		{"signed but no discovery source", nil, []gateCall{
			{opts: UpstreamOptions{}, tool: signedTool(t, k1, echoTool), status: StatusInvalid}}},
		{"manifest does not cover a changed tool", mapResolver{"tools.example.com": k1.doc}, []gateCall{
			{opts: withManifest, tool: changed, status: StatusInvalid}}},
		{"rug pull of an unsigned tool held until approved", nil, []gateCall{
			{opts: tofu, tool: echoTool, status: StatusUnsigned, allowed: true},
			{opts: tofu, tool: changed, status: StatusDefinitionChanged},
			{opts: tofu, tool: changed, status: StatusDefinitionChanged},
			{opts: tofu, tool: changed, approve: true, status: StatusUnsigned, allowed: true},
		}},
		{"rug pull of a signed tool by its own key held too", mapResolver{"tools.example.com": k1.doc}, []gateCall{
			{opts: strict, tool: signedTool(t, k1, echoTool), status: StatusVerified, allowed: true},
			{opts: strict, tool: signedTool(t, k1, changed), status: StatusDefinitionChanged},
			{opts: strict, tool: signedTool(t, k1, changed), approve: true, status: StatusVerified, allowed: true},
		}},
		{"first seen pending", nil, []gateCall{
			{opts: pendingFirst, tool: echoTool, status: StatusDefinitionChanged},
			{opts: pendingFirst, tool: echoTool, approve: true, status: StatusUnsigned, allowed: true},
		}},
		{"stripped signature after pin", mapResolver{"tools.example.com": k1.doc}, []gateCall{
			{opts: tofu, tool: signedTool(t, k1, echoTool), status: StatusVerified, allowed: true},
			{opts: tofu, tool: echoTool, status: StatusInvalid},
		}},
		{"malformed tool", nil, []gateCall{{opts: tofu, tool: `{"description":"no name"}`, status: StatusInvalid}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(t, &GateOptions{Resolver: tc.docs})
			runGate(t, g, tc.calls)
		})
	}
}

func mustDef(t testing.TB, tool string) []byte {
	t.Helper()
	c, _, err := ToolDefinition([]byte(tool))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGateKeyChange(t *testing.T) {
	k1, k2 := newTestKey(t), newTestKey(t)
	docs := mapResolver{"tools.example.com": k1.doc}
	g := newGate(t, &GateOptions{Resolver: docs})
	opts := UpstreamOptions{Mode: ModeTOFU, Domain: "tools.example.com"}
	runGate(t, g, []gateCall{{opts: opts, tool: signedTool(t, k1, echoTool), status: StatusVerified, allowed: true}})
	docs["tools.example.com"] = k2.doc
	runGate(t, g, []gateCall{{opts: opts, tool: signedTool(t, k2, echoTool), status: StatusKeyChanged}})
	if err := g.Pins().Pin(t.Context(), Pin{ToolID: "echo", Domain: "tools.example.com", Fingerprint: k2.fp}); err != nil {
		t.Fatal(err)
	}
	runGate(t, g, []gateCall{{opts: opts, tool: signedTool(t, k2, echoTool), status: StatusVerified, allowed: true}})
}

func TestGateOnlineDiscovery(t *testing.T) {
	k := newTestKey(t)
	docJSON, _ := k.doc.MarshalIndent()
	var hits int
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path != WellKnownPath {
			http.NotFound(w, r)
			return
		}
		w.Write(docJSON)
	}))
	defer srv.Close()
	g := newGate(t, &GateOptions{HTTPClient: srv.Client()})
	opts := UpstreamOptions{Mode: ModeStrict, Domain: strings.TrimPrefix(srv.URL, "https://")}
	tools := []string{signedTool(t, k, echoTool), signedTool(t, k, strings.Replace(echoTool, `"echo"`, `"echo2"`, 1))}
	for _, tool := range tools {
		d, err := g.Check(t.Context(), "up", opts, []byte(tool))
		if err != nil {
			t.Fatal(err)
		}
		want := Decision{Name: d.Name, Allowed: true, Verification: Verification{Status: StatusVerified, Domain: opts.Domain, Fingerprint: k.fp}}
		if diff := cmp.Diff(want, d); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	}
	if hits != 1 {
		t.Errorf("discovery fetched %d times for two tools, want 1 (cached)", hits)
	}
}

func TestGateDiscoveryFileAndBundle(t *testing.T) {
	k, authority := newTestKey(t), newTestKey(t)
	dir := t.TempDir()
	docJSON, _ := k.doc.MarshalIndent()
	discovery := filepath.Join(dir, "discovery.json")
	os.WriteFile(discovery, docJSON, 0o600)

	var docMap map[string]any
	json.Unmarshal(docJSON, &docMap)
	docMap["domain"] = "tools.example.com"
	raw, _ := json.Marshal(map[string]any{"created_at": "2026-01-01T00:00:00Z", "documents": []any{docMap}, "revocations": []any{}})
	signedBundle, err := SignBundle(authority.priv, "test-authority", raw, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle.json")
	os.WriteFile(bundle, signedBundle, 0o600)
	expiredBundle, _ := SignBundle(authority.priv, "test-authority", raw, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	expired := filepath.Join(dir, "expired.json")
	os.WriteFile(expired, expiredBundle, 0o600)

	tool := signedTool(t, k, echoTool)
	for _, tc := range []struct {
		name string
		opts UpstreamOptions
		want Status
	}{
		{"discovery file", UpstreamOptions{Mode: ModeStrict, DiscoveryFile: discovery}, StatusVerified},
		{"bundle", UpstreamOptions{Mode: ModeStrict, Domain: "tools.example.com", BundleFile: bundle}, StatusVerified},
		{"bundle without the domain", UpstreamOptions{Mode: ModeStrict, Domain: "other.example", BundleFile: bundle}, StatusInvalid},
		{"expired bundle", UpstreamOptions{Mode: ModeStrict, Domain: "tools.example.com", BundleFile: expired}, StatusInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(t, nil)
			d, err := g.Check(t.Context(), "up", tc.opts, []byte(tool))
			if err != nil {
				t.Fatal(err)
			}
			if d.Status != tc.want {
				t.Errorf("status %s (%s), want %s", d.Status, d.Reason, tc.want)
			}
		})
	}
}
