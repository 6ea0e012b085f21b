package rag

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

// exactKeys is the brute-force answer: the k keys closest to q by cosine.
func exactKeys(vs [][]float32, q []float32, k int) []int64 {
	qn := normalised(q)
	type kd struct {
		k int64
		d float32
	}
	all := make([]kd, len(vs))
	for i, v := range vs {
		all[i] = kd{int64(i), 1 - dot(qn, normalised(v))}
	}
	slices.SortFunc(all, func(a, b kd) int {
		if a.d < b.d {
			return -1
		}
		if a.d > b.d {
			return 1
		}
		return 0
	})
	out := make([]int64, 0, k)
	for _, x := range all[:min(k, len(all))] {
		out = append(out, x.k)
	}
	return out
}

func recallOf(want, got []int64) (found int) {
	for _, w := range want {
		if slices.Contains(got, w) {
			found++
		}
	}
	return found
}

// clusteredVectors are n vectors of dims dimensions around 1 + n/50 random centres,
// each centre plus noise of spread (relative to the centre's length): the shape of
// text embeddings, where documents on one subject sit near each other.
func clusteredVectors(r *rand.Rand, n, dims int, spread float64) [][]float32 {
	centres := randomVectors(r, 1+n/50, dims)
	out := make([][]float32, n)
	for i := range out {
		c := centres[r.IntN(len(centres))]
		v := make([]float64, dims)
		for j := range v {
			v[j] = float64(c[j]) + spread*r.NormFloat64()/math.Sqrt(float64(dims))
		}
		out[i] = normalize(v)
	}
	return out
}

// TestHNSWRecall builds the graph over 2,000 clustered 384-dimension vectors and
// checks recall@10 against brute force at the default parameters: it fails below 0.95.
func TestHNSWRecall(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const n, queries = 2000, 100
	all := clusteredVectors(r, n+queries, BuiltinDims, 1.5)
	vs, qs := all[:n], all[n:]
	h := newHNSW(BuiltinDims, HNSWParams{})
	t0 := time.Now()
	for i, v := range vs {
		h.Add(int64(i), v)
	}
	build := time.Since(t0)
	found := 0
	for _, q := range qs {
		got, _ := h.Search(q, 10, h.p.EfSearch)
		found += recallOf(exactKeys(vs, q, 10), got)
	}
	recall := float64(found) / float64(10*queries)
	t.Logf("n=%d build %v (%.0f/s), recall@10 %.3f, memory %.1f MB", n, build, n/build.Seconds(), recall, float64(h.Bytes())/1e6)
	if recall < 0.95 {
		t.Errorf("recall@10 = %.3f, want ≥ 0.95", recall)
	}
}

