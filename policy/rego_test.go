package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func toolInput(action, status string) *Input {
	return &Input{
		Action:   action,
		Identity: Identity{ID: "ide", Kind: "client"},
		Upstream: "everything",
		Tool: &Tool{
			Name: "everything__echo", UpstreamName: "echo",
			Verification: Verification{Status: status},
		},
		Arguments: map[string]any{"message": "hi"},
	}
}

func TestDefaultPolicy(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		in   *Input
		want Decision
	}{
		{"verified call", toolInput(ActionToolsCall, StatusVerified), Decision{Allow: true}},
		{"unsigned call", toolInput(ActionToolsCall, StatusUnsigned), Decision{Allow: true}},
		{"verified list", toolInput(ActionToolsList, StatusVerified), Decision{Allow: true}},
		{"invalid", toolInput(ActionToolsCall, StatusInvalid), Decision{Reason: "tool signature is invalid"}},
		{"revoked", toolInput(ActionToolsCall, StatusRevoked), Decision{Reason: "tool signing key is revoked"}},
		{"key changed", toolInput(ActionToolsList, StatusKeyChanged), Decision{Reason: "tool signing key changed since it was pinned"}},
		{"definition changed", toolInput(ActionToolsCall, StatusDefinitionChanged), Decision{Reason: "tool definition changed since it was pinned; approve it with symbi tools approve"}},
		{"disabled", toolInput(ActionToolsCall, StatusDisabled), Decision{Reason: "tool is disabled"}},
		{"tool without status", toolInput(ActionToolsCall, ""), Decision{Reason: "tool has no recognised verification status"}},
		{"tool with unknown status", toolInput(ActionToolsCall, "weird"), Decision{Reason: "tool has no recognised verification status"}},
		{"resources list", &Input{Action: ActionResourcesList, Identity: Identity{ID: "ide"}}, Decision{Allow: true}},
		{"resource read", &Input{Action: ActionResourcesRead, Identity: Identity{ID: "ide"}, Resource: &Resource{URI: "file:///x"}}, Decision{Allow: true}},
		{"prompt get", &Input{Action: ActionPromptsGet, Identity: Identity{ID: "ide"}, Prompt: &Prompt{Name: "p"}}, Decision{Allow: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Default().Decide(ctx, tc.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decision mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func mustCompile(t testing.TB, src string, data map[string]any) *Rego {
	t.Helper()
	e, err := Compile(context.Background(), Bundle{Modules: []Module{{Name: "p.rego", Source: src}}, Data: data})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return e
}

func TestCustomPolicies(t *testing.T) {
	ctx := context.Background()
	const allowlist = `package symbi.authz
default decision := {"allow": false, "reason": "tool not allowed for this identity"}
decision := {"allow": true} if input.tool.name in data.allow[input.identity.id]
`
	const conditions = `package symbi.authz
decision := {"allow": true, "conditions": [
	{"type": "redact", "paths": ["arguments.password"]},
	{"type": "require_tier", "tier": "gvisor"},
	{"type": "rate_limit", "per_minute": 60},
	{"type": "redact_secrets"},
	{"type": "require_approval", "message": "ok?"},
	{"type": "priority", "level": "high"},
]}
`
	const conditionSet = `package symbi.authz
decision := {"allow": true, "conditions": {{"type": "rate_limit", "per_minute": 5, "burst": 2}}}
`
	const argsAndClaims = `package symbi.authz
default decision := {"allow": false}
decision := {"allow": true, "reason": sprintf("%v/%v", [input.arguments.n, input.identity.claims.team])} if {
	input.arguments.n > 2
	input.sandbox.tier == "docker"
	input.tool.annotations.readOnlyHint
}
`
	data := map[string]any{"allow": map[string]any{"ide": []any{"everything__echo"}}}
	for _, tc := range []struct {
		name string
		src  string
		in   *Input
		want Decision
	}{
		{"allowlist hit", allowlist, toolInput(ActionToolsCall, StatusVerified), Decision{Allow: true}},
		{"allowlist miss", allowlist, &Input{Action: ActionToolsCall, Identity: Identity{ID: "other"}, Tool: &Tool{Name: "everything__echo"}},
			Decision{Reason: "tool not allowed for this identity"}},
		{"conditions", conditions, toolInput(ActionToolsCall, StatusVerified), Decision{Allow: true, Conditions: []Condition{
			{Type: CondRedact, Paths: []string{"arguments.password"}},
			{Type: CondRequireTier, Tier: "gvisor"},
			{Type: CondRateLimit, PerMinute: 60},
			{Type: CondRedactSecrets},
			{Type: CondRequireApproval, Message: "ok?"},
			{Type: CondPriority, Level: "high"},
		}}},
		{"conditions as a set", conditionSet, toolInput(ActionToolsCall, StatusVerified), Decision{Allow: true, Conditions: []Condition{
			{Type: CondRateLimit, PerMinute: 5, Burst: 2},
		}}},
		{"arguments, claims, sandbox, annotations", argsAndClaims, &Input{
			Action:    ActionToolsCall,
			Identity:  Identity{ID: "a", Claims: map[string]any{"team": "blue"}},
			Tool:      &Tool{Name: "x", Annotations: map[string]any{"readOnlyHint": true}},
			Arguments: map[string]any{"n": 3},
			Sandbox:   &Sandbox{Tier: "docker"},
		}, Decision{Allow: true, Reason: "3/blue"}},
		{"deny without reason", argsAndClaims, &Input{Action: ActionToolsCall}, Decision{Reason: "denied by policy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d map[string]any
			if strings.Contains(tc.src, "data.allow") {
				d = data
			}
			got, err := mustCompile(t, tc.src, d).Decide(ctx, tc.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decision mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, src, reason string
	}{
		{"undefined decision", `package symbi.authz
decision := {"allow": true} if input.action == "never"`, "policy produced no decision"},
		{"not an object", `package symbi.authz
decision := true`, "policy produced a malformed decision"},
		{"allow not boolean", `package symbi.authz
decision := {"allow": "yes"}`, "policy produced a malformed decision"},
		{"no allow", `package symbi.authz
decision := {"reason": "x"}`, "policy produced a malformed decision"},
		{"reason not string", `package symbi.authz
decision := {"allow": true, "reason": 1}`, "policy produced a malformed decision"},
		{"unknown condition", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "teleport"}]}`, "policy produced a malformed decision"},
		{"condition without type", `package symbi.authz
decision := {"allow": true, "conditions": [{"paths": ["arguments.x"]}]}`, "policy produced a malformed decision"},
		{"redact without paths", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "redact"}]}`, "policy produced a malformed decision"},
		{"redact bad path", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "redact", "paths": ["arguments..x"]}]}`, "policy produced a malformed decision"},
		{"unknown tier", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "require_tier", "tier": "vm"}]}`, "policy produced a malformed decision"},
		{"rate limit zero", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "rate_limit", "per_minute": 0}]}`, "policy produced a malformed decision"},
		{"rate limit fraction", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "rate_limit", "per_minute": 1.5}]}`, "policy produced a malformed decision"},
		{"unknown priority level", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "priority", "level": "urgent"}]}`, "policy produced a malformed decision"},
		{"priority without level", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "priority"}]}`, "policy produced a malformed decision"},
		{"priority level not a string", `package symbi.authz
decision := {"allow": true, "conditions": [{"type": "priority", "level": 3}]}`, "policy produced a malformed decision"},
		{"conditions not array", `package symbi.authz
decision := {"allow": true, "conditions": "redact"}`, "policy produced a malformed decision"},
		{"conflict", `package symbi.authz
decision := {"allow": true}
decision := {"allow": false} if input.action == "tools/call"`, "policy evaluation failed"},
		{"runtime error", `package symbi.authz
decision := {"allow": true, "reason": x} if { x := 1 / 0 }`, "policy evaluation failed"},
		{"builtin error is strict", `package symbi.authz
decision := {"allow": to_number("x") > 0}`, "policy evaluation failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mustCompile(t, tc.src, nil).Decide(ctx, toolInput(ActionToolsCall, StatusVerified))
			if err == nil || !errors.Is(err, ErrEvaluate) {
				t.Errorf("err = %v, want ErrEvaluate", err)
			}
			if diff := cmp.Diff(Decision{Reason: tc.reason}, got); diff != "" {
				t.Errorf("decision mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("nil input", func(t *testing.T) {
		got, err := Default().Decide(ctx, nil)
		if err == nil || got.Allow {
			t.Errorf("Decide(nil) = %+v, %v; want a denial and an error", got, err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		got, err := Default().Decide(cctx, toolInput(ActionToolsCall, StatusVerified))
		if err == nil || got.Allow {
			t.Errorf("Decide(cancelled) = %+v, %v; want a denial and an error", got, err)
		}
	})
}

func TestCompileErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		modules []Module
		want    []Problem
	}{
		{"syntax", []Module{{Name: "a.rego", Source: "package symbi.authz\n\ndecision := {\n"}},
			[]Problem{{File: "a.rego", Line: 4}}}, // EOF is reported past the last newline
		{"unsafe var", []Module{{Name: "b.rego", Source: "package symbi.authz\n\ndecision := {\"allow\": x}\n"}},
			[]Problem{{File: "b.rego", Line: 3}}},
		{"no decision", []Module{{Name: "c.rego", Source: "package symbi.other\n\nx := 1\n"}},
			[]Problem{{}}},
		{"two files, error in second", []Module{
			{Name: "ok.rego", Source: "package symbi.authz\n\ndecision := {\"allow\": true}\n"},
			{Name: "bad.rego", Source: "package symbi.authz\n\nhelper if {\n\tundefined_fn(1)\n}\n"},
		}, []Problem{{File: "bad.rego", Line: 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(ctx, Bundle{Modules: tc.modules})
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile err = %v, want *CompileError", err)
			}
			got := make([]Problem, len(ce.Problems))
			for i, p := range ce.Problems {
				got[i] = Problem{File: p.File, Line: p.Line}
				if p.Message == "" {
					t.Errorf("problem %d has no message", i)
				}
			}
			if diff := cmp.Diff(tc.want, got[:len(tc.want)]); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s\n%v", diff, err)
			}
		})
	}
}

