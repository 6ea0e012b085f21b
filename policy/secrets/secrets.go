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
	// Keywords, lower case ASCII: the rule runs only around an occurrence of one of them
	// in the (ASCII) lower-cased text, and every match must contain the occurrence.
	// Empty means the rule runs over the whole text.
	Keywords []string
	// Before is how many bytes before its keyword a match may start. 0: the match starts
	// at the keyword, and the expression is anchored there (the fast path).
	Before int
	// WordStart requires the match not to follow a letter, digit or underscore.
	WordStart bool
	// Assign marks "key = value" rules: a ':' or '=' must follow the keyword within
	// assignWithin bytes, which skips prose cheaply ("reset your password").
	Assign bool
	// MaxLen bounds how far after its keyword a match may end. 0: 512 bytes.
	MaxLen int
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

// hit is a finding while scanning, with the span of the whole match.
type hit struct {
	Finding
	matchStart, matchEnd int
}

// Scanner applies a rule set. It is immutable and safe for concurrent use.
type Scanner struct {
	rules    []Rule
	anchored []*regexp.Regexp // per rule, the expression anchored at the start
	order    map[string]int   // rule id -> index
	always   []int            // rules without keywords
	// Keyword index: bigram[first two bytes] is 1 + the index in lists of the keywords
	// starting with them, so one pass over the text finds every keyword occurrence.
	bigram *[1 << 16]uint16
	lists  [][]keyword
	single [256][]keyword // keywords of one byte
}

type keyword struct {
	kw   string
	rule int
}

// New returns a scanner with the given rules.
func New(rules []Rule) *Scanner {
	s := &Scanner{rules: append([]Rule(nil), rules...), order: make(map[string]int, len(rules))}
	s.bigram = new([1 << 16]uint16)
	for i, r := range s.rules {
		s.anchored = append(s.anchored, regexp.MustCompile(`^(?:`+r.Regexp.String()+`)`))
		if _, dup := s.order[r.ID]; !dup {
			s.order[r.ID] = i
		}
		if len(r.Keywords) == 0 {
			s.always = append(s.always, i)
		}
		for _, kw := range r.Keywords {
			kw = asciiLower(kw)
			switch {
			case kw == "":
				s.always = append(s.always, i)
			case len(kw) == 1:
				s.single[kw[0]] = append(s.single[kw[0]], keyword{kw, i})
			default:
				b := uint16(kw[0])<<8 | uint16(kw[1])
				if s.bigram[b] == 0 {
					s.lists = append(s.lists, nil)
					s.bigram[b] = uint16(len(s.lists))
				}
				s.lists[s.bigram[b]-1] = append(s.lists[s.bigram[b]-1], keyword{kw, i})
			}
		}
	}
	return s
}

var defaultScanner = New(DefaultRules())

// Default returns a scanner with [DefaultRules].
func Default() *Scanner { return defaultScanner }

// Rules returns the scanner's rules.
func (s *Scanner) Rules() []Rule { return append([]Rule(nil), s.rules...) }

// defaultMaxLen bounds how far after its keyword a match may end, unless the rule says.
const defaultMaxLen = 512

// assignWithin is how far after the keyword an Assign rule looks for ':' or '='.
const assignWithin = 48

