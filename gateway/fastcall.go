package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The tools/call fast path (issue 13). For the common call (a 2025-11-25 client, a stdio
// upstream on 2025-11-25, no progress token, no task, no approval, no retry of an
// input-required result) the gateway sends the call on the upstream's connection itself
// rather than through the go-sdk client: the request is written from the arguments'
// bytes as the client sent them (or as a condition rewrote them), and the upstream's
// result bytes go back to the client as they came, without a decode into the SDK's
// types and a re-encode on either side. Everything before the upstream (the HTTP and
// framing checks, the SDK's envelope decode, the chain: metrics, policy with its
// conditions, the SchemaPin-verified tool table, audit) runs exactly as on the SDK path,
// and so does everything the upstream starts during the call (elicitation, sampling,
// roots, logs: the SDK client still reads the connection and routes them by the
// in-flight call). A call that does not fit takes the SDK path (toolHandler).
//
// A result is passed through raw only when its shape is one the SDK path would give the
// same meaning: an object whose members are content (an array of items of the known
// content types), structuredContent, isError and _meta, each once. Anything else is
// decoded into an mcp.CallToolResult, as the SDK client would. The items' own fields
// are not checked: where the SDK path would re-encode a result (an item's member it does
// not model, structuredContent's key order, a number's spelling) or refuse it (a text
// that is not a string), the fast path gives the client what the upstream wrote, as a
// direct connection would.

// fastIDBase is where the fast path's request ids start: far above the SDK client's,
// which count up from 1, and exact in a float64 (2^52) for upstreams written in
// JavaScript.
const fastIDBase = int64(1) << 52

// rawCaller sends requests on one upstream connection and takes their responses before
// the SDK client sees them.
type rawCaller struct {
	fc   *frameConn
	next atomic.Int64

	mu      sync.Mutex
	pending map[int64]chan *jsonrpc.Response
	closed  error // set when the connection's reading ended
}

func newRawCaller(fc *frameConn) *rawCaller {
	rc := &rawCaller{fc: fc, pending: map[int64]chan *jsonrpc.Response{}}
	rc.next.Store(fastIDBase)
	return rc
}

// deliver hands resp to the fast call waiting for it and reports whether there was one.
func (rc *rawCaller) deliver(resp *jsonrpc.Response) bool {
	id, ok := resp.ID.Raw().(int64)
	if !ok || id < fastIDBase {
		return false
	}
	rc.mu.Lock()
	ch := rc.pending[id]
	delete(rc.pending, id)
	rc.mu.Unlock()
	if ch == nil {
		return false // not ours (or abandoned): the SDK logs and drops it
	}
	ch <- resp // buffered: never blocks
	return true
}

// fail ends every waiting call: the connection's reading ended with err.
func (rc *rawCaller) fail(err error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.closed == nil {
		rc.closed = err
	}
	for id, ch := range rc.pending {
		delete(rc.pending, id)
		close(ch)
	}
}

// call sends a tools/call with the given params members (already JSON) and waits for
// its response. Like the SDK client, a call whose ctx ends tells the upstream with
// notifications/cancelled (best effort, off the caller's path) and returns ctx.Err().
func (rc *rawCaller) call(ctx context.Context, g *Gateway, meta, name, args []byte) (*jsonrpc.Response, error) {
	id := rc.next.Add(1)
	ch := make(chan *jsonrpc.Response, 1)
	rc.mu.Lock()
	if rc.closed != nil {
		err := rc.closed
		rc.mu.Unlock()
		return nil, fmt.Errorf("%w: calling \"tools/call\": %v", mcp.ErrConnectionClosed, err)
	}
	rc.pending[id] = ch
	rc.mu.Unlock()

	buf := make([]byte, 0, 96+len(meta)+len(name)+len(args))
	buf = append(buf, `{"jsonrpc":"2.0","id":`...)
	buf = strconv.AppendInt(buf, id, 10)
	buf = append(buf, `,"method":"tools/call","params":{`...)
	if len(meta) > 0 {
		buf = append(append(append(buf, `"_meta":`...), meta...), ',')
	}
	buf = append(append(buf, `"name":`...), name...)
	if len(args) > 0 {
		buf = append(append(buf, `,"arguments":`...), args...)
	}
	buf = append(buf, "}}"...)
	if err := rc.write(buf); err != nil {
		rc.forget(id)
		return nil, fmt.Errorf("%w: calling \"tools/call\": %v", mcp.ErrConnectionClosed, err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w: calling \"tools/call\"", mcp.ErrConnectionClosed)
		}
		return resp, nil
	case <-ctx.Done():
		rc.forget(id)
		reason := ctx.Err().Error()
		g.goOwned(func() { // ends when the write does (the connection's close ends a stuck one)
			note, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/cancelled",
				"params": map[string]any{"requestId": id, "reason": reason}})
			_ = rc.write(note)
		})
		return nil, ctx.Err()
	}
}

