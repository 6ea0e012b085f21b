// Command mcpgo is an MCP server written with github.com/mark3labs/mcp-go, an
// implementation independent of the official SDK. symbi's end-to-end tests put it
// behind the gateway; besides ordinary tools it can misbehave on request (crash, hang,
// write garbage) so the tests can check that symbi survives it.
//
// Usage: mcpgo [-http ADDR | -sse ADDR]   (stdio when neither is given)
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

func main() {
	httpAddr := flag.String("http", "", "serve streamable HTTP at ADDR (path /mcp)")
	sseAddr := flag.String("sse", "", "serve legacy SSE at ADDR (paths /sse and /message)")
	flag.Parse()

	s := server.NewMCPServer("mcpgo-test", "1.0.0",
		server.WithToolCapabilities(true),
		server.WithResourceCapabilities(true, true),
		server.WithPromptCapabilities(true),
	)
	s.AddTool(mcp.NewTool("echo",
		mcp.WithDescription("Echo a message back."),
		mcp.WithString("message", mcp.Required(), mcp.Description("what to echo")),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		msg, err := req.RequireString("message")
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		return mcp.NewToolResultText("echo: " + msg), nil
	})
	s.AddTool(mcp.NewTool("add",
		mcp.WithDescription("Add two numbers."),
		mcp.WithNumber("a", mcp.Required()), mcp.WithNumber("b", mcp.Required()),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		a, _ := req.RequireFloat("a")
		b, _ := req.RequireFloat("b")
		return mcp.NewToolResultText(fmt.Sprint(a + b)), nil
	})
	s.AddTool(mcp.NewTool("sleep",
		mcp.WithDescription("Sleep for ms milliseconds (a hanging tool when ms is large)."),
		mcp.WithNumber("ms", mcp.Required()),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		ms, _ := req.RequireFloat("ms")
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return mcp.NewToolResultText("slept"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	s.AddTool(mcp.NewTool("crash",
		mcp.WithDescription("Exit the server process at once (status 3)."),
		mcp.WithDestructiveHintAnnotation(true),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		os.Exit(3)
		return nil, nil
	})
	s.AddTool(mcp.NewTool("garbage",
		mcp.WithDescription("Write a line that is not JSON-RPC to stdout, then answer normally."),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if *httpAddr == "" && *sseAddr == "" {
			fmt.Fprintln(os.Stdout, "this line is not JSON {{{")
			fmt.Fprintln(os.Stdout, `{"jsonrpc":"2.0","method":42}`)
		}
		return mcp.NewToolResultText("still here"), nil
	})
	s.AddTool(mcp.NewTool("secret",
		mcp.WithDescription("Return a text that contains a (fake) cloud credential."),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return mcp.NewToolResultText("config: aws_access_key_id=AKIAIOSFODNN7EXAMPLE region=us-east-1"), nil
	})
	s.AddTool(mcp.NewTool("env",
		mcp.WithDescription("Return the names of the environment variables the server sees."),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var names []string
		for _, kv := range os.Environ() {
			k, _, _ := strings.Cut(kv, "=")
			names = append(names, k)
		}
		return mcp.NewToolResultText(strings.Join(names, ",")), nil
	})
	s.AddResource(mcp.NewResource("mcpgo://greeting", "greeting", mcp.WithMIMEType("text/plain")),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/plain", Text: "hello from mcp-go"}}, nil
		})
	s.AddResource(mcp.NewResource("mcpgo://credentials", "credentials", mcp.WithMIMEType("text/plain")),
		func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
			return []mcp.ResourceContents{mcp.TextResourceContents{URI: req.Params.URI, MIMEType: "text/plain",
				Text: "aws_access_key_id=AKIAIOSFODNN7EXAMPLE region=us-east-1"}}, nil
		})
	s.AddPrompt(mcp.NewPrompt("greet", mcp.WithPromptDescription("Greet someone."), mcp.WithArgument("name", mcp.RequiredArgument())),
		func(ctx context.Context, req mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return mcp.NewGetPromptResult("greeting", []mcp.PromptMessage{
				mcp.NewPromptMessage(mcp.RoleUser, mcp.NewTextContent("Say hello to "+req.Params.Arguments["name"])),
			}), nil
		})

	var err error
	switch {
	case *httpAddr != "":
		err = server.NewStreamableHTTPServer(s).Start(*httpAddr)
	case *sseAddr != "":
		err = server.NewSSEServer(s).Start(*sseAddr)
	default:
		err = server.ServeStdio(s)
	}
	if err != nil {
		log.Fatal(err)
	}
}
