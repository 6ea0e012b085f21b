package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/symbi-dev/symbi/internal/fixtures"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/schemapin"
)

func runSP(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runSchemapin(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeTemp(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSchemapinKeygenSignVerify(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	code, out, errOut := runSP(t, "keygen", "--out", keys)
	if code != 0 {
		t.Fatalf("keygen = %d: %s", code, errOut)
	}
	fp := strings.TrimSpace(out)
	if !strings.HasPrefix(fp, "sha256:") || len(fp) != 71 {
		t.Errorf("keygen printed %q, want a fingerprint", out)
	}
	fi, err := os.Stat(filepath.Join(keys, "private_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	if code, _, _ := runSP(t, "keygen", "--out", keys); code != 2 {
		t.Errorf("keygen over existing keys = %d, want 2", code)
	}
	priv := filepath.Join(keys, "private_key.pem")
	pub := filepath.Join(keys, "public_key.pem")

	schema := writeTemp(t, dir, "schema.json", `{"name":"calc","description":"adds <a> & <b>","inputSchema":{"type":"object"}}`)
	noUpstreams := writeTemp(t, dir, "symbi.toml", "version = 1\n")
	code, envJSON, errOut := runSP(t, "sign", "--key", priv, "--schema", schema)
	if code != 0 {
		t.Fatalf("sign = %d: %s", code, errOut)
	}
	var env schemapin.Envelope
	if err := json.Unmarshal([]byte(envJSON), &env); err != nil || env.Signature == "" || env.SignedAt == "" {
		t.Fatalf("sign printed %s (%v)", envJSON, err)
	}
	if !strings.Contains(envJSON, "<a> & <b>") {
		t.Errorf("envelope HTML-escaped: %s", envJSON)
	}
	signed := writeTemp(t, dir, "signed.json", envJSON)

	code, wk, errOut := runSP(t, "wellknown", "--key", pub, "--developer", "Acme <Tools>", "--contact", "sec@acme.test")
	if code != 0 {
		t.Fatalf("wellknown = %d: %s", code, errOut)
	}
	doc, err := schemapin.ParseDiscovery([]byte(wk))
	if err != nil || doc.DeveloperName != "Acme <Tools>" {
		t.Fatalf("wellknown printed %s (%v)", wk, err)
	}
	discovery := writeTemp(t, dir, "wk.json", wk)
	revokedWK := func() string {
		_, s, _ := runSP(t, "wellknown", "--key", pub, "--developer", "Acme", "--revoked", fp)
		return writeTemp(t, dir, "revoked.json", s)
	}()
	var tampered map[string]any
	json.Unmarshal([]byte(envJSON), &tampered)
	tampered["schema"].(map[string]any)["description"] = "adds and exfiltrates"
	tb, _ := json.Marshal(tampered)
	tamperedPath := writeTemp(t, dir, "tampered.json", string(tb))

	data := filepath.Join(dir, "data")
	otherKeys := filepath.Join(dir, "other")
	runSP(t, "keygen", "--out", otherKeys)
	otherSchema := writeTemp(t, dir, "other-signed.json", func() string {
		_, s, _ := runSP(t, "sign", "--key", filepath.Join(otherKeys, "private_key.pem"), "--schema", schema)
		return s
	}())
	_, otherWK, _ := runSP(t, "wellknown", "--key", filepath.Join(otherKeys, "public_key.pem"), "--developer", "Acme")
	otherDiscovery := writeTemp(t, dir, "other-wk.json", otherWK)

	for _, tc := range []struct {
		name     string
		args     []string
		want     int
		wantText string
	}{
		{"valid", []string{"verify", "--signed", signed, "--discovery", discovery}, 0, "verified " + fp},
		{"tampered", []string{"verify", "--signed", tamperedPath, "--discovery", discovery}, 1, "invalid"},
		{"revoked", []string{"verify", "--signed", signed, "--discovery", revokedWK}, 1, "revoked"},
		{"pinned on first use", []string{"verify", "--signed", signed, "--discovery", discovery, "--domain", "acme.test", "--data-dir", data}, 0, "verified"},
		{"key changed", []string{"verify", "--signed", otherSchema, "--discovery", otherDiscovery, "--domain", "acme.test", "--data-dir", data}, 1, "key_changed"},
		{"json output", []string{"verify", "--json", "--signed", signed, "--discovery", discovery}, 0, `"status": "verified"`},
		{"no source", []string{"verify", "--signed", signed}, 2, ""},
		{"two sources", []string{"verify", "--signed", signed, "--discovery", discovery, "--bundle", discovery}, 2, ""},
		{"missing signed", []string{"verify", "--discovery", discovery}, 2, ""},
		{"unknown flag", []string{"verify", "--nope"}, 2, ""},
		{"sign without key", []string{"sign", "--schema", schema}, 2, ""},
		{"sign schema and upstream", []string{"sign", "--key", priv, "--schema", schema, "--from-upstream", "x", "--config", noUpstreams}, 2, ""},
		{"sign upstream without config", []string{"sign", "--key", priv, "--from-upstream", "x"}, 2, ""},
		{"sign unknown upstream", []string{"sign", "--key", priv, "--from-upstream", "x", "--config", noUpstreams}, 2, ""},
		{"unknown command", []string{"frobnicate"}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runSP(t, tc.args...)
			if code != tc.want {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.want, out, errOut)
			}
			if !strings.Contains(out, tc.wantText) {
				t.Errorf("stdout %q does not contain %q", out, tc.wantText)
			}
		})
	}

	// The operator re-pins: list shows the pin, unpin lets the new key pin itself.
	code, out, _ = runSP(t, "pins", "list", "--data-dir", data)
	if code != 0 || !strings.Contains(out, "calc@acme.test") || !strings.Contains(out, fp) {
		t.Errorf("pins list = %d %q", code, out)
	}
	if code, _, errOut := runSP(t, "pins", "unpin", "--data-dir", data, "--tool", "calc", "--domain", "acme.test"); code != 0 {
		t.Fatalf("unpin = %d: %s", code, errOut)
	}
	if code, _, _ := runSP(t, "pins", "unpin", "--data-dir", data, "--tool", "calc", "--domain", "acme.test"); code != 1 {
		t.Errorf("second unpin = %d, want 1", code)
	}
	if code, out, _ := runSP(t, "verify", "--signed", otherSchema, "--discovery", otherDiscovery, "--domain", "acme.test", "--data-dir", data); code != 0 {
		t.Errorf("after unpin verify = %d %q", code, out)
	}
	if code, _, errOut := runSP(t, "pins", "pin", "--data-dir", data, "--tool", "calc", "--domain", "acme.test", "--key", pub); code != 0 {
		t.Fatalf("pin = %d: %s", code, errOut)
	}
	if code, out, _ := runSP(t, "verify", "--signed", signed, "--discovery", discovery, "--domain", "acme.test", "--data-dir", data); code != 0 {
		t.Errorf("after operator pin verify = %d %q", code, out)
	}
	code, out, _ = runSP(t, "pins", "list", "--data-dir", data, "--json")
	var pins []schemapin.Pin
	if err := json.Unmarshal([]byte(out), &pins); code != 0 || err != nil || len(pins) != 1 || pins[0].Source != "operator" || pins[0].Fingerprint != fp {
		t.Errorf("pins list --json = %d %s", code, out)
	}
	for _, args := range [][]string{
		{"pins"}, {"pins", "frob"}, {"pins", "pin", "--data-dir", data, "--tool", "x", "--domain", "d"},
		{"pins", "pin", "--data-dir", data, "--tool", "x", "--domain", "d", "--fingerprint", "sha256:12"},
		{"pins", "unpin", "--data-dir", data},
	} {
		if code, _, _ := runSP(t, args...); code != 2 {
			t.Errorf("%q = %d, want 2", args, code)
		}
	}
}

func TestSchemapinVerifyFixtures(t *testing.T) {
	// The reference project's interop data beside the checkout; required in CI.
	spFixtureDir := fixtures.Dir(t, "schemapin")
	f := func(p string) string { return filepath.Join(spFixtureDir, p) }
	for _, tc := range []struct {
		name string
		args []string
		want int
		text string
	}{
		{"python demo", []string{"verify", "--signed", f("python-demo/demo_schema_signed.json"), "--discovery", f("python-demo/demo_well_known.json")}, 0, "verified"},
		{"js demo", []string{"verify", "--signed", f("js-demo/demo_schema_signed.json"), "--discovery", f("js-demo/demo_well_known.json")}, 0, "verified"},
		{"go demo refused", []string{"verify", "--signed", f("go-demo/demo_schema_signed.json"), "--discovery", f("go-demo/demo_well_known.json")}, 1, "invalid"},
		{"go demo with compat", []string{"verify", "--go-compat", "--signed", f("go-demo/demo_schema_signed.json"), "--discovery", f("go-demo/demo_well_known.json")}, 0, "verified"},
		{"cross key refused", []string{"verify", "--signed", f("python-demo/demo_schema_signed.json"), "--discovery", f("js-demo/demo_well_known.json")}, 1, "invalid"},
		// The bundle verifies, but its example.com key is a placeholder: the schema cannot.
		{"signed bundle with placeholder key", []string{"verify", "--signed", f("python-demo/demo_schema_signed.json"), "--bundle", f("cross-language/signed_bundle.json")}, 1, "discovery key unusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runSP(t, tc.args...)
			if code != tc.want {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.want, out, errOut)
			}
			if !strings.Contains(out, tc.text) {
				t.Errorf("stdout %q does not contain %q", out, tc.text)
			}
		})
	}
}
