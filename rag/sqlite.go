package rag

import (
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	vec "github.com/asg017/sqlite-vec-go-bindings/cgo"
	_ "github.com/mattn/go-sqlite3" // the driver the vector functions are registered with
)

func init() {
	// Every SQLite connection opened by this process from now on has sqlite-vec's
	// functions (vec_distance_cosine, ...). Connections are opened lazily, after init.
	vec.Auto()
}

// SQLite is the embedded Store: chunks and their float32 vectors in one table of symbi's
// SQLite state, nearest neighbours by an exact scan with sqlite-vec's cosine distance,
// and words through an FTS4 index ranked by BM25 (computed from FTS4's matchinfo: the
// SQLite driver is built without FTS5).
type SQLite struct {
	db      *sql.DB
	once    sync.Once
	rescore int       // quantized search: 0 off, else candidates per result rescored exactly
	quant   bool      // rag_qvec exists: writes keep it up to date
	annLog  bool      // rag_ann_log exists: writes trim it
	ann     *annIndex // Index "hnsw": the approximate index, else nil
}

// SQLiteOptions tunes the SQLite store.
type SQLiteOptions struct {
	// Quantize is "" (exact float32 scan) or "int8": each vector is also kept as int8
	// (scaled by its largest component, which cosine ignores) in a compact table that a
	// search scans first, then the best Rescore × limit candidates are ranked by their
	// exact float32 vectors.
	Quantize string
	// Rescore is the candidates fetched per result for the exact pass (0: 4).
	Rescore int
	// Index is "" or "exact" (every search scans the collection) or "hnsw": an
	// approximate HNSW index in memory, built from the stored vectors in the background
	// when the store opens (searches scan exactly until it is ready) and kept current
	// with every write, this process's or another's.
	Index string
	// HNSW tunes the index (zero fields: the defaults).
	HNSW HNSWParams
	// ExactBelow: collections with fewer vectors are scanned exactly even with an index
	// (0: DefaultExactBelow; negative: never).
	ExactBelow int
	// IndexFile is where the HNSW index is saved after it is built and when the store
	// closes, and loaded from at the next start instead of rebuilding it ("": beside
	// the database file, as <file>.hnsw; "-": never saved, nor when the database is in
	// memory).
	IndexFile string
	// Logger receives the index's build reports (nil: none).
	Logger *slog.Logger
}

var _ Store = (*SQLite)(nil)

const sqliteSchema = `
CREATE TABLE IF NOT EXISTS rag_chunks (
	rowid      INTEGER PRIMARY KEY,
	collection TEXT NOT NULL,
	id         TEXT NOT NULL,
	doc        TEXT NOT NULL DEFAULT '',
	meta       TEXT NOT NULL DEFAULT '{}',
	created    INTEGER NOT NULL,
	expires    INTEGER NOT NULL DEFAULT 0,
	text       TEXT NOT NULL,
	vec        BLOB NOT NULL,
	UNIQUE (collection, id)
);
CREATE INDEX IF NOT EXISTS rag_chunks_doc ON rag_chunks (collection, doc);
CREATE INDEX IF NOT EXISTS rag_chunks_expires ON rag_chunks (expires) WHERE expires > 0;
CREATE VIRTUAL TABLE IF NOT EXISTS rag_fts USING fts4(text, tokenize=unicode61);
`

// NewSQLite creates the store's tables in db if missing. The caller owns db (opened with
// internal/store) and closes it after the store.
func NewSQLite(ctx context.Context, db *sql.DB) (*SQLite, error) {
	return NewSQLiteWith(ctx, db, SQLiteOptions{})
}

// sqliteQuantSchema is the compact table of int8 vectors, with the columns the common
// filters need (so that a scan without a metadata filter reads only this table).
const sqliteQuantSchema = `
CREATE TABLE IF NOT EXISTS rag_qvec (
	rowid      INTEGER PRIMARY KEY,
	collection TEXT NOT NULL,
	doc        TEXT NOT NULL,
	expires    INTEGER NOT NULL,
	q          BLOB NOT NULL
);`

