package rag

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// countingEmbedder counts the texts it embeds.
type countingEmbedder struct {
	Builtin
	n int
}

func (c *countingEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	c.n += len(texts)
	return c.Builtin.Embed(ctx, texts)
}

func TestToolIndex(t *testing.T) {
	ctx := context.Background()
	emb := &countingEmbedder{}
	e, _ := newEngine(t, Options{Embedder: emb})
	tools := []ToolDoc{
		{Name: "fs__read_text_file", Description: "Read the complete contents of a file as text.", InputSchema: json.RawMessage(`{"type":"object","properties":{"path":{"description":"file to read"}}}`)},
		{Name: "fs__write_file", Description: "Create or overwrite a file with new content."},
		{Name: "mail__send_email", Description: "Send an email message to recipients."},
		{Name: "secret__dump_keys", Description: "Read private signing keys from the vault."},
	}
	if err := e.SyncTools(ctx, tools); err != nil {
		t.Fatal(err)
	}
	all := func(string) bool { return true }
	hits, err := e.SearchTools(ctx, "read a file", 2, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) == 0 || hits[0].ID != "fs__read_text_file" {
		t.Errorf("search = %v, want fs__read_text_file first", ids(hits))
	}
	hidden := func(n string) bool { return n != "secret__dump_keys" }
	for _, q := range []string{"read private signing keys", "dump keys secret vault", "secret__dump_keys"} {
		hits, err := e.SearchTools(ctx, q, 10, hidden)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hits {
			if h.ID == "secret__dump_keys" {
				t.Errorf("query %q returned a hidden tool", q)
			}
		}
	}
	// Unchanged tools are not embedded again; removed ones disappear.
	before := emb.n
	if err := e.SyncTools(ctx, tools[:3]); err != nil {
		t.Fatal(err)
	}
	if emb.n != before {
		t.Errorf("re-sync embedded %d unchanged tools", emb.n-before)
	}
	hits, err = e.SearchTools(ctx, "signing keys vault", 10, all)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hits {
		if h.ID == "secret__dump_keys" {
			t.Error("a removed tool is still found")
		}
	}
	// A fresh engine on the same store knows what is indexed.
	e2, err := NewEngine(Options{Store: e.Store(), Embedder: emb})
	if err != nil {
		t.Fatal(err)
	}
	before = emb.n
	if err := e2.SyncTools(ctx, tools[:3]); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, emb.n); diff != "" {
		t.Errorf("a restarted index re-embedded unchanged tools (-want +got):\n%s", diff)
	}
}
