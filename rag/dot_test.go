package rag

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDotKernels checks the distance kernel in use (AVX2 where the CPU has it) against
// a float64 reference and the portable loop, at every length around the kernel's
// 32-, 8- and 1-float steps, with b longer than a (a graph node's slice of the arena).
func TestDotKernels(t *testing.T) {
	t.Logf("AVX2 kernel: %v", useAVX2)
	r := rand.New(rand.NewPCG(9, 10))
	for n := 0; n <= 80; n++ {
		a := make([]float32, n)
		b := make([]float32, n+5)
		var want float64
		for i := range a {
			a[i] = float32(r.NormFloat64())
			b[i] = float32(r.NormFloat64())
			want += float64(a[i]) * float64(b[i])
		}
		tol := 1e-4 * (1 + math.Sqrt(float64(n)))
		for name, got := range map[string]float32{"dot": dot(a, b), "dotGeneric": dotGeneric(a, b)} {
			if math.Abs(float64(got)-want) > tol {
				t.Errorf("%s of length %d = %v, want %v", name, n, got, want)
			}
		}
	}
	v := []float32{1, 2, 3}
	if d := dot(v, v); d != 14 {
		t.Errorf("dot(v, v) = %v, want 14", d)
	}
}
