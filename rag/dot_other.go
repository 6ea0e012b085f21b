//go:build !amd64 || purego

package rag

// dot is the inner product of two vectors of equal length (b at least as long as a).
func dot(a, b []float32) float32 { return dotGeneric(a, b) }

// useAVX2 is false: this build has only the portable kernel.
const useAVX2 = false
