package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// syncToolsNotify makes the exposed tools of u match what it listed: removed tools go,
// new and changed ones are (re)registered; clients are told the list changed.
// With notify, clients are told the list changed even if nothing they see did (the
// upstream said so, and a client may care). raw holds the tools by name as the upstream
// sent them: what the ToolFilter verifies.
//
// seq orders the listings of u (see upstream.listing): syncs of one upstream apply one at
// a time, and a listing older than one already applied is dropped, so the gateway's
// table and the SDK's registry always hold the newest listing, and the same one.
func (g *Gateway) syncToolsNotify(ctx context.Context, u *upstream, seq uint64, listed []*mcp.Tool, raw map[string]json.RawMessage, notify bool) {
	var decisions []ToolDecision
	if g.opts.ToolFilter != nil {
		raws := make([]json.RawMessage, len(listed))
		for i, t := range listed {
			if raws[i] = raw[t.Name]; raws[i] == nil {
				// Not seen by the tap (it should see every listing): verify what the SDK
				// decoded instead, which at worst fails to verify.
				u.log.Warn("raw tool definition missing; verifying the decoded one", "tool", t.Name)
				raws[i], _ = json.Marshal(t)
			}
		}
		decisions = g.opts.ToolFilter(ctx, u.cfg.Name, raws)
	}
	u.syncMu.Lock()
	defer u.syncMu.Unlock()
	if !u.applies(featTools, seq) {
		return
	}
	next := map[string]*ToolInfo{}
	hidden := 0
	for i, t := range listed {
		d := ToolDecision{Verification: Verification{Status: "unsigned"}}
		if i < len(decisions) {
			d = decisions[i]
		}
		if d.Hidden {
			hidden++
			u.log.Info("tool hidden", "tool", t.Name, "status", d.Verification.Status, "reason", d.Verification.Reason)
			continue
		}
		if t.InputSchema == nil {
			t.InputSchema = map[string]any{"type": "object"}
		}
		exposed := *t
		exposed.Name = ExposedName(u.cfg.Prefix, t.Name)
		next[exposed.Name] = newToolInfo(ToolInfo{Name: exposed.Name, Upstream: u.cfg.Name, UpstreamName: t.Name, Tool: &exposed, Verification: d.Verification,
			TaskSupport: declaredTaskSupport(raw[t.Name])})
	}

	g.mu.Lock()
	var remove []string
	for name, ti := range g.tools {
		if ti.Upstream == u.cfg.Name && next[name] == nil {
			remove = append(remove, name)
			delete(g.tools, name)
		}
	}
	var add []*ToolInfo
	for _, name := range sortedNames(next) {
		ti := next[name]
		old, exists := g.tools[name]
		if exists && old.Upstream != u.cfg.Name {
			u.log.Warn("tool name collides; keeping the first", "tool", name, "other_upstream", old.Upstream)
			continue
		}
		if exists && sameTool(old, ti) {
			continue
		}
		g.tools[name] = ti
		add = append(add, ti)
	}
	names := map[string]string{}
	for name, ti := range g.tools {
		if ti.Upstream == u.cfg.Name {
			names[name] = ti.UpstreamName
		}
	}
	g.mu.Unlock()

	u.mu.Lock()
	u.toolNames, u.hidden = names, hidden
	u.mu.Unlock()
	g.metrics.hidden.WithLabelValues(u.cfg.Name).Set(float64(hidden))
	u.log.Debug("tools synced", "listed", len(listed), "added", len(add), "removed", len(remove), "hidden", hidden)

	if len(remove) > 0 {
		g.server.RemoveTools(remove...)
	}
	for _, ti := range add {
		if err := safeAdd(func() { g.server.AddTool(ti.Tool, g.toolHandler(u, ti)) }); err != nil {
			u.log.Warn("tool rejected", "tool", ti.UpstreamName, "err", err.Error())
			g.mu.Lock()
			delete(g.tools, ti.Name)
			g.mu.Unlock()
		}
	}
	if notify && len(add) == 0 && len(remove) == 0 {
		// Re-registering an unchanged tool is how the SDK is asked to send
		// notifications/tools/list_changed.
		for _, name := range sortedNames(names) {
			if ti, ok := g.Tool(name); ok {
				_ = safeAdd(func() { g.server.AddTool(ti.Tool, g.toolHandler(u, ti)) })
				break
			}
		}
	}
}

