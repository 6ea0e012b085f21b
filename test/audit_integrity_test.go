package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/symbi-dev/symbi/audit"
)

// End-to-end tests of the audit trail's integrity promises: fail closed when the trail
// cannot record, a signing key and a head kept outside the trail, losses that stay
// visible, operator actions recorded.

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of an unlabelled series on /metrics, or "" if absent.
func metricValue(t testing.TB, addr, name string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestAuditFailureFailsClosed: once the trail cannot record (its directory is gone, so
// the head checkpoint cannot be written), calls are refused by default, /readyz and
// /metrics say so; with on_failure = "continue" they are served and counted.
func TestAuditFailureFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		onFailure string
		refuse    bool
	}{{"", true}, {"refuse", true}, {"continue", false}} {
		t.Run("on_failure="+tc.onFailure, func(t *testing.T) {
			body := upstreamTOML("mg", "mg", mcpgoServer(t))
			if tc.onFailure != "" {
				body += fmt.Sprintf("[audit]\non_failure = %q\n", tc.onFailure)
			}
			cfg := writeConfig(t, body)
			s := serve(t, cfg)
			cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
			if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": "before"}); isErr {
				t.Fatalf("call before the failure: %s", text)
			}
			// Moved away in one step (the writer may be writing a checkpoint meanwhile).
			auditDir := filepath.Join(dataDirOf(cfg), "audit")
			if err := os.Rename(auditDir, auditDir+".gone"); err != nil {
				t.Fatal(err)
			}
			// The next event the trail tries to make durable breaks it.
			_, _ = call(t, cs, "mg__echo", map[string]any{"message": "breaks the trail"})
			waitFor(t, 10*time.Second, "/readyz to report the audit failure", func() bool {
				code, _ := httpGet(t, "http://"+s.addr+"/readyz")
				return code != http.StatusOK
			})
			if _, body := httpGet(t, "http://"+s.addr+"/readyz"); !strings.Contains(body, `"audit"`) || !strings.Contains(body, "failed") {
				t.Errorf("/readyz does not name the audit failure: %s", body)
			}
			if v := metricValue(t, s.addr, "symbi_audit_failed"); v != "1" {
				t.Errorf("symbi_audit_failed = %q, want 1", v)
			}
			res, err := call(t, cs, "mg__echo", map[string]any{"message": "after"})
			if tc.refuse {
				wantRefused(t, "call while the trail is broken", res, err, "audit trail cannot record")
				// At least this call (a client may send other requests meanwhile).
				if v, err := strconv.ParseFloat(metricValue(t, s.addr, "symbi_audit_refused_total"), 64); err != nil || v < 1 {
					t.Errorf("symbi_audit_refused_total = %v (%v), want at least 1", v, err)
				}
				return
			}
			if err != nil || res.IsError || resultText(res) != "echo: after" {
				t.Errorf("on_failure = continue: call = %v, %v; want it served", res, err)
			}
			if v, err := strconv.ParseFloat(metricValue(t, s.addr, "symbi_audit_unrecorded_total"), 64); err != nil || v < 1 {
				t.Errorf("symbi_audit_unrecorded_total = %v (%v), want at least 1", v, err)
			}
		})
	}
}

// echoSession serves cfg, makes n calls and stops symbi.
func echoSession(t testing.TB, cfg string, n int) {
	t.Helper()
	s := serve(t, cfg)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	for i := range n {
		if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": fmt.Sprint("call ", i)}); isErr {
			t.Fatalf("call %d: %s", i, text)
		}
	}
	_ = cs.Close()
	_, _ = stopServed(t, s)
}

