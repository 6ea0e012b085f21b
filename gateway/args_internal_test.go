package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeArguments(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]any
		err      string // substring; "" = no error
	}{
		{"absent", ``, nil, ""},
		{"null", `null`, nil, ""},
		{"object", `{"a":1,"b":[true,null,"x"],"c":{"d":"e"}}`, map[string]any{"a": 1.0, "b": []any{true, nil, "x"}, "c": map[string]any{"d": "e"}}, ""},
		{"same key in two objects", `{"a":{"k":1},"b":{"k":2}}`, map[string]any{"a": map[string]any{"k": 1.0}, "b": map[string]any{"k": 2.0}}, ""},
		{"duplicate", `{"path":"/etc/shadow","path":"/tmp/ok"}`, nil, "repeat the key arguments.path"},
		{"duplicate after unescaping", `{"path":1,"p\u0061th":2}`, nil, "repeat the key arguments.path"},
		{"nested duplicate", `{"a":{"b":{"c":1,"c":2}}}`, nil, "repeat the key arguments.a.b.c"},
		{"duplicate in array", `{"a":[{"k":1},{"k":1,"k":2}]}`, nil, "repeat the key arguments.a[1].k"},
		{"odd key quoted", `{"a b":1,"a b":2}`, nil, `repeat the key arguments["a b"]`},
		{"not an object", `[1,2]`, nil, "must be a JSON object"},
		{"string", `"x"`, nil, "must be a JSON object"},
		{"invalid utf-8", "{\"a\":\"\xff\"}", nil, "not valid UTF-8"},
		{"trailing data", `{"a":1}{"b":2}`, nil, "data after the object"},
		{"truncated", `{"a":`, nil, "parse tool arguments"},
		{"number out of range", `{"a":1e400}`, nil, "parse tool arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeArguments(json.RawMessage(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("decodeArguments(%s) error = %v, want %q", tc.in, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeArguments(%s): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decodeArguments(%s) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// FuzzDecodeArguments: whatever the client sends, decodeArguments never panics; what it
// accepts is an object that encoding/json reads the same way, with no key repeated (a
// repeated key would make the decoded object smaller than a count of its keys says).
func FuzzDecodeArguments(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}]}}`, `{"p\u0061th":1,"path":2}`, `null`, `[1]`, "{\"\xff\":1}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeArguments(data)
		if err != nil {
			return
		}
		if got == nil {
			return
		}
		var want map[string]any
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("decoded %q differently from encoding/json (-json +got):\n%s", data, diff)
		}
		if n := countKeys(t, data); n != keysIn(got) {
			t.Fatalf("accepted %q with %d keys written but %d distinct", data, n, keysIn(got))
		}
	})
}

// countKeys counts the object keys written in data, repeated ones included.
func countKeys(t *testing.T, data []byte) int {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	n := 0
	var inObject []bool
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				inObject = append(inObject, true)
				expectKey = true
				continue
			case '[':
				inObject = append(inObject, false)
			case '}', ']':
				inObject = inObject[:len(inObject)-1]
			}
		default:
			if expectKey {
				n++
				expectKey = false
				continue
			}
		}
		expectKey = len(inObject) > 0 && inObject[len(inObject)-1]
	}
}

func keysIn(v any) int {
	switch x := v.(type) {
	case map[string]any:
		n := len(x)
		for _, e := range x {
			n += keysIn(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range x {
			n += keysIn(e)
		}
		return n
	}
	return 0
}
