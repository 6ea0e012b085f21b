package rag

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/symbi-dev/symbi/internal/store"
)

// logBuffer collects a logger's output, safe for the index's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestHNSWFileRoundTrip writes graphs (with tombstones and a replaced key) and reads
// them back: the same nodes, links and vectors, and the same answers.
func TestHNSWFileRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	vs := clusteredVectors(r, 700, 24, 1.5)
	a, b := newHNSW(24, HNSWParams{}), newHNSW(8, HNSWParams{M: 8})
	for i, v := range vs {
		a.Add(int64(i), v)
	}
	for i := range 40 {
		a.Remove(int64(i * 3))
	}
	a.Add(5, vs[6]) // replaced: the old node stays as a tombstone
	graphs := map[annKey]*hnsw{{"kb", 24}: a, {"memory", 8}: newHNSW(8, HNSWParams{}), {"kb", 8}: b}
	b.Add(1, vs[0][:8])
	var buf bytes.Buffer
	if err := writeANNFile(&buf, "tok", 42, HNSWParams{}, graphs); err != nil {
		t.Fatal(err)
	}
	af, err := readANNFile(bytes.NewReader(buf.Bytes()), int64(buf.Len()), HNSWParams{})
	if err != nil {
		t.Fatal(err)
	}
	if af.token != "tok" || af.applied != 42 || len(af.graphs) != 3 {
		t.Fatalf("read token %q, entry %d, %d graphs; want tok, 42, 3", af.token, af.applied, len(af.graphs))
	}
	for k, want := range graphs {
		got := af.graphs[k]
		if got == nil {
			t.Fatalf("graph %v missing", k)
		}
		if got.entry != want.entry || got.top != want.top || got.ndead != want.ndead || !slices.Equal(got.keys, want.keys) ||
			!slices.Equal(got.dead, want.dead) || !slices.Equal(got.vecs, want.vecs) || len(got.byKey) != len(want.byKey) {
			t.Errorf("graph %v differs after the round trip", k)
		}
		for i := range want.links {
			if !slices.EqualFunc(got.links[i], want.links[i], slices.Equal) {
				t.Fatalf("graph %v node %d: links %v, want %v", k, i, got.links[i], want.links[i])
			}
		}
	}
	for _, q := range vs[:20] {
		wk, wd := a.Search(q, 10, 80)
		gk, gd := af.graphs[annKey{"kb", 24}].Search(q, 10, 80)
		if !slices.Equal(wk, gk) || !slices.Equal(wd, gd) {
			t.Fatalf("search after the round trip = %v, want %v", gk, wk)
		}
	}
}

// fixChecksum rewrites the trailer of an index file to the CRC-32C of its body.
func fixChecksum(data []byte) {
	if len(data) < annFileHead+4 {
		return
	}
	body := data[annFileHead : len(data)-4]
	binary.LittleEndian.PutUint32(data[len(data)-4:], crc32.Checksum(body, castagnoli))
}

