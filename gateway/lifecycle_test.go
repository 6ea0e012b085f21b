package gateway_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
)

// namedServer is an upstream with one tool, named tool.
func namedServer(tool string) func() *mcp.Server {
	return func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "named", Version: "1"}, nil)
		mcp.AddTool(s, &mcp.Tool{Name: tool, Description: "A tool."},
			func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: tool + " ran"}}}, nil, nil
			})
		return s
	}
}

// TestUpdateUpstreams adds, restarts and removes upstreams of a running gateway: a
// connected client is told each time that the tools changed and lists exactly the tools
// of the upstreams in force.
func TestUpdateUpstreams(t *testing.T) {
	g, connect := testGateway(t, namedServer("first"), allowAll)
	changed := make(chan struct{}, 16)
	cs := connect(&mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}}, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	upstreamTools := func() []string {
		var names []string
		for tl, err := range cs.Tools(ctx, nil) {
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tl.Name, gateway.BuiltinPrefix+"__") {
				names = append(names, tl.Name)
			}
		}
		slices.Sort(names)
		return names
	}
	// waitTools waits for a list_changed notification and the listing to be want.
	waitTools := func(step string, want ...string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			if got := upstreamTools(); slices.Equal(got, want) {
				return
			}
			select {
			case <-changed:
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s: tools %v, want %v; status %+v", step, upstreamTools(), want, g.Status())
			}
		}
	}
	waitTools("start", "up__first")

	// Add one.
	drain(changed)
	if err := g.UpdateUpstreams(ctx, nil, []gateway.UpstreamConfig{{Name: "more", Prefix: "more", Launch: serverLauncher(namedServer("second"))}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("no tools/list_changed after adding an upstream")
	}
	waitTools("added", "more__second", "up__first")
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "more__second"})
	if err != nil || res.IsError {
		t.Fatalf("call the added upstream's tool: %v %+v", err, res)
	}
	if got := names(g.Status()); !slices.Equal(got, []string{"up", "more"}) {
		t.Errorf("status names %v", got)
	}

	// A name in use is refused, and nothing changes.
	if err := g.UpdateUpstreams(ctx, nil, []gateway.UpstreamConfig{{Name: "more", Launch: serverLauncher(namedServer("x"))}}); !errors.Is(err, gateway.ErrUpstreamExists) {
		t.Errorf("adding a name in use: %v", err)
	}

	// Restart one under a new configuration: it keeps its place.
	if err := g.UpdateUpstreams(ctx, []string{"up"}, []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(namedServer("third"))}}); err != nil {
		t.Fatal(err)
	}
	waitTools("changed", "more__second", "up__third")
	if got := names(g.Status()); !slices.Equal(got, []string{"up", "more"}) {
		t.Errorf("status names after a restart %v", got)
	}

	// Remove one.
	drain(changed)
	if err := g.UpdateUpstreams(ctx, []string{"more"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatal("no tools/list_changed after removing an upstream")
	}
	waitTools("removed", "up__third")
	if _, ok := g.Tool("more__second"); ok {
		t.Error("a removed upstream's tool is still in the table")
	}
	if _, ok := g.UpstreamStderr("more"); ok {
		t.Error("a removed upstream still reports its stderr")
	}
	if got := names(g.Status()); !slices.Equal(got, []string{"up"}) {
		t.Errorf("status names after removal %v", got)
	}
}

// TestUpdateUpstreamsConcurrent changes upstreams while clients list and call, for the
// race detector.
func TestUpdateUpstreamsConcurrent(t *testing.T) {
	g, connect := testGateway(t, namedServer("first"), allowAll)
	cs := connect(nil, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends at stop
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, err := range cs.Tools(ctx, nil) {
				if err != nil {
					t.Error(err)
					return
				}
			}
			_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "x__tool"})
			_ = g.Status()
		}
	}()
	for i := range 5 {
		var remove []string
		if i > 0 {
			remove = []string{"x"}
		}
		if err := g.UpdateUpstreams(ctx, remove, []gateway.UpstreamConfig{{Name: "x", Prefix: "x", Launch: serverLauncher(namedServer("tool"))}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := g.UpdateUpstreams(ctx, []string{"x"}, nil); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if _, ok := g.Tool("x__tool"); ok {
		t.Error("the removed upstream's tool is still exposed")
	}
}

// allowAll is a policy that allows everything.
var allowAll = gateway.PolicyOptions{Engine: engineFunc(func(*policy.Input) policy.Decision { return policy.Decision{Allow: true} })}

func drain(ch chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func names(st []gateway.UpstreamStatus) []string {
	var out []string
	for _, s := range st {
		out = append(out, s.Name)
	}
	return out
}