func sameTool(a, b *ToolInfo) bool {
	if a.Verification != b.Verification || a.UpstreamName != b.UpstreamName {
		return false
	}
	ja, _ := json.Marshal(a.Tool)
	jb, _ := json.Marshal(b.Tool)
	return string(ja) == string(jb)
}

func (g *Gateway) toolHandler(u *upstream, ti *ToolInfo) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if r, ok := RequestFrom(ctx); ok {
			if r.Tool != ti {
				// The table changed between the decision and now: what was decided is not
				// what would run.
				return nil, &Error{Kind: NotFound, Public: fmt.Sprintf("tool %q changed while the call was decided; list the tools again", ti.Name)}
			}
			if ask, err := g.approveRequest(r, &req.Params.RequestState, req.Params.InputResponses); err != nil || ask != nil {
				if err != nil {
					return nil, err
				}
				return &mcp.CallToolResult{InputRequests: ask.requests, RequestState: ask.state}, nil
			}
		}
		params := &mcp.CallToolParams{
			Meta:           upstreamMeta(req.Params.Meta),
			Name:           ti.UpstreamName,
			InputResponses: req.Params.InputResponses,
			RequestState:   req.Params.RequestState,
		}
		if len(req.Params.Arguments) > 0 {
			params.Arguments = req.Params.Arguments
		}
		clientToken := req.Params.GetProgressToken()
		run := func(ctx context.Context, track inflightCall) (*mcp.CallToolResult, error) {
			p := *params
			p.Meta = maps.Clone(params.Meta)
			tok, release := u.progressToken(track.context, req.Session, clientToken)
			defer release()
			if tok != "" {
				p.SetProgressToken(tok)
			}
			var res *mcp.CallToolResult
			err := u.callTracked(ctx, track, func(ctx context.Context, cs *mcp.ClientSession) error {
				var err error
				res, err = cs.CallTool(ctx, &p)
				return err
			})
			if err != nil {
				var ge *Error
				if errors.As(err, &ge) && ge.Kind == Unavailable {
					// A failing tool is a tool result with IsError, not a protocol error.
					return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: ge.Public}}}, nil
				}
				return nil, upstreamError(u, err)
			}
			return res, nil
		}
		return forwardMRTR(ctx, g, u, req.Session, req.Params.RequestState, req.Params.InputResponses, run,
			func(m mcp.InputRequestMap, state string) *mcp.CallToolResult {
				return &mcp.CallToolResult{InputRequests: m, RequestState: state}
			})
	}
}

// forwardMRTR runs a forwarded call that may need input from the client: directly, or
// through the bridge when the client speaks 2026-07-28 and the upstream 2025-11-25.
func forwardMRTR[R interface {
	mcp.Result
	comparable
}](ctx context.Context, g *Gateway, u *upstream, ss *mcp.ServerSession, state string, responses mcp.InputResponseMap,
	run func(context.Context, inflightCall) (R, error), inputRequired func(mcp.InputRequestMap, string) R) (R, error) {
	bridge := needsBridge(ctx, u, ss) || taskWindowFrom(ctx) && !u.primary.modern() // tasks run on the bridge
	if bridge && (state == "" || strings.HasPrefix(state, bridgeStatePrefix)) {
		res, err := g.bridged(ctx, u, ss, state, responses,
			func(ctx context.Context, track inflightCall) (mcp.Result, error) { return run(ctx, track) },
			func(m mcp.InputRequestMap, s string) mcp.Result { return inputRequired(m, s) })
		r, _ := res.(R)
		return r, err
	}
	return run(ctx, inflightCall{ss: ss, ctx: ctx})
}

