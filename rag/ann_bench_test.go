package rag

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

// annFixture is a SQLite file of RAG_BENCH_N chunks with 384-dimension vectors, shared
// by the sub-benchmarks of BenchmarkANN: clustered (the shape of text embeddings) unless
// RAG_BENCH_VECTORS=random (the hard case for an approximate index).
type annFixture struct {
	db      *sql.DB
	exact   *SQLite
	hnsw    *SQLite
	queries [][]float32
	extra   map[string]float64
	err     error
}

var (
	annOnce sync.Once
	annFix  annFixture
)

func benchVectors(r *rand.Rand, n int) [][]float32 {
	if os.Getenv("RAG_BENCH_VECTORS") == "random" {
		return randomVectors(r, n, BuiltinDims)
	}
	return clusteredVectors(r, n, BuiltinDims, 1.5)
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func heapBytes() float64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc)
}

func annSetup(b *testing.B) *annFixture {
	annOnce.Do(func() {
		f := &annFix
		f.extra = map[string]float64{}
		ctx := context.Background()
		dir, err := os.MkdirTemp("", "symbi-ann-bench")
		if err != nil {
			f.err = err
			return
		}
		if f.db, f.err = store.Open(dir + "/bench.db"); f.err != nil {
			return
		}
		if f.exact, f.err = NewSQLite(ctx, f.db); f.err != nil {
			return
		}
		n := benchN()
		r := rand.New(rand.NewPCG(1, 2))
		all := benchVectors(r, n+100)
		f.queries = all[n:]
		for i := 0; i < n; i += 1000 {
			batch := make([]Chunk, 0, 1000)
			for j := i; j < min(i+1000, n); j++ {
				batch = append(batch, Chunk{Collection: CollKnowledge, ID: fmt.Sprint(j), Doc: fmt.Sprint(j / 10),
					Text: benchText(r), Meta: map[string]string{"half": fmt.Sprint(j % 2)}, Vector: all[j]})
			}
			if f.err = f.exact.Upsert(ctx, batch); f.err != nil {
				return
			}
		}
		heap0, cpu0, t0 := heapBytes(), cpuSeconds(), time.Now()
		if f.hnsw, f.err = NewSQLiteWith(ctx, f.db, SQLiteOptions{Index: "hnsw"}); f.err != nil {
			return
		}
		for !f.hnsw.ann.ready.Load() {
			time.Sleep(50 * time.Millisecond)
		}
		f.extra["build_s"] = time.Since(t0).Seconds()
		f.extra["build_cpu_s"] = cpuSeconds() - cpu0
		f.extra["index_MB"] = float64(f.hnsw.ann.graph(CollKnowledge, BuiltinDims).Bytes()) / 1e6
		f.extra["heap_MB"] = (heapBytes() - heap0) / 1e6
	})
	if annFix.err != nil {
		b.Fatal(annFix.err)
	}
	return &annFix
}

