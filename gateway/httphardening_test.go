package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestRequestGuardEveryRoute: the Host check (DNS rebinding) and the Origin check apply
// to every route, the open ones included; a request without Origin, from the same
// origin or from a configured origin passes.
func TestRequestGuardEveryRoute(t *testing.T) {
	g := New(nil)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	srv := httptest.NewServer(g.Handler(&HTTPOptions{
		Routes:         map[string]http.Handler{"/audit/stream": ok},
		Public:         map[string]http.Handler{"/.well-known/schemapin.json": ok},
		AllowedOrigins: []string{"https://App.Example.com"},
	}))
	serverCleanup(t, g, srv) // after the clients' own cleanups: their event streams hold it
	self := strings.TrimPrefix(srv.URL, "http://")
	routes := []struct{ method, path string }{
		{http.MethodPost, "/mcp"}, {http.MethodGet, "/mcp"}, {http.MethodGet, "/sse"},
		{http.MethodPost, "/sse?sessionid=x"}, {http.MethodGet, "/ws"}, {http.MethodGet, "/healthz"},
		{http.MethodGet, "/readyz"}, {http.MethodGet, "/metrics"}, {http.MethodGet, "/audit/stream"},
		{http.MethodGet, "/.well-known/schemapin.json"},
	}
	for _, tc := range []struct {
		name      string
		host      string
		origins   []string
		forbidden bool
	}{
		{name: "plain"},
		{name: "rebinding host", host: "evil.example:8080", forbidden: true},
		{name: "foreign origin", origins: []string{"http://evil.example"}, forbidden: true},
		{name: "foreign origin with our port", origins: []string{"http://evil.example:" + self[strings.LastIndex(self, ":")+1:]}, forbidden: true},
		{name: "null origin", origins: []string{"null"}, forbidden: true},
		{name: "two origins", origins: []string{"http://" + self, "http://" + self}, forbidden: true},
		{name: "same origin", origins: []string{"http://" + self}},
		{name: "configured origin, any case", origins: []string{"https://app.example.COM"}},
		{name: "configured origin, other scheme", origins: []string{"http://app.example.com"}, forbidden: true},
	} {
		for _, rt := range routes {
			t.Run(tc.name+" "+rt.method+" "+rt.path, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, rt.method, srv.URL+rt.path, strings.NewReader("{}"))
				if tc.host != "" {
					req.Host = tc.host
				}
				for _, o := range tc.origins {
					req.Header.Add("Origin", o)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close() // an SSE stream ends here
				if got := resp.StatusCode == http.StatusForbidden; got != tc.forbidden {
					t.Errorf("status %d, want forbidden=%v", resp.StatusCode, tc.forbidden)
				}
			})
		}
	}
}

// TestUnauthorizedChallenge: a 401 carries a Bearer challenge, with error="invalid_token"
// when a token was given and refused.
func TestUnauthorizedChallenge(t *testing.T) {
	const token = "operator-token-0123456789"
	g := New(&Options{Tokens: map[string]string{token: "ops"}})
	srv := httptest.NewServer(g.Handler(nil))
	serverCleanup(t, g, srv) // after the clients' own cleanups: their event streams hold it
	for _, tc := range []struct {
		name, path, auth string
		wantCode         int
		wantChallenge    string
	}{
		{"no token /mcp", "/mcp", "", 401, `Bearer realm="symbi"`},
		{"wrong token /mcp", "/mcp", "Bearer not-the-token-0000000", 401, `Bearer realm="symbi", error="invalid_token"`},
		{"other scheme /mcp", "/mcp", "Basic dXNlcjpwYXNz", 401, `Bearer realm="symbi"`},
		{"no token /metrics", "/metrics", "", 401, `Bearer realm="symbi"`},
		{"wrong token /ws", "/ws", "Bearer not-the-token-0000000", 401, `Bearer realm="symbi", error="invalid_token"`},
		{"good token", "/metrics", "Bearer " + token, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.wantChallenge)
			}
		})
	}
}

