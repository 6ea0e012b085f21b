package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Tool definitions are verified (SchemaPin) and pinned (quarantine) over the bytes the
// upstream sent, not over the SDK's typed mcp.Tool: re-encoding that loses what the SDK
// does not model (unknown annotation keys, "1.0" becomes "1", absent hints become false),
// so a definition signed as listed would not verify. The tap below keeps the raw
// "tools" entries of every tools/list result that a listing asked for.

// rawToolList collects the raw tools of one listing (all its pages).
type rawToolList struct {
	mu    sync.Mutex
	tools []json.RawMessage
}

func (l *rawToolList) add(result json.RawMessage) {
	var page struct {
		Tools []json.RawMessage `json:"tools"`
	}
	if json.Unmarshal(result, &page) != nil {
		return
	}
	l.mu.Lock()
	l.tools = append(l.tools, page.Tools...)
	l.mu.Unlock()
}

// byName returns the collected tools by name (a later page's duplicate wins, as in the
// SDK's iteration order the gateway syncs).
func (l *rawToolList) byName() map[string]json.RawMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]json.RawMessage, len(l.tools))
	for _, raw := range l.tools {
		var n struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(raw, &n) == nil {
			out[n.Name] = raw
		}
	}
	return out
}

type rawToolsKey struct{}

// withRawTools asks the tap to collect the raw tools/list results of requests made
// with the returned context into l.
func withRawTools(ctx context.Context, l *rawToolList) context.Context {
	return context.WithValue(ctx, rawToolsKey{}, l)
}

// listTap pairs outgoing tools/list requests (made with a withRawTools context) with
// their responses, by JSON-RPC id. One per upstream connection.
type listTap struct {
	mu      sync.Mutex
	pending map[string]*rawToolList
}

func idKey(id jsonrpc.ID) string {
	if s, ok := id.Raw().(string); ok {
		return "s:" + s
	}
	return fmt.Sprintf("n:%v", id.Raw())
}

// sent notes an outgoing message.
func (t *listTap) sent(ctx context.Context, msg jsonrpc.Message) {
	req, ok := msg.(*jsonrpc.Request)
	if !ok || req.Method != "tools/list" || !req.IsCall() {
		return
	}
	l, _ := ctx.Value(rawToolsKey{}).(*rawToolList)
	if l == nil {
		return
	}
	t.mu.Lock()
	if t.pending == nil {
		t.pending = map[string]*rawToolList{}
	}
	t.pending[idKey(req.ID)] = l
	t.mu.Unlock()
}

// received notes an incoming message; it must be called before the message reaches the
// SDK, so the raw result is collected by the time the listing returns.
func (t *listTap) received(msg jsonrpc.Message) {
	resp, ok := msg.(*jsonrpc.Response)
	if !ok {
		return
	}
	t.mu.Lock()
	if len(t.pending) == 0 {
		t.mu.Unlock()
		return
	}
	k := idKey(resp.ID)
	l := t.pending[k]
	delete(t.pending, k)
	t.mu.Unlock()
	if l != nil && resp.Error == nil {
		l.add(resp.Result)
	}
}

// tapTransport wraps a transport whose connections the gateway owns (stdio frames).
type tapTransport struct {
	inner mcp.Transport
	tap   *listTap
	raw   *rawCaller // nil, or the fast path's caller on this connection (fastcall.go)
}

func (t tapTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &tapConn{Connection: c, tap: t.tap, raw: t.raw}, nil
}

type tapConn struct {
	mcp.Connection
	tap *listTap
	raw *rawCaller
}

func (c *tapConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		msg, err := c.Connection.Read(ctx)
		if err != nil {
			if c.raw != nil {
				c.raw.fail(err) // nothing reads the connection any more
			}
			return msg, err
		}
		if resp, ok := msg.(*jsonrpc.Response); ok && c.raw != nil && c.raw.deliver(resp) {
			continue // the answer to a fast-path call: not the SDK's
		}
		c.tap.received(msg)
		return msg, nil
	}
}

func (c *tapConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	c.tap.sent(ctx, msg)
	return c.Connection.Write(ctx, msg)
}

// tapRoundTripper taps HTTP upstreams (streamable HTTP and legacy SSE) below the SDK's
// own connection, which cannot be wrapped: request bodies are JSON-RPC messages, and
// response bodies JSON or server-sent events carrying them.
type tapRoundTripper struct {
	base http.RoundTripper
	tap  *listTap
	max  int // bound on one buffered message or event
}

