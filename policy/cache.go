package policy

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DecisionCacheSize is the number of decisions a [Rego] engine keeps. When it is full, a
// new decision evicts an old one chosen at random.
const DecisionCacheSize = 4096

// keyDepth bounds the input paths that key the decision cache: a policy that reads
// input.a.b.c.d is keyed on the whole of input.a.b.c.
const keyDepth = 3

// cacheShards spreads the cache over several locks so that concurrent decisions seldom
// wait for each other.
const cacheShards = 16

// CacheInfo describes the decision cache of a [Rego] engine. A policy's decision is
// cached only when it is deterministic: it calls no built-in whose result depends on
// anything but its arguments (time.now_ns, http.send, rand.intn, ...). The cache key is
// the part of the input the policy reads (KeyPaths), so two requests that differ only in
// what the policy never looks at share a decision. Evaluation errors are never cached,
// and a reload compiles a new engine, which starts empty.
type CacheInfo struct {
	Cacheable bool     `json:"cacheable"`
	Reason    string   `json:"reason,omitempty"`    // why not, when Cacheable is false
	KeyPaths  []string `json:"key_paths,omitempty"` // e.g. input.identity.id; "input" is the whole input
	Capacity  int      `json:"capacity"`
	Entries   int      `json:"entries"`
	Hits      uint64   `json:"hits"`
	Misses    uint64   `json:"misses"`
}

// CacheInfo returns the state of the engine's decision cache.
func (e *Rego) CacheInfo() CacheInfo {
	info := CacheInfo{Reason: e.uncacheable, KeyPaths: slices.Clone(e.keyPaths)}
	if c := e.cache; c != nil {
		info.Cacheable = true
		info.Capacity = cacheShards * c.perShard
		for i := range c.shards {
			s := &c.shards[i]
			s.mu.RLock()
			info.Entries += len(s.entries)
			s.mu.RUnlock()
			info.Hits += s.hits.Load()
			info.Misses += s.misses.Load()
		}
	}
	return info
}

// timeDependent are built-ins that read the clock without being marked non-deterministic
// by OPA: certificate verification checks validity against the current time.
var timeDependent = map[string]bool{
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// analyse decides whether the compiled policy can be cached and, if so, which parts of
// the input key it. It walks every rule of every module (imports are resolved to refs by
// then). reason is "" when the policy is cacheable.
func analyse(c *ast.Compiler) (key *keyNode, reason string) {
	names := make([]string, 0, len(c.Modules))
	for name := range c.Modules {
		names = append(names, name)
	}
	sort.Strings(names)

	key = &keyNode{}
	var loc *ast.Location
	at := func() string {
		if loc == nil {
			return ""
		}
		return fmt.Sprintf(" (%s:%d)", loc.File, loc.Row)
	}
	checkCall := func(op ast.Ref) {
		if reason != "" {
			return
		}
		name := op.String()
		if _, ok := ast.BuiltinMap[name]; ok {
			return // non-deterministic built-ins are caught as refs, below
		}
		if op[0].Equal(ast.DefaultRootDocument) && len(c.GetRulesExact(op)) > 0 {
			return // a function of the policy: its body is walked too
		}
		reason = "calls unknown function " + name + at()
	}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if reason != "" {
			return true
		}
		switch x := x.(type) {
		case *ast.Expr:
			loc = x.Location
			if x.IsCall() {
				checkCall(x.Operator())
			}
		case ast.Call:
			if op, ok := x[0].Value.(ast.Ref); ok {
				checkCall(op)
			}
		case ast.Var:
			// input on its own, not as the head of a ref: the whole input is read.
			if x.Equal(ast.InputRootDocument.Value) {
				key.add(nil)
			}
		case ast.Ref:
			if x[0].Equal(ast.InputRootDocument) {
				key.add(inputPath(x))
				for _, t := range x[1:] { // input.a[input.b]
					vis.Walk(t)
				}
				return true
			}
			name := x.String()
			if b, ok := ast.BuiltinMap[name]; ok && (b.Nondeterministic || timeDependent[name]) {
				reason = "calls non-deterministic built-in " + name + at()
			} else if name == "print" || name == "internal.print" {
				reason = "calls " + name + at()
			}
		}
		return false
	})
	for _, name := range names {
		for _, r := range c.Modules[name].Rules {
			for ; r != nil; r = r.Else {
				vis.Walk(r.Head.Ref())
				vis.Walk(r)
			}
		}
	}
	if reason != "" {
		return nil, reason
	}
	key.finish()
	return key, ""
}

