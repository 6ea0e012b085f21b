package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// recorder is a client that answers what the upstream asks through symbi and records
// what reaches it.
type recorder struct {
	mu       sync.Mutex
	elicits  []string
	samples  int
	progress []*mcp.ProgressNotificationParams
	logs     []*mcp.LoggingMessageParams
	toolsChg int
	updated  []string
}

func (r *recorder) options() *mcp.ClientOptions {
	return &mcp.ClientOptions{
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			r.mu.Lock()
			r.elicits = append(r.elicits, req.Params.Message)
			r.mu.Unlock()
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"username": "ada", "name": "Ada"}}, nil
		},
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			r.mu.Lock()
			r.samples++
			r.mu.Unlock()
			return &mcp.CreateMessageResult{Role: "assistant", Model: "fake-llm", Content: &mcp.TextContent{Text: "sampled by the client"}}, nil
		},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			r.mu.Lock()
			r.progress = append(r.progress, req.Params)
			r.mu.Unlock()
		},
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			r.mu.Lock()
			r.logs = append(r.logs, req.Params)
			r.mu.Unlock()
		},
		ToolListChangedHandler: func(ctx context.Context, req *mcp.ToolListChangedRequest) {
			r.mu.Lock()
			r.toolsChg++
			r.mu.Unlock()
		},
		ResourceUpdatedHandler: func(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			r.mu.Lock()
			r.updated = append(r.updated, req.Params.URI)
			r.mu.Unlock()
		},
	}
}

func (r *recorder) count(f func() int) func() bool {
	return func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return f() > 0
	}
}

// TestServerToClientForwarding checks that what an upstream starts reaches the client
// session that caused it, for both protocol generations.
func TestServerToClientForwarding(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("conf", "conf", everythingServer(t)))
	for _, tc := range []struct {
		name, version string
	}{
		{"2026-07-28", ""},
		{"2025-11-25", "2025-11-25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			opts := rec.options()
			cs := connectVersion(t, stdioTransport(t, cfg), opts, tc.version)
			legacy := tc.version != ""

			// In-band (multi round-trip) elicitation, sampling and roots work for both
			// generations: symbi passes input requests back, or turns them into requests
			// on a 2025-11-25 session.
			if text, isErr := callText(t, cs, "conf__test_input_required_result_elicitation", map[string]any{}); isErr || text != "Hello, Ada!" {
				t.Errorf("input_required elicitation = %q (error %v)", text, isErr)
			}
			if text, isErr := callText(t, cs, "conf__test_input_required_result_sampling", map[string]any{}); isErr || !strings.Contains(text, "sampled by the client") {
				t.Errorf("input_required sampling = %q (error %v)", text, isErr)
			}
			if legacy {
				// An upstream asking in the middle of a call reaches this session.
				if text, isErr := callText(t, cs, "conf__test_elicitation", map[string]any{"message": "who are you?"}); isErr || !strings.Contains(text, "action=accept") || !strings.Contains(text, "ada") {
					t.Errorf("elicitation = %q (error %v)", text, isErr)
				}
				if text, isErr := callText(t, cs, "conf__test_sampling", map[string]any{"prompt": "hi"}); isErr || !strings.Contains(text, "sampled by the client") {
					t.Errorf("sampling = %q (error %v)", text, isErr)
				}
			}
			rec.mu.Lock()
			if len(rec.elicits) == 0 || rec.samples == 0 {
				t.Errorf("client saw %d elicitations and %d sampling requests", len(rec.elicits), rec.samples)
			}
			rec.mu.Unlock()

			// Progress comes back with the client's own token.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			params := &mcp.CallToolParams{Name: "conf__test_tool_with_progress", Arguments: map[string]any{}}
			params.SetProgressToken("tok-42")
			res, err := cs.CallTool(ctx, params)
			if err != nil || res.IsError {
				t.Fatalf("progress tool: %v %+v", err, res)
			}
			waitFor(t, 5*time.Second, "progress notifications", rec.count(func() int { return len(rec.progress) }))
			rec.mu.Lock()
			for _, p := range rec.progress {
				if p.ProgressToken != "tok-42" {
					t.Errorf("progress token = %v, want tok-42", p.ProgressToken)
				}
			}
			rec.mu.Unlock()

			// Logging from the upstream reaches the client.
			if legacy {
				if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
					t.Fatal(err)
				}
			}
			logParams := &mcp.CallToolParams{Name: "conf__test_tool_with_logging", Arguments: map[string]any{}}
			if !legacy {
				// 2026-07-28 clients ask for logs per request.
				logParams.Meta = mcp.Meta{mcp.MetaKeyLogLevel: "debug"}
			}
			if res, err := cs.CallTool(ctx, logParams); err != nil || res.IsError {
				t.Fatalf("logging tool: %v %+v", err, res)
			}
			waitFor(t, 5*time.Second, "log messages", rec.count(func() int { return len(rec.logs) }))

			// Completion is routed to the upstream that owns the prompt.
			if _, err := cs.Complete(ctx, &mcp.CompleteParams{
				Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "conf__test_prompt_with_arguments"},
				Argument: mcp.CompleteParamsArgument{Name: "arg1", Value: "a"},
			}); err != nil {
				t.Errorf("complete: %v", err)
			}
		})
	}
}

