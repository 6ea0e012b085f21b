package main

import (
	"context"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
)

type auditRecentIn struct {
	Limit    int    `json:"limit,omitempty" jsonschema:"how many events, newest last (default 50, at most 500)"`
	Tool     string `json:"tool,omitempty" jsonschema:"only events about this tool"`
	Decision string `json:"decision,omitempty" jsonschema:"only allow or deny"`
}

type auditRecentOut struct {
	Events []audit.Event `json:"events"`
}

// callerIdentity is the identity the gateway resolved for the current request.
func callerIdentity(ctx context.Context) string {
	if r, ok := gateway.RequestFrom(ctx); ok {
		return r.Identity.ID
	}
	return ""
}

// recentFor returns the newest recorded events of one identity: a client sees its own
// decisions; operators read the whole trail with `symbi audit query`.
func recentFor(log *audit.Log, identity string, in auditRecentIn) []audit.Event {
	limit := in.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 500)
	f := audit.Filter{Identity: identity, Tool: in.Tool, Decision: audit.Decision(in.Decision), Limit: limit}
	recs := f.Apply(log.Recent(1000))
	out := make([]audit.Event, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Event)
	}
	return out
}

// addAuditBuiltins exposes the caller's recent audited decisions as a tool and as the
// resource symbi://audit/recent.
func addAuditBuiltins(gw *gateway.Gateway, log *audit.Log) {
	gateway.AddBuiltinTool(gw, &mcp.Tool{
		Name:        gateway.BuiltinPrefix + "__audit_recent",
		Title:       "Recent audited decisions",
		Description: "List your own most recent requests through symbi as the audit trail recorded them: tool, decision (allow or deny), reason, conditions applied, outcome and latency.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)},
	}, func(ctx context.Context, _ *mcp.CallToolRequest, in auditRecentIn) (*mcp.CallToolResult, auditRecentOut, error) {
		return nil, auditRecentOut{Events: recentFor(log, callerIdentity(ctx), in)}, nil
	})
	gw.AddBuiltinResource(&mcp.Resource{
		URI: "symbi://audit/recent", Name: "audit-recent", Title: "Recent audited decisions",
		Description: "Your 50 most recent requests through symbi, as recorded in the audit trail (JSON).",
		MIMEType:    "application/json",
	}, func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		b, err := json.MarshalIndent(recentFor(log, callerIdentity(ctx), auditRecentIn{}), "", "  ")
		if err != nil {
			return nil, err
		}
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: string(b)}}}, nil
	})
}