// NewSQLiteWith is NewSQLite with options. Turning quantization on quantizes the
// vectors already stored. Once on, the int8 table is kept up to date even by stores
// opened without the option (another process sharing the file, or the option turned
// off), so that turning it on again finds it current; turn it on with symbi stopped.
func NewSQLiteWith(ctx context.Context, db *sql.DB, o SQLiteOptions) (*SQLite, error) {
	if o.Quantize != "" && o.Quantize != "int8" {
		return nil, fmt.Errorf("%w: quantize %q: want \"\" or \"int8\"", ErrInvalid, o.Quantize)
	}
	if o.Index != "" && o.Index != "exact" && o.Index != "hnsw" {
		return nil, fmt.Errorf("%w: index %q: want \"exact\" or \"hnsw\"", ErrInvalid, o.Index)
	}
	if o.HNSW.M < 0 || o.HNSW.M > 128 || o.HNSW.EfConstruction < 0 || o.HNSW.EfSearch < 0 {
		return nil, fmt.Errorf("%w: hnsw parameters %+v: want M in 0..128 and ef ≥ 0", ErrInvalid, o.HNSW)
	}
	if _, err := db.ExecContext(ctx, sqliteSchema); err != nil {
		return nil, fmt.Errorf("create knowledge tables: %w", err)
	}
	s := &SQLite{db: db}
	if o.Index == "hnsw" {
		if _, err := db.ExecContext(ctx, sqliteANNSchema); err != nil {
			return nil, fmt.Errorf("create the vector index's change log: %w", err)
		}
		s.annLog = true
	} else {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rag_ann_log'`).Scan(&n); err != nil {
			return nil, fmt.Errorf("look for the vector index's change log: %w", err)
		}
		s.annLog = n > 0
	}
	if err := s.openQuant(ctx, o); err != nil {
		return nil, err
	}
	if o.Index == "hnsw" {
		file, token, err := annFileOf(ctx, db, o.IndexFile)
		if err != nil {
			return nil, err
		}
		s.ann = newANNIndex(db, o, file, token)
		s.ann.start(false)
	}
	return s, nil
}

// annFileOf is where the index is saved (name as SQLiteOptions.IndexFile) and the
// database's index token.
func annFileOf(ctx context.Context, db *sql.DB, name string) (file, token string, err error) {
	if err := db.QueryRowContext(ctx, `SELECT token FROM rag_ann_state WHERE id = 1`).Scan(&token); err != nil {
		return "", "", fmt.Errorf("read the vector index's token: %w", err)
	}
	switch name {
	case "-":
		return "", token, nil
	case "":
		var main string
		if err := db.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&main); err != nil {
			return "", "", fmt.Errorf("locate the database file: %w", err)
		}
		if main == "" {
			return "", token, nil // in memory
		}
		return main + ".hnsw", token, nil
	}
	return name, token, nil
}

// openQuant sets up int8 quantization as o asks.
func (s *SQLite) openQuant(ctx context.Context, o SQLiteOptions) error {
	db := s.db
	if o.Quantize == "" {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rag_qvec'`).Scan(&n); err != nil {
			return fmt.Errorf("look for quantized vectors: %w", err)
		}
		s.quant = n > 0
		return nil
	}
	s.quant = true
	s.rescore = o.Rescore
	if s.rescore <= 0 {
		s.rescore = 4
	}
	if _, err := db.ExecContext(ctx, sqliteQuantSchema); err != nil {
		return fmt.Errorf("create quantized vectors: %w", err)
	}
	if err := s.backfill(ctx); err != nil {
		return fmt.Errorf("quantize stored vectors: %w", err)
	}
	return nil
}

