package gateway_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
)

// askerServer is an upstream that speaks only 2025-11-25 (so 2026-07-28 clients reach it
// through the bridge) and asks its client a question in the middle of "confirm". Like
// many servers, it does not withdraw the question when the call is cancelled. Every
// notifications/cancelled it receives is sent on cancelled.
func askerServer(cancelled chan<- *mcp.CancelledParams) func() *mcp.Server {
	return func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "asker", Version: "1"},
			&mcp.ServerOptions{HasTools: true, SupportedProtocolVersions: []string{"2025-11-25"}})
		s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
			return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
				if p, ok := req.GetParams().(*mcp.CancelledParams); ok && method == "notifications/cancelled" {
					select {
					case cancelled <- p:
					default:
					}
				}
				return next(ctx, method, req)
			}
		})
		s.AddTool(&mcp.Tool{Name: "confirm", InputSchema: map[string]any{"type": "object"}},
			func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				res, err := req.Session.Elicit(context.WithoutCancel(ctx), &mcp.ElicitParams{Message: "sure?",
					RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"ok": map[string]any{"type": "boolean"}}}})
				if err != nil {
					return nil, err
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: res.Action}}}, nil
			})
		return s
	}
}

// bridgeGateway runs a gateway in front of the asker (with the given upstream timeout)
// until the test ends or stop is called, and connects a 2026-07-28 client that handles
// input-required results itself.
func bridgeGateway(t *testing.T, timeout time.Duration, o gateway.Options) (cs *mcp.ClientSession, g *gateway.Gateway, cancelled <-chan *mcp.CancelledParams, stop func() error) {
	t.Helper()
	ch := make(chan *mcp.CancelledParams, 16)
	o.Upstreams = []gateway.UpstreamConfig{{Name: "ask", Prefix: "ask", Launch: serverLauncher(askerServer(ch)), Timeout: timeout}}
	o.InitialWait = 10 * time.Second
	g = gateway.New(&o)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- g.Run(ctx) }() // owned by the test: stop waits for it
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cs.Close()
		cancel()
		select {
		case err := <-ran:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Run did not return within 10s of its context's end")
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	g.WaitReady(ctx)
	ct, st := mcp.NewInMemoryTransports()
	if _, err := g.Server().Connect(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, &mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}})
	cs, err := c.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cs, g, ch, stop
}

func askConfirm(t *testing.T, cs *mcp.ClientSession) (*mcp.CallToolResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: "ask__confirm", Arguments: map[string]any{}})
}

func wantQuestion(t *testing.T, res *mcp.CallToolResult, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("call ask__confirm: %v", err)
	}
	if q, ok := res.InputRequests["symbi"].(*mcp.ElicitParams); !ok || q.Message != "sure?" {
		t.Fatalf("ask__confirm = %+v, want the upstream's question", res)
	}
}

// TestBridgeAbandonsUnansweredCall: a client that never answers does not keep the call:
// after InputTimeout the upstream's call is cancelled and the call forgotten, even
// though the upstream never withdraws its question.
func TestBridgeAbandonsUnansweredCall(t *testing.T) {
	cs, g, cancelled, _ := bridgeGateway(t, time.Minute, gateway.Options{InputTimeout: 200 * time.Millisecond})
	res, err := askConfirm(t, cs)
	wantQuestion(t, res, err)
	if n := g.BridgeStatus().Pending; n != 1 {
		t.Errorf("pending = %d, want 1", n)
	}
	select {
	case p := <-cancelled:
		if p.RequestID == nil {
			t.Errorf("notifications/cancelled without a request id: %+v", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream received no notifications/cancelled")
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.BridgeStatus().Pending != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d after the call was cancelled, want 0", g.BridgeStatus().Pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBridgeRunEndsWithPendingCalls: Run returns promptly when its context ends, even
// with calls waiting for a client that never answers and an upstream that never
// withdraws its question (it used to wait for them for ever).
func TestBridgeRunEndsWithPendingCalls(t *testing.T) {
	cs, g, _, stop := bridgeGateway(t, time.Hour, gateway.Options{InputTimeout: time.Hour})
	for range 2 {
		res, err := askConfirm(t, cs)
		wantQuestion(t, res, err)
	}
	if n := g.BridgeStatus().Pending; n != 2 {
		t.Errorf("pending = %d, want 2", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := g.BridgeStatus().Pending; n != 0 {
		t.Errorf("pending = %d after Run returned, want 0", n)
	}
}

// TestBridgeBound: beyond MaxPendingInputsPerIdentity a call is refused with the
// retryable unavailable error.
func TestBridgeBound(t *testing.T) {
	cs, g, _, _ := bridgeGateway(t, time.Hour, gateway.Options{InputTimeout: time.Hour, MaxPendingInputsPerIdentity: 1})
	res, err := askConfirm(t, cs)
	wantQuestion(t, res, err)
	_, err = askConfirm(t, cs)
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != gateway.CodeUnavailable {
		t.Fatalf("second pending call: %v, want error %d", err, gateway.CodeUnavailable)
	}
	st := g.BridgeStatus()
	if st.Pending != 1 || st.PendingByIdentity["local"] != 1 || st.MaxPendingPerIdentity != 1 {
		t.Errorf("BridgeStatus = %+v, want local's one call", st)
	}
}
