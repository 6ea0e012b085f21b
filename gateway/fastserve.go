package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The client side of the tools/call fast path (issue 13). A POST to /mcp in an
// established 2025-11-25 streamable HTTP session whose body is one tools/call of a tool
// the upstream side of the fast path serves (fastcall.go) is answered here rather than
// by the go-sdk's streamable handler: the body's envelope is scanned in place
// (scanCall), the arguments stay the client's bytes, the chain runs as the SDK path runs
// it (g.middleware: metrics, audit, policy with its conditions, the caller's steps), and
// the response is written as the SDK writes it for that request: an SSE stream with the
// priming event and the response event, both recorded in the session's event store so a
// client can resume the stream with Last-Event-ID. The HTTP checks before it
// (authentication, Host and Origin, the in-flight byte limits, the message size) are the
// same handlers for both paths.
//
// Everything else takes the SDK's handler, with the request body intact: another
// method, a batch, a notification, any member the scanner does not know, a progress
// token, a task (params.task, which exactIDs moves into _meta), a _meta key of the protocol's own, headers the SDK would check
// (Mcp-Method and the like, Last-Event-ID), a protocol version other than 2025-11-25, an
// unknown session or one of another identity, a session whose client can answer
// elicitation or sampling (the upstream may ask mid-call, and the SDK sends that on the
// POST's stream), a built-in tool, an upstream the fast path does not serve, tracing
// on. Known differences from the SDK path, for the calls served here: a
// notifications/cancelled from the client is passed to the SDK as well, and also ends the
// call here (cancelCall); a roots/list or log message the upstream sends mid-call goes
// to the session's standalone stream (GET) rather than to this POST's stream; a request
// id in flight on the SDK path at the same time is not refused as a duplicate.

// fastSessions are the streamable HTTP sessions the client side of the fast path may
// serve: the identity that opened each and its ServerSession once looked up.
type fastSessions struct {
	g      *Gateway
	events mcp.EventStore
	off    bool

	mu       sync.Mutex
	sessions map[string]*fastSession
}

type fastSession struct {
	owner string // the user ID the session was opened with ("" = none)

	mu       sync.Mutex
	ss       *mcp.ServerSession
	inflight map[callKey]context.CancelFunc
}

// callKey is a request id of a call in flight.
type callKey struct {
	n   int64
	s   string
	str bool
}

func newFastSessions(g *Gateway, events mcp.EventStore) *fastSessions {
	return &fastSessions{g: g, events: events, off: g.opts.NoFastServe, sessions: map[string]*fastSession{}}
}

// opened records a session an initialize request opened, with its owner's user ID.
func (f *fastSessions) opened(id string, r *http.Request) {
	if f == nil || id == "" {
		return
	}
	owner := ""
	if ti := auth.TokenInfoFromContext(r.Context()); ti != nil {
		owner = ti.UserID
	}
	f.mu.Lock()
	f.sessions[id] = &fastSession{owner: owner, inflight: map[callKey]context.CancelFunc{}}
	f.mu.Unlock()
}

// gone forgets a session (closed by the client, expired).
func (f *fastSessions) gone(id string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	delete(f.sessions, id)
	f.mu.Unlock()
}

func (f *fastSessions) get(id string) *fastSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[id]
}

// session returns the ServerSession of id, looked up once.
func (f *fastSessions) session(fs *fastSession, id string) *mcp.ServerSession {
	fs.mu.Lock()
	ss := fs.ss
	fs.mu.Unlock()
	if ss != nil {
		return ss
	}
	for s := range f.g.server.Sessions() {
		if s.ID() == id {
			ss = s
			break
		}
	}
	if ss != nil {
		fs.mu.Lock()
		fs.ss = ss
		fs.mu.Unlock()
	}
	return ss
}

