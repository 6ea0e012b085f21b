package rag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the Store on PostgreSQL with the pgvector extension, for several symbi
// sharing one knowledge base: chunks and their vectors in one table, nearest neighbours
// by an exact scan with pgvector's cosine distance, and words through a GIN-indexed
// tsvector of the chunk's words (the same words as Words, so both stores match alike),
// ranked by BM25 computed from the table's statistics.
type Postgres struct {
	pool *pgxpool.Pool
	once sync.Once

	hnsw      bool // Index "hnsw"
	params    HNSWParams
	iterative bool // pgvector ≥ 0.8: hnsw.iterative_scan keeps filtered searches full

	mu      sync.Mutex
	indexed map[int]bool // vector lengths with an HNSW index
}

// PostgresOptions tunes the PostgreSQL store.
type PostgresOptions struct {
	// Index is "" or "exact" (every search scans its collection) or "hnsw": pgvector's
	// HNSW index (cosine), one partial index per vector length, created at open for the
	// lengths stored and when a new length is first stored. Its M and EfConstruction
	// apply when an index is created (drop rag_chunks_hnsw_<dims> to rebuild it with
	// others); EfSearch is set for every search (hnsw.ef_search).
	Index string
	HNSW  HNSWParams
}

// maxHNSWDims is the longest vector pgvector's HNSW index takes; longer ones are only
// scanned.
const maxHNSWDims = 2000

var _ Store = (*Postgres)(nil)

// pgSchema creates the tables. The tsvector holds the words of Words(text) verbatim
// (array_to_tsvector: no stemming, no stop words); words counts them for BM25's
// document length, and rag_stats keeps the row count and total words up to date in the
// same transactions that change rag_chunks.
const pgSchema = `
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS rag_chunks (
	rid        BIGSERIAL PRIMARY KEY,
	collection TEXT NOT NULL,
	id         TEXT NOT NULL,
	doc        TEXT NOT NULL DEFAULT '',
	meta       JSONB NOT NULL DEFAULT '{}',
	created    BIGINT NOT NULL,
	expires    BIGINT NOT NULL DEFAULT 0,
	text       TEXT NOT NULL,
	words      INTEGER NOT NULL,
	tsv        TSVECTOR NOT NULL,
	vec        VECTOR NOT NULL,
	UNIQUE (collection, id)
);
CREATE INDEX IF NOT EXISTS rag_chunks_doc ON rag_chunks (collection, doc);
CREATE INDEX IF NOT EXISTS rag_chunks_expires ON rag_chunks (expires) WHERE expires > 0;
CREATE INDEX IF NOT EXISTS rag_chunks_tsv ON rag_chunks USING GIN (tsv);
CREATE TABLE IF NOT EXISTS rag_stats (
	one   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
	rows  BIGINT NOT NULL,
	words BIGINT NOT NULL
);
INSERT INTO rag_stats (rows, words) VALUES (0, 0) ON CONFLICT DO NOTHING;
`

// pgSchemaLock serialises schema creation between processes starting together.
const pgSchemaLock = 0x73796d6269 // "symbi"

// NewPostgres connects to a postgres:// URL and creates the store's tables and the
// vector extension if missing (the role needs the right to create the extension the
// first time). The store owns its connections: Close releases them.
func NewPostgres(ctx context.Context, url string) (*Postgres, error) {
	return NewPostgresWith(ctx, url, PostgresOptions{})
}