// serverCleanup closes, at the end of the test, the sessions g still holds (raw requests
// leave them open), then srv.
func serverCleanup(t *testing.T, g *Gateway, srv *httptest.Server) {
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		for ss := range g.server.Sessions() {
			_ = ss.Close()
		}
	})
}

// wsDial opens a raw WebSocket to srv's /ws.
func wsDial(t *testing.T, srv *httptest.Server) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	c, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	return c
}

// rawReply is the part of a JSON-RPC response the id tests compare: the id exactly as
// written.
type rawReply struct {
	ID    json.RawMessage `json:"id"`
	Error *struct {
		Code int `json:"code"`
	} `json:"error"`
	Result json.RawMessage `json:"result"`
}

func wsExchange(t *testing.T, c *websocket.Conn, msg string) rawReply {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read reply to %.80s: %v", msg, err)
	}
	var r rawReply
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("reply %q: %v", data, err)
	}
	return r
}

const initMsg = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// TestWebSocketOversizedMessage: a message over the limit is answered with a JSON-RPC
// error and the session goes on.
func TestWebSocketOversizedMessage(t *testing.T) {
	g := New(&Options{MaxMessageBytes: 2048})
	srv := httptest.NewServer(g.Handler(nil))
	serverCleanup(t, g, srv) // after the clients' own cleanups: their event streams hold it
	c := wsDial(t, srv)
	if r := wsExchange(t, c, initMsg); r.Error != nil {
		t.Fatalf("initialize failed: %+v", r)
	}
	big := `{"jsonrpc":"2.0","id":5,"method":"ping","params":{"pad":"` + strings.Repeat("x", 64<<10) + `"}}`
	r := wsExchange(t, c, big)
	if r.Error == nil || r.Error.Code != codeInvalidRequest {
		t.Fatalf("oversized message: reply %+v, want error %d", r, codeInvalidRequest)
	}
	if r := wsExchange(t, c, `{"jsonrpc":"2.0","id":6,"method":"ping"}`); r.Error != nil || string(r.ID) != "6" {
		t.Fatalf("ping after the oversized message: %+v", r)
	}
	if got := metricValue(t, g, "symbi_rejected_frames_total", "reason", "too_large"); got != 1 {
		t.Errorf("rejected frames (too_large) = %v, want 1", got)
	}
}

