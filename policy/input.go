package policy

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Terms for the keys of the input document, built once.
var (
	keyAction       = ast.StringTerm("action")
	keyIdentity     = ast.StringTerm("identity")
	keyID           = ast.StringTerm("id")
	keyKind         = ast.StringTerm("kind")
	keyClaims       = ast.StringTerm("claims")
	keyUpstream     = ast.StringTerm("upstream")
	keyTool         = ast.StringTerm("tool")
	keyName         = ast.StringTerm("name")
	keyUpstreamName = ast.StringTerm("upstream_name")
	keyAnnotations  = ast.StringTerm("annotations")
	keyVerification = ast.StringTerm("verification")
	keyStatus       = ast.StringTerm("status")
	keyDomain       = ast.StringTerm("domain")
	keyFingerprint  = ast.StringTerm("fingerprint")
	keyArguments    = ast.StringTerm("arguments")
	keyResource     = ast.StringTerm("resource")
	keyURI          = ast.StringTerm("uri")
	keyPrompt       = ast.StringTerm("prompt")
	keySandbox      = ast.StringTerm("sandbox")
	keyTier         = ast.StringTerm("tier")
)

// reservedKeys are the top-level input keys that Extra may not override.
var reservedKeys = map[string]bool{
	"action": true, "identity": true, "upstream": true, "tool": true, "arguments": true,
	"resource": true, "prompt": true, "sandbox": true,
}

// Value converts the input to the Rego value a policy sees as `input`. It builds the
// value directly, without a JSON round trip, so a decision allocates little.
func (in *Input) Value() (ast.Value, error) { return in.value(nil) }

// value is Value restricted to the top-level fields in top (nil: all of them). The
// decision cache keys on the fields a policy reads, so on a hit nothing else needs
// converting.
func (in *Input) value(top map[string]bool) (ast.Value, error) {
	want := func(k string) bool { return top == nil || top[k] }
	items := make([][2]*ast.Term, 0, 8+len(in.Extra))
	if want("action") {
		items = append(items, [2]*ast.Term{keyAction, ast.InternedTerm(in.Action)})
	}

	if want("identity") {
		id := make([][2]*ast.Term, 0, 3)
		id = append(id, [2]*ast.Term{keyID, ast.InternedTerm(in.Identity.ID)})
		if in.Identity.Kind != "" {
			id = append(id, [2]*ast.Term{keyKind, ast.InternedTerm(in.Identity.Kind)})
		}
		claims, err := mapValue(in.Identity.Claims)
		if err != nil {
			return nil, fmt.Errorf("convert identity claims: %w", err)
		}
		id = append(id, [2]*ast.Term{keyClaims, ast.NewTerm(claims)})
		items = append(items, [2]*ast.Term{keyIdentity, ast.NewTerm(ast.NewObject(id...))})
	}

	if in.Upstream != "" && want("upstream") {
		items = append(items, [2]*ast.Term{keyUpstream, ast.InternedTerm(in.Upstream)})
	}
	if t := in.Tool; t != nil && want("tool") {
		ann, err := mapValue(t.Annotations)
		if err != nil {
			return nil, fmt.Errorf("convert tool annotations: %w", err)
		}
		ver := make([][2]*ast.Term, 0, 3)
		if t.Verification.Status != "" {
			ver = append(ver, [2]*ast.Term{keyStatus, ast.InternedTerm(t.Verification.Status)})
		}
		if t.Verification.Domain != "" {
			ver = append(ver, [2]*ast.Term{keyDomain, ast.StringTerm(t.Verification.Domain)})
		}
		if t.Verification.Fingerprint != "" {
			ver = append(ver, [2]*ast.Term{keyFingerprint, ast.StringTerm(t.Verification.Fingerprint)})
		}
		items = append(items, [2]*ast.Term{keyTool, ast.ObjectTerm(
			[2]*ast.Term{keyName, ast.InternedTerm(t.Name)},
			[2]*ast.Term{keyUpstreamName, ast.InternedTerm(t.UpstreamName)},
			[2]*ast.Term{keyAnnotations, ast.NewTerm(ann)},
			[2]*ast.Term{keyVerification, ast.ObjectTerm(ver...)},
		)})
	}
	withArgs := want("arguments")
	lazyArgs := withArgs && len(in.Arguments) > lazyThreshold
	if in.Arguments != nil && withArgs && !lazyArgs {
		args, err := mapValue(in.Arguments)
		if err != nil {
			return nil, fmt.Errorf("convert arguments: %w", err)
		}
		items = append(items, [2]*ast.Term{keyArguments, ast.NewTerm(args)})
	}
	if in.Resource != nil && want("resource") {
		items = append(items, [2]*ast.Term{keyResource, ast.ObjectTerm([2]*ast.Term{keyURI, ast.StringTerm(in.Resource.URI)})})
	}
	if in.Prompt != nil && want("prompt") {
		items = append(items, [2]*ast.Term{keyPrompt, ast.ObjectTerm([2]*ast.Term{keyName, ast.StringTerm(in.Prompt.Name)})})
	}
	if in.Sandbox != nil && want("sandbox") {
		items = append(items, [2]*ast.Term{keySandbox, ast.ObjectTerm([2]*ast.Term{keyTier, ast.InternedTerm(in.Sandbox.Tier)})})
	}
	for k, v := range in.Extra {
		if reservedKeys[k] || !want(k) {
			continue
		}
		val, err := ast.InterfaceToValue(v)
		if err != nil {
			return nil, fmt.Errorf("convert input field %q: %w", k, err)
		}
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(val)})
	}
	if lazyArgs {
		// Large arguments are converted lazily, key by key, when a policy reads them.
		// That only works if the objects above them are lazy too (building an object
		// hashes its values, which converts them), so the top level is lazy here.
		native := make(map[string]any, len(items)+1)
		for _, kv := range items {
			native[string(kv[0].Value.(ast.String))] = kv[1].Value
		}
		native["arguments"] = in.Arguments
		return ast.LazyObject(native), nil
	}
	return ast.NewObject(items...), nil
}

