package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/policy"
	"github.com/symbi-dev/symbi/rag"
)

// Policy actions of the context features. Every store, recall, ingest and search is
// asked as one of them, with input.context = {"kind": ..., "scope": own|shared|knowledge}.
const (
	actionContextRead  = "context/read"
	actionContextWrite = "context/write"
)

// contextFeature serves memory, the knowledge base, RAG and tool search as symbi__* tools
// and symbi:// resources.
type contextFeature struct {
	eng   *rag.Engine
	gw    *gateway.Gateway
	pol   policy.Engine
	trail *audit.Log
	log   *slog.Logger
}

// newContextEngine opens the context engine the configuration asks for, on db's SQLite.
func newContextEngine(ctx context.Context, cfg config.Context, st rag.Store, log *slog.Logger) (*rag.Engine, error) {
	var emb rag.Embedder = rag.Builtin{}
	if k := cfg.EmbedderKind(); k != "builtin" {
		r, err := rag.NewRemote(rag.RemoteOptions{Kind: k, URL: cfg.EmbedderURL, Model: cfg.EmbedderModel, APIKey: cfg.EmbedderKey, Logger: log})
		if err != nil {
			return nil, err
		}
		emb = r
	}
	return rag.NewEngine(rag.Options{Store: st, Embedder: emb, Logger: log, ChunkChars: cfg.ChunkChars,
		Retention: cfg.KnowledgeRetention.Duration, Roots: cfg.IngestRoots})
}

// openContextStore opens the configured vector store: PostgreSQL with pgvector for a
// postgres:// URL, else the embedded SQLite store in db (which the caller owns).
func openContextStore(ctx context.Context, cfg config.Context, db *sql.DB, log *slog.Logger) (rag.Store, error) {
	hnsw := rag.HNSWParams{M: cfg.HNSWM, EfConstruction: cfg.HNSWEfConstruction, EfSearch: cfg.HNSWEfSearch}
	if cfg.Store != "" {
		st, err := rag.NewPostgresWith(ctx, cfg.Store, rag.PostgresOptions{Index: cfg.Index, HNSW: hnsw})
		if err != nil {
			return nil, fmt.Errorf("context.store: %w", err)
		}
		return st, nil
	}
	return rag.NewSQLiteWith(ctx, db, rag.SQLiteOptions{Quantize: cfg.Quantize, Index: cfg.Index, HNSW: hnsw, Logger: log})
}

// endWorkingMemory drops an identity's working memory at the end of its agent run.
func (rt *runtime) endWorkingMemory(ctx context.Context, identity string) {
	if rt.context == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := rt.context.eng.EndWorking(ctx, identity); err != nil {
		rt.context.log.Error("drop working memory", "identity", identity, "err", err)
	}
}