func (rc *rawCaller) write(frame []byte) error {
	select {
	case <-rc.fc.done:
		return errors.New("connection closed")
	default:
	}
	return rc.fc.f.WriteFrame(frame)
}

func (rc *rawCaller) forget(id int64) {
	rc.mu.Lock()
	delete(rc.pending, id)
	rc.mu.Unlock()
}

// rawFor returns the raw caller of the connection whose session is cs, or nil.
func (u *upstream) rawFor(cs *mcp.ClientSession) *rawCaller {
	for _, c := range []*conn{u.primary, u.modernConn()} {
		if c == nil {
			continue
		}
		c.mu.Lock()
		rc, rcs := c.raw, c.rawCS
		c.mu.Unlock()
		if rc != nil && rcs == cs {
			return rc
		}
	}
	return nil
}

func (u *upstream) modernConn() *conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.modernC
}

// fastToolCall serves r (a tools/call the chain has decided) on the fast path when it
// fits; handled is false when it does not, and the SDK path serves it.
func (g *Gateway) fastToolCall(ctx context.Context, r *Request, p *mcp.CallToolParamsRaw) (res mcp.Result, handled bool, err error) {
	// A traced call takes the SDK path, whose client span carries the trace context to
	// the upstream (trace.go).
	if g.opts.NoFastPath || g.tracer != nil || r.Tool == nil || r.approval != nil || r.Session == nil || !legacyClient(r.Session) ||
		taskWindowFrom(ctx) || p.RequestState != "" || p.InputResponses != nil || p.GetProgressToken() != nil {
		return nil, false, nil
	}
	if cur, ok := g.Tool(r.Name); !ok || cur != r.Tool {
		return nil, false, nil // the SDK path says what changed
	}
	u := g.upstream(r.Upstream)
	if u == nil || u.cfg.Launch == nil {
		return nil, false, nil
	}
	c := u.connFor(ctx, r.Session)
	c.mu.Lock()
	fits := c.raw != nil && c.rawCS != nil && c.rawCS == c.cs && c.protocol != "" && c.protocol < "2026-07-28"
	c.mu.Unlock()
	if !fits {
		return nil, false, nil
	}
	meta, err := json.Marshal(upstreamMeta(p.Meta))
	if err != nil {
		return nil, false, nil
	}
	name, err := json.Marshal(r.Tool.UpstreamName)
	if err != nil {
		return nil, false, nil
	}
	g.fastCalls.Add(1)
	ctx = context.WithValue(ctx, requestKey{}, r)
	var out mcp.Result
	err = u.callTracked(ctx, inflightCall{ss: r.Session, ctx: ctx}, func(ctx context.Context, cs *mcp.ClientSession) error {
		rc := u.rawFor(cs)
		if rc == nil {
			return fmt.Errorf("%w: calling \"tools/call\": no raw connection", mcp.ErrConnectionClosed)
		}
		resp, err := rc.call(ctx, g, meta, name, r.Arguments)
		if err != nil {
			return err
		}
		if resp.Error != nil {
			return fmt.Errorf("calling \"tools/call\": %w", resp.Error)
		}
		out, err = toolResult(resp.Result)
		return err
	})
	if err != nil {
		var ge *Error
		if errors.As(err, &ge) && ge.Kind == Unavailable {
			// A failing tool is a tool result with IsError, not a protocol error.
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: ge.Public}}}, true, nil
		}
		return nil, true, upstreamError(u, err)
	}
	return out, true, nil
}

// rawCallResult is an upstream's tools/call result passed through as it came.
// Its ResultBase's Meta is only what SetMeta set (the SDK calls it for 2026-07-28
// clients only); the raw result's own _meta is not decoded.
type rawCallResult struct {
	mcp.ResultBase
	raw     json.RawMessage
	isError bool
}

// MarshalJSON returns the upstream's bytes (with _meta replaced if SetMeta was called).
func (r *rawCallResult) MarshalJSON() ([]byte, error) {
	if r.Meta == nil {
		return r.raw, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.raw, &m); err != nil {
		return nil, fmt.Errorf("decode result: %w", err)
	}
	b, err := json.Marshal(r.Meta)
	if err != nil {
		return nil, fmt.Errorf("encode result meta: %w", err)
	}
	m["_meta"] = b
	return json.Marshal(m)
}

