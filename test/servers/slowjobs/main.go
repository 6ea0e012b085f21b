// Command slowjobs is an MCP stdio server (official go-sdk) that knows nothing of tasks:
// it speaks only the stateful 2025-11-25 protocol, declares no tasks capability and marks
// no tool task-supporting. Its tools are the fixtures the conformance suite's tasks-*
// scenarios call, so that the scenarios judge the tasks symbi adds in front of it.
//
// Tools:
//   - greet {name}: "Hello, NAME!" at once.
//   - slow_compute {seconds, label}: sleeps, then "computed LABEL after Ns".
//   - failing_job: after a second, a tool execution error (isError).
//   - protocol_error_job: after a second, a JSON-RPC internal error.
//   - confirm_delete {filename}: after a second, asks the client to confirm (elicitation).
//   - multi_input: after a second, asks two questions at once.
//   - test_tool_with_task: asks for user_name at once, then works for two seconds and
//     answers "Hello, NAME".
//
// With -log FILE (or SLOWJOBS_LOG), every notifications/cancelled it receives is
// appended to FILE as one JSON line, so tests can see a cancellation arrive.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	logFile := flag.String("log", os.Getenv("SLOWJOBS_LOG"), "file that receives one JSON line per notifications/cancelled")
	flag.Parse()
	var mu sync.Mutex
	var f *os.File
	if *logFile != "" {
		var err error
		if f, err = os.OpenFile(*logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
			log.Fatal(err)
		}
		defer f.Close()
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "slowjobs-test", Version: "1.0.0"},
		&mcp.ServerOptions{HasTools: true, SupportedProtocolVersions: []string{"2025-11-25"}})
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "notifications/cancelled" && f != nil {
				b, _ := json.Marshal(req.GetParams())
				mu.Lock()
				_, _ = f.Write(append(b, '\n'))
				mu.Unlock()
			}
			return next(ctx, method, req)
		}
	})
	obj := func(props map[string]any) map[string]any {
		return map[string]any{"type": "object", "properties": props}
	}
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	s.AddTool(&mcp.Tool{Name: "greet", Description: "Greet someone.", InputSchema: obj(map[string]any{"name": map[string]any{"type": "string"}})},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var a struct{ Name string }
			_ = json.Unmarshal(req.Params.Arguments, &a)
			return text("Hello, " + a.Name + "!"), nil
		})
	s.AddTool(&mcp.Tool{Name: "slow_compute", Description: "Sleep for some seconds, then answer.",
		InputSchema: obj(map[string]any{"seconds": map[string]any{"type": "number"}, "label": map[string]any{"type": "string"}})},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var a struct {
				Seconds float64
				Label   string
			}
			_ = json.Unmarshal(req.Params.Arguments, &a)
			if err := sleep(ctx, time.Duration(a.Seconds*float64(time.Second))); err != nil {
				return nil, err
			}
			return text(fmt.Sprintf("computed %s after %gs", a.Label, a.Seconds)), nil
		})
	s.AddTool(&mcp.Tool{Name: "failing_job", Description: "Fail after a second.", InputSchema: obj(map[string]any{})},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if err := sleep(ctx, time.Second); err != nil {
				return nil, err
			}
			r := text("the job failed")
			r.IsError = true
			return r, nil
		})
	s.AddTool(&mcp.Tool{Name: "protocol_error_job", Description: "Break after a second.", InputSchema: obj(map[string]any{})},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if err := sleep(ctx, time.Second); err != nil {
				return nil, err
			}
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "protocol_error_job broke"}
		})
	confirm := map[string]any{"type": "object", "properties": map[string]any{"confirm": map[string]any{"type": "boolean"}, "name": map[string]any{"type": "string"}}}
	s.AddTool(&mcp.Tool{Name: "confirm_delete", Description: "Ask before deleting a file.", InputSchema: obj(map[string]any{"filename": map[string]any{"type": "string"}})},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var a struct{ Filename string }
			_ = json.Unmarshal(req.Params.Arguments, &a)
			if err := sleep(ctx, time.Second); err != nil {
				return nil, err
			}
			res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "Delete " + a.Filename + "?", RequestedSchema: confirm})
			if err != nil {
				return nil, err
			}
			verb := "kept"
			if res.Action == "accept" && res.Content["confirm"] == true {
				verb = "deleted"
			}
			return text(verb + " " + a.Filename), nil
		})
	s.AddTool(&mcp.Tool{Name: "multi_input", Description: "Ask two questions at once.", InputSchema: obj(map[string]any{})},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if err := sleep(ctx, time.Second); err != nil {
				return nil, err
			}
			var wg sync.WaitGroup
			answers := make([]string, 2)
			errs := make([]error, 2)
			for i := range 2 {
				wg.Go(func() {
					res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: fmt.Sprintf("Question %d?", i+1), RequestedSchema: confirm})
					if err != nil {
						errs[i] = err
						return
					}
					answers[i] = fmt.Sprint(res.Content["name"])
				})
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					return nil, err
				}
			}
			return text("answers: " + answers[0] + ", " + answers[1]), nil
		})
	s.AddTool(&mcp.Tool{Name: "test_tool_with_task", Description: "Ask for a name, then work a while.", InputSchema: obj(map[string]any{})},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: "Your name?",
				RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}})
			if err != nil {
				return nil, err
			}
			if err := sleep(ctx, 2*time.Second); err != nil {
				return nil, err
			}
			return text(fmt.Sprintf("Hello, %v", res.Content["name"])), nil
		})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Fatal(err)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
