package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
)

// corpusServer is the upstream of the fast-path comparison: a tool for each kind of
// answer a call can get.
func corpusServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "corpus-upstream", Version: "1"}, nil)
	type in struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echo text."},
		func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "got text=" + a.Text + " key=" + resultSecret}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "A tool error."},
		func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			return nil, nil, fmt.Errorf("it failed: %s", a.Text)
		})
	type out struct {
		Upper string `json:"upper"`
		N     int    `json:"n"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "structured", Description: "Structured output."},
		func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, out, error) {
			return nil, out{Upper: strings.ToUpper(a.Text), N: len(a.Text)}, nil
		})
	s.AddTool(&mcp.Tool{Name: "rpcerr", Description: "A JSON-RPC error.", InputSchema: map[string]any{"type": "object"}},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return nil, &jsonrpc.Error{Code: -32042, Message: "upstream refuses"}
		})
	s.AddTool(&mcp.Tool{Name: "empty", Description: "No content.", InputSchema: map[string]any{"type": "object"}},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "progress", Description: "Reports progress."},
		func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			if tok := req.Params.GetProgressToken(); tok != nil {
				for i := range 2 {
					if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i + 1), Total: 2}); err != nil {
						return nil, nil, err
					}
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done " + a.Text}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "ask", Description: "Asks the user mid-call."},
		func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "ok to " + a.Text + "?",
				RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"ok": map[string]any{"type": "boolean"}}}})
			if err != nil {
				return nil, nil, err
			}
			b, _ := json.Marshal(res.Content)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: res.Action + " " + string(b)}}}, nil, nil
		})
	return s
}

// corpusPolicy denies a call whose text is "deny", redacts secrets for "redact", masks
// the argument for "mask", and allows anything else.
func corpusPolicy(in *policy.Input) policy.Decision {
	text, _ := in.Arguments["text"].(string)
	switch text {
	case "deny":
		return policy.Decision{Reason: "the corpus says no"}
	case "redact":
		return policy.Decision{Allow: true, Conditions: []policy.Condition{{Type: policy.CondRedactSecrets}}}
	case "mask":
		return policy.Decision{Allow: true, Conditions: []policy.Condition{{Type: policy.CondRedact, Paths: []string{"arguments.text"}}}}
	}
	return policy.Decision{Allow: true}
}

// lineClient speaks newline-delimited JSON-RPC to a gateway's stdio session and keeps
// every line the gateway writes.
type lineClient struct {
	w  io.Writer
	rd *bufio.Reader
}

// exchange sends line and returns every line the gateway writes until the response with
// id; a request from the gateway (elicitation) is answered with answer. Progress
// notifications are left out: the SDK path forwards them asynchronously, so one may
// overtake the response, follow it or, once the call is over, be dropped.
func (c *lineClient) exchange(t *testing.T, line string, id string, answer string) []string {
	t.Helper()
	if _, err := io.WriteString(c.w, line+"\n"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		l, err := c.rd.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (after %q)", err, got)
		}
		l = strings.TrimSuffix(l, "\n")
		got = append(got, l)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("gateway wrote %q: %v", l, err)
		}
		switch {
		case m.Method != "" && len(m.ID) > 0: // a request to the client
			if _, err := io.WriteString(c.w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":`+answer+"}\n"); err != nil {
				t.Fatal(err)
			}
		case m.Method == "notifications/progress":
			got = got[:len(got)-1]
		case m.Method == "" && string(m.ID) == id:
			return got
		}
	}
}

