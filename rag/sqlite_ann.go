package rag

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The SQLite store's approximate index (SQLiteOptions.Index = "hnsw") lives in memory:
// one HNSW graph per collection and vector length, built from the stored chunks in the
// background when the store opens (searches scan exactly until it is ready). Triggers
// on rag_chunks append the rowid of every inserted, changed or deleted chunk to
// rag_ann_log, whichever process wrote it; before each search the index applies the
// entries it has not seen, so writes are visible to the next search, including writes
// of another process sharing the file (`symbi kb ingest` while symbi serves).
//
// The graphs are saved to a file (by default beside the database: <file>.hnsw) after
// each build and when the store closes, stamped with the database's index token (a
// random value in rag_ann_state), the last change-log entry they include and the HNSW
// parameters. At the next start the file is loaded instead of rebuilding: if its stamp
// matches, its checksum holds and the change log still reaches back to its last entry,
// the writes made since (by any process) are applied from the log, and the live vectors
// are counted against the table; otherwise the file is reported and the graphs rebuilt.

// sqliteANNSchema is the change log and its triggers. Once created they stay (like
// rag_qvec), and every store trims the log to its last annLogKeep entries as it writes.
const sqliteANNSchema = `
CREATE TABLE IF NOT EXISTS rag_ann_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, rid INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS rag_ann_ins AFTER INSERT ON rag_chunks BEGIN INSERT INTO rag_ann_log (rid) VALUES (new.rowid); END;
CREATE TRIGGER IF NOT EXISTS rag_ann_upd AFTER UPDATE ON rag_chunks BEGIN INSERT INTO rag_ann_log (rid) VALUES (new.rowid); END;
CREATE TRIGGER IF NOT EXISTS rag_ann_del AFTER DELETE ON rag_chunks BEGIN INSERT INTO rag_ann_log (rid) VALUES (old.rowid); END;
CREATE TABLE IF NOT EXISTS rag_ann_state (id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL);
INSERT OR IGNORE INTO rag_ann_state (id, token) VALUES (1, lower(hex(randomblob(16))));
`

// annLogKeep is how many change-log entries writers keep; an index further behind than
// that (a process that slept through a larger ingest) rebuilds itself.
const annLogKeep = 200000

// DefaultExactBelow is SQLiteOptions.ExactBelow's default.
const DefaultExactBelow = 2000

// annOverFetch is how many more candidates a search with a document or metadata filter
// takes from the graph than it returns.
const annOverFetch = 10

type annKey struct {
	collection string
	dims       int
}