// upstreamError passes an upstream's JSON-RPC error through unchanged and wraps anything
// else as an internal error that names the upstream.
func upstreamError(u *upstream, err error) error {
	var je *jsonrpc.Error
	if errors.As(err, &je) {
		return je
	}
	var ge *Error
	if errors.As(err, &ge) {
		return ge
	}
	return &Error{Kind: Internal, Public: fmt.Sprintf("upstream %q failed", u.cfg.Name), Err: err}
}

// syncPrompts makes the exposed prompts of u match what it listed (seq: see
// syncToolsNotify).
func (g *Gateway) syncPrompts(u *upstream, seq uint64, listed []*mcp.Prompt) {
	u.syncMu.Lock()
	defer u.syncMu.Unlock()
	if !u.applies(featPrompts, seq) {
		return
	}
	next := map[string]*mcp.Prompt{}
	orig := map[string]string{}
	for _, p := range listed {
		exposed := *p
		exposed.Name = ExposedName(u.cfg.Prefix, p.Name)
		next[exposed.Name] = &exposed
		orig[exposed.Name] = p.Name
	}
	g.mu.Lock()
	var remove []string
	for name, r := range g.prompts {
		if r.upstream == u.cfg.Name && next[name] == nil {
			remove = append(remove, name)
			delete(g.prompts, name)
		}
	}
	var add []*mcp.Prompt
	for _, name := range sortedNames(next) {
		if r, ok := g.prompts[name]; ok && r.upstream != u.cfg.Name {
			u.log.Warn("prompt name collides; keeping the first", "prompt", name, "other_upstream", r.upstream)
			continue
		}
		g.prompts[name] = route{upstream: u.cfg.Name, name: orig[name]}
		add = append(add, next[name])
	}
	g.mu.Unlock()
	u.mu.Lock()
	u.prompts = orig
	u.mu.Unlock()
	if len(remove) > 0 {
		g.server.RemovePrompts(remove...)
	}
	for _, p := range add {
		name := orig[p.Name]
		if err := safeAdd(func() { g.server.AddPrompt(p, g.promptHandler(u, name)) }); err != nil {
			u.log.Warn("prompt rejected", "prompt", name, "err", err.Error())
		}
	}
}

func (g *Gateway) promptHandler(u *upstream, name string) mcp.PromptHandler {
	return func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		if r, ok := RequestFrom(ctx); ok {
			if r.Upstream != u.cfg.Name {
				return nil, &Error{Kind: NotFound, Public: fmt.Sprintf("prompt %q changed while the request was decided; list the prompts again", r.Name)}
			}
			if ask, err := g.approveRequest(r, &req.Params.RequestState, req.Params.InputResponses); err != nil || ask != nil {
				if err != nil {
					return nil, err
				}
				return &mcp.GetPromptResult{InputRequests: ask.requests, RequestState: ask.state}, nil
			}
		}
		params := &mcp.GetPromptParams{
			Meta: upstreamMeta(req.Params.Meta), Name: name, Arguments: req.Params.Arguments,
			InputResponses: req.Params.InputResponses, RequestState: req.Params.RequestState,
		}
		run := func(ctx context.Context, track inflightCall) (*mcp.GetPromptResult, error) {
			var res *mcp.GetPromptResult
			err := u.callTracked(ctx, track, func(ctx context.Context, cs *mcp.ClientSession) error {
				var err error
				res, err = cs.GetPrompt(ctx, params)
				return err
			})
			if err != nil {
				return nil, upstreamError(u, err)
			}
			return res, nil
		}
		return forwardMRTR(ctx, g, u, req.Session, req.Params.RequestState, req.Params.InputResponses, run,
			func(m mcp.InputRequestMap, state string) *mcp.GetPromptResult {
				return &mcp.GetPromptResult{InputRequests: m, RequestState: state}
			})
	}
}

