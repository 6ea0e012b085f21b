package rag

import (
	"context"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func cosine(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

func TestWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"Hello, World!", []string{"hello", "world"}},
		{"read_text_file", []string{"read", "text", "file"}},
		{"getHTTPResponse v2", []string{"get", "httpresponse", "v2"}},
		{"", nil},
		{"naïve café", []string{"naïve", "café"}},
	} {
		if diff := cmp.Diff(tc.want, Words(tc.in)); diff != "" {
			t.Errorf("Words(%q) mismatch (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestBuiltin(t *testing.T) {
	var b Builtin
	vecs, err := b.Embed(context.Background(), []string{
		"Read the contents of a text file from disk",
		"read a file's text",
		"Send an email message to a recipient",
		"",
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vecs {
		if len(v) != BuiltinDims {
			t.Fatalf("vector %d has %d dims", i, len(v))
		}
		if n := cosine(v, v); math.Abs(n-1) > 1e-5 {
			t.Errorf("vector %d has norm² %v, want 1", i, n)
		}
	}
	if near, far := cosine(vecs[0], vecs[1]), cosine(vecs[0], vecs[2]); near <= far {
		t.Errorf("related texts score %v, unrelated %v: want related higher", near, far)
	}
	again := b.Vector("Read the contents of a text file from disk")
	if diff := cmp.Diff(vecs[0], again); diff != "" {
		t.Errorf("embedding is not deterministic:\n%s", diff)
	}
}
