package policy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A token-shaped test value assembled at run time (not a real credential).
var testGitHubToken = "gh" + "p_" + "R8mN2kP5qL7wX3vB9cJ4hT6yF1dS0aZeG2uK"

func allow(conds ...Condition) Decision { return Decision{Allow: true, Conditions: conds} }

func TestBeforeCall(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	args := func() map[string]any {
		return map[string]any{"user": "bob", "password": "hunter2", "note": "token " + testGitHubToken}
	}
	for _, tc := range []struct {
		name     string
		d        Decision
		call     Call
		want     map[string]any
		refusal  string // condition that refuses, "" for none
		findings []string
	}{
		{"no conditions", allow(), Call{Arguments: args()}, args(), "", nil},
		{"deny", Decision{Reason: "no"}, Call{Arguments: args()}, nil, "deny", nil},
		{"tier satisfied", allow(Condition{Type: CondRequireTier, Tier: TierDocker}), Call{Tier: TierGVisor, Arguments: args()}, args(), "", nil},
		{"tier too weak", allow(Condition{Type: CondRequireTier, Tier: TierGVisor}), Call{Tier: TierDocker, Arguments: args()}, nil, CondRequireTier, nil},
		{"no sandbox", allow(Condition{Type: CondRequireTier, Tier: TierDocker}), Call{Arguments: args()}, nil, CondRequireTier, nil},
		{"redact", allow(Condition{Type: CondRedact, Paths: []string{"arguments.password"}}), Call{Arguments: args()},
			map[string]any{"user": "bob", "password": "****", "note": "token " + testGitHubToken}, "", nil},
		{"redact remove", allow(Condition{Type: CondRedact, Paths: []string{"arguments.password", "result.x"}, Mode: RedactRemove}), Call{Arguments: args()},
			map[string]any{"user": "bob", "note": "token " + testGitHubToken}, "", nil},
		{"redact secrets", allow(Condition{Type: CondRedactSecrets}), Call{Arguments: args()},
			map[string]any{"user": "bob", "password": "****", "note": "token ghp_****"}, "", []string{"github-token@arguments.note", "sensitive-field@arguments.password"}},
		{"redact secrets on results only", allow(Condition{Type: CondRedactSecrets, Paths: []string{"result"}}), Call{Arguments: args()}, args(), "", nil},
		{"block secrets", allow(Condition{Type: CondBlockSecrets, Paths: []string{"arguments"}}), Call{Arguments: args()}, nil, CondBlockSecrets,
			[]string{"github-token@arguments.note", "sensitive-field@arguments.password"}},
		{"block secrets, clean", allow(Condition{Type: CondBlockSecrets}), Call{Arguments: map[string]any{"q": "select 1"}}, map[string]any{"q": "select 1"}, "", nil},
		{"nil arguments", allow(Condition{Type: CondRedactSecrets}, Condition{Type: CondRedact, Paths: []string{"arguments.x"}}), Call{}, nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Enforcer{Limiter: NewLimiter(&LimiterOptions{Now: func() time.Time { return now }})}
			in := tc.call.Arguments
			before, _ := json.Marshal(in)
			got, found, err := e.BeforeCall(tc.d, tc.call)
			var r *Refusal
			if tc.refusal != "" {
				if !errors.As(err, &r) || r.Condition != tc.refusal || r.Reason == "" {
					t.Fatalf("err = %v, want a %s refusal", err, tc.refusal)
				}
				if strings.Contains(r.Reason, "hunter2") || strings.Contains(r.Reason, testGitHubToken) {
					t.Errorf("refusal reason leaks a secret: %s", r.Reason)
				}
			} else if err != nil {
				t.Fatalf("err = %v", err)
			} else if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("arguments mismatch (-want +got):\n%s", diff)
			}
			var fs []string
			for _, f := range found {
				fs = append(fs, f.RuleID+"@"+f.Path)
			}
			if diff := cmp.Diff(tc.findings, fs); diff != "" {
				t.Errorf("findings mismatch (-want +got):\n%s", diff)
			}
			after, _ := json.Marshal(in)
			if string(before) != string(after) {
				t.Errorf("BeforeCall modified the arguments")
			}
		})
	}
}

func TestBeforeCallRateLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := &Enforcer{Limiter: NewLimiter(&LimiterOptions{Now: func() time.Time { return now }})}
	d := allow(Condition{Type: CondRateLimit, PerMinute: 600}, Condition{Type: CondRateLimit, PerMinute: 2})
	call := Call{Identity: "ide", Tool: "fs__write"}
	for i := range 2 {
		if _, _, err := e.BeforeCall(d, call); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	_, _, err := e.BeforeCall(d, call)
	var r *Refusal
	if !errors.As(err, &r) || r.Condition != CondRateLimit || r.RetryAfter != 30*time.Second {
		t.Fatalf("3rd call: err = %v, want a rate_limit refusal with retry after 30s (the stricter limit)", err)
	}
	if _, _, err := e.BeforeCall(d, Call{Identity: "other", Tool: "fs__write"}); err != nil {
		t.Errorf("another identity was limited: %v", err)
	}
	now = now.Add(30 * time.Second)
	if _, _, err := e.BeforeCall(d, call); err != nil {
		t.Errorf("after 30s: %v", err)
	}
	if _, _, err := (&Enforcer{}).BeforeCall(d, call); err == nil {
		t.Error("rate limit without a limiter did not refuse")
	}
}