// TestReadANNFileRejects: every kind of damage is an error wrapping errBadIndexFile,
// including damage with a recomputed checksum (the structure is checked on its own).
func TestReadANNFileRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(63, 64))
	g := newHNSW(4, HNSWParams{})
	for i, v := range randomVectors(r, 50, 4) {
		g.Add(int64(i), v)
	}
	var buf bytes.Buffer
	if err := writeANNFile(&buf, "tok", 7, HNSWParams{}, map[annKey]*hnsw{{"kb", 4}: g}); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	// Offsets in the body: token (4+3), entry (8), M, ef (4+4), graphs (4), collection (4+2),
	// then the graph: dims, nodes, entry, top (4 each), keys.
	graph := annFileHead + 7 + 8 + 8 + 4 + 6
	keys := graph + 16
	links := keys + 50*(8+1+16)
	for _, tc := range []struct {
		name   string
		change func(b []byte) []byte
		fix    bool // recompute the checksum after the change
	}{
		{"empty", func(b []byte) []byte { return nil }, false},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, false},
		{"version", func(b []byte) []byte { b[8] = 9; return b }, false},
		{"truncated", func(b []byte) []byte { return b[:len(b)-9] }, false},
		{"truncated, checksum fixed", func(b []byte) []byte { return b[:len(b)-9] }, true},
		{"bit flipped in a vector", func(b []byte) []byte { b[links-100] ^= 1; return b }, false},
		{"extra bytes", func(b []byte) []byte { return append(b[:len(b)-4:len(b)-4], 0, 0, 0, 0, 0) }, true},
		{"other M", func(b []byte) []byte { b[annFileHead+15] = 9; return b }, true},
		{"huge node count", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[graph+4:], 1<<30); return b }, true},
		{"zero dimensions", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[graph:], 0); return b }, true},
		{"entry out of range", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[graph+8:], 50); return b }, true},
		{"bad tombstone flag", func(b []byte) []byte { b[keys+50*8] = 7; return b }, true},
		{"link out of range", func(b []byte) []byte {
			// node 0's levels (1 byte), its layer 0 link count (2), first link
			binary.LittleEndian.PutUint32(b[links+3:], 999)
			return b
		}, true},
		{"duplicate live key", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[keys+8:], 0); return b }, true},
		{"zero levels", func(b []byte) []byte { b[links] = 0; return b }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.change(slices.Clone(good))
			if tc.fix {
				fixChecksum(b)
			}
			_, err := readANNFile(bytes.NewReader(b), int64(len(b)), HNSWParams{})
			if !errors.Is(err, errBadIndexFile) {
				t.Fatalf("read = %v, want errBadIndexFile", err)
			}
		})
	}
	// And the good file reads (so the cases above fail for their change).
	if _, err := readANNFile(bytes.NewReader(good), int64(len(good)), HNSWParams{}); err != nil {
		t.Fatal(err)
	}
}

// FuzzReadANNFile: no input makes the loader panic or hang, and whatever it accepts
// is a graph that can be searched and changed. Each input is tried as it is and with
// its checksum recomputed, so that the structure checks are reached.
func FuzzReadANNFile(f *testing.F) {
	r := rand.New(rand.NewPCG(65, 66))
	for _, n := range []int{0, 1, 30} {
		g := newHNSW(3, HNSWParams{M: 2})
		for i, v := range randomVectors(r, n, 3) {
			g.Add(int64(i), v)
		}
		g.Remove(0)
		var buf bytes.Buffer
		if err := writeANNFile(&buf, "t", 1, HNSWParams{M: 2}, map[annKey]*hnsw{{"kb", 3}: g}); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fix := range []bool{false, true} {
			b := slices.Clone(data)
			if fix {
				fixChecksum(b)
			}
			af, err := readANNFile(bytes.NewReader(b), int64(len(b)), HNSWParams{M: 2})
			if err != nil {
				if !errors.Is(err, errBadIndexFile) {
					t.Fatalf("error %v does not wrap errBadIndexFile", err)
				}
				continue
			}
			for k, g := range af.graphs {
				q := make([]float32, k.dims)
				q[0] = 1
				g.Search(q, 5, 10)
				g.Add(1<<40, q)
				g.Remove(1 << 40)
				g.Search(q, 5, 10)
			}
		}
	})
}

// annTestChunks are n chunks of dims-dimension random vectors in collection coll, ids
// from first.
func annTestChunks(r *rand.Rand, coll string, first, n, dims int) []Chunk {
	var out []Chunk
	for i, v := range randomVectors(r, n, dims) {
		out = append(out, Chunk{Collection: coll, ID: fmt.Sprint(first + i), Text: "t", Vector: v})
	}
	return out
}

// persistFixture is a database file with an indexed store that was closed (so its
// index was saved), then written to by a store without the index: inserts, updates
// and deletes that only the change log tells the next index about.
type persistFixture struct {
	dir     string
	db      *sql.DB
	queries [][]float32
	deleted map[string]bool
	updated map[string][]float32
}

