package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/audit"
)

// auditTrail writes a small trail in the layout the gateway uses: <data>/audit with the
// key and the anchor in <data>/keys.
func auditTrail(t *testing.T) (dir string) {
	t.Helper()
	data := t.TempDir()
	dir = filepath.Join(data, "audit")
	l, err := audit.Open(&audit.Options{Dir: dir, KeyPath: filepath.Join(data, "keys", audit.KeyFileName),
		AnchorPath: filepath.Join(data, "keys", audit.AnchorFileName)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	evs := []audit.Event{
		{Type: audit.TypeCall, Identity: "ide", Tool: "fs__read", Decision: audit.Allow, Outcome: audit.OutcomeOK},
		{Type: audit.TypeCall, Identity: "ide", Tool: "fs__write", Decision: audit.Deny, Reason: "read only", Outcome: audit.OutcomeDenied},
		{Type: audit.TypeCall, Identity: "agent-7", Tool: "fs__read", Decision: audit.Allow, Outcome: audit.OutcomeOK},
		{Type: audit.TypePolicyReloaded, Reason: "policies/main.rego changed"},
		{Type: audit.TypeVerification, Upstream: "fs", Tool: "fs__delete", SchemaPin: "invalid"},
		{Type: audit.TypeToolApproved, Identity: "admin", Tool: "fs__delete"},
	}
	for _, ev := range evs {
		if err := l.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runAuditCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runAudit(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestAuditVerifyCommand(t *testing.T) {
	dir := auditTrail(t)
	pub := filepath.Join(filepath.Dir(dir), "keys", audit.KeyFileName+audit.PublicKeySuffix)

	code, out, errOut := runAuditCmd(t, "verify", "--dir", dir, "--pubkey", pub)
	if code != 0 || !strings.HasPrefix(out, "intact: 7 entries") {
		t.Fatalf("intact trail: code %d out %q err %q", code, out, errOut)
	}
	// By default verify trusts the anchor kept outside the trail, in <data>/keys.
	if code, _, errOut := runAuditCmd(t, "verify", "--dir", dir); code != 0 || !strings.Contains(errOut, "trusting the keys pinned in") {
		t.Fatalf("default key: code %d err %q", code, errOut)
	}
	// A trail elsewhere finds no anchor: nothing inside the trail is trusted unless asked.
	moved := filepath.Join(t.TempDir(), "elsewhere", "audit")
	if err := os.MkdirAll(filepath.Dir(moved), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runAuditCmd(t, "verify", "--dir", moved); code != 2 || !strings.Contains(errOut, "no key pinned outside the trail") {
		t.Fatalf("no anchor: code %d err %q, want 2", code, errOut)
	}
	if code, out, errOut := runAuditCmd(t, "verify", "--dir", moved, "--trust-trail-key"); code != 0 || !strings.Contains(errOut, "--trust-trail-key") {
		t.Fatalf("--trust-trail-key: code %d out %q err %q", code, out, errOut)
	}
	if code, _, errOut := runAuditCmd(t, "verify", "--dir", moved, "--data-dir", filepath.Dir(dir)); code != 0 {
		t.Fatalf("--data-dir: code %d err %q", code, errOut)
	}
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}

	seg := filepath.Join(dir, "seg-00000000000000000001.jsonl")
	b, _ := os.ReadFile(seg)
	os.WriteFile(seg, bytes.Replace(b, []byte(`"tool":"fs__write"`), []byte(`"tool":"fs__wrote"`), 1), 0o600)
	code, out, _ = runAuditCmd(t, "verify", "--dir", dir, "--pubkey", pub)
	if code != 1 || !regexp.MustCompile(`^NOT INTACT: seg-0+1\.jsonl:3 seq 3: hash: `).MatchString(out) {
		t.Fatalf("edited trail: code %d out %q", code, out)
	}
	code, out, _ = runAuditCmd(t, "verify", "--dir", dir, "--pubkey", pub, "--json")
	var rep audit.Report
	if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || rep.Problem == nil || rep.Problem.Seq != 3 {
		t.Fatalf("json: code %d out %s", code, out)
	}
}

func TestAuditUsageErrors(t *testing.T) {
	dir := auditTrail(t)
	for _, args := range [][]string{
		nil,
		{"bogus"},
		{"verify"},
		{"verify", "--dir", t.TempDir()},
		{"verify", "--dir", dir, "--pubkey", "/nonexistent.pub"},
		{"query", "--dir", dir, "--decision", "maybe"},
		{"query", "--dir", dir, "--since", "yesterday"},
		{"query", "--dir", dir, "--format", "xml"},
		{"report", "--dir", dir, "--format", "pdf"},
		{"tail", "--dir", dir, "extra"},
	} {
		if code, _, errOut := runAuditCmd(t, args...); code != 2 || errOut == "" {
			t.Errorf("%q: code %d stderr %q, want 2 and a message", args, code, errOut)
		}
	}
}

func TestAuditQueryCommand(t *testing.T) {
	dir := auditTrail(t)
	code, out, errOut := runAuditCmd(t, "query", "--dir", dir, "--decision", "deny", "--format", "json")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var ev audit.Event
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &ev) != nil || ev.Tool != "fs__write" || ev.Seq != 3 {
		t.Fatalf("deny query = %q", out)
	}
	code, out, _ = runAuditCmd(t, "query", "--dir", dir, "--tool", "fs__read", "--since", "1h")
	if code != 0 || strings.Count(out, "fs__read") != 2 || !strings.HasPrefix(out, "SEQ") {
		t.Errorf("table query = %q", out)
	}
	code, out, _ = runAuditCmd(t, "query", "--dir", dir, "--until", "1h")
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("query until an hour ago should have only the header, got %q", out)
	}
	code, out, _ = runAuditCmd(t, "query", "--dir", dir, "--type", "call", "--identity", "agent-7", "--format", "json")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"identity":"agent-7"`) {
		t.Errorf("identity query = %q", out)
	}
}

func TestAuditTailCommand(t *testing.T) {
	dir := auditTrail(t)
	code, out, _ := runAuditCmd(t, "tail", "--dir", dir, "-n", "2", "--format", "json")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "tool.approved") {
		t.Fatalf("tail = %d %q", code, out)
	}

	// tail -f prints records appended later, until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	var out2 syncBuffer
	done := make(chan int)
	go func() {
		done <- runAudit(ctx, []string{"tail", "-f", "--dir", dir, "-n", "0", "--format", "json"}, &out2, &out2)
	}()
	l, err := audit.Open(&audit.Options{Dir: dir, KeyPath: filepath.Join(filepath.Dir(dir), "keys", audit.KeyFileName)})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(ctx, audit.Event{Type: audit.TypeUpstreamDown, Upstream: "late-arrival"})
	l.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out2.String(), "late-arrival") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("tail -f exit %d", code)
	}
	if !strings.Contains(out2.String(), "late-arrival") {
		t.Errorf("tail -f output = %q", out2.String())
	}
}

func TestAuditReportCommand(t *testing.T) {
	dir := auditTrail(t)
	code, out, errOut := runAuditCmd(t, "report", "--dir", dir, "--since", "24h", "--format", "md")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	for _, want := range []string{"**intact**", "| ide | 2 | 1 |", "| fs__read | 2 | 0 |", "fs__delete", "invalid", "policies/main.rego changed", "tool.approved"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown report lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runAuditCmd(t, "report", "--dir", dir, "--format", "json")
	var c audit.Compliance
	if code != 0 || json.Unmarshal([]byte(out), &c) != nil || c.Calls != 3 || c.Denials != 1 || len(c.Approvals) != 1 ||
		len(c.VerificationFailures) != 1 || len(c.PolicyChanges) != 1 || c.Integrity == nil || !c.Integrity.Intact {
		t.Fatalf("json report = %d %s", code, out)
	}
	os.Remove(filepath.Join(dir, audit.CheckpointFile))
	if code, _, _ := runAuditCmd(t, "report", "--dir", dir); code != 1 {
		t.Errorf("report on a damaged trail: code %d, want 1", code)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuditRotateKeyCommand: rotate-key signs a rotation with the old key naming the new
// one, pins the new key outside the trail, and the trail still verifies by default; while
// a writer holds the trail it refuses.
func TestAuditRotateKeyCommand(t *testing.T) {
	data := t.TempDir()
	cfgPath := filepath.Join(data, "symbi.toml")
	if err := os.WriteFile(cfgPath, []byte("version = 1\n[server]\ndata_dir = "+strconv.Quote(filepath.Join(data, "data"))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auditDir := filepath.Join(data, "data", "audit")
	code, out, errOut := runAuditCmd(t, "rotate-key", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "rotated audit key") {
		t.Fatalf("rotate-key: code %d out %q err %q", code, out, errOut)
	}
	code, out, errOut = runAuditCmd(t, "verify", "--dir", auditDir)
	if code != 0 || !strings.Contains(out, " -> ") {
		t.Fatalf("verify after rotate-key: code %d out %q err %q (want two keys)", code, out, errOut)
	}
	recs, err := audit.Query(context.Background(), auditDir, audit.Filter{Type: audit.TypeKeyRotated})
	if err != nil || len(recs) != 1 {
		t.Fatalf("key.rotated entries = %d, %v", len(recs), err)
	}
	l, err := audit.Open(&audit.Options{Dir: auditDir, KeyPath: filepath.Join(data, "data", "keys", audit.KeyFileName)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if code, _, errOut := runAuditCmd(t, "rotate-key", "--config", cfgPath); code != 1 || !strings.Contains(errOut, "running symbi holds the trail") {
		t.Errorf("rotate-key on a held trail: code %d err %q", code, errOut)
	}
}

// TestAuditQueryJSONWriter: a record from a writer slot's chain says which writer wrote
// it (its seq counts within that chain); one from the main chain has no writer field.
func TestAuditQueryJSONWriter(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, "audit")
	open := func() *audit.Log {
		l, err := audit.Open(&audit.Options{Dir: dir, KeyPath: filepath.Join(data, "keys", audit.KeyFileName),
			AnchorPath: filepath.Join(data, "keys", audit.AnchorFileName)})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	main, slot := open(), open() // the second finds the main chain held and takes w1
	if slot.Writer() != "w1" {
		t.Fatalf("second writer = %q, want w1", slot.Writer())
	}
	ctx := context.Background()
	for l, tool := range map[*audit.Log]string{main: "fs__main", slot: "fs__slot"} {
		if err := l.Append(ctx, audit.Event{Type: audit.TypeCall, Identity: "ide", Tool: tool, Decision: audit.Allow}); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []*audit.Log{main, slot} {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runAuditCmd(t, "query", "--dir", dir, "--type", "call", "--format", "json")
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct {
			Tool   string  `json:"tool"`
			Writer *string `json:"writer"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("decode %q: %v", line, err)
		}
		w := "<none>"
		if rec.Writer != nil {
			w = *rec.Writer
		}
		got[rec.Tool] = w
	}
	if len(got) != 2 || got["fs__main"] != "<none>" || got["fs__slot"] != "w1" {
		t.Errorf("writers by tool = %v, want fs__main without one and fs__slot from w1; output %q", got, out)
	}
}