// backfill quantizes the chunks that have no int8 vector yet, a batch at a time.
func (s *SQLite) backfill(ctx context.Context) error {
	for {
		rows, err := s.db.QueryContext(ctx, `SELECT rowid, collection, doc, expires, vec FROM rag_chunks
			WHERE rowid NOT IN (SELECT rowid FROM rag_qvec) LIMIT 1000`)
		if err != nil {
			return err
		}
		type row struct {
			id        int64
			coll, doc string
			expires   int64
			vec       []byte
		}
		var batch []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.coll, &r.doc, &r.expires, &r.vec); err != nil {
				rows.Close()
				return err
			}
			batch = append(batch, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, r := range batch {
			if _, err := tx.ExecContext(ctx, `INSERT INTO rag_qvec (rowid, collection, doc, expires, q) VALUES (?, ?, ?, ?, ?)`,
				r.id, r.coll, r.doc, r.expires, QuantizeInt8(DecodeVector(r.vec))); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
}

// QuantizeInt8 scales v so that its largest component is ±127 and rounds it: the int8
// form sqlite-vec's vec_int8 reads. Cosine similarity ignores the scale.
func QuantizeInt8(v []float32) []byte {
	var m float64
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	q := make([]byte, len(v))
	if m == 0 {
		return q
	}
	for i, x := range v {
		q[i] = byte(int8(math.Round(float64(x) / m * 127)))
	}
	return q
}

// Close implements Store: it stops the index's build if one runs. The database itself
// belongs to the caller.
func (s *SQLite) Close() error {
	s.once.Do(func() {
		if s.ann != nil {
			s.ann.close()
		}
	})
	return nil
}

// trimANNLog keeps the vector index's change log to its last annLogKeep entries.
func (s *SQLite) trimANNLog(ctx context.Context, tx *sql.Tx) error {
	if !s.annLog {
		return nil
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM rag_ann_log WHERE seq <= (SELECT max(seq) FROM rag_ann_log) - ?`, annLogKeep)
	return err
}

// EncodeVector is the little-endian float32 form sqlite-vec reads.
func EncodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// DecodeVector reverses EncodeVector.
func DecodeVector(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func checkChunk(c Chunk) error {
	if c.Collection == "" || c.ID == "" {
		return fmt.Errorf("%w: chunk needs a collection and an id", ErrInvalid)
	}
	if len(c.Vector) == 0 {
		return fmt.Errorf("%w: chunk %s has no vector", ErrInvalid, c.ID)
	}
	for _, x := range c.Vector {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("%w: chunk %s has a vector that is not finite", ErrInvalid, c.ID)
		}
	}
	return CheckMeta(c.Meta)
}

// Upsert implements Store.
func (s *SQLite) Upsert(ctx context.Context, chunks []Chunk) error {
	for _, c := range chunks {
		if err := checkChunk(c); err != nil {
			return fmt.Errorf("store chunks: %w", err)
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	defer tx.Rollback()
	up, err := tx.PrepareContext(ctx, `INSERT INTO rag_chunks (collection, id, doc, meta, created, expires, text, vec)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc, meta = excluded.meta, created = excluded.created,
			expires = excluded.expires, text = excluded.text, vec = excluded.vec
		RETURNING rowid`)
	if err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	defer up.Close()
	for _, c := range chunks {
		meta, _ := json.Marshal(nonNil(c.Meta))
		created := c.Created
		if created.IsZero() {
			created = time.Now()
		}
		var rowid int64
		if err := up.QueryRowContext(ctx, c.Collection, c.ID, c.Doc, string(meta), created.UnixMilli(), unixOrZero(c.Expires),
			c.Text, EncodeVector(c.Vector)).Scan(&rowid); err != nil {
			return fmt.Errorf("store chunk %s: %w", c.ID, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM rag_fts WHERE docid = ?`, rowid); err != nil {
			return fmt.Errorf("index chunk %s: %w", c.ID, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rag_fts (docid, text) VALUES (?, ?)`, rowid, c.Text); err != nil {
			return fmt.Errorf("index chunk %s: %w", c.ID, err)
		}
		if s.quant {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO rag_qvec (rowid, collection, doc, expires, q) VALUES (?, ?, ?, ?, ?)`,
				rowid, c.Collection, c.Doc, unixOrZero(c.Expires), QuantizeInt8(c.Vector)); err != nil {
				return fmt.Errorf("index chunk %s: %w", c.ID, err)
			}
		}
	}
	if err := s.trimANNLog(ctx, tx); err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	return s.indexWrites(ctx)
}

// indexWrites brings the vector index up to date after a write, so that the writer
// rather than the next search pays for linking the new vectors in.
func (s *SQLite) indexWrites(ctx context.Context) error {
	if s.ann == nil {
		return nil
	}
	if _, err := s.ann.catchUp(ctx); err != nil {
		return fmt.Errorf("index written chunks: %w", err)
	}
	return nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// deleteWhere removes the chunks a condition selects, with their index entries.
func (s *SQLite) deleteWhere(ctx context.Context, where string, args ...any) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM rag_fts WHERE docid IN (SELECT rowid FROM rag_chunks WHERE `+where+`)`, args...); err != nil {
		return 0, err
	}
	if s.quant {
		if _, err := tx.ExecContext(ctx, `DELETE FROM rag_qvec WHERE rowid IN (SELECT rowid FROM rag_chunks WHERE `+where+`)`, args...); err != nil {
			return 0, err
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM rag_chunks WHERE `+where, args...)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	if err := s.trimANNLog(ctx, tx); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	return int(n), s.indexWrites(ctx)
}

