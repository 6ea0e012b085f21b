package gateway

import (
	"encoding/json"
	"strconv"
)

// callEnvelope is what the client side of the fast path reads of a tools/call request
// body: the envelope only. The arguments stay the bytes the client sent.
type callEnvelope struct {
	id   int64  // when !strID
	sid  string // when strID
	name string
	args []byte // params.arguments, an object, as sent; nil when absent
	meta []byte // params._meta, an object, as sent; nil when absent

	strID bool
}

// scanCall reads body as one JSON-RPC tools/call request and reports whether it is one
// the fast path serves exactly as the SDK would: an object with the members jsonrpc
// ("2.0"), id (an integer of at most 15 digits, or a string without escapes), method
// ("tools/call") and params, each once and nothing else; params with name (a string
// without escapes) and optionally arguments and _meta (objects), each once and nothing
// else. Anything else (a batch, a notification, other members, escapes in the names,
// invalid JSON) is ok=false: the SDK reads it.
func scanCall(body []byte) (env callEnvelope, ok bool) {
	if !json.Valid(body) {
		return env, false
	}
	s := scanner{b: body}
	if !s.open('{') {
		return env, false
	}
	var seen [4]bool
	for first := true; ; first = false {
		if s.close('}') {
			break
		}
		if !first && !s.open(',') {
			return env, false
		}
		key, ok := s.key()
		if !ok {
			return env, false
		}
		i := -1
		switch key {
		case "jsonrpc":
			i = 0
			if v, ok := s.plainString(); !ok || v != "2.0" {
				return env, false
			}
		case "id":
			i = 1
			if !scanID(&s, &env) {
				return env, false
			}
		case "method":
			i = 2
			if v, ok := s.plainString(); !ok || v != "tools/call" {
				return env, false
			}
		case "params":
			i = 3
			if !scanParams(&s, &env) {
				return env, false
			}
		default:
			return env, false
		}
		if seen[i] {
			return env, false
		}
		seen[i] = true
	}
	if s.peek() != 0 || !seen[0] || !seen[1] || !seen[2] || !seen[3] {
		return env, false
	}
	return env, true
}

// scanID reads the request id: a plain string, or an integer the SDK reads back to the
// same int64 (it decodes numbers as float64).
func scanID(s *scanner, env *callEnvelope) bool {
	switch c := s.peek(); {
	case c == '"':
		v, ok := s.plainString()
		if !ok {
			return false
		}
		env.sid, env.strID = v, true
		return true
	case c == '-' || c >= '0' && c <= '9':
		start := s.i
		if s.b[s.i] == '-' {
			s.i++
		}
		digits := s.i
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
		n := s.i - digits
		if n == 0 || n > 15 || s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
			return false
		}
		v, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
		if err != nil || v == 0 && s.b[start] == '-' {
			return false // "-0": leave the SDK's reading of it to the SDK
		}
		env.id = v
		return true
	}
	return false
}

func scanParams(s *scanner, env *callEnvelope) bool {
	if !s.open('{') {
		return false
	}
	var seen [3]bool
	for first := true; ; first = false {
		if s.close('}') {
			return seen[0]
		}
		if !first && !s.open(',') {
			return false
		}
		key, ok := s.key()
		if !ok {
			return false
		}
		i := -1
		switch key {
		case "name":
			i = 0
			v, ok := s.plainString()
			if !ok {
				return false
			}
			env.name = v
		case "arguments", "_meta":
			i = 1
			if key == "_meta" {
				i = 2
			}
			if s.peek() != '{' {
				return false
			}
			start := s.i
			if !s.skip() {
				return false
			}
			if i == 1 {
				env.args = s.b[start:s.i]
			} else {
				env.meta = s.b[start:s.i]
			}
		default:
			return false
		}
		if seen[i] {
			return false
		}
		seen[i] = true
	}
}
