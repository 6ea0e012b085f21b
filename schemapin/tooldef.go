package schemapin

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
)

// MetaKey is the _meta key under which a tool carries its SchemaPin signature.
const MetaKey = "schemapin/signature"

// signedFields are the fields of an MCP tool that a SchemaPin signature covers.
var signedFields = []string{"name", "description", "inputSchema", "outputSchema", "annotations", "title"}

// parsedTool is an MCP tool as an upstream listed it, split into what is signed and where
// a signature may sit.
type parsedTool struct {
	name       string
	canonical  []byte // ToolDefinition
	metaSig    string // _meta["schemapin/signature"]
	metaExpiry string
	inlineSig  string // inputSchema.signature
}

// maxTool bounds one tool definition.
const maxTool = 1 << 20

func parseTool(tool []byte) (*parsedTool, error) {
	if len(tool) > maxTool {
		return nil, fmt.Errorf("parse tool: larger than %d bytes", maxTool)
	}
	v, err := decodeJSON(tool)
	if err != nil {
		return nil, fmt.Errorf("parse tool: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("parse tool: not a JSON object")
	}
	p := &parsedTool{}
	p.name, _ = m["name"].(string)
	if p.name == "" {
		return nil, errors.New("parse tool: name missing")
	}
	def := make(map[string]any, len(signedFields))
	for _, f := range signedFields {
		if x, ok := m[f]; ok {
			def[f] = x
		}
	}
	if in, ok := m["inputSchema"].(map[string]any); ok {
		if s, ok := in["signature"]; ok {
			p.inlineSig, _ = s.(string)
			cp := make(map[string]any, len(in))
			for k, x := range in {
				if k != "signature" {
					cp[k] = x
				}
			}
			def["inputSchema"] = cp
		}
	}
	if meta, ok := m["_meta"].(map[string]any); ok {
		switch s := meta[MetaKey].(type) {
		case string:
			p.metaSig = s
		case map[string]any: // {"signature": ..., "expires_at": ...}
			p.metaSig, _ = s["signature"].(string)
			p.metaExpiry, _ = s["expires_at"].(string)
		}
	}
	if p.canonical, err = canonicalValue(def); err != nil {
		return nil, fmt.Errorf("parse tool: %w", err)
	}
	return p, nil
}

// ToolDefinition returns the canonical form of what a SchemaPin signature over an MCP tool
// covers: the fields name, description, inputSchema, outputSchema, annotations and title as
// the upstream lists them (those present), without _meta and without an inline
// inputSchema.signature. It also returns the tool's name.
func ToolDefinition(tool []byte) (canonical []byte, name string, err error) {
	p, err := parseTool(tool)
	if err != nil {
		return nil, "", err
	}
	return p.canonical, p.name, nil
}

// SignedForm returns the canonical form that a SchemaPin signature over the JSON document
// doc covers; signing (SignEnvelope, `symbi schemapin sign`) and verification (the gate,
// `symbi schemapin verify`) both call it, so they cannot disagree. An MCP tool (a JSON
// object with a string "name" and an "inputSchema" member, as tools/list returns it) is
// signed as ToolDefinition selects it: fields such as _meta, execution or icons, which a
// server may change without changing what the tool is, are not covered. Any other
// document (the reference SDKs' {"name","description","parameters"} schemas, say) is
// signed whole.
func SignedForm(doc []byte) ([]byte, error) {
	if isMCPTool(doc) {
		c, _, err := ToolDefinition(doc)
		return c, err
	}
	return Canonicalize(doc)
}

// isMCPTool reports whether doc is a JSON object with a string "name" and an
// "inputSchema" member.
func isMCPTool(doc []byte) bool {
	var probe struct {
		Name        *string         `json:"name"`
		InputSchema json.RawMessage `json:"inputSchema"`
	}
	return json.Unmarshal(doc, &probe) == nil && probe.Name != nil && len(probe.InputSchema) > 0
}

// SignTool signs an MCP tool definition (as ToolDefinition selects it) and returns the
// base64 signature to publish in the tool's _meta["schemapin/signature"]. symbi uses it for
// its own built-in tools.
func SignTool(priv *ecdsa.PrivateKey, tool []byte) (string, error) {
	c, _, err := ToolDefinition(tool)
	if err != nil {
		return "", fmt.Errorf("sign tool: %w", err)
	}
	return SignCanonical(priv, c, nil)
}

// WithSignature returns tool with sig set in _meta["schemapin/signature"], other fields
// unchanged (the result is canonical JSON).
func WithSignature(tool []byte, sig string) ([]byte, error) {
	v, err := decodeJSON(tool)
	if err != nil {
		return nil, fmt.Errorf("add signature: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("add signature: tool is not a JSON object")
	}
	meta, _ := m["_meta"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
	}
	meta[MetaKey] = sig
	m["_meta"] = meta
	return canonicalValue(m)
}

// manifest is a signed manifest: envelopes per tool, as a bare array or {"tools": [...]}.
func parseManifest(data []byte) (map[string]*Envelope, error) {
	var envs []*Envelope
	if err := json.Unmarshal(data, &envs); err != nil {
		var obj struct {
			Tools []*Envelope `json:"tools"`
		}
		if err2 := json.Unmarshal(data, &obj); err2 != nil {
			return nil, fmt.Errorf("parse manifest: %w", err)
		}
		envs = obj.Tools
	}
	out := make(map[string]*Envelope, len(envs))
	for i, e := range envs {
		if e == nil {
			return nil, fmt.Errorf("parse manifest: entry %d is null", i)
		}
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("parse manifest: entry %d: %w", i, err)
		}
		var n struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(e.Schema, &n); err != nil || n.Name == "" {
			return nil, fmt.Errorf("parse manifest: entry %d: schema has no name", i)
		}
		out[n.Name] = e
	}
	return out, nil
}
