package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// decodeArguments parses the arguments of a tools/call, which symbi forwards to the
// upstream as the client sent them (byte for byte). It refuses what two JSON parsers may
// read differently, so that the policy decides on exactly what the upstream will read:
// a key that appears twice in one object, at any depth (one parser keeps the first, another
// the last), and invalid UTF-8 (one parser replaces it, another keeps the bytes). Absent
// or null arguments are a nil map; anything but an object is an error.
func decodeArguments(raw json.RawMessage) (map[string]any, error) {
	// JSON's own whitespace only: bytes.TrimSpace would also drop \f, \v and Unicode
	// spaces, accepting arguments that a strict upstream parser refuses.
	raw = bytes.Trim(raw, " \t\r\n")
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, errors.New("tool arguments must be a JSON object")
	}
	if !utf8.Valid(raw) {
		return nil, errors.New("tool arguments are not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	v, err := decodeValue(dec, "arguments")
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("tool arguments have data after the object")
	}
	return v.(map[string]any), nil
}

// maxPathInError bounds how much of a client-chosen key path an error repeats.
const maxPathInError = 200

func decodeValue(dec *json.Decoder, path string) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("parse tool arguments: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("parse tool arguments: %w", err)
				}
				k, _ := kt.(string)
				kp := path + "." + k
				if !isPlainKey(k) {
					kp = path + "[" + strconv.Quote(k) + "]"
				}
				if _, dup := m[k]; dup {
					if len(kp) > maxPathInError {
						kp = kp[:maxPathInError] + "…"
					}
					return nil, fmt.Errorf("tool arguments repeat the key %s", kp)
				}
				v, err := decodeValue(dec, kp)
				if err != nil {
					return nil, err
				}
				m[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("parse tool arguments: %w", err)
			}
			return m, nil
		case '[':
			a := []any{}
			for i := 0; dec.More(); i++ {
				v, err := decodeValue(dec, path+"["+strconv.Itoa(i)+"]")
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("parse tool arguments: %w", err)
			}
			return a, nil
		}
		return nil, fmt.Errorf("parse tool arguments: unexpected %v", t)
	}
	return tok, nil // string, float64, bool or nil
}

// isPlainKey reports whether k can be written after a dot in an error's key path.
func isPlainKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
