package rag

import (
	"context"
	"encoding/json"
	"os"
	"testing"
)

// TestRetrievalQuality measures recall@5 of the builtin embedder alone, BM25 alone and
// the hybrid ranking on a small question set about symbi's own documentation
// (testdata/qa.json: 25 passages, 30 questions, 5 of them exact rare terms). It prints
// the figures the README quotes and fails only if hybrid ranking falls below either
// ranking alone.
func TestRetrievalQuality(t *testing.T) {
	var qa struct {
		Docs      map[string]string `json:"docs"`
		Questions [][2]string       `json:"questions"`
	}
	b, err := os.ReadFile("testdata/qa.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &qa); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e, _ := newEngine(t, Options{})
	for id, text := range qa.Docs {
		if _, err := e.Ingest(ctx, Document{ID: id, Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	var vec, txt, hyb int
	for _, q := range qa.Questions {
		qv, _ := e.embedOne(ctx, q[0])
		query := Query{Collection: CollKnowledge, Vector: qv, Text: q[0], Limit: 5}
		found := func(hits []Hit) int {
			for _, h := range hits {
				if h.Doc == q[1] {
					return 1
				}
			}
			return 0
		}
		v, err := e.Store().Nearest(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		x, err := e.Store().FullText(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		h, err := Hybrid(ctx, e.Store(), query)
		if err != nil {
			t.Fatal(err)
		}
		vec, txt, hyb = vec+found(v), txt+found(x), hyb+found(h)
	}
	n := float64(len(qa.Questions))
	t.Logf("recall@5 over %d questions: builtin vectors %.2f, BM25 %.2f, hybrid %.2f", len(qa.Questions), float64(vec)/n, float64(txt)/n, float64(hyb)/n)
	if hyb < vec || hyb < txt {
		t.Errorf("hybrid (%d) finds fewer than a single ranking (vectors %d, BM25 %d)", hyb, vec, txt)
	}
}
