package rag

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/symbi-dev/symbi/internal/pgtest"
)

// The PostgreSQL tests run on the throwaway cluster of internal/pgtest (a missing
// PostgreSQL fails them under SYMBI_REQUIRE_POSTGRES=1, else they skip); the store needs
// pgvector there too, which .ci/postgres.sh installs with it.

// postgresURL is a new, empty database on the test cluster.
func postgresURL(t testing.TB) string { return pgtest.URL(t) }

func openPostgres(t *testing.T) Store {
	t.Helper()
	s, err := NewPostgres(context.Background(), postgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) { storeSuite(t, openPostgres) }

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

func TestPgVectorText(t *testing.T) {
	for _, v := range [][]float32{{1, 0, -0.5}, {1e-30, 3.4028235e38, 0.1}, {0.33333334}} {
		got, err := parsePgVector(pgVector(v))
		if err != nil {
			t.Fatal(err)
		}
		for i := range v {
			if got[i] != v[i] {
				t.Errorf("round trip of %v = %v", v, got)
			}
		}
	}
	for _, bad := range []string{"", "[", "1,2", "[1,x]"} {
		if _, err := parsePgVector(bad); err == nil {
			t.Errorf("parsePgVector(%q) = nil error", bad)
		}
	}
}

// TestPostgresShared opens two stores on one database at once, as two symbi replicas
// do, and checks that the BM25 statistics follow every write of either.
func TestPostgresShared(t *testing.T) {
	ctx := context.Background()
	u := postgresURL(t)
	stores := make([]*Postgres, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = NewPostgres(ctx, u) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	a, b := stores[0], stores[1]
	check := func(step string) {
		t.Helper()
		var rows, words, wantRows, wantWords int64
		if err := a.pool.QueryRow(ctx, `SELECT rows, words FROM rag_stats`).Scan(&rows, &words); err != nil {
			t.Fatal(err)
		}
		if err := a.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(words), 0) FROM rag_chunks`).Scan(&wantRows, &wantWords); err != nil {
			t.Fatal(err)
		}
		if rows != wantRows || words != wantWords {
			t.Errorf("after %s: rag_stats = %d rows, %d words; the table has %d, %d", step, rows, words, wantRows, wantWords)
		}
	}
	v := []float32{1, 0}
	if err := a.Upsert(ctx, []Chunk{{Collection: "kb", ID: "1", Doc: "x", Text: "one two three", Vector: v}, {Collection: "kb", ID: "2", Text: "four", Vector: v}}); err != nil {
		t.Fatal(err)
	}
	check("insert")
	if err := b.Upsert(ctx, []Chunk{{Collection: "kb", ID: "1", Doc: "x", Text: "one two", Vector: v}}); err != nil {
		t.Fatal(err)
	}
	check("replace from the other replica")
	if hits, err := a.FullText(ctx, Query{Collection: "kb", Text: "three"}); err != nil || len(hits) != 0 {
		t.Errorf("replaced words still found by the first replica: %v, %v", ids(hits), err)
	}
	if _, err := b.DeleteDoc(ctx, "kb", "x"); err != nil {
		t.Fatal(err)
	}
	check("delete")
	if _, err := a.Purge(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	check("purge of nothing")
}

func openPostgresHNSW(t *testing.T) Store {
	t.Helper()
	s, err := NewPostgresWith(context.Background(), postgresURL(t), PostgresOptions{Index: "hnsw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The store with pgvector's HNSW index behaves as the exact one.
func TestPostgresHNSWStore(t *testing.T) { storeSuite(t, openPostgresHNSW) }

// TestPostgresHNSWSearch stores 3,000 clustered 384-dimension vectors and checks that
// searches go through the HNSW index (the plan names it), that recall@10 against the
// exact scan is at least 0.95 with and without a metadata filter, that a filter too
// selective for the index still finds its rows, and that a delete is seen at once.
func TestPostgresHNSWSearch(t *testing.T) {
	ctx := context.Background()
	u := postgresURL(t)
	s, err := NewPostgresWith(ctx, u, PostgresOptions{Index: "hnsw"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exact, err := NewPostgres(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer exact.Close()
	r := rand.New(rand.NewPCG(31, 32))
	const n, queries = 3000, 50
	all := clusteredVectors(r, n+queries, BuiltinDims, 1.5)
	var chunks []Chunk
	for i, v := range all[:n] {
		meta := map[string]string{"half": fmt.Sprint(i % 2)}
		if i%1000 == 7 {
			meta["rare"] = "yes"
		}
		chunks = append(chunks, Chunk{Collection: CollKnowledge, ID: fmt.Sprint(i), Text: "t", Meta: meta, Vector: v})
	}
	for i := 0; i < n; i += 500 {
		if err := s.Upsert(ctx, chunks[i:i+500]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE rag_chunks`); err != nil {
		t.Fatal(err)
	}
	sqlText, args, err := indexedQuery(Query{Collection: CollKnowledge, Vector: all[n], Limit: 10}, 10)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.pool.Query(ctx, "EXPLAIN "+sqlText, args...)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(plan, "\n"), "rag_chunks_hnsw_384") {
		t.Errorf("the search does not use the HNSW index:\n%s", strings.Join(plan, "\n"))
	}
	recall := func(filter map[string]string) float64 {
		found, total := 0, 0
		for _, qv := range all[n:] {
			q := Query{Collection: CollKnowledge, Vector: qv, Limit: 10, Filter: filter}
			want, err := exact.Nearest(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.nearestIndexed(ctx, q, 10)
			if err != nil {
				t.Fatal(err)
			}
			found += recallOf(int64s(ids(want)), int64s(ids(got)))
			total += len(want)
		}
		return float64(found) / float64(total)
	}
	all0, half := recall(nil), recall(map[string]string{"half": "1"})
	t.Logf("pgvector HNSW recall@10 against the exact scan, %d clustered vectors: %.3f; with a filter matching half: %.3f", n, all0, half)
	if all0 < 0.95 || half < 0.95 {
		t.Errorf("recall@10 = %.3f, %.3f with a filter; want ≥ 0.95", all0, half)
	}
	q := Query{Collection: CollKnowledge, Vector: all[n], Limit: 10, Filter: map[string]string{"rare": "yes"}}
	want, _ := exact.Nearest(ctx, q)
	got, err := s.Nearest(ctx, q)
	if err != nil || len(got) != 3 || !slices.Equal(ids(got), ids(want)) {
		t.Errorf("selective filter = %v, %v; want %v", ids(got), err, ids(want))
	}
	top, err := s.Nearest(ctx, Query{Collection: CollKnowledge, Vector: all[5], Limit: 1})
	if err != nil || len(top) != 1 || top[0].ID != "5" {
		t.Fatalf("search for a stored vector = %v, %v; want 5", ids(top), err)
	}
	if _, err := exact.Delete(ctx, CollKnowledge, "5"); err != nil {
		t.Fatal(err)
	}
	if top, err := s.Nearest(ctx, Query{Collection: CollKnowledge, Vector: all[5], Limit: 1}); err != nil || len(top) != 1 || top[0].ID == "5" {
		t.Errorf("search after the delete = %v, %v; want another chunk", ids(top), err)
	}
}