// syncResources makes the exposed resources and templates of u match what it listed
// (seq: see syncToolsNotify).
func (g *Gateway) syncResources(u *upstream, seq uint64, resources []*mcp.Resource, templates []*mcp.ResourceTemplate) {
	u.syncMu.Lock()
	defer u.syncMu.Unlock()
	if !u.applies(featResources, seq) {
		return
	}
	g.mu.Lock()
	var removeR, removeT []string
	keepR := map[string]bool{}
	for _, r := range resources {
		keepR[r.URI] = true
	}
	keepT := map[string]bool{}
	for _, t := range templates {
		keepT[t.URITemplate] = true
	}
	for uri, up := range g.resources {
		if up == u.cfg.Name && !keepR[uri] {
			removeR = append(removeR, uri)
			delete(g.resources, uri)
		}
	}
	for tpl, up := range g.templates {
		if up == u.cfg.Name && !keepT[tpl] {
			removeT = append(removeT, tpl)
			delete(g.templates, tpl)
		}
	}
	var addR []*mcp.Resource
	for _, r := range resources {
		if up, ok := g.resources[r.URI]; ok && up != u.cfg.Name {
			u.log.Warn("resource URI collides; keeping the first", "uri", r.URI, "other_upstream", up)
			continue
		}
		g.resources[r.URI] = u.cfg.Name
		addR = append(addR, r)
	}
	var addT []*mcp.ResourceTemplate
	for _, t := range templates {
		if up, ok := g.templates[t.URITemplate]; ok && up != u.cfg.Name {
			u.log.Warn("resource template collides; keeping the first", "template", t.URITemplate, "other_upstream", up)
			continue
		}
		g.templates[t.URITemplate] = u.cfg.Name
		addT = append(addT, t)
	}
	g.mu.Unlock()
	u.mu.Lock()
	u.resources = slices.Collect(maps.Keys(keepR))
	u.templates = slices.Collect(maps.Keys(keepT))
	u.mu.Unlock()

	if len(removeR) > 0 {
		g.server.RemoveResources(removeR...)
	}
	if len(removeT) > 0 {
		g.server.RemoveResourceTemplates(removeT...)
	}
	h := g.resourceHandler(u)
	for _, r := range addR {
		if err := safeAdd(func() { g.server.AddResource(r, h) }); err != nil {
			u.log.Warn("resource rejected", "uri", r.URI, "err", err.Error())
		}
	}
	for _, t := range addT {
		if err := safeAdd(func() { g.server.AddResourceTemplate(t, h) }); err != nil {
			u.log.Warn("resource template rejected", "template", t.URITemplate, "err", err.Error())
		}
	}
}

func (g *Gateway) resourceHandler(u *upstream) mcp.ResourceHandler {
	return func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		if r, ok := RequestFrom(ctx); ok {
			if r.Upstream != u.cfg.Name {
				return nil, &Error{Kind: NotFound, Public: fmt.Sprintf("resource %q changed while the request was decided; list the resources again", r.URI)}
			}
			if ask, err := g.approveRequest(r, &req.Params.RequestState, req.Params.InputResponses); err != nil || ask != nil {
				if err != nil {
					return nil, err
				}
				return &mcp.ReadResourceResult{InputRequests: ask.requests, RequestState: ask.state}, nil
			}
		}
		params := &mcp.ReadResourceParams{
			Meta: upstreamMeta(req.Params.Meta), URI: req.Params.URI,
			InputResponses: req.Params.InputResponses, RequestState: req.Params.RequestState,
		}
		run := func(ctx context.Context, track inflightCall) (*mcp.ReadResourceResult, error) {
			var res *mcp.ReadResourceResult
			err := u.callTracked(ctx, track, func(ctx context.Context, cs *mcp.ClientSession) error {
				var err error
				res, err = cs.ReadResource(ctx, params)
				return err
			})
			if err != nil {
				return nil, upstreamError(u, err)
			}
			return res, nil
		}
		return forwardMRTR(ctx, g, u, req.Session, req.Params.RequestState, req.Params.InputResponses, run,
			func(m mcp.InputRequestMap, state string) *mcp.ReadResourceResult {
				return &mcp.ReadResourceResult{InputRequests: m, RequestState: state}
			})
	}
}

