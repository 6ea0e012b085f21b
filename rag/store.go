package rag

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"
)

// Chunk is one stored piece of text with its embedding and metadata.
type Chunk struct {
	// Collection namespaces chunks: "knowledge", "tools", "memory/<identity>/<kind>".
	Collection string            `json:"collection"`
	ID         string            `json:"id"`            // unique within Collection
	Doc        string            `json:"doc,omitempty"` // the document the chunk belongs to
	Text       string            `json:"text"`
	Meta       map[string]string `json:"metadata,omitempty"`
	Vector     []float32         `json:"-"`
	Created    time.Time         `json:"created"`
	Expires    time.Time         `json:"expires,omitzero"` // zero: never
}

// Query selects chunks of one collection. Expired chunks never match.
type Query struct {
	Collection string
	Vector     []float32         // Nearest: the query embedding
	Text       string            // FullText: the words to find
	Filter     map[string]string // metadata key = value, all must hold
	Doc        string            // only chunks of this document
	Limit      int               // 0: 10
	Now        time.Time         // zero: time.Now()
}

// Hit is a chunk found by a query, with its score (higher is better).
type Hit struct {
	Chunk
	Score float64 `json:"score"`
}

// Stats counts what a store holds.
type Stats struct {
	Chunks      int            `json:"chunks"`
	Docs        int            `json:"docs"`
	Collections map[string]int `json:"collections"` // chunks per collection
}

// Store keeps chunks and finds them by vector, by words and by metadata. Implementations
// are safe for concurrent use; writes are visible to the next query.
type Store interface {
	// Upsert inserts chunks or replaces those with the same collection and ID.
	Upsert(ctx context.Context, chunks []Chunk) error
	// Delete removes chunks by ID and returns how many existed.
	Delete(ctx context.Context, collection string, ids ...string) (int, error)
	// DeleteDoc removes every chunk of a document.
	DeleteDoc(ctx context.Context, collection, doc string) (int, error)
	// Get returns one chunk (with its vector); ok is false if it does not exist or expired.
	Get(ctx context.Context, collection, id string) (c Chunk, ok bool, err error)
	// List returns chunks matching q's Filter and Doc, newest first, ignoring Vector and
	// Text; a negative q.Limit lists them all.
	List(ctx context.Context, q Query) ([]Chunk, error)
	// Nearest returns the chunks closest to q.Vector (cosine), best first.
	Nearest(ctx context.Context, q Query) ([]Hit, error)
	// FullText returns the chunks that contain words of q.Text, ranked by BM25.
	FullText(ctx context.Context, q Query) ([]Hit, error)
	// DeleteOlder removes chunks created before a time in the collections that start with
	// one of the prefixes (retention).
	DeleteOlder(ctx context.Context, before time.Time, prefixes ...string) (int, error)
	// Purge removes chunks that expired before now.
	Purge(ctx context.Context, now time.Time) (int, error)
	// Stats counts chunks and documents.
	Stats(ctx context.Context) (Stats, error)
	// Close releases the store; it is safe to call more than once.
	Close() error
}

// RRFK is the constant of reciprocal rank fusion: a hit at rank r (from 1) in a list adds
// 1/(RRFK+r) to its fused score.
const RRFK = 60

// Hybrid runs q as a vector search and a full-text search and fuses the two rankings
// with reciprocal rank fusion, so that exact words a weak embedder misses still rank.
// Each list is fetched three times deeper than q.Limit.
func Hybrid(ctx context.Context, s Store, q Query) ([]Hit, error) {
	limit := limitOf(q.Limit)
	deep := q
	deep.Limit = limit * 3
	var vec, txt []Hit
	var err error
	if len(q.Vector) > 0 {
		if vec, err = s.Nearest(ctx, deep); err != nil {
			return nil, err
		}
	}
	if q.Text != "" {
		if txt, err = s.FullText(ctx, deep); err != nil {
			return nil, err
		}
	}
	return Fuse(limit, vec, txt), nil
}

// Fuse merges ranked lists by reciprocal rank fusion and keeps the best limit hits.
// Ties keep the order of first appearance.
func Fuse(limit int, lists ...[]Hit) []Hit {
	type acc struct {
		hit   Hit
		score float64
		first int
	}
	byID := map[string]*acc{}
	n := 0
	for _, l := range lists {
		for r, h := range l {
			a, ok := byID[h.ID]
			if !ok {
				a = &acc{hit: h, first: n}
				byID[h.ID] = a
				n++
			}
			a.score += 1 / float64(RRFK+r+1)
		}
	}
	out := make([]*acc, 0, len(byID))
	for _, a := range byID {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].score != out[j].score {
			return out[i].score > out[j].score
		}
		return out[i].first < out[j].first
	})
	hits := make([]Hit, 0, min(limit, len(out)))
	for _, a := range out[:min(limit, len(out))] {
		a.hit.Score = a.score
		hits = append(hits, a.hit)
	}
	return hits
}

func limitOf(n int) int {
	if n <= 0 {
		return 10
	}
	return min(n, 1000)
}

// metaKey is the form of metadata keys (they appear in filters).
var metaKey = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ErrInvalid marks a request the store refuses for its content (a bad metadata key, a
// vector of the wrong length).
var ErrInvalid = errors.New("invalid")

// CheckMeta validates metadata or a filter: keys of [A-Za-z0-9_.-]{1,64}, at most 32 of
// them, values of at most 1024 bytes.
func CheckMeta(m map[string]string) error {
	if len(m) > 32 {
		return fmt.Errorf("%w: %d metadata keys, at most 32", ErrInvalid, len(m))
	}
	for k, v := range m {
		if !metaKey.MatchString(k) {
			return fmt.Errorf("%w: metadata key %q: want [A-Za-z0-9_.-]{1,64}", ErrInvalid, k)
		}
		if len(v) > 1024 {
			return fmt.Errorf("%w: metadata %q: value longer than 1024 bytes", ErrInvalid, k)
		}
	}
	return nil
}
