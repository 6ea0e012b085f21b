package rag

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Collections.
const (
	CollKnowledge = "knowledge"
	CollTools     = "tools"
	collMemory    = "memory/"
)

// Kind is a kind of memory.
type Kind string

// The memory kinds, as in the Symbiont runtime.
const (
	Short   Kind = "short"   // recent, bounded, expiring
	Long    Kind = "long"    // persistent (subject to retention)
	Working Kind = "working" // per task or agent run; dropped at its end
	Shared  Kind = "shared"  // one pool, readable and writable as the policy allows
)

// Kinds lists the memory kinds.
func Kinds() []Kind { return []Kind{Short, Long, Working, Shared} }

// ParseKind checks a kind name.
func ParseKind(s string) (Kind, error) {
	k := Kind(s)
	if slices.Contains(Kinds(), k) {
		return k, nil
	}
	return "", fmt.Errorf("%w: memory kind %q: want short, long, working or shared", ErrInvalid, s)
}

// MemoryCollection is where an identity's memories of a kind are kept; shared memory is
// one collection for everyone.
func MemoryCollection(identity string, k Kind) string {
	if k == Shared {
		return collMemory + string(Shared)
	}
	return collMemory + string(k) + "/" + identity
}

// Options configures an Engine.
type Options struct {
	Store    Store    // required
	Embedder Embedder // nil: Builtin
	Logger   *slog.Logger
	// ChunkChars is the chunk size of ingested documents (0: DefaultChunkChars).
	ChunkChars int
	// ShortLimit is how many short-term memories an identity keeps (0: 100); the oldest
	// go first.
	ShortLimit int
	// ShortTTL and WorkingTTL are the default lifetimes of those kinds (0: 24h and 1h).
	ShortTTL, WorkingTTL time.Duration
	// Retention removes long-term and shared memories and knowledge older than this
	// (0: kept until deleted).
	Retention time.Duration
	// Roots are the directories files may be ingested from; none: no files.
	Roots []string
	// MaxDocBytes bounds one ingested document (0: 8 MiB).
	MaxDocBytes int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Engine is memory, the knowledge base and the tool index over one Store.
type Engine struct {
	o     Options
	store Store
	emb   Embedder
	log   *slog.Logger
	now   func() time.Time

	mu    sync.Mutex
	tools map[string]string // indexed tool name -> hash of what was embedded; nil until loaded
}

// NewEngine returns an engine; opts.Store is required.
func NewEngine(opts Options) (*Engine, error) {
	o := opts
	if o.Store == nil {
		return nil, errors.New("create context engine: no store")
	}
	if o.Embedder == nil {
		o.Embedder = Builtin{}
	}
	if o.ShortLimit <= 0 {
		o.ShortLimit = 100
	}
	if o.ShortTTL <= 0 {
		o.ShortTTL = 24 * time.Hour
	}
	if o.WorkingTTL <= 0 {
		o.WorkingTTL = time.Hour
	}
	if o.MaxDocBytes <= 0 {
		o.MaxDocBytes = 8 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var roots []string
	for _, r := range o.Roots {
		abs, err := filepath.Abs(r)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("create context engine: ingest root %s: %w", r, err)
		}
		roots = append(roots, abs)
	}
	o.Roots = roots
	return &Engine{o: o, store: o.Store, emb: o.Embedder, log: log, now: o.Now}, nil
}

// Store returns the engine's store.
func (e *Engine) Store() Store { return e.store }

// Embedder returns the engine's embedder.
func (e *Engine) Embedder() Embedder { return e.emb }

func (e *Engine) embed(ctx context.Context, texts []string) ([][]float32, error) {
	vecs, err := e.emb.Embed(ctx, texts)
	if err != nil {
		return nil, err
	}
	if len(vecs) != len(texts) {
		return nil, fmt.Errorf("embed texts: %d vectors for %d texts", len(vecs), len(texts))
	}
	return vecs, nil
}

func (e *Engine) embedOne(ctx context.Context, text string) ([]float32, error) {
	v, err := e.embed(ctx, []string{text})
	if err != nil {
		return nil, err
	}
	return v[0], nil
}

// checkText refuses empty or oversized text and invalid UTF-8.
func (e *Engine) checkText(what, s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(s) > e.o.MaxDocBytes:
		return fmt.Errorf("%w: %s has %d bytes, at most %d", ErrInvalid, what, len(s), e.o.MaxDocBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	return nil
}

// Memory is one remembered item.
type Memory struct {
	ID       string            `json:"id"`
	Kind     Kind              `json:"kind"`
	Content  string            `json:"content"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Created  time.Time         `json:"created"`
	Expires  time.Time         `json:"expires,omitzero"`
	Owner    string            `json:"owner,omitempty"` // shared memories: who stored it
	Score    float64           `json:"score,omitempty"`
}

// Remember stores a memory of identity. ttl 0 takes the kind's default (short, working)
// or none (long, shared).
func (e *Engine) Remember(ctx context.Context, identity string, k Kind, content string, meta map[string]string, ttl time.Duration) (Memory, error) {
	if _, err := ParseKind(string(k)); err != nil {
		return Memory{}, err
	}
	if identity == "" {
		return Memory{}, fmt.Errorf("%w: no identity", ErrInvalid)
	}
	if err := e.checkText("content", content); err != nil {
		return Memory{}, err
	}
	if ttl < 0 {
		return Memory{}, fmt.Errorf("%w: ttl is negative", ErrInvalid)
	}
	if err := CheckMeta(meta); err != nil {
		return Memory{}, err
	}
	if ttl == 0 {
		switch k {
		case Short:
			ttl = e.o.ShortTTL
		case Working:
			ttl = e.o.WorkingTTL
		}
	}
	v, err := e.embedOne(ctx, content)
	if err != nil {
		return Memory{}, fmt.Errorf("remember: %w", err)
	}
	now := e.now()
	m := map[string]string{}
	for key, val := range meta {
		m[key] = val
	}
	if k == Shared {
		m["owner"] = identity
	}
	c := Chunk{Collection: MemoryCollection(identity, k), ID: uuid.NewString(), Text: content, Meta: m, Vector: v, Created: now}
	if ttl > 0 {
		c.Expires = now.Add(ttl)
	}
	if err := e.store.Upsert(ctx, []Chunk{c}); err != nil {
		return Memory{}, fmt.Errorf("remember: %w", err)
	}
	if k == Short {
		if err := e.trim(ctx, c.Collection, e.o.ShortLimit); err != nil {
			return Memory{}, err
		}
	}
	return memoryOf(k, c, 0), nil
}

// trim keeps the newest keep chunks of a collection.
func (e *Engine) trim(ctx context.Context, coll string, keep int) error {
	all, err := e.store.List(ctx, Query{Collection: coll, Limit: -1, Now: e.now()})
	if err != nil {
		return fmt.Errorf("trim memory: %w", err)
	}
	if len(all) <= keep {
		return nil
	}
	var old []string
	for _, c := range all[keep:] {
		old = append(old, c.ID)
	}
	if _, err := e.store.Delete(ctx, coll, old...); err != nil {
		return fmt.Errorf("trim memory: %w", err)
	}
	return nil
}

func memoryOf(k Kind, c Chunk, score float64) Memory {
	m := Memory{ID: c.ID, Kind: k, Content: c.Text, Metadata: c.Meta, Created: c.Created, Expires: c.Expires, Score: score}
	if k == Shared && c.Meta != nil {
		m.Owner = c.Meta["owner"]
		delete(m.Metadata, "owner")
		if len(m.Metadata) == 0 {
			m.Metadata = nil
		}
	}
	return m
}

// Recall finds identity's memories of the given kinds: by meaning and words when query is
// set, else the newest; filter narrows by metadata. The caller decides which kinds the
// identity may read (shared is up to the policy).
func (e *Engine) Recall(ctx context.Context, identity string, kinds []Kind, query string, filter map[string]string, limit int) ([]Memory, error) {
	if err := CheckMeta(filter); err != nil {
		return nil, err
	}
	limit = limitOf(limit)
	var qv []float32
	if strings.TrimSpace(query) != "" {
		var err error
		if qv, err = e.embedOne(ctx, query); err != nil {
			return nil, fmt.Errorf("recall: %w", err)
		}
	}
	var out []Memory
	for _, k := range kinds {
		q := Query{Collection: MemoryCollection(identity, k), Vector: qv, Text: query, Filter: filter, Limit: limit, Now: e.now()}
		if qv == nil {
			cs, err := e.store.List(ctx, q)
			if err != nil {
				return nil, fmt.Errorf("recall: %w", err)
			}
			for _, c := range cs {
				out = append(out, memoryOf(k, c, 0))
			}
			continue
		}
		hits, err := Hybrid(ctx, e.store, q)
		if err != nil {
			return nil, fmt.Errorf("recall: %w", err)
		}
		for _, h := range hits {
			out = append(out, memoryOf(k, h.Chunk, h.Score))
		}
	}
	slices.SortStableFunc(out, func(a, b Memory) int {
		if qv != nil && a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return b.Created.Compare(a.Created)
	})
	return out[:min(len(out), limit)], nil
}

// Forget deletes one memory; shared memories only by the identity that stored them.
func (e *Engine) Forget(ctx context.Context, identity string, k Kind, id string) (bool, error) {
	coll := MemoryCollection(identity, k)
	if k == Shared {
		c, ok, err := e.store.Get(ctx, coll, id)
		if err != nil || !ok {
			return false, err
		}
		if c.Meta["owner"] != identity {
			return false, fmt.Errorf("%w: shared memory %s was stored by another identity", ErrInvalid, id)
		}
	}
	n, err := e.store.Delete(ctx, coll, id)
	return n > 0, err
}

// EndWorking drops identity's working memory (at the end of a task or agent run).
func (e *Engine) EndWorking(ctx context.Context, identity string) error {
	all, err := e.store.List(ctx, Query{Collection: MemoryCollection(identity, Working), Limit: -1})
	if err != nil {
		return fmt.Errorf("drop working memory: %w", err)
	}
	_, err = e.store.Delete(ctx, MemoryCollection(identity, Working), chunkIDsOf(all)...)
	return err
}

func chunkIDsOf(cs []Chunk) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

// Maintain removes expired chunks and, with a retention, long-term and shared memories and
// knowledge older than it. Run it periodically.
func (e *Engine) Maintain(ctx context.Context) (int, error) {
	now := e.now()
	n, err := e.store.Purge(ctx, now)
	if err != nil || e.o.Retention <= 0 {
		return n, err
	}
	m, err := e.store.DeleteOlder(ctx, now.Add(-e.o.Retention), collMemory+string(Long)+"/", MemoryCollection("", Shared), CollKnowledge)
	return n + m, err
}

// Document is a knowledge base document to ingest.
type Document struct {
	ID       string            `json:"id,omitempty"` // "": derived from Source, or from the text
	Title    string            `json:"title,omitempty"`
	Source   string            `json:"source,omitempty"` // a path or URI it came from
	Text     string            `json:"-"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// DocInfo describes an ingested document.
type DocInfo struct {
	ID       string            `json:"id"`
	Title    string            `json:"title,omitempty"`
	Source   string            `json:"source,omitempty"`
	Chunks   int               `json:"chunks"`
	Bytes    int               `json:"bytes"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// docID is a short stable id.
func docID(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

var docIDForm = metaKey // ids share the metadata key form

// reserved metadata keys the knowledge base sets itself.
var reserved = []string{"title", "source", "chunk"}

// Ingest chunks, embeds and stores a document. A document ingested again under the same
// ID replaces the earlier version; searches see either the old or the new chunks of each
// position, and the old tail goes once the new version is in.
func (e *Engine) Ingest(ctx context.Context, d Document) (DocInfo, error) {
	if err := e.checkText("document text", d.Text); err != nil {
		return DocInfo{}, err
	}
	if err := CheckMeta(d.Metadata); err != nil {
		return DocInfo{}, err
	}
	for _, k := range reserved {
		if _, ok := d.Metadata[k]; ok {
			return DocInfo{}, fmt.Errorf("%w: metadata key %q is set by the knowledge base", ErrInvalid, k)
		}
	}
	id := d.ID
	switch {
	case id == "" && d.Source != "":
		id = docID(d.Source)
	case id == "":
		id = docID(d.Title + "\x00" + d.Text)
	case !docIDForm.MatchString(id):
		return DocInfo{}, fmt.Errorf("%w: document id %q: want [A-Za-z0-9_.-]{1,64}", ErrInvalid, id)
	}
	parts := Split(d.Text, e.o.ChunkChars)
	texts := make([]string, len(parts))
	for i, p := range parts {
		texts[i] = strings.TrimSpace(d.Title + "\n" + p) // the title gives every chunk its context
	}
	chunks := make([]Chunk, len(parts))
	now := e.now()
	for start := 0; start < len(parts); start += 256 {
		end := min(start+256, len(parts))
		vecs, err := e.embed(ctx, texts[start:end])
		if err != nil {
			return DocInfo{}, fmt.Errorf("ingest %s: %w", id, err)
		}
		for i := start; i < end; i++ {
			meta := map[string]string{"chunk": fmt.Sprint(i)}
			for k, v := range d.Metadata {
				meta[k] = v
			}
			if d.Title != "" {
				meta["title"] = d.Title
			}
			if d.Source != "" {
				meta["source"] = d.Source
			}
			chunks[i] = Chunk{Collection: CollKnowledge, ID: fmt.Sprintf("%s#%d", id, i), Doc: id, Text: parts[i], Meta: meta, Vector: vecs[i-start], Created: now}
		}
	}
	if err := e.store.Upsert(ctx, chunks); err != nil {
		return DocInfo{}, fmt.Errorf("ingest %s: %w", id, err)
	}
	old, err := e.store.List(ctx, Query{Collection: CollKnowledge, Doc: id, Limit: -1})
	if err != nil {
		return DocInfo{}, fmt.Errorf("ingest %s: %w", id, err)
	}
	var stale []string
	for _, c := range old {
		if chunkIndex(c) >= len(parts) {
			stale = append(stale, c.ID)
		}
	}
	if _, err := e.store.Delete(ctx, CollKnowledge, stale...); err != nil {
		return DocInfo{}, fmt.Errorf("ingest %s: %w", id, err)
	}
	return DocInfo{ID: id, Title: d.Title, Source: d.Source, Chunks: len(chunks), Bytes: len(d.Text), Metadata: d.Metadata}, nil
}

// ReadFile reads a file for ingestion; it must lie under one of the configured roots
// (after resolving symbolic links).
func (e *Engine) ReadFile(path string) (string, error) {
	if len(e.o.Roots) == 0 {
		return "", fmt.Errorf("%w: no ingest roots are configured", ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("%w: resolve %s: %v", ErrInvalid, path, err)
	}
	inside := false
	for _, r := range e.o.Roots {
		if rel, err := filepath.Rel(r, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			inside = true
			break
		}
	}
	if !inside {
		return "", fmt.Errorf("%w: %s is not under an ingest root", ErrInvalid, path)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if !st.Mode().IsRegular() || st.Size() > int64(e.o.MaxDocBytes) {
		return "", fmt.Errorf("%w: %s is not a regular file of at most %d bytes", ErrInvalid, path, e.o.MaxDocBytes)
	}
	b, err := os.ReadFile(abs)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return string(b), nil
}

// Search finds knowledge base chunks by meaning and words.
func (e *Engine) Search(ctx context.Context, query string, filter map[string]string, limit int) ([]Hit, error) {
	if strings.TrimSpace(query) == "" {
		return nil, fmt.Errorf("%w: query is empty", ErrInvalid)
	}
	qv, err := e.embedOne(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("search knowledge: %w", err)
	}
	return Hybrid(ctx, e.store, Query{Collection: CollKnowledge, Vector: qv, Text: query, Filter: filter, Limit: limit, Now: e.now()})
}

// Doc returns a document's chunks in order; ok is false if it has none.
func (e *Engine) Doc(ctx context.Context, id string) ([]Chunk, bool, error) {
	cs, err := e.store.List(ctx, Query{Collection: CollKnowledge, Doc: id, Limit: -1, Now: e.now()})
	if err != nil {
		return nil, false, fmt.Errorf("read document %s: %w", id, err)
	}
	slices.SortFunc(cs, func(a, b Chunk) int { return chunkIndex(a) - chunkIndex(b) })
	return cs, len(cs) > 0, nil
}

func chunkIndex(c Chunk) int {
	var n int
	_, _ = fmt.Sscan(c.Meta["chunk"], &n)
	return n
}

// DeleteDoc removes a document from the knowledge base.
func (e *Engine) DeleteDoc(ctx context.Context, id string) (int, error) {
	return e.store.DeleteDoc(ctx, CollKnowledge, id)
}
