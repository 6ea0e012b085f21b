package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
)

// End-to-end tests of the policy step inside the package: a real upstream MCP server
// (run in process over pipes, as a stdio upstream), the gateway, and a go-sdk client.

const (
	argSecret    = "ghp_0123456789abcdefghijABCDEFGHIJ012345" // the client sends it
	resultSecret = "AKIAIOSFODNN7EXAMPLE"                     // the upstream returns it
)

// condServer is an upstream with one of each feature; each answer shows what the
// upstream received and carries resultSecret.
func condServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "cond-upstream", Version: "1"}, &mcp.ServerOptions{
		CompletionHandler: func(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{
				Values: []string{"got " + req.Params.Argument.Name + "=" + req.Params.Argument.Value, "key=" + resultSecret}}}, nil
		},
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	type in struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echo text."},
		func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "got text=" + a.Text + " key=" + resultSecret}}}, nil, nil
		})
	s.AddPrompt(&mcp.Prompt{Name: "greet", Arguments: []*mcp.PromptArgument{{Name: "text"}}},
		func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user",
				Content: &mcp.TextContent{Text: "got text=" + req.Params.Arguments["text"] + " key=" + resultSecret}}}}, nil
		})
	s.AddResource(&mcp.Resource{URI: "test://doc", Name: "doc"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "doc key=" + resultSecret}}}, nil
		})
	return s
}

// serverLauncher runs srv() as a stdio upstream over pipes.
func serverLauncher(srv func() *mcp.Server) gateway.Launcher {
	return func(ctx context.Context) (gateway.Process, error) {
		stdinR, stdinW := io.Pipe()
		stdoutR, stdoutW := io.Pipe()
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		p := &pipeProcess{stdinW: stdinW, stdoutR: stdoutR, cancel: cancel, done: make(chan struct{})}
		go func() { // owned by p: Stop and Wait wait for it
			defer close(p.done)
			p.err = srv().Run(ctx, &mcp.IOTransport{Reader: stdinR, Writer: stdoutW})
			stdoutW.Close()
			stdinR.Close()
		}()
		return p, nil
	}
}

// engineFunc is a policy engine written in Go.
type engineFunc func(in *policy.Input) policy.Decision

func (f engineFunc) Decide(_ context.Context, in *policy.Input) (policy.Decision, error) {
	return f(in), nil
}

// testGateway runs a gateway with one upstream "up" (prefix up) served by srv and the
// given policy options, and returns it with a way to connect clients.
func testGateway(t *testing.T, srv func() *mcp.Server, po gateway.PolicyOptions) (*gateway.Gateway, func(opts *mcp.ClientOptions, version string) *mcp.ClientSession) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{})
	var once sync.Once
	g := gateway.New(&gateway.Options{
		Upstreams: []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(srv)}},
		OnUpstreamState: func(_, state, _ string) {
			if state == gateway.StateUp {
				once.Do(func() { close(up) })
			}
		},
	})
	g.UsePolicy(po)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait() })
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		t.Fatalf("upstream not up: %+v", g.Status())
	}
	return g, func(opts *mcp.ClientOptions, version string) *mcp.ClientSession {
		t.Helper()
		ct, st := mcp.NewInMemoryTransports()
		ss, err := g.Server().Connect(ctx, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ss.Close() })
		var so *mcp.ClientSessionOptions
		if version != "" {
			so = &mcp.ClientSessionOptions{ProtocolVersion: version}
		}
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, opts).Connect(ctx, ct, so)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.Close() })
		return cs
	}
}

