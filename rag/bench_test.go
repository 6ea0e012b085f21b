package rag

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

// benchN is the number of chunks the store benchmarks hold: RAG_BENCH_N (default 10000).
func benchN() int {
	n := 10000
	if s := os.Getenv("RAG_BENCH_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	return n
}

// benchWords is a vocabulary for the benchmark corpus's text, so that full-text
// search selects a realistic few chunks rather than all of them.
var benchWords = func() []string {
	r := rand.New(rand.NewPCG(3, 4))
	out := make([]string, 20000)
	for i := range out {
		var b strings.Builder
		for range 4 + r.IntN(6) {
			b.WriteByte(byte('a' + r.IntN(26)))
		}
		out[i] = b.String()
	}
	return out
}()

func benchText(r *rand.Rand) string {
	w := make([]string, 40)
	for i := range w {
		w[i] = benchWords[r.IntN(len(benchWords))]
	}
	return strings.Join(w, " ")
}

// fillBench ingests n chunks of random 384-dimension vectors and random text in batches
// of 1000 and returns chunks/s.
func fillBench(b *testing.B, s Store, n int) float64 {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	for i := 0; i < n; i += 1000 {
		batch := make([]Chunk, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			v := randomVectors(r, 1, BuiltinDims)[0]
			batch = append(batch, Chunk{Collection: CollKnowledge, ID: fmt.Sprint(j), Doc: fmt.Sprint(j / 10), Text: benchText(r), Vector: v})
		}
		if err := s.Upsert(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// latencies runs fn b.N times and reports p50 and p99 in milliseconds, and then the
// extra metrics (ResetTimer would drop them if reported before).
func latencies(b *testing.B, fn func() error, extra map[string]float64) {
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms_p50")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "ms_p99")
	for k, v := range extra {
		b.ReportMetric(v, k)
	}
}

func openBenchSQLite(b *testing.B, o SQLiteOptions) (*SQLite, string) {
	path := filepath.Join(b.TempDir(), "bench.db")
	db, err := store.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	s, err := NewSQLiteWith(context.Background(), db, o)
	if err != nil {
		b.Fatal(err)
	}
	return s, path
}

// BenchmarkSQLiteSearch measures ingest and nearest-neighbour search on the SQLite store,
// exact and int8-quantized (with exact rescoring), at RAG_BENCH_N chunks × 384
// dimensions: chunks/s ingested, search p50/p99, and the state file's bytes per chunk.
func BenchmarkSQLiteSearch(b *testing.B) {
	for _, quant := range []string{"", "int8"} {
		name := "exact"
		if quant != "" {
			name = quant
		}
		b.Run(name, func(b *testing.B) {
			n := benchN()
			s, path := openBenchSQLite(b, SQLiteOptions{Quantize: quant})
			extra := map[string]float64{"chunks/s_ingest": fillBench(b, s, n)}
			if _, err := s.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				b.Fatal(err)
			}
			if fi, err := os.Stat(path); err == nil {
				extra["bytes/chunk"] = float64(fi.Size()) / float64(n)
			}
			qr := rand.New(rand.NewPCG(5, 6))
			latencies(b, func() error {
				_, err := s.Nearest(context.Background(), Query{Collection: CollKnowledge, Vector: randomVectors(qr, 1, BuiltinDims)[0], Limit: 10})
				return err
			}, extra)
		})
	}
}

// BenchmarkRAGContext measures what symbi__rag_answer does before it asks the model:
// embed the question with the builtin embedder, hybrid search (vectors and BM25, fused)
// and the top 5 passages, at RAG_BENCH_N chunks, exact and int8.
func BenchmarkRAGContext(b *testing.B) {
	for _, quant := range []string{"", "int8"} {
		name := "exact"
		if quant != "" {
			name = quant
		}
		b.Run(name, func(b *testing.B) {
			s, _ := openBenchSQLite(b, SQLiteOptions{Quantize: quant})
			extra := map[string]float64{"chunks/s_ingest": fillBench(b, s, benchN())}
			e, err := NewEngine(Options{Store: s, Embedder: Builtin{}})
			if err != nil {
				b.Fatal(err)
			}
			qr := rand.New(rand.NewPCG(7, 8))
			latencies(b, func() error {
				q := strings.Join(strings.Fields(benchText(qr))[:6], " ")
				_, err := e.Search(context.Background(), q, nil, 5)
				return err
			}, extra)
		})
	}
}

// BenchmarkPostgresSearch is BenchmarkSQLiteSearch on the test PostgreSQL (exact scan).
func BenchmarkPostgresSearch(b *testing.B) {
	s, err := NewPostgres(context.Background(), postgresURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	extra := map[string]float64{"chunks/s_ingest": fillBench(b, s, benchN())}
	qr := rand.New(rand.NewPCG(5, 6))
	latencies(b, func() error {
		_, err := s.Nearest(context.Background(), Query{Collection: CollKnowledge, Vector: randomVectors(qr, 1, BuiltinDims)[0], Limit: 10})
		return err
	}, extra)
}

// BenchmarkIngest measures documents ingested per second through the engine (chunking,
// builtin embedding, storing) on the SQLite store: 1000 documents of about 3 KB each.
func BenchmarkIngest(b *testing.B) {
	s, _ := openBenchSQLite(b, SQLiteOptions{})
	e, err := NewEngine(Options{Store: s, Embedder: Builtin{}})
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 9))
	docs := make([]string, 1000)
	for i := range docs {
		var p []string
		for range 8 {
			p = append(p, benchText(r)+".")
		}
		docs[i] = strings.Join(p, "\n\n")
	}
	var chunks int
	start := time.Now()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		info, err := e.Ingest(context.Background(), Document{ID: fmt.Sprint(i), Text: docs[i%len(docs)]})
		if err != nil {
			b.Fatal(err)
		}
		chunks += info.Chunks
	}
	sec := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N)/sec, "docs/s")
	b.ReportMetric(float64(chunks)/sec, "chunks/s")
}
