// Package tomledit makes the few edits `symbi add` and `symbi remove` need on a TOML
// file without re-encoding it: append a table of an array of tables, and remove one such
// table. Everything else in the file (comments, blank lines, key order, formatting)
// stays byte for byte. The scanner knows TOML's strings (basic, literal, multi-line),
// comments and multi-line arrays and inline tables, so that a "[" inside a value is never
// taken for a table header; the caller validates the result before writing it.
package tomledit

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
)

// line is one line of the file as the scanner saw it.
type line struct {
	start, end int    // byte range, end excluding the newline
	header     string // the table name of a header line ("" otherwise)
	array      bool   // the header is [[name]]
	blank      bool   // only whitespace
	comment    bool   // only a comment (and whitespace)
}

// scan splits src into lines and finds the table headers, outside strings and values.
func scan(src []byte) ([]line, error) {
	var lines []line
	const (
		none = iota
		multiBasic
		multiLiteral
	)
	mode := none // a multi-line string open at the start of the line
	depth := 0   // brackets and braces open in a value
	for start := 0; start <= len(src); {
		end := bytes.IndexByte(src[start:], '\n')
		if end < 0 {
			end = len(src)
		} else {
			end += start
		}
		text := string(src[start:end])
		l := line{start: start, end: end}
		trimmed := strings.TrimSpace(text)
		if mode == none && depth == 0 {
			l.blank = trimmed == ""
			l.comment = strings.HasPrefix(trimmed, "#")
			if strings.HasPrefix(trimmed, "[") {
				name, array, err := parseHeader(trimmed)
				if err != nil {
					return nil, fmt.Errorf("line %d: %w", len(lines)+1, err)
				}
				l.header, l.array = name, array
				lines = append(lines, l)
				start = end + 1
				continue
			}
		}
		// Walk the line for strings, comments and brackets.
		for i := 0; i < len(text); i++ {
			c := text[i]
			switch mode {
			case multiBasic:
				if c == '\\' {
					i++
				} else if strings.HasPrefix(text[i:], `"""`) {
					mode = none
					i += 2
					for i+1 < len(text) && text[i+1] == '"' { // up to two quotes may end the content
						i++
					}
				}
				continue
			case multiLiteral:
				if strings.HasPrefix(text[i:], `'''`) {
					mode = none
					i += 2
					for i+1 < len(text) && text[i+1] == '\'' {
						i++
					}
				}
				continue
			}
			switch c {
			case '#':
				i = len(text)
			case '"':
				if strings.HasPrefix(text[i:], `"""`) {
					mode = multiBasic
					i += 2
					continue
				}
				for i++; i < len(text) && text[i] != '"'; i++ {
					if text[i] == '\\' {
						i++
					}
				}
			case '\'':
				if strings.HasPrefix(text[i:], `'''`) {
					mode = multiLiteral
					i += 2
					continue
				}
				for i++; i < len(text) && text[i] != '\''; i++ {
				}
			case '[', '{':
				depth++
			case ']', '}':
				if depth > 0 {
					depth--
				}
			}
		}
		lines = append(lines, l)
		start = end + 1
	}
	if mode != none {
		return nil, errors.New("unterminated multi-line string")
	}
	return lines, nil
}

// parseHeader reads "[a.b]" or "[[a.b]]" (with an optional comment after it) and returns
// the dotted name with the whitespace around its parts removed. Quoted key parts are
// kept as written.
func parseHeader(s string) (name string, array bool, err error) {
	body := s
	if strings.HasPrefix(s, "[[") {
		array = true
		body = s[2:]
	} else {
		body = s[1:]
	}
	closing := "]"
	if array {
		closing = "]]"
	}
	end := strings.Index(body, closing)
	if end < 0 {
		return "", false, fmt.Errorf("table header %q: no closing %s", s, closing)
	}
	rest := strings.TrimSpace(body[end+len(closing):])
	if rest != "" && !strings.HasPrefix(rest, "#") {
		return "", false, fmt.Errorf("table header %q: text after the header", s)
	}
	parts := strings.Split(body[:end], ".")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	name = strings.Join(parts, ".")
	if name == "" {
		return "", false, fmt.Errorf("table header %q: no name", s)
	}
	return name, array, nil
}

// AppendTable returns src with a new table of the array of tables name appended at the
// end: a blank line, "[[name]]", then body (key = value lines, rendered by the caller).
func AppendTable(src []byte, name, body string) ([]byte, error) {
	if _, err := scan(src); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(src)
	if len(src) > 0 && !bytes.HasSuffix(src, []byte("\n")) {
		b.WriteByte('\n')
	}
	if len(bytes.TrimSpace(src)) > 0 && !bytes.HasSuffix(src, []byte("\n\n")) {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "[[%s]]\n", name)
	b.WriteString(body)
	if body != "" && !strings.HasSuffix(body, "\n") {
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// ErrNotFound is returned by RemoveTable when no table has that key value.
var ErrNotFound = errors.New("no such table")

// RemoveTable returns src without the table of the array of tables name whose key equals
// value (the upstream whose name is "x", say): its header, its keys and the sub-tables
// that belong to it ([name.sub]), and the comment lines just above its header (no blank
// line between), which describe it. Comments and blank lines after its last key are kept.
// The array must be written with [[name]] headers only.
func RemoveTable(src []byte, name, key, value string) ([]byte, error) {
	lines, err := scan(src)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if _, err := toml.Decode(string(src), &doc); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var elems []map[string]any
	switch v := lookup(doc, name).(type) {
	case []map[string]any:
		elems = v
	case []any: // written inline
		for _, e := range v {
			m, _ := e.(map[string]any)
			elems = append(elems, m)
		}
	}
	var headers []int // line indexes of the [[name]] headers
	for i, l := range lines {
		if l.array && l.header == name {
			headers = append(headers, i)
		}
	}
	if len(headers) != len(elems) {
		return nil, fmt.Errorf("%s: %d [[%s]] headers for %d tables (tables written inline are not edited)", name, len(headers), name, len(elems))
	}
	idx := -1
	for i, e := range elems {
		if v, ok := e[key].(string); ok && v == value {
			if idx >= 0 {
				return nil, fmt.Errorf("%s: two tables with %s = %q", name, key, value)
			}
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("%s with %s = %q: %w", name, key, value, ErrNotFound)
	}
	first := headers[idx]
	// The block runs to the next header that is not one of its sub-tables.
	next := len(lines)
	for i := first + 1; i < len(lines); i++ {
		h := lines[i].header
		if h != "" && (lines[i].array && h == name || !strings.HasPrefix(h, name+".")) {
			next = i
			break
		}
	}
	last := next - 1 // its last line that is neither blank nor a comment
	for last > first && (lines[last].blank || lines[last].comment) {
		last--
	}
	for first > 0 && lines[first-1].comment {
		first--
	}
	from := lines[first].start
	to := lines[last].end + 1
	if to > len(src) {
		to = len(src)
	}
	// Drop one blank line that separated the block from what came before, so that
	// removing what was added leaves the file as it was.
	if first > 0 && lines[first-1].blank && (last+1 >= len(lines) || lines[last+1].blank || lines[last+1].header != "") {
		from = lines[first-1].start
	}
	out := make([]byte, 0, len(src)-(to-from))
	out = append(out, src[:from]...)
	out = append(out, src[to:]...)
	return out, nil
}

// lookup finds the value at a dotted name (unquoted parts only).
func lookup(doc map[string]any, name string) any {
	var cur any = doc
	for _, p := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}
