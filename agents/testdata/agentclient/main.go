// Command agentclient is the fixture of container agents: an MCP client on its stdio,
// where symbi serves it a session as the agent. Each argument is a step: TOOL or
// TOOL=JSON calls that tool (with those arguments), sleep=DURATION waits, exit=N exits
// with N. It reports every call on stderr and exits 0 when every call succeeded, 3 when
// one failed (a tool error or a JSON-RPC error, such as a policy denial).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx := context.Background()
	c := mcp.NewClient(&mcp.Implementation{Name: "agentclient", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.IOTransport{Reader: os.Stdin, Writer: os.Stdout}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 2
	}
	defer cs.Close()
	fmt.Fprintf(os.Stderr, "agent %s (%s) run %s\n", os.Getenv("SYMBI_AGENT"), os.Getenv("SYMBI_IDENTITY"), os.Getenv("SYMBI_RUN"))
	code := 0
	for _, step := range os.Args[1:] {
		name, arg, _ := strings.Cut(step, "=")
		switch name {
		case "sleep":
			d, err := time.ParseDuration(arg)
			if err != nil {
				fmt.Fprintln(os.Stderr, "sleep:", err)
				return 2
			}
			time.Sleep(d)
			continue
		case "exit":
			n, _ := strconv.Atoi(arg)
			return n
		}
		args := map[string]any{}
		if arg != "" {
			if err := json.Unmarshal([]byte(arg), &args); err != nil {
				fmt.Fprintf(os.Stderr, "%s: bad arguments: %v\n", name, err)
				return 2
			}
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "%s: error: %v\n", name, err)
			code = 3
		case res.IsError:
			fmt.Fprintf(os.Stderr, "%s: tool error\n", name)
			code = 3
		default:
			fmt.Fprintf(os.Stderr, "%s: ok\n", name)
		}
	}
	return code
}
