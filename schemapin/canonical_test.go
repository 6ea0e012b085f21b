package schemapin

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCanonicalize(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"sorted keys", `{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{"nested keys sorted", `{"z":{"y":1,"x":[{"d":1,"c":2}]},"a":null}`, `{"a":null,"z":{"x":[{"c":2,"d":1}],"y":1}}`},
		{"whitespace removed", "{ \"a\" :\t[ 1 , 2 ]\n}", `{"a":[1,2]}`},
		{"arrays keep order", `[3,1,2]`, `[3,1,2]`},
		{"no html escaping", `{"a":"<&>"}`, `{"a":"<&>"}`},
		{"escaped html becomes raw", `{"a":"\u003c\u0026\u003e"}`, `{"a":"<&>"}`},
		{"line separators raw", `{"a":"\u2028\u2029"}`, "{\"a\":\"\u2028\u2029\"}"},
		{"unicode raw", `{"a":"\u00e9\ud83d\ude00"}`, `{"a":"é😀"}`},
		{"control escapes", `{"a":"\u0000\u001f\b\f\n\r\t\"\\/"}`, `{"a":"\u0000\u001f\b\f\n\r\t\"\\/"}`},
		{"del not escaped", `{"a":"\u007f"}`, "{\"a\":\"\x7f\"}"},
		{"numbers as written", `{"a":1.0,"b":1e5,"c":-0,"d":12345678901234567890,"e":1E-2}`, `{"a":1.0,"b":1e5,"c":-0,"d":12345678901234567890,"e":1E-2}`},
		// Code point order, as Python sorts: U+FFFF sorts before U+1F600 (UTF-16 order would
		// put the surrogate pair first).
		{"key order by code point", `{"😀":2,"￿":3,"é":1,"Z":0,"a":4}`, `{"Z":0,"a":4,"é":1,"￿":3,"😀":2}`},
		{"duplicate keys last wins", `{"a":1,"a":2}`, `{"a":2}`},
		{"literals", `[true,false,null,""]`, `[true,false,null,""]`},
		{"scalar document", `"x"`, `"x"`},
		{"empty containers", `{"a":{},"b":[]}`, `{"a":{},"b":[]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("Canonicalize(%s) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestCanonicalizeErrors(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ``},
		{"truncated", `{"a":`},
		{"trailing data", `{"a":1} {"b":2}`},
		{"trailing garbage", `{"a":1}x`},
		{"invalid utf8", "{\"a\":\"\xff\"}"},
		{"bare word", `nope`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := Canonicalize([]byte(tc.in)); err == nil {
				t.Errorf("Canonicalize(%q) = %q, want an error", tc.in, got)
			}
		})
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":2}`, `{"a":"<&>\u2028"}`, `[1.0,-0,1e5]`, `{"😀":{"￿":[null,true]}}`,
		`{"a":"\u0000\"\\"}`, `"x"`, `{"name":"t","inputSchema":{"type":"object"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c1, err := Canonicalize(data)
		if err != nil {
			return
		}
		if !json.Valid(c1) {
			t.Fatalf("canonical form is not valid JSON: %q", c1)
		}
		c2, err := Canonicalize(c1)
		if err != nil {
			t.Fatalf("canonical form does not parse again: %v", err)
		}
		if string(c1) != string(c2) {
			t.Fatalf("not idempotent:\n%q\n%q", c1, c2)
		}
	})
}