// metricValue sums the counter or gauge name over the series whose label (if given)
// has the value given.
func metricValue(t *testing.T, g *Gateway, name string, label ...string) float64 {
	t.Helper()
	mfs, err := g.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := len(label) == 0
			for _, lp := range m.GetLabel() {
				if len(label) == 2 && lp.GetName() == label[0] && lp.GetValue() == label[1] {
					match = true
				}
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// streamableSession opens a 2025-11-25 session on srv with the go-sdk client.
func streamableSession(t *testing.T, url string) (*mcp.ClientSession, error) {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: url + "/mcp"},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err == nil {
		t.Cleanup(func() { _ = cs.Close() })
	}
	return cs, err
}

// waitMetric polls a counter until it reaches want: the expiry runs on a timer.
func waitMetric(t *testing.T, what string, get func() float64, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", what, get(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSessionIdleExpiry: a stateful session with no request open for the idle timeout
// is closed and counted; its next request is refused (404), so the client starts anew.
// (A session whose client keeps its event stream open is not idle.)
func TestSessionIdleExpiry(t *testing.T) {
	g := New(nil)
	srv := httptest.NewServer(g.Handler(&HTTPOptions{Limits: HTTPLimits{SessionIdleTimeout: 300 * time.Millisecond}}))
	serverCleanup(t, g, srv) // after the clients' own cleanups: their event streams hold it
	_, session := postRPC(t, srv.URL, "", initMsg)
	if n := g.sessionCount(); n != 1 {
		t.Fatalf("%d sessions open, want 1", n)
	}
	waitMetric(t, "expired sessions", func() float64 { return metricValue(t, g, "symbi_sessions_expired_total") }, 1)
	if n := g.sessionCount(); n != 0 {
		t.Errorf("%d sessions open after expiry, want 0", n)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("request on an expired session: status %d, want 404", resp.StatusCode)
	}
}

// TestSessionCap: beyond MaxSessions a new session is refused with 503 and Retry-After
// on every transport; closing one makes room.
func TestSessionCap(t *testing.T) {
	g := New(nil)
	srv := httptest.NewServer(g.Handler(&HTTPOptions{Limits: HTTPLimits{MaxSessions: 2}}))
	serverCleanup(t, g, srv) // after the clients' own cleanups: their event streams hold it
	first, err := streamableSession(t, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streamableSession(t, srv.URL); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, method, path, body string }{
		{"streamable", http.MethodPost, "/mcp", initMsg},
		{"sse", http.MethodGet, "/sse", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: third session: status %d, Retry-After %q; want 503 with Retry-After", tc.name, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	if _, resp, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("websocket: third session: %v %v, want 503", err, resp)
	}
	for _, tr := range []string{"streamable", "sse", "websocket"} {
		if got := metricValue(t, g, "symbi_sessions_refused_total", "transport", tr); got != 1 {
			t.Errorf("sessions refused on %s = %v, want 1", tr, got)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, "open sessions", func() float64 { return float64(g.sessionCount()) }, 1)
	if _, err := streamableSession(t, srv.URL); err != nil {
		t.Errorf("a session after one closed: %v", err)
	}
}

// TestInflightLimiter: a request is charged its size from start to end; an identity
// beyond its share gets 429, everyone beyond the total 503; a lone request always passes.
func TestInflightLimiter(t *testing.T) {
	g := New(nil)
	l := newInflightLimiter(g, HTTPLimits{MaxInflightBytes: 100, MaxInflightBytesPerIdentity: 60})
	steps := []struct {
		id   string
		n    int64
		want int
	}{
		{"a", 50, 0},
		{"a", 20, http.StatusTooManyRequests}, // a: 70 > 60
		{"b", 40, 0},
		{"c", 20, http.StatusServiceUnavailable}, // total: 110 > 100
		{"c", 10, 0},
	}
	for i, s := range steps {
		if got := l.acquire(s.id, s.n); got != s.want {
			t.Errorf("step %d: acquire(%s, %d) = %d, want %d", i, s.id, s.n, got, s.want)
		}
	}
	l.release("a", 50)
	l.release("b", 40)
	l.release("c", 10)
	if l.total != 0 || len(l.per) != 0 {
		t.Errorf("after release: total %d, per %v", l.total, l.per)
	}
	if got := l.acquire("a", 500); got != 0 {
		t.Errorf("a lone request over both limits: %d, want admitted", got)
	}
}

// TestInflightLimitHTTP: with requests held open, the next POST that would pass the
// limit is refused with 429 and Retry-After, and admitted again once they finish.
func TestInflightLimitHTTP(t *testing.T) {
	g := New(nil)
	release := make(chan struct{})
	var entered sync.WaitGroup
	hold := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Done()
		<-release
	})
	l := newInflightLimiter(g, HTTPLimits{MaxInflightBytes: 1 << 20, MaxInflightBytesPerIdentity: 3000})
	srv := httptest.NewServer(l.wrap(hold))
	defer srv.Close()
	post := func() *http.Response {
		resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(make([]byte, 1000)))
		if err != nil {
			t.Error(err)
			return nil
		}
		resp.Body.Close()
		return resp
	}
	entered.Add(3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); post() }()
	}
	entered.Wait()
	resp := post()
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("fourth request: %+v, want 429 with Retry-After", resp)
	}
	close(release)
	wg.Wait()
	entered.Add(1)
	if resp := post(); resp == nil || resp.StatusCode != 200 {
		t.Errorf("after the others finished: %+v, want 200", resp)
	}
	if got := metricValue(t, g, "symbi_inflight_refused_total", "limit", "identity"); got != 1 {
		t.Errorf("refused (identity) = %v, want 1", got)
	}
}

