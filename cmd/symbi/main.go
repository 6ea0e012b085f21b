// Command symbi is the MCP security gateway: `symbi mcp` serves MCP over stdio,
// `symbi serve` over streamable HTTP, SSE and WebSocket; the other subcommands manage
// configuration, SchemaPin keys and pins, policies and the audit trail.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"
)

// defaultGCPercent is symbi's garbage-collection target when GOGC is not set. Each JSON
// decode in the MCP SDK allocates a fresh 32 KiB buffer, so a proxied call produces
// about half a megabyte of short-lived garbage while the live heap stays small (tens of
// MiB): at Go's default of 100 the collector ran often enough to take about a third of
// symbi's CPU under load (bench/README.md). 400 lets the heap grow to five times the
// live data between collections. GOGC (and GOMEMLIMIT) in the environment still win.
const defaultGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand: args exclude the subcommand's own name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"mcp":       {"serve MCP over stdio (stdout carries only protocol)", runMCP},
		"serve":     {"serve MCP over streamable HTTP (/mcp), SSE (/sse) and WebSocket (/ws)", runServe},
		"config":    {"validate|show a configuration file", runConfig},
		"version":   {"print the version", runVersion},
		"schemapin": {"keygen|sign|verify|wellknown|pins: SchemaPin keys, signatures and key pins", runSchemapin},
		"tools":     {"pending|approve|reject: the rug-pull quarantine of changed tool definitions", runTools},
		"policy":    {"eval|test: evaluate Rego policies and run their tests", runPolicy},
		"audit":     {"verify|tail|query|report: the tamper-evident audit trail", runAudit},
		"agents":    {"list|status|run|suspend|resume|terminate: the agents of a running symbi", runAgents},
		"bus":       {"rotate-key: the agent bus's master key", runBus},
		"kb":        {"ingest|search|stats: the knowledge base behind symbi__knowledge_search and symbi__rag_answer", runKB},
		"add":       {"add an upstream to the configuration (a command, a URL, or a catalog name) and reload", runAdd},
		"remove":    {"remove an upstream from the configuration and reload", runRemove},
		"ls":        {"list the upstreams of the running symbi: state, tools, tier, verification", runLs},
		"logs":      {"print an upstream's stderr (-f to follow) from the running symbi", runLogs},
		"client":    {"config claude-desktop|claude-code|vscode|cursor [--write]: the client's configuration for this symbi", runClient},
		"doctor":    {"check that a configuration can run here (state, policy, upstreams, sandbox tiers, risk assessment)", runDoctor},
	}
}

// run is the whole CLI, testable: it returns the exit code (0 ok, 1 a negative
// result, 2 usage or configuration error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "symbi: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: symbi <command> [flags]")
	fmt.Fprintln(w)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'symbi <command> -h' for a command's flags.")
}
