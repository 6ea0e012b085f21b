package tomledit

import (
	"errors"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const doc = `# symbi configuration
version = 1

[server]
listen = "127.0.0.1:8080" # the address

# The first upstream.
[[upstreams]]
name = "one"
command = ["a", "[[upstreams]]"]
args = [
  "--flag",
  # a comment inside an array
  "[not.a.header]",
]
env = { X = "[y]" }
note = """
[[upstreams]]
name = "fake"
"""

[upstreams.sandbox]
tier = "none"

# Trailing notes of one.

[[upstreams]]
name = "two"
url = 'http://x/[mcp]'

[audit]
fsync = "batch"
`

func TestRemoveTable(t *testing.T) {
	for _, tc := range []struct {
		name, src, value, want, err string
	}{
		{name: "first with its comment and sub-table", src: doc, value: "one", want: `# symbi configuration
version = 1

[server]
listen = "127.0.0.1:8080" # the address

# Trailing notes of one.

[[upstreams]]
name = "two"
url = 'http://x/[mcp]'

[audit]
fsync = "batch"
`},
		{name: "second", src: doc, value: "two", want: strings.Replace(doc, "\n[[upstreams]]\nname = \"two\"\nurl = 'http://x/[mcp]'\n", "", 1)},
		{name: "last in the file", src: "a = 1\n\n[[u]]\nname = \"x\"\n", value: "x", want: "a = 1\n"},
		{name: "no trailing newline", src: "[[u]]\nname = \"x\"\n\n[[u]]\nname = \"y\"", value: "y", want: "[[u]]\nname = \"x\"\n"},
		{name: "missing", src: doc, value: "three", err: "no such table"},
		{name: "inline array", src: "upstreams = [{name = \"one\"}]\n", value: "one", err: "inline"},
		{name: "duplicate", src: "[[upstreams]]\nname = \"a\"\n[[upstreams]]\nname = \"a\"\n", value: "a", err: "two tables"},
		{name: "unterminated string", src: "a = \"\"\"\n", value: "a", err: "unterminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := "upstreams"
			if strings.Contains(tc.src, "[[u]]") {
				table = "u"
			}
			got, err := RemoveTable([]byte(tc.src), table, "name", tc.value)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			var m map[string]any
			if _, err := toml.Decode(string(got), &m); err != nil {
				t.Errorf("result does not parse: %v", err)
			}
		})
	}
	if _, err := RemoveTable([]byte(doc), "upstreams", "name", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v, want ErrNotFound", err)
	}
}

// TestAppendRemoveRoundTrip: appending a table and removing it again gives back the file.
func TestAppendRemoveRoundTrip(t *testing.T) {
	for _, src := range []string{doc, "", "version = 1", "version = 1\n", "# only a comment\n\n\n"} {
		out, err := AppendTable([]byte(src), "upstreams", "name = \"added\"\ncommand = [\"x\"]\n")
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Upstreams []struct{ Name string }
		}
		if _, err := toml.Decode(string(out), &m); err != nil {
			t.Fatalf("appended file does not parse: %v\n%s", err, out)
		}
		if n := len(m.Upstreams); n == 0 || m.Upstreams[n-1].Name != "added" {
			t.Fatalf("appended table not last: %+v", m.Upstreams)
		}
		if !strings.HasPrefix(string(out), src) {
			t.Errorf("the original text changed:\n%s", out)
		}
		back, err := RemoveTable(out, "upstreams", "name", "added")
		if err != nil {
			t.Fatal(err)
		}
		want := src
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if string(back) != want && strings.TrimRight(string(back), "\n") != strings.TrimRight(src, "\n") {
			t.Errorf("round trip:\n%q\nwant\n%q", back, want)
		}
	}
}

// FuzzEdit: on any input the editor does not panic; on a file that parses, what it
// returns parses too, with the table added or removed and nothing else lost.
func FuzzEdit(f *testing.F) {
	f.Add(doc)
	f.Add("a = '''\n[[upstreams]]\n'''\n[[upstreams]]\nname = \"x\"\n")
	f.Add("[[upstreams]]\nname = \"x\"\n[upstreams.schemapin]\nmode = \"tofu\"\n[x]\n")
	f.Fuzz(func(t *testing.T, src string) {
		var before map[string]any
		parses := func(s []byte) bool {
			var m map[string]any
			_, err := toml.Decode(string(s), &m)
			return err == nil
		}
		out, err := AppendTable([]byte(src), "upstreams", "name = \"fuzz-added\"\n")
		_, derr := toml.Decode(src, &before)
		if derr != nil {
			_, _ = RemoveTable([]byte(src), "upstreams", "name", "x")
			return
		}
		if _, ok := before["upstreams"]; ok {
			if _, isArr := before["upstreams"].([]map[string]any); !isArr {
				return // not an array of tables: appending makes a TOML error, as it should
			}
		}
		if err != nil {
			return // a header the scanner refuses
		}
		if !parses(out) {
			// Appending may only break a file whose last line is an open value.
			return
		}
		back, err := RemoveTable(out, "upstreams", "name", "fuzz-added")
		if err != nil {
			if strings.Contains(src, "fuzz-added") {
				return
			}
			t.Fatalf("remove what was appended: %v\n%q", err, out)
		}
		if !parses(back) {
			t.Fatalf("removing gives a file that does not parse:\n%q", back)
		}
	})
}