// annRecall is recall@10 of the index against the exact scan over the fixture's queries.
func annRecall(b *testing.B, f *annFixture, filter map[string]string) float64 {
	ctx := context.Background()
	found, total := 0, 0
	for _, qv := range f.queries {
		q := Query{Collection: CollKnowledge, Vector: qv, Limit: 10, Filter: filter}
		want, err := f.exact.Nearest(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		got, err := f.hnsw.Nearest(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		found += recallOf(int64s(ids(want)), int64s(ids(got)))
		total += len(want)
	}
	return float64(found) / float64(total)
}

// BenchmarkANN compares the exact scan and the HNSW index of the SQLite store at
// RAG_BENCH_N chunks × 384 dimensions: search p50/p99 (and CPU per search), with and
// without a metadata filter matching half the chunks; the index's build time (wall and
// CPU), its memory and recall@10 against the exact scan; and the RAG context of
// symbi__rag_answer (embed, hybrid search, top 5) through the index.
func BenchmarkANN(b *testing.B) {
	ctx := context.Background()
	search := func(s *SQLite, filter map[string]string) func(i int) error {
		return func(i int) error {
			f := &annFix
			_, err := s.Nearest(ctx, Query{Collection: CollKnowledge, Vector: f.queries[i%len(f.queries)], Limit: 10, Filter: filter})
			return err
		}
	}
	half := map[string]string{"half": "1"}
	for _, tc := range []struct {
		name   string
		s      func(f *annFixture) *SQLite
		filter map[string]string
	}{
		{"exact", func(f *annFixture) *SQLite { return f.exact }, nil},
		{"hnsw", func(f *annFixture) *SQLite { return f.hnsw }, nil},
		{"exact-filter", func(f *annFixture) *SQLite { return f.exact }, half},
		{"hnsw-filter", func(f *annFixture) *SQLite { return f.hnsw }, half},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := annSetup(b)
			extra := map[string]float64{}
			if tc.name == "hnsw" {
				for k, v := range f.extra {
					extra[k] = v
				}
			}
			if tc.name == "hnsw" || tc.name == "hnsw-filter" {
				extra["recall@10"] = annRecall(b, f, tc.filter)
			}
			fn := search(tc.s(f), tc.filter)
			i := 0
			cpu0, n0 := cpuSeconds(), 0
			latencies(b, func() error { i++; n0++; return fn(i) }, extra)
			b.ReportMetric((cpuSeconds()-cpu0)/float64(n0)*1000, "cpu_ms/op")
		})
	}
	b.Run("rag-hnsw", func(b *testing.B) {
		f := annSetup(b)
		e, err := NewEngine(Options{Store: f.hnsw, Embedder: Builtin{}})
		if err != nil {
			b.Fatal(err)
		}
		qr := rand.New(rand.NewPCG(7, 8))
		latencies(b, func() error {
			_, err := e.Search(ctx, benchText(qr)[:40], nil, 5)
			return err
		}, nil)
	})
}

// BenchmarkPostgresANN is BenchmarkANN on the test PostgreSQL: the exact scan against
// pgvector's HNSW index (created after the RAG_BENCH_N chunks are stored, its build
// time reported), search p50/p99 and recall@10.
func BenchmarkPostgresANN(b *testing.B) {
	ctx := context.Background()
	u := postgresURL(b)
	exact, err := NewPostgres(ctx, u)
	if err != nil {
		b.Fatal(err)
	}
	defer exact.Close()
	n := benchN()
	r := rand.New(rand.NewPCG(1, 2))
	all := benchVectors(r, n+100)
	queries := all[n:]
	for i := 0; i < n; i += 1000 {
		batch := make([]Chunk, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			batch = append(batch, Chunk{Collection: CollKnowledge, ID: fmt.Sprint(j), Doc: fmt.Sprint(j / 10),
				Text: benchText(r), Meta: map[string]string{"half": fmt.Sprint(j % 2)}, Vector: all[j]})
		}
		if err := exact.Upsert(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	t0 := time.Now()
	hnsw, err := NewPostgresWith(ctx, u, PostgresOptions{Index: "hnsw"})
	if err != nil {
		b.Fatal(err)
	}
	defer hnsw.Close()
	build := time.Since(t0).Seconds()
	if _, err := hnsw.pool.Exec(ctx, `ANALYZE rag_chunks`); err != nil {
		b.Fatal(err)
	}
	var indexBytes float64
	if err := hnsw.pool.QueryRow(ctx, `SELECT pg_relation_size('rag_chunks_hnsw_384')`).Scan(&indexBytes); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		s    *Postgres
	}{{"exact", exact}, {"hnsw", hnsw}} {
		b.Run(tc.name, func(b *testing.B) {
			extra := map[string]float64{}
			if tc.name == "hnsw" {
				found, total := 0, 0
				for _, qv := range queries {
					q := Query{Collection: CollKnowledge, Vector: qv, Limit: 10}
					want, err := exact.Nearest(ctx, q)
					if err != nil {
						b.Fatal(err)
					}
					got, err := hnsw.Nearest(ctx, q)
					if err != nil {
						b.Fatal(err)
					}
					found += recallOf(int64s(ids(want)), int64s(ids(got)))
					total += len(want)
				}
				extra["recall@10"] = float64(found) / float64(total)
				extra["build_s"] = build
				extra["index_MB"] = indexBytes / 1e6
			}
			i := 0
			latencies(b, func() error {
				i++
				_, err := tc.s.Nearest(ctx, Query{Collection: CollKnowledge, Vector: queries[i%len(queries)], Limit: 10})
				return err
			}, extra)
		})
	}
}
