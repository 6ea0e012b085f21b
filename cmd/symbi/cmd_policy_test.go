package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/policy"
)

func policyRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := runPolicy(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func policyWrite(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const policyCallInput = `{"action": "tools/call", "identity": {"id": "ide", "kind": "client"},
  "tool": {"name": "fs__delete_file", "annotations": {"destructiveHint": true, "openWorldHint": false},
           "verification": {"status": "%s"}},
  "arguments": {"path": "/tmp/x"}}`

func TestPolicyEval(t *testing.T) {
	tmp := t.TempDir()
	verified := policyWrite(t, tmp, "verified.json", strings.Replace(policyCallInput, "%s", "verified", 1))
	revoked := policyWrite(t, tmp, "revoked.json", strings.Replace(policyCallInput, "%s", "revoked", 1))
	unsigned := policyWrite(t, tmp, "unsigned.json", strings.Replace(policyCallInput, "%s", "unsigned", 1))
	stranger := policyWrite(t, tmp, "stranger.json", `{"action": "tools/call", "identity": {"id": "stranger"}, "tool": {"name": "fs__read_file", "verification": {"status": "verified"}}}`)
	badJSON := policyWrite(t, tmp, "bad.json", `{"action": `)
	broken := filepath.Join(tmp, "broken")
	policyWrite(t, broken, "ok.rego", "package symbi.authz\n\ndecision := {\"allow\": true}\n")
	policyWrite(t, broken, "sub/bad.rego", "package symbi.authz\n\nx := {\n")
	failing := filepath.Join(tmp, "failing")
	policyWrite(t, failing, "p.rego", "package symbi.authz\n\ndecision := {\"allow\": \"yes\"}\n")
	examples := filepath.Join("..", "..", "configs", "policies")

	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		want       *policy.Decision
		stderrHave string
	}{
		{"default allows verified", []string{"eval", "--input", verified}, 0, &policy.Decision{Allow: true}, ""},
		{"default denies revoked", []string{"eval", "--input", revoked}, 0, &policy.Decision{Reason: "tool signing key is revoked"}, ""},
		{"exit code on deny", []string{"eval", "--input", revoked, "--exit-code"}, 1, &policy.Decision{Reason: "tool signing key is revoked"}, ""},
		{"examples: destructive unsigned", []string{"eval", "--policies", examples, "--input", unsigned}, 0, &policy.Decision{Allow: true, Conditions: []policy.Condition{
			{Type: "require_approval", Message: "fs__delete_file is marked destructive"},
			{Type: "require_tier", Tier: "gvisor"},
			{Type: "redact_secrets"},
		}}, ""},
		{"examples: stranger", []string{"eval", "--policies", examples, "--input", stranger}, 0, &policy.Decision{Reason: "tool not allowed for this identity"}, ""},
		{"compile error located", []string{"eval", "--policies", broken, "--input", verified}, 2, nil, filepath.Join(broken, "sub", "bad.rego") + ":4:"},
		{"evaluation fails closed", []string{"eval", "--policies", failing, "--input", verified}, 1, &policy.Decision{Reason: "policy produced a malformed decision"}, "allow is string"},
		{"missing input flag", []string{"eval"}, 2, nil, "--input FILE is required"},
		{"unreadable input", []string{"eval", "--input", filepath.Join(tmp, "nope.json")}, 2, nil, "read input"},
		{"bad input json", []string{"eval", "--input", badJSON}, 2, nil, "decode input"},
		{"missing policy dir", []string{"eval", "--policies", filepath.Join(tmp, "nope"), "--input", verified}, 2, nil, "load policy dir"},
		{"stray argument", []string{"eval", "--input", verified, "extra"}, 2, nil, "unexpected arguments"},
		{"unknown flag", []string{"eval", "--frobnicate"}, 2, nil, "flag provided but not defined"},
		{"unknown command", []string{"frob"}, 2, nil, "unknown command"},
		{"no command", nil, 2, nil, "usage: symbi policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := policyRun(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if tc.want != nil {
				var got policy.Decision
				if err := json.Unmarshal([]byte(stdout), &got); err != nil {
					t.Fatalf("stdout is not a decision: %v\n%s", err, stdout)
				}
				if diff := cmp.Diff(*tc.want, got); diff != "" {
					t.Errorf("decision mismatch (-want +got):\n%s", diff)
				}
			} else if stdout != "" {
				t.Errorf("unexpected stdout: %s", stdout)
			}
			if !strings.Contains(stderr, tc.stderrHave) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.stderrHave)
			}
		})
	}
}

