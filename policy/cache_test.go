package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/types"
)

// withoutCache returns a copy of the engine that evaluates every decision.
func (e *Rego) withoutCache() *Rego {
	c := *e
	c.cache, c.uncacheable, c.keyPaths = nil, "cache disabled", nil
	return &c
}

// withCacheSize returns a copy of a cacheable engine with an empty cache of n entries.
func (e *Rego) withCacheSize(n int) *Rego {
	c := *e
	c.cache = newDecisionCache(e.cache.key, n)
	return &c
}

type outcome struct {
	D   Decision
	Err string
}

func decide(e *Rego, ctx context.Context, in *Input) outcome {
	d, err := e.Decide(ctx, in)
	o := outcome{D: d}
	if err != nil {
		o.Err = err.Error()
	}
	return o
}

// cacheTestInputs are the decision stream plus inputs at the edges of the realistic
// policy: no tool, a tool without annotations, lazily converted arguments, extra fields.
func cacheTestInputs() []*Input {
	many := map[string]any{}
	for i := range 12 {
		many[fmt.Sprintf("k%d", i)] = i
	}
	ins := []*Input{
		realisticInput(),
		{Action: ActionResourcesList, Identity: Identity{ID: "admin"}},
		{Action: ActionResourcesList, Identity: Identity{ID: "stranger"}},
		{Action: ActionToolsCall, Identity: Identity{ID: "ci-bot"}, Tool: &Tool{Name: "fs__read_file"}},
		{Action: ActionToolsCall, Identity: Identity{ID: "ci-bot"}, Tool: &Tool{Name: "fs__read_file",
			Annotations: map[string]any{"readOnlyHint": true}, Verification: Verification{Status: StatusVerified}}},
		{Action: ActionToolsCall, Identity: Identity{ID: "ide"}, Tool: &Tool{Name: "fs__write_file",
			Verification: Verification{Status: StatusUnsigned}}, Arguments: many},
		{Action: ActionToolsCall, Identity: Identity{ID: "ide"}, Tool: &Tool{Name: "fs__write_file",
			Verification: Verification{Status: StatusKeyChanged}}, Extra: map[string]any{"agent": map[string]any{"n": 1}}},
	}
	return append(ins, decisionStream(400)...)
}

func TestCacheRealisticSameAnswers(t *testing.T) {
	ctx := context.Background()
	e := realisticEngine(t)
	plain := e.withoutCache()
	if diff := cmp.Diff([]string{"input.identity.id", "input.tool"}, e.CacheInfo().KeyPaths); diff != "" {
		t.Errorf("KeyPaths mismatch (-want +got):\n%s", diff)
	}
	ins := cacheTestInputs()
	for round := range 2 {
		for i, in := range ins {
			want := decide(plain, ctx, in)
			got := decide(e, ctx, in)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("round %d, input %d: cached decision differs from uncached (-want +got):\n%s", round, i, diff)
			}
		}
	}
	info := e.CacheInfo()
	if !info.Cacheable || info.Hits < uint64(len(ins)) || info.Entries == 0 || info.Entries > 2*5*40+7 {
		t.Errorf("CacheInfo = %+v; want cacheable, at least %d hits and at most one entry per identity, tool and action", info, len(ins))
	}
}