// serve answers r, a request of session sid, when it is a call the fast path serves,
// and reports whether it did; when it did not, r (and its body) are untouched.
func (f *fastSessions) serve(w http.ResponseWriter, r *http.Request, sid string) bool {
	if f == nil || f.off || r.Method != http.MethodPost {
		return false
	}
	g := f.g
	if g.opts.NoFastPath || g.tracer != nil {
		return false
	}
	body, ok := r.Body.(*releasingReader)
	if !ok || !plainCallHeaders(r.Header) {
		return false
	}
	env, ok := scanCall(body.b)
	if !ok {
		return false
	}
	fs := f.get(sid)
	if fs == nil {
		return false
	}
	ti := auth.TokenInfoFromContext(r.Context())
	if fs.owner != "" && (ti == nil || ti.UserID != fs.owner) {
		return false // the SDK refuses it
	}
	ss := f.session(fs, sid)
	if ss == nil {
		return false
	}
	ip := ss.InitializeParams()
	if ip == nil || ip.ProtocolVersion != "2025-11-25" || ip.Capabilities != nil && (ip.Capabilities.Elicitation != nil || ip.Capabilities.Sampling != nil) {
		return false
	}
	var meta mcp.Meta
	if env.meta != nil {
		if json.Unmarshal(env.meta, &meta) != nil {
			return false
		}
		for k := range meta {
			if k == "progressToken" || k == metaTaskKey || strings.HasPrefix(k, "io.modelcontextprotocol/") {
				return false
			}
		}
	}
	t, ok := g.Tool(env.name)
	if !ok || !g.fastUpstream(t) {
		return false
	}
	id, key := env.rpcID()
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	fs.mu.Lock()
	if _, dup := fs.inflight[key]; dup {
		fs.mu.Unlock()
		writeRPCError(w, http.StatusBadRequest, id, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest,
			Message: fmt.Sprintf("duplicate in-flight request ID %v", id.Raw())})
		return true
	}
	fs.inflight[key] = cancel
	fs.mu.Unlock()
	defer func() {
		fs.mu.Lock()
		delete(fs.inflight, key)
		fs.mu.Unlock()
	}()
	body.b = nil // the envelope's slices keep what is still needed
	g.fastServed.Add(1)

	// The stream, as the SDK opens it for a 2025-11-25 request with an event store:
	// headers, then the priming event.
	h := w.Header()
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Content-Type", "text/event-stream")
	h.Set("Connection", "keep-alive")
	stream := rand.Text()
	if err := f.events.Open(ctx, sid, stream); err != nil {
		http.Error(w, fmt.Sprintf("storing stream: %v", err), http.StatusInternalServerError)
		return true
	}
	if err := f.events.Append(ctx, sid, stream, nil); err != nil {
		g.log.Warn(fmt.Sprintf("Storing priming event: %v", err))
	}
	writeSSE(w, "prime", stream, 0, nil)

	res, err := g.serveCall(ctx, ss, r.Header, ti, &env, meta)
	data, err := encodeResponse(id, res, err)
	if err != nil {
		g.log.Error("fast path: encode response", "err", err)
		return true
	}
	if err := f.events.Append(ctx, sid, stream, data); err != nil {
		g.log.Warn("fast path: storing response event", "err", err)
	}
	writeSSE(w, "message", stream, 1, data)
	return true
}

