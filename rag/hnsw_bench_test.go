package rag

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

// bruteForce is the k keys of vs (normalised) closest to q (normalised) by cosine.
func bruteForce(vs [][]float32, q []float32, k int) []int64 {
	best := candHeap{far: true}
	for i, v := range vs {
		d := 1 - dot(q, v)
		if len(best.c) < k || d < best.c[0].d {
			best.push(cand{int32(i), d})
			if len(best.c) > k {
				best.pop()
			}
		}
	}
	out := make([]int64, len(best.c))
	for i, c := range best.c {
		out[i] = int64(c.id)
	}
	return out
}

// BenchmarkHNSW measures the graph alone (no SQLite) at RAG_HNSW_N (default 10,000)
// vectors of 384 dimensions, clustered or, with RAG_BENCH_VECTORS=random, uniformly
// random: build CPU per vector, memory (index estimate and heap growth), then search
// p50/p99 and CPU per search with recall@10 against brute force over 200 queries at
// ef_search 80 (the default) and higher, and the time to save the graph to an index
// file and to load it back.
func BenchmarkHNSW(b *testing.B) {
	n := 10000
	if s := os.Getenv("RAG_HNSW_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("RAG_HNSW_N=%q: want a positive count", s)
		}
		n = v
	}
	r := rand.New(rand.NewPCG(3, 4))
	const nq = 200
	all := benchVectors(r, n+nq)
	vs, qs := all[:n], all[n:]
	var h *hnsw
	for b.Loop() {
		heap0 := heapBytes()
		h = newHNSW(BuiltinDims, HNSWParams{})
		cpu0, t0 := cpuSeconds(), time.Now()
		for i, v := range vs {
			h.Add(int64(i), v)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "build_s")
		b.ReportMetric(cpuSeconds()-cpu0, "build_cpu_s")
		b.ReportMetric((cpuSeconds()-cpu0)/float64(n)*1e3, "cpu_ms/insert")
		b.ReportMetric((heapBytes()-heap0)/1e6, "heap_MB")
		b.ReportMetric(float64(h.Bytes())/1e6, "index_MB")
	}
	want := make([][]int64, len(qs))
	for i, q := range qs {
		want[i] = bruteForce(vs, q, 10)
	}
	for _, ef := range []int{80, 160, 320} {
		found := 0
		lat := make([]float64, 0, len(qs))
		cpu0 := cpuSeconds()
		for i, q := range qs {
			t0 := time.Now()
			got, _ := h.Search(q, 10, ef)
			lat = append(lat, time.Since(t0).Seconds()*1e3)
			found += recallOf(want[i], got)
		}
		slices.Sort(lat)
		tag := "_ef" + strconv.Itoa(ef)
		b.ReportMetric((cpuSeconds()-cpu0)/float64(len(qs))*1e3, "cpu_ms/search"+tag)
		b.ReportMetric(lat[len(lat)/2], "ms_p50"+tag)
		b.ReportMetric(lat[len(lat)*99/100], "ms_p99"+tag)
		b.ReportMetric(float64(found)/float64(10*len(qs)), "recall@10"+tag)
	}
	file := filepath.Join(b.TempDir(), "bench.hnsw")
	graphs := map[annKey]*hnsw{{CollKnowledge, BuiltinDims}: h}
	t0 := time.Now()
	w, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	if err := writeANNFile(w, "bench", 1, h.p, graphs); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(time.Since(t0).Seconds(), "save_s")
	st, err := os.Stat(file)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size())/1e6, "file_MB")
	h = nil
	graphs = nil
	runtime.GC()
	cpu0 := cpuSeconds()
	t0 = time.Now()
	f, err := os.Open(file)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	af, err := readANNFile(f, st.Size(), HNSWParams{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(time.Since(t0).Seconds(), "load_s")
	b.ReportMetric(cpuSeconds()-cpu0, "load_cpu_s")
	got, _ := af.graphs[annKey{CollKnowledge, BuiltinDims}].Search(qs[0], 10, 80)
	if recallOf(want[0], got) < 5 {
		b.Errorf("the loaded graph finds %v, want about %v", got, want[0])
	}
}

// BenchmarkDot is the distance kernel on two 384-dimension vectors.
func BenchmarkDot(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	v := randomVectors(r, 2, BuiltinDims)
	var s float32
	for b.Loop() {
		s += dot(v[0], v[1])
	}
	_ = s
}

// BenchmarkDotGeneric is the portable kernel, for comparison.
func BenchmarkDotGeneric(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	v := randomVectors(r, 2, BuiltinDims)
	var s float32
	for b.Loop() {
		s += dotGeneric(v[0], v[1])
	}
	_ = s
}