func TestCacheKeyIncludesArguments(t *testing.T) {
	ctx := context.Background()
	e := mustCompile(t, `package symbi.authz
default decision := {"allow": false, "reason": "outside /tmp"}
decision := {"allow": true, "reason": input.arguments.path} if startswith(input.arguments.path, "/tmp/")
`, nil)
	if diff := cmp.Diff([]string{"input.arguments.path"}, e.CacheInfo().KeyPaths); diff != "" {
		t.Errorf("KeyPaths mismatch (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		path string
		want Decision
	}{
		{"/tmp/a", Decision{Allow: true, Reason: "/tmp/a"}},
		{"/etc/passwd", Decision{Reason: "outside /tmp"}},
		{"/tmp/b", Decision{Allow: true, Reason: "/tmp/b"}},
		{"/tmp/a", Decision{Allow: true, Reason: "/tmp/a"}},
		{"/etc/passwd", Decision{Reason: "outside /tmp"}},
	} {
		// Other arguments differ on every call; only the path keys the decision.
		in := &Input{Action: ActionToolsCall, Identity: Identity{ID: "ide"},
			Arguments: map[string]any{"path": tc.path, "nonce": tc.path + fmt.Sprint(len(tc.want.Reason))}}
		if diff := cmp.Diff(outcome{D: tc.want}, decide(e, ctx, in)); diff != "" {
			t.Errorf("path %s: mismatch (-want +got):\n%s", tc.path, diff)
		}
	}
	if info := e.CacheInfo(); info.Hits != 2 || info.Misses != 3 || info.Entries != 3 {
		t.Errorf("CacheInfo = %+v; want 2 hits, 3 misses, 3 entries", info)
	}
}

func TestCacheNotCacheable(t *testing.T) {
	for _, tc := range []struct {
		name, src, builtin string
	}{
		{"time", `decision := {"allow": time.now_ns() > 0}`, "time.now_ns"},
		{"http", `decision := {"allow": r.status_code == 200} if r := http.send({"method": "GET", "url": "http://127.0.0.1:1"})`, "http.send"},
		{"rand", `decision := {"allow": rand.intn("x", 2) == 0}`, "rand.intn"},
		{"uuid", `decision := {"allow": true, "reason": uuid.rfc4122("x")}`, "uuid.rfc4122"},
		{"runtime", `decision := {"allow": count(opa.runtime()) > 0}`, "opa.runtime"},
		{"dns", `decision := {"allow": count(net.lookup_ip_addr(input.host)) > 0}`, "net.lookup_ip_addr"},
		{"certificates", `decision := {"allow": v} if [v, _] := crypto.x509.parse_and_verify_certificates(input.chain)`, "crypto.x509.parse_and_verify_certificates"},
		{"in a helper rule", "decision := {\"allow\": ok}\nok if f(1)\nf(x) if time.now_ns() > x", "time.now_ns"},
		{"mocked", "decision := {\"allow\": true} if { p with time.now_ns as 1 }\np if input.x", "time.now_ns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := mustCompile(t, "package symbi.authz\n"+tc.src, nil).CacheInfo()
			if info.Cacheable || !strings.Contains(info.Reason, "non-deterministic built-in "+tc.builtin+" (p.rego:") {
				t.Errorf("CacheInfo = %+v; want not cacheable because of %s", info, tc.builtin)
			}
		})
	}
	t.Run("not cached", func(t *testing.T) {
		e := mustCompile(t, `package symbi.authz
decision := {"allow": rand.intn("x", 1) == 0}`, nil)
		for range 3 {
			if d, err := e.Decide(context.Background(), toolInput(ActionToolsCall, StatusVerified)); err != nil || !d.Allow {
				t.Fatalf("Decide = %+v, %v", d, err)
			}
		}
		if info := e.CacheInfo(); info.Hits+info.Misses+uint64(info.Entries) != 0 {
			t.Errorf("CacheInfo = %+v; want no cache use", info)
		}
	})
}

// A function the compiler knows but OPA's built-in table does not (a custom built-in
// declared in the capabilities) cannot be trusted to be deterministic.
func TestCacheUnknownFunction(t *testing.T) {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, &ast.Builtin{Name: "custom.lookup", Decl: types.NewFunction(types.Args(types.S), types.B)})
	mod := ast.MustParseModuleWithOpts("package symbi.authz\ndecision := {\"allow\": custom.lookup(input.x)}", ast.ParserOptions{RegoVersion: ast.RegoV1})
	c := ast.NewCompiler().WithCapabilities(caps)
	c.Compile(map[string]*ast.Module{"p.rego": mod})
	if c.Failed() {
		t.Fatal(c.Errors)
	}
	if _, reason := analyse(c); !strings.Contains(reason, "unknown function custom.lookup") {
		t.Errorf("analyse reason = %q; want unknown function custom.lookup", reason)
	}
}

