package gateway_test

import (
	"testing"

	"github.com/symbi-dev/symbi/policy"
)

// TestSSEUpstream: a legacy SSE upstream (the go-sdk's own SSE handler) stays connected
// after the handshake, lists its tools and answers calls through the gateway. It once
// went down straight after initialize: the SSE stream lived on the handshake's context.
func TestSSEUpstream(t *testing.T) {
	ts := newTraceGateway(t, "sse", false, policy.Default())
	cs := ts.connectInMemory(t)
	for i := range 3 {
		_, res, err := callTraced(t, ts.ctx, cs, nil)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if res.IsError {
			t.Fatalf("call %d through an SSE upstream failed: %+v", i, res.Content)
		}
	}
	if st := ts.g.Status(); len(st) != 1 || st[0].Transport != "sse" || st[0].Restarts != 0 {
		t.Errorf("status = %+v, want one sse upstream that never restarted", st)
	}
}