// TestAuditKeyOutsideTrail: the signing key lives in <data_dir>/keys, not in the trail;
// a key an older symbi left in the trail directory is moved there, and the trail it
// signed still verifies.
func TestAuditKeyOutsideTrail(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
	data := dataDirOf(cfg)
	auditDir := filepath.Join(data, "audit")
	// The old layout: the key inside the trail directory.
	old, err := audit.Open(&audit.Options{Dir: auditDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Append(context.Background(), audit.Event{Type: audit.TypeConfigLoaded}); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	echoSession(t, cfg, 2)
	if _, err := os.Stat(filepath.Join(data, "keys", "audit_ed25519.key")); err != nil {
		t.Errorf("key not in <data_dir>/keys: %v", err)
	}
	if keys, _ := filepath.Glob(filepath.Join(auditDir, "*.key*")); len(keys) > 0 {
		t.Errorf("key files left in the trail: %v", keys)
	}
	if out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir); code != 0 {
		t.Errorf("audit verify after the key moved: exit %d\n%s%s", code, out, stderr)
	}
}

// TestAuditSwappedTrailFails: a trail wiped and rewritten by another symbi (its own key,
// the same trail directory) verifies against that symbi's own anchor, but not against the key and
// head pinned outside the trail, which verify trusts by default.
func TestAuditSwappedTrailFails(t *testing.T) {
	mg := mcpgoServer(t)
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mg))
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	echoSession(t, cfg, 2)
	if err := os.RemoveAll(auditDir); err != nil {
		t.Fatal(err)
	}
	intruder := writeConfig(t, upstreamTOML("mg", "mg", mg)+fmt.Sprintf("[audit]\ndir = %q\n", auditDir))
	echoSession(t, intruder, 3)
	if out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir, "--data-dir", dataDirOf(intruder)); code != 0 {
		t.Fatalf("the rewritten trail should be self-consistent: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir)
	if code != 1 || !strings.Contains(out, "untrusted_key") {
		t.Errorf("audit verify of a swapped trail: exit %d, want 1 naming the untrusted key\n%s%s", code, out, stderr)
	}
}

// TestAuditLossStaysVisible: entries removed from the end of the trail (the last lines
// with head.json deleted, or an older signed head.json put back) are found when symbi
// restarts, and verify keeps failing, naming the gap, after symbi has gone on writing.
func TestAuditLossStaysVisible(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, auditDir string, oldHead []byte, oldLines int)
	}{
		{"last lines and head.json deleted", func(t *testing.T, auditDir string, _ []byte, _ int) {
			seg := lastSegment(t, auditDir)
			b, _ := os.ReadFile(seg)
			lines := strings.SplitAfter(string(b), "\n")
			if err := os.WriteFile(seg, []byte(strings.Join(lines[:len(lines)-4], "")), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(auditDir, "head.json")); err != nil {
				t.Fatal(err)
			}
		}},
		{"older head.json restored", func(t *testing.T, auditDir string, oldHead []byte, oldLines int) {
			seg := lastSegment(t, auditDir)
			b, _ := os.ReadFile(seg)
			lines := strings.SplitAfter(string(b), "\n")
			if err := os.WriteFile(seg, []byte(strings.Join(lines[:oldLines], "")), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(auditDir, "head.json"), oldHead, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
			auditDir := filepath.Join(dataDirOf(cfg), "audit")
			echoSession(t, cfg, 1)
			oldHead, err := os.ReadFile(filepath.Join(auditDir, "head.json"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(lastSegment(t, auditDir))
			oldLines := strings.Count(string(b), "\n")
			echoSession(t, cfg, 3)
			tc.damage(t, auditDir, oldHead, oldLines)
			echoSession(t, cfg, 2)
			out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir)
			if code != 1 || !strings.Contains(out, "truncated") || !strings.Contains(out, "lost") {
				t.Errorf("audit verify after the loss and a restart: exit %d, want 1 naming the lost entries\n%s%s", code, out, stderr)
			}
		})
	}
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "seg-*.jsonl"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segments in %s: %v", dir, err)
	}
	return segs[len(segs)-1]
}

// trailEvents returns the events of type typ in the trail.
func trailEvents(t testing.TB, auditDir string, typ audit.Type) []audit.Event {
	t.Helper()
	recs, err := audit.Query(context.Background(), auditDir, audit.Filter{Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]audit.Event, len(recs))
	for i := range recs {
		evs[i] = recs[i].Event
	}
	return evs
}

