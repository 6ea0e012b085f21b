package rag

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The index file: the magic "SYMBIANN" and a version (u32), then the body: the
// database's index token, the last change-log entry included (i64), M and
// EfConstruction (u32 each), the number of graphs (u32) and per graph its collection
// and the graph (hnsw_file.go); then the CRC-32C of the body (u32). Written to a
// temporary file beside it, synced, then renamed over it.

const (
	annFileMagic   = "SYMBIANN"
	annFileVersion = 1
	annFileHead    = len(annFileMagic) + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// annFile is what an index file holds.
type annFile struct {
	token   string
	applied int64
	graphs  map[annKey]*hnsw
}

// writeANNFile writes the graphs; the caller holds whatever keeps them still.
func writeANNFile(w io.Writer, token string, applied int64, p HNSWParams, graphs map[annKey]*hnsw) error {
	p = p.withDefaults()
	head := make([]byte, annFileHead)
	copy(head, annFileMagic)
	binary.LittleEndian.PutUint32(head[len(annFileMagic):], annFileVersion)
	if _, err := w.Write(head); err != nil {
		return err
	}
	sum := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 1<<20)
	var b [8]byte
	str := func(s string) {
		binary.LittleEndian.PutUint32(b[:4], uint32(len(s)))
		bw.Write(b[:4])
		bw.WriteString(s)
	}
	u32 := func(v uint32) {
		binary.LittleEndian.PutUint32(b[:4], v)
		bw.Write(b[:4])
	}
	str(token)
	binary.LittleEndian.PutUint64(b[:], uint64(applied))
	bw.Write(b[:])
	u32(uint32(p.M))
	u32(uint32(p.EfConstruction))
	keys := make([]annKey, 0, len(graphs))
	for k := range graphs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b annKey) int {
		return cmp.Or(cmp.Compare(a.collection, b.collection), cmp.Compare(a.dims, b.dims))
	})
	u32(uint32(len(keys)))
	for _, k := range keys {
		str(k.collection)
		g := graphs[k]
		g.mu.RLock()
		err := g.writeTo(bw)
		g.mu.RUnlock()
		if err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b[:4], sum.Sum32())
	_, err := w.Write(b[:4])
	return err
}

// readANNFile reads an index file of size bytes for parameters p. Any flaw, including
// parameters other than p's, is an error wrapping errBadIndexFile.
func readANNFile(r io.Reader, size int64, p HNSWParams) (*annFile, error) {
	p = p.withDefaults()
	if size < int64(annFileHead)+4 {
		return nil, fmt.Errorf("%w: %d bytes", errBadIndexFile, size)
	}
	head := make([]byte, annFileHead)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadIndexFile, err)
	}
	if string(head[:len(annFileMagic)]) != annFileMagic {
		return nil, fmt.Errorf("%w: not a vector index file", errBadIndexFile)
	}
	if v := binary.LittleEndian.Uint32(head[len(annFileMagic):]); v != annFileVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errBadIndexFile, v, annFileVersion)
	}
	body := size - int64(annFileHead) - 4
	sum := crc32.New(castagnoli)
	f := &fileReader{r: bufio.NewReaderSize(io.TeeReader(io.LimitReader(r, body), sum), 1<<20), left: body}
	out := &annFile{token: f.str(64), applied: f.i64(), graphs: map[annKey]*hnsw{}}
	m, ef := f.u32(), f.u32()
	n := int64(f.u32())
	if f.err != nil {
		return nil, f.err
	}
	if int(m) != p.M || int(ef) != p.EfConstruction {
		return nil, fmt.Errorf("%w: built with M %d, ef_construction %d; configured %d, %d", errBadIndexFile, m, ef, p.M, p.EfConstruction)
	}
	if out.applied < 0 || !f.fits(n*(4+16)) {
		return nil, fmt.Errorf("%w: %d graphs, change log entry %d", errBadIndexFile, n, out.applied)
	}
	for range n {
		coll := f.str(1 << 16)
		g, err := readHNSW(f, p)
		if err != nil {
			return nil, err
		}
		k := annKey{coll, g.dims}
		if out.graphs[k] != nil {
			return nil, fmt.Errorf("%w: graph %q of %d dimensions twice", errBadIndexFile, coll, g.dims)
		}
		out.graphs[k] = g
	}
	if f.left != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the graphs", errBadIndexFile, f.left)
	}
	var tail [4]byte
	if _, err := io.ReadFull(r, tail[:]); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadIndexFile, err)
	}
	if got, want := sum.Sum32(), binary.LittleEndian.Uint32(tail[:]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", errBadIndexFile, got, want)
	}
	return out, nil
}