// doAction makes one request of the given kind with argument text (where the request
// has arguments) and returns the text of its answer. A tool error result is an error.
func doAction(ctx context.Context, cs *mcp.ClientSession, action, text string) (string, error) {
	switch action {
	case "tools/call":
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": text}})
		if err != nil {
			return "", err
		}
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		if res.IsError {
			return "", errors.New(b.String())
		}
		return b.String(), nil
	case "prompts/get":
		res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "up__greet", Arguments: map[string]string{"text": text}})
		if err != nil {
			return "", err
		}
		var b strings.Builder
		for _, m := range res.Messages {
			if tc, ok := m.Content.(*mcp.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return b.String(), nil
	case "resources/read":
		res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://doc"})
		if err != nil {
			return "", err
		}
		var b strings.Builder
		for _, c := range res.Contents {
			b.WriteString(c.Text)
		}
		return b.String(), nil
	case "resources/subscribe":
		return "", cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://doc"})
	case "completion/complete":
		res, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "up__greet"},
			Argument: mcp.CompleteParamsArgument{Name: "text", Value: text}})
		if err != nil {
			return "", err
		}
		return strings.Join(res.Completion.Values, " "), nil
	}
	return "", fmt.Errorf("unknown action %s", action)
}

// versionFor is the protocol a client speaks for action: resources/subscribe exists only
// before 2026-07-28 (which has subscriptions/listen instead); "" is the newest.
func versionFor(action string) string {
	if action == "resources/subscribe" {
		return "2025-11-25"
	}
	return ""
}

