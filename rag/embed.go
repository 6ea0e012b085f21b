package rag

import (
	"context"
	"hash/fnv"
	"math"
	"strings"
	"unicode"
)

// An Embedder turns texts into vectors of a fixed length. Implementations are safe for
// concurrent use.
type Embedder interface {
	// Embed returns one vector per text, in order.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
	// Name identifies the embedder and its model; vectors of different names are not
	// comparable.
	Name() string
}

// BuiltinDims is the length of the builtin embedder's vectors.
const BuiltinDims = 384

// Builtin is the offline embedder: a feature-hashing bag of words. Each text is cut into
// lower-cased words (also at camelCase and snake_case boundaries); the features are the
// words, a light stem of each, adjacent word pairs and the character trigrams of each word,
// each hashed (FNV-1a) with a sign into one of 384 dimensions with a sublinear weight, and
// the vector is L2-normalised. It knows no synonyms: it matches shared words and word
// pieces, not meaning. It needs no network and no model file.
type Builtin struct{}

// Name implements Embedder.
func (Builtin) Name() string { return "builtin-hash-v1" }

// Embed implements Embedder.
func (b Builtin) Embed(_ context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		out[i] = b.Vector(t)
	}
	return out, nil
}

// stopwords are frequent English words that carry little meaning; they still count in
// word pairs.
var stopwords = map[string]bool{}

func init() {
	for _, w := range strings.Fields("a an and are as at be by for from has have how i in is it its of on or that the this to was what when where which who why will with do does can you your my we our") {
		stopwords[w] = true
	}
}

// Vector embeds one text.
func (Builtin) Vector(text string) []float32 {
	acc := make([]float64, BuiltinDims)
	counts := map[string]float64{}
	words := Words(text)
	for i, w := range words {
		if !stopwords[w] {
			counts["w:"+w] += 1
			if s := stem(w); s != w {
				counts["w:"+s] += 0.5
			}
			rw := []rune("<" + w + ">")
			for j := 0; j+3 <= len(rw); j++ {
				counts["c:"+string(rw[j:j+3])] += 0.25
			}
		}
		if i > 0 {
			counts["b:"+words[i-1]+" "+w] += 0.5
		}
	}
	for f, c := range counts {
		h := fnv.New64a()
		h.Write([]byte(f))
		v := h.Sum64()
		wt := 1 + math.Log1p(c) // sublinear term frequency
		if strings.HasPrefix(f, "c:") {
			wt *= 0.35
		} else if strings.HasPrefix(f, "b:") {
			wt *= 0.5
		}
		if v>>63 == 1 {
			wt = -wt
		}
		acc[v%BuiltinDims] += wt
	}
	return normalize(acc)
}

func normalize(acc []float64) []float32 {
	var n float64
	for _, x := range acc {
		n += x * x
	}
	out := make([]float32, len(acc))
	if n == 0 {
		out[0] = 1 // an empty text still has a unit vector, so cosine distance is defined
		return out
	}
	n = math.Sqrt(n)
	for i, x := range acc {
		out[i] = float32(x / n)
	}
	return out
}

// stem strips a few common English suffixes.
func stem(w string) string {
	for _, suf := range []string{"ing", "ed", "es", "s"} {
		if len(w) > len(suf)+2 && strings.HasSuffix(w, suf) {
			return w[:len(w)-len(suf)]
		}
	}
	return w
}

// Words cuts text into lower-cased words of letters and digits, also splitting camelCase.
func Words(text string) []string {
	var out []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	var prev rune
	for _, r := range text {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if unicode.IsUpper(r) && unicode.IsLower(prev) {
				flush()
			}
			cur = append(cur, r)
		default:
			flush()
		}
		prev = r
	}
	flush()
	return out
}