// maintain enforces expiry and retention every few minutes until ctx ends.
func (f *contextFeature) maintain(ctx context.Context) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		if n, err := f.eng.Maintain(ctx); err != nil && ctx.Err() == nil {
			f.log.Error("maintain context store", "err", err)
		} else if n > 0 {
			f.log.Info("context store maintained", "removed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func hashOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(h[:])
}

// decide asks the policy about a context operation and records the decision; detail
// carries hashes and ids, never content.
func (f *contextFeature) decide(ctx context.Context, action, kind, scope string, detail map[string]string) error {
	r, ok := gateway.RequestFrom(ctx)
	if !ok || r.Identity.ID == "" {
		return errors.New("no identity for this request")
	}
	d, err := f.pol.Decide(ctx, &policy.Input{Action: action, Identity: policy.Identity{ID: r.Identity.ID, Kind: r.Identity.Kind, Claims: r.Identity.Claims},
		Extra: map[string]any{"context": map[string]any{"kind": kind, "scope": scope}}})
	if err != nil {
		f.log.Error("evaluate policy", "action", action, "err", err)
	}
	if detail == nil {
		detail = map[string]string{}
	}
	detail["kind"], detail["scope"] = kind, scope
	ev := audit.Event{Type: audit.TypeDecision, Action: action, Identity: r.Identity.ID, IdentityKind: r.Identity.Kind,
		Tool: r.Name, Decision: audit.Allow, Reason: d.Reason, Detail: detail}
	if !d.Allow {
		ev.Decision, ev.Outcome = audit.Deny, audit.OutcomeDenied
	}
	actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.trail.Append(actx, ev); err != nil {
		f.log.Error("append audit event", "err", err)
		return errors.New("audit trail unavailable") // fail closed: nothing unrecorded
	}
	if !d.Allow {
		reason := d.Reason
		if reason == "" {
			reason = "denied by policy"
		}
		return fmt.Errorf("%s %s memory: %s", action, kind, reason)
	}
	return nil
}

func scopeOf(k rag.Kind) string {
	if k == rag.Shared {
		return "shared"
	}
	return "own"
}

// toolError is a failed tool call the client sees (IsError), not a protocol error.
func toolError(err error) *mcp.CallToolResult {
	r := &mcp.CallToolResult{IsError: true}
	r.Content = []mcp.Content{&mcp.TextContent{Text: err.Error()}}
	return r
}

type memoryStoreIn struct {
	Kind     string            `json:"kind" jsonschema:"short, long, working or shared"`
	Content  string            `json:"content" jsonschema:"what to remember"`
	Metadata map[string]string `json:"metadata,omitempty" jsonschema:"key/value labels to recall by"`
	TTL      string            `json:"ttl,omitempty" jsonschema:"lifetime such as 30m or 24h (default: short 24h, working 1h, long and shared none)"`
}

type memoryRecallIn struct {
	Query  string            `json:"query,omitempty" jsonschema:"what to recall, by meaning and words; empty: the newest"`
	Kind   string            `json:"kind,omitempty" jsonschema:"short, long, working or shared; empty: all you may read"`
	Filter map[string]string `json:"filter,omitempty" jsonschema:"metadata that must match"`
	Limit  int               `json:"limit,omitempty" jsonschema:"at most this many (default 10)"`
}

type memoryForgetIn struct {
	Kind string `json:"kind" jsonschema:"short, long, working or shared"`
	ID   string `json:"id" jsonschema:"the memory's id"`
}

type memoriesOut struct {
	Memories []rag.Memory `json:"memories"`
}

type forgetOut struct {
	Forgotten bool `json:"forgotten"`
}

type ingestIn struct {
	Text     string            `json:"text,omitempty" jsonschema:"the document text (or give uri or path)"`
	URI      string            `json:"uri,omitempty" jsonschema:"a resource of an upstream, read through symbi under policy"`
	Path     string            `json:"path,omitempty" jsonschema:"a file under one of the configured ingest roots"`
	Title    string            `json:"title,omitempty"`
	ID       string            `json:"id,omitempty" jsonschema:"document id; ingesting the same id again replaces the document"`
	Metadata map[string]string `json:"metadata,omitempty" jsonschema:"key/value labels to filter searches by"`
}

type searchIn struct {
	Query  string            `json:"query"`
	Limit  int               `json:"limit,omitempty" jsonschema:"at most this many (default 10)"`
	Filter map[string]string `json:"filter,omitempty" jsonschema:"metadata that must match"`
}

type passage struct {
	ID       string            `json:"id"`
	Doc      string            `json:"doc"`
	Text     string            `json:"text"`
	Score    float64           `json:"score"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type searchOut struct {
	Results []passage `json:"results"`
}

type deleteIn struct {
	ID string `json:"id" jsonschema:"document id"`
}

type deleteOut struct {
	Chunks int `json:"chunks_deleted"`
}

type ragIn struct {
	Question string            `json:"question"`
	Limit    int               `json:"limit,omitempty" jsonschema:"passages of context (default 5)"`
	Filter   map[string]string `json:"filter,omitempty"`
}

// ragSamplingID names symbi__rag_answer's sampling request among a call's input requests.
const ragSamplingID = "answer"

type ragOut struct {
	Answer    string    `json:"answer,omitempty"`
	Model     string    `json:"model,omitempty"`
	Citations []string  `json:"citations"`
	Context   []passage `json:"context"`
	Note      string    `json:"note,omitempty"`
}

type toolsSearchIn struct {
	Query string `json:"query" jsonschema:"what the tool should do"`
	Limit int    `json:"limit,omitempty" jsonschema:"at most this many (default 10)"`
}

type foundTool struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	InputSchema map[string]any `json:"inputSchema,omitempty"`
	Score       float64        `json:"score"`
}

type toolsCallIn struct {
	Name      string         `json:"name" jsonschema:"the tool's name, as symbi__tools_search returned it"`
	Arguments map[string]any `json:"arguments,omitempty" jsonschema:"the tool's arguments, as its inputSchema describes them"`
}

type toolsSearchOut struct {
	Tools []foundTool `json:"tools"`
}

func passages(hits []rag.Hit) []passage {
	out := []passage{}
	for _, h := range hits {
		out = append(out, passage{ID: h.ID, Doc: h.Doc, Text: h.Text, Score: h.Score, Metadata: h.Meta})
	}
	return out
}

// readableKinds are the memory kinds a recall covers: one asked for, or all the identity
// may read (shared only when the policy allows context/read).
func (f *contextFeature) readableKinds(ctx context.Context, kind string, detail map[string]string) ([]rag.Kind, error) {
	if kind != "" {
		k, err := rag.ParseKind(kind)
		if err != nil {
			return nil, err
		}
		if err := f.decide(ctx, actionContextRead, kind, scopeOf(k), detail); err != nil {
			return nil, err
		}
		return []rag.Kind{k}, nil
	}
	kinds := []rag.Kind{rag.Short, rag.Long, rag.Working}
	if err := f.decide(ctx, actionContextRead, "own", "own", detail); err != nil {
		return nil, err
	}
	if f.decide(ctx, actionContextRead, string(rag.Shared), "shared", detail) == nil {
		kinds = append(kinds, rag.Shared)
	}
	return kinds, nil
}

// readResource reads an upstream resource for the caller: the policy decides
// resources/read for it, and the read is recorded, as for a client's own read.
func (f *contextFeature) readResource(ctx context.Context, uri string) (string, error) {
	r, _ := gateway.RequestFrom(ctx)
	id := policy.Identity{ID: r.Identity.ID, Kind: r.Identity.Kind, Claims: r.Identity.Claims}
	d, err := f.pol.Decide(ctx, &policy.Input{Action: policy.ActionResourcesRead, Identity: id, Resource: &policy.Resource{URI: uri}})
	if err != nil {
		f.log.Error("evaluate policy", "action", policy.ActionResourcesRead, "err", err)
	}
	ev := audit.Event{Type: audit.TypeRead, Action: policy.ActionResourcesRead, Identity: id.ID, IdentityKind: id.Kind, Resource: uri,
		Decision: audit.Allow, Reason: d.Reason, Detail: map[string]string{"for": gateway.BuiltinPrefix + "__knowledge_ingest"}}
	var text string
	if !d.Allow {
		ev.Decision, ev.Outcome = audit.Deny, audit.OutcomeDenied
		err = fmt.Errorf("read %s: denied by policy: %s", uri, d.Reason)
	} else {
		res, up, ok, rerr := f.gw.ReadUpstreamResource(ctx, uri)
		ev.Upstream = up
		switch {
		case !ok:
			err = fmt.Errorf("read %s: no upstream serves this resource", uri)
		case rerr != nil:
			err = fmt.Errorf("read %s: %w", uri, rerr)
		default:
			var parts []string
			for _, c := range res.Contents {
				if c.Text != "" {
					parts = append(parts, c.Text)
				}
			}
			if text = strings.Join(parts, "\n\n"); text == "" {
				err = fmt.Errorf("read %s: the resource has no text content", uri)
			}
		}
		if err != nil {
			ev.Outcome, ev.Error = audit.OutcomeError, err.Error()
		} else {
			ev.Detail["content_sha256"] = hashOf(text)
		}
	}
	actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if aerr := f.trail.Append(actx, ev); aerr != nil {
		f.log.Error("append audit event", "err", aerr)
		return "", errors.New("audit trail unavailable")
	}
	return text, err
}

// addContextBuiltins registers the context tools and resources.
func addContextBuiltins(gw *gateway.Gateway, f *contextFeature) {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)}
	write := &mcp.ToolAnnotations{OpenWorldHint: new(false)}
	name := func(s string) string { return gateway.BuiltinPrefix + "__" + s }

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("memory_store"), Title: "Remember",
		Description: "Store a memory for yourself: short (recent, bounded, expires in 24h), long (persistent), working (for the current task, 1h) or shared (readable by the identities the policy allows). Recall it later by meaning or metadata.",
		Annotations: write,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in memoryStoreIn) (*mcp.CallToolResult, rag.Memory, error) {
		k, err := rag.ParseKind(in.Kind)
		if err != nil {
			return toolError(err), rag.Memory{}, nil
		}
		var ttl time.Duration
		if in.TTL != "" {
			if ttl, err = time.ParseDuration(in.TTL); err != nil || ttl <= 0 {
				return toolError(fmt.Errorf("ttl %q: want a positive duration such as 30m", in.TTL)), rag.Memory{}, nil
			}
		}
		if err := f.decide(ctx, actionContextWrite, in.Kind, scopeOf(k), map[string]string{"content_sha256": hashOf(in.Content)}); err != nil {
			return toolError(err), rag.Memory{}, nil
		}
		m, err := f.eng.Remember(ctx, callerIdentity(ctx), k, in.Content, in.Metadata, ttl)
		if err != nil {
			return toolError(err), rag.Memory{}, nil
		}
		m.Content = "" // the caller has it; the answer confirms id, kind and expiry
		return nil, m, nil
	})

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("memory_recall"), Title: "Recall",
		Description: "Recall your memories by meaning and words (query), by metadata (filter), or the newest. Without kind: your short, long and working memories and the shared ones you may read.",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in memoryRecallIn) (*mcp.CallToolResult, memoriesOut, error) {
		kinds, err := f.readableKinds(ctx, in.Kind, map[string]string{"query_sha256": hashOf(in.Query)})
		if err != nil {
			return toolError(err), memoriesOut{}, nil
		}
		ms, err := f.eng.Recall(ctx, callerIdentity(ctx), kinds, in.Query, in.Filter, in.Limit)
		if err != nil {
			return toolError(err), memoriesOut{}, nil
		}
		return nil, memoriesOut{Memories: append([]rag.Memory{}, ms...)}, nil
	})

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("memory_forget"), Title: "Forget",
		Description: "Delete one of your memories by kind and id (a shared memory only by the identity that stored it).",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(false)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in memoryForgetIn) (*mcp.CallToolResult, forgetOut, error) {
		k, err := rag.ParseKind(in.Kind)
		if err != nil {
			return toolError(err), forgetOut{}, nil
		}
		if err := f.decide(ctx, actionContextWrite, in.Kind, scopeOf(k), map[string]string{"forget": in.ID}); err != nil {
			return toolError(err), forgetOut{}, nil
		}
		ok, err := f.eng.Forget(ctx, callerIdentity(ctx), k, in.ID)
		if err != nil {
			return toolError(err), forgetOut{}, nil
		}
		return nil, forgetOut{Forgotten: ok}, nil
	})

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("knowledge_ingest"), Title: "Add to the knowledge base",
		Description: "Add a document to the shared knowledge base from text, from an upstream resource (uri, read through symbi under policy) or from a file under an ingest root (path). It is cut into chunks at paragraphs and code blocks. The same id again replaces the document.",
		Annotations: write,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in ingestIn) (*mcp.CallToolResult, rag.DocInfo, error) {
		n := 0
		for _, s := range []string{in.Text, in.URI, in.Path} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			return toolError(errors.New("give exactly one of text, uri and path")), rag.DocInfo{}, nil
		}
		doc := rag.Document{ID: in.ID, Title: in.Title, Text: in.Text, Metadata: in.Metadata}
		var err error
		switch {
		case in.URI != "":
			doc.Source = in.URI
			doc.Text, err = f.readResource(ctx, in.URI)
		case in.Path != "":
			doc.Source = in.Path
			doc.Text, err = f.eng.ReadFile(in.Path)
		}
		if err != nil {
			return toolError(err), rag.DocInfo{}, nil
		}
		if err := f.decide(ctx, actionContextWrite, "knowledge", "knowledge", map[string]string{"content_sha256": hashOf(doc.Text), "source": doc.Source}); err != nil {
			return toolError(err), rag.DocInfo{}, nil
		}
		info, err := f.eng.Ingest(ctx, doc)
		if err != nil {
			return toolError(err), rag.DocInfo{}, nil
		}
		return nil, info, nil
	})

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("knowledge_search"), Title: "Search the knowledge base",
		Description: "Find passages of the knowledge base by meaning and exact words (hybrid ranking), optionally only those whose metadata match filter.",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in searchIn) (*mcp.CallToolResult, searchOut, error) {
		if err := f.decide(ctx, actionContextRead, "knowledge", "knowledge", map[string]string{"query_sha256": hashOf(in.Query)}); err != nil {
			return toolError(err), searchOut{}, nil
		}
		hits, err := f.eng.Search(ctx, in.Query, in.Filter, in.Limit)
		if err != nil {
			return toolError(err), searchOut{}, nil
		}
		return nil, searchOut{Results: passages(hits)}, nil
	})

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("knowledge_delete"), Title: "Delete from the knowledge base",
		Description: "Delete a document (all its chunks) from the knowledge base by id.",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(false)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in deleteIn) (*mcp.CallToolResult, deleteOut, error) {
		if err := f.decide(ctx, actionContextWrite, "knowledge", "knowledge", map[string]string{"delete": in.ID}); err != nil {
			return toolError(err), deleteOut{}, nil
		}
		n, err := f.eng.DeleteDoc(ctx, in.ID)
		if err != nil {
			return toolError(err), deleteOut{}, nil
		}
		return nil, deleteOut{Chunks: n}, nil
	})

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("rag_answer"), Title: "Answer from the knowledge base",
		Description: "Answer a question from the knowledge base: the best passages are retrieved and, if your client supports sampling, your model is asked to answer citing them as [1], [2], ...; otherwise the ranked passages are returned.",
		Annotations: readOnly,
	}, func(ctx context.Context, req *mcp.CallToolRequest, in ragIn) (*mcp.CallToolResult, ragOut, error) {
		if err := f.decide(ctx, actionContextRead, "knowledge", "knowledge", map[string]string{"query_sha256": hashOf(in.Question)}); err != nil {
			return toolError(err), ragOut{}, nil
		}
		limit := in.Limit
		if limit <= 0 {
			limit = 5
		}
		hits, err := f.eng.Search(ctx, in.Question, in.Filter, limit)
		if err != nil {
			return toolError(err), ragOut{}, nil
		}
		out := ragOut{Context: passages(hits), Citations: []string{}}
		if len(hits) == 0 {
			out.Note = "the knowledge base has nothing on this question"
			return nil, out, nil
		}
		ss := req.Session
		if resp, ok := req.Params.InputResponses[ragSamplingID]; ok {
			// The client answered the sampling request this call returned before.
			switch res := resp.(type) {
			case *mcp.CreateMessageWithToolsResult: // how the SDK decodes every sampling answer
				var parts []string
				for _, c := range res.Content {
					if tc, ok := c.(*mcp.TextContent); ok {
						parts = append(parts, tc.Text)
					}
				}
				out.Answer, out.Model = strings.Join(parts, "\n"), res.Model
			case *mcp.CreateMessageResult:
				if tc, ok := res.Content.(*mcp.TextContent); ok {
					out.Answer = tc.Text
				}
				out.Model = res.Model
			default:
				out.Note = "the client's sampling answer is of the wrong kind; ranked context only"
				return nil, out, nil
			}
		} else {
			if ss == nil || ss.InitializeParams() == nil || ss.InitializeParams().Capabilities == nil || ss.InitializeParams().Capabilities.Sampling == nil {
				out.Note = "the client does not support sampling: ranked context only"
				return nil, out, nil
			}
			// Ask the client's model through sampling (a multi round-trip request: the SDK
			// sends it to older clients itself and calls this handler again with the answer).
			return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{ragSamplingID: &mcp.CreateMessageParams{
				MaxTokens: 1024, SystemPrompt: rag.AnswerSystemPrompt,
				Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: rag.AnswerPrompt(in.Question, hits)}}},
			}}}, ragOut{}, nil
		}
		for _, i := range rag.Cited(out.Answer, len(hits)) {
			out.Citations = append(out.Citations, hits[i].ID)
		}
		return nil, out, nil
	})

	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("tools_search"), Title: "Search tools",
		Description: "Find the upstream tools that best match what you want to do, among those you may use, by meaning and words in their names, descriptions and parameters.",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in toolsSearchIn) (*mcp.CallToolResult, toolsSearchOut, error) {
		r, ok := gateway.RequestFrom(ctx)
		if !ok {
			return toolError(errors.New("no identity for this request")), toolsSearchOut{}, nil
		}
		var docs []rag.ToolDoc
		desc, schemas := map[string]string{}, map[string]map[string]any{}
		for _, ti := range gw.ToolList() {
			if ti.Builtin || ti.Tool == nil {
				continue
			}
			schema, _ := json.Marshal(ti.Tool.InputSchema)
			docs = append(docs, rag.ToolDoc{Name: ti.Name, Title: ti.Tool.Title, Description: ti.Tool.Description, InputSchema: schema})
			var sm map[string]any
			_ = json.Unmarshal(schema, &sm)
			desc[ti.Name], schemas[ti.Name] = ti.Tool.Description, sm
		}
		if err := f.eng.SyncTools(ctx, docs); err != nil {
			return toolError(err), toolsSearchOut{}, nil
		}
		hits, err := f.eng.SearchTools(ctx, in.Query, in.Limit, func(n string) bool { return gw.ToolVisible(ctx, r.Identity, n) })
		if err != nil {
			return toolError(err), toolsSearchOut{}, nil
		}
		out := toolsSearchOut{Tools: []foundTool{}}
		for _, h := range hits {
			out.Tools = append(out.Tools, foundTool{Name: h.ID, Description: desc[h.ID], InputSchema: schemas[h.ID], Score: h.Score})
		}
		return nil, out, nil
	})

	// For clients that call only the tools they were listed (tools_list = "search"):
	// the call goes through the whole chain as the caller, as if made directly.
	gateway.AddBuiltinTool(gw, &mcp.Tool{Name: name("tools_call"), Title: "Call a found tool",
		Description: "Call an upstream tool that symbi__tools_search found, by name with its arguments; the result is the tool's own.",
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in toolsCallIn) (*mcp.CallToolResult, any, error) {
		r, ok := gateway.RequestFrom(ctx)
		if !ok {
			return toolError(errors.New("no identity for this request")), nil, nil
		}
		if strings.HasPrefix(in.Name, name("")) {
			return toolError(fmt.Errorf("%s calls upstream tools; call %s directly", name("tools_call"), in.Name)), nil, nil
		}
		args, err := json.Marshal(in.Arguments)
		if err != nil {
			return toolError(err), nil, nil
		}
		if in.Arguments == nil {
			args = []byte("{}")
		}
		res, err := gw.CallTool(ctx, r.Identity, in.Name, args)
		if err != nil {
			var ge *gateway.Error
			if errors.As(err, &ge) && ge.Public != "" {
				return toolError(errors.New(ge.Public)), nil, nil
			}
			return nil, nil, err
		}
		return res, nil, nil
	})

	for _, k := range rag.Kinds() {
		gw.AddBuiltinResource(&mcp.Resource{URI: "symbi://memory/" + string(k), Name: "memory-" + string(k), Title: "Your " + string(k) + " memory",
			Description: "Your newest " + string(k) + " memories (JSON).", MIMEType: "application/json",
		}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			if err := f.decide(ctx, actionContextRead, string(k), scopeOf(k), nil); err != nil {
				return nil, &gateway.Error{Kind: gateway.Denied, Public: err.Error()}
			}
			ms, err := f.eng.Recall(ctx, callerIdentity(ctx), []rag.Kind{k}, "", nil, 100)
			if err != nil {
				return nil, err
			}
			b, err := json.MarshalIndent(memoriesOut{Memories: append([]rag.Memory{}, ms...)}, "", "  ")
			if err != nil {
				return nil, err
			}
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: string(b)}}}, nil
		})
	}
	gw.AddBuiltinResourceTemplate(&mcp.ResourceTemplate{URITemplate: "symbi://knowledge/{id}", Name: "knowledge-document",
		Title: "Knowledge base document", Description: "A document of the knowledge base, its chunks joined (text).", MIMEType: "text/plain",
	}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		id := strings.TrimPrefix(req.Params.URI, "symbi://knowledge/")
		if err := f.decide(ctx, actionContextRead, "knowledge", "knowledge", map[string]string{"doc": id}); err != nil {
			return nil, &gateway.Error{Kind: gateway.Denied, Public: err.Error()}
		}
		cs, ok, err := f.eng.Doc(ctx, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, mcp.ResourceNotFoundError(req.Params.URI)
		}
		parts := make([]string, len(cs))
		for i, c := range cs {
			parts[i] = c.Text
		}
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: strings.Join(parts, "\n\n")}}}, nil
	})
}

// addContext opens the context store and engine and registers their tools.
func (rt *runtime) addContext(ctx context.Context, gw *gateway.Gateway, cfg config.Context, log *slog.Logger) error {
	st, err := openContextStore(ctx, cfg, rt.db, log)
	if err != nil {
		return err
	}
	rt.closers = append(rt.closers, st.Close)
	eng, err := newContextEngine(ctx, cfg, st, log)
	if err != nil {
		return fmt.Errorf("open context engine: %w", err)
	}
	rt.context = &contextFeature{eng: eng, gw: gw, pol: rt.policy, trail: rt.audit, log: log}
	addContextBuiltins(gw, rt.context)
	gw.ListBuiltinToolsOnly(cfg.ToolsList == "search")
	return nil
}