func TestAfterCall(t *testing.T) {
	result := func() map[string]any {
		return map[string]any{
			"content": []any{
				map[string]any{"type": "text", "text": "your key is " + testGitHubToken},
				map[string]any{"type": "image", "data": "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=", "mimeType": "image/png"},
				map[string]any{"type": "text", "text": "nothing here"},
			},
			"structuredContent": map[string]any{"token": "abc123", "count": 2.0},
			"isError":           false,
		}
	}
	for _, tc := range []struct {
		name     string
		d        Decision
		in       map[string]any
		want     map[string]any
		refusal  bool
		findings []string
	}{
		{"no conditions", allow(), result(), result(), false, nil},
		{"redact secrets", allow(Condition{Type: CondRedactSecrets}), result(), map[string]any{
			"content": []any{
				map[string]any{"type": "text", "text": "your key is ghp_****"},
				map[string]any{"type": "image", "data": "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=", "mimeType": "image/png"},
				map[string]any{"type": "text", "text": "nothing here"},
			},
			"structuredContent": map[string]any{"token": "****", "count": 2.0},
			"isError":           false,
		}, false, []string{"sensitive-field@result.structuredContent.token", "github-token@result.content[0].text"}},
		{"redact secrets on arguments only", allow(Condition{Type: CondRedactSecrets, Paths: []string{"arguments"}}), result(), result(), false, nil},
		{"block secrets", allow(Condition{Type: CondBlockSecrets}), result(), nil, true,
			[]string{"sensitive-field@result.structuredContent.token", "github-token@result.content[0].text"}},
		{"redact path", allow(Condition{Type: CondRedact, Paths: []string{"result.content[*].data"}, Mode: RedactRemove}), result(), map[string]any{
			"content": []any{
				map[string]any{"type": "text", "text": "your key is " + testGitHubToken},
				map[string]any{"type": "image", "mimeType": "image/png"},
				map[string]any{"type": "text", "text": "nothing here"},
			},
			"structuredContent": map[string]any{"token": "abc123", "count": 2.0},
			"isError":           false,
		}, false, nil},
		{"resource contents", allow(Condition{Type: CondRedactSecrets}),
			map[string]any{"contents": []any{map[string]any{"uri": "file:///.env", "text": "DB=postgres://u:pw-12345@h/d"}}},
			map[string]any{"contents": []any{map[string]any{"uri": "file:///.env", "text": "DB=postgres://u:****@h/d"}}}, false,
			[]string{"password-in-url@result.contents[0].text"}},
		{"prompt messages", allow(Condition{Type: CondRedactSecrets}),
			map[string]any{"messages": []any{map[string]any{"role": "user", "content": map[string]any{"type": "text", "text": "use " + testGitHubToken}}}},
			map[string]any{"messages": []any{map[string]any{"role": "user", "content": map[string]any{"type": "text", "text": "use ghp_****"}}}}, false,
			[]string{"github-token@result.messages[0].content.text"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := json.Marshal(tc.in)
			got, found, err := (&Enforcer{}).AfterCall(tc.d, tc.in)
			if tc.refusal {
				var r *Refusal
				if !errors.As(err, &r) || r.Condition != CondBlockSecrets {
					t.Fatalf("err = %v, want a block_secrets refusal", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("result mismatch (-want +got):\n%s", diff)
			}
			var fs []string
			for _, f := range found {
				fs = append(fs, f.RuleID+"@"+f.Path)
			}
			if diff := cmp.Diff(tc.findings, fs); diff != "" {
				t.Errorf("findings mismatch (-want +got):\n%s", diff)
			}
			after, _ := json.Marshal(tc.in)
			if string(before) != string(after) {
				t.Errorf("AfterCall modified the result")
			}
		})
	}
}

// BenchmarkEnforce measures the conditions of the realistic policy on a call and its
// result: rate limit, secrets masking of the arguments and of a 4 KiB text result.
func BenchmarkEnforce(b *testing.B) {
	e := &Enforcer{Limiter: NewLimiter(nil)}
	d := allow(Condition{Type: CondRateLimit, PerMinute: 1 << 30}, Condition{Type: CondRedactSecrets}, Condition{Type: CondRequireTier, Tier: TierDocker})
	call := Call{Identity: "ide", Tool: "fs__read_file", Tier: TierGVisor, Arguments: map[string]any{"path": "/etc/app/config.yaml", "encoding": "utf-8"}}
	text := strings.Repeat("server:\n  listen: 0.0.0.0:8080\n  log_level: info\n  workers: 4\n", 64)
	result := map[string]any{"content": []any{map[string]any{"type": "text", "text": text}}, "isError": false}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := e.BeforeCall(d, call); err != nil {
			b.Fatal(err)
		}
		if _, _, err := e.AfterCall(d, result); err != nil {
			b.Fatal(err)
		}
	}
}
