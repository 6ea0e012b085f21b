package rag

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

// BenchmarkSQLiteSearch measures ingest and exact search on the SQLite store with random
// 384-dimension vectors; RAG_BENCH_N sets the number of chunks (default 10000). It
// reports chunks/s ingested and search p50/p99.
func BenchmarkSQLiteSearch(b *testing.B) {
	n := 10000
	if s := os.Getenv("RAG_BENCH_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	ctx := context.Background()
	db, err := store.Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := NewSQLite(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	vec := func() []float32 {
		v := make([]float64, BuiltinDims)
		for i := range v {
			v[i] = r.NormFloat64()
		}
		return normalize(v)
	}
	start := time.Now()
	for i := 0; i < n; i += 1000 {
		batch := make([]Chunk, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			batch = append(batch, Chunk{Collection: CollKnowledge, ID: fmt.Sprint(j), Doc: fmt.Sprint(j / 10), Text: fmt.Sprintf("chunk %d of the benchmark corpus", j), Vector: vec()})
		}
		if err := s.Upsert(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "chunks/s_ingest")
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := s.Nearest(ctx, Query{Collection: CollKnowledge, Vector: vec(), Limit: 10}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms_p50")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "ms_p99")
}
