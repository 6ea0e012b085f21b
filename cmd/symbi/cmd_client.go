package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
)

// clientKind is an MCP client whose configuration `symbi client config` writes: where
// its file is and how it lists servers.
type clientKind struct {
	top   string // the object that holds the servers: mcpServers or servers
	stdio bool   // entries carry "type": "stdio"
	path  func(home string) string
	note  string
}

var clientKinds = map[string]clientKind{
	"claude-desktop": {top: "mcpServers", path: claudeDesktopPath, note: "restart Claude Desktop to load it"},
	"claude-code":    {top: "mcpServers", stdio: true, path: func(string) string { return ".mcp.json" }, note: "project scope (.mcp.json in the current directory); claude mcp list shows it"},
	"vscode":         {top: "servers", stdio: true, path: func(string) string { return filepath.Join(".vscode", "mcp.json") }, note: "workspace scope (.vscode/mcp.json)"},
	"cursor":         {top: "mcpServers", path: func(home string) string { return filepath.Join(home, ".cursor", "mcp.json") }, note: "global scope (~/.cursor/mcp.json)"},
}

func claudeDesktopPath(home string) string {
	switch goruntime.GOOS {
	case "darwin":
		return filepath.Join(home, "Library", "Application Support", "Claude", "claude_desktop_config.json")
	case "windows":
		return filepath.Join(os.Getenv("APPDATA"), "Claude", "claude_desktop_config.json")
	}
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "Claude", "claude_desktop_config.json")
	}
	return filepath.Join(home, ".config", "Claude", "claude_desktop_config.json")
}

func clientKindNames() string {
	names := make([]string, 0, len(clientKinds))
	for n := range clientKinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, "|")
}

// runClient implements `symbi client config CLIENT [--write]`.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "config" {
		fmt.Fprintf(stderr, "usage: symbi client config %s [--config FILE] [--name NAME] [--write [--file PATH]]\n", clientKindNames())
		return 2
	}
	fs := spFlags("client config", stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "symbi's configuration file; default $SYMBI_CONFIG or ./symbi.toml")
	name := fs.String("name", "symbi", "the server's name in the client's configuration")
	write := fs.Bool("write", false, "merge the entry into the client's configuration file (other entries are kept)")
	file := fs.String("file", "", "with --write: the file to merge into (default: the client's usual file)")
	pos, ok := spParse(fs, args[1:])
	if !ok {
		return 2
	}
	if len(pos) != 1 {
		return spUsageErr(stderr, fs, "one client is needed: %s", clientKindNames())
	}
	kind, known := clientKinds[pos[0]]
	if !known {
		return spUsageErr(stderr, fs, "unknown client %q: %s", pos[0], clientKindNames())
	}
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		fmt.Fprintln(stderr, "symbi client config: find the symbi binary:", err)
		return 2
	}
	cfg, err := filepath.Abs(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "symbi client config:", err)
		return 2
	}
	if _, err := os.Stat(cfg); err != nil {
		fmt.Fprintf(stderr, "symbi client config: %v (create it first, e.g. with symbi add)\n", err)
		return 2
	}
	entry := map[string]any{"command": exe, "args": []string{"mcp", "--config", cfg}}
	if kind.stdio {
		entry["type"] = "stdio"
	}
	if !*write {
		b, _ := json.MarshalIndent(map[string]any{kind.top: map[string]any{*name: entry}}, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		home, _ := os.UserHomeDir()
		fmt.Fprintf(stderr, "# for %s: merge into %s (%s), or run again with --write\n", pos[0], kind.path(home), kind.note)
		return 0
	}
	target := *file
	if target == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			fmt.Fprintln(stderr, "symbi client config:", err)
			return 2
		}
		target = kind.path(home)
	}
	if err := mergeClientConfig(target, kind.top, *name, entry); err != nil {
		fmt.Fprintln(stderr, "symbi client config:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote server %q into %s (%s)\n", *name, target, kind.note)
	return 0
}

// mergeClientConfig sets top.name = entry in the JSON file at path, keeping every other
// key and entry; a missing file is created. A file that is not a JSON object is left
// alone (an error).
func mergeClientConfig(path, top, name string, entry map[string]any) error {
	doc := map[string]any{}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(bytes.TrimSpace(data)) > 0:
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			return fmt.Errorf("%s is not a JSON object (comments are not kept: merge by hand): %w", path, err)
		}
	}
	servers, ok := doc[top].(map[string]any)
	if !ok {
		if doc[top] != nil {
			return fmt.Errorf("%s: %q is not an object", path, top)
		}
		servers = map[string]any{}
	}
	servers[name] = entry
	doc[top] = servers
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	perm := os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	}
	return writeFileAtomic(path, append(b, '\n'), perm)
}
