package gateway

import (
	"context"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// SubscribeCheck decides whether the caller in ctx may subscribe to uri, one of symbi's
// own resources; an error refuses (its text goes to the client).
type SubscribeCheck func(ctx context.Context, uri string) error

// AllowBuiltinSubscribe lets clients subscribe (resources/subscribe) to the built-in
// resources matching the URI template tpl (registered with AddBuiltinResource or
// AddBuiltinResourceTemplate); check decides each subscription. Subscribers get
// notifications/resources/updated when the feature calls ResourceUpdated.
func (g *Gateway) AllowBuiltinSubscribe(tpl string, check SubscribeCheck) {
	g.builtinSubs.Store(tpl, check)
}

// ResourceUpdated tells the clients subscribed to uri, one of symbi's own resources,
// that it changed.
func (g *Gateway) ResourceUpdated(ctx context.Context, uri string) error {
	return g.server.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: uri})
}

// subscribeBuiltin decides a subscription to one of symbi's own resources. handled is
// false when uri is not one.
func (g *Gateway) subscribeBuiltin(ctx context.Context, uri string) (handled bool, err error) {
	var check SubscribeCheck
	g.builtinSubs.Range(func(k, v any) bool {
		tpl := k.(string)
		if tpl == uri || templatePrefixMatch(tpl, uri) {
			check = v.(SubscribeCheck)
		}
		return check == nil
	})
	if check == nil {
		if g.isBuiltinResource(uri) {
			return true, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("%q does not support subscriptions", uri)}
		}
		return false, nil
	}
	if err := check(ctx, uri); err != nil {
		return true, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
	}
	return true, nil
}