func TestListChangedAndSubscriptions(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("conf", "conf", everythingServer(t)))
	rec := &recorder{}
	// The legacy generation has server-initiated notifications on the session.
	cs := connectVersion(t, stdioTransport(t, cfg), rec.options(), "2025-11-25")
	before := toolNames(t, cs)
	if _, isErr := callText(t, cs, "conf__test_trigger_tool_change", map[string]any{}); isErr {
		t.Fatal("trigger tool change failed")
	}
	waitFor(t, 10*time.Second, "tools/list_changed", rec.count(func() int { return rec.toolsChg }))
	waitFor(t, 10*time.Second, "the changed tool list", func() bool {
		return len(toolNames(t, cs)) != len(before)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://watched-resource"}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	waitFor(t, 15*time.Second, "resources/updated", rec.count(func() int { return len(rec.updated) }))
	rec.mu.Lock()
	if rec.updated[0] != "test://watched-resource" {
		t.Errorf("updated URI = %q", rec.updated[0])
	}
	rec.mu.Unlock()
	if err := cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: "test://watched-resource"}); err != nil {
		t.Errorf("unsubscribe: %v", err)
	}
}

// TestModernClientsPrepared: the first 2026-07-28 client makes symbi find out, before
// any call, how each upstream will serve such clients: directly (the go-sdk server speaks
// 2026-07-28) or through the bridge (the npm reference server does not). A 2025-11-25
// client alone does not.
func TestModernClientsPrepared(t *testing.T) {
	// Two configurations, so the two symbi processes have a data_dir each.
	toml := upstreamTOML("conf", "conf", everythingServer(t)) + upstreamTOML("ref", "ref", npmEverything(t)...)
	type upstreams struct {
		Upstreams []struct {
			Name        string `json:"name"`
			Clients2026 string `json:"clients_2026"`
		} `json:"upstreams"`
	}
	modes := func(cs *mcp.ClientSession) map[string]string {
		text, isErr := callText(t, cs, "symbi__upstreams", map[string]any{})
		var u upstreams
		if err := json.Unmarshal([]byte(text), &u); err != nil || isErr {
			t.Fatalf("symbi__upstreams = %s (%v)", text, err)
		}
		m := map[string]string{}
		for _, s := range u.Upstreams {
			m[s.Name] = s.Clients2026
		}
		return m
	}

	legacy := connectVersion(t, stdioTransport(t, writeConfig(t, toml)), nil, "2025-11-25")
	waitFor(t, 30*time.Second, "both upstreams' tools", func() bool {
		return listedNow(t, legacy, "conf__test_simple_text") && listedNow(t, legacy, "ref__echo")
	})
	if got := modes(legacy); got["conf"] != "" || got["ref"] != "" {
		t.Errorf("a 2025-11-25 client alone prepared 2026-07-28 connections: %v", got)
	}

	modern := connect(t, stdioTransport(t, writeConfig(t, toml)), nil)
	waitFor(t, 30*time.Second, "both upstreams' tools", func() bool {
		return listedNow(t, modern, "conf__test_simple_text") && listedNow(t, modern, "ref__echo")
	})
	want := map[string]string{"conf": "direct", "ref": "bridged"}
	waitFor(t, 30*time.Second, "2026-07-28 readiness of every upstream", func() bool {
		got := modes(modern)
		return got["conf"] == want["conf"] && got["ref"] == want["ref"]
	})
}

// TestListenDecidedByPolicy: a 2026-07-28 client follows a resource with
// subscriptions/listen, and the policy decides it as it decides resources/subscribe: a
// resource the policy refuses sends the client no notifications/resources/updated, one
// it allows does (the upstream announces a change every 3s).
func TestListenDecidedByPolicy(t *testing.T) {
	const uri = "test://watched-resource"
	for _, tc := range []struct {
		name   string
		policy string
	}{
		{"allowed", "package symbi.authz\n\ndefault decision := {\"allow\": true}\n"},
		{"denied", "package symbi.authz\n\ndefault decision := {\"allow\": true}\n\n" +
			"decision := {\"allow\": false, \"reason\": \"not watched\"} if {\n\tinput.resource.uri == \"" + uri + "\"\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := policyDir(t, map[string]string{"p.rego": tc.policy})
			cfg := writeConfig(t, upstreamTOML("conf", "conf", everythingServer(t))+fmt.Sprintf("[policy]\ndir = %q\n", pol))
			rec := &recorder{}
			cs := connectVersion(t, stdioTransport(t, cfg), rec.options(), "")
			waitFor(t, 30*time.Second, "the upstream's resources", func() bool {
				res, err := cs.ListResources(context.Background(), nil)
				return err == nil && len(res.Resources) > 0
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// Under 2026-07-28 Subscribe opens the listen stream; a refusal is not reported.
			_ = cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri})
			updated := rec.count(func() int { return len(rec.updated) })
			if tc.name == "allowed" {
				waitFor(t, 15*time.Second, "resources/updated", updated)
				return
			}
			time.Sleep(8 * time.Second) // two of the upstream's announcements
			if updated() {
				rec.mu.Lock()
				t.Errorf("a subscription the policy refuses was notified: %v", rec.updated)
				rec.mu.Unlock()
			}
		})
	}
}