func TestCacheKeyPaths(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"fields", `decision := {"allow": input.tool.name == input.identity.id}`, []string{"input.identity.id", "input.tool.name"}},
		{"prefix wins", "decision := {\"allow\": input.tool.name == \"x\"}\np := input.tool", []string{"input.tool"}},
		{"deep ref is cut", `decision := {"allow": input.arguments.a.b.c.d == 1}`, []string{"input.arguments.a.b"}},
		{"variable key", `decision := {"allow": true} if input.arguments[k] == 1`, []string{"input.arguments"}},
		{"key from input", `decision := {"allow": input.arguments[input.field] == 1}`, []string{"input.arguments", "input.field"}},
		{"input indexed by a variable", `decision := {"allow": true} if input[x] == 1`, []string{"input"}},
		{"whole input", `decision := {"allow": count(input) > 1}`, []string{"input"}},
		{"input through a variable", `decision := {"allow": x.tool.name == "a"} if x := input`, []string{"input"}},
		{"import alias", "import input.tool as t\ndecision := {\"allow\": t.name == \"a\"}", []string{"input.tool.name"}},
		{"function argument", "decision := {\"allow\": f(input.action)}\nf(a) if a == \"x\"", []string{"input.action"}},
		{"with input", "decision := {\"allow\": true} if { p with input as {\"a\": 1} }\np if input.a == 1", []string{"input"}},
		{"no input", `decision := {"allow": true}`, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := mustCompile(t, "package symbi.authz\n"+tc.src, nil).CacheInfo()
			if !info.Cacheable {
				t.Fatalf("not cacheable: %s", info.Reason)
			}
			if diff := cmp.Diff(tc.want, info.KeyPaths); diff != "" {
				t.Errorf("KeyPaths mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// A policy that reads the whole input (or input[x]) keys on all of it: inputs that differ
// anywhere get their own decision.
func TestCacheWholeInput(t *testing.T) {
	ctx := context.Background()
	for _, src := range []string{
		`decision := {"allow": true, "reason": concat(",", [k | some k, _ in input])}`,
		`decision := {"allow": true, "reason": concat(",", [k | input[k]])}`,
	} {
		e := mustCompile(t, "package symbi.authz\n"+src, nil)
		if diff := cmp.Diff([]string{"input"}, e.CacheInfo().KeyPaths); diff != "" {
			t.Errorf("KeyPaths mismatch (-want +got):\n%s", diff)
		}
		for _, tc := range []struct {
			in   *Input
			want string
		}{
			{&Input{Action: ActionToolsList}, "action,identity"},
			{&Input{Action: ActionToolsList, Extra: map[string]any{"agent": "a"}}, "action,agent,identity"},
			{&Input{Action: ActionToolsList, Upstream: "fs"}, "action,identity,upstream"},
			{&Input{Action: ActionToolsList}, "action,identity"},
		} {
			if d, err := e.Decide(ctx, tc.in); err != nil || d.Reason != tc.want {
				t.Errorf("%s: Decide(%+v) = %+v, %v; want reason %q", src, tc.in, d, err, tc.want)
			}
		}
	}
}

func TestCacheDecisionIsCopied(t *testing.T) {
	ctx := context.Background()
	e := mustCompile(t, `package symbi.authz
decision := {"allow": true, "conditions": [
	{"type": "redact", "paths": ["arguments.password", "arguments.token"]},
	{"type": "rate_limit", "per_minute": 60},
	{"type": "block_secrets", "paths": ["result"]},
]}`, nil)
	want := Decision{Allow: true, Conditions: []Condition{
		{Type: CondRedact, Paths: []string{"arguments.password", "arguments.token"}},
		{Type: CondRateLimit, PerMinute: 60},
		{Type: CondBlockSecrets, Paths: []string{"result"}},
	}}
	in := toolInput(ActionToolsCall, StatusVerified)
	for i := range 3 { // a miss, then hits
		d, err := e.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, d); diff != "" {
			t.Fatalf("decision %d mismatch (-want +got):\n%s", i, diff)
		}
		d.Conditions[0].Paths[0] = "arguments.nothing"
		d.Conditions[0].Paths = append(d.Conditions[0].Paths, "arguments.more")
		if got := d.Conditions[2].Paths; len(got) != 1 || got[0] != "result" {
			t.Fatalf("appending to one condition's paths changed another's: %q", got)
		}
		d.Conditions[1].PerMinute = 1_000_000
		d.Conditions = append(d.Conditions, Condition{Type: CondRequireApproval})
	}
	if info := e.CacheInfo(); info.Hits != 2 {
		t.Errorf("CacheInfo = %+v; want 2 hits", info)
	}
}

func TestCacheErrorsNotCached(t *testing.T) {
	ctx := context.Background()
	e := mustCompile(t, `package symbi.authz
decision := {"allow": true, "reason": sprintf("%v", [10 / input.arguments.n])}`, nil)
	in := func(n int) *Input { return &Input{Action: ActionToolsCall, Arguments: map[string]any{"n": n}} }
	for i := range 2 {
		if d, err := e.Decide(ctx, in(0)); !errors.Is(err, ErrEvaluate) || d.Allow {
			t.Fatalf("Decide(n=0) #%d = %+v, %v; want a denial with ErrEvaluate", i, d, err)
		}
	}
	if info := e.CacheInfo(); info.Entries != 0 || info.Hits != 0 {
		t.Errorf("after errors, CacheInfo = %+v; want nothing cached", info)
	}

	// A cancelled request is denied, and the denial does not stick to the input.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if d, err := e.Decide(cctx, in(2)); err == nil || d.Allow {
		t.Fatalf("Decide(cancelled) = %+v, %v; want a denial", d, err)
	}
	for range 2 {
		if d, err := e.Decide(ctx, in(2)); err != nil || !cmp.Equal(d, Decision{Allow: true, Reason: "5"}) {
			t.Fatalf("Decide(n=2) = %+v, %v; want allow with reason 5", d, err)
		}
	}

	// An argument that cannot be converted denies when the policy reads it, every time.
	args := map[string]any{"n": 1, "bad": make(chan int)}
	for i := range 9 {
		args[fmt.Sprintf("pad%d", i)] = i // lazily converted arguments
	}
	e2 := mustCompile(t, `package symbi.authz
decision := {"allow": true, "reason": sprintf("%v", [input.arguments.bad])}`, nil)
	for i := range 2 {
		if d, err := e2.Decide(ctx, &Input{Action: ActionToolsCall, Arguments: args}); err == nil || d.Allow {
			t.Fatalf("Decide(unconvertible) #%d = %+v, %v; want a denial", i, d, err)
		}
	}
	if info := e2.CacheInfo(); info.Entries != 0 {
		t.Errorf("CacheInfo = %+v; want nothing cached", info)
	}
}

// The cache keeps its own copy of the key: a caller of DecideValue that changes its input
// value afterwards cannot change an entry. (Object hashes are sums, so the changed input
// below hashes like the new one: a shared key would be found and answer wrongly.)
func TestCacheKeyIsCopied(t *testing.T) {
	ctx := context.Background()
	e := mustCompile(t, `package symbi.authz
decision := {"allow": true, "reason": json.marshal(input.arguments)}`, nil)
	v := ast.MustParseTerm(`{"arguments": {"n": 1, "m": 2}}`).Value
	if d, err := e.DecideValue(ctx, v); err != nil || d.Reason != `{"m":2,"n":1}` {
		t.Fatalf("DecideValue = %+v, %v", d, err)
	}
	args := v.(ast.Object).Get(ast.StringTerm("arguments")).Value.(ast.Object)
	args.Insert(ast.StringTerm("n"), ast.IntNumberTerm(2))
	args.Insert(ast.StringTerm("m"), ast.IntNumberTerm(1))
	fresh := ast.MustParseTerm(`{"arguments": {"n": 2, "m": 1}}`).Value
	if d, err := e.DecideValue(ctx, fresh); err != nil || d.Reason != `{"m":1,"n":2}` {
		t.Errorf("DecideValue after the caller changed its first input = %+v, %v; want reason {\"m\":1,\"n\":2}", d, err)
	}
}

// Numbers that Rego compares equal but prints differently are different keys.
func TestCacheNumberSpelling(t *testing.T) {
	ctx := context.Background()
	e := mustCompile(t, `package symbi.authz
decision := {"allow": true, "reason": json.marshal(input.arguments.n)}`, nil)
	plain := e.withoutCache()
	var reasons []string
	for _, js := range []string{`{"arguments":{"n":1}}`, `{"arguments":{"n":1.0}}`, `{"arguments":{"n":1e0}}`, `{"arguments":{"n":1}}`} {
		in, err := ParseInput([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		want, got := decide(plain, ctx, in), decide(e, ctx, in)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: mismatch (-want +got):\n%s", js, diff)
		}
		reasons = append(reasons, got.D.Reason)
	}
	if diff := cmp.Diff([]string{"1", "1.0", "1e0", "1"}, reasons); diff != "" {
		t.Errorf("reasons mismatch (-want +got):\n%s", diff)
	}
}

func TestKeyEncoding(t *testing.T) {
	key := &keyNode{}
	key.add([]string{"identity", "id"})
	key.add([]string{"tool"})
	key.finish()
	for _, tc := range []struct {
		a, b string
		same bool
		tree bool // encode with the key tree, not whole
	}{
		{`{"a": [1, {"b": null}], "c": {"x"}}`, `{"c": {"x"}, "a": [1, {"b": null}]}`, true, false},
		{`{"a": 1}`, `{"a": 1.0}`, false, false},
		{`[1]`, `[1.0]`, false, false},
		{`{1}`, `{1.0}`, false, false},
		{`{"a": 1}`, `{"a": 1, "b": 2}`, false, false},
		{`{"a": "1"}`, `{"a": 1}`, false, false},
		{`["ab", "c"]`, `["a", "bc"]`, false, false},
		{`[["a"], "b"]`, `[["a", "b"]]`, false, false},
		{`{"a": {}}`, `{"a": []}`, false, false},
		{`null`, `false`, false, false},
		{`"s1a"`, `"a"`, false, false},
		// The key tree reads input.identity.id and input.tool.
		{`{"identity": {"id": "a", "kind": "x"}, "tool": {"n": 1}, "arguments": 1}`, `{"tool": {"n": 1}, "identity": {"id": "a"}}`, true, true},
		{`{"identity": {"id": "a"}}`, `{"identity": {"id": "a"}, "tool": null}`, false, true},
		{`{"identity": {}}`, `{"identity": "id"}`, false, true},
		{`{"identity": {"id": "a"}}`, `{"identity": {"id": "a"}, "tool": {}}`, false, true},
		{`{"identity": {"id": "a"}, "tool": {"n": 1}}`, `{"identity": {"id": "a"}, "tool": {"n": 1, "m": 2}}`, false, true},
	} {
		enc := encodeValue
		if tc.tree {
			enc = key.encode
		}
		a, err := enc(nil, ast.MustParseTerm(tc.a).Value)
		if err != nil {
			t.Fatal(err)
		}
		b, err := enc(nil, ast.MustParseTerm(tc.b).Value)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(a) == string(b); got != tc.same {
			t.Errorf("keys of %s and %s: same = %v; want %v (%q, %q)", tc.a, tc.b, got, tc.same, a, b)
		}
	}
	if _, err := encodeValue(nil, ast.MustParseTerm(`[x]`).Value); err == nil {
		t.Error("encodeValue accepted a variable")
	}
}

func TestCacheEviction(t *testing.T) {
	ctx := context.Background()
	e := realisticEngine(t).withCacheSize(32)
	plain := e.withoutCache()
	for _, in := range decisionStream(600) {
		if diff := cmp.Diff(decide(plain, ctx, in), decide(e, ctx, in)); diff != "" {
			t.Fatalf("mismatch (-want +got):\n%s", diff)
		}
	}
	if info := e.CacheInfo(); info.Capacity != 32 || info.Entries > 32 || info.Entries == 0 {
		t.Errorf("CacheInfo = %+v; want at most 32 entries", info)
	}
}

func TestCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	base := realisticEngine(t)
	stream := decisionStream(300)
	want := make([]outcome, len(stream))
	for i, in := range stream {
		want[i] = decide(base.withoutCache(), ctx, in)
	}
	for _, e := range []*Rego{base, base.withCacheSize(16)} { // roomy, and evicting all the time
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for g := range 8 {
			wg.Go(func() {
				for n := range 3 * len(stream) {
					i := (g*37 + n) % len(stream)
					if got := decide(e, ctx, stream[i]); !cmp.Equal(want[i], got) {
						select {
						case errs <- fmt.Sprintf("goroutine %d, input %d: got %+v, want %+v", g, i, got, want[i]):
						default:
						}
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Error(msg)
		}
		if info := e.CacheInfo(); info.Hits == 0 || info.Entries > info.Capacity {
			t.Errorf("CacheInfo = %+v", info)
		}
	}
}

// A reload compiles a new engine, and a new engine starts with an empty cache.
func TestCacheFlushedOnReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"authz.rego": reasonPolicy("one")})
	w, err := NewWatcher(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := toolInput(ActionToolsCall, StatusVerified)
	for range 2 {
		if d, err := w.Decide(ctx, in); err != nil || d.Reason != "one" {
			t.Fatalf("Decide = %+v, %v", d, err)
		}
	}
	if info := w.Engine().CacheInfo(); info.Hits != 1 || info.Entries != 1 {
		t.Errorf("before reload, CacheInfo = %+v; want 1 hit, 1 entry", info)
	}
	writeFiles(t, dir, map[string]string{"authz.rego": reasonPolicy("two")})
	if err := w.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if info := w.Engine().CacheInfo(); info.Hits+info.Misses != 0 || info.Entries != 0 {
		t.Errorf("after reload, CacheInfo = %+v; want an empty cache", info)
	}
	if d, err := w.Decide(ctx, in); err != nil || d.Reason != "two" {
		t.Errorf("after reload, Decide = %+v, %v; want reason two", d, err)
	}
}

// TestCachePartialInputKey: Decide keys on an input built from just the top-level fields
// the policy reads; that key must be the very key of the whole input, for every input and
// every shape of key (or a hit could answer for a different input).
func TestCachePartialInputKey(t *testing.T) {
	policies := map[string]string{
		"realistic": "", // testdata/realistic
		"arguments": `package symbi.authz
decision := {"allow": true} if startswith(input.arguments.path, "/tmp/")`,
		"extra and sandbox": `package symbi.authz
decision := {"allow": input.agent.n == 1, "reason": input.sandbox.tier}`,
		"nothing": `package symbi.authz
decision := {"allow": true}`,
		"several": `package symbi.authz
decision := {"allow": true, "reason": concat("/", [input.action, input.upstream, input.identity.kind])}`,
	}
	for name, src := range policies {
		t.Run(name, func(t *testing.T) {
			var e *Rego
			if src == "" {
				e = realisticEngine(t)
			} else {
				e = mustCompile(t, src, nil)
			}
			c := e.cache
			if c == nil || c.top == nil {
				t.Fatalf("policy not cached on part of the input: %+v", e.CacheInfo())
			}
			for i, in := range cacheTestInputs() {
				full, err := in.Value()
				if err != nil {
					t.Fatal(err)
				}
				part, err := in.value(c.top)
				if err != nil {
					t.Fatal(err)
				}
				kf, okf := c.keyFor(nil, full)
				kp, okp := c.keyFor(nil, part)
				if okf != okp || string(kf) != string(kp) {
					t.Fatalf("input %d: key of the whole input %q (%v), of its read part %q (%v)", i, kf, okf, kp, okp)
				}
			}
		})
	}
}