// TestAuditOperatorActions: `symbi tools approve|reject` (another process) and policy
// reloads land in the trail of the running symbi, with who did them.
func TestAuditOperatorActions(t *testing.T) {
	spec := filepath.Join(t.TempDir(), "spec.json")
	writeSpec(t, spec, mutableSpec{Description: "Probe: brand new."})
	dir := policyDir(t, map[string]string{"authz.rego": "package symbi.authz\n\ndecision := {\"allow\": true}\n"})
	cfg := mutableConfig(t, spec, `schemapin = { first_seen = "pending" }`+fmt.Sprintf("\n[policy]\ndir = %q\n", dir))
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	s := serve(t, cfg)
	if out, stderr, code := runCLI(t, "tools", "approve", "--data-dir", dataDirOf(cfg), "probe"); code != 0 {
		t.Fatalf("tools approve: exit %d\n%s%s", code, out, stderr)
	}
	waitFor(t, 15*time.Second, "tool.approved in the trail", func() bool {
		return len(trailEvents(t, auditDir, audit.TypeToolApproved)) > 0
	})
	ev := trailEvents(t, auditDir, audit.TypeToolApproved)[0]
	if ev.Tool != "probe" || ev.Upstream != "mut" || !strings.HasPrefix(ev.Identity, "os:") || ev.Detail["hash"] == "" {
		t.Errorf("tool.approved = %+v, want the tool, its upstream, the OS user and the hash", ev)
	}

	writeAtomic(t, filepath.Join(dir, "authz.rego"), []byte("package symbi.authz\n\ndecision := {\"allow\": true, \"reason\": \"v2\"}\n"))
	waitFor(t, 15*time.Second, "policy.reloaded in the trail", func() bool {
		return len(trailEvents(t, auditDir, audit.TypePolicyReloaded)) > 0
	})
	if ev := trailEvents(t, auditDir, audit.TypePolicyReloaded)[0]; ev.Outcome != audit.OutcomeOK || ev.Detail["revision"] == "" {
		t.Errorf("policy.reloaded = %+v", ev)
	}
	writeAtomic(t, filepath.Join(dir, "authz.rego"), []byte("package symbi.authz\n\ndecision := {\n"))
	waitFor(t, 15*time.Second, "the failed reload in the trail", func() bool {
		for _, ev := range trailEvents(t, auditDir, audit.TypePolicyReloaded) {
			if ev.Outcome == audit.OutcomeInvalid && ev.Error != "" {
				return true
			}
		}
		return false
	})

	// A decision made while no symbi runs is recorded when the next one starts.
	writeAtomic(t, filepath.Join(dir, "authz.rego"), []byte("package symbi.authz\n\ndecision := {\"allow\": true}\n"))
	_, _ = stopServed(t, s)
	writeSpec(t, spec, mutableSpec{Description: "Probe: changed."})
	s2 := serve(t, cfg)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s2.addr + "/mcp"}, nil)
	_ = listedNow(t, cs, "mut__probe") // the changed definition goes to the quarantine
	_, _ = stopServed(t, s2)
	if out, stderr, code := runCLI(t, "tools", "reject", "--data-dir", dataDirOf(cfg), "probe"); code != 0 {
		t.Fatalf("tools reject: exit %d\n%s%s", code, out, stderr)
	}
	serve(t, cfg)
	if evs := trailEvents(t, auditDir, audit.TypeToolRejected); len(evs) != 1 || evs[0].Tool != "probe" {
		t.Errorf("tool.rejected after a restart = %+v, want one for probe", evs)
	}
}

type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// TestAuditSessionIdentity: session.opened names the authenticated identity and the
// transport the session really uses.
func TestAuditSessionIdentity(t *testing.T) {
	t.Setenv("SYMBI_TEST_TOKEN", "alice-token-0123456789")
	cfg := writeConfig(t, "[[server.tokens]]\ntoken = \"env:SYMBI_TEST_TOKEN\"\nidentity = \"alice\"\n")
	s := serve(t, cfg)
	hc := &http.Client{Transport: bearerTransport{"alice-token-0123456789"}}
	// 2025-11-25: the version with sessions (2026-07-28 has none to open).
	connectVersion(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp", HTTPClient: hc}, nil, "2025-11-25")
	connectVersion(t, &mcp.SSEClientTransport{Endpoint: "http://" + s.addr + "/sse", HTTPClient: hc}, nil, "2025-11-25")
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	waitFor(t, 10*time.Second, "two session.opened events", func() bool {
		evs := trailEvents(t, auditDir, audit.TypeSessionOpened)
		t.Logf("session.opened so far: %+v", evs)
		return len(evs) >= 2
	})
	got := map[string]string{}
	for _, ev := range trailEvents(t, auditDir, audit.TypeSessionOpened) {
		got[ev.Transport] = ev.Identity
	}
	if diff := cmp.Diff(map[string]string{"http": "alice", "sse": "alice"}, got); diff != "" {
		t.Errorf("session.opened transport -> identity (-want +got):\n%s", diff)
	}
}
