// Command asker is an MCP stdio server (official go-sdk) that speaks only the stateful
// 2025-11-25 protocol and asks its client for input in the middle of a call, so that
// symbi bridges it for 2026-07-28 clients. Like many servers in the wild, it does not
// pass the cancellation of a call on to the question it asked: the elicitation stays
// open until its client answers or cancels it. It records every
// notifications/cancelled it receives, one JSON line each, in the file named by -log.
//
// Tools: confirm_delete {path} asks "Delete PATH?" and answers "deleted PATH" or
// "kept PATH"; echo {message} answers at once.
//
// Usage: asker -log FILE   (or ASKER_LOG=FILE)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	logFile := flag.String("log", os.Getenv("ASKER_LOG"), "file that receives one JSON line per notifications/cancelled")
	flag.Parse()
	if *logFile == "" {
		log.Fatal("asker: -log or ASKER_LOG is required")
	}
	f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	var mu sync.Mutex

	s := mcp.NewServer(&mcp.Implementation{Name: "asker-test", Version: "1.0.0"},
		&mcp.ServerOptions{HasTools: true, SupportedProtocolVersions: []string{"2025-11-25"}})
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "notifications/cancelled" {
				b, _ := json.Marshal(req.GetParams())
				mu.Lock()
				_, _ = f.Write(append(b, '\n'))
				mu.Unlock()
			}
			return next(ctx, method, req)
		}
	})
	s.AddTool(&mcp.Tool{Name: "confirm_delete", Description: "Ask the user before deleting a file.",
		InputSchema: map[string]any{"type": "object", "properties": map[string]any{"path": map[string]any{"type": "string"}}}},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var args struct {
				Path string `json:"path"`
			}
			_ = json.Unmarshal(req.Params.Arguments, &args)
			// The question outlives the call's cancellation on purpose (see the package
			// comment): only the client's answer or its cancellation ends it.
			res, err := req.Session.Elicit(context.WithoutCancel(ctx), &mcp.ElicitParams{
				Message: fmt.Sprintf("Delete %s?", args.Path),
				RequestedSchema: map[string]any{"type": "object",
					"properties": map[string]any{"confirm": map[string]any{"type": "boolean"}}},
			})
			if err != nil {
				return nil, err
			}
			verb := "kept"
			if res.Action == "accept" && res.Content["confirm"] == true {
				verb = "deleted"
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: verb + " " + args.Path}}}, nil
		})
	s.AddTool(&mcp.Tool{Name: "echo", Description: "Echo a message back.",
		InputSchema: map[string]any{"type": "object", "properties": map[string]any{"message": map[string]any{"type": "string"}}}},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			var args struct {
				Message string `json:"message"`
			}
			_ = json.Unmarshal(req.Params.Arguments, &args)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + args.Message}}}, nil
		})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Fatal(err)
	}
}
