package rag

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// One graph in the index file (see sqlite_ann.go for the file around it), little
// endian: dims u32, nodes u32, entry i32, top u32; the nodes' keys (i64 each), their
// tombstone flags (one byte each) and vectors (dims f32 each); then per node its level
// count (u8) and per level a link count (u16) and the linked nodes (i32 each). Nothing
// read is trusted: counts are bounded by the bytes left in the file, links must name
// nodes present on their layer, live keys must be unique, and the entry must be the
// highest node.

// errBadIndexFile reports an index file that cannot be used; the index is rebuilt.
var errBadIndexFile = errors.New("bad vector index file")

// maxHNSWLevel bounds a node's level: with M ≥ 2 the chance of a level above 64 is
// below 2^-64.
const maxHNSWLevel = 64

// writeTo writes the graph; the caller holds at least the read lock.
func (h *hnsw) writeTo(w *bufio.Writer) error {
	var b [8]byte
	u32 := func(v uint32) {
		binary.LittleEndian.PutUint32(b[:4], v)
		w.Write(b[:4])
	}
	u32(uint32(h.dims))
	u32(uint32(len(h.keys)))
	u32(uint32(h.entry))
	u32(uint32(h.top))
	for _, k := range h.keys {
		binary.LittleEndian.PutUint64(b[:], uint64(k))
		w.Write(b[:])
	}
	for _, d := range h.dead {
		if d {
			w.WriteByte(1)
		} else {
			w.WriteByte(0)
		}
	}
	for _, f := range h.vecs {
		u32(math.Float32bits(f))
	}
	for _, ls := range h.links {
		w.WriteByte(byte(len(ls)))
		for _, l := range ls {
			binary.LittleEndian.PutUint16(b[:2], uint16(len(l)))
			w.Write(b[:2])
			for _, n := range l {
				u32(uint32(n))
			}
		}
	}
	_, err := w.Write(nil) // bufio.Writer keeps its first error
	return err
}

// fileReader reads little-endian values, remembering the first error and how many
// bytes may still come (the file's size less what was read), so that a count read
// from the file is checked against it before anything of that size is allocated.
type fileReader struct {
	r    *bufio.Reader
	left int64
	err  error
	buf  [8]byte
}

func (f *fileReader) fail(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf("%w: "+format, append([]any{errBadIndexFile}, args...)...)
	}
}

func (f *fileReader) read(n int) []byte {
	if f.err != nil {
		return f.buf[:n]
	}
	if _, err := io.ReadFull(f.r, f.buf[:n]); err != nil {
		f.fail("truncated: %v", err)
	}
	f.left -= int64(n)
	return f.buf[:n]
}

func (f *fileReader) u8() byte          { return f.read(1)[0] }
func (f *fileReader) u16() uint16       { return binary.LittleEndian.Uint16(f.read(2)) }
func (f *fileReader) u32() uint32       { return binary.LittleEndian.Uint32(f.read(4)) }
func (f *fileReader) u64() uint64       { return binary.LittleEndian.Uint64(f.read(8)) }
func (f *fileReader) i64() int64        { return int64(f.u64()) }
func (f *fileReader) fits(n int64) bool { return f.err == nil && n >= 0 && n <= f.left }

// str reads a length-prefixed string of at most limit bytes.
func (f *fileReader) str(limit int) string {
	n := int64(f.u32())
	if !f.fits(n) || n > int64(limit) {
		f.fail("string of %d bytes", n)
		return ""
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(f.r, b); err != nil {
		f.fail("truncated: %v", err)
	}
	f.left -= n
	return string(b)
}

// readHNSW reads one graph written by writeTo, for parameters p.
func readHNSW(f *fileReader, p HNSWParams) (*hnsw, error) {
	p = p.withDefaults()
	dims, nodes := int64(f.u32()), int64(f.u32())
	entry, top := int32(f.u32()), int64(f.u32())
	if f.err != nil {
		return nil, f.err
	}
	if dims < 1 || dims > 1<<16 {
		f.fail("%d dimensions", dims)
		return nil, f.err
	}
	// Each node takes at least its key, flag, vector and level count.
	if nodes > math.MaxInt32 || !f.fits(nodes*(8+1+4*dims+1)) {
		f.fail("%d nodes of %d dimensions in %d bytes", nodes, dims, f.left)
		return nil, f.err
	}
	h := newHNSW(int(dims), p)
	n := int(nodes)
	h.keys = make([]int64, n)
	for i := range h.keys {
		h.keys[i] = f.i64()
	}
	h.dead = make([]bool, n)
	for i := range h.dead {
		switch f.u8() {
		case 0:
		case 1:
			h.dead[i] = true
			h.ndead++
		default:
			f.fail("node %d: bad tombstone flag", i)
		}
	}
	h.vecs = make([]float32, n*int(dims))
	for i := range h.vecs {
		h.vecs[i] = math.Float32frombits(f.u32())
	}
	if f.err != nil {
		return nil, f.err
	}
	h.links = make([][][]int32, n)
	for i := range h.links {
		levels := int(f.u8())
		if levels < 1 || levels > maxHNSWLevel {
			f.fail("node %d: %d levels", i, levels)
			return nil, f.err
		}
		ls := make([][]int32, levels)
		for l := range ls {
			limit := p.M
			if l == 0 {
				limit = 2 * p.M
			}
			c := int(f.u16())
			if c > limit || !f.fits(int64(4*c)) {
				f.fail("node %d: %d links on layer %d (at most %d)", i, c, l, limit)
				return nil, f.err
			}
			ls[l] = make([]int32, c, min(c+1, limit+1))
			for j := range ls[l] {
				ls[l][j] = int32(f.u32())
			}
		}
		h.links[i] = ls
	}
	if f.err != nil {
		return nil, f.err
	}
	// Links name existing nodes that are on their layer.
	for i, ls := range h.links {
		for l, ns := range ls {
			for _, m := range ns {
				if m < 0 || int(m) >= n || len(h.links[m]) <= l {
					f.fail("node %d links to node %d on layer %d", i, m, l)
					return nil, f.err
				}
			}
		}
	}
	switch {
	case n == 0 && entry != -1:
		f.fail("empty graph with an entry")
	case n > 0 && (entry < 0 || int(entry) >= n):
		f.fail("entry %d of %d nodes", entry, n)
	case n > 0 && int64(len(h.links[entry])-1) != top:
		f.fail("entry on level %d, top %d", len(h.links[entry])-1, top)
	}
	if f.err != nil {
		return nil, f.err
	}
	for i, ls := range h.links {
		if int64(len(ls)-1) > top {
			f.fail("node %d above the entry", i)
			return nil, f.err
		}
	}
	h.entry, h.top = entry, int(top)
	for i, k := range h.keys {
		if h.dead[i] {
			continue
		}
		if _, dup := h.byKey[k]; dup {
			f.fail("key %d live twice", k)
			return nil, f.err
		}
		h.byKey[k] = int32(i)
	}
	return h, nil
}
