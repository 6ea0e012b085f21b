package rag

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/internal/store"
)

func openSQLite(t *testing.T) Store {
	t.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := NewSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLiteStore(t *testing.T) { storeSuite(t, openSQLite) }

func ids(hits []Hit) []string {
	out := []string{}
	for _, h := range hits {
		out = append(out, h.ID)
	}
	return out
}

func chunkIDs(cs []Chunk) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// storeSuite is the behaviour every Store implementation must show.
func storeSuite(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seed := []Chunk{
		{Collection: "kb", ID: "a", Doc: "d1", Text: "The quick brown fox jumps", Meta: map[string]string{"lang": "en", "topic": "animals"}, Vector: []float32{1, 0, 0}, Created: t0},
		{Collection: "kb", ID: "b", Doc: "d1", Text: "A lazy dog sleeps all day", Meta: map[string]string{"lang": "en", "topic": "animals"}, Vector: []float32{0.9, 0.1, 0}, Created: t0.Add(time.Second)},
		{Collection: "kb", ID: "c", Doc: "d2", Text: "Der schnelle Fuchs xylophone xylophone", Meta: map[string]string{"lang": "de"}, Vector: []float32{0, 1, 0}, Created: t0.Add(2 * time.Second)},
		{Collection: "kb", ID: "d", Doc: "d3", Text: "xylophone music notes", Vector: []float32{0, 0, 1}, Created: t0.Add(3 * time.Second)},
		{Collection: "other", ID: "a", Text: "The quick brown fox in another collection", Vector: []float32{1, 0, 0}, Created: t0},
		{Collection: "kb", ID: "old", Text: "expired fox", Vector: []float32{1, 0, 0}, Created: t0, Expires: time.Now().Add(-time.Minute)},
	}
	fresh := func(t *testing.T) Store {
		s := open(t)
		if err := s.Upsert(ctx, seed); err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("get", func(t *testing.T) {
		s := fresh(t)
		got, ok, err := s.Get(ctx, "kb", "a")
		if err != nil || !ok {
			t.Fatalf("Get = %v, %v", ok, err)
		}
		if diff := cmp.Diff(seed[0], got); diff != "" {
			t.Errorf("Get mismatch (-want +got):\n%s", diff)
		}
		for _, id := range []string{"old", "missing"} {
			if _, ok, err := s.Get(ctx, "kb", id); ok || err != nil {
				t.Errorf("Get(%s) = %v, %v; want not found", id, ok, err)
			}
		}
	})

	t.Run("nearest", func(t *testing.T) {
		s := fresh(t)
		for _, tc := range []struct {
			name string
			q    Query
			want []string
		}{
			{"ranked by cosine", Query{Collection: "kb", Vector: []float32{1, 0.05, 0}, Limit: 3}, []string{"a", "b", "c"}},
			{"limit", Query{Collection: "kb", Vector: []float32{0, 0, 1}, Limit: 1}, []string{"d"}},
			{"metadata filter", Query{Collection: "kb", Vector: []float32{1, 0, 0}, Filter: map[string]string{"lang": "de"}}, []string{"c"}},
			{"two filters", Query{Collection: "kb", Vector: []float32{0, 1, 0}, Filter: map[string]string{"lang": "en", "topic": "animals"}}, []string{"b", "a"}},
			{"document", Query{Collection: "kb", Vector: []float32{0, 1, 0}, Doc: "d1"}, []string{"b", "a"}},
			{"other collection", Query{Collection: "other", Vector: []float32{0, 1, 0}}, []string{"a"}},
			{"no match", Query{Collection: "kb", Vector: []float32{1, 0, 0}, Filter: map[string]string{"lang": "fr"}}, []string{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hits, err := s.Nearest(ctx, tc.q)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.want, ids(hits)); diff != "" {
					t.Errorf("Nearest mismatch (-want +got):\n%s", diff)
				}
				for i := 1; i < len(hits); i++ {
					if hits[i].Score > hits[i-1].Score {
						t.Errorf("scores not descending: %v", hits)
					}
				}
			})
		}
	})

	t.Run("full text", func(t *testing.T) {
		s := fresh(t)
		for _, tc := range []struct {
			name string
			q    Query
			want []string
		}{
			{"one word", Query{Collection: "kb", Text: "fox"}, []string{"a"}},
			{"term frequency ranks", Query{Collection: "kb", Text: "xylophone"}, []string{"c", "d"}},
			{"any word, shorter row first", Query{Collection: "kb", Text: "dog, music!"}, []string{"d", "b"}},
			{"case and punctuation", Query{Collection: "kb", Text: "LAZY?"}, []string{"b"}},
			{"query syntax is plain words", Query{Collection: "kb", Text: `fox OR "NEAR" * -dog`}, []string{"b", "a"}},
			{"filter", Query{Collection: "kb", Text: "xylophone", Filter: map[string]string{"lang": "de"}}, []string{"c"}},
			{"no words", Query{Collection: "kb", Text: "!!"}, []string{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hits, err := s.FullText(ctx, tc.q)
				if err != nil {
					t.Fatal(err)
				}
				got := ids(hits)
				if tc.name == "query syntax is plain words" { // "near", "fox", "or", "dog": both rows match, order by BM25
					if diff := cmp.Diff([]string{"a", "b"}, sortedCopy(got)); diff != "" {
						t.Errorf("FullText mismatch (-want +got):\n%s", diff)
					}
					return
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("FullText mismatch (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("list newest first", func(t *testing.T) {
		s := fresh(t)
		got, err := s.List(ctx, Query{Collection: "kb", Filter: map[string]string{"lang": "en"}})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"b", "a"}, chunkIDs(got)); diff != "" {
			t.Errorf("List mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("update is visible at once", func(t *testing.T) {
		s := fresh(t)
		up := seed[0]
		up.Text, up.Vector, up.Meta = "a zebra now", []float32{0, 0, 1}, map[string]string{"lang": "sw"}
		if err := s.Upsert(ctx, []Chunk{up}); err != nil {
			t.Fatal(err)
		}
		if hits, _ := s.FullText(ctx, Query{Collection: "kb", Text: "fox"}); len(hits) != 0 {
			t.Errorf("old text still found: %v", ids(hits))
		}
		if hits, _ := s.FullText(ctx, Query{Collection: "kb", Text: "zebra"}); !cmp.Equal(ids(hits), []string{"a"}) {
			t.Errorf("new text not found: %v", ids(hits))
		}
		if hits, _ := s.Nearest(ctx, Query{Collection: "kb", Vector: []float32{0, 0, 1}, Filter: map[string]string{"lang": "sw"}}); !cmp.Equal(ids(hits), []string{"a"}) {
			t.Errorf("new vector or metadata not found: %v", ids(hits))
		}
	})

	t.Run("delete", func(t *testing.T) {
		s := fresh(t)
		n, err := s.Delete(ctx, "kb", "a", "nope")
		if err != nil || n != 1 {
			t.Fatalf("Delete = %d, %v; want 1", n, err)
		}
		if n, err = s.DeleteDoc(ctx, "kb", "d1"); err != nil || n != 1 {
			t.Fatalf("DeleteDoc = %d, %v; want 1 (b)", n, err)
		}
		hits, err := s.FullText(ctx, Query{Collection: "kb", Text: "fox dog"})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 0 {
			t.Errorf("deleted chunks still found: %v", ids(hits))
		}
		if _, ok, _ := s.Get(ctx, "other", "a"); !ok {
			t.Error("a delete in one collection removed a chunk of another")
		}
	})

	t.Run("expiry and purge", func(t *testing.T) {
		s := fresh(t)
		for _, search := range []func() ([]Hit, error){
			func() ([]Hit, error) { return s.FullText(ctx, Query{Collection: "kb", Text: "expired"}) },
			func() ([]Hit, error) {
				return s.Nearest(ctx, Query{Collection: "kb", Vector: []float32{1, 0, 0}, Limit: 100})
			},
		} {
			hits, err := search()
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hits {
				if h.ID == "old" {
					t.Errorf("expired chunk found")
				}
			}
		}
		n, err := s.Purge(ctx, time.Now())
		if err != nil || n != 1 {
			t.Fatalf("Purge = %d, %v; want 1", n, err)
		}
	})

	t.Run("delete older", func(t *testing.T) {
		s := fresh(t)
		n, err := s.DeleteOlder(ctx, t0.Add(1500*time.Millisecond), "k", "nothing")
		if err != nil || n != 3 { // a, b and the expired one; "other" is not under "k"
			t.Fatalf("DeleteOlder = %d, %v; want 3", n, err)
		}
		left, err := s.List(ctx, Query{Collection: "kb", Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"d", "c"}, chunkIDs(left)); diff != "" {
			t.Errorf("left after DeleteOlder (-want +got):\n%s", diff)
		}
	})

	t.Run("stats", func(t *testing.T) {
		s := fresh(t)
		st, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := Stats{Chunks: 5, Docs: 3, Collections: map[string]int{"kb": 4, "other": 1}}
		if diff := cmp.Diff(want, st); diff != "" {
			t.Errorf("Stats mismatch (-want +got):\n%s", diff)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		s := open(t)
		nan := float32(0)
		nan /= nan
		for _, c := range []Chunk{
			{Collection: "kb", ID: "x", Text: "t"},
			{Collection: "kb", ID: "x", Text: "t", Vector: []float32{nan}},
			{Collection: "", ID: "x", Text: "t", Vector: []float32{1}},
			{Collection: "kb", ID: "x", Text: "t", Vector: []float32{1}, Meta: map[string]string{`a"b`: "v"}},
		} {
			if err := s.Upsert(ctx, []Chunk{c}); !errors.Is(err, ErrInvalid) {
				t.Errorf("Upsert(%+v) = %v, want ErrInvalid", c, err)
			}
		}
		if _, err := s.Nearest(ctx, Query{Collection: "kb", Vector: []float32{1}, Filter: map[string]string{"$.x') OR 1=1 --": "v"}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("filter with a bad key: err = %v, want ErrInvalid", err)
		}
	})

	t.Run("hybrid finds exact words a vector misses", func(t *testing.T) {
		s := fresh(t)
		// The vector points at "a"; the word only "d" has.
		hits, err := Hybrid(ctx, s, Query{Collection: "kb", Vector: []float32{1, 0, 0}, Text: "music", Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"d", "a"}, ids(hits)); diff != "" {
			t.Errorf("Hybrid mismatch (-want +got):\n%s", diff)
		}
	})
}

func sortedCopy(s []string) []string {
	out := append([]string{}, s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestFuse(t *testing.T) {
	h := func(ids ...string) []Hit {
		var out []Hit
		for _, id := range ids {
			out = append(out, Hit{Chunk: Chunk{ID: id}})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		limit int
		lists [][]Hit
		want  []string
	}{
		{"both lists agree", 3, [][]Hit{h("a", "b"), h("a", "b")}, []string{"a", "b"}},
		{"in both beats top of one", 3, [][]Hit{h("x", "a"), h("y", "a")}, []string{"a", "x", "y"}},
		{"limit", 1, [][]Hit{h("a", "b", "c")}, []string{"a"}},
		{"empty", 5, nil, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ids(Fuse(tc.limit, tc.lists...))); diff != "" {
				t.Errorf("Fuse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
