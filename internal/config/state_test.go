package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestStateStore: state.store is "" (SQLite) or a postgres:// URL, literally or from
// "env:NAME"; problems never show the URL, and Redacted hides it.
func TestStateStore(t *testing.T) {
	const pgURL = "postgres://symbi:s3cret-pw@db.internal:5432/symbi"
	for _, tc := range []struct {
		name      string
		in        string // the [state] table's body
		env       map[string]string
		want      string
		wantProbs []string
		wantMsg   string
	}{
		{name: "unset means SQLite", in: "", want: ""},
		{name: "empty means SQLite", in: `store = ""`, want: ""},
		{name: "literal URL", in: `store = "` + pgURL + `"`, want: pgURL},
		{name: "postgresql scheme", in: `store = "postgresql://u@h/db"`, want: "postgresql://u@h/db"},
		{name: "from environment", in: `store = "env:SYMBI_STATE"`, env: map[string]string{"SYMBI_STATE": pgURL}, want: pgURL},
		{name: "variable not set", in: `store = "env:SYMBI_STATE"`, env: map[string]string{"OTHER": pgURL},
			wantProbs: []string{"state.store"}, wantMsg: "environment variable SYMBI_STATE is not set"},
		{name: "variable empty", in: `store = "env:SYMBI_STATE"`, env: map[string]string{"SYMBI_STATE": ""},
			wantProbs: []string{"state.store"}, wantMsg: "environment variable SYMBI_STATE is empty"},
		{name: "another scheme", in: `store = "mysql://u:s3cret-pw@h/db"`, wantProbs: []string{"state.store"}, wantMsg: "postgres:// URL"},
		{name: "a file path", in: `store = "/var/lib/symbi/state.db"`, wantProbs: []string{"state.store"}, wantMsg: "postgres:// URL"},
		{name: "bad URL", in: `store = "postgres://u:s3cret-pw@h:port/db"`, wantProbs: []string{"state.store"}, wantMsg: "not a valid URL"},
		{name: "unknown key", in: "store = \"\"\nshare = true", wantProbs: []string{"state.share"}, wantMsg: "unknown"},
		{name: "wrong type", in: "store = 5", wantProbs: []string{"state.store"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "version = 1\n[state]\n" + tc.in + "\n"
			if tc.wantProbs != nil {
				ps := problems(t, in, tc.env)
				if diff := cmp.Diff(tc.wantProbs, keys(ps)); diff != "" {
					t.Fatalf("problems mismatch (-want +got):\n%s\n%v", diff, ps)
				}
				if !strings.Contains(strings.ToLower(ps[0].Msg), strings.ToLower(tc.wantMsg)) {
					t.Errorf("problem %q lacks %q", ps[0].Msg, tc.wantMsg)
				}
				for _, p := range ps {
					if strings.Contains(p.Msg, "s3cret-pw") {
						t.Errorf("problem reveals the store URL: %q", p.Msg)
					}
				}
				return
			}
			c, err := Parse("t.toml", []byte(in), env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.State.Store != tc.want || c.State.Shared() != (tc.want != "") {
				t.Errorf("store = %q (shared %v), want %q", c.State.Store, c.State.Shared(), tc.want)
			}
			wantRedacted := ""
			if tc.want != "" {
				wantRedacted = "REDACTED"
			}
			if r := c.Redacted().State.Store; r != wantRedacted {
				t.Errorf("redacted store = %q, want %q", r, wantRedacted)
			}
			if c.State.Store != tc.want {
				t.Error("Redacted changed the original")
			}
		})
	}
}