func TestParseInput(t *testing.T) {
	in, err := ParseInput([]byte(`{"action":"tools/call","identity":{"id":"ide","kind":"client","claims":{"n":1}},
		"upstream":"u","tool":{"name":"u__t","upstream_name":"t","annotations":{"destructiveHint":true},
		"verification":{"status":"verified","domain":"d","fingerprint":"sha256:x"}},
		"arguments":{"a":1.5},"resource":{"uri":"file:///x"},"sandbox":{"tier":"gvisor"},
		"prompt":{"name":"p"},"agent":{"name":"bot"}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Input{
		Action:   "tools/call",
		Identity: Identity{ID: "ide", Kind: "client", Claims: map[string]any{"n": jsonNumber("1")}},
		Upstream: "u",
		Tool: &Tool{Name: "u__t", UpstreamName: "t", Annotations: map[string]any{"destructiveHint": true},
			Verification: Verification{Status: "verified", Domain: "d", Fingerprint: "sha256:x"}},
		Arguments: map[string]any{"a": jsonNumber("1.5")},
		Resource:  &Resource{URI: "file:///x"},
		Prompt:    &Prompt{Name: "p"},
		Sandbox:   &Sandbox{Tier: "gvisor"},
		Extra:     map[string]any{"agent": map[string]any{"name": "bot"}},
	}
	if diff := cmp.Diff(want, in); diff != "" {
		t.Errorf("ParseInput mismatch (-want +got):\n%s", diff)
	}
	// The extra field reaches the policy.
	e := mustCompile(t, `package symbi.authz
decision := {"allow": input.agent.name == "bot", "reason": input.tool.verification.domain}`, nil)
	d, err := e.Decide(context.Background(), in)
	if err != nil || !d.Allow || d.Reason != "d" {
		t.Errorf("Decide = %+v, %v", d, err)
	}
	for _, bad := range []string{``, `null`, `[]`, `{"action": 1}`, `{"tool": "x"}`, `{`} {
		if _, err := ParseInput([]byte(bad)); err == nil {
			t.Errorf("ParseInput(%q) succeeded, want an error", bad)
		}
	}
}

func jsonNumber(s string) any { return json.Number(s) }

func TestLazyArguments(t *testing.T) {
	e := mustCompile(t, `package symbi.authz
decision := {"allow": input.arguments.f5.deep[1] == "b", "reason": sprintf("%d", [count(input.arguments)])}`, nil)
	args := map[string]any{}
	for i := range 10 {
		args[fmt.Sprintf("f%d", i)] = map[string]any{"deep": []any{"a", "b"}}
	}
	d, err := e.Decide(context.Background(), &Input{Action: ActionToolsCall, Arguments: args})
	if err != nil || !d.Allow || d.Reason != "10" {
		t.Errorf("Decide = %+v, %v", d, err)
	}
	// A value that cannot be converted denies when the policy reads it; it does not crash.
	args["f3"] = map[string]any{"bad": make(chan int)}
	e2 := mustCompile(t, `package symbi.authz
decision := {"allow": true, "reason": sprintf("%v", [input.arguments.f3.bad])}`, nil)
	d, err = e2.Decide(context.Background(), &Input{Action: ActionToolsCall, Arguments: args})
	if err == nil || d.Allow {
		t.Errorf("Decide with an unconvertible argument = %+v, %v; want a denial", d, err)
	}
}

func FuzzParseInput(f *testing.F) {
	for _, s := range []string{
		`{"action":"tools/call","identity":{"id":"ide"},"tool":{"name":"a__b","verification":{"status":"verified"}},"arguments":{"x":[1,2,{"y":null}]}}`,
		`{"action":"resources/read","resource":{"uri":"file:///x"},"sandbox":{"tier":"gvisor"},"agent":{"n":1e400}}`,
		`{}`, `{"arguments":null}`, `{"tool":null}`,
	} {
		f.Add([]byte(s))
	}
	e := Default()
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := ParseInput(data)
		if err != nil {
			return
		}
		// Whatever parses must evaluate to a usable decision, never panic.
		d, err := e.Decide(context.Background(), in)
		if err != nil && d.Allow {
			t.Fatalf("an evaluation error allowed: %+v %v", d, err)
		}
	})
}