// idCases are ids the SDK alone would not echo exactly, and some it would.
var idCases = []string{
	`9223372036854775808`, `1.5`, `-0`, `1e3`, `9007199254740993`, `-9223372036854775809`, `0.0`,
	`"strings"`, `"` + strings.Repeat("k", 10000) + `"`, `"\u00e9t\u00e9"`, `"a<b&c>"`, `"été"`,
	`"symbi-id~forged~1"`, `42`, `-7`, `0`,
}

func TestExactIDUnit(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want bool
	}{
		{`1`, true}, {`-1`, true}, {`0`, true}, {`9007199254740992`, true}, {`9007199254740993`, false},
		{`-0`, false}, {`01`, false}, {`1.5`, false}, {`1e3`, false}, {`9223372036854775808`, false},
		{`"a"`, true}, {`""`, true}, {`"a\"b"`, false}, {`"é"`, false}, {`"<"`, false}, {`"symbi-id~x"`, false},
		{`null`, true}, {``, true},
	} {
		if got := exactID([]byte(tc.raw)); got != tc.want {
			t.Errorf("exactID(%s) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

func TestJSONSpan(t *testing.T) {
	for _, tc := range []struct {
		in, key, want string
		found         bool
	}{
		{`{"id":1.5,"method":"x"}`, "id", `1.5`, true},
		{` { "method" : "x" , "id" : "a,}" } `, "id", `"a,}"`, true},
		{`{"params":{"id":3},"id":4}`, "id", `4`, true},
		{`{"params":[{"id":3}],"x":"}\"{"}`, "id", ``, false},
		{`{"\u0069d":7}`, "id", `7`, true},
		{`{"id":1,"id":2}`, "id", ``, false},
		{`[{"id":1}]`, "id", ``, false},
		{`{"id":`, "id", ``, false},
	} {
		s, e, found := jsonSpan([]byte(tc.in), tc.key)
		got := ""
		if found {
			got = tc.in[s:e]
		}
		if found != tc.found || got != tc.want {
			t.Errorf("jsonSpan(%s, %s) = %q %v, want %q %v", tc.in, tc.key, got, found, tc.want, tc.found)
		}
	}
}

// TestExactIDsWebSocketAndStdio: every id comes back byte for byte over /ws and stdio.
func TestExactIDsWebSocketAndStdio(t *testing.T) {
	g := New(nil)
	srv := httptest.NewServer(g.Handler(nil))
	serverCleanup(t, g, srv) // after the clients' own cleanups: their event streams hold it
	t.Run("websocket", func(t *testing.T) {
		c := wsDial(t, srv)
		wsExchange(t, c, initMsg)
		for _, id := range idCases {
			r := wsExchange(t, c, `{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`)
			if diff := cmp.Diff(id, string(r.ID)); diff != "" || r.Error != nil {
				t.Errorf("id (-sent +echoed):\n%s (error %+v)", diff, r.Error)
			}
		}
	})
	t.Run("stdio", func(t *testing.T) {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.ServeStdio(ctx, inR, outW, inR) }()
		defer func() { cancel(); inW.Close(); outR.Close(); <-done }()
		lines := bufio.NewReader(outR)
		exchange := func(msg string) rawReply {
			t.Helper()
			go func() { _, _ = io.WriteString(inW, msg+"\n") }()
			line, err := lines.ReadBytes('\n')
			if err != nil {
				t.Fatal(err)
			}
			var r rawReply
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatalf("reply %q: %v", line, err)
			}
			return r
		}
		exchange(initMsg)
		for _, id := range idCases {
			r := exchange(`{"jsonrpc":"2.0","id":` + id + `,"method":"ping"}`)
			if diff := cmp.Diff(id, string(r.ID)); diff != "" || r.Error != nil {
				t.Errorf("id (-sent +echoed):\n%s (error %+v)", diff, r.Error)
			}
		}
	})
}

// postRPC sends one JSON-RPC message to /mcp and returns the JSON of the reply (from a
// JSON body or the SSE event carrying it) and the session id.
func postRPC(t *testing.T, url, session, msg string) ([]byte, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/mcp", strings.NewReader(msg))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("POST %.60s: status %d %s", msg, resp.StatusCode, body)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for _, line := range strings.Split(string(body), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok && data != "" {
				return []byte(data), resp.Header.Get("Mcp-Session-Id")
			}
		}
		t.Fatalf("no data in event stream %q", body)
	}
	return body, resp.Header.Get("Mcp-Session-Id")
}