func newPersistFixture(t *testing.T) *persistFixture {
	t.Helper()
	ctx := context.Background()
	f := &persistFixture{dir: t.TempDir(), deleted: map[string]bool{}, updated: map[string][]float32{}}
	var err error
	if f.db, err = store.Open(f.dir + "/s.db"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.db.Close() })
	r := rand.New(rand.NewPCG(71, 72))
	s := openSQLiteHNSW(t, f.db, SQLiteOptions{})
	if err := s.Upsert(ctx, append(annTestChunks(r, "kb", 0, 600, 16), annTestChunks(r, "memory", 0, 100, 16)...)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Nearest(ctx, Query{Collection: "kb", Vector: randomVectors(r, 1, 16)[0], Limit: 3}); err != nil {
		t.Fatal(err) // the index has applied the writes
	}
	s.Close()
	if _, err := os.Stat(f.dir + "/s.db.hnsw"); err != nil {
		t.Fatalf("index not saved at close: %v", err)
	}
	// Written while no index runs (symbi stopped, `symbi kb ingest`).
	plain, err := NewSQLite(ctx, f.db)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Upsert(ctx, annTestChunks(r, "kb", 600, 50, 16)); err != nil {
		t.Fatal(err)
	}
	upd := annTestChunks(r, "kb", 100, 20, 16)
	for _, c := range upd {
		f.updated[c.ID] = c.Vector
	}
	if err := plain.Upsert(ctx, upd); err != nil {
		t.Fatal(err)
	}
	var gone []string
	for i := 200; i < 230; i++ {
		gone = append(gone, fmt.Sprint(i))
		f.deleted[fmt.Sprint(i)] = true
	}
	if _, err := plain.Delete(ctx, "kb", gone...); err != nil {
		t.Fatal(err)
	}
	f.queries = randomVectors(r, 30, 16)
	return f
}