// cancelCall ends the fast call of session sid that a notifications/cancelled in body
// names, if there is one; the notification goes on to the SDK either way.
func (f *fastSessions) cancelCall(sid string, body []byte) {
	if f == nil || !bytes.Contains(body, []byte(`"notifications/cancelled"`)) {
		return
	}
	fs := f.get(sid)
	if fs == nil {
		return
	}
	var n struct {
		Method string `json:"method"`
		Params struct {
			RequestID json.RawMessage `json:"requestId"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &n) != nil || n.Method != "notifications/cancelled" {
		return
	}
	var key callKey
	var s string
	if json.Unmarshal(n.Params.RequestID, &s) == nil {
		key = callKey{s: s, str: true}
	} else if v, err := strconv.ParseInt(string(n.Params.RequestID), 10, 64); err == nil {
		key = callKey{n: v}
	} else {
		return
	}
	fs.mu.Lock()
	cancel := fs.inflight[key]
	fs.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// plainCallHeaders reports whether h is what a 2025-11-25 client sends with a call and
// nothing the SDK's handler would check besides: Content-Type application/json, an
// Accept of both JSON and SSE, the protocol version header 2025-11-25, no Last-Event-ID
// and no other Mcp- header than the session's.
func plainCallHeaders(h http.Header) bool {
	if ct := h["Content-Type"]; len(ct) != 1 || ct[0] != "application/json" {
		return false
	}
	if v := h["Mcp-Protocol-Version"]; len(v) != 1 || v[0] != "2025-11-25" {
		return false
	}
	if jsonOK, streamOK := accepts(h["Accept"]); !jsonOK || !streamOK {
		return false
	}
	for k := range h {
		if k == "Last-Event-Id" || strings.HasPrefix(k, "Mcp-") && k != "Mcp-Session-Id" && k != "Mcp-Protocol-Version" {
			return false
		}
	}
	return true
}

// accepts reads Accept values as the SDK's streamable handler does.
func accepts(values []string) (jsonOK, streamOK bool) {
	for _, value := range values {
		for raw := range strings.SplitSeq(value, ",") {
			base, _, _ := strings.Cut(strings.TrimSpace(raw), ";")
			switch strings.ToLower(strings.TrimSpace(base)) {
			case "application/json", "application/*":
				jsonOK = true
			case "text/event-stream", "text/*":
				streamOK = true
			case "*/*":
				jsonOK, streamOK = true, true
			}
		}
	}
	return jsonOK, streamOK
}

// fastUpstream reports whether t is a tool of an upstream whose connection the upstream
// side of the fast path serves now (the same test fastToolCall makes; a connection that
// changes in between takes the tool handler, see sdkToolCall).
func (g *Gateway) fastUpstream(t *ToolInfo) bool {
	u := g.upstream(t.Upstream)
	if u == nil || u.cfg.Launch == nil {
		return false
	}
	c := u.primary
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw != nil && c.rawCS != nil && c.rawCS == c.cs && c.protocol != "" && c.protocol < "2026-07-28"
}

func (env *callEnvelope) rpcID() (jsonrpc.ID, callKey) {
	if env.strID {
		id, _ := jsonrpc.MakeID(env.sid)
		return id, callKey{s: env.sid, str: true}
	}
	id, _ := jsonrpc.MakeID(float64(env.id))
	return id, callKey{n: env.id}
}

// serveCall runs a tools/call through the chain as g.middleware does for one the SDK
// decoded.
func (g *Gateway) serveCall(ctx context.Context, ss *mcp.ServerSession, header http.Header, ti *auth.TokenInfo, env *callEnvelope, meta mcp.Meta) (mcp.Result, error) {
	p := &mcp.CallToolParamsRaw{Meta: meta, Name: env.name}
	if env.args != nil {
		p.Arguments = json.RawMessage(env.args)
	}
	req := &mcp.CallToolRequest{Session: ss, Params: p, Extra: &mcp.RequestExtra{TokenInfo: ti, Header: header}}
	r := &Request{Method: "tools/call", Raw: req, Session: ss}
	r.Identity, r.Transport = g.identify(ss, req.Extra)
	g.describe(r)
	final := func(ctx context.Context, r *Request) (mcp.Result, error) {
		p.Arguments = r.Arguments
		var err error
		if ctx, err = g.taskCall(ctx, r); err != nil {
			return nil, err
		}
		if res, ok, err := g.fastToolCall(ctx, r, p); ok {
			return res, err
		}
		return g.sdkToolCall(context.WithValue(ctx, requestKey{}, r), r, req)
	}
	res, err := g.chain(final)(ctx, r)
	var ge *Error
	if errors.As(err, &ge) {
		return nil, ge.RPCError()
	}
	var tc *taskCreated
	if errors.As(err, &tc) {
		return tc.res, nil
	}
	return res, err
}

// sdkToolCall is what the SDK's server does with a tools/call the chain passed on: the
// tool's handler, and an empty content list rather than none.
func (g *Gateway) sdkToolCall(ctx context.Context, r *Request, req *mcp.CallToolRequest) (mcp.Result, error) {
	u := g.upstream(r.Upstream)
	if r.Tool == nil || u == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown tool %q", req.Params.Name)}
	}
	res, err := g.toolHandler(u, r.Tool)(ctx, req)
	if err == nil && res != nil && res.Content == nil && len(res.InputRequests) == 0 {
		res2 := *res
		res2.Content = []mcp.Content{}
		res = &res2
	}
	if res == nil {
		return nil, err
	}
	return res, err
}

// encodeResponse is the JSON-RPC response the SDK's connection writes for a handler's
// result and error.
func encodeResponse(id jsonrpc.ID, res mcp.Result, err error) ([]byte, error) {
	if res != nil && err != nil {
		res = nil
	}
	if res == nil && err == nil {
		err = fmt.Errorf("%w: a nil result and nil error for a \"tools/call\" Request that requires a Response", errInternalRPC)
	}
	resp := &jsonrpc.Response{ID: id, Error: err}
	if res != nil {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(res); err != nil {
			return nil, fmt.Errorf("encode result: %w", err)
		}
		resp.Result = bytes.TrimRight(buf.Bytes(), "\n")
	}
	data, err := jsonrpc.EncodeMessage(resp)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return data, nil
}

// errInternalRPC carries the JSON-RPC internal error code, as the SDK's does.
var errInternalRPC = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "JSON RPC internal error"}

// writeSSE writes one event as the SDK's streamable handler does, and flushes it.
func writeSSE(w http.ResponseWriter, name, stream string, idx int, data []byte) {
	b := make([]byte, 0, 32+len(name)+len(stream)+len(data))
	b = append(append(append(b, "event: "...), name...), '\n')
	b = append(append(append(append(append(b, "id: "...), stream...), '_'), strconv.Itoa(idx)...), '\n')
	b = append(append(append(b, "data: "...), data...), "\n\n"...)
	_, _ = w.Write(b)
	_ = http.NewResponseController(w).Flush()
}

// writeRPCError answers with a JSON-RPC error as the SDK's handler does before a stream
// is opened.
func writeRPCError(w http.ResponseWriter, status int, id jsonrpc.ID, jerr *jsonrpc.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if data, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: jerr}); err == nil {
		_, _ = w.Write(data)
	}
}