// Delete implements Store.
func (s *SQLite) Delete(ctx context.Context, collection string, ids ...string) (int, error) {
	total := 0
	for _, id := range ids {
		n, err := s.deleteWhere(ctx, `collection = ? AND id = ?`, collection, id)
		if err != nil {
			return total, fmt.Errorf("delete chunk %s: %w", id, err)
		}
		total += n
	}
	return total, nil
}

// DeleteDoc implements Store.
func (s *SQLite) DeleteDoc(ctx context.Context, collection, doc string) (int, error) {
	n, err := s.deleteWhere(ctx, `collection = ? AND doc = ?`, collection, doc)
	if err != nil {
		return 0, fmt.Errorf("delete document %s: %w", doc, err)
	}
	return n, nil
}

// DeleteOlder implements Store.
func (s *SQLite) DeleteOlder(ctx context.Context, before time.Time, prefixes ...string) (int, error) {
	total := 0
	for _, p := range prefixes {
		n, err := s.deleteWhere(ctx, `substr(collection, 1, ?) = ? AND created < ?`, len(p), p, before.UnixMilli())
		if err != nil {
			return total, fmt.Errorf("delete chunks older than retention: %w", err)
		}
		total += n
	}
	return total, nil
}

// Purge implements Store.
func (s *SQLite) Purge(ctx context.Context, now time.Time) (int, error) {
	n, err := s.deleteWhere(ctx, `expires > 0 AND expires <= ?`, now.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("purge expired chunks: %w", err)
	}
	return n, nil
}

const chunkCols = `c.collection, c.id, c.doc, c.meta, c.created, c.expires, c.text`

func scanChunk(sc interface{ Scan(...any) error }, extra ...any) (Chunk, error) {
	var c Chunk
	var meta string
	var created, expires int64
	if err := sc.Scan(append([]any{&c.Collection, &c.ID, &c.Doc, &meta, &created, &expires, &c.Text}, extra...)...); err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(meta), &c.Meta); err != nil {
		return c, fmt.Errorf("decode metadata of %s: %w", c.ID, err)
	}
	if len(c.Meta) == 0 {
		c.Meta = nil
	}
	c.Created = time.UnixMilli(created).UTC()
	if expires > 0 {
		c.Expires = time.UnixMilli(expires).UTC()
	}
	return c, nil
}

// Get implements Store.
func (s *SQLite) Get(ctx context.Context, collection, id string) (Chunk, bool, error) {
	var b []byte
	c, err := scanChunk(s.db.QueryRowContext(ctx, `SELECT `+chunkCols+`, c.vec FROM rag_chunks c
		WHERE c.collection = ? AND c.id = ? AND (c.expires = 0 OR c.expires > ?)`, collection, id, time.Now().UnixMilli()), &b)
	if err == sql.ErrNoRows {
		return Chunk{}, false, nil
	}
	if err != nil {
		return Chunk{}, false, fmt.Errorf("get chunk %s: %w", id, err)
	}
	c.Vector = DecodeVector(b)
	return c, true, nil
}