var _ mcp.Result = (*rawCallResult)(nil)

// decoded returns the result as the SDK's type.
func (r *rawCallResult) decoded() (*mcp.CallToolResult, error) {
	var res mcp.CallToolResult
	if err := json.Unmarshal(r.raw, &res); err != nil {
		return nil, fmt.Errorf("decode tool result: %w", err)
	}
	return &res, nil
}

// toolResult is the result of a fast call: raw when its shape passes (see the comment
// at the top of this file), else decoded as the SDK client does.
func toolResult(raw json.RawMessage) (mcp.Result, error) {
	if isError, ok := plainToolResult(raw); ok {
		return &rawCallResult{raw: raw, isError: isError}, nil
	}
	var res mcp.CallToolResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, fmt.Errorf("calling \"tools/call\": %w", err)
	}
	if res.Content == nil && len(res.InputRequests) == 0 {
		res.Content = []mcp.Content{} // as the SDK server does: never "null"
	}
	return &res, nil
}

// toolResultIsError reports whether res is a tool result with isError set.
func toolResultIsError(res mcp.Result) bool {
	switch x := res.(type) {
	case *mcp.CallToolResult:
		return x != nil && x.IsError
	case *rawCallResult:
		return x != nil && x.isError
	}
	return false
}

// contentTypes are the content item types the SDK decodes.
var contentTypes = map[string]bool{"text": true, "image": true, "audio": true, "resource_link": true, "resource": true}

// plainToolResult reports whether raw (valid JSON: the framing checked it) is a result
// the fast path passes through unchanged, and its isError.
func plainToolResult(raw []byte) (isError, ok bool) {
	s := scanner{b: raw}
	if !s.open('{') {
		return false, false
	}
	var seen [4]bool
	hasContent := false
	for first := true; ; first = false {
		if s.close('}') {
			return isError, hasContent
		}
		if !first && !s.open(',') {
			return false, false
		}
		key, ok := s.key()
		if !ok {
			return false, false
		}
		i := -1
		switch key {
		case "content":
			i = 0
			if !s.contentArray() {
				return false, false
			}
			hasContent = true
		case "structuredContent":
			i = 1
			if !s.skip() {
				return false, false
			}
		case "isError":
			i = 2
			switch {
			case s.literal("true"):
				isError = true
			case s.literal("false"):
			default:
				return false, false
			}
		case "_meta":
			i = 3
			if s.peek() != '{' || !s.skip() {
				return false, false
			}
		default:
			return false, false
		}
		if seen[i] {
			return false, false
		}
		seen[i] = true
	}
}

// scanner walks JSON already known to be valid.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) open(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) close(c byte) bool { return s.open(c) }

func (s *scanner) literal(lit string) bool {
	s.ws()
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

// key reads a member name without escapes (one with escapes is not a plain result's)
// and its colon.
func (s *scanner) key() (string, bool) {
	str, ok := s.plainString()
	if !ok || !s.open(':') {
		return "", false
	}
	return str, true
}

// plainString reads a string without escapes.
func (s *scanner) plainString() (string, bool) {
	if !s.open('"') {
		return "", false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			return "", false
		case '"':
			str := string(s.b[start:s.i])
			s.i++
			return str, true
		}
		s.i++
	}
	return "", false
}

// skip skips one value.
func (s *scanner) skip() bool {
	switch s.peek() {
	case '"':
		s.i++
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '\\':
				s.i += 2
				continue
			case '"':
				s.i++
				return true
			}
			s.i++
		}
		return false
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if !s.skip() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	case 0:
		return false
	default: // number, true, false, null
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return true
			}
			s.i++
		}
		return true
	}
}

// contentArray reads an array of objects, each with a "type" member (once) naming a
// content type the SDK decodes.
func (s *scanner) contentArray() bool {
	if !s.open('[') {
		return false
	}
	for first := true; ; first = false {
		if s.close(']') {
			return true
		}
		if !first && !s.open(',') {
			return false
		}
		if !s.open('{') {
			return false
		}
		typed := false
		for f := true; ; f = false {
			if s.close('}') {
				break
			}
			if !f && !s.open(',') {
				return false
			}
			k, ok := s.key()
			if !ok {
				return false
			}
			if k == "type" {
				v, ok := s.plainString()
				if typed || !ok || !contentTypes[v] {
					return false
				}
				typed = true
				continue
			}
			if !s.skip() {
				return false
			}
		}
		if !typed {
			return false
		}
	}
}
