package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sandbox tiers, from least to most isolated. TierNone is also spelled "unisolated"
// (the explicit development tier) and "" (no sandbox).
const (
	TierNone       = "none"
	TierUnisolated = "unisolated"
	TierDocker     = "docker"
	TierGVisor     = "gvisor"
)

var tierRank = map[string]int{
	"":             0,
	TierNone:       0,
	TierUnisolated: 0,
	TierDocker:     1,
	TierGVisor:     2,
}

// Tiers lists the tier names a policy may require, least isolated first.
func Tiers() []string { return []string{TierNone, TierDocker, TierGVisor} }

// TierSatisfies reports whether an upstream running in tier have is at least as isolated
// as tier want (none < docker < gvisor). An unknown tier on either side does not satisfy:
// the gateway cannot vouch for isolation it does not know.
func TierSatisfies(have, want string) bool {
	h, ok1 := tierRank[have]
	w, ok2 := tierRank[want]
	return ok1 && ok2 && h >= w
}

// Redaction modes of a redact condition.
const (
	RedactMask   = "mask"   // replace the value with Mask
	RedactRemove = "remove" // delete the key (or the array element)
)

// Mask is what a masked value is replaced with.
const Mask = "****"

// Path is a parsed redaction path: a root ("arguments" or "result") and then object keys,
// array indexes, or wildcards.
type Path []Segment

// Segment is one step of a Path. Wildcard matches every key of an object and every element
// of an array; Index >= 0 matches one array element; otherwise Key matches an object key.
type Segment struct {
	Key      string
	Index    int
	Wildcard bool
}

// String renders the path in the syntax ParsePath accepts.
func (p Path) String() string {
	var b strings.Builder
	for i, s := range p {
		switch {
		case s.Wildcard:
			b.WriteString("[*]")
		case s.Index >= 0:
			b.WriteString("[" + strconv.Itoa(s.Index) + "]")
		case isPlainKey(s.Key):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.Key)
		default:
			b.WriteString("[" + strconv.Quote(s.Key) + "]")
		}
	}
	return b.String()
}

