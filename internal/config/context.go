package config

import (
	"net/url"
	"path/filepath"
	"slices"
	"strings"
)

// Context configures memory, the knowledge base and tool search ([context]).
type Context struct {
	// Store is "" (SQLite + sqlite-vec in data_dir) or a "postgres://..." URL (pgvector).
	Store string `toml:"store"`
	// Embedder is "builtin" (the default, offline), "openai" or "ollama".
	Embedder string `toml:"embedder"`
	// EmbedderURL is the OpenAI-compatible /v1/embeddings or Ollama endpoint (or the
	// server's base URL); required for openai and ollama.
	EmbedderURL   string `toml:"embedder_url"`
	EmbedderModel string `toml:"embedder_model"`
	// EmbedderKey is sent as a bearer token; write it "env:NAME".
	EmbedderKey string `toml:"embedder_key"`
	// KnowledgeRetention removes long-term and shared memories and knowledge older than
	// this ("" or 0: kept until deleted).
	KnowledgeRetention Duration `toml:"knowledge_retention"`
	// IngestRoots are the directories symbi__knowledge_ingest and `symbi kb ingest` may
	// read files from; none: no files.
	IngestRoots []string `toml:"ingest_roots"`
	// ChunkChars is the chunk size of ingested documents in bytes (0: 1200).
	ChunkChars int `toml:"chunk_chars"`
	// Quantize is "" (exact vectors) or "int8": the SQLite store also keeps int8 vectors,
	// scans them first and reranks the best candidates exactly.
	Quantize string `toml:"quantize"`
	// Index is "exact" (the default: every search scans its collection) or "hnsw": an
	// approximate nearest-neighbour index (in memory for SQLite, pgvector's HNSW for
	// PostgreSQL), tuned by the HNSW* fields (0: the defaults).
	Index              string `toml:"index"`
	HNSWM              int    `toml:"hnsw_m"`
	HNSWEfConstruction int    `toml:"hnsw_ef_construction"`
	HNSWEfSearch       int    `toml:"hnsw_ef_search"`
	// ToolsList is "all" (the default: tools/list shows every tool the caller may see) or
	// "search" (only symbi's built-in tools; upstream tools are found with
	// symbi__tools_search and called by name or through symbi__tools_call).
	ToolsList string `toml:"tools_list"`
}

// DefaultEmbedder is the embedder of an unset context.embedder.
const DefaultEmbedder = "builtin"

// EmbedderKind is the embedder in force: Embedder, or DefaultEmbedder when unset.
func (c *Context) EmbedderKind() string {
	if c.Embedder == "" {
		return DefaultEmbedder
	}
	return c.Embedder
}

func (c *Context) validate(add func(key, format string, args ...any)) {
	if c.Store != "" && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
		add("context.store", `must be "" (SQLite in data_dir) or a postgres:// URL`)
	}
	kind := c.EmbedderKind()
	if !slices.Contains([]string{"builtin", "openai", "ollama"}, kind) {
		add("context.embedder", `must be "builtin", "openai" or "ollama" (got %q)`, kind)
	}
	if kind == "builtin" {
		for key, v := range map[string]string{"context.embedder_url": c.EmbedderURL, "context.embedder_model": c.EmbedderModel, "context.embedder_key": c.EmbedderKey} {
			if v != "" {
				add(key, "applies only to the openai and ollama embedders")
			}
		}
	} else if kind == "openai" || kind == "ollama" {
		if u, err := url.Parse(c.EmbedderURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("context.embedder_url", "must be an http or https URL for the %s embedder", kind)
		}
		if c.EmbedderModel == "" {
			add("context.embedder_model", "is required for the %s embedder", kind)
		}
	}
	if c.KnowledgeRetention.Duration < 0 {
		add("context.knowledge_retention", "must not be negative")
	}
	for i, r := range c.IngestRoots {
		// Relative roots are resolved against the configuration file (ResolvePaths).
		if strings.TrimSpace(r) == "" {
			add("context.ingest_roots", "entry %d is empty", i)
		} else if filepath.Clean(r) == "/" {
			add("context.ingest_roots", "entry %d is the whole filesystem; name the directories clients may read", i)
		}
	}
	switch {
	case c.Quantize != "" && c.Quantize != "int8":
		add("context.quantize", `must be "" or "int8" (got %q)`, c.Quantize)
	case c.Quantize != "" && c.Store != "":
		add("context.quantize", "applies only to the SQLite store (context.store = \"\")")
	}
	c.validateIndex(add)
	if c.ToolsList != "" && c.ToolsList != "all" && c.ToolsList != "search" {
		add("context.tools_list", `must be "all" or "search" (got %q)`, c.ToolsList)
	}
	if c.ChunkChars != 0 && (c.ChunkChars < 200 || c.ChunkChars > 20000) {
		add("context.chunk_chars", "must be between 200 and 20000 (got %d)", c.ChunkChars)
	}
}

// validateIndex checks index and the HNSW parameters (pgvector's limits, which the
// in-memory index shares).
func (c *Context) validateIndex(add func(key, format string, args ...any)) {
	if c.Index != "" && c.Index != "exact" && c.Index != "hnsw" {
		add("context.index", `must be "exact" or "hnsw" (got %q)`, c.Index)
	}
	for _, p := range []struct {
		key    string
		v      int
		lo, hi int
	}{
		{"context.hnsw_m", c.HNSWM, 2, 100},
		{"context.hnsw_ef_construction", c.HNSWEfConstruction, 4, 1000},
		{"context.hnsw_ef_search", c.HNSWEfSearch, 1, 1000},
	} {
		switch {
		case p.v == 0:
		case c.Index != "hnsw":
			add(p.key, `applies only to index = "hnsw"`)
		case p.v < p.lo || p.v > p.hi:
			add(p.key, "must be between %d and %d (got %d)", p.lo, p.hi, p.v)
		}
	}
	if c.Index == "hnsw" && c.HNSWEfConstruction != 0 && c.HNSWEfConstruction < 2*max(c.HNSWM, 16) {
		add("context.hnsw_ef_construction", "must be at least twice hnsw_m (%d)", max(c.HNSWM, 16))
	}
}