func (t tapRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && r.Body != nil && r.GetBody != nil {
		if body, err := r.GetBody(); err == nil {
			data, err := io.ReadAll(io.LimitReader(body, int64(t.max)+1))
			body.Close()
			if err == nil && len(data) <= t.max {
				if msg, err := jsonrpc.DecodeMessage(data); err == nil {
					t.tap.sent(r.Context(), msg)
				}
			}
		}
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	t.tap.mu.Lock()
	waiting := len(t.tap.pending) > 0
	t.tap.mu.Unlock()
	// A POST's response carries that request's answer; a GET stream (legacy SSE, or a
	// resumed streamable stream) may carry the answer to any request.
	ct := resp.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "text/event-stream") && (waiting || r.Method == http.MethodGet):
		resp.Body = &sseTap{rc: resp.Body, tap: t.tap, max: t.max}
	case waiting && strings.HasPrefix(ct, "application/json"):
		resp.Body = &jsonTap{rc: resp.Body, tap: t.tap, max: t.max}
	}
	return resp, nil
}

// jsonTap passes a JSON response body through and, at its end, hands the message to
// the tap before the reader sees EOF.
type jsonTap struct {
	rc   io.ReadCloser
	tap  *listTap
	max  int
	buf  bytes.Buffer
	done bool
}

func (j *jsonTap) Read(p []byte) (int, error) {
	n, err := j.rc.Read(p)
	if !j.done {
		if j.buf.Len()+n > j.max {
			j.done, j.buf = true, bytes.Buffer{}
		} else {
			j.buf.Write(p[:n])
		}
	}
	if err == io.EOF && !j.done {
		j.done = true
		if msg, derr := jsonrpc.DecodeMessage(bytes.TrimSpace(j.buf.Bytes())); derr == nil {
			j.tap.received(msg)
		}
		j.buf = bytes.Buffer{}
	}
	return n, err
}

func (j *jsonTap) Close() error { return j.rc.Close() }

// sseTap passes an event stream through and hands each complete event's data to the tap
// before returning the bytes that complete it.
type sseTap struct {
	rc   io.ReadCloser
	tap  *listTap
	max  int
	line []byte // the current, incomplete line
	data bytes.Buffer
	over bool // the current line is over the bound
	skip bool // the current event is over the bound
}

func (s *sseTap) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	for rest := p[:n]; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			s.partial(rest)
			break
		}
		s.partial(rest[:i])
		s.endLine()
		rest = rest[i+1:]
	}
	return n, err
}

// partial appends b to the current line, unless that grows past the bound.
func (s *sseTap) partial(b []byte) {
	if s.over || len(s.line)+len(b) > s.max {
		s.over = true
		return
	}
	s.line = append(s.line, b...)
}

func (s *sseTap) endLine() {
	line := bytes.TrimSuffix(s.line, []byte{'\r'})
	s.line = s.line[:0]
	if s.over {
		s.over, s.skip = false, true
		return
	}
	switch {
	case len(line) == 0: // end of an event
		if !s.skip && s.data.Len() > 0 {
			if msg, err := jsonrpc.DecodeMessage(s.data.Bytes()); err == nil {
				s.tap.received(msg)
			}
		}
		s.data.Reset()
		s.skip = false
	case s.skip:
	case bytes.HasPrefix(line, []byte("data:")):
		v := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))
		if s.data.Len()+len(v)+1 > s.max {
			s.skip = true
			return
		}
		if s.data.Len() > 0 {
			s.data.WriteByte('\n')
		}
		s.data.Write(v)
	}
}

func (s *sseTap) Close() error { return s.rc.Close() }

// ListRawTools connects to one upstream as the gateway does (the same launch, transport
// and protocol negotiation), lists its tools and returns each definition exactly as the
// upstream sent it, in its order, then disconnects (stopping a process it started).
// `symbi schemapin sign --from-upstream` signs what it returns. opts are the gateway's
// options (Logger, MaxMessageBytes, Version); its upstreams are ignored.
func ListRawTools(ctx context.Context, cfg UpstreamConfig, opts *Options) ([]json.RawMessage, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.Upstreams = nil
	g := New(&o)
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	u := newUpstream(g, cfg)
	cs, proc, err := u.primary.connect(ctx, "2025-11-25")
	if err != nil && ctx.Err() == nil {
		cs, proc, err = u.primary.connect(ctx, "")
	}
	if err != nil {
		return nil, fmt.Errorf("list tools of %s: %w", cfg.Name, err)
	}
	defer func() {
		_ = cs.Close()
		if proc != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = proc.Stop(stopCtx)
			cancel()
		}
	}()
	if init := cs.InitializeResult(); init == nil || init.Capabilities == nil || init.Capabilities.Tools == nil {
		return nil, fmt.Errorf("list tools of %s: the upstream offers no tools", cfg.Name)
	}
	raw := &rawToolList{}
	lctx, cancel := context.WithTimeout(withRawTools(ctx, raw), cfg.Timeout)
	defer cancel()
	n := 0
	for _, err := range cs.Tools(lctx, nil) {
		if err != nil {
			return nil, fmt.Errorf("list tools of %s: %w", cfg.Name, err)
		}
		n++
	}
	raw.mu.Lock()
	defer raw.mu.Unlock()
	if len(raw.tools) != n {
		return nil, fmt.Errorf("list tools of %s: kept %d raw definitions of %d listed", cfg.Name, len(raw.tools), n)
	}
	return raw.tools, nil
}