// Find returns the findings in text, sorted by offset and not overlapping.
//
// A rule's expression does not run over the whole text: for each occurrence of one of
// its keywords it runs once, anchored at the occurrence (or, for rules with Before, on a
// small window that must contain it). Text without keywords costs one substring search
// per keyword, and a keyword costs one anchored match attempt. (Rules avoid large counted
// repetitions such as {1,256}, which multiply the size of the compiled program; lengths
// are bounded by MaxLen instead, and a secret longer than that is masked up to it.)
func (s *Scanner) Find(text string) []Finding {
	if len(text) < 8 {
		return nil
	}
	lower := asciiLower(text) // same byte offsets as text
	var found []hit
	for _, i := range s.always {
		found = s.window(found, &s.rules[i], text, 0, len(text), -1)
	}
	var lastEnd []int // per rule: end of the last match, to skip keywords inside it
	visit := func(k keyword, pos int) {
		if lastEnd == nil {
			lastEnd = make([]int, len(s.rules))
		}
		if pos < lastEnd[k.rule] || !strings.HasPrefix(lower[pos:], k.kw) {
			return
		}
		r := &s.rules[k.rule]
		if r.Assign {
			after := lower[pos+len(k.kw) : min(len(lower), pos+len(k.kw)+assignWithin)]
			if !strings.ContainsAny(after, ":=") {
				return
			}
		}
		maxLen := r.MaxLen
		if maxLen <= 0 {
			maxLen = defaultMaxLen
		}
		n := len(found)
		hi := min(len(text), pos+len(k.kw)+maxLen)
		if r.Before > 0 {
			found = s.window(found, r, text, max(0, pos-r.Before), hi, pos)
		} else if m := s.anchored[k.rule].FindStringSubmatchIndex(text[pos:hi]); m != nil {
			found = s.accept(found, r, text, pos, m)
		}
		for _, h := range found[n:] {
			lastEnd[k.rule] = max(lastEnd[k.rule], h.matchEnd)
		}
	}
	for pos := 0; pos < len(lower); pos++ {
		for _, k := range s.single[lower[pos]] {
			visit(k, pos)
		}
		if pos+1 < len(lower) {
			if li := s.bigram[uint16(lower[pos])<<8|uint16(lower[pos+1])]; li != 0 {
				for _, k := range s.lists[li-1] {
					visit(k, pos)
				}
			}
		}
	}
	return s.dedupe(found)
}

// window runs rule r unanchored on text[lo:hi] and appends its findings. With kwPos >= 0,
// only matches that contain kwPos count.
func (s *Scanner) window(found []hit, r *Rule, text string, lo, hi, kwPos int) []hit {
	for _, m := range r.Regexp.FindAllStringSubmatchIndex(text[lo:hi], -1) {
		if kwPos >= 0 && (kwPos < lo+m[0] || kwPos >= lo+m[1]) {
			continue
		}
		found = s.accept(found, r, text, lo, m)
	}
	return found
}

// accept checks a match (submatch indexes m relative to text[off:]) and appends it.
func (s *Scanner) accept(found []hit, r *Rule, text string, off int, m []int) []hit {
	ms, me := off+m[0], off+m[1]
	if r.WordStart && ms > 0 && isWordByte(text[ms-1]) {
		return found
	}
	start, end := ms, me
	for g := 2; g+1 < len(m); g += 2 {
		if m[g] >= 0 {
			start, end = off+m[g], off+m[g+1]
			break
		}
	}
	if start >= end {
		return found
	}
	secret := text[start:end]
	if r.SkipPlaceholders && isPlaceholder(secret) {
		return found
	}
	if r.MinEntropy > 0 && entropy(secret) < r.MinEntropy {
		return found
	}
	return append(found, hit{Finding{RuleID: r.ID, Start: start, End: end}, ms, me})
}

func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// asciiLower lower-cases ASCII letters only, so offsets into the result are offsets into
// s (strings.ToLower may change the length of non-ASCII text).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
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

// dedupe sorts findings by offset and resolves overlaps in favour of the rule listed
// first (the more specific: an AWS key inside "api_key=..." is reported as an AWS key),
// then the longer match.
func (s *Scanner) dedupe(found []hit) []Finding {
	if len(found) == 0 {
		return nil
	}
	order := s.order
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
	out := []Finding{found[0].Finding}
	for _, f := range found[1:] {
		last := &out[len(out)-1]
		if f.Start >= last.End {
			out = append(out, f.Finding)
			continue
		}
		if order[f.RuleID] < order[last.RuleID] {
			*last = f.Finding
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
