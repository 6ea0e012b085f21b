package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParseReportsEveryProblemInOneRun: a value of the wrong type used to stop decoding,
// hiding an unknown key and the validation problems of the same file. Now every one is
// reported, with its key, in file order (decoding problems first).
func TestParseReportsEveryProblemInOneRun(t *testing.T) {
	in := `version = 1
[server]
listen = 8080
max_message_bytes = "big"
colour = "blue"
[[upstreams]]
name = "a"
command = ["x"]
timeout = 60
[[upstreams]]
name = "b"
command = "y"
args = [1, 2]
sandbox = { tier = "gvisor", cpus = "two", typo = 1 }
[[upstreams]]
name = "BAD"
url = "gopher://h"
[policy]
dir = 3
[audit]
fsync = "sometimes"
`
	want := []Problem{
		{"server.listen", "must be a string (got an integer)"},
		{"server.max_message_bytes", "must be an integer (got a string)"},
		{"server.colour", "unknown key"},
		{"upstreams[0].timeout", "must be a string (got an integer)"},
		{"upstreams[1].command", "must be an array of strings (got a string)"},
		{"upstreams[1].args", "must be an array of strings (got an array of integers)"},
		{"upstreams[1].sandbox.cpus", "must be a number (got a string)"},
		{"upstreams[1].sandbox.typo", "unknown key"},
		{"policy.dir", "must be a string (got an integer)"},
		{"audit.fsync", `must be "batch" or "every"`},
		{"upstreams[1].sandbox.image", `is required for tier "gvisor"`},
		{"upstreams[2].name", `must match [a-z0-9_-]{1,32} (got "BAD")`},
		{"upstreams[2].prefix", `must match [a-z0-9_-]{1,32} or be empty (got "BAD")`},
		{"upstreams[2].url", "must be an http or https URL"},
	}
	got := problems(t, in, nil)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
}

// TestParseTableShapes: a table where a value belongs, and the reverse, are reported
// under their key without stopping the rest.
func TestParseTableShapes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Problem
	}{
		{"scalar for a table", "version = 1\nserver = 3\nnope = 1\n", []Problem{{"server", "must be a table (got an integer)"}, {"nope", "unknown key"}}},
		{"scalar for an array of tables", "version = 1\nupstreams = \"a\"\n", []Problem{{"upstreams", "must be an array of tables (got a string)"}}},
		{"table for a scalar", "version = 1\n[server.listen]\nx = 1\n", []Problem{{"server.listen", "must be a string (got a table)"}}},
		{"inline array of tables", "version = 1\nupstreams = [{name = \"a\", command = [\"x\"], bogus = 1}]\n", []Problem{{"upstreams[0].bogus", "unknown key"}}},
		{"table for a string in an array", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nsandbox = { tier = \"none\", mounts = [{ source = \"/a\", target = \"/b\" }] }\n",
			[]Problem{{"upstreams[0].sandbox.mounts", "must be an array of strings (got an array of tables)"}}},
		{"env value of the wrong type", "version = 1\n[[upstreams]]\nname = \"a\"\ncommand = [\"x\"]\nenv = { A = 1 }\n", []Problem{{"upstreams[0].env", "must be a table of strings (got a table)"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, problems(t, tc.in, nil)); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
