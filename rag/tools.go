package rag

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// ToolDoc is what the tool index knows of one tool.
type ToolDoc struct {
	Name        string          `json:"name"`
	Title       string          `json:"title,omitempty"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"-"`
}

// text is what is embedded: the name's words, title, description and the parameters'
// names and descriptions.
func (t ToolDoc) text() string {
	var b strings.Builder
	b.WriteString(strings.Join(Words(t.Name), " "))
	for _, s := range []string{t.Title, t.Description} {
		if s != "" {
			b.WriteString("\n" + s)
		}
	}
	var schema struct {
		Properties map[string]struct {
			Description string `json:"description"`
		} `json:"properties"`
	}
	if json.Unmarshal(t.InputSchema, &schema) == nil {
		names := make([]string, 0, len(schema.Properties))
		for n := range schema.Properties {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			b.WriteString("\n" + n + ": " + schema.Properties[n].Description)
		}
	}
	return b.String()
}

// SyncTools makes the tool index hold exactly tools: new and changed ones are embedded,
// gone ones removed. Safe to call on every change of the tool set.
func (e *Engine) SyncTools(ctx context.Context, tools []ToolDoc) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tools == nil {
		all, err := e.store.List(ctx, Query{Collection: CollTools, Limit: -1})
		if err != nil {
			return fmt.Errorf("load tool index: %w", err)
		}
		e.tools = map[string]string{}
		for _, c := range all {
			e.tools[c.ID] = c.Meta["hash"]
		}
	}
	want := map[string]bool{}
	var todo []Chunk
	var texts []string
	for _, t := range tools {
		want[t.Name] = true
		text := t.text()
		h := docID(e.emb.Name() + "\x00" + text)
		if e.tools[t.Name] == h {
			continue
		}
		todo = append(todo, Chunk{Collection: CollTools, ID: t.Name, Text: text, Meta: map[string]string{"hash": h}, Created: e.now()})
		texts = append(texts, text)
	}
	if len(todo) > 0 {
		vecs, err := e.embed(ctx, texts)
		if err != nil {
			return fmt.Errorf("index tools: %w", err)
		}
		for i := range todo {
			todo[i].Vector = vecs[i]
		}
		if err := e.store.Upsert(ctx, todo); err != nil {
			return fmt.Errorf("index tools: %w", err)
		}
		for _, c := range todo {
			e.tools[c.ID] = c.Meta["hash"]
		}
	}
	var gone []string
	for name := range e.tools {
		if !want[name] {
			gone = append(gone, name)
		}
	}
	if _, err := e.store.Delete(ctx, CollTools, gone...); err != nil {
		return fmt.Errorf("index tools: %w", err)
	}
	for _, n := range gone {
		delete(e.tools, n)
	}
	return nil
}

// SearchTools returns the names of the indexed tools that best match query, best first,
// keeping only those visible accepts: a tool the caller may not see is never returned.
func (e *Engine) SearchTools(ctx context.Context, query string, limit int, visible func(name string) bool) ([]Hit, error) {
	if strings.TrimSpace(query) == "" {
		return nil, fmt.Errorf("%w: query is empty", ErrInvalid)
	}
	limit = limitOf(limit)
	qv, err := e.embedOne(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("search tools: %w", err)
	}
	hits, err := Hybrid(ctx, e.store, Query{Collection: CollTools, Vector: qv, Text: query, Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("search tools: %w", err)
	}
	out := hits[:0]
	for _, h := range hits {
		if visible(h.ID) {
			out = append(out, h)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}
