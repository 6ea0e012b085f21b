package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// fuzzLookup sets every variable whose name has an even length, so both the resolved
// and the missing path of env: values are explored.
func fuzzLookup(name string) (string, bool) {
	if len(name)%2 == 1 {
		return "", false
	}
	return "fuzz-value-" + name + "-0123456789", true
}

// FuzzParse checks that Parse never panics and either returns a configuration that
// passes validation (defaults applied, secrets resolved) or an *Error with problems,
// each naming a key. The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, path := range []string{"testdata/full.toml", "../../configs/symbi.example.toml"} {
		if data, err := os.ReadFile(path); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("version = 1\n"))
	f.Add([]byte("version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data, fuzzLookup)
		if err != nil {
			if c != nil {
				t.Errorf("Parse returned both a config and %v", err)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse error %T is not an *Error: %v", err, err)
			}
			if len(ce.Problems) == 0 {
				t.Fatalf("*Error without problems")
			}
			for _, p := range ce.Problems {
				if p.Key == "" || p.Msg == "" {
					t.Errorf("problem without key or message: %#v", p)
				}
			}
			return
		}
		if c == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if probs := c.validate(); len(probs) != 0 {
			t.Errorf("accepted config does not validate: %v", probs)
		}
		if c.Version != CurrentVersion || c.Server.Listen == "" || c.Server.DataDir == "" {
			t.Errorf("defaults not applied: %+v", c.Server)
		}
		for i, u := range c.Upstreams {
			if u.Prefix == nil {
				t.Fatalf("upstreams[%d].prefix is nil after defaults", i)
			}
			if u.Timeout.Duration <= 0 {
				t.Errorf("upstreams[%d].timeout = %v", i, u.Timeout)
			}
			for k, v := range u.Env {
				if strings.HasPrefix(v, "env:") {
					t.Errorf("upstreams[%d].env.%s left unresolved: %q", i, k, v)
				}
			}
			for k, v := range u.Headers {
				if strings.HasPrefix(v, "env:") {
					t.Errorf("upstreams[%d].headers.%s left unresolved: %q", i, k, v)
				}
			}
		}
		r := c.Redacted()
		for i, tok := range r.Server.Tokens {
			if tok.Token != "REDACTED" {
				t.Errorf("redacted server.tokens[%d].token = %q", i, tok.Token)
			}
			if strings.HasPrefix(c.Server.Tokens[i].Token, "env:") {
				t.Errorf("server.tokens[%d].token left unresolved", i)
			}
		}
	})
}
