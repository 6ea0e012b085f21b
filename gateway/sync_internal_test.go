package gateway

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// registeredTools lists the tools the SDK serves, through a client session.
func registeredTools(t *testing.T, g *Gateway) []string {
	t.Helper()
	ctx := context.Background()
	ct, st := mcp.NewInMemoryTransports()
	ss, err := g.server.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tool.Name, BuiltinPrefix+"__") {
			names = append(names, tool.Name)
		}
	}
	slices.Sort(names)
	return names
}

// rawByName is the tools as an upstream would have sent them.
func rawByName(tools []*mcp.Tool) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	for _, t := range tools {
		m[t.Name], _ = json.Marshal(t)
	}
	return m
}

func tableTools(g *Gateway, upstream string) []string {
	var names []string
	for _, ti := range g.ToolList() {
		if ti.Upstream == upstream {
			names = append(names, ti.Name)
		}
	}
	return names
}

// TestSyncsOfOneUpstreamApplyInOrder: two listings of one upstream's tools overlap (a
// list_changed while a reconnect lists, say): the older one, still being verified when
// the newer one is applied, must not overwrite it afterwards. The gateway's table and
// the SDK's registry then both hold the newer listing.
func TestSyncsOfOneUpstreamApplyInOrder(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	filter := func(ctx context.Context, upstream string, raw []json.RawMessage) []ToolDecision {
		out := make([]ToolDecision, len(raw))
		for i, r := range raw {
			out[i] = ToolDecision{Verification: Verification{Status: "unsigned"}}
			if strings.Contains(string(r), `"old"`) {
				close(entered)
				<-release // the older listing is still being verified
			}
		}
		return out
	}
	g := New(&Options{ToolFilter: filter, Upstreams: []UpstreamConfig{{Name: "up", Prefix: "up"}}})
	t.Cleanup(func() { _ = g.Close() }) // ends what the test's clients start (goleak)
	u := g.upstream("up")
	schema := map[string]any{"type": "object"}
	older, newer := u.listing(featTools), u.listing(featTools)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: the test waits for it
		defer wg.Done()
		tools := []*mcp.Tool{{Name: "old", InputSchema: schema}, {Name: "kept", InputSchema: schema}}
		g.syncToolsNotify(context.Background(), u, older, tools, rawByName(tools), false)
	}()
	<-entered
	tools := []*mcp.Tool{{Name: "kept", InputSchema: schema}, {Name: "new", InputSchema: schema}}
	g.syncToolsNotify(context.Background(), u, newer, tools, rawByName(tools), false)
	close(release)
	wg.Wait()

	want := []string{"up__kept", "up__new"}
	if diff := cmp.Diff(want, tableTools(g, "up")); diff != "" {
		t.Errorf("gateway table (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, registeredTools(t, g)); diff != "" {
		t.Errorf("SDK registry (-want +got):\n%s", diff)
	}

	// The same for prompts and resources: an older listing applied late is dropped.
	olderP, newerP := u.listing(featPrompts), u.listing(featPrompts)
	g.syncPrompts(u, newerP, []*mcp.Prompt{{Name: "p2"}})
	g.syncPrompts(u, olderP, []*mcp.Prompt{{Name: "p1"}})
	if r := g.promptRoute("up__p1"); r.upstream != "" {
		t.Errorf("stale prompt listing applied: up__p1 routed to %q", r.upstream)
	}
	if r := g.promptRoute("up__p2"); r.upstream != "up" {
		t.Errorf("up__p2 routed to %q, want up", r.upstream)
	}
	olderR, newerR := u.listing(featResources), u.listing(featResources)
	g.syncResources(u, newerR, []*mcp.Resource{{URI: "test://b", Name: "b"}}, nil)
	g.syncResources(u, olderR, []*mcp.Resource{{URI: "test://a", Name: "a"}}, nil)
	if up := g.resourceUpstream("test://a"); up != "" {
		t.Errorf("stale resource listing applied: test://a routed to %q", up)
	}
	if up := g.resourceUpstream("test://b"); up != "up" {
		t.Errorf("test://b routed to %q, want up", up)
	}
}
