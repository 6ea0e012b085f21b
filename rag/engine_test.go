package rag

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newEngine(t *testing.T, o Options) (*Engine, *clock) {
	t.Helper()
	clk := &clock{now: time.Now().Truncate(time.Millisecond)}
	o.Store = openSQLite(t)
	o.Now = clk.Now
	e, err := NewEngine(o)
	if err != nil {
		t.Fatal(err)
	}
	return e, clk
}

func contents(ms []Memory) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Content)
	}
	return out
}

func TestMemory(t *testing.T) {
	ctx := context.Background()
	e, clk := newEngine(t, Options{ShortLimit: 3})
	must := func(_ Memory, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.Remember(ctx, "alice", Long, "Alice's favourite database is PostgreSQL", map[string]string{"topic": "db"}, 0))
	must(e.Remember(ctx, "alice", Long, "The deploy window is Tuesday at noon", map[string]string{"topic": "ops"}, 0))
	must(e.Remember(ctx, "bob", Long, "Bob prefers SQLite databases", nil, 0))

	t.Run("recall by meaning is per identity", func(t *testing.T) {
		got, err := e.Recall(ctx, "alice", []Kind{Long}, "which database", nil, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || got[0].Content != "Alice's favourite database is PostgreSQL" {
			t.Errorf("recall = %v", contents(got))
		}
		for _, m := range got {
			if strings.Contains(m.Content, "Bob") {
				t.Errorf("alice recalled bob's memory %q", m.Content)
			}
		}
	})
	t.Run("recall by metadata", func(t *testing.T) {
		got, err := e.Recall(ctx, "alice", []Kind{Long}, "", map[string]string{"topic": "ops"}, 5)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"The deploy window is Tuesday at noon"}, contents(got)); diff != "" {
			t.Errorf("recall mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("short term is bounded and expires", func(t *testing.T) {
		for _, s := range []string{"one", "two", "three", "four"} {
			must(e.Remember(ctx, "alice", Short, s, nil, 0))
			clk.Add(time.Millisecond)
		}
		got, err := e.Recall(ctx, "alice", []Kind{Short}, "", nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"four", "three", "two"}, contents(got)); diff != "" {
			t.Errorf("short-term mismatch (-want +got):\n%s", diff)
		}
		clk.Add(25 * time.Hour)
		if got, _ = e.Recall(ctx, "alice", []Kind{Short}, "", nil, 10); len(got) != 0 {
			t.Errorf("expired short-term memories recalled: %v", contents(got))
		}
	})
	t.Run("working memory ends", func(t *testing.T) {
		must(e.Remember(ctx, "alice", Working, "step 1 done", nil, 0))
		if err := e.EndWorking(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if got, _ := e.Recall(ctx, "alice", []Kind{Working}, "", nil, 10); len(got) != 0 {
			t.Errorf("working memory left after its end: %v", contents(got))
		}
	})
	t.Run("shared has an owner who alone forgets", func(t *testing.T) {
		m, err := e.Remember(ctx, "alice", Shared, "The team wiki moved", nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Recall(ctx, "bob", []Kind{Shared}, "wiki", nil, 5)
		if err != nil || len(got) != 1 || got[0].Owner != "alice" {
			t.Fatalf("bob's shared recall = %+v, %v", got, err)
		}
		if _, err := e.Forget(ctx, "bob", Shared, m.ID); !errors.Is(err, ErrInvalid) {
			t.Errorf("bob forgot alice's shared memory: err = %v", err)
		}
		if ok, err := e.Forget(ctx, "alice", Shared, m.ID); !ok || err != nil {
			t.Errorf("alice's Forget = %v, %v", ok, err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for _, tc := range []struct {
			kind    Kind
			content string
			meta    map[string]string
			ttl     time.Duration
		}{
			{"episodic", "x", nil, 0},
			{Long, "  ", nil, 0},
			{Long, "x", map[string]string{"bad key": "v"}, 0},
			{Long, "x", nil, -time.Second},
			{Long, "\xff", nil, 0},
		} {
			if _, err := e.Remember(ctx, "alice", tc.kind, tc.content, tc.meta, tc.ttl); !errors.Is(err, ErrInvalid) {
				t.Errorf("Remember(%q, %q) = %v, want ErrInvalid", tc.kind, tc.content, err)
			}
		}
	})
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	e, clk := newEngine(t, Options{Retention: time.Hour})
	if _, err := e.Remember(ctx, "a", Long, "old fact", nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Ingest(ctx, Document{ID: "old", Text: "old doc"}); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Hour)
	if _, err := e.Remember(ctx, "a", Long, "new fact", nil, 0); err != nil {
		t.Fatal(err)
	}
	n, err := e.Maintain(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Maintain = %d, %v; want 2", n, err)
	}
	got, _ := e.Recall(ctx, "a", []Kind{Long}, "", nil, 10)
	if diff := cmp.Diff([]string{"new fact"}, contents(got)); diff != "" {
		t.Errorf("after retention (-want +got):\n%s", diff)
	}
}

func TestKnowledge(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	e, _ := newEngine(t, Options{ChunkChars: 60, Roots: []string{root}})
	long := "Symbi verifies tool definitions with SchemaPin.\n\nPolicies are written in Rego and hot reloaded.\n\nThe audit trail is hash chained."
	info, err := e.Ingest(ctx, Document{ID: "guide", Title: "Guide", Text: long, Metadata: map[string]string{"lang": "en"}})
	if err != nil {
		t.Fatal(err)
	}
	if info.Chunks != 3 {
		t.Errorf("ingested %d chunks, want 3", info.Chunks)
	}
	if _, err := e.Ingest(ctx, Document{Title: "Other", Text: "Rego is a policy language.", Metadata: map[string]string{"lang": "fr"}}); err != nil {
		t.Fatal(err)
	}

	hits, err := e.Search(ctx, "rego policies", nil, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) < 2 || hits[0].ID != "guide#1" && hits[1].ID != "guide#1" {
		t.Errorf("search = %v, want guide#1 among the first two", ids(hits))
	}
	hits, err = e.Search(ctx, "rego", map[string]string{"lang": "fr"}, 5)
	if err != nil || len(hits) != 1 || hits[0].Meta["title"] != "Other" {
		t.Errorf("filtered search = %v, %v", hits, err)
	}

	// An update replaces the document at once, shorter tail included.
	if _, err := e.Ingest(ctx, Document{ID: "guide", Title: "Guide", Text: "Now only about zebras."}); err != nil {
		t.Fatal(err)
	}
	cs, ok, err := e.Doc(ctx, "guide")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if diff := cmp.Diff([]string{"guide#0"}, chunkIDs(cs)); diff != "" {
		t.Errorf("chunks after update (-want +got):\n%s", diff)
	}
	if hits, _ := e.Search(ctx, "SchemaPin", nil, 5); len(hits) > 0 && strings.Contains(hits[0].Text, "SchemaPin") {
		t.Errorf("old version still found: %v", hits[0].Text)
	}
	if n, err := e.DeleteDoc(ctx, "guide"); n != 1 || err != nil {
		t.Errorf("DeleteDoc = %d, %v", n, err)
	}
	if _, ok, _ := e.Doc(ctx, "guide"); ok {
		t.Error("deleted document still readable")
	}

	t.Run("files only under roots", func(t *testing.T) {
		in := filepath.Join(root, "a.md")
		if err := os.WriteFile(in, []byte("# A\n\ntext"), 0o600); err != nil {
			t.Fatal(err)
		}
		outside := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(root, "link")
		if err := os.Symlink(outside, link); err != nil {
			t.Fatal(err)
		}
		if s, err := e.ReadFile(in); err != nil || s != "# A\n\ntext" {
			t.Errorf("ReadFile(inside) = %q, %v", s, err)
		}
		for _, p := range []string{outside, link, filepath.Join(root, "..", filepath.Base(filepath.Dir(outside)), "secret"), root} {
			if _, err := e.ReadFile(p); !errors.Is(err, ErrInvalid) {
				t.Errorf("ReadFile(%s) = %v, want ErrInvalid", p, err)
			}
		}
	})
	t.Run("reserved metadata", func(t *testing.T) {
		if _, err := e.Ingest(ctx, Document{Text: "x", Metadata: map[string]string{"source": "forged"}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Ingest with reserved metadata: %v", err)
		}
	})
}
