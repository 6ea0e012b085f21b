package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// internalCalls is the path symbi's own components (workflow agents) take to call tools:
// one in-process session, set up on first use, whose requests enter the SDK's receiving
// path below the transport, so each call passes the same middleware, chain (metrics,
// audit, policy and its conditions), tool routing and upstream call as a client's.
type internalCalls struct {
	once     sync.Once
	err      error
	dispatch mcp.MethodHandler // the server's receiving path, middleware included
	ss       atomic.Pointer[mcp.ServerSession]
	cs       *mcp.ClientSession
	close    sync.Once
}

type internalIdentityKey struct{}

// InternalTransport is the transport recorded for calls made through CallTool.
const InternalTransport = "internal"

// CallTool calls the exposed tool name with args as identity, through the same request
// path as a client's tools/call: the policy decides with identity (and its conditions
// apply), the SchemaPin status of the tool is what the policy sees, and the call is
// audited under identity. A refusal is an *Error (Denied for policy denials); a tool
// that fails is a result with IsError.
func (g *Gateway) CallTool(ctx context.Context, identity Identity, name string, args json.RawMessage) (*mcp.CallToolResult, error) {
	if identity.ID == "" {
		return nil, &Error{Kind: Invalid, Public: "an internal call needs an identity"}
	}
	if err := g.startInternal(); err != nil {
		return nil, &Error{Kind: Internal, Public: "internal calls are unavailable", Err: err}
	}
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	ss := g.internal.ss.Load()
	if ss == nil {
		return nil, &Error{Kind: Unavailable, Public: "the gateway is closed"}
	}
	req := &mcp.CallToolRequest{Session: ss, Params: &mcp.CallToolParamsRaw{Name: name, Arguments: args}}
	res, err := g.internal.dispatch(context.WithValue(ctx, internalIdentityKey{}, identity), "tools/call", req)
	if err != nil {
		return nil, internalError(err)
	}
	if raw, ok := res.(*rawCallResult); ok { // the fast path's (fastcall.go)
		if res, err = raw.decoded(); err != nil {
			return nil, &Error{Kind: Internal, Public: "tool call returned no result", Err: err}
		}
	}
	ctr, ok := res.(*mcp.CallToolResult)
	if !ok || ctr == nil {
		return nil, &Error{Kind: Internal, Public: "tool call returned no result", Err: fmt.Errorf("call %s: result %T", name, res)}
	}
	return ctr, nil
}

// internalError turns the JSON-RPC error a client would have received back into a
// classified Error.
func internalError(err error) error {
	var ge *Error
	if errors.As(err, &ge) {
		return ge
	}
	var je *jsonrpc.Error
	if errors.As(err, &je) {
		kind := Internal
		switch je.Code {
		case CodeDenied:
			kind = Denied
		case CodeUnavailable:
			kind = Unavailable
		case jsonrpc.CodeInvalidParams:
			kind = Invalid
		}
		return &Error{Kind: kind, Public: je.Message, Err: err}
	}
	return &Error{Kind: Internal, Public: "tool call failed", Err: err}
}

// startInternal captures the server's receiving path and opens the internal session.
func (g *Gateway) startInternal() error {
	g.internal.once.Do(func() {
		// Added last, this middleware is the outermost: next is the whole receiving path.
		g.server.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
			g.internal.dispatch = next
			return next
		})
		ctx := context.Background()
		ct, st := mcp.NewInMemoryTransports()
		ss, err := g.server.Connect(ctx, st, nil)
		if err != nil {
			g.internal.err = fmt.Errorf("connect internal session: %w", err)
			return
		}
		g.internal.ss.Store(ss)
		c := mcp.NewClient(&mcp.Implementation{Name: "symbi-internal", Version: g.opts.Version}, nil)
		cs, err := c.Connect(ctx, ct, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
		if err != nil {
			g.internal.ss.Store(nil)
			_ = ss.Close()
			g.internal.err = fmt.Errorf("connect internal client: %w", err)
			return
		}
		g.internal.cs = cs
	})
	return g.internal.err
}

// internalSession reports whether ss is the internal session.
func (g *Gateway) internalSession(ss *mcp.ServerSession) bool {
	return ss != nil && g.internal.ss.Load() == ss
}

// internalIdentity is the identity CallTool was given, if ctx is one of its calls.
func internalIdentity(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(internalIdentityKey{}).(Identity)
	return id, ok
}

// closeInternal ends the internal session; it is idempotent.
func (g *Gateway) closeInternal() {
	g.internal.close.Do(func() {
		g.internal.once.Do(func() { g.internal.err = errors.New("the gateway is closed") })
		ss := g.internal.ss.Swap(nil)
		if g.internal.cs != nil {
			_ = g.internal.cs.Close()
		}
		if ss != nil {
			_ = ss.Close()
		}
	})
}
