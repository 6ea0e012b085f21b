package rag

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/symbi-dev/symbi/internal/store"
)

func openSQLiteQuantized(t *testing.T) Store {
	t.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := NewSQLiteWith(context.Background(), db, SQLiteOptions{Quantize: "int8"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The quantized store behaves as the exact one.
func TestSQLiteQuantizedStore(t *testing.T) { storeSuite(t, openSQLiteQuantized) }

func TestQuantizeInt8(t *testing.T) {
	for _, tc := range []struct {
		in   []float32
		want []int8
	}{
		{[]float32{1, -0.5, 0}, []int8{127, -64, 0}},
		{[]float32{0.01, 0.02}, []int8{64, 127}},
		{[]float32{0, 0}, []int8{0, 0}},
		{[]float32{-3}, []int8{-127}},
	} {
		got := QuantizeInt8(tc.in)
		for i := range tc.want {
			if int8(got[i]) != tc.want[i] {
				t.Errorf("QuantizeInt8(%v) = %v, want %v", tc.in, got, tc.want)
				break
			}
		}
	}
	if _, err := NewSQLiteWith(context.Background(), nil, SQLiteOptions{Quantize: "int4"}); err == nil {
		t.Error("an unknown quantization was accepted")
	}
}

func randomVectors(r *rand.Rand, n, dims int) [][]float32 {
	out := make([][]float32, n)
	for i := range out {
		v := make([]float64, dims)
		for j := range v {
			v[j] = r.NormFloat64()
		}
		out[i] = normalize(v)
	}
	return out
}

// TestQuantizedRecall measures recall@10 of int8 search with rescoring against the
// exact scan, on random 384-dimension vectors (the hardest case for quantization: no
// clusters), and checks that quantizing an existing store (turning the option on later)
// finds the same. It fails below 0.95.
func TestQuantizedRecall(t *testing.T) {
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
	r := rand.New(rand.NewPCG(7, 8))
	const n, queries = 5000, 50
	var chunks []Chunk
	for i, v := range randomVectors(r, n, BuiltinDims) {
		chunks = append(chunks, Chunk{Collection: CollKnowledge, ID: fmt.Sprint(i), Text: "t", Vector: v})
	}
	if err := exact.Upsert(ctx, chunks); err != nil {
		t.Fatal(err)
	}
	recall := func(s Store) float64 {
		found, total := 0, 0
		qr := rand.New(rand.NewPCG(9, 10))
		for _, qv := range randomVectors(qr, queries, BuiltinDims) {
			q := Query{Collection: CollKnowledge, Vector: qv, Limit: 10}
			want, err := exact.Nearest(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Nearest(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			in := map[string]bool{}
			for _, h := range got {
				in[h.ID] = true
			}
			for _, h := range want {
				if in[h.ID] {
					found++
				}
			}
			total += len(want)
		}
		return float64(found) / float64(total)
	}
	quant := func(rescore int) *SQLite {
		s, err := NewSQLiteWith(ctx, db, SQLiteOptions{Quantize: "int8", Rescore: rescore})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var count int
	q4 := quant(4) // quantizes the 5000 stored chunks
	if err := db.QueryRow(`SELECT count(*) FROM rag_qvec`).Scan(&count); err != nil || count != n {
		t.Fatalf("quantized rows after turning it on: %d, %v; want %d", count, err, n)
	}
	r1, r4 := recall(quant(1)), recall(q4)
	t.Logf("recall@10 against the exact scan over %d random vectors: int8 without rescoring %.3f, int8 + exact rescoring of 4×10 candidates %.3f", n, r1, r4)
	if r4 < 0.95 {
		t.Errorf("recall@10 with rescoring = %.3f, want ≥ 0.95", r4)
	}
	if r4 < r1 {
		t.Errorf("rescoring lowered recall: %.3f < %.3f", r4, r1)
	}
	off, err := NewSQLite(ctx, db) // turned off: writes still keep the int8 table current
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Upsert(ctx, []Chunk{{Collection: CollKnowledge, ID: "late", Text: "t", Vector: chunks[0].Vector}}); err != nil {
		t.Fatal(err)
	}
	if _, err := off.Delete(ctx, CollKnowledge, "0", "1"); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM rag_qvec`).Scan(&count); err != nil || count != n-1 {
		t.Errorf("quantized rows after writes with the option off: %d, %v; want %d", count, err, n-1)
	}
	hits, err := q4.Nearest(ctx, Query{Collection: CollKnowledge, Vector: chunks[0].Vector, Limit: 1})
	if err != nil || len(hits) != 1 || hits[0].ID != "late" {
		t.Errorf("quantized search after writes with the option off = %v, %v; want late", ids(hits), err)
	}
}