// where builds the conditions every query shares: collection, not expired, document,
// metadata filter.
func where(q Query) (string, []any, error) {
	if err := CheckMeta(q.Filter); err != nil {
		return "", nil, err
	}
	now := q.Now
	if now.IsZero() {
		now = time.Now()
	}
	conds := []string{"c.collection = ?", "(c.expires = 0 OR c.expires > ?)"}
	args := []any{q.Collection, now.UnixMilli()}
	if q.Doc != "" {
		conds = append(conds, "c.doc = ?")
		args = append(args, q.Doc)
	}
	keys := make([]string, 0, len(q.Filter))
	for k := range q.Filter {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		conds = append(conds, "json_extract(c.meta, ?) = ?")
		args = append(args, `$."`+k+`"`, q.Filter[k]) // keys are [A-Za-z0-9_.-]: no quoting needed
	}
	return strings.Join(conds, " AND "), args, nil
}

// List implements Store.
func (s *SQLite) List(ctx context.Context, q Query) ([]Chunk, error) {
	w, args, err := where(q)
	if err != nil {
		return nil, fmt.Errorf("list chunks: %w", err)
	}
	lim := limitOf(q.Limit)
	if q.Limit < 0 {
		lim = -1 // SQLite: no limit
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+chunkCols+` FROM rag_chunks c WHERE `+w+` ORDER BY c.created DESC, c.rowid DESC LIMIT ?`,
		append(args, lim)...)
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
	return out, rows.Err()
}

// Nearest implements Store.
func (s *SQLite) Nearest(ctx context.Context, q Query) ([]Hit, error) {
	if len(q.Vector) == 0 {
		return nil, fmt.Errorf("search chunks: %w: empty query vector", ErrInvalid)
	}
	w, args, err := where(q)
	if err != nil {
		return nil, fmt.Errorf("search chunks: %w", err)
	}
	if s.ann != nil {
		hits, ok, err := s.annNearest(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("search chunks: %w", err)
		}
		if ok {
			return hits, nil
		}
	}
	qv := EncodeVector(q.Vector)
	var rows *sql.Rows
	if s.rescore > 0 {
		// Scan the compact int8 table (joined to the chunks only for a metadata
		// filter), then rank the best candidates by their exact vectors.
		from, qa := `rag_qvec c`, "c"
		if len(q.Filter) > 0 {
			from, qa = `rag_qvec x JOIN rag_chunks c ON c.rowid = x.rowid`, "x"
		}
		limit := limitOf(q.Limit)
		rows, err = s.db.QueryContext(ctx, `WITH cand AS (
				SELECT c.rowid AS r, vec_distance_cosine(vec_int8(`+qa+`.q), vec_int8(?)) AS d FROM `+from+`
				WHERE `+w+` AND length(`+qa+`.q) = ? ORDER BY d LIMIT ?),
			top AS (SELECT c.rowid AS r, vec_distance_cosine(c.vec, ?) AS d FROM cand JOIN rag_chunks c ON c.rowid = cand.r ORDER BY d LIMIT ?)
			SELECT `+chunkCols+`, top.d FROM top JOIN rag_chunks c ON c.rowid = top.r ORDER BY top.d, c.rowid`,
			append(append([]any{QuantizeInt8(q.Vector)}, args...), len(q.Vector), limit*s.rescore, qv, limit)...)
	} else {
		// Rank on (rowid, distance) alone, then fetch the rows of the best few.
		rows, err = s.db.QueryContext(ctx, `WITH top AS (
				SELECT c.rowid AS r, vec_distance_cosine(c.vec, ?) AS d FROM rag_chunks c
				WHERE `+w+` AND length(c.vec) = ? ORDER BY d LIMIT ?)
			SELECT `+chunkCols+`, top.d FROM top JOIN rag_chunks c ON c.rowid = top.r ORDER BY top.d, c.rowid`,
			append(append([]any{qv}, args...), len(qv), limitOf(q.Limit))...)
	}
	if err != nil {
		return nil, fmt.Errorf("search chunks: %w", err)
	}
	defer rows.Close()
	var out []Hit
	for rows.Next() {
		var d float64
		c, err := scanChunk(rows, &d)
		if err != nil {
			return nil, fmt.Errorf("search chunks: %w", err)
		}
		out = append(out, Hit{Chunk: c, Score: 1 - d})
	}
	return out, rows.Err()
}