// NewPostgresWith is NewPostgres with options.
func NewPostgresWith(ctx context.Context, url string, o PostgresOptions) (*Postgres, error) {
	if o.Index != "" && o.Index != "exact" && o.Index != "hnsw" {
		return nil, fmt.Errorf("%w: index %q: want \"exact\" or \"hnsw\"", ErrInvalid, o.Index)
	}
	p := o.HNSW.withDefaults()
	if p.M < 2 || p.M > 100 || p.EfConstruction < 2*p.M || p.EfConstruction > 1000 || p.EfSearch > 1000 {
		return nil, fmt.Errorf("%w: hnsw parameters %+v: want M in 2..100, ef_construction in 2M..1000, ef_search ≤ 1000", ErrInvalid, o.HNSW)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("context store URL: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgSchemaLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, pgSchema)
		return err
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("create knowledge tables in PostgreSQL: %w", err)
	}
	s := &Postgres{pool: pool, hnsw: o.Index == "hnsw", params: p, indexed: map[int]bool{}}
	if s.hnsw {
		if err := s.openIndex(ctx); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return s, nil
}

// openIndex creates the HNSW index of every vector length stored and notes whether
// pgvector has iterative index scans.
func (s *Postgres) openIndex(ctx context.Context) error {
	var version string
	if err := s.pool.QueryRow(ctx, `SELECT extversion FROM pg_extension WHERE extname = 'vector'`).Scan(&version); err != nil {
		return fmt.Errorf("pgvector version: %w", err)
	}
	var major, minor int
	fmt.Sscanf(version, "%d.%d", &major, &minor)
	s.iterative = major > 0 || minor >= 8
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT vector_dims(vec) FROM rag_chunks`)
	if err != nil {
		return fmt.Errorf("vector lengths stored: %w", err)
	}
	dims, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return fmt.Errorf("vector lengths stored: %w", err)
	}
	for _, d := range dims {
		if err := s.ensureIndex(ctx, s.pool, d); err != nil {
			return err
		}
	}
	return nil
}

// ensureIndex creates the HNSW index of vectors of length dims if missing: a partial
// index on vec cast to vector(dims), since the column holds vectors of any length.
func (s *Postgres) ensureIndex(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, dims int) error {
	if dims < 1 || dims > maxHNSWDims {
		return nil
	}
	s.mu.Lock()
	done := s.indexed[dims]
	s.mu.Unlock()
	if done {
		return nil
	}
	// Every value here is an integer: nothing to quote.
	if _, err := db.Exec(ctx, fmt.Sprintf(`CREATE INDEX IF NOT EXISTS rag_chunks_hnsw_%d ON rag_chunks
		USING hnsw ((vec::vector(%d)) vector_cosine_ops) WITH (m = %d, ef_construction = %d) WHERE vector_dims(vec) = %d`,
		dims, dims, s.params.M, s.params.EfConstruction, dims)); err != nil {
		return fmt.Errorf("create the HNSW index of %d-dimension vectors: %w", dims, err)
	}
	s.mu.Lock()
	s.indexed[dims] = true
	s.mu.Unlock()
	return nil
}

func (s *Postgres) hasIndex(dims int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.indexed[dims]
}

// Close implements Store.
func (s *Postgres) Close() error {
	s.once.Do(s.pool.Close)
	return nil
}

// pgVector is pgvector's text form of v; floats are written so that they read back
// exactly.
func pgVector(v []float32) string {
	var b strings.Builder
	b.Grow(10 * len(v))
	b.WriteByte('[')
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatFloat(float64(x), 'g', -1, 32))
	}
	b.WriteByte(']')
	return b.String()
}

// parsePgVector reads pgvector's text form.
func parsePgVector(s string) ([]float32, error) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return nil, fmt.Errorf("vector %.20q: not [...]", s)
	}
	parts := strings.Split(s[1:len(s)-1], ",")
	v := make([]float32, len(parts))
	for i, p := range parts {
		x, err := strconv.ParseFloat(strings.TrimSpace(p), 32)
		if err != nil {
			return nil, fmt.Errorf("vector: %w", err)
		}
		v[i] = float32(x)
	}
	return v, nil
}

// distinctWords are the words of text, each once, in order of first appearance.
func distinctWords(text string, max int) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range Words(text) {
		if seen[w] {
			continue
		}
		if max > 0 && len(out) == max {
			break
		}
		seen[w] = true
		out = append(out, w)
	}
	return out
}

// tsQuery is a tsquery of lexemes taken verbatim, any of which may match. Words are
// letters and digits only; quotes are doubled all the same.
func tsQuery(words []string) string {
	terms := make([]string, len(words))
	for i, w := range words {
		terms[i] = "'" + strings.ReplaceAll(w, "'", "''") + "'"
	}
	return strings.Join(terms, " | ")
}

// pgDeleteWhere removes the chunks a condition selects and keeps rag_stats in step.
func pgDeleteWhere(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, where string, args ...any) (int, error) {
	var n int
	err := q.QueryRow(ctx, `WITH d AS (DELETE FROM rag_chunks c WHERE `+where+` RETURNING c.words),
		s AS (UPDATE rag_stats SET rows = rows - (SELECT count(*) FROM d), words = words - (SELECT coalesce(sum(words), 0) FROM d)
			WHERE (SELECT count(*) FROM d) > 0)
		SELECT count(*) FROM d`, args...).Scan(&n)
	return n, err
}

// Upsert implements Store.
func (s *Postgres) Upsert(ctx context.Context, chunks []Chunk) error {
	for _, c := range chunks {
		if err := checkChunk(c); err != nil {
			return fmt.Errorf("store chunks: %w", err)
		}
	}
	var fresh []int // vector lengths without an index yet: indexed after the commit
	if s.hnsw {
		for _, c := range chunks {
			if d := len(c.Vector); d <= maxHNSWDims && !s.hasIndex(d) && !slices.Contains(fresh, d) {
				fresh = append(fresh, d)
			}
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var added, words int64
		for _, c := range chunks {
			// A replaced chunk goes first, taking its words off rag_stats.
			if _, err := pgDeleteWhere(ctx, tx, `c.collection = $1 AND c.id = $2`, c.Collection, c.ID); err != nil {
				return fmt.Errorf("replace chunk %s: %w", c.ID, err)
			}
			meta, _ := json.Marshal(nonNil(c.Meta))
			created := c.Created
			if created.IsZero() {
				created = time.Now()
			}
			w := Words(c.Text)
			if _, err := tx.Exec(ctx, `INSERT INTO rag_chunks (collection, id, doc, meta, created, expires, text, words, tsv, vec)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, array_to_tsvector($9::text[]), $10::vector)`,
				c.Collection, c.ID, c.Doc, string(meta), created.UnixMilli(), unixOrZero(c.Expires), c.Text, len(w),
				distinctWords(c.Text, 0), pgVector(c.Vector)); err != nil {
				return fmt.Errorf("store chunk %s: %w", c.ID, err)
			}
			added++
			words += int64(len(w))
		}
		_, err := tx.Exec(ctx, `UPDATE rag_stats SET rows = rows + $1, words = words + $2`, added, words)
		return err
	})
	if err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	for _, d := range fresh {
		if err := s.ensureIndex(ctx, s.pool, d); err != nil {
			return fmt.Errorf("store chunks: %w", err)
		}
	}
	return nil
}

// Delete implements Store.
func (s *Postgres) Delete(ctx context.Context, collection string, ids ...string) (int, error) {
	n, err := pgDeleteWhere(ctx, s.pool, `c.collection = $1 AND c.id = ANY($2)`, collection, ids)
	if err != nil {
		return 0, fmt.Errorf("delete chunks: %w", err)
	}
	return n, nil
}

// DeleteDoc implements Store.
func (s *Postgres) DeleteDoc(ctx context.Context, collection, doc string) (int, error) {
	n, err := pgDeleteWhere(ctx, s.pool, `c.collection = $1 AND c.doc = $2`, collection, doc)
	if err != nil {
		return 0, fmt.Errorf("delete document %s: %w", doc, err)
	}
	return n, nil
}

// DeleteOlder implements Store.
func (s *Postgres) DeleteOlder(ctx context.Context, before time.Time, prefixes ...string) (int, error) {
	if len(prefixes) == 0 {
		return 0, nil
	}
	n, err := pgDeleteWhere(ctx, s.pool, `c.created < $1 AND EXISTS (SELECT 1 FROM unnest($2::text[]) p WHERE starts_with(c.collection, p))`,
		before.UnixMilli(), prefixes)
	if err != nil {
		return 0, fmt.Errorf("delete chunks older than retention: %w", err)
	}
	return n, nil
}

// Purge implements Store.
func (s *Postgres) Purge(ctx context.Context, now time.Time) (int, error) {
	n, err := pgDeleteWhere(ctx, s.pool, `c.expires > 0 AND c.expires <= $1`, now.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("purge expired chunks: %w", err)
	}
	return n, nil
}

const pgChunkCols = `c.collection, c.id, c.doc, c.meta::text, c.created, c.expires, c.text`

// pgWhere builds the conditions every query shares, with placeholders numbered after
// the first args.
func pgWhere(q Query, args []any) (string, []any, error) {
	if err := CheckMeta(q.Filter); err != nil {
		return "", nil, err
	}
	now := q.Now
	if now.IsZero() {
		now = time.Now()
	}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	conds := []string{"c.collection = " + arg(q.Collection), "(c.expires = 0 OR c.expires > " + arg(now.UnixMilli()) + ")"}
	if q.Doc != "" {
		conds = append(conds, "c.doc = "+arg(q.Doc))
	}
	keys := make([]string, 0, len(q.Filter))
	for k := range q.Filter {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		conds = append(conds, "c.meta ->> "+arg(k)+" = "+arg(q.Filter[k]))
	}
	return strings.Join(conds, " AND "), args, nil
}

// Get implements Store.
func (s *Postgres) Get(ctx context.Context, collection, id string) (Chunk, bool, error) {
	var vs string
	c, err := scanChunk(s.pool.QueryRow(ctx, `SELECT `+pgChunkCols+`, c.vec::text FROM rag_chunks c
		WHERE c.collection = $1 AND c.id = $2 AND (c.expires = 0 OR c.expires > $3)`, collection, id, time.Now().UnixMilli()), &vs)
	if errors.Is(err, pgx.ErrNoRows) {
		return Chunk{}, false, nil
	}
	if err != nil {
		return Chunk{}, false, fmt.Errorf("get chunk %s: %w", id, err)
	}
	if c.Vector, err = parsePgVector(vs); err != nil {
		return Chunk{}, false, fmt.Errorf("get chunk %s: %w", id, err)
	}
	return c, true, nil
}

// List implements Store.
func (s *Postgres) List(ctx context.Context, q Query) ([]Chunk, error) {
	w, args, err := pgWhere(q, nil)
	if err != nil {
		return nil, fmt.Errorf("list chunks: %w", err)
	}
	var lim any = limitOf(q.Limit)
	if q.Limit < 0 {
		lim = nil // LIMIT NULL: all
	}
	args = append(args, lim)
	rows, err := s.pool.Query(ctx, `SELECT `+pgChunkCols+` FROM rag_chunks c WHERE `+w+
		` ORDER BY c.created DESC, c.rid DESC LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("list chunks: %w", err)
	}
	defer rows.Close()
	var out []Chunk
	for rows.Next() {
		c, err := scanChunk(rows)
		if err != nil {
			return nil, fmt.Errorf("list chunks: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list chunks: %w", err)
	}
	return out, nil
}

// Nearest implements Store. With the HNSW index, the search walks the index (with
// pgvector's iterative scan, so that filtered-out rows do not leave the answer short);
// when it finds fewer than the limit, an exact scan answers instead.
func (s *Postgres) Nearest(ctx context.Context, q Query) ([]Hit, error) {
	if len(q.Vector) == 0 {
		return nil, fmt.Errorf("search chunks: %w: empty query vector", ErrInvalid)
	}
	limit := limitOf(q.Limit)
	if s.hnsw && s.hasIndex(len(q.Vector)) {
		hits, err := s.nearestIndexed(ctx, q, limit)
		if err != nil {
			return nil, fmt.Errorf("search chunks: %w", err)
		}
		if len(hits) == limit {
			return hits, nil
		}
	}
	w, args, err := pgWhere(q, []any{pgVector(q.Vector), len(q.Vector)})
	if err != nil {
		return nil, fmt.Errorf("search chunks: %w", err)
	}
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, `SELECT `+pgChunkCols+`, c.vec <=> $1::vector AS d FROM rag_chunks c
		WHERE `+w+` AND vector_dims(c.vec) = $2 ORDER BY d, c.rid LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("search chunks: %w", err)
	}
	out, err := scanHits(rows)
	if err != nil {
		return nil, fmt.Errorf("search chunks: %w", err)
	}
	return out, nil
}

// nearestIndexed is the search through the HNSW index of q's vector length: the
// expression and the predicate are the index's, written out (dims is an integer).
func (s *Postgres) nearestIndexed(ctx context.Context, q Query, limit int) ([]Hit, error) {
	query, args, err := indexedQuery(q, limit)
	if err != nil {
		return nil, err
	}
	var out []Hit
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('hnsw.ef_search', $1, true)`, strconv.Itoa(max(s.params.EfSearch, limit))); err != nil {
			return err
		}
		if s.iterative {
			if _, err := tx.Exec(ctx, `SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)`); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		out, err = scanHits(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	// A relaxed-order iterative scan may return rows slightly out of order.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	return out, nil
}

// indexedQuery is the SQL of nearestIndexed.
func indexedQuery(q Query, limit int) (string, []any, error) {
	dims := len(q.Vector)
	w, args, err := pgWhere(q, []any{pgVector(q.Vector)})
	if err != nil {
		return "", nil, err
	}
	args = append(args, limit)
	return fmt.Sprintf(`SELECT `+pgChunkCols+`, c.vec::vector(%d) <=> $1::vector(%d) AS d FROM rag_chunks c
		WHERE `+w+` AND vector_dims(c.vec) = %d ORDER BY d LIMIT $`+strconv.Itoa(len(args)), dims, dims, dims), args, nil
}

// scanHits reads chunks and their cosine distances, and closes rows.
func scanHits(rows pgx.Rows) ([]Hit, error) {
	defer rows.Close()
	var out []Hit
	for rows.Next() {
		var d float64
		c, err := scanChunk(rows, &d)
		if err != nil {
			return nil, err
		}
		if math.IsNaN(d) { // a zero vector has no direction
			d = 1
		}
		out = append(out, Hit{Chunk: c, Score: 1 - d})
	}
	return out, rows.Err()
}

// FullText implements Store. The GIN index finds the chunks that have any of the words;
// BM25 is computed here from each chunk's words, the words' document frequencies and
// the table's row count and average length (rag_stats), like the SQLite store's FTS4
// statistics.
func (s *Postgres) FullText(ctx context.Context, q Query) ([]Hit, error) {
	terms := distinctWords(q.Text, 32)
	if len(terms) == 0 {
		return nil, nil
	}
	tsq := tsQuery(terms)
	w, args, err := pgWhere(q, []any{tsq})
	if err != nil {
		return nil, fmt.Errorf("search words: %w", err)
	}
	var n, total float64
	df := make([]float64, len(terms))
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT rows, words FROM rag_stats`).Scan(&n, &total); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT (SELECT count(*) FROM rag_chunks WHERE tsv @@ t::tsquery) FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i`,
			quotedTerms(terms))
		if err != nil {
			return err
		}
		i := 0
		for rows.Next() {
			if err := rows.Scan(&df[i]); err != nil {
				rows.Close()
				return err
			}
			i++
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("search words: %w", err)
	}
	avg := 1.0
	if n > 0 && total > 0 {
		avg = total / n
	}
	idf := make(map[string]float64, len(terms))
	for i, t := range terms {
		idf[t] = math.Log((n-df[i]+0.5)/(df[i]+0.5) + 1)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+pgChunkCols+` FROM rag_chunks c WHERE c.tsv @@ $1::tsquery AND `+w, args...)
	if err != nil {
		return nil, fmt.Errorf("search words: %w", err)
	}
	defer rows.Close()
	var out []Hit
	for rows.Next() {
		c, err := scanChunk(rows)
		if err != nil {
			return nil, fmt.Errorf("search words: %w", err)
		}
		words := Words(c.Text)
		tf := map[string]float64{}
		for _, w := range words {
			if _, ok := idf[w]; ok {
				tf[w]++
			}
		}
		l := float64(len(words))
		score := 0.0
		for t, f := range tf {
			score += idf[t] * f * (bm25K1 + 1) / (f + bm25K1*(1-bm25B+bm25B*l/avg))
		}
		out = append(out, Hit{Chunk: c, Score: score})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search words: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Score != out[j].Score {
			return out[i].Score > out[j].Score
		}
		return out[i].ID < out[j].ID
	})
	return out[:min(len(out), limitOf(q.Limit))], nil
}

func quotedTerms(terms []string) []string {
	out := make([]string, len(terms))
	for i, t := range terms {
		out[i] = tsQuery([]string{t})
	}
	return out
}

// Stats implements Store.
func (s *Postgres) Stats(ctx context.Context) (Stats, error) {
	rows, err := s.pool.Query(ctx, `SELECT collection, count(*), count(DISTINCT NULLIF(doc, '')) FROM rag_chunks
		WHERE expires = 0 OR expires > $1 GROUP BY collection`, time.Now().UnixMilli())
	if err != nil {
		return Stats{}, fmt.Errorf("count chunks: %w", err)
	}
	defer rows.Close()
	return countStats(rows)
}
