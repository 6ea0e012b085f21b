package policy

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTierSatisfies(t *testing.T) {
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{
		{"gvisor", "gvisor", true},
		{"gvisor", "docker", true},
		{"gvisor", "none", true},
		{"docker", "gvisor", false},
		{"docker", "docker", true},
		{"docker", "none", true},
		{"none", "docker", false},
		{"unisolated", "docker", false},
		{"", "docker", false},
		{"", "none", true},
		{"unisolated", "none", true},
		{"vm", "none", false},
		{"gvisor", "vm", false},
		{"GVISOR", "docker", false},
	} {
		if got := TierSatisfies(tc.have, tc.want); got != tc.ok {
			t.Errorf("TierSatisfies(%q, %q) = %v, want %v", tc.have, tc.want, got, tc.ok)
		}
	}
}

func TestParsePath(t *testing.T) {
	key := func(k string) Segment { return Segment{Key: k, Index: -1} }
	idx := func(i int) Segment { return Segment{Index: i} }
	wild := Segment{Index: -1, Wildcard: true}
	for _, tc := range []struct {
		in   string
		want Path
	}{
		{"arguments", Path{key("arguments")}},
		{"arguments.password", Path{key("arguments"), key("password")}},
		{"result.content[*].text", Path{key("result"), key("content"), wild, key("text")}},
		{"result.content.*.text", Path{key("result"), key("content"), wild, key("text")}},
		{"arguments.items[0].token", Path{key("arguments"), key("items"), idx(0), key("token")}},
		{`arguments["x-api.key"]`, Path{key("arguments"), key("x-api.key")}},
		{`arguments["a\"b"].c`, Path{key("arguments"), key(`a"b`), key("c")}},
		{"arguments[12][*]", Path{key("arguments"), idx(12), wild}},
	} {
		got, err := ParsePath(tc.in)
		if err != nil {
			t.Errorf("ParsePath(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParsePath(%q) mismatch (-want +got):\n%s", tc.in, diff)
		}
		back, err := ParsePath(got.String())
		if err != nil || !cmp.Equal(back, got) {
			t.Errorf("ParsePath(%q).String() = %q does not round-trip: %v", tc.in, got.String(), err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", "*", "[0]", "a[", "a[x]", "a[-1]", "a[01]", `a["x`, `a["x"`, "a]b", `a"b`, "a[0]b", "a[*"} {
		if p, err := ParsePath(bad); err == nil {
			t.Errorf("ParsePath(%q) = %v, want an error", bad, p)
		}
	}
}

func decodeJSON(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		root  string
		paths []string
		mode  string
		want  string
		n     int
	}{
		{"mask a key", `{"user":"a","password":"p"}`, "arguments", []string{"arguments.password"}, "", `{"user":"a","password":"****"}`, 1},
		{"remove a key", `{"user":"a","password":"p"}`, "arguments", []string{"arguments.password"}, RedactRemove, `{"user":"a"}`, 1},
		{"absent key", `{"user":"a"}`, "arguments", []string{"arguments.password"}, "", `{"user":"a"}`, 0},
		{"other root ignored", `{"password":"p"}`, "arguments", []string{"result.password"}, "", `{"password":"p"}`, 0},
		{"nested object masked whole", `{"db":{"dsn":{"host":"h","pw":"x"}}}`, "arguments", []string{"arguments.db.dsn"}, "", `{"db":{"dsn":"****"}}`, 1},
		{"wildcard over array", `{"content":[{"type":"text","text":"s1"},{"type":"image","data":"d"},{"type":"text","text":"s2"}]}`,
			"result", []string{"result.content[*].text"}, "", `{"content":[{"type":"text","text":"****"},{"type":"image","data":"d"},{"type":"text","text":"****"}]}`, 2},
		{"wildcard over object", `{"env":{"A":"1","B":"2"}}`, "arguments", []string{"arguments.env.*"}, "", `{"env":{"A":"****","B":"****"}}`, 2},
		{"index", `{"items":["a","b","c"]}`, "arguments", []string{"arguments.items[1]"}, "", `{"items":["a","****","c"]}`, 1},
		{"index out of range", `{"items":["a"]}`, "arguments", []string{"arguments.items[3]"}, "", `{"items":["a"]}`, 0},
		{"remove array elements", `{"items":["a","b","c"]}`, "arguments", []string{"arguments.items[*]"}, RedactRemove, `{"items":[]}`, 3},
		{"remove one element", `{"items":["a","b","c"]}`, "arguments", []string{"arguments.items[0]"}, RedactRemove, `{"items":["b","c"]}`, 1},
		{"key on array is no match", `{"items":["a"]}`, "arguments", []string{"arguments.items.x"}, "", `{"items":["a"]}`, 0},
		{"through a scalar", `{"a":"x"}`, "arguments", []string{"arguments.a.b"}, "", `{"a":"x"}`, 0},
		{"whole root masked", `{"a":"x"}`, "arguments", []string{"arguments"}, "", `"****"`, 1},
		{"several paths", `{"a":1,"b":2,"c":3}`, "arguments", []string{"arguments.a", "arguments.c"}, "", `{"a":"****","b":2,"c":"****"}`, 2},
		{"quoted key", `{"x-api.key":"k","x":1}`, "arguments", []string{`arguments["x-api.key"]`}, RedactRemove, `{"x":1}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := decodeJSON(t, tc.in)
			before, _ := json.Marshal(in)
			got, n, err := Redact(in, tc.root, tc.paths, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(decodeJSON(t, tc.want), got); diff != "" {
				t.Errorf("Redact mismatch (-want +got):\n%s", diff)
			}
			if n != tc.n {
				t.Errorf("Redact count = %d, want %d", n, tc.n)
			}
			after, _ := json.Marshal(in)
			if string(before) != string(after) {
				t.Errorf("Redact modified its input: %s -> %s", before, after)
			}
		})
	}
	if _, _, err := Redact(map[string]any{}, "arguments", []string{"arguments..x"}, ""); err == nil {
		t.Error("Redact accepted a bad path")
	}
	if _, _, err := Redact(map[string]any{}, "arguments", []string{"arguments.x"}, "shred"); err == nil {
		t.Error("Redact accepted a bad mode")
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"arguments.password", "result.content[*].text", `a["x.y"][0]`, "a.*.b", "a[", `a["\u00e9"]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			return
		}
		if len(p) == 0 || p[0].Wildcard || p[0].Index >= 0 {
			t.Fatalf("ParsePath(%q) = %v: root must be a key", s, p)
		}
		back, err := ParsePath(p.String())
		if err != nil {
			t.Fatalf("ParsePath(%q).String() = %q does not parse: %v", s, p.String(), err)
		}
		if !cmp.Equal(back, p) {
			t.Fatalf("round trip of %q: %v != %v", s, back, p)
		}
	})
}

func FuzzRedact(f *testing.F) {
	f.Add(`{"a":{"b":[1,{"c":"secret"}]}}`, "arguments.a.b[*].c", false)
	f.Add(`{"password":"x","user":"u"}`, "arguments.password", true)
	f.Add(`[1,2,3]`, "arguments[*]", true)
	f.Fuzz(func(t *testing.T, doc, path string, remove bool) {
		var v any
		if json.Unmarshal([]byte(doc), &v) != nil {
			return
		}
		mode := RedactMask
		if remove {
			mode = RedactRemove
		}
		before, _ := json.Marshal(v)
		out, n, err := Redact(v, "arguments", []string{path}, mode)
		if err != nil {
			return
		}
		after, _ := json.Marshal(v)
		if string(before) != string(after) {
			t.Fatalf("input modified: %s -> %s", before, after)
		}
		if n == 0 {
			if got, _ := json.Marshal(out); string(got) != string(before) {
				t.Fatalf("nothing redacted but output changed: %s -> %s", before, got)
			}
			return
		}
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("output is not JSON: %v", err)
		}
		// Redacting again finds the same places (mask) or none (remove of keys may
		// expose nothing new under a concrete path).
		again, n2, _ := Redact(out, "arguments", []string{path}, RedactMask)
		if mode == RedactMask && n2 != n {
			t.Fatalf("second mask redacted %d, first %d", n2, n)
		}
		_ = again
	})
}

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLimiter(&LimiterOptions{Now: func() time.Time { return now }})
	key := LimitKey("ide", "fs__write")
	for i := range 3 {
		if ok, _ := l.Allow(key, 60, 3); !ok {
			t.Fatalf("call %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait := l.Allow(key, 60, 3)
	if ok || wait != time.Second {
		t.Fatalf("4th call: ok=%v wait=%v, want refused with 1s", ok, wait)
	}
	if ok, _ := l.Allow(LimitKey("other", "fs__write"), 60, 3); !ok {
		t.Error("another identity shares the bucket")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, wait := l.Allow(key, 60, 3); ok || wait != 500*time.Millisecond {
		t.Errorf("after 0.5s: ok=%v wait=%v", ok, wait)
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.Allow(key, 60, 3); !ok {
		t.Error("after 1s a token should be back")
	}
	now = now.Add(time.Hour)
	n := 0
	for {
		ok, _ := l.Allow(key, 60, 3)
		if !ok {
			break
		}
		n++
	}
	if n != 3 {
		t.Errorf("after an hour, %d calls allowed, want the burst of 3", n)
	}
	// A lower rate from a reloaded policy applies at once, and caps the stored tokens.
	now = now.Add(time.Hour)
	if ok, _ := l.Allow(key, 1, 1); !ok {
		t.Error("first call at 1/min refused")
	}
	if ok, wait := l.Allow(key, 1, 1); ok || wait != time.Minute {
		t.Errorf("second call at 1/min: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.Allow(key, 0, 0); ok {
		t.Error("per_minute 0 allowed")
	}
}

func TestLimiterBoundedMemory(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLimiter(&LimiterOptions{MaxKeys: 64, Now: func() time.Time { return now }})
	for i := range 10_000 {
		l.Allow(fmt.Sprintf("id-%d", i), 60, 0)
		now = now.Add(time.Millisecond)
	}
	if n := l.Len(); n > 64 {
		t.Errorf("limiter holds %d buckets, bound is 64", n)
	}
	// Eviction drops idle (refilled) buckets before drained ones, and the least
	// recently used when nothing is idle.
	var sh limiterShard
	sh.buckets = map[string]*bucket{
		"drained": {tokens: 0, capacity: 5, rate: 1.0 / 60, last: now},
		"idle":    {tokens: 1, capacity: 5, rate: 1, last: now.Add(-time.Minute)},
		"older":   {tokens: 0, capacity: 5, rate: 1.0 / 60, last: now.Add(-time.Second)},
	}
	sh.evict(now)
	if diff := cmp.Diff([]string{"drained", "older"}, sortedKeys(sh.buckets)); diff != "" {
		t.Errorf("after evicting idle (-want +got):\n%s", diff)
	}
	sh.evict(now)
	if diff := cmp.Diff([]string{"drained"}, sortedKeys(sh.buckets)); diff != "" {
		t.Errorf("after evicting LRU (-want +got):\n%s", diff)
	}
}

func sortedKeys(m map[string]*bucket) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestLimiterConcurrent(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLimiter(&LimiterOptions{Now: func() time.Time { return now }}) // frozen clock
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if ok, _ := l.Allow("k", 50, 0); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 50 {
		t.Errorf("%d calls allowed from a bucket of 50 with a frozen clock", allowed)
	}
}

func BenchmarkLimiterParallel(b *testing.B) {
	l := NewLimiter(nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(limitKeys[i%len(limitKeys)], 1_000_000, 0)
			i++
		}
	})
}

var limitKeys = func() []string {
	k := make([]string, 64)
	for i := range k {
		k[i] = LimitKey(fmt.Sprintf("id-%d", i%8), fmt.Sprintf("tool-%d", i))
	}
	return k
}()

func TestDecisionPriority(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conds []Condition
		want  string
	}{
		{"none", nil, ""},
		{"other conditions only", []Condition{{Type: CondRateLimit, PerMinute: 1}}, ""},
		{"one", []Condition{{Type: CondPriority, Level: "low"}}, "low"},
		{"highest of several", []Condition{{Type: CondPriority, Level: "high"}, {Type: CondRedactSecrets},
			{Type: CondPriority, Level: "critical"}, {Type: CondPriority, Level: "normal"}}, "critical"},
		{"unknown level ignored", []Condition{{Type: CondPriority, Level: "urgent"}, {Type: CondPriority, Level: "low"}}, "low"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (Decision{Allow: true, Conditions: tc.conds}).Priority(); got != tc.want {
				t.Errorf("Priority() = %q, want %q", got, tc.want)
			}
		})
	}
	for _, l := range PriorityLevels() {
		if err := (Condition{Type: CondPriority, Level: l}).Validate(); err != nil {
			t.Errorf("Validate(priority %s) = %v", l, err)
		}
	}
	if err := (Condition{Type: CondPriority, Level: "Normal"}).Validate(); err == nil {
		t.Error("Validate(priority Normal) = nil; levels are lower case")
	}
}
