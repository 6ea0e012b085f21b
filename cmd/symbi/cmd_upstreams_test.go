package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/catalog"
	"github.com/symbi-dev/symbi/internal/config"
)

// TestCatalogEntriesValidate: every server of the built-in catalog, added as `symbi add
// NAME` writes it, gives a configuration the loader accepts, with its command, default
// arguments and required environment.
func TestCatalogEntriesValidate(t *testing.T) {
	all, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 8 {
		t.Fatalf("catalog has %d servers", len(all))
	}
	for _, s := range all {
		t.Run(s.Name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "symbi.toml")
			var out, errb bytes.Buffer
			if code := runAdd(t.Context(), []string{"--config", cfg, "--no-reload", s.Name}, &out, &errb); code != 0 {
				t.Fatalf("symbi add %s: exit %d\n%s%s", s.Name, code, out.String(), errb.String())
			}
			data, err := os.ReadFile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c, err := config.Parse(cfg, data, placeholderEnv)
			if err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
			if len(c.Upstreams) != 1 {
				t.Fatalf("upstreams: %+v", c.Upstreams)
			}
			u := c.Upstreams[0]
			if u.Name != s.Name || strings.Join(u.Command, " ") != strings.Join(s.Command, " ") {
				t.Errorf("upstream %+v, catalog %+v", u, s)
			}
			if len(s.DefaultArgs) > 0 && (len(u.Args) != len(s.DefaultArgs) || strings.Contains(strings.Join(u.Args, " "), "$PWD")) {
				t.Errorf("args %q from defaults %q", u.Args, s.DefaultArgs)
			}
			for _, k := range s.RequiredEnv() {
				if !strings.Contains(string(data), k+` = "env:`+k+`"`) {
					t.Errorf("required env %s not written:\n%s", k, data)
				}
			}
		})
	}
}

// TestAddRemoveFile: add and remove on a file with comments keep everything else as it
// was; a change that would make the file invalid is refused and nothing is written.
func TestAddRemoveFile(t *testing.T) {
	const orig = "# my config\nversion = 1\n\n[server]\nlisten = \"127.0.0.1:0\" # here\n\n# the one\n[[upstreams]]\nname = \"one\"\ncommand = [\"true\"]\n# end\n"
	dir := t.TempDir()
	cfg := filepath.Join(dir, "symbi.toml")
	if err := os.WriteFile(cfg, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	for _, tc := range []struct {
		args []string
		code int
		want string // in the file afterwards
	}{
		{[]string{"add", "two", "--", "echo", "a b", `q"uote`}, 0, "name = \"two\"\ncommand = [\"echo\", \"a b\", \"q\\\"uote\"]\n"},
		{[]string{"add", "web", "--url", "http://127.0.0.1:9/mcp", "--header", "Authorization=env:TOK", "--prefix", "w"}, 0, "url = \"http://127.0.0.1:9/mcp\"\nheaders = { Authorization = \"env:TOK\" }\nprefix = \"w\"\n"},
		{[]string{"add", "tiered", "--tier", "sideways", "--", "x"}, 1, ""},
		{[]string{"add", "one", "--", "x"}, 1, ""},
		{[]string{"add", "Bad Name", "--", "x"}, 1, ""},
		{[]string{"add", "nocmd"}, 2, ""},
		{[]string{"add", "both", "--url", "http://x", "--", "y"}, 2, ""},
		{[]string{"remove", "two"}, 0, ""},
		{[]string{"remove", "web"}, 0, ""},
		{[]string{"remove", "two"}, 1, ""},
	} {
		out.Reset()
		errb.Reset()
		before, _ := os.ReadFile(cfg)
		args := append([]string{tc.args[0], "--config", cfg, "--no-reload"}, tc.args[1:]...)
		if code := run(t.Context(), args, &out, &errb); code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", tc.args, code, tc.code, out.String(), errb.String())
		}
		after, _ := os.ReadFile(cfg)
		if tc.code != 0 && !bytes.Equal(before, after) {
			t.Errorf("%v: a refused change wrote the file:\n%s", tc.args, after)
		}
		if tc.want != "" && !strings.Contains(string(after), tc.want) {
			t.Errorf("%v: file lacks %q:\n%s", tc.args, tc.want, after)
		}
	}
	if got, _ := os.ReadFile(cfg); string(got) != orig {
		t.Errorf("after adding and removing, the file is\n%s\nwant\n%s", got, orig)
	}
}