// inputPath returns the constant string prefix of a ref to input, at most keyDepth long.
// A variable (input[x]) or a non-string segment ends the prefix: what lies below it is
// read as a whole.
func inputPath(r ast.Ref) []string {
	var p []string
	for _, t := range r[1:] {
		s, ok := t.Value.(ast.String)
		if !ok || len(p) == keyDepth {
			break
		}
		p = append(p, string(s))
	}
	return p
}

// keyNode is a tree of the input paths a policy reads. A whole node keys on the entire
// value found there; otherwise on its children's projections.
type keyNode struct {
	whole bool
	kids  map[string]*keyNode // while building

	names    []*ast.Term // after finish: child keys, sorted
	children []*keyNode
}

func (n *keyNode) add(path []string) {
	for _, seg := range path {
		if n.whole {
			return
		}
		if n.kids == nil {
			n.kids = map[string]*keyNode{}
		}
		k := n.kids[seg]
		if k == nil {
			k = &keyNode{}
			n.kids[seg] = k
		}
		n = k
	}
	n.whole, n.kids = true, nil
}

func (n *keyNode) finish() {
	keys := make([]string, 0, len(n.kids))
	for k := range n.kids {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		child := n.kids[k]
		child.finish()
		n.names = append(n.names, ast.StringTerm(k))
		n.children = append(n.children, child)
	}
	n.kids = nil
}

// paths lists the paths of the tree as Rego refs: input.identity.id, or input for the
// whole input.
func (n *keyNode) paths(prefix string, out []string) []string {
	if n.whole {
		return append(out, prefix)
	}
	for i, k := range n.names {
		out = n.children[i].paths(prefix+"."+string(k.Value.(ast.String)), out)
	}
	return out
}

