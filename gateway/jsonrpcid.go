package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// JSON-RPC ids must come back exactly as the client sent them: the client matches
// responses to requests by id. The go-sdk holds an id as an int64 or a string and
// decodes numbers through float64, so 9223372036854775808 would come back as
// -9223372036854775808, 1.5 as 1, 1e3 as 1000 and -0 as 0 (and a string with escapes
// re-encoded). symbi therefore replaces, on the way in, every id the SDK could not echo
// byte for byte with a token of its own (a string the SDK keeps as it is), and puts the
// client's exact bytes back in place of the token on the way out.

// idTokenMark starts every token; a client string id that starts with it is replaced
// too, so a token in a response is always one of symbi's.
const idTokenMark = "symbi-id~"

// maxExactInt is the largest integer magnitude that survives the SDK's float64 decoding.
const maxExactInt = 1 << 53

// exactID reports whether the SDK echoes the JSON id raw byte for byte.
func exactID(raw []byte) bool {
	if len(raw) == 0 {
		return true // no id: a notification
	}
	switch c := raw[0]; {
	case c == '"':
		if len(raw) < 2 || raw[len(raw)-1] != '"' {
			return false
		}
		body := raw[1 : len(raw)-1]
		for _, b := range body {
			// Escapes, control and non-ASCII characters and the HTML characters that the
			// encoder escapes all change on the way back.
			if b == '\\' || b == '"' || b < 0x20 || b >= 0x7f || b == '<' || b == '>' || b == '&' {
				return false
			}
		}
		return !bytes.HasPrefix(body, []byte(idTokenMark))
	case c == '-' || (c >= '0' && c <= '9'):
		digits := raw
		if c == '-' {
			digits = raw[1:]
		}
		if len(digits) == 0 || (digits[0] == '0' && (len(digits) > 1 || c == '-')) {
			return false // leading zero, or -0
		}
		for _, b := range digits {
			if b < '0' || b > '9' {
				return false // a fraction or an exponent
			}
		}
		n, err := strconv.ParseInt(string(raw), 10, 64)
		return err == nil && n >= -maxExactInt && n <= maxExactInt
	default:
		return true // null, or not an id at all: the SDK's own answer stands
	}
}

// idMap holds the ids symbi replaced, by token, until their response goes out.
type idMap struct {
	prefix string // idTokenMark + a random part, per map
	seq    atomic.Uint64
	n      atomic.Int64 // entries, so that writers skip the scan when there are none

	mu      sync.Mutex
	byToken map[string]idEntry
	byRaw   map[string]string // scope + "\x00" + raw -> token, for cancellations
}

type idEntry struct {
	raw   json.RawMessage
	scope string
}

func newIDMap() *idMap {
	return &idMap{prefix: idTokenMark + rand.Text()[:8] + "~", byToken: map[string]idEntry{}, byRaw: map[string]string{}}
}

// substitute records raw under a new token and returns the token, quoted.
func (m *idMap) substitute(scope string, raw []byte) []byte {
	token := m.prefix + strconv.FormatUint(m.seq.Add(1), 10)
	m.mu.Lock()
	m.byToken[token] = idEntry{raw: bytes.Clone(raw), scope: scope}
	m.byRaw[scope+"\x00"+string(raw)] = token
	m.mu.Unlock()
	m.n.Add(1)
	return strconv.AppendQuote(nil, token)
}

// lookup is the token that raw was replaced with in scope, quoted, if any.
func (m *idMap) lookup(scope string, raw []byte) ([]byte, bool) {
	m.mu.Lock()
	token, ok := m.byRaw[scope+"\x00"+string(raw)]
	m.mu.Unlock()
	if !ok {
		return nil, false
	}
	return strconv.AppendQuote(nil, token), true
}

// take returns and forgets the raw id of token.
func (m *idMap) take(token string) (json.RawMessage, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byToken[token]
	if ok {
		m.drop(token, e)
	}
	return e.raw, ok
}

func (m *idMap) drop(token string, e idEntry) {
	delete(m.byToken, token)
	if k := e.scope + "\x00" + string(e.raw); m.byRaw[k] == token {
		delete(m.byRaw, k)
	}
	m.n.Add(-1)
}

// forget drops the tokens given (their request ended without a response) or, with
// none given, every token of scope.
func (m *idMap) forget(scope string, tokens ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(tokens) > 0 {
		for _, t := range tokens {
			if e, ok := m.byToken[t]; ok {
				m.drop(t, e)
			}
		}
		return
	}
	for t, e := range m.byToken {
		if e.scope == scope {
			m.drop(t, e)
		}
	}
}

// restore puts the client's ids back in place of the tokens in out (one or more
// encoded messages, or SSE events carrying them). It returns out itself when there is
// nothing to restore, which is the common case and costs one scan.
func (m *idMap) restore(out []byte) []byte {
	out = rewriteTaskNotes(out) // tasks_legacy.go
	if m.n.Load() == 0 {
		return out
	}
	mark := []byte(`"` + m.prefix)
	i := bytes.Index(out, mark)
	if i < 0 {
		return out
	}
	var b []byte
	for i >= 0 {
		end := bytes.IndexByte(out[i+1:], '"')
		if end < 0 {
			break
		}
		end += i + 2 // past the closing quote
		raw, ok := m.take(string(out[i+1 : end-1]))
		if !ok {
			b = append(b, out[:end]...)
		} else {
			b = append(append(b, out[:i]...), raw...)
		}
		out = out[end:]
		i = bytes.Index(out, mark)
	}
	return append(b, out...)
}

