package gateway

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The bridge lets a 2026-07-28 client use an upstream that speaks 2025-11-25. Such an
// upstream asks for elicitation, sampling or roots in the middle of a call, as a
// request; a 2026-07-28 client can only be asked through an input-required result
// that it answers by retrying the call with inputResponses and requestState. So the
// bridge keeps the upstream call running, returns each question to the client as an
// input-required result whose requestState names the pending call, and delivers the
// client's answer when it retries. A requestState symbi did not issue passes through
// to the upstream untouched.

const bridgeStatePrefix = "symbi-bridge:"

// bridgeInputKey is the inputRequests key symbi uses for the question it relays.
const bridgeInputKey = "symbi"

type pendingCall struct {
	id       string
	identity string

	round atomic.Pointer[context.Context] // context of the client request now waiting

	asks chan *bridgeAsk
	done chan bridgeOutcome

	mu      sync.Mutex
	current *bridgeAsk // the question the client is answering
}

type bridgeAsk struct {
	req   mcp.InputRequest
	reply chan mcp.InputResponse
}

type bridgeOutcome struct {
	res mcp.Result
	err error
}

func (p *pendingCall) roundContext() context.Context {
	if c := p.round.Load(); c != nil {
		return *c
	}
	return context.Background()
}

// bridge is the gateway's set of pending bridged calls.
type bridge struct {
	mu    sync.Mutex
	calls map[string]*pendingCall
}

// askBridged hands the upstream's question to the pending call and waits for the
// client's answer (bounded by ctx, the upstream request's context).
func askBridged[R mcp.InputResponse](ctx context.Context, p *pendingCall, req mcp.InputRequest) (R, error) {
	var zero R
	a := &bridgeAsk{req: req, reply: make(chan mcp.InputResponse, 1)}
	select {
	case p.asks <- a:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case resp := <-a.reply:
		switch r := any(resp).(type) {
		case R:
			return r, nil
		case *mcp.CreateMessageResult:
			// A client may answer sampling with the single-content form.
			if out, ok := any(&mcp.CreateMessageWithToolsResult{Meta: r.Meta, Model: r.Model, Role: r.Role, StopReason: r.StopReason, Content: []mcp.Content{r.Content}}).(R); ok {
				return out, nil
			}
		}
		return zero, fmt.Errorf("bridge: client answered with %T", resp)
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// bridged runs one round of a bridged call. The first round starts the upstream call
// in the background; later rounds (the client retrying with our requestState) deliver
// the client's answer. Either way it returns the upstream's result, or the next
// question as an input-required result.
func (g *Gateway) bridged(ctx context.Context, u *upstream, ss *mcp.ServerSession, state string, responses mcp.InputResponseMap,
	run func(ctx context.Context, track inflightCall) (mcp.Result, error), inputRequired func(mcp.InputRequestMap, string) mcp.Result) (mcp.Result, error) {

	r, _ := RequestFrom(ctx)
	identity := ""
	if r != nil {
		identity = r.Identity.ID
	}
	var p *pendingCall
	if id, ok := strings.CutPrefix(state, bridgeStatePrefix); ok {
		g.bridge.mu.Lock()
		p = g.bridge.calls[id]
		g.bridge.mu.Unlock()
		if p == nil || p.identity != identity {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "unknown or expired requestState"}
		}
		p.mu.Lock()
		a := p.current
		p.current = nil
		p.mu.Unlock()
		resp := responses[bridgeInputKey]
		if a == nil || resp == nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("retry must answer inputRequests[%q]", bridgeInputKey)}
		}
		p.round.Store(&ctx)
		g.log.Debug("bridge: client answered", "upstream", u.cfg.Name, "call", p.id, "response", fmt.Sprintf("%T", resp))
		a.reply <- resp
	} else {
		p = &pendingCall{id: rand.Text(), identity: identity, asks: make(chan *bridgeAsk), done: make(chan bridgeOutcome, 1)}
		p.round.Store(&ctx)
		g.bridge.mu.Lock()
		if g.bridge.calls == nil {
			g.bridge.calls = map[string]*pendingCall{}
		}
		g.bridge.calls[p.id] = p
		g.bridge.mu.Unlock()
		g.wg.Add(1)
		go func() { // owned by the gateway; bounded by the upstream's timeout
			defer g.wg.Done()
			// The upstream call outlives this client request: it goes on while the
			// client answers. It ends with the upstream's timeout or the gateway.
			cctx, cancel := context.WithTimeout(context.Background(), u.cfg.Timeout)
			defer cancel()
			stop := context.AfterFunc(g.runCtx(), cancel)
			defer stop()
			res, err := run(cctx, inflightCall{ss: ss, ctx: cctx, bridged: p})
			p.done <- bridgeOutcome{res, err}
			// Keep the record a little while so a late retry gets a clear error.
			time.AfterFunc(time.Minute, func() {
				g.bridge.mu.Lock()
				delete(g.bridge.calls, p.id)
				g.bridge.mu.Unlock()
			})
		}()
	}
	select {
	case out := <-p.done:
		g.bridge.mu.Lock()
		delete(g.bridge.calls, p.id)
		g.bridge.mu.Unlock()
		return out.res, out.err
	case a := <-p.asks:
		p.mu.Lock()
		p.current = a
		p.mu.Unlock()
		g.log.Debug("bridge: upstream asks the client", "upstream", u.cfg.Name, "call", p.id, "request", fmt.Sprintf("%T", a.req))
		return inputRequired(mcp.InputRequestMap{bridgeInputKey: a.req}, bridgeStatePrefix+p.id), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// needsBridge reports whether a request from ss to u goes through the bridge.
func needsBridge(ctx context.Context, u *upstream, ss *mcp.ServerSession) bool {
	return ss != nil && !legacyClient(ss) && !u.connFor(ctx, ss).modern()
}
