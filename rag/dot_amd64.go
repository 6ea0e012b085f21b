//go:build amd64 && !purego

package rag

import "golang.org/x/sys/cpu"

// useAVX2 is whether dot runs the AVX2/FMA kernel (dot_amd64.s), eight lanes at a
// time, instead of the portable loop.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// dotAVX2 is the inner product of the n float32 at a and at b.
//
//go:noescape
func dotAVX2(a, b *float32, n int) float32

// dot is the inner product of two vectors of equal length (b at least as long as a).
func dot(a, b []float32) float32 {
	if useAVX2 && len(a) > 0 {
		b = b[:len(a)]
		return dotAVX2(&a[0], &b[0], len(a))
	}
	return dotGeneric(a, b)
}