var emptyObject = ast.NewObject()

// lazyThreshold is the number of arguments above which they are converted lazily: a
// key is converted when a policy reads it, so large arguments cost nothing unless the
// policy looks at them. Small maps are cheaper to convert at once. (A value that cannot
// be converted lazily panics inside the evaluator; DecideValue recovers and denies.)
const lazyThreshold = 8

// mapValue converts a JSON-like map; nil becomes an empty object so policies can index
// into it without checking for presence first.
func mapValue(m map[string]any) (ast.Value, error) {
	if len(m) == 0 {
		return emptyObject, nil
	}
	return ast.InterfaceToValue(m)
}

// ParseInput decodes an input document from JSON (the shape of DESIGN.md). Top-level keys
// other than the known ones are kept in Extra. Numbers are kept exact (json.Number).
func ParseInput(data []byte) (*Input, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("decode input: %w", err)
	}
	if raw == nil {
		return nil, fmt.Errorf("decode input: not a JSON object")
	}
	in := &Input{}
	for k, v := range raw {
		var dst any
		switch k {
		case "action":
			dst = &in.Action
		case "identity":
			dst = &in.Identity
		case "upstream":
			dst = &in.Upstream
		case "tool":
			dst = &in.Tool
		case "arguments":
			dst = &in.Arguments
		case "resource":
			dst = &in.Resource
		case "prompt":
			dst = &in.Prompt
		case "sandbox":
			dst = &in.Sandbox
		default:
			var x any
			if err := decodeNumber(v, &x); err != nil {
				return nil, fmt.Errorf("decode input field %q: %w", k, err)
			}
			if in.Extra == nil {
				in.Extra = make(map[string]any)
			}
			in.Extra[k] = x
			continue
		}
		if err := decodeNumber(v, dst); err != nil {
			return nil, fmt.Errorf("decode input field %q: %w", k, err)
		}
	}
	return in, nil
}

func decodeNumber(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(dst)
}
