package rag

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
)

// HNSWParams tunes a hierarchical navigable small world graph (Malkov and Yashunin,
// 2016): M links per node on the upper layers (2M on the bottom one), EfConstruction
// candidates considered when a node is linked in, EfSearch candidates kept while a
// query walks the bottom layer (more: better recall, slower).
type HNSWParams struct {
	M              int
	EfConstruction int
	EfSearch       int
}

// Defaults of HNSWParams' zero fields.
const (
	DefaultHNSWM              = 16
	DefaultHNSWEfConstruction = 100
	DefaultHNSWEfSearch       = 80
)

func (p HNSWParams) withDefaults() HNSWParams {
	if p.M <= 0 {
		p.M = DefaultHNSWM
	}
	if p.EfConstruction <= 0 {
		p.EfConstruction = DefaultHNSWEfConstruction
	}
	if p.EfSearch <= 0 {
		p.EfSearch = DefaultHNSWEfSearch
	}
	return p
}

// hnsw is an approximate nearest-neighbour index of vectors of one length under cosine
// distance, keyed by an int64 (the store's rowid). Vectors are kept normalised, so the
// distance is 1 - dot product. A removed or replaced key leaves a tombstone that still
// routes searches but is never returned; the graph is rebuilt from its live nodes when
// tombstones pass a quarter of it. Safe for concurrent use: searches share a read lock,
// changes take the write lock.
type hnsw struct {
	mu     sync.RWMutex
	p      HNSWParams
	dims   int
	ml     float64
	rng    *rand.Rand
	vecs   []float32 // node i's vector at [i*dims : (i+1)*dims]
	keys   []int64   // node -> key
	links  [][][]int32
	dead   []bool
	byKey  map[int64]int32
	entry  int32 // -1: empty
	top    int   // the entry's level
	ndead  int
	visits sync.Pool // *visitSet
}

type visitSet struct {
	mark []uint32
	gen  uint32
}

func newHNSW(dims int, p HNSWParams) *hnsw {
	p = p.withDefaults()
	return &hnsw{p: p, dims: dims, ml: 1 / math.Log(float64(p.M)), rng: rand.New(rand.NewPCG(uint64(dims), 0x68_6e_73_77)),
		byKey: map[int64]int32{}, entry: -1}
}

// Len is the number of live vectors.
func (h *hnsw) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.byKey)
}

func (h *hnsw) vec(i int32) []float32 {
	return h.vecs[int(i)*h.dims : (int(i)+1)*h.dims]
}

// dotGeneric is the inner product of two vectors of equal length in portable Go, eight
// lanes at a time (the compiler keeps them in registers; no bounds checks in the loop).
func dotGeneric(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		x, y := a[i:i+8:i+8], b[i:i+8:i+8]
		s0 += x[0] * y[0]
		s1 += x[1] * y[1]
		s2 += x[2] * y[2]
		s3 += x[3] * y[3]
		s4 += x[4] * y[4]
		s5 += x[5] * y[5]
		s6 += x[6] * y[6]
		s7 += x[7] * y[7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3) + (s4 + s5) + (s6 + s7)
}

func normalised(v []float32) []float32 {
	var n float64
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	out := make([]float32, len(v))
	if n == 0 {
		return out
	}
	inv := 1 / math.Sqrt(n)
	for i, x := range v {
		out[i] = float32(float64(x) * inv)
	}
	return out
}

// cand is a node and its distance to the vector searched for.
type cand struct {
	id int32
	d  float32
}

// candHeap is a binary heap of candidates: closest on top when far is false, farthest
// when true. Written out rather than through container/heap, which boxes every value.
type candHeap struct {
	c   []cand
	far bool
}

func (h *candHeap) less(i, j int) bool {
	if h.far {
		return h.c[i].d > h.c[j].d
	}
	return h.c[i].d < h.c[j].d
}

func (h *candHeap) push(x cand) {
	h.c = append(h.c, x)
	for i := len(h.c) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h.c[i], h.c[p] = h.c[p], h.c[i]
		i = p
	}
}

func (h *candHeap) pop() cand {
	top := h.c[0]
	n := len(h.c) - 1
	h.c[0] = h.c[n]
	h.c = h.c[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && h.less(l, m) {
			m = l
		}
		if r < n && h.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		h.c[i], h.c[m] = h.c[m], h.c[i]
		i = m
	}
	return top
}

func (h *hnsw) visitSet() *visitSet {
	vs, _ := h.visits.Get().(*visitSet)
	if vs == nil {
		vs = &visitSet{}
	}
	if len(vs.mark) < len(h.keys) {
		vs.mark = make([]uint32, len(h.keys)+len(h.keys)/4+64)
		vs.gen = 0
	}
	vs.gen++
	if vs.gen == 0 { // wrapped: clear
		clear(vs.mark)
		vs.gen = 1
	}
	return vs
}

// searchLayer returns the ef nodes of one layer closest to q found from the entry
// points, in no particular order (callers sort).
func (h *hnsw) searchLayer(q []float32, eps []cand, ef, layer int) []cand {
	vs := h.visitSet()
	defer h.visits.Put(vs)
	frontier := candHeap{c: make([]cand, 0, 2*ef)}
	best := candHeap{c: make([]cand, 0, ef+1), far: true}
	for _, e := range eps {
		vs.mark[e.id] = vs.gen
		frontier.push(e)
		best.push(e)
	}
	for len(best.c) > ef {
		best.pop()
	}
	for len(frontier.c) > 0 {
		c := frontier.pop()
		if len(best.c) >= ef && c.d > best.c[0].d {
			break
		}
		for _, n := range h.links[c.id][layer] {
			if vs.mark[n] == vs.gen {
				continue
			}
			vs.mark[n] = vs.gen
			d := 1 - dot(q, h.vec(n))
			if len(best.c) < ef || d < best.c[0].d {
				frontier.push(cand{n, d})
				best.push(cand{n, d})
				if len(best.c) > ef {
					best.pop()
				}
			}
		}
	}
	return best.c
}