// matchExpr turns free text into an FTS4 query: its words (at most 32), any of which
// may match. Words are letters and digits only, so nothing in them is query syntax.
func matchExpr(text string) string {
	words := Words(text)
	seen := map[string]bool{}
	var terms []string
	for _, w := range words {
		if seen[w] || len(terms) == 32 {
			continue
		}
		seen[w] = true
		terms = append(terms, `"`+w+`"`)
	}
	return strings.Join(terms, " OR ")
}

// BM25 parameters.
const (
	bm25K1 = 1.2
	bm25B  = 0.75
)

// bm25 scores one row from FTS4's matchinfo 'pcnalx' (one column).
func bm25(mi []byte) float64 {
	u := func(i int) float64 { return float64(binary.NativeEndian.Uint32(mi[4*i:])) }
	if len(mi) < 20 {
		return 0
	}
	p, c := int(u(0)), int(u(1))
	if c != 1 || len(mi) < 4*(5+3*p) {
		return 0
	}
	n, avg, l := u(2), u(3), u(4)
	if avg == 0 {
		avg = 1
	}
	score := 0.0
	for i := 0; i < p; i++ {
		tf, df := u(5+3*i), u(5+3*i+2)
		if tf == 0 {
			continue
		}
		idf := math.Log((n-df+0.5)/(df+0.5) + 1)
		score += idf * tf * (bm25K1 + 1) / (tf + bm25K1*(1-bm25B+bm25B*l/avg))
	}
	return score
}

// FullText implements Store.
func (s *SQLite) FullText(ctx context.Context, q Query) ([]Hit, error) {
	expr := matchExpr(q.Text)
	if expr == "" {
		return nil, nil
	}
	w, args, err := where(q)
	if err != nil {
		return nil, fmt.Errorf("search words: %w", err)
	}
	// CROSS JOIN keeps the full-text index the outer loop: the other order runs the
	// MATCH once per chunk of the collection.
	rows, err := s.db.QueryContext(ctx, `SELECT `+chunkCols+`, matchinfo(rag_fts, 'pcnalx') FROM rag_fts
		CROSS JOIN rag_chunks c ON c.rowid = rag_fts.docid WHERE rag_fts MATCH ? AND `+w, append([]any{expr}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("search words: %w", err)
	}
	defer rows.Close()
	var out []Hit
	for rows.Next() {
		var mi []byte
		c, err := scanChunk(rows, &mi)
		if err != nil {
			return nil, fmt.Errorf("search words: %w", err)
		}
		out = append(out, Hit{Chunk: c, Score: bm25(mi)})
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

// Stats implements Store.
func (s *SQLite) Stats(ctx context.Context) (Stats, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT collection, count(*), count(DISTINCT NULLIF(doc, '')) FROM rag_chunks
		WHERE expires = 0 OR expires > ? GROUP BY collection`, time.Now().UnixMilli())
	if err != nil {
		return Stats{}, fmt.Errorf("count chunks: %w", err)
	}
	defer rows.Close()
	return countStats(rows)
}

// statsRows is what countStats reads of database/sql's and pgx's result rows.
type statsRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// countStats adds up the rows of the Stats query (collection, chunks, documents), the
// same for both stores.
func countStats(rows statsRows) (Stats, error) {
	st := Stats{Collections: map[string]int{}}
	for rows.Next() {
		var coll string
		var n, docs int
		if err := rows.Scan(&coll, &n, &docs); err != nil {
			return st, fmt.Errorf("count chunks: %w", err)
		}
		st.Collections[coll] = n
		st.Chunks += n
		st.Docs += docs
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("count chunks: %w", err)
	}
	return st, nil
}