func TestPolicyTest(t *testing.T) {
	tmp := t.TempDir()
	good := filepath.Join(tmp, "good")
	policyWrite(t, good, "p.rego", "package symbi.authz\n\ndecision := {\"allow\": input.x == 1}\n")
	policyWrite(t, good, "p_test.rego", "package symbi.authz_test\n\nimport data.symbi.authz\n\ntest_one if authz.decision.allow with input as {\"x\": 1}\n\ntest_two if not authz.decision.allow with input as {\"x\": 2}\n")
	bad := filepath.Join(tmp, "bad")
	policyWrite(t, bad, "p.rego", "package symbi.authz\n\ndecision := {\"allow\": input.x == 1}\n")
	policyWrite(t, bad, "p_test.rego", "package symbi.authz_test\n\nimport data.symbi.authz\n\ntest_one if authz.decision.allow with input as {\"x\": 1}\n\ntest_wrong if authz.decision.allow with input as {\"x\": 2}\n")
	broken := filepath.Join(tmp, "broken")
	policyWrite(t, broken, "p_test.rego", "package symbi.authz_test\n\ntest_x if {\n")
	none := filepath.Join(tmp, "none")
	policyWrite(t, none, "p.rego", "package symbi.authz\n\ndecision := {\"allow\": true}\n")

	for _, tc := range []struct {
		name        string
		args        []string
		code        int
		stdoutHave  []string
		stdoutLacks []string
		stderrHave  string
	}{
		{"all pass", []string{"test", good}, 0, []string{"PASS data.symbi.authz_test.test_one (" + filepath.Join(good, "p_test.rego") + ":5", "PASS data.symbi.authz_test.test_two", "2 passed, 0 failed"}, []string{"FAIL"}, ""},
		{"a failure", []string{"test", bad}, 1, []string{"PASS data.symbi.authz_test.test_one", "FAIL data.symbi.authz_test.test_wrong (" + filepath.Join(bad, "p_test.rego") + ":7)", "1 passed, 1 failed"}, nil, ""},
		{"compile error", []string{"test", broken}, 2, nil, nil, filepath.Join(broken, "p_test.rego") + ":"},
		{"no tests", []string{"test", none}, 1, []string{"0 passed"}, nil, "no tests found"},
		{"examples pass", []string{"test", filepath.Join("..", "..", "configs", "policies")}, 0, []string{"PASS data.symbi.authz_test.test_read_only_agent_cannot_write", " 0 failed"}, []string{"FAIL"}, ""},
		{"no dir", []string{"test"}, 2, nil, nil, "exactly one DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := policyRun(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code = %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, s := range tc.stdoutHave {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.stdoutLacks {
				if strings.Contains(stdout, s) {
					t.Errorf("stdout has %q:\n%s", s, stdout)
				}
			}
			if !strings.Contains(stderr, tc.stderrHave) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.stderrHave)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		code, stdout, _ := policyRun(t, "test", "--json", bad)
		if code != 1 {
			t.Errorf("exit code = %d, want 1", code)
		}
		var got struct {
			Results []policy.TestResult `json:"results"`
			Pass    int                 `json:"pass"`
			Fail    int                 `json:"fail"`
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
		}
		if got.Pass != 1 || got.Fail != 1 || len(got.Results) != 2 {
			t.Errorf("json results = %+v", got)
		}
	})
}