// greedy walks from the entry down to layer stop+1, one closest node per layer.
func (h *hnsw) greedy(q []float32, stop int) cand {
	cur := cand{h.entry, 1 - dot(q, h.vec(h.entry))}
	for l := h.top; l > stop; l-- {
		for changed := true; changed; {
			changed = false
			for _, n := range h.links[cur.id][l] {
				if d := 1 - dot(q, h.vec(n)); d < cur.d {
					cur, changed = cand{n, d}, true
				}
			}
		}
	}
	return cur
}

// selectNeighbours keeps at most m of the candidates (sorted closest first) by the
// heuristic of the HNSW paper: a candidate is kept only if it is closer to the base
// than to every one kept before, so links spread in all directions; the remaining
// slots are filled with the closest of those skipped.
func (h *hnsw) selectNeighbours(cands []cand, m int) []cand {
	if len(cands) <= m {
		return cands
	}
	out := make([]cand, 0, m)
	var skipped []cand
	for _, c := range cands {
		if len(out) == m {
			break
		}
		ok := true
		for _, o := range out {
			if 1-dot(h.vec(c.id), h.vec(o.id)) < c.d {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, c)
		} else {
			skipped = append(skipped, c)
		}
	}
	for _, c := range skipped {
		if len(out) == m {
			break
		}
		out = append(out, c)
	}
	return out
}

func sortCands(c []cand) {
	slices.SortFunc(c, func(a, b cand) int {
		if a.d != b.d {
			return cmp.Compare(a.d, b.d)
		}
		return cmp.Compare(a.id, b.id)
	})
}

// Add inserts or replaces the vector of key (v's length must be the index's).
func (h *hnsw) Add(key int64, v []float32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.add(key, normalised(v))
}

func (h *hnsw) add(key int64, v []float32) {
	if old, ok := h.byKey[key]; ok {
		h.dead[old] = true
		h.ndead++
	}
	id := int32(len(h.keys))
	h.keys = append(h.keys, key)
	h.vecs = append(h.vecs, v...)
	h.dead = append(h.dead, false)
	h.byKey[key] = id
	level := int(math.Floor(-math.Log(1-h.rng.Float64()) * h.ml))
	h.links = append(h.links, make([][]int32, level+1))
	if h.entry < 0 {
		h.entry, h.top = id, level
		return
	}
	ep := h.greedy(v, level)
	eps := []cand{ep}
	for l := min(level, h.top); l >= 0; l-- {
		cands := h.searchLayer(v, eps, h.p.EfConstruction, l)
		sortCands(cands)
		m := h.p.M
		if l == 0 {
			m = 2 * h.p.M
		}
		sel := h.selectNeighbours(cands, h.p.M)
		links := make([]int32, len(sel), m+1)
		for i, s := range sel {
			links[i] = s.id
		}
		h.links[id][l] = links
		for _, s := range sel {
			h.link(s.id, id, s.d, l, m)
		}
		eps = cands
	}
	if level > h.top {
		h.entry, h.top = id, level
	}
}

// link adds to a node's links on a layer, pruning them back to m by the heuristic.
func (h *hnsw) link(from, to int32, d float32, layer, m int) {
	ls := append(h.links[from][layer], to)
	if len(ls) <= m {
		h.links[from][layer] = ls
		return
	}
	base := h.vec(from)
	cands := make([]cand, len(ls))
	for i, n := range ls {
		cands[i] = cand{n, 1 - dot(base, h.vec(n))}
	}
	sortCands(cands)
	sel := h.selectNeighbours(cands, m)
	ls = ls[:0]
	for _, s := range sel {
		ls = append(ls, s.id)
	}
	h.links[from][layer] = ls
}

// Remove drops key; it reports whether it was there.
func (h *hnsw) Remove(key int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	id, ok := h.byKey[key]
	if !ok {
		return false
	}
	delete(h.byKey, key)
	h.dead[id] = true
	h.ndead++
	return true
}

// Stale reports whether tombstones are more than a quarter of the nodes (and more than
// a thousand): time to rebuild the graph from the live vectors, so that removed ones
// stop costing memory and search time.
func (h *hnsw) Stale() bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.ndead >= 1000 && h.ndead*4 >= len(h.keys)
}

// Search returns up to k live keys closest to q, closest first, with their cosine
// distances, keeping ef (at least k) candidates on the bottom layer.
func (h *hnsw) Search(q []float32, k, ef int) ([]int64, []float32) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.entry < 0 || len(q) != h.dims {
		return nil, nil
	}
	q = normalised(q)
	ef = max(ef, k)
	ep := h.greedy(q, 0)
	cands := h.searchLayer(q, []cand{ep}, ef, 0)
	sortCands(cands)
	keys := make([]int64, 0, k)
	ds := make([]float32, 0, k)
	for _, c := range cands {
		if len(keys) == k {
			break
		}
		if h.dead[c.id] {
			continue
		}
		keys = append(keys, h.keys[c.id])
		ds = append(ds, c.d)
	}
	return keys, ds
}

// Bytes estimates the index's memory: vectors, links and the key map.
func (h *hnsw) Bytes() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 4*len(h.vecs) + 9*len(h.keys) + 48*len(h.byKey)
	for _, ls := range h.links {
		n += 24
		for _, l := range ls {
			n += 24 + 4*cap(l)
		}
	}
	return n
}
