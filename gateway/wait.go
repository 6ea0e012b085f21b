package gateway

import (
	"context"
	"time"
)

// Every wait on a peer has a deadline and a cancel path. The helpers here bound what
// symbi sends a client on an upstream's behalf.

// notifyTimeout bounds the delivery of one notification (progress, log message,
// resource update) to a client: a client that stops reading must not stall the
// upstream connection whose messages symbi is relaying.
const notifyTimeout = 5 * time.Second

// askContext bounds a request symbi sends a client for an upstream (elicitation,
// sampling, roots) on a 2025-11-25 session. It keeps client's values (the identity the
// transport needs) and ends when the first of these does: the client's own request
// (client), the upstream's request (it withdrew its question: notifications/cancelled),
// the upstream's timeout, or the gateway.
func (u *upstream) askContext(upstreamReq, client context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(client, u.cfg.Timeout)
	stopUp := context.AfterFunc(upstreamReq, cancel)
	stopRun := context.AfterFunc(u.g.runCtx(), cancel)
	return ctx, func() {
		stopUp()
		stopRun()
		cancel()
	}
}

// notifyContext bounds the delivery of a notification to a client: notifyTimeout, or
// the gateway's end.
func (g *Gateway) notifyContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, notifyTimeout)
	stop := context.AfterFunc(g.runCtx(), cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}