// TestPolicyConditionsEveryAction: every condition applies to every action it can apply
// to, and one that an action cannot honour refuses it and says so. The policy attaches
// the condition to every request; the client sends argSecret where the request has
// arguments, and the upstream answers with what it received and resultSecret.
func TestPolicyConditionsEveryAction(t *testing.T) {
	type want struct {
		refused string   // substring of the refusal; "" = allowed
		has     []string // in the answer
		hasNot  []string // not in the answer
	}
	masked := want{hasNot: []string{argSecret, resultSecret}}
	clean := want{has: []string{argSecret, resultSecret}}
	for _, cond := range []struct {
		name string
		c    policy.Condition
		want map[string]want
	}{
		{"redact_secrets", policy.Condition{Type: policy.CondRedactSecrets}, map[string]want{
			"tools/call":          {has: []string{"got text=ghp_****", "key=AKIA****"}, hasNot: masked.hasNot},
			"prompts/get":         {has: []string{"got text=ghp_****", "key=AKIA****"}, hasNot: masked.hasNot},
			"resources/read":      {has: []string{"doc key=AKIA****"}, hasNot: masked.hasNot},
			"resources/subscribe": {},
			"completion/complete": {has: []string{"got text=ghp_****", "key=AKIA****"}, hasNot: masked.hasNot},
		}},
		{"block_secrets", policy.Condition{Type: policy.CondBlockSecrets}, map[string]want{
			"tools/call":          {refused: "the arguments contain credentials"},
			"prompts/get":         {refused: "the arguments contain credentials"},
			"resources/read":      {refused: "the result contains credentials"},
			"resources/subscribe": {},
			"completion/complete": {refused: "the arguments contain credentials"},
		}},
		{"block_secrets_result", policy.Condition{Type: policy.CondBlockSecrets, Paths: []string{"result"}}, map[string]want{
			"tools/call":          {refused: "the result contains credentials"},
			"prompts/get":         {refused: "the result contains credentials"},
			"resources/read":      {refused: "the result contains credentials"},
			"resources/subscribe": {},
			"completion/complete": {refused: "the result contains credentials"},
		}},
		{"redact", policy.Condition{Type: policy.CondRedact, Paths: []string{"arguments.text"}}, map[string]want{
			"tools/call":          {has: []string{"got text=****", resultSecret}, hasNot: []string{argSecret}},
			"prompts/get":         {has: []string{"got text=****", resultSecret}, hasNot: []string{argSecret}},
			"resources/read":      {has: []string{"doc key=" + resultSecret}},
			"resources/subscribe": {},
			"completion/complete": {has: []string{"got text=****", resultSecret}, hasNot: []string{argSecret}},
		}},
		{"redact_uri", policy.Condition{Type: policy.CondRedact, Paths: []string{"arguments.uri"}}, map[string]want{
			"tools/call":          clean,
			"prompts/get":         clean,
			"resources/read":      {refused: "a URI cannot be masked"},
			"resources/subscribe": {refused: "a URI cannot be masked"},
			"completion/complete": clean,
		}},
		{"require_tier", policy.Condition{Type: policy.CondRequireTier, Tier: policy.TierGVisor}, map[string]want{
			"tools/call":          {refused: "policy requires sandbox tier gvisor"},
			"prompts/get":         {refused: "policy requires sandbox tier gvisor"},
			"resources/read":      {refused: "policy requires sandbox tier gvisor"},
			"resources/subscribe": {refused: "policy requires sandbox tier gvisor"},
			"completion/complete": {refused: "policy requires sandbox tier gvisor"},
		}},
		{"require_tier_met", policy.Condition{Type: policy.CondRequireTier, Tier: policy.TierNone}, map[string]want{
			"tools/call":          clean,
			"prompts/get":         clean,
			"resources/read":      {has: []string{resultSecret}},
			"resources/subscribe": {},
			"completion/complete": clean,
		}},
		{"require_approval", policy.Condition{Type: policy.CondRequireApproval}, map[string]want{
			// The client declares no elicitation: nobody can be asked.
			"tools/call":          {refused: "does not support elicitation"},
			"prompts/get":         {refused: "does not support elicitation"},
			"resources/read":      {refused: "does not support elicitation"},
			"resources/subscribe": {refused: "cannot ask for on resources/subscribe"},
			"completion/complete": {refused: "cannot ask for on completion/complete"},
		}},
	} {
		for _, action := range []string{"tools/call", "prompts/get", "resources/read", "resources/subscribe", "completion/complete"} {
			t.Run(cond.name+"/"+action, func(t *testing.T) {
				eng := engineFunc(func(in *policy.Input) policy.Decision {
					if strings.HasSuffix(in.Action, "/list") {
						return policy.Decision{Allow: true}
					}
					return policy.Decision{Allow: true, Conditions: []policy.Condition{cond.c}}
				})
				_, connect := testGateway(t, condServer, gateway.PolicyOptions{Engine: eng})
				cs := connect(nil, versionFor(action))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				w := cond.want[action]
				got, err := doAction(ctx, cs, action, argSecret)
				if w.refused != "" {
					if err == nil {
						t.Fatalf("not refused; answer %q", got)
					}
					if !strings.Contains(err.Error(), w.refused) {
						t.Errorf("refusal %q does not say %q", err, w.refused)
					}
					if strings.Contains(err.Error(), argSecret) || strings.Contains(err.Error(), resultSecret) {
						t.Errorf("refusal leaks a secret: %q", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				for _, s := range w.has {
					if !strings.Contains(got, s) {
						t.Errorf("answer %q lacks %q", got, s)
					}
				}
				for _, s := range w.hasNot {
					if strings.Contains(got, s) {
						t.Errorf("answer %q holds %q", got, s)
					}
				}
			})
		}
	}
}

// TestPolicyRateLimitEveryAction: a rate_limit condition counts requests of every action.
func TestPolicyRateLimitEveryAction(t *testing.T) {
	eng := engineFunc(func(in *policy.Input) policy.Decision {
		if strings.HasSuffix(in.Action, "/list") {
			return policy.Decision{Allow: true}
		}
		return policy.Decision{Allow: true, Conditions: []policy.Condition{{Type: policy.CondRateLimit, PerMinute: 1}}}
	})
	_, connect := testGateway(t, condServer, gateway.PolicyOptions{Engine: eng})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, action := range []string{"tools/call", "prompts/get", "resources/read", "resources/subscribe", "completion/complete"} {
		cs := connect(nil, versionFor(action))
		if _, err := doAction(ctx, cs, action, "hi"); err != nil {
			t.Errorf("%s: first request refused: %v", action, err)
		}
		_, err := doAction(ctx, cs, action, "hi")
		if err == nil || !strings.Contains(err.Error(), "rate limit of 1 per minute exceeded") {
			t.Errorf("%s: second request = %v, want a rate limit refusal", action, err)
		}
	}
}

// fakeClock is a settable clock for tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestApprovalOnceAndExpiring: an approval answers one request, once, before it
// expires. A 2026-07-28 client that handles input-required results itself gets the
// question with a request state; the accepted answer runs the call; the same state again
// (a replay), a state for other arguments, and a state answered after its expiry are
// refused. Prompts and resource reads are approved the same way.
func TestApprovalOnceAndExpiring(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	eng := engineFunc(func(in *policy.Input) policy.Decision {
		if strings.HasSuffix(in.Action, "/list") {
			return policy.Decision{Allow: true}
		}
		return policy.Decision{Allow: true, Conditions: []policy.Condition{{Type: policy.CondRequireApproval, Message: "approve?"}}}
	})
	_, connect := testGateway(t, condServer, gateway.PolicyOptions{Engine: eng, Now: clock.Now, ApprovalTTL: time.Minute})
	cs := connect(&mcp.ClientOptions{
		MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return nil, errors.New("not used: the test answers input requests itself")
		},
	}, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	yes := mcp.InputResponseMap{"symbi_approval": &mcp.ElicitResult{Action: "accept", Content: map[string]any{"approve": true}}}
	callTool := func(text, state string) (*mcp.CallToolResult, error) {
		p := &mcp.CallToolParams{Name: "up__echo", Arguments: map[string]any{"text": text}, RequestState: state}
		if state != "" {
			p.InputResponses = yes
		}
		return cs.CallTool(ctx, p)
	}
	ask := func(text string) string {
		t.Helper()
		res, err := callTool(text, "")
		if err != nil {
			t.Fatalf("first call: %v", err)
		}
		if res.InputRequests["symbi_approval"] == nil || res.RequestState == "" {
			t.Fatalf("first call did not ask for approval: %+v", res)
		}
		return res.RequestState
	}

	state := ask("one")
	res, err := callTool("one", state)
	if err != nil || res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "got text=one") {
		t.Fatalf("approved call = %v %+v", err, res)
	}
	for _, tc := range []struct {
		name, text, state, want string
		advance                 time.Duration
	}{
		{"replay", "one", state, "already used", 0},
		{"other_arguments", "two", ask("one"), "does not match", 0},
		{"forged", "one", "symbi-approval:AAAAAAAAAAAAAAAAAAAAAA.9999999999.AAAA", "does not match", 0},
		{"expired", "three", ask("three"), "expired", time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Add(tc.advance)
			res, err := callTool(tc.text, tc.state)
			if err == nil {
				t.Fatalf("not refused: %+v", res)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("refusal %q does not say %q", err, tc.want)
			}
		})
	}

	// Prompts and reads ask, and run once approved.
	pr, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "up__greet", Arguments: map[string]string{"text": "p"}})
	if err != nil || pr.RequestState == "" {
		t.Fatalf("prompt did not ask: %v %+v", err, pr)
	}
	pr, err = cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "up__greet", Arguments: map[string]string{"text": "p"}, RequestState: pr.RequestState, InputResponses: yes})
	if err != nil || len(pr.Messages) != 1 {
		t.Errorf("approved prompt = %v %+v", err, pr)
	}
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://doc"})
	if err != nil || rr.RequestState == "" {
		t.Fatalf("read did not ask: %v %+v", err, rr)
	}
	st := rr.RequestState
	rr, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://doc", RequestState: st, InputResponses: yes})
	if err != nil || len(rr.Contents) != 1 {
		t.Errorf("approved read = %v %+v", err, rr)
	}
	if _, err = cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://doc", RequestState: st, InputResponses: yes}); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("replayed read = %v, want refused", err)
	}
}