// openSQLiteHNSW opens a SQLite store with the HNSW index on every collection, however
// small, and waits until its first build is done.
func openSQLiteHNSW(t *testing.T, db *sql.DB, o SQLiteOptions) *SQLite {
	t.Helper()
	o.Index = "hnsw"
	if o.ExactBelow == 0 {
		o.ExactBelow = -1
	}
	s, err := NewSQLiteWith(context.Background(), db, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitIndex(t, s)
	return s
}

func waitIndex(t testing.TB, s *SQLite) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for !s.ann.ready.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the vector index was not built in 15 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The store with the HNSW index behaves as the exact one.
func TestSQLiteHNSWStore(t *testing.T) {
	storeSuite(t, func(t *testing.T) Store {
		db, err := store.OpenMemory()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return openSQLiteHNSW(t, db, SQLiteOptions{})
	})
}

func TestSQLiteIndexOptions(t *testing.T) {
	for _, o := range []SQLiteOptions{
		{Index: "ivf"},
		{Index: "hnsw", HNSW: HNSWParams{M: -1}},
		{Index: "hnsw", HNSW: HNSWParams{M: 1000}},
		{Index: "hnsw", HNSW: HNSWParams{EfSearch: -5}},
	} {
		if _, err := NewSQLiteWith(context.Background(), nil, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewSQLiteWith(%+v) = %v, want ErrInvalid", o, err)
		}
	}
}

// TestSQLiteHNSWSearch checks the indexed store against the exact scan of the same
// database on 2,000 clustered vectors: recall@10 (≥ 0.95, with and without a metadata
// filter), a filter too selective for the graph (exact fallback, same answer), writes
// and deletes visible to the next search, writes of another store on the same database
// (another process), and a rebuild when a store opens on existing chunks.
func TestSQLiteHNSWSearch(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exact, err := NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(21, 22))
	const n, queries = 2000, 50
	all := clusteredVectors(r, n+queries, BuiltinDims, 1.5)
	var chunks []Chunk
	for i, v := range all[:n] {
		meta := map[string]string{"half": fmt.Sprint(i % 2)}
		if i%1000 == 7 {
			meta["rare"] = "yes" // 2 chunks
		}
		chunks = append(chunks, Chunk{Collection: CollKnowledge, ID: fmt.Sprint(i), Text: "t", Meta: meta, Vector: v})
	}
	if err := exact.Upsert(ctx, chunks); err != nil {
		t.Fatal(err)
	}
	s := openSQLiteHNSW(t, db, SQLiteOptions{ExactBelow: 100}) // built from the 2,000 stored chunks
	if got := s.ann.graph(CollKnowledge, BuiltinDims).Len(); got != n {
		t.Fatalf("index holds %d vectors, want %d", got, n)
	}
	recall := func(filter map[string]string) float64 {
		found, total := 0, 0
		for _, qv := range all[n:] {
			q := Query{Collection: CollKnowledge, Vector: qv, Limit: 10, Filter: filter}
			want, err := exact.Nearest(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got, ok, err := s.annNearest(ctx, q)
			if err != nil || !ok {
				t.Fatalf("indexed search = %v, %v; want an answer from the index", ok, err)
			}
			found += recallOf(int64s(ids(want)), int64s(ids(got)))
			total += len(want)
		}
		return float64(found) / float64(total)
	}
	all0, half := recall(nil), recall(map[string]string{"half": "1"})
	t.Logf("recall@10 against the exact scan, %d clustered vectors: %.3f; with a filter matching half: %.3f", n, all0, half)
	if all0 < 0.95 || half < 0.95 {
		t.Errorf("recall@10 = %.3f, %.3f with a filter; want ≥ 0.95", all0, half)
	}

	// A filter that 2 chunks match: the candidates hold too few, the exact scan answers.
	q := Query{Collection: CollKnowledge, Vector: all[n], Limit: 10, Filter: map[string]string{"rare": "yes"}}
	if _, ok, err := s.annNearest(ctx, q); ok || err != nil {
		t.Errorf("selective filter: index answered (%v, %v); want the exact fallback", ok, err)
	}
	want, _ := exact.Nearest(ctx, q)
	got, err := s.Nearest(ctx, q)
	if err != nil || len(got) != 2 || !slices.Equal(ids(got), ids(want)) {
		t.Errorf("selective filter = %v, %v; want %v", ids(got), err, ids(want))
	}

	// Writes through this store, and through another one (another process), are found
	// by the next search; deleted and replaced vectors are not.
	other, err := NewSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	probe := all[n+1]
	top := func() string {
		t.Helper()
		hits, err := s.Nearest(ctx, Query{Collection: CollKnowledge, Vector: probe, Limit: 1})
		if err != nil || len(hits) != 1 {
			t.Fatalf("Nearest = %v, %v", hits, err)
		}
		return hits[0].ID
	}
	for _, step := range []struct {
		name  string
		write func() error
		want  string
	}{
		{"insert", func() error {
			return s.Upsert(ctx, []Chunk{{Collection: CollKnowledge, ID: "new", Text: "t", Vector: probe}})
		}, "new"},
		{"replace", func() error {
			return s.Upsert(ctx, []Chunk{{Collection: CollKnowledge, ID: "new", Text: "t", Vector: all[0]}})
		}, ""},
		{"insert by another store", func() error {
			return other.Upsert(ctx, []Chunk{{Collection: CollKnowledge, ID: "theirs", Text: "t", Vector: probe}})
		}, "theirs"},
		{"delete by another store", func() error {
			_, err := other.Delete(ctx, CollKnowledge, "theirs")
			return err
		}, ""},
	} {
		if err := step.write(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got := top()
		if step.want != "" && got != step.want {
			t.Errorf("after %s: top hit %s, want %s", step.name, got, step.want)
		}
		if step.want == "" && (got == "new" || got == "theirs") {
			t.Errorf("after %s: top hit %s, which should be gone or moved", step.name, got)
		}
	}
	if got, want := s.ann.graph(CollKnowledge, BuiltinDims).Len(), n+1; got != want {
		t.Errorf("index holds %d vectors after the writes, want %d", got, want)
	}
}

func int64s(ss []string) []int64 {
	out := make([]int64, len(ss))
	for i, s := range ss {
		out[i], _ = strconv.ParseInt(s, 10, 64)
	}
	return out
}

// TestSQLiteHNSWConcurrent searches while other goroutines write and delete (run with
// -race), then checks that the index holds exactly the stored vectors.
func TestSQLiteHNSWConcurrent(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := openSQLiteHNSW(t, db, SQLiteOptions{})
	r := rand.New(rand.NewPCG(41, 42))
	vs := randomVectors(r, 400, 8)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < len(vs); i += 2 {
				if err := s.Upsert(ctx, []Chunk{{Collection: "kb", ID: fmt.Sprint(i), Text: "t", Vector: vs[i]}}); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					if _, err := s.Delete(ctx, "kb", fmt.Sprint(i)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for i := range 200 {
				if _, err := s.Nearest(ctx, Query{Collection: "kb", Vector: vs[i], Limit: 5}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, err := s.Nearest(ctx, Query{Collection: "kb", Vector: vs[0], Limit: 5}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.ann.graph("kb", 8).Len(); got != st.Chunks {
		t.Errorf("index holds %d vectors, the store %d", got, st.Chunks)
	}
}

// TestSQLiteHNSWRebuild deletes most of a collection: once tombstones are most of the
// graph it is rebuilt in the background while the old one answers; the rebuilt graph
// holds the live vectors and only the tombstones of deletes made during the rebuild.
func TestSQLiteHNSWRebuild(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := openSQLiteHNSW(t, db, SQLiteOptions{})
	r := rand.New(rand.NewPCG(51, 52))
	vs := randomVectors(r, 1500, 4)
	var chunks []Chunk
	var gone []string
	for i, v := range vs {
		chunks = append(chunks, Chunk{Collection: "kb", ID: fmt.Sprint(i), Text: "t", Vector: v})
		if i < 1200 {
			gone = append(gone, fmt.Sprint(i))
		}
	}
	if err := s.Upsert(ctx, chunks); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "kb", gone...); err != nil {
		t.Fatal(err)
	}
	hits, err := s.Nearest(ctx, Query{Collection: "kb", Vector: vs[0], Limit: 300})
	if err != nil || len(hits) != 300 {
		t.Fatalf("search after the deletes = %d hits, %v; want 300", len(hits), err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		g := s.ann.graph("kb", 4)
		g.mu.RLock()
		nodes, dead := len(g.keys), g.ndead
		g.mu.RUnlock()
		// Deletes that came after the rebuild read the store stay as tombstones.
		if nodes-dead == 300 && nodes < 1500 && !s.ann.busy.Load() && s.ann.ready.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("graph not rebuilt: %d nodes, %d tombstones", nodes, dead)
		}
		time.Sleep(10 * time.Millisecond)
	}
	again, err := s.Nearest(ctx, Query{Collection: "kb", Vector: vs[0], Limit: 300})
	if err != nil || !slices.Equal(ids(again), ids(hits)) {
		t.Errorf("search after the rebuild differs: %v", err)
	}
}

// TestHNSWRecallRandom is the hard case: uniformly random 384-dimension vectors, with
// no clusters for the graph to follow. It logs recall@10 against brute force at
// several ef_search values and requires 0.95 at the largest (what hnsw_ef_search
// must be raised to for such data); the default's recall is reported, not hidden.
func TestHNSWRecallRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const n, queries = 3000, 100
	all := randomVectors(r, n+queries, BuiltinDims)
	vs, qs := all[:n], all[n:]
	h := newHNSW(BuiltinDims, HNSWParams{})
	for i, v := range vs {
		h.Add(int64(i), v)
	}
	want := make([][]int64, len(qs))
	for i, q := range qs {
		want[i] = exactKeys(vs, q, 10)
	}
	var recall float64
	for _, ef := range []int{80, 200, 500} {
		found := 0
		for i, q := range qs {
			got, _ := h.Search(q, 10, ef)
			found += recallOf(want[i], got)
		}
		recall = float64(found) / float64(10*queries)
		t.Logf("random vectors, n=%d: recall@10 %.3f at ef_search %d", n, recall, ef)
	}
	if recall < 0.95 {
		t.Errorf("recall@10 = %.3f at ef_search 500, want ≥ 0.95", recall)
	}
}
