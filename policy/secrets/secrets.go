// Package secrets finds credentials in text and JSON values, for the redact_secrets and
// block_secrets policy conditions: cloud keys, service tokens, JWTs, private keys,
// passwords in URLs, and generic key = value assignments with a secret-looking value.
//
// A scan reports findings by rule and place (a JSON path and byte offsets), never the
// secret itself, so findings are safe to log and audit. Masking replaces the secret part
// of a match with "****" and keeps the non-secret prefix that identifies the kind of
// credential (AKIA****, ghp_****, xoxb-****), which tells a human what was removed.
//
// The rule set is ours. Each rule pairs a regular expression (RE2: linear time on any
// input) with cheap keywords that must occur before the expression runs, and optionally
// an entropy floor that keeps words and placeholders out.
package secrets

import (
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Masked replaces the secret part of a finding.
const Masked = "****"

// Rule recognises one kind of credential.
type Rule struct {
	ID          string
	Description string
	// Regexp matches the credential. If it has capturing groups, the first group that
	// participates in the match is the secret (what is masked); otherwise the whole match.
	Regexp *regexp.Regexp
	// Keywords, lower case: the rule runs only if the lower-cased text contains one.
	// Empty means always.
	Keywords []string
	// MinEntropy, if > 0, is the least Shannon entropy (bits per byte) of the secret.
	MinEntropy float64
	// Placeholders: skip secrets that look like placeholders (<...>, ${VAR}, ****).
	SkipPlaceholders bool
}

// Finding is one credential found. It never holds the secret.
type Finding struct {
	RuleID string `json:"rule"`
	Path   string `json:"path,omitempty"` // JSON path of the string, for values
	Start  int    `json:"start"`          // byte offsets of the secret within the string
	End    int    `json:"end"`
}

// Scanner applies a rule set. It is immutable and safe for concurrent use.
type Scanner struct {
	rules []Rule
}

// New returns a scanner with the given rules.
func New(rules []Rule) *Scanner { return &Scanner{rules: append([]Rule(nil), rules...)} }

var defaultScanner = New(DefaultRules())

// Default returns a scanner with [DefaultRules].
func Default() *Scanner { return defaultScanner }

// Rules returns the scanner's rules.
func (s *Scanner) Rules() []Rule { return append([]Rule(nil), s.rules...) }

// Find returns the findings in text, sorted by offset and not overlapping.
func (s *Scanner) Find(text string) []Finding {
	if len(text) < 8 {
		return nil
	}
	lower := strings.ToLower(text) // for keywords only; offsets come from text
	var found []Finding
	for i := range s.rules {
		r := &s.rules[i]
		if !hasKeyword(lower, r.Keywords) {
			continue
		}
		for _, m := range r.Regexp.FindAllStringSubmatchIndex(text, -1) {
			start, end := m[0], m[1]
			for g := 2; g+1 < len(m); g += 2 {
				if m[g] >= 0 {
					start, end = m[g], m[g+1]
					break
				}
			}
			if start >= end {
				continue
			}
			secret := text[start:end]
			if r.SkipPlaceholders && isPlaceholder(secret) {
				continue
			}
			if r.MinEntropy > 0 && entropy(secret) < r.MinEntropy {
				continue
			}
			found = append(found, Finding{RuleID: r.ID, Start: start, End: end})
		}
	}
	return dedupe(found, s.rules)
}

// Mask returns text with every secret replaced by [Masked], and the findings (offsets
// refer to the input text).
func (s *Scanner) Mask(text string) (string, []Finding) {
	found := s.Find(text)
	if len(found) == 0 {
		return text, nil
	}
	var b strings.Builder
	b.Grow(len(text))
	last := 0
	for _, f := range found {
		b.WriteString(text[last:f.Start])
		b.WriteString(Masked)
		last = f.End
	}
	b.WriteString(text[last:])
	return b.String(), found
}

func hasKeyword(lower string, kws []string) bool {
	if len(kws) == 0 {
		return true
	}
	for _, k := range kws {
		if strings.Contains(lower, k) {
			return true
		}
	}
	return false
}

// dedupe sorts findings by offset and resolves overlaps in favour of the rule listed
// first (the more specific: an AWS key inside "api_key=..." is reported as an AWS key),
// then the longer match.
func dedupe(found []Finding, rules []Rule) []Finding {
	if len(found) < 2 {
		return found
	}
	order := make(map[string]int, len(rules))
	for i, r := range rules {
		order[r.ID] = i
	}
	sort.Slice(found, func(i, j int) bool {
		a, b := found[i], found[j]
		if a.Start != b.Start {
			return a.Start < b.Start
		}
		if order[a.RuleID] != order[b.RuleID] {
			return order[a.RuleID] < order[b.RuleID]
		}
		return a.End > b.End
	})
	out := found[:1]
	for _, f := range found[1:] {
		last := &out[len(out)-1]
		if f.Start >= last.End {
			out = append(out, f)
			continue
		}
		if order[f.RuleID] < order[last.RuleID] {
			*last = f
		}
	}
	return out
}

// entropy is the Shannon entropy of s in bits per byte.
func entropy(s string) float64 {
	if s == "" {
		return 0
	}
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	n := float64(len(s))
	h := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

var placeholderRE = regexp.MustCompile(`(?i)^(?:\*+|x{3,}|\.{3,}|-+|<[^>]*>|\$\{[^}]*\}|\$\([^)]*\)|\{\{[^}]*\}\}|%[a-z0-9_]+%|\$[a-z_][a-z0-9_]*|env:[a-z_][a-z0-9_]*|null|nil|none|true|false|undefined|redacted|\[redacted\]|\*+[a-z0-9]{0,4})$`)

// isPlaceholder reports whether a value is a template or masked value, not a secret.
func isPlaceholder(s string) bool {
	return placeholderRE.MatchString(s) || strings.Contains(s, Masked)
}

// FindValue returns the findings in the strings of a JSON-like value (map[string]any,
// []any, string; other types are ignored). path names the value (for example
// "arguments"); finding paths extend it. A string under a key that names a credential
// ("password", "api_key", "client_secret", ...) is a finding of rule sensitive-field
// as a whole, whatever it looks like.
func (s *Scanner) FindValue(v any, path string) []Finding {
	var out []Finding
	s.walk(v, path, false, func(p string, str string, sensitive bool) (string, bool) {
		if sensitive {
			out = append(out, Finding{RuleID: SensitiveFieldRule, Path: p, Start: 0, End: len(str)})
			return str, false
		}
		for _, f := range s.Find(str) {
			f.Path = p
			out = append(out, f)
		}
		return str, false
	})
	return out
}

// MaskValue returns v with every secret in its strings masked, and the findings. v is
// not modified: containers holding a masked string are copied, the rest is shared.
func (s *Scanner) MaskValue(v any, path string) (any, []Finding) {
	var out []Finding
	nv, _ := s.walk(v, path, false, func(p string, str string, sensitive bool) (string, bool) {
		if sensitive {
			out = append(out, Finding{RuleID: SensitiveFieldRule, Path: p, Start: 0, End: len(str)})
			return Masked, true
		}
		masked, found := s.Mask(str)
		for _, f := range found {
			f.Path = p
			out = append(out, f)
		}
		return masked, len(found) > 0
	})
	return nv, out
}

// walk visits the strings of v in a stable order (object keys sorted) and rebuilds the
// containers whose strings fn changed. It reports whether anything changed.
func (s *Scanner) walk(v any, path string, sensitive bool, fn func(path, s string, sensitive bool) (string, bool)) (any, bool) {
	switch x := v.(type) {
	case string:
		if sensitive && (x == "" || isPlaceholder(x)) {
			sensitive = false
		}
		if ns, changed := fn(path, x, sensitive); changed {
			return ns, true
		}
		return v, false
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out map[string]any
		for _, k := range keys {
			nc, changed := s.walk(x[k], joinKey(path, k), IsSensitiveKey(k), fn)
			if !changed {
				continue
			}
			if out == nil {
				out = make(map[string]any, len(x))
				for k2, v2 := range x {
					out[k2] = v2
				}
			}
			out[k] = nc
		}
		if out != nil {
			return out, true
		}
		return v, false
	case []any:
		var out []any
		for i, child := range x {
			nc, changed := s.walk(child, path+"["+strconv.Itoa(i)+"]", sensitive, fn)
			if !changed {
				continue
			}
			if out == nil {
				out = append([]any(nil), x...)
			}
			out[i] = nc
		}
		if out != nil {
			return out, true
		}
		return v, false
	}
	return v, false
}

func joinKey(path, k string) string {
	plain := k != ""
	for _, r := range k {
		if r == '.' || r == '[' || r == ']' || r == '"' || r == '\\' || r == '*' {
			plain = false
			break
		}
	}
	if plain {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	return path + "[" + strconv.Quote(k) + "]"
}