// TestExactIDsHTTP: every id comes back byte for byte over streamable HTTP and legacy
// SSE, and no token is left behind.
func TestExactIDsHTTP(t *testing.T) {
	g := New(nil)
	h, ids := g.handler(nil)
	srv := httptest.NewServer(h)
	serverCleanup(t, g, srv) // after the clients' own cleanups: their event streams hold it
	check := func(t *testing.T, id string, reply []byte) {
		t.Helper()
		var r rawReply
		if err := json.Unmarshal(reply, &r); err != nil {
			t.Fatalf("reply %q: %v", reply, err)
		}
		if diff := cmp.Diff(id, string(r.ID)); diff != "" || r.Error != nil {
			t.Errorf("id (-sent +echoed):\n%s (error %+v)", diff, r.Error)
		}
	}
	t.Run("streamable", func(t *testing.T) {
		_, session := postRPC(t, srv.URL, "", initMsg)
		if session == "" {
			t.Fatal("no session id")
		}
		for _, id := range idCases {
			reply, _ := postRPC(t, srv.URL, session, `{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`)
			check(t, id, reply)
		}
		for _, id := range []string{`1.5`, `"x"`} { // initialize itself, on a new session
			reply, _ := postRPC(t, srv.URL, "", strings.Replace(initMsg, `"id":0`, `"id":`+id, 1))
			check(t, id, reply)
		}
	})
	t.Run("sse", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/sse", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		events := bufio.NewReader(resp.Body)
		next := func() (event, data string) {
			t.Helper()
			for {
				line, err := events.ReadString('\n')
				if err != nil {
					t.Fatalf("read event stream: %v", err)
				}
				line = strings.TrimRight(line, "\n")
				switch {
				case strings.HasPrefix(line, "event: "):
					event = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: "):
					data = strings.TrimPrefix(line, "data: ")
				case line == "" && data != "":
					return event, data
				}
			}
		}
		_, endpoint := next()
		send := func(msg string) []byte {
			t.Helper()
			r, err := http.Post(srv.URL+endpoint, "application/json", strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode/100 != 2 {
				t.Fatalf("POST: status %d", r.StatusCode)
			}
			_, data := next()
			return []byte(data)
		}
		send(initMsg)
		for _, id := range idCases {
			check(t, id, send(`{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`))
		}
	})
	if n := ids.n.Load(); n != 0 {
		t.Errorf("%d id tokens left behind", n)
	}
}

// TestExactIDsCancellation: a cancellation names its request by the client's id; symbi
// maps it to the request's token, and drops one naming an unknown unrepresentable id
// rather than let the SDK cancel another request.
func TestExactIDsCancellation(t *testing.T) {
	m := newIDMap()
	in := `{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{}}`
	out, token, drop := m.mapInbound("s", []byte(in))
	if drop || token == "" || !bytes.Contains(out, []byte(`"id":"`+token+`"`)) {
		t.Fatalf("mapInbound(request) = %s %q %v", out, token, drop)
	}
	cancel := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1.5,"reason":"x"}}`
	out, _, drop = m.mapInbound("s", []byte(cancel))
	if want := strings.Replace(cancel, `1.5`, fmt.Sprintf("%q", token), 1); drop || string(out) != want {
		t.Errorf("cancellation = %s (drop %v), want %s", out, drop, want)
	}
	if _, _, drop := m.mapInbound("other", []byte(cancel)); !drop {
		t.Error("a cancellation from another scope was not dropped")
	}
	plain := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}`
	if out, _, drop := m.mapInbound("s", []byte(plain)); drop || string(out) != plain {
		t.Errorf("plain cancellation changed: %s %v", out, drop)
	}
}