// corpusGateway runs a gateway over corpusServer with corpusPolicy and opens a stdio
// client session on it (2025-11-25, able to elicit).
func corpusGateway(t *testing.T, noFast bool) (*gateway.Gateway, *lineClient) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{})
	var once sync.Once
	g := gateway.New(&gateway.Options{
		Upstreams: []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(corpusServer)}},
		OnUpstreamState: func(_, state, _ string) {
			if state == gateway.StateUp {
				once.Do(func() { close(up) })
			}
		},
		NoFastPath: noFast,
	})
	g.UsePolicy(gateway.PolicyOptions{Engine: engineFunc(corpusPolicy)})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		t.Fatalf("upstream not up: %+v", g.Status())
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.ServeStdio(ctx, inR, outW, inR)
		outW.Close()
	}()
	t.Cleanup(func() { cancel(); inW.Close(); outR.Close(); _ = g.Close(); wg.Wait() })
	c := &lineClient{w: inW, rd: bufio.NewReader(outR)}
	c.exchange(t, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}},"clientInfo":{"name":"corpus","version":"1"}}}`, "0", "")
	if _, err := io.WriteString(inW, `{"jsonrpc":"2.0","method":"notifications/initialized"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	return g, c
}

// TestFastPathSameBytes: for a corpus of calls, a gateway serving tools/call on its fast
// path writes exactly the bytes (results, errors, notifications, requests to the client)
// that one sending every call through the go-sdk client writes; and the calls that fit
// the fast path did take it.
func TestFastPathSameBytes(t *testing.T) {
	fastG, fast := corpusGateway(t, false)
	_, sdk := corpusGateway(t, true)
	call := func(id int, tool, args string, meta string) string {
		p := `{"name":"` + tool + `"`
		if args != "" {
			p += `,"arguments":` + args
		}
		if meta != "" {
			p += `,"_meta":` + meta
		}
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}}`, id, p)
	}
	accept := `{"action":"accept","content":{"ok":true}}`
	for i, tc := range []struct {
		name string
		line string
		fast bool // served on the fast path
	}{
		{"success", call(1, "up__echo", `{"text":"hello"}`, ""), true},
		{"success, spaced arguments", call(2, "up__echo", `{ "text" : "a \"quoted\" \u00e9 text" }`, ""), true},
		{"no arguments", call(3, "up__echo", "", ""), true},
		{"tool error", call(4, "up__fail", `{"text":"x"}`, ""), true},
		{"structured", call(5, "up__structured", `{"text":"abc"}`, ""), true},
		{"upstream JSON-RPC error", call(6, "up__rpcerr", `{}`, ""), true},
		{"empty result", call(7, "up__empty", `{}`, ""), true},
		{"unknown tool", call(8, "up__nope", `{"text":"x"}`, ""), false},
		{"policy deny", call(9, "up__echo", `{"text":"deny"}`, ""), false},
		{"condition redact_secrets", call(10, "up__echo", `{"text":"redact"}`, ""), true},
		{"condition redact arguments", call(11, "up__echo", `{"text":"mask"}`, ""), true},
		{"secret in arguments, redacted", call(12, "up__echo", `{"text":"redact `+argSecret+`"}`, ""), true},
		{"progress token: SDK path", call(13, "up__progress", `{"text":"p"}`, `{"progressToken":"tok-1"}`), false},
		{"no progress token", call(14, "up__progress", `{"text":"p"}`, ""), true},
		{"mid-call elicitation", call(15, "up__ask", `{"text":"go"}`, ""), true},
		{"other _meta", call(16, "up__echo", `{"text":"m"}`, `{"example.com/trace":"abc"}`), true},
		{"duplicate key", call(17, "up__echo", `{"text":"a","text":"b"}`, ""), false},
		{"arguments not an object", call(18, "up__echo", `["text"]`, ""), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprint(i + 1)
			before := gateway.FastCalls(fastG)
			want := sdk.exchange(t, tc.line, id, accept)
			got := fast.exchange(t, tc.line, id, accept)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("fast path wrote\n%s\nthe SDK path\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if took := gateway.FastCalls(fastG) - before; took != map[bool]uint64{true: 1, false: 0}[tc.fast] {
				t.Errorf("fast path calls %d, want fast=%v", took, tc.fast)
			}
		})
	}
}