func isPlainKey(k string) bool {
	if k == "" || k == "*" {
		return false
	}
	for _, r := range k {
		if r == '.' || r == '[' || r == ']' || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

// ParsePath parses a redaction path. Syntax:
//
//	arguments.password               object keys separated by dots
//	result.content[*].text           [*] (or .*) matches every element or key
//	arguments.items[0].token         [n] is an array index
//	arguments["x-api-key"]           a quoted key may contain any character
//
// The first segment is the root and must be a plain key.
func ParsePath(s string) (Path, error) {
	if s == "" {
		return nil, errors.New("parse path: empty")
	}
	var p Path
	i := 0
	expectKey := true // at start or after '.'
	for i < len(s) {
		switch c := s[i]; {
		case c == '[':
			if len(p) == 0 {
				return nil, fmt.Errorf("parse path %q: must start with a key", s)
			}
			j := i + 1
			if j < len(s) && s[j] == '"' {
				// quoted key: find the closing quote honouring escapes
				k := j + 1
				for k < len(s) && s[k] != '"' {
					if s[k] == '\\' {
						k++
					}
					k++
				}
				if k >= len(s) || k+1 >= len(s) || s[k+1] != ']' {
					return nil, fmt.Errorf("parse path %q: unterminated quoted key", s)
				}
				key, err := strconv.Unquote(s[j : k+1])
				if err != nil {
					return nil, fmt.Errorf("parse path %q: bad quoted key: %w", s, err)
				}
				p = append(p, Segment{Key: key, Index: -1})
				i = k + 2
			} else {
				end := strings.IndexByte(s[j:], ']')
				if end < 0 {
					return nil, fmt.Errorf("parse path %q: missing ]", s)
				}
				inner := s[j : j+end]
				if inner == "*" {
					p = append(p, Segment{Index: -1, Wildcard: true})
				} else {
					n, err := strconv.Atoi(inner)
					if err != nil || n < 0 || inner != strconv.Itoa(n) {
						return nil, fmt.Errorf("parse path %q: bad index %q", s, inner)
					}
					p = append(p, Segment{Index: n})
				}
				i = j + end + 1
			}
			expectKey = false
		case c == '.':
			if expectKey {
				return nil, fmt.Errorf("parse path %q: empty key", s)
			}
			expectKey = true
			i++
		default:
			if !expectKey {
				return nil, fmt.Errorf("parse path %q: missing . before %q", s, s[i:])
			}
			end := i
			for end < len(s) && s[end] != '.' && s[end] != '[' {
				if s[end] == ']' || s[end] == '"' {
					return nil, fmt.Errorf("parse path %q: unexpected %q", s, s[end])
				}
				end++
			}
			key := s[i:end]
			if key == "*" && len(p) > 0 {
				p = append(p, Segment{Index: -1, Wildcard: true})
			} else if len(p) == 0 && !isPlainKey(key) {
				return nil, fmt.Errorf("parse path %q: root must be a plain key", s)
			} else {
				p = append(p, Segment{Key: key, Index: -1})
			}
			expectKey = false
			i = end
		}
	}
	if expectKey {
		return nil, fmt.Errorf("parse path %q: ends with a dot", s)
	}
	return p, nil
}

// Redact returns v with every path under root redacted, and how many values it redacted.
// Paths whose root is not root are ignored, so the gateway can hand the same condition to
// Redact(args, "arguments", ...) and Redact(result, "result", ...). v is a JSON-like value
// (map[string]any, []any, scalars); it is not modified: containers on a redacted path are
// copied, the rest is shared. mode is RedactMask ("" means mask) or RedactRemove.
func Redact(v any, root string, paths []string, mode string) (any, int, error) {
	if mode == "" {
		mode = RedactMask
	}
	if mode != RedactMask && mode != RedactRemove {
		return v, 0, fmt.Errorf("redact: unknown mode %q", mode)
	}
	n := 0
	for _, s := range paths {
		p, err := ParsePath(s)
		if err != nil {
			return v, 0, fmt.Errorf("redact: %w", err)
		}
		if p[0].Key != root {
			continue
		}
		var c int
		v, c = redactAt(v, p[1:], mode)
		n += c
	}
	return v, n, nil
}

// redactAt redacts the path rest inside v. With an empty rest, v itself is the target;
// the caller handles removal, this masks.
func redactAt(v any, rest Path, mode string) (any, int) {
	if len(rest) == 0 {
		return Mask, 1
	}
	seg, last := rest[0], len(rest) == 1
	switch x := v.(type) {
	case map[string]any:
		var out map[string]any
		n := 0
		visit := func(k string, child any) {
			if last && mode == RedactRemove {
				if out == nil {
					out = cloneMap(x)
				}
				delete(out, k)
				n++
				return
			}
			nv, c := redactAt(child, rest[1:], mode)
			if c == 0 {
				return
			}
			if out == nil {
				out = cloneMap(x)
			}
			out[k] = nv
			n += c
		}
		switch {
		case seg.Wildcard:
			for k, child := range x {
				visit(k, child)
			}
		case seg.Index < 0:
			if child, ok := x[seg.Key]; ok {
				visit(seg.Key, child)
			}
		}
		if out == nil {
			return v, 0
		}
		return out, n
	case []any:
		var out []any
		n := 0
		var drop []bool
		visit := func(i int) {
			if last && mode == RedactRemove {
				if drop == nil {
					drop = make([]bool, len(x))
				}
				drop[i] = true
				n++
				return
			}
			nv, c := redactAt(x[i], rest[1:], mode)
			if c == 0 {
				return
			}
			if out == nil {
				out = append([]any(nil), x...)
			}
			out[i] = nv
			n += c
		}
		switch {
		case seg.Wildcard:
			for i := range x {
				visit(i)
			}
		case seg.Index >= 0 && seg.Index < len(x):
			visit(seg.Index)
		}
		if drop != nil {
			kept := make([]any, 0, len(x))
			for i, e := range x {
				if !drop[i] {
					kept = append(kept, e)
				}
			}
			return kept, n
		}
		if out == nil {
			return v, 0
		}
		return out, n
	}
	return v, 0
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
