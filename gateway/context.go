package gateway

import (
	"context"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/policy"
)

// ToolVisible reports whether tools/list would show the named tool to the identity: the
// tool is served (not held back by verification) and the policy allows listing it. The
// built-in features that describe tools (semantic tool search) use it so that a hidden
// tool never appears through them.
func (g *Gateway) ToolVisible(ctx context.Context, id Identity, name string) bool {
	ti, ok := g.Tool(name)
	if !ok {
		return false
	}
	if g.policy == nil {
		return true
	}
	d := g.policy.decide(ctx, &policy.Input{Action: policy.ActionToolsList, Identity: policy.Identity{ID: id.ID, Kind: id.Kind, Claims: id.Claims},
		Upstream: ti.Upstream, Tool: ti.policyTool, Sandbox: g.sandboxInput(ti.Upstream)})
	return d.Allow
}

// ListBuiltinToolsOnly makes tools/list show symbi's built-in tools only (the policy
// step drops the others): upstream tools stay callable and are found with semantic tool
// search, which saves clients of many upstreams the context that hundreds of tool
// definitions take. ToolVisible is not affected.
func (g *Gateway) ListBuiltinToolsOnly(on bool) { g.listBuiltinOnly.Store(on) }

// ReadUpstreamResource reads a resource from the upstream that listed it (or whose
// template matches it), for a built-in feature acting for a client. The caller asks the
// policy (resources/read) and records the read first; ok is false when no upstream
// serves the URI.
func (g *Gateway) ReadUpstreamResource(ctx context.Context, uri string) (_ *mcp.ReadResourceResult, upstream string, ok bool, _ error) {
	upstream = g.resourceUpstream(uri)
	u := g.upstream(upstream)
	if u == nil {
		return nil, "", false, nil
	}
	var res *mcp.ReadResourceResult
	err := u.call(ctx, nil, func(ctx context.Context, cs *mcp.ClientSession) error {
		var err error
		res, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		return err
	})
	if err != nil {
		return nil, upstream, true, upstreamError(u, err)
	}
	return res, upstream, true, nil
}

// builtinTemplateKey marks a template among the built-in resources.
const builtinTemplateKey = "template:"

// AddBuiltinResourceTemplate registers one of symbi's own resource templates (URI scheme
// symbi://); reads of URIs it matches are served by h.
func (g *Gateway) AddBuiltinResourceTemplate(t *mcp.ResourceTemplate, h mcp.ResourceHandler) {
	g.server.AddResourceTemplate(t, h)
	g.builtinRes.Store(builtinTemplateKey+t.URITemplate, struct{}{})
}

// isBuiltinTemplate reports whether uri matches one of symbi's own resource templates.
func (g *Gateway) isBuiltinTemplate(uri string) bool {
	found := false
	g.builtinRes.Range(func(k, _ any) bool {
		if tpl, ok := strings.CutPrefix(k.(string), builtinTemplateKey); ok && templatePrefixMatch(tpl, uri) {
			found = true
		}
		return !found
	})
	return found
}