// encode appends to b an encoding of the part of v that the tree reads. The encoding is
// exact (numbers keep their spelling: Rego compares 1 and 1.0 equal, but json.marshal
// tells them apart) and unambiguous (tagged, with lengths), so two inputs share a key
// only if the policy sees the same values in them. A value that is not an object where
// the tree expects one is encoded whole: sets and strings can be indexed too, and keying
// on more than is read is always correct.
func (n *keyNode) encode(b []byte, v ast.Value) ([]byte, error) {
	obj, ok := v.(ast.Object)
	if n.whole || !ok {
		return encodeValue(b, v)
	}
	b = append(b, '{')
	for i, k := range n.names {
		t := obj.Get(k)
		if t == nil {
			continue
		}
		b = encodeString(b, k.Value.(ast.String))
		var err error
		if b, err = n.children[i].encode(b, t.Value); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

func encodeString(b []byte, s ast.String) []byte {
	b = append(b, 's')
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeValue appends an exact encoding of a ground value; objects and sets in sorted
// order, so that equal values encode alike.
func encodeValue(b []byte, v ast.Value) ([]byte, error) {
	var err error
	switch x := v.(type) {
	case ast.Null:
		return append(b, 'n'), nil
	case ast.Boolean:
		if x {
			return append(b, 't'), nil
		}
		return append(b, 'f'), nil
	case ast.Number:
		b = append(b, 'd')
		b = append(b, x...)
		return append(b, ';'), nil
	case ast.String:
		return encodeString(b, x), nil
	case *ast.Array:
		b = append(b, '[')
		for i := range x.Len() {
			if b, err = encodeValue(b, x.Elem(i).Value); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case ast.Set:
		b = append(b, '<')
		if b, err = encodeValue(b, x.Sorted()); err != nil {
			return nil, err
		}
		return append(b, '>'), nil
	case ast.Object:
		b = append(b, '{')
		for _, k := range x.Keys() { // sorted
			if b, err = encodeValue(b, k.Value); err != nil {
				return nil, err
			}
			if b, err = encodeValue(b, x.Get(k).Value); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("%s in the input is not data", ast.ValueName(v))
}

// decisionCache maps cache keys (encodings of the part of the input a policy reads) to
// decisions. Stored decisions are never modified; they are copied on the way out.
type decisionCache struct {
	key *keyNode
	// top holds the top-level input fields the key reads; nil when it reads the whole
	// input.
	top      map[string]bool
	perShard int
	seed     maphash.Seed
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu      sync.RWMutex
	entries map[string]Decision
	hits    atomic.Uint64
	misses  atomic.Uint64
	_       [64]byte // keep shards on separate cache lines
}

func newDecisionCache(key *keyNode, capacity int) *decisionCache {
	c := &decisionCache{key: key, perShard: max(1, capacity/cacheShards), seed: maphash.MakeSeed()}
	if !key.whole {
		c.top = make(map[string]bool, len(key.names))
		for _, n := range key.names {
			c.top[string(n.Value.(ast.String))] = true
		}
	}
	for i := range c.shards {
		c.shards[i].entries = make(map[string]Decision)
	}
	return c
}

// keyFor appends the cache key of input to buf. ok is false if the input cannot be keyed
// (a lazily converted argument that does not convert, a value that is not data): the
// caller evaluates without the cache, and the evaluation reports the problem if the
// policy reads it.
func (c *decisionCache) keyFor(buf []byte, input ast.Value) (key []byte, ok bool) {
	defer func() {
		if recover() != nil {
			key, ok = nil, false
		}
	}()
	key, err := c.key.encode(buf, input)
	return key, err == nil
}

func (c *decisionCache) shard(key []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, key)%cacheShards]
}

func (c *decisionCache) get(key []byte) (Decision, bool) {
	s := c.shard(key)
	s.mu.RLock()
	d, ok := s.entries[string(key)]
	s.mu.RUnlock()
	if !ok {
		s.misses.Add(1)
		return Decision{}, false
	}
	s.hits.Add(1)
	return d.clone(), true
}

// put stores a copy of d, so that the caller who is handed d cannot change the entry.
func (c *decisionCache) put(key []byte, d Decision) {
	d = d.clone()
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[string(key)]; ok {
		return // another caller stored it meanwhile
	}
	if len(s.entries) >= c.perShard {
		for k := range s.entries { // map iteration starts at a random entry
			delete(s.entries, k)
			break
		}
	}
	s.entries[string(key)] = d
}

// clone returns a copy of d that shares no memory with it.
func (d Decision) clone() Decision {
	if d.Conditions == nil {
		return d
	}
	n := 0
	for _, c := range d.Conditions {
		n += len(c.Paths)
	}
	conds := slices.Clone(d.Conditions)
	var paths []string
	if n > 0 {
		paths = make([]string, 0, n)
	}
	for i := range conds {
		if p := conds[i].Paths; p != nil {
			start := len(paths)
			paths = append(paths, p...)
			conds[i].Paths = paths[start:len(paths):len(paths)]
		}
	}
	d.Conditions = conds
	return d
}

// describeKey renders the key paths for CacheInfo.
func describeKey(n *keyNode) []string {
	if n == nil {
		return nil
	}
	out := n.paths("input", nil)
	if len(out) == 0 {
		return []string{} // the policy reads no input: one decision for all
	}
	return out
}