// check searches the index against the exact scan: recall@10 at least 0.95, no
// deleted chunk, each updated chunk found by its new vector.
func (f *persistFixture) check(t *testing.T, s *SQLite) {
	t.Helper()
	ctx := context.Background()
	exact, err := NewSQLite(ctx, f.db)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.ann.graph("kb", 16).Len(); got != 620 {
		t.Errorf("index holds %d kb vectors, want 620", got)
	}
	found, total := 0, 0
	for _, qv := range f.queries {
		q := Query{Collection: "kb", Vector: qv, Limit: 10}
		want, err := exact.Nearest(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.annNearest(ctx, q)
		if err != nil || !ok {
			t.Fatalf("indexed search = %v, %v; want an answer from the index", ok, err)
		}
		for _, h := range got {
			if f.deleted[h.ID] {
				t.Errorf("deleted chunk %s found", h.ID)
			}
		}
		found += recallOf(int64s(ids(want)), int64s(ids(got)))
		total += len(want)
	}
	if recall := float64(found) / float64(total); recall < 0.95 {
		t.Errorf("recall@10 = %.3f, want ≥ 0.95", recall)
	}
	for id, v := range f.updated {
		got, _, err := s.annNearest(ctx, Query{Collection: "kb", Vector: v, Limit: 1})
		if err != nil || len(got) != 1 || got[0].ID != id || got[0].Score < 0.999 {
			t.Fatalf("updated chunk %s by its new vector: %v, %v", id, got, err)
		}
	}
}

// TestSQLiteHNSWPersisted: a store opened on a database whose index was saved loads
// the file instead of rebuilding, applies the writes made since from the change log,
// answers as the exact scan does, and saves again when it closes.
func TestSQLiteHNSWPersisted(t *testing.T) {
	f := newPersistFixture(t)
	var logs logBuffer
	s := openSQLiteHNSW(t, f.db, SQLiteOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if b, l := s.ann.builds.Load(), s.ann.loads.Load(); b != 0 || l != 1 {
		t.Fatalf("%d builds, %d loads; want the index loaded (log: %s)", b, l, logs.String())
	}
	if !strings.Contains(logs.String(), "log_entries_applied=100") { // 50 inserts, 20 updates, 30 deletes
		t.Errorf("load log does not report the 100 log entries applied: %s", logs.String())
	}
	f.check(t, s)
	st0, err := os.Stat(f.dir + "/s.db.hnsw")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	st1, err := os.Stat(f.dir + "/s.db.hnsw")
	if err != nil {
		t.Fatal(err)
	}
	if st1.Size() <= st0.Size() {
		t.Errorf("index file %d bytes after the close, %d before: not saved with the new vectors", st1.Size(), st0.Size())
	}
	// Unchanged since: loaded, nothing to apply, not saved again at close.
	logs = logBuffer{}
	s2 := openSQLiteHNSW(t, f.db, SQLiteOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if s2.ann.loads.Load() != 1 || !strings.Contains(logs.String(), "log_entries_applied=0") {
		t.Fatalf("second load: %s", logs.String())
	}
	f.check(t, s2)
	s2.Close()
	if strings.Contains(logs.String(), "vector index saved") {
		t.Errorf("unchanged index saved again: %s", logs.String())
	}
}

// TestSQLiteHNSWFileNotUsed: a file that does not match the database is reported and
// the index rebuilt from the table, which then answers correctly and is saved.
func TestSQLiteHNSWFileNotUsed(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, want string
		o          SQLiteOptions
		change     func(t *testing.T, f *persistFixture)
	}{
		{"corrupt", "bad vector index file", SQLiteOptions{}, func(t *testing.T, f *persistFixture) {
			b, err := os.ReadFile(f.dir + "/s.db.hnsw")
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x10
			if err := os.WriteFile(f.dir+"/s.db.hnsw", b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", "truncated", SQLiteOptions{}, func(t *testing.T, f *persistFixture) {
			if err := os.Truncate(f.dir+"/s.db.hnsw", 1000); err != nil {
				t.Fatal(err)
			}
		}},
		{"other database", "another database", SQLiteOptions{}, func(t *testing.T, f *persistFixture) {
			if _, err := f.db.ExecContext(ctx, `UPDATE rag_ann_state SET token = 'elsewhere'`); err != nil {
				t.Fatal(err)
			}
		}},
		{"other parameters", "ef_construction", SQLiteOptions{HNSW: HNSWParams{M: 8}}, nil},
		{"log trimmed", "the log holds", SQLiteOptions{}, func(t *testing.T, f *persistFixture) {
			if _, err := f.db.ExecContext(ctx, `DELETE FROM rag_ann_log WHERE seq < (SELECT max(seq) FROM rag_ann_log)`); err != nil {
				t.Fatal(err)
			}
		}},
		{"rows changed past the log", "stored", SQLiteOptions{}, func(t *testing.T, f *persistFixture) {
			// A writer that bypassed the triggers (an old version, a manual edit).
			if _, err := f.db.ExecContext(ctx, `DROP TRIGGER rag_ann_del; DELETE FROM rag_chunks WHERE collection = 'memory' AND id IN ('1', '2')`); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPersistFixture(t)
			if tc.change != nil {
				tc.change(t, f)
			}
			var logs logBuffer
			o := tc.o
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s := openSQLiteHNSW(t, f.db, o)
			if b, l := s.ann.builds.Load(), s.ann.loads.Load(); b != 1 || l != 0 {
				t.Fatalf("%d builds, %d loads; want a rebuild (log: %s)", b, l, logs.String())
			}
			out := logs.String()
			if !strings.Contains(out, "vector index file not used") || !strings.Contains(out, tc.want) {
				t.Errorf("log does not report the file (%q): %s", tc.want, out)
			}
			f.check(t, s)
			s.Close()
			// Saved after the rebuild: the next start loads it.
			s2 := openSQLiteHNSW(t, f.db, tc.o)
			if s2.ann.loads.Load() != 1 {
				t.Errorf("the rebuilt index was not loaded at the next start")
			}
		})
	}
}

// TestSQLiteHNSWFileOptions: "-" saves nothing; an explicit path is used; a database
// in memory has no file.
func TestSQLiteHNSWFileOptions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(dir + "/s.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(73, 74))
	for _, tc := range []struct {
		file, want string
	}{{"-", ""}, {dir + "/elsewhere.idx", dir + "/elsewhere.idx"}} {
		s := openSQLiteHNSW(t, db, SQLiteOptions{IndexFile: tc.file})
		if s.ann.file != tc.want {
			t.Errorf("IndexFile %q: file %q, want %q", tc.file, s.ann.file, tc.want)
		}
		if err := s.Upsert(ctx, annTestChunks(r, "kb", 0, 10, 4)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Nearest(ctx, Query{Collection: "kb", Vector: []float32{1, 0, 0, 0}}); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	if _, err := os.Stat(dir + "/s.db.hnsw"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("default file written although IndexFile was set: %v", err)
	}
	if _, err := os.Stat(dir + "/elsewhere.idx"); err != nil {
		t.Errorf("explicit file not written: %v", err)
	}
	mem, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if s := openSQLiteHNSW(t, mem, SQLiteOptions{}); s.ann.file != "" {
		t.Errorf("in-memory database: file %q, want none", s.ann.file)
	}
}