// jsonSpan finds the top-level member key of the JSON object data: the start and end of
// its value. found is false when data is not an object, has no such member, or has it
// more than once (the SDK's decoder then decides, as it would without symbi).
func jsonSpan(data []byte, key string) (start, end int, found bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return 0, 0, false
	}
	i++
	count := 0
	for {
		i = skipSpace(data, i)
		if i >= len(data) || data[i] == '}' {
			break
		}
		if data[i] != '"' {
			return 0, 0, false
		}
		kend := skipString(data, i)
		if kend < 0 {
			return 0, 0, false
		}
		k := data[i:kend]
		i = skipSpace(data, kend)
		if i >= len(data) || data[i] != ':' {
			return 0, 0, false
		}
		i = skipSpace(data, i+1)
		vend := skipValue(data, i)
		if vend < 0 {
			return 0, 0, false
		}
		if keyIs(k, key) {
			count++
			start, end = i, vend
		}
		i = skipSpace(data, vend)
		if i < len(data) && data[i] == ',' {
			i++
		}
	}
	return start, end, count == 1
}

// keyIs reports whether the quoted JSON string k is key.
func keyIs(k []byte, key string) bool {
	if bytes.IndexByte(k, '\\') < 0 {
		return string(k[1:len(k)-1]) == key
	}
	var s string
	return json.Unmarshal(k, &s) == nil && s == key
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at data[i] ('"'), or -1.
func skipString(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index after the JSON value starting at data[i], or -1. It checks
// only the structure it needs; the SDK validates the rest.
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				e := skipString(data, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(data) {
			switch data[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
			j++
		}
		return j
	}
}

// mapInbound replaces, in one JSON-RPC message, an id the SDK cannot echo exactly with
// a token, and the requestId of a cancellation with the token its request got. It
// returns the message to hand the SDK (data itself when nothing changes) and the token
// it introduced, if any. drop is true for a cancellation of a request whose id the SDK
// could not represent and symbi never saw: handed on, it would cancel another request.
func (m *idMap) mapInbound(scope string, data []byte) (out []byte, token string, drop bool) {
	data = liftTaskParam(data) // tasks_legacy.go
	s, e, ok := jsonSpan(data, "id")
	if ok && !exactID(data[s:e]) {
		quoted := m.substitute(scope, data[s:e])
		out = make([]byte, 0, len(data)-(e-s)+len(quoted))
		out = append(append(append(out, data[:s]...), quoted...), data[e:]...)
		token, _ = strconv.Unquote(string(quoted))
		return out, token, false
	}
	if ok || !bytes.Contains(data, []byte("notifications/cancelled")) {
		return data, "", false
	}
	// A notification: if it is a cancellation, map its requestId.
	ms, me, mok := jsonSpan(data, "method")
	if !mok || string(data[ms:me]) != `"notifications/cancelled"` {
		return data, "", false
	}
	ps, pe, pok := jsonSpan(data, "params")
	if !pok {
		return data, "", false
	}
	rs, re, rok := jsonSpan(data[ps:pe], "requestId")
	if !rok || exactID(data[ps+rs:ps+re]) {
		return data, "", false
	}
	quoted, found := m.lookup(scope, data[ps+rs:ps+re])
	if !found {
		return nil, "", true
	}
	out = append(append(append([]byte(nil), data[:ps+rs]...), quoted...), data[ps+re:]...)
	return out, "", false
}

// idRestoreWriter restores the client's ids in everything written to an HTTP response.
type idRestoreWriter struct {
	http.ResponseWriter
	ids *idMap
}

func (w *idRestoreWriter) WriteHeader(code int) {
	// A restored id changes the body's length.
	w.Header().Del("Content-Length")
	w.ResponseWriter.WriteHeader(code)
}

func (w *idRestoreWriter) Write(b []byte) (int, error) {
	out := w.ids.restore(b)
	if _, err := w.ResponseWriter.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *idRestoreWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *idRestoreWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// exactIDs maps ids on the HTTP routes (/mcp, /sse): the body of a POST on the way in,
// everything written on the way out. scope names the session (the Mcp-Session-Id, or
// the SSE session) so a cancellation finds its request's token.
func exactIDs(ids *idMap, max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w = &idRestoreWriter{ResponseWriter: w, ids: ids}
		if r.Method != http.MethodPost || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		body, err := readBody(r, max)
		if err != nil {
			http.Error(w, "read request body", http.StatusBadRequest)
			return
		}
		if int64(len(body)) > max {
			// Too large: the SDK answers 413 as it would without symbi.
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
			next.ServeHTTP(w, r)
			return
		}
		scope := r.Header.Get("Mcp-Session-Id")
		if scope == "" {
			scope = r.URL.Query().Get("sessionid")
		}
		out, token, drop := ids.mapInbound(scope, body)
		if drop {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		r.Body = &releasingReader{b: out}
		if token != "" && r.URL.Query().Get("sessionid") == "" {
			// Streamable HTTP answers on this request: once it ends, the token is done.
			// (Legacy SSE answers on the session's stream; its tokens go with it.)
			defer ids.forget(scope, token)
		}
		next.ServeHTTP(w, r)
	})
}

// readBody reads at most max+1 bytes of r's body, in one allocation when r declares its
// length.
func readBody(r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength >= 0 && r.ContentLength <= max {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		// Anything past the declared length is an error the server reports; read one
		// more byte so a lie is seen as "too large".
		var one [1]byte
		if n, _ := r.Body.Read(one[:]); n > 0 {
			return append(b, one[0]), nil
		}
		return b, nil
	}
	return io.ReadAll(io.LimitReader(r.Body, max+1))
}

// releasingReader reads b once and lets go of it at the end, so a request body is not
// kept alive by the request for as long as its handler runs.
type releasingReader struct{ b []byte }

func (r *releasingReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		r.b = nil
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		r.b = nil
	}
	return n, nil
}

func (r *releasingReader) Close() error { r.b = nil; return nil }
