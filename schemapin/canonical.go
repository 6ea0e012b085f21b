package schemapin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// CanonicalVersion names the canonical form this package produces.
const CanonicalVersion = "schemapin-v1"

// Canonicalize returns the "schemapin-v1" canonical form of the JSON document data: UTF-8,
// object keys sorted recursively by code point, no insignificant whitespace, arrays in
// order, no HTML escaping (and no escaping of U+2028/U+2029), and numbers exactly as
// written. It matches Python's json.dumps(sort_keys=True, separators=(",", ":"),
// ensure_ascii=False) byte for byte on documents whose numbers Python would print unchanged.
// Invalid UTF-8 and trailing data are errors.
func Canonicalize(data []byte) ([]byte, error) {
	v, err := decodeJSON(data)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	if err := appendCanonical(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeJSON parses one JSON value with numbers kept as json.Number.
func decodeJSON(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("parse json: invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("parse json: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("parse json: trailing data after the document")
	}
	return v, nil
}

// canonicalValue encodes an already decoded value (as produced by decodeJSON).
func canonicalValue(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := appendCanonical(&buf, v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func appendCanonical(buf *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		if x {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case json.Number:
		buf.WriteString(string(x))
	case string:
		appendString(buf, x)
	case []any:
		buf.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := appendCanonical(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		// Byte order of UTF-8 strings is code point order, which is what Python sorts by.
		slices.Sort(keys)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			appendString(buf, k)
			buf.WriteByte(':')
			if err := appendCanonical(buf, x[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("canonicalize json: unsupported value of type %T", v)
	}
	return nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string the way Python's json module does with
// ensure_ascii=False: only '"', '\\' and control characters below U+0020 are escaped.
func appendString(buf *bytes.Buffer, s string) {
	buf.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf.WriteString(s[start:i])
		switch c {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		case '\b':
			buf.WriteString(`\b`)
		case '\f':
			buf.WriteString(`\f`)
		default:
			buf.WriteString(`\u00`)
			buf.WriteByte(hexDigits[c>>4])
			buf.WriteByte(hexDigits[c&0xf])
		}
		start = i + 1
	}
	buf.WriteString(s[start:])
	buf.WriteByte('"')
}

// prettyCanonical renders canonical JSON indented by two spaces, with sorted keys, for
// humans (diffs). It is not a signing form.
func prettyCanonical(canonical []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, canonical, "", "  "); err != nil {
		return string(canonical)
	}
	return strings.TrimRight(out.String(), "\n")
}