// resourceUpstream names the upstream that serves uri: the one that listed it, or the
// one whose template matches it.
func (g *Gateway) resourceUpstream(uri string) string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if up, ok := g.resources[uri]; ok {
		return up
	}
	for tpl, up := range g.templates {
		if templatePrefixMatch(tpl, uri) {
			return up
		}
	}
	return ""
}

// templatePrefixMatch is a cheap routing test: the URI starts with the template's
// literal text before its first expression.
func templatePrefixMatch(tpl, uri string) bool {
	lit, _, _ := strings.Cut(tpl, "{")
	return lit != "" && strings.HasPrefix(uri, lit)
}

func (g *Gateway) completionRoute(ref *mcp.CompleteReference) route {
	g.mu.RLock()
	defer g.mu.RUnlock()
	switch ref.Type {
	case "ref/prompt":
		return g.prompts[ref.Name]
	case "ref/resource":
		if up, ok := g.templates[ref.URI]; ok {
			return route{upstream: up}
		}
		if up, ok := g.resources[ref.URI]; ok {
			return route{upstream: up}
		}
	}
	return route{}
}

func (g *Gateway) complete(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	if req.Params == nil || req.Params.Ref == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "completion needs a ref"}
	}
	rt := g.completionRoute(req.Params.Ref)
	u := g.upstream(rt.upstream)
	if u == nil {
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}, nil
	}
	params := *req.Params
	params.Meta = upstreamMeta(params.Meta)
	ref := *params.Ref
	if ref.Type == "ref/prompt" {
		ref.Name = rt.name
	}
	params.Ref = &ref
	var res *mcp.CompleteResult
	err := u.call(ctx, req.Session, func(ctx context.Context, cs *mcp.ClientSession) error {
		var err error
		res, err = cs.Complete(ctx, &params)
		return err
	})
	if err != nil {
		return nil, upstreamError(u, err)
	}
	return res, nil
}

// subscribe forwards the first subscription to a URI to its upstream; later ones only
// count. The SDK keeps track of which sessions are subscribed.
func (g *Gateway) subscribe(ctx context.Context, req *mcp.SubscribeRequest) error {
	uri := req.Params.URI
	if handled, err := g.subscribeBuiltin(ctx, uri); handled {
		return err
	}
	u := g.upstream(g.resourceUpstream(uri))
	if u == nil {
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("no upstream serves %q", uri)}
	}
	g.mu.Lock()
	g.subs[uri]++
	first := g.subs[uri] == 1
	g.mu.Unlock()
	if !first {
		return nil
	}
	err := u.call(ctx, nil, func(ctx context.Context, cs *mcp.ClientSession) error {
		return cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri})
	})
	if err != nil {
		g.mu.Lock()
		g.subs[uri]--
		g.mu.Unlock()
		return upstreamError(u, err)
	}
	return nil
}

func (g *Gateway) unsubscribe(ctx context.Context, req *mcp.UnsubscribeRequest) error {
	uri := req.Params.URI
	g.mu.Lock()
	if g.subs[uri] > 0 {
		g.subs[uri]--
	}
	last := g.subs[uri] == 0
	if last {
		delete(g.subs, uri)
	}
	g.mu.Unlock()
	u := g.upstream(g.resourceUpstream(uri))
	if !last || u == nil {
		return nil
	}
	err := u.call(ctx, nil, func(ctx context.Context, cs *mcp.ClientSession) error {
		return cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri})
	})
	if err != nil {
		return upstreamError(u, err)
	}
	return nil
}
