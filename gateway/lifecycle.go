package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// upstreamSet is the gateway's upstreams in configuration order. A set is never changed
// once published: UpdateUpstreams builds a new one and swaps it in, so a reader holds a
// consistent snapshot without a lock.
type upstreamSet struct {
	list   []*upstream
	byName map[string]*upstream
}

func (s *upstreamSet) add(u *upstream) {
	s.list = append(s.list, u)
	s.byName[u.cfg.Name] = u
}

// upstreamList is a snapshot of the upstreams, in configuration order; callers must not
// modify it.
func (g *Gateway) upstreamList() []*upstream { return g.ups.Load().list }

// upstream is the upstream with that name, or nil.
func (g *Gateway) upstream(name string) *upstream { return g.ups.Load().byName[name] }

// newUpstream builds an upstream of g from its configuration (defaults applied).
func (g *Gateway) newUpstream(c UpstreamConfig) *upstream {
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Second
	}
	g.metrics.upstreamUp.WithLabelValues(c.Name).Set(0)
	return newUpstream(g, c)
}

// startUpstream runs u under its own context, a child of ctx (Run's); g.upMu must be held.
func (g *Gateway) startUpstream(ctx context.Context, u *upstream) {
	uctx, cancel := context.WithCancel(ctx)
	u.life.Store(&uctx)
	u.stop, u.done = cancel, make(chan struct{})
	done := u.done
	if !g.goOwned(func() { defer close(done); u.run(uctx) }) { // ends when uctx ends
		cancel()
		close(done)
	}
}

// runCtx is the upstream's own context once it runs, else the gateway's.
func (u *upstream) runCtx() context.Context {
	if c := u.life.Load(); c != nil {
		return *c
	}
	return u.g.runCtx()
}

// ErrUpstreamExists is returned by UpdateUpstreams for an added name already in use.
var ErrUpstreamExists = errors.New("upstream already exists")

// UpdateUpstreams changes the set of upstreams while the gateway runs (a configuration
// reload): the upstreams named in remove are stopped and their tools, prompts and
// resources withdrawn, then those in add are started (or, before Run, kept until Run
// starts them). An upstream whose configuration changed is passed in both: it is
// restarted under its new configuration, in the same place in the order. Clients are
// told the lists changed as the features come and go. ctx bounds the wait for the
// removed upstreams to stop; the change is made in any case.
//
// Names in remove that are not upstreams are ignored; an added name already in use (and
// not removed) is refused with ErrUpstreamExists, and nothing changes.
func (g *Gateway) UpdateUpstreams(ctx context.Context, remove []string, add []UpstreamConfig) error {
	g.upMu.Lock()
	defer g.upMu.Unlock()
	old := g.ups.Load()
	for _, c := range add {
		if _, ok := old.byName[c.Name]; ok && !slices.Contains(remove, c.Name) {
			return fmt.Errorf("add upstream %s: %w", c.Name, ErrUpstreamExists)
		}
	}
	// The new set keeps the order: a restarted upstream stays where it was, new ones go
	// last.
	next := &upstreamSet{byName: map[string]*upstream{}}
	adding := map[string]*upstream{}
	for _, c := range add {
		adding[c.Name] = g.newUpstream(c)
	}
	var removed []*upstream
	for _, u := range old.list {
		if !slices.Contains(remove, u.cfg.Name) {
			next.add(u)
			continue
		}
		removed = append(removed, u)
		if n, ok := adding[u.cfg.Name]; ok {
			next.add(n)
			delete(adding, u.cfg.Name)
		}
	}
	for _, c := range add {
		if n, ok := adding[c.Name]; ok {
			next.add(n)
		}
	}
	// Stop the removed ones first, so a restarted upstream's features are not refused as
	// collisions with its former self.
	for _, u := range removed {
		g.stopUpstream(ctx, u)
	}
	g.ups.Store(next)
	for _, u := range removed {
		if next.byName[u.cfg.Name] == nil {
			g.metrics.upstreamUp.DeleteLabelValues(u.cfg.Name)
		}
		u.log.Info("upstream removed")
	}
	if g.running {
		rctx := g.runCtx()
		for _, u := range next.list {
			if u.done == nil && !slices.Contains(removed, u) {
				g.startUpstream(rctx, u)
				u.log.Info("upstream added")
			}
		}
	}
	return nil
}

// stopUpstream ends u's connections (waiting for them, bounded by ctx) and withdraws
// everything it exposed; g.upMu must be held.
func (g *Gateway) stopUpstream(ctx context.Context, u *upstream) {
	if u.stop != nil {
		u.stop()
		select {
		case <-u.done:
		case <-ctx.Done():
			u.log.Warn("upstream did not stop in time; withdrawing its features anyway")
		}
	}
	u.syncMu.Lock()
	defer u.syncMu.Unlock()
	u.gone = true // a listing still under way no longer applies
	name := u.cfg.Name
	g.mu.Lock()
	var tools, prompts, resources, templates []string
	for n, ti := range g.tools {
		if ti.Upstream == name && !ti.Builtin {
			tools = append(tools, n)
			delete(g.tools, n)
		}
	}
	for n, r := range g.prompts {
		if r.upstream == name {
			prompts = append(prompts, n)
			delete(g.prompts, n)
		}
	}
	for uri, up := range g.resources {
		if up == name {
			resources = append(resources, uri)
			delete(g.resources, uri)
		}
	}
	for tpl, up := range g.templates {
		if up == name {
			templates = append(templates, tpl)
			delete(g.templates, tpl)
		}
	}
	g.mu.Unlock()
	u.mu.Lock()
	u.toolNames, u.prompts, u.resources, u.templates, u.hidden = nil, nil, nil, nil, 0
	u.mu.Unlock()
	if len(tools) > 0 {
		g.server.RemoveTools(tools...)
	}
	if len(prompts) > 0 {
		g.server.RemovePrompts(prompts...)
	}
	if len(resources) > 0 {
		g.server.RemoveResources(resources...)
	}
	if len(templates) > 0 {
		g.server.RemoveResourceTemplates(templates...)
	}
	u.log.Debug("upstream features withdrawn", "tools", len(tools), "prompts", len(prompts), "resources", len(resources)+len(templates))
}

// UpstreamStderr is the ring of the last stderr lines of the named upstream's current
// process (nil when it has none: an HTTP upstream, or one whose process keeps none);
// ok is false when no upstream has that name. A restart replaces the ring.
func (g *Gateway) UpstreamStderr(name string) (tail *StderrTail, ok bool) {
	u := g.upstream(name)
	if u == nil {
		return nil, false
	}
	u.primary.mu.Lock()
	defer u.primary.mu.Unlock()
	return u.primary.stderr, true
}