// save writes the graphs to the index file if they changed since they were last saved
// or loaded. It holds mu throughout, so that the file is exactly the graphs as of the
// change-log entry it records.
func (a *annIndex) save() error {
	if a.file == "" {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.applied == a.saved || a.graphs == nil {
		return nil
	}
	t0 := time.Now()
	dir, base := filepath.Split(a.file)
	tmp, err := os.CreateTemp(dir, base+".tmp*")
	if err != nil {
		return fmt.Errorf("save the vector index: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing there
	err = writeANNFile(tmp, a.token, a.applied, a.p, a.graphs)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), a.file)
	}
	if err != nil {
		return fmt.Errorf("save the vector index: %w", err)
	}
	if d, err := os.Open(filepath.Dir(a.file)); err == nil { // the rename itself durable
		d.Sync()
		d.Close()
	}
	a.saved = a.applied
	st, _ := os.Stat(a.file)
	var size int64
	if st != nil {
		size = st.Size()
	}
	a.log.Info("vector index saved", "file", a.file, "bytes", size, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// load reads the index file and brings it up to date from the change log; it reports
// whether the index is ready. A missing file is the first start; a file that cannot be
// used is logged and left for the build to replace.
func (a *annIndex) load(ctx context.Context) bool {
	if a.file == "" {
		return false
	}
	t0 := time.Now()
	af, err := a.readFile()
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err == nil && af.token != a.token {
		err = fmt.Errorf("%w: written for another database", errBadIndexFile)
	}
	if err == nil {
		err = a.adopt(ctx, af)
	}
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("vector index file not used; rebuilding", "file", a.file, "err", err)
		}
		return false
	}
	a.loads.Add(1)
	a.ready.Store(true)
	a.mu.Lock()
	replayed := a.applied - af.applied
	a.mu.Unlock()
	a.log.Info("vector index loaded", "file", a.file, "graphs", len(af.graphs), "log_entries_applied", replayed,
		"took", time.Since(t0).Round(time.Millisecond))
	return true
}

func (a *annIndex) readFile() (*annFile, error) {
	f, err := os.Open(a.file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return readANNFile(f, st.Size(), a.p)
}

// adopt makes the file's graphs the index if the change log still holds every entry
// after the file's, applies those, and checks that the graphs then hold as many live
// vectors as the table.
func (a *annIndex) adopt(ctx context.Context, af *annFile) error {
	owner := map[int64]*hnsw{}
	for _, g := range af.graphs {
		for k := range g.byKey {
			if owner[k] != nil {
				return fmt.Errorf("%w: key %d live in two graphs", errBadIndexFile, k)
			}
			owner[k] = g
		}
	}
	var lo, hi int64
	if err := a.db.QueryRowContext(ctx, `SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM rag_ann_log`).Scan(&lo, &hi); err != nil {
		return fmt.Errorf("read the vector index's change log: %w", err)
	}
	if hi < af.applied || (hi > af.applied && lo > af.applied+1) {
		return fmt.Errorf("%w: it includes the change log up to entry %d; the log holds %d to %d", errBadIndexFile, af.applied, lo, hi)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.graphs, a.owner, a.applied, a.saved = af.graphs, owner, af.applied, af.applied
	fail := func(err error) error {
		a.graphs, a.owner, a.applied, a.saved = nil, nil, 0, -1
		return err
	}
	for range 5 {
		if err := a.catchUpLocked(ctx); err != nil {
			return fail(err)
		}
		if a.behind {
			return fail(fmt.Errorf("%w: the change log was trimmed while it was loaded", errBadIndexFile))
		}
		// One statement: one snapshot of the table and the log.
		var rows, last int64
		if err := a.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM rag_chunks), (SELECT coalesce(max(seq), 0) FROM rag_ann_log)`).Scan(&rows, &last); err != nil {
			return fail(fmt.Errorf("count the stored vectors: %w", err))
		}
		if last != a.applied {
			continue // written meanwhile: apply that too, count again
		}
		live := 0
		for _, g := range a.graphs {
			live += g.Len()
		}
		if int64(live) != rows {
			return fail(fmt.Errorf("%w: %d live vectors after the change log, %d stored", errBadIndexFile, live, rows))
		}
		return nil
	}
	a.log.Warn("vector index loaded while the store was being written; not counted against it")
	return nil
}