// TestUnknownTargetsRefused: a tool, prompt or resource the gateway does not expose is
// -32602 before any policy or upstream sees it; a resource's refusal names its URI in
// the error data (SEP-2164), which the conformance suite checks.
func TestUnknownTargetsRefused(t *testing.T) {
	var asked atomic.Int32
	eng := engineFunc(func(in *policy.Input) policy.Decision {
		if !strings.HasSuffix(in.Action, "/list") {
			asked.Add(1)
		}
		return policy.Decision{Allow: true}
	})
	_, connect := testGateway(t, condServer, gateway.PolicyOptions{Engine: eng})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := connect(nil, "")
	const uri = "test://nonexistent-resource"
	for _, tc := range []struct {
		name     string
		do       func() error
		wantData string
	}{
		{"tool", func() error {
			_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up__nope"})
			return err
		}, ""},
		{"prompt", func() error {
			_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "up__nope"})
			return err
		}, ""},
		{"resource", func() error {
			_, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
			return err
		}, `{"uri":"` + uri + `"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var je *jsonrpc.Error
			if !errors.As(err, &je) {
				t.Fatalf("error = %v, want a JSON-RPC error", err)
			}
			if je.Code != jsonrpc.CodeInvalidParams {
				t.Errorf("code = %d, want %d", je.Code, jsonrpc.CodeInvalidParams)
			}
			if got := string(je.Data); got != tc.wantData {
				t.Errorf("data = %s, want %s", got, tc.wantData)
			}
		})
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the policy was asked %d times about targets that do not exist", n)
	}
}

// TestListenDecidedByPolicy: under 2026-07-28 a client follows a resource with
// subscriptions/listen, and each URI it names is decided by the policy as the
// resources/subscribe of that URI would be. A refused URI never reaches the upstream
// (nor is acknowledged); an allowed one does. Both are audited as resources/subscribe.
func TestListenDecidedByPolicy(t *testing.T) {
	var upSubs sync.Map // URI -> true once the upstream was asked to subscribe
	srv := func() *mcp.Server {
		s := mcp.NewServer(&mcp.Implementation{Name: "sub-upstream", Version: "1"}, &mcp.ServerOptions{
			SubscribeHandler: func(_ context.Context, req *mcp.SubscribeRequest) error {
				upSubs.Store(req.Params.URI, true)
				return nil
			},
			UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
		})
		for _, uri := range []string{"test://open", "test://secret"} {
			s.AddResource(&mcp.Resource{URI: uri, Name: strings.TrimPrefix(uri, "test://")},
				func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
					return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "x"}}}, nil
				})
		}
		return s
	}
	var mu sync.Mutex
	var asked []string
	eng := engineFunc(func(in *policy.Input) policy.Decision {
		if strings.HasSuffix(in.Action, "/list") || in.Resource == nil {
			return policy.Decision{Allow: true}
		}
		mu.Lock()
		asked = append(asked, in.Resource.URI)
		mu.Unlock()
		if in.Resource.URI == "test://secret" {
			return policy.Decision{Allow: false, Reason: "secret resource"}
		}
		return policy.Decision{Allow: true}
	})
	g, connect := testGateway(t, srv, gateway.PolicyOptions{Engine: eng})
	dir := t.TempDir()
	trail, err := audit.Open(&audit.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = trail.Close() })
	g.UseAudit(gateway.AuditOptions{Log: trail}) // before any client connects
	cs := connect(nil, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	subscribe := func(uri string) error {
		// Under 2026-07-28 Subscribe opens the listen stream and does not report a refusal.
		sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
		defer scancel()
		return cs.Subscribe(sctx, &mcp.SubscribeParams{URI: uri})
	}
	_ = subscribe("test://secret")
	_ = subscribe("test://open")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := upSubs.Load("test://open"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the allowed subscription never reached the upstream")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := upSubs.Load("test://secret"); ok {
		t.Error("a subscription the policy refuses reached the upstream")
	}
	mu.Lock()
	got := strings.Join(asked, " ")
	mu.Unlock()
	if !strings.Contains(got, "test://secret") || !strings.Contains(got, "test://open") {
		t.Errorf("the policy was asked about %q, want both subscriptions", got)
	}

	if err := trail.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := audit.Query(ctx, dir, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	decided := map[string]string{}
	for _, r := range recs {
		if r.Event.Action == "resources/subscribe" {
			decided[r.Event.Resource] = string(r.Event.Decision) + "/" + string(r.Event.Outcome)
		}
	}
	if want := map[string]string{"test://secret": "deny/denied", "test://open": "allow/ok"}; !maps.Equal(decided, want) {
		t.Errorf("audited subscriptions = %v, want %v", decided, want)
	}

}
