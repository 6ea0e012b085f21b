package gateway

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BuiltinPrefix namespaces symbi's own tools.
const BuiltinPrefix = "symbi"

type statusOut struct {
	Server    string `json:"server"`
	Version   string `json:"version"`
	Uptime    string `json:"uptime"`
	Sessions  int    `json:"sessions"`
	Upstreams int    `json:"upstreams"`
	Up        int    `json:"upstreams_up"`
	Tools     int    `json:"tools"`
}

type upstreamsOut struct {
	Upstreams []UpstreamStatus `json:"upstreams"`
}

type toolsIn struct {
	Upstream string `json:"upstream,omitempty" jsonschema:"only tools of this upstream"`
}

type toolOut struct {
	Name         string       `json:"name"`
	Upstream     string       `json:"upstream"`
	UpstreamName string       `json:"upstream_name"`
	Verification Verification `json:"verification"`
}

type toolsOut struct {
	Tools []toolOut `json:"tools"`
}

// addBuiltins registers symbi's own tools, served with no upstream configured.
func (g *Gateway) addBuiltins() {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)}
	addBuiltinTool(g, &mcp.Tool{
		Name: BuiltinPrefix + "__status", Title: "Gateway status",
		Description: "Report symbi's version, uptime, open sessions and how many upstreams and tools it serves.",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, statusOut, error) {
		st := g.Status()
		up := 0
		for _, s := range st {
			if s.State == StateUp {
				up++
			}
		}
		g.mu.RLock()
		n := len(g.tools)
		g.mu.RUnlock()
		return nil, statusOut{
			Server: g.opts.Name, Version: g.opts.Version,
			Uptime:   time.Since(g.started).Round(time.Second).String(),
			Sessions: g.sessionCount(), Upstreams: len(st), Up: up, Tools: n,
		}, nil
	})
	addBuiltinTool(g, &mcp.Tool{
		Name: BuiltinPrefix + "__upstreams", Title: "Upstream servers",
		Description: "List the upstream MCP servers behind symbi with their state (up, down, starting), transport, sandbox tier, protocol version, tool counts, restarts and last error.",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, upstreamsOut, error) {
		return nil, upstreamsOut{Upstreams: g.Status()}, nil
	})
	addBuiltinTool(g, &mcp.Tool{
		Name: BuiltinPrefix + "__tools", Title: "Exposed tools",
		Description: "List every tool symbi exposes with the upstream it comes from, its name there and its SchemaPin verification status.",
		Annotations: readOnly,
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in toolsIn) (*mcp.CallToolResult, toolsOut, error) {
		out := toolsOut{Tools: []toolOut{}}
		for _, t := range g.ToolList() {
			if in.Upstream != "" && t.Upstream != in.Upstream {
				continue
			}
			out.Tools = append(out.Tools, toolOut{Name: t.Name, Upstream: t.Upstream, UpstreamName: t.UpstreamName, Verification: t.Verification})
		}
		return nil, out, nil
	})
}

// AddBuiltinTool registers another of symbi's own tools (for the domain packages'
// features); name must carry the "symbi__" prefix.
func AddBuiltinTool[In, Out any](g *Gateway, t *mcp.Tool, h mcp.ToolHandlerFor[In, Out]) {
	addBuiltinTool(g, t, h)
}

func addBuiltinTool[In, Out any](g *Gateway, t *mcp.Tool, h mcp.ToolHandlerFor[In, Out]) {
	// Fix the schemas now (the SDK would infer the same ones) so that what is signed is
	// exactly what clients are shown.
	if t.InputSchema == nil {
		t.InputSchema = schemaFor[In]()
	}
	if t.OutputSchema == nil {
		if s := schemaFor[Out](); s != nil && s.Type == "object" {
			t.OutputSchema = s
		}
	}
	v := Verification{Status: "unsigned", Domain: "symbi"}
	if g.opts.SignBuiltin != nil {
		def, err := json.Marshal(t)
		if err == nil {
			var sig, fp string
			if sig, fp, err = g.opts.SignBuiltin(def); err == nil {
				t.Meta = mcp.Meta{"schemapin/signature": sig}
				v = Verification{Status: "verified", Domain: "symbi", Fingerprint: fp}
			}
		}
		if err != nil {
			g.log.Error("sign built-in tool", "tool", t.Name, "err", err)
		}
	}
	mcp.AddTool(g.server, t, h)
	g.mu.Lock()
	g.tools[t.Name] = newToolInfo(ToolInfo{Name: t.Name, Upstream: "", UpstreamName: t.Name, Tool: t, Builtin: true, Verification: v})
	g.mu.Unlock()
}

func schemaFor[T any]() *jsonschema.Schema {
	rt := reflect.TypeFor[T]()
	if rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	s, err := jsonschema.ForType(rt, &jsonschema.ForOptions{})
	if err != nil {
		return nil
	}
	return s
}

// AddBuiltinResource registers one of symbi's own resources (URI scheme symbi://).
func (g *Gateway) AddBuiltinResource(r *mcp.Resource, h mcp.ResourceHandler) {
	g.builtinRes.Store(r.URI, struct{}{})
	g.server.AddResource(r, h)
}
