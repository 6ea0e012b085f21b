package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// JSON-RPC error codes the framing layer answers with.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
)

// Framer reads and writes whole JSON-RPC frames: a line on stdio, a text message on a
// WebSocket. ReadFrame returns errFrameTooLarge (and skips the frame) when a frame
// exceeds the limit.
type Framer interface {
	ReadFrame() ([]byte, error)
	WriteFrame([]byte) error
	Close() error
}

var errFrameTooLarge = errors.New("frame too large")

// lineFramer frames newline-delimited JSON over a byte stream.
type lineFramer struct {
	r     *bufio.Reader
	w     io.Writer
	c     io.Closer
	limit int
	wmu   sync.Mutex
}

func newLineFramer(r io.Reader, w io.Writer, c io.Closer, limit int) *lineFramer {
	return &lineFramer{r: bufio.NewReaderSize(r, 64<<10), w: w, c: c, limit: limit}
}

func (f *lineFramer) ReadFrame() ([]byte, error) {
	// The limit applies to the frame without its line ending ("\n" or "\r\n").
	var buf []byte
	tooLarge := false
	for {
		chunk, err := f.r.ReadSlice('\n')
		if !tooLarge {
			if len(buf)+len(chunk) > f.limit+2 {
				tooLarge, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case err == nil:
			if tooLarge {
				return nil, errFrameTooLarge
			}
			return f.frame(buf)
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0 && !tooLarge:
			return f.frame(buf) // a last line with no newline
		case errors.Is(err, io.EOF) && tooLarge:
			return nil, errFrameTooLarge
		default:
			return nil, err
		}
	}
}

func (f *lineFramer) frame(line []byte) ([]byte, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > f.limit {
		return nil, errFrameTooLarge
	}
	return line, nil
}

func (f *lineFramer) WriteFrame(b []byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	// One write per frame so a frame is never interleaved with another.
	line := make([]byte, 0, len(b)+1)
	line = append(append(line, b...), '\n')
	_, err := f.w.Write(line)
	return err
}

func (f *lineFramer) Close() error {
	if f.c != nil {
		return f.c.Close()
	}
	return nil
}

// FrameConnOptions configures a frameConn.
type FrameConnOptions struct {
	// Peer names the other side in logs ("client", "upstream everything").
	Peer string
	// AnswerGarbage makes the connection answer malformed frames with a JSON-RPC
	// error (as a server must). A client side logs and skips them instead.
	AnswerGarbage bool
	SessionID     string
	Logger        *slog.Logger
	// OnGarbage, if set, is called once per rejected frame (for metrics).
	OnGarbage func(reason string)
	// ExactIDs makes the connection echo every request id exactly as the peer wrote it
	// (see idMap): ids the SDK cannot represent are replaced on the way in and restored
	// on the way out. A server side sets it.
	ExactIDs bool
}

// frameConn is an mcp.Connection over a Framer that survives bad input: a malformed,
// oversized or batched frame is answered with the spec's error (or skipped) and the
// session goes on, unlike the SDK's own stdio connection, which ends the session.
type frameConn struct {
	f    Framer
	opts FrameConnOptions

	ids      *idMap // nil without ExactIDs
	incoming chan frameResult
	done     chan struct{}
	once     sync.Once
	readOnce sync.Once
}

type frameResult struct {
	msg jsonrpc.Message
	err error
}

var _ mcp.Connection = (*frameConn)(nil)

func newFrameConn(f Framer, opts FrameConnOptions) *frameConn {
	if opts.Logger == nil {
		opts.Logger = discardLogger
	}
	c := &frameConn{f: f, opts: opts, incoming: make(chan frameResult), done: make(chan struct{})}
	if opts.ExactIDs {
		c.ids = newIDMap()
	}
	return c
}

// readLoop is owned by the connection: it ends when the framer fails or Close is called.
func (c *frameConn) readLoop() {
	for {
		msg, err := c.readOne()
		if err == nil && msg == nil {
			continue // a bad frame, already answered
		}
		select {
		case c.incoming <- frameResult{msg, err}:
		case <-c.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (c *frameConn) readOne() (jsonrpc.Message, error) {
	data, err := c.f.ReadFrame()
	if errors.Is(err, errFrameTooLarge) {
		c.reject(nil, codeInvalidRequest, "message exceeds the size limit", "too_large")
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil
	}
	// JSON-RPC 2.0: invalid JSON (including trailing data) is a parse error; valid JSON
	// that is not a request object is an invalid request.
	if !json.Valid(data) {
		c.reject(nil, codeParseError, "parse error: invalid JSON", "parse")
		return nil, nil
	}
	switch data[0] {
	case '[':
		c.reject(nil, codeInvalidRequest, "JSON-RPC batches are not supported", "batch")
		return nil, nil
	case '{':
	default:
		c.reject(nil, codeInvalidRequest, "invalid request: not a JSON object", "invalid")
		return nil, nil
	}
	if c.ids != nil {
		var drop bool
		if data, _, drop = c.ids.mapInbound("", data); drop {
			c.opts.Logger.Warn("dropped a cancellation of an unknown request", "peer", c.opts.Peer)
			return nil, nil
		}
	}
	msg, id, err := decodeFrame(data)
	if err != nil {
		c.reject(id, codeInvalidRequest, "invalid request: "+err.Error(), "invalid")
		return nil, nil
	}
	return msg, nil
}

// wireMsg is a JSON-RPC 2.0 message as it travels.
type wireMsg struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *jsonrpc.Error  `json:"error"`
}

// decodeFrame decodes one JSON-RPC message (already known to be valid JSON) with the
// standard library: the SDK's decoder allocates a 32 KiB buffer per call, and this is
// the hot path of every proxied message. On error it returns the id, if it could read
// one, for the error response.
func decodeFrame(data []byte) (jsonrpc.Message, json.RawMessage, error) {
	var w wireMsg
	if err := json.Unmarshal(data, &w); err != nil {
		// A field of the wrong type: the rest, the id included, is still decoded.
		return nil, w.ID, fmt.Errorf("decode message: %w", err)
	}
	if w.JSONRPC != "2.0" {
		return nil, w.ID, fmt.Errorf("invalid message version tag %q; expected \"2.0\"", w.JSONRPC)
	}
	var idv any
	if len(w.ID) > 0 {
		if err := json.Unmarshal(w.ID, &idv); err != nil {
			return nil, nil, fmt.Errorf("decode id: %w", err)
		}
	}
	id, err := jsonrpc.MakeID(idv)
	if err != nil {
		return nil, nil, err
	}
	if w.Method != nil {
		return &jsonrpc.Request{ID: id, Method: *w.Method, Params: w.Params}, nil, nil
	}
	if !id.IsValid() {
		return nil, nil, errors.New("a response needs an id")
	}
	if w.Result == nil && w.Error == nil {
		return nil, w.ID, errors.New("a response needs a result or an error")
	}
	resp := &jsonrpc.Response{ID: id, Result: w.Result}
	if w.Error != nil {
		resp.Error = w.Error
	}
	return resp, nil, nil
}

// reject answers (or, on a client side, logs) a frame that could not be accepted.
func (c *frameConn) reject(id json.RawMessage, code int, message, reason string) {
	c.opts.Logger.Warn("rejected frame", "peer", c.opts.Peer, "reason", reason, "detail", message)
	if c.opts.OnGarbage != nil {
		c.opts.OnGarbage(reason)
	}
	if !c.opts.AnswerGarbage {
		return
	}
	if len(id) == 0 || !validID(id) {
		id = json.RawMessage("null")
	}
	resp, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   any             `json:"error"`
	}{"2.0", id, map[string]any{"code": code, "message": message}})
	if err := c.f.WriteFrame(resp); err != nil {
		c.opts.Logger.Warn("write error response", "peer", c.opts.Peer, "err", err)
	}
}

func validID(id json.RawMessage) bool {
	var v any
	if json.Unmarshal(id, &v) != nil {
		return false
	}
	switch v.(type) {
	case string, float64:
		return true
	}
	return false
}

func (c *frameConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	c.readOnce.Do(func() { go c.readLoop() })
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, io.EOF
	case r := <-c.incoming:
		return r.msg, r.err
	}
}

func (c *frameConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	select {
	case <-c.done:
		return io.ErrClosedPipe
	default:
	}
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	if c.ids != nil {
		data = c.ids.restore(data)
	}
	return c.f.WriteFrame(data)
}

func (c *frameConn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.done)
		err = c.f.Close()
	})
	return err
}

func (c *frameConn) SessionID() string { return c.opts.SessionID }

// frameTransport is an mcp.Transport around one frameConn.
type frameTransport struct{ conn *frameConn }

func (t frameTransport) Connect(context.Context) (mcp.Connection, error) { return t.conn, nil }

var discardLogger = slog.New(slog.DiscardHandler)