// annIndex is the store's set of graphs and how far it has read the change log.
type annIndex struct {
	db         *sql.DB
	p          HNSWParams
	exactBelow int
	log        *slog.Logger

	mu      sync.Mutex // graphs, owner and applied
	graphs  map[annKey]*hnsw
	owner   map[int64]*hnsw // rowid -> the graph holding it
	applied int64           // last change-log entry applied
	ready   atomic.Bool     // built: searches may use it
	busy    atomic.Bool     // a build is running

	file   string       // where the graphs are saved ("": nowhere)
	token  string       // the database's index token, rag_ann_state
	saved  int64        // applied as of the last save or load (under mu)
	behind bool         // catching up found the log trimmed past applied (under mu)
	builds atomic.Int32 // graphs built from the table
	loads  atomic.Int32 // graphs loaded from the file

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newANNIndex(db *sql.DB, o SQLiteOptions, file, token string) *annIndex {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eb := o.ExactBelow
	if eb == 0 {
		eb = DefaultExactBelow
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &annIndex{db: db, p: o.HNSW.withDefaults(), exactBelow: eb, log: log, ctx: ctx, cancel: cancel, file: file, token: token, saved: -1}
}

// start builds the index in the background. With serve, the current graphs answer
// (and follow writes) until the new ones replace them; without, searches scan exactly.
func (a *annIndex) start(serve bool) {
	if !a.busy.CompareAndSwap(false, true) {
		return
	}
	if !serve {
		a.ready.Store(false)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer a.busy.Store(false)
		if !serve && a.load(a.ctx) {
			return
		}
		if err := a.build(a.ctx); err != nil {
			if a.ctx.Err() == nil {
				a.log.Error("build the vector index; searches scan exactly", "err", err)
			}
			return
		}
		if err := a.save(); err != nil {
			a.log.Error("save the vector index", "file", a.file, "err", err)
		}
	}()
}

// close stops a build and waits for it, then saves the graphs if they changed since
// they were last saved or loaded.
func (a *annIndex) close() {
	a.cancel()
	a.wg.Wait()
	if !a.ready.Load() {
		return
	}
	if err := a.save(); err != nil {
		a.log.Error("save the vector index", "file", a.file, "err", err)
	}
}

// build reads every stored vector into fresh graphs, then catches up with the writes
// made meanwhile and makes the index current.
func (a *annIndex) build(ctx context.Context) error {
	t0 := time.Now()
	var from int64
	if err := a.db.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM rag_ann_log`).Scan(&from); err != nil {
		return err
	}
	graphs := map[annKey]*hnsw{}
	owner := map[int64]*hnsw{}
	var last int64
	n := 0
	for {
		// Batches by rowid, so that no read holds the database for long.
		rows, err := a.db.QueryContext(ctx, `SELECT rowid, collection, vec FROM rag_chunks WHERE rowid > ? ORDER BY rowid LIMIT 2000`, last)
		if err != nil {
			return err
		}
		got := 0
		for rows.Next() {
			var rid int64
			var coll string
			var b []byte
			if err := rows.Scan(&rid, &coll, &b); err != nil {
				rows.Close()
				return err
			}
			add(graphs, owner, a.p, rid, coll, DecodeVector(b))
			last = rid
			got++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		n += got
		if got == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	ngraphs := len(graphs)
	a.mu.Lock()
	a.graphs, a.owner, a.applied, a.behind = graphs, owner, from, false
	err := a.catchUpLocked(ctx)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.builds.Add(1)
	a.ready.Store(true)
	a.log.Info("vector index built", "index", "hnsw", "vectors", n, "graphs", ngraphs, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// add puts a vector into the graph of its collection and length, out of any other.
func add(graphs map[annKey]*hnsw, owner map[int64]*hnsw, p HNSWParams, rid int64, coll string, v []float32) {
	k := annKey{coll, len(v)}
	g := graphs[k]
	if g == nil {
		g = newHNSW(len(v), p)
		graphs[k] = g
	}
	if old := owner[rid]; old != nil && old != g {
		old.Remove(rid)
	}
	g.Add(rid, v)
	owner[rid] = g
}

// catchUp applies the change log's new entries; it returns false when the index is not
// ready (being built, or rebuilding because it fell behind the trimmed log).
func (a *annIndex) catchUp(ctx context.Context) (bool, error) {
	if !a.ready.Load() {
		return false, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.catchUpLocked(ctx); err != nil {
		return false, err
	}
	return a.ready.Load(), nil
}

func (a *annIndex) catchUpLocked(ctx context.Context) error {
	// One of min() or max() alone is a lookup in the primary key; both at once a scan.
	var lo, hi int64
	if err := a.db.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM rag_ann_log`).Scan(&hi); err != nil {
		return fmt.Errorf("read the vector index's change log: %w", err)
	}
	if hi == a.applied {
		return nil
	}
	if err := a.db.QueryRowContext(ctx, `SELECT coalesce(min(seq), 0) FROM rag_ann_log`).Scan(&lo); err != nil {
		return fmt.Errorf("read the vector index's change log: %w", err)
	}
	if hi < a.applied || (lo > a.applied+1 && a.applied > 0) {
		// The log was trimmed past what this index has seen (or replaced): rebuild.
		a.log.Warn("vector index fell behind the change log; rebuilding", "applied", a.applied, "oldest", lo)
		a.behind = true
		a.ready.Store(false)
		a.start(false)
		return nil
	}
	rows, err := a.db.QueryContext(ctx, `SELECT l.rid, c.collection, c.vec FROM (SELECT DISTINCT rid FROM rag_ann_log WHERE seq > ? AND seq <= ?) l
		LEFT JOIN rag_chunks c ON c.rowid = l.rid`, a.applied, hi)
	if err != nil {
		return fmt.Errorf("read the vector index's change log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rid int64
		var coll sql.NullString
		var b []byte
		if err := rows.Scan(&rid, &coll, &b); err != nil {
			return fmt.Errorf("read the vector index's change log: %w", err)
		}
		if !coll.Valid {
			if g := a.owner[rid]; g != nil {
				g.Remove(rid)
				delete(a.owner, rid)
			}
			continue
		}
		add(a.graphs, a.owner, a.p, rid, coll.String, DecodeVector(b))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the vector index's change log: %w", err)
	}
	a.applied = hi
	for _, g := range a.graphs {
		if g.Stale() {
			a.start(true) // the graphs in use answer until the rebuilt ones replace them
			break
		}
	}
	return nil
}

func (a *annIndex) graph(coll string, dims int) *hnsw {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.graphs[annKey{coll, dims}]
}

// nearest answers q from the graph; ok is false when the caller should scan exactly
// instead: no index yet, a collection smaller than ExactBelow, or a filter so selective
// that the over-fetched candidates hold fewer than q.Limit matches.
func (s *SQLite) annNearest(ctx context.Context, q Query) (hits []Hit, ok bool, err error) {
	a := s.ann
	if ok, err := a.catchUp(ctx); !ok || err != nil {
		return nil, false, err
	}
	g := a.graph(q.Collection, len(q.Vector))
	if g == nil {
		return nil, true, nil // nothing of this collection and length is stored
	}
	size := g.Len()
	if size < a.exactBelow {
		return nil, false, nil
	}
	limit := limitOf(q.Limit)
	k := limit
	if q.Doc != "" || len(q.Filter) > 0 {
		k = limit * annOverFetch
	}
	keys, ds := g.Search(q.Vector, k, max(a.p.EfSearch, k))
	if len(keys) == 0 {
		return nil, true, nil
	}
	w, args, err := where(q)
	if err != nil {
		return nil, false, err
	}
	in := strings.Repeat("?,", len(keys))
	for _, k := range keys {
		args = append(args, k)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+chunkCols+`, c.rowid FROM rag_chunks c WHERE `+w+` AND c.rowid IN (`+in[:len(in)-1]+`)`, args...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	found := map[int64]Chunk{}
	for rows.Next() {
		var rid int64
		c, err := scanChunk(rows, &rid)
		if err != nil {
			return nil, false, err
		}
		found[rid] = c
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	for i, k := range keys {
		if c, ok := found[k]; ok && len(hits) < limit {
			hits = append(hits, Hit{Chunk: c, Score: 1 - float64(ds[i])})
		}
	}
	if len(hits) < limit && len(keys) < size {
		return nil, false, nil // too few matches among the candidates: scan exactly
	}
	return hits, true, nil
}
