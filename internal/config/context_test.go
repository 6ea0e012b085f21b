package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseContext(t *testing.T) {
	in := `version = 1
[context]
store = "env:PG"
embedder = "openai"
embedder_url = "http://127.0.0.1:11434"
embedder_model = "nomic-embed-text"
embedder_key = "env:EMB_KEY"
knowledge_retention = "720h"
ingest_roots = ["/srv/docs"]
chunk_chars = 800
index = "hnsw"
hnsw_m = 24
hnsw_ef_construction = 128
hnsw_ef_search = 100
`
	c, err := Parse("t.toml", []byte(in), env(map[string]string{"EMB_KEY": "sk-123", "PG": "postgres://u:p@h/db"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Context{Store: "postgres://u:p@h/db", Embedder: "openai", EmbedderURL: "http://127.0.0.1:11434", EmbedderModel: "nomic-embed-text",
		EmbedderKey: "sk-123", KnowledgeRetention: dur(720 * time.Hour), IngestRoots: []string{"/srv/docs"}, ChunkChars: 800,
		Index: "hnsw", HNSWM: 24, HNSWEfConstruction: 128, HNSWEfSearch: 100}
	if diff := cmp.Diff(want, c.Context); diff != "" {
		t.Errorf("context mismatch (-want +got):\n%s", diff)
	}
	r := c.Redacted().Context
	if r.EmbedderKey != "REDACTED" || r.Store != "REDACTED" {
		t.Errorf("Redacted context = %+v", r)
	}
	if c.Context.EmbedderKey != "sk-123" {
		t.Error("Redacted changed the original")
	}
	if k := Default().Context.EmbedderKind(); k != "builtin" {
		t.Errorf("default embedder = %q", k)
	}
}

func TestParseContextProblems(t *testing.T) {
	in := `version = 1
[context]
store = "mysql://x"
embedder = "ollama"
embedder_url = "ftp://x"
knowledge_retention = "-1h"
ingest_roots = ["/"]
chunk_chars = 10
vector_index = "hnsw"
`
	want := []string{"context.vector_index", "context.store", "context.embedder_url", "context.embedder_model",
		"context.knowledge_retention", "context.ingest_roots", "context.chunk_chars"}
	if diff := cmp.Diff(want, keys(problems(t, in, nil))); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s", diff)
	}
	builtin := "version = 1\n[context]\nembedder_url = \"http://x\"\n"
	if diff := cmp.Diff([]string{"context.embedder_url"}, keys(problems(t, builtin, nil))); diff != "" {
		t.Errorf("builtin with a URL (-want +got):\n%s", diff)
	}
	for in, want := range map[string]string{
		"version = 1\n[context]\nquantize = \"int4\"\n":                                      "context.quantize",
		"version = 1\n[context]\ntools_list = \"none\"\n":                                    "context.tools_list",
		"version = 1\n[context]\nstore = \"postgres://h/db\"\nquantize = \"int8\"\n":         "context.quantize",
		"version = 1\n[context]\nindex = \"ivf\"\n":                                          "context.index",
		"version = 1\n[context]\nhnsw_m = 16\n":                                              "context.hnsw_m",
		"version = 1\n[context]\nindex = \"hnsw\"\nhnsw_m = 1\n":                             "context.hnsw_m",
		"version = 1\n[context]\nindex = \"hnsw\"\nhnsw_ef_search = 5000\n":                  "context.hnsw_ef_search",
		"version = 1\n[context]\nindex = \"hnsw\"\nhnsw_m = 32\nhnsw_ef_construction = 40\n": "context.hnsw_ef_construction",
		"version = 1\n[context]\nindex = \"exact\"\nhnsw_ef_construction = 64\n":             "context.hnsw_ef_construction",
	} {
		if diff := cmp.Diff([]string{want}, keys(problems(t, in, nil))); diff != "" {
			t.Errorf("%q (-want +got):\n%s", in, diff)
		}
	}
	bad := "version = 1\n[context]\nembedder = \"word2vec\"\n"
	if diff := cmp.Diff([]string{"context.embedder"}, keys(problems(t, bad, nil))); diff != "" {
		t.Errorf("unknown embedder (-want +got):\n%s", diff)
	}
}

// TestContextStoreEnv: context.store may be "env:NAME", so the database password need not
// be written in the file; the resolved URL is validated like a literal one and redacted.
func TestContextStoreEnv(t *testing.T) {
	const pgURL = "postgres://symbi:s3cret-pw@db.internal:5432/symbi"
	for _, tc := range []struct {
		name      string
		store     string
		env       map[string]string
		want      string // the resolved store when there is no problem
		wantProbs []string
		wantMsg   string
	}{
		{name: "literal URL", store: pgURL, want: pgURL},
		{name: "unset means SQLite", store: "", want: ""},
		{name: "from environment", store: "env:SYMBI_PG", env: map[string]string{"SYMBI_PG": pgURL}, want: pgURL},
		{name: "postgresql scheme from environment", store: "env:PG", env: map[string]string{"PG": "postgresql://u@h/db"}, want: "postgresql://u@h/db"},
		{name: "variable not set", store: "env:SYMBI_PG", env: map[string]string{"OTHER": pgURL},
			wantProbs: []string{"context.store"}, wantMsg: "environment variable SYMBI_PG is not set"},
		{name: "variable empty", store: "env:SYMBI_PG", env: map[string]string{"SYMBI_PG": ""},
			wantProbs: []string{"context.store"}, wantMsg: "environment variable SYMBI_PG is empty"},
		{name: "variable holds another scheme", store: "env:SYMBI_PG", env: map[string]string{"SYMBI_PG": "mysql://u:p@h/db"},
			wantProbs: []string{"context.store"}, wantMsg: "postgres:// URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "version = 1\n[context]\nstore = \"" + tc.store + "\"\n"
			if tc.wantProbs != nil {
				ps := problems(t, in, tc.env)
				if diff := cmp.Diff(tc.wantProbs, keys(ps)); diff != "" {
					t.Fatalf("problems mismatch (-want +got):\n%s\n%v", diff, ps)
				}
				if !strings.Contains(ps[0].Msg, tc.wantMsg) {
					t.Errorf("problem %q lacks %q", ps[0].Msg, tc.wantMsg)
				}
				for _, p := range ps {
					if strings.Contains(p.Msg, "s3cret-pw") || strings.Contains(p.Msg, "mysql://u:p@") {
						t.Errorf("problem reveals the store URL: %q", p.Msg)
					}
				}
				return
			}
			c, err := Parse("t.toml", []byte(in), env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.Context.Store != tc.want {
				t.Errorf("store = %q, want %q", c.Context.Store, tc.want)
			}
			wantRedacted := ""
			if tc.want != "" {
				wantRedacted = "REDACTED"
			}
			if r := c.Redacted().Context.Store; r != wantRedacted {
				t.Errorf("redacted store = %q, want %q", r, wantRedacted)
			}
			if c.Context.Store != tc.want {
				t.Error("Redacted changed the original")
			}
		})
	}
}
