package test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
)

// hardeningInit opens a 2025-11-25 session.
const hardeningInit = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`

// hardeningIDs are ids the go-sdk alone would not echo exactly, and ordinary ones.
var hardeningIDs = []string{
	`9223372036854775808`, `1.5`, `-0`, `1e3`, `"strings"`, `"` + strings.Repeat("s", 20000) + `"`,
	`"caf\u00e9"`, `9007199254740993`, `7`,
}

// rawID is a reply's id exactly as written.
type rawID struct {
	ID    json.RawMessage `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeReply(t *testing.T, data []byte) rawID {
	t.Helper()
	var r rawID
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("reply %.200q: %v", data, err)
	}
	return r
}

// httpDo sends one request and returns the status, headers and body.
func httpDo(t *testing.T, method, url string, body string, header map[string]string, host string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b []byte
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || method == http.MethodPost {
		b, _ = io.ReadAll(resp.Body)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// sseData is the first non-empty data of an event stream body, or the body itself.
func sseData(body string) []byte {
	for _, line := range strings.Split(body, "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok && d != "" {
			return []byte(d)
		}
	}
	return []byte(body)
}

// TestHTTPHostAndOrigin: the built binary applies one Host check and one Origin check to
// every route.
func TestHTTPHostAndOrigin(t *testing.T) {
	hostOriginCases(t, writeConfig(t, ""), false)
}

// TestHTTPAllowedOrigins: server.allowed_origins admits a configured browser origin, and
// only that one.
func TestHTTPAllowedOrigins(t *testing.T) {
	hostOriginCases(t, writeConfig(t, "allowed_origins = [\"https://ui.example.com\"]\n"), true) // in [server]
}

func hostOriginCases(t *testing.T, cfg string, configured bool) {
	s := serve(t, cfg)
	base := "http://" + s.addr
	uiWant := 403
	if configured {
		uiWant = 200
	}
	for _, tc := range []struct {
		name, method, path, origin, host string
		want                             int
	}{
		{"readyz rebinding host", http.MethodGet, "/readyz", "", "evil.example", 403},
		{"healthz rebinding host", http.MethodGet, "/healthz", "", "evil.example:80", 403},
		{"metrics rebinding host", http.MethodGet, "/metrics", "", "evil.example", 403},
		{"mcp foreign origin", http.MethodPost, "/mcp", "http://evil.example", "", 403},
		{"sse foreign origin", http.MethodGet, "/sse", "http://evil.example", "", 403},
		{"ws foreign origin", http.MethodGet, "/ws", "http://evil.example", "", 403},
		{"readyz foreign origin", http.MethodGet, "/readyz", "http://evil.example", "", 403},
		{"mcp configured origin", http.MethodPost, "/mcp", "https://ui.example.com", "", uiWant},
		{"mcp configured host, other scheme", http.MethodPost, "/mcp", "http://ui.example.com", "", 403},
		{"mcp same origin", http.MethodPost, "/mcp", base, "", 200},
		{"mcp no origin", http.MethodPost, "/mcp", "", "", 200},
		{"readyz no origin", http.MethodGet, "/readyz", "", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.origin != "" {
				h["Origin"] = tc.origin
			}
			code, _, body := httpDo(t, tc.method, base+tc.path, hardeningInit, h, tc.host)
			if code != tc.want {
				t.Errorf("status %d, want %d (%.200s)", code, tc.want, body)
			}
		})
	}
}

// TestHTTPUnauthorizedChallenge: a 401 from the binary names the Bearer scheme.
func TestHTTPUnauthorizedChallenge(t *testing.T) {
	cfg := writeConfig(t, "[[server.tokens]]\ntoken = \"e2e-token-0123456789\"\nidentity = \"e2e\"\n")
	s := serve(t, cfg)
	for _, tc := range []struct{ auth, want string }{
		{"", `Bearer realm="symbi"`},
		{"Bearer wrong-token-0123456789", `Bearer realm="symbi", error="invalid_token"`},
	} {
		h := map[string]string{}
		if tc.auth != "" {
			h["Authorization"] = tc.auth
		}
		code, hdr, _ := httpDo(t, http.MethodPost, "http://"+s.addr+"/mcp", hardeningInit, h, "")
		if code != 401 || hdr.Get("WWW-Authenticate") != tc.want {
			t.Errorf("auth %q: status %d, WWW-Authenticate %q; want 401, %q", tc.auth, code, hdr.Get("WWW-Authenticate"), tc.want)
		}
	}
}

// TestWebSocketOversizedKeepsSession: over /ws, a message over max_message_bytes gets a
// JSON-RPC error and the session answers the next request.
func TestWebSocketOversizedKeepsSession(t *testing.T) {
	cfg := writeConfig(t, "max_message_bytes = 2048\n") // in [server]
	s := serve(t, cfg)
	c := dialWS(t, s.addr)
	wsRoundTrip(t, c, hardeningInit)
	r := wsRoundTrip(t, c, `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"`+strings.Repeat("x", 100<<10)+`"}}`)
	if r.Error == nil || r.Error.Code != -32600 {
		t.Fatalf("oversized message: %+v, want error -32600", r)
	}
	if r := wsRoundTrip(t, c, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); r.Error != nil || string(r.ID) != "2" {
		t.Fatalf("the session did not go on: %+v", r)
	}
}

// TestHTTPSessionCap: beyond server.max_sessions a new session gets 503 with Retry-After.
func TestHTTPSessionCap(t *testing.T) {
	cfg := writeConfig(t, "max_sessions = 1\n") // in [server]
	s := serve(t, cfg)
	if code, _, body := httpDo(t, http.MethodPost, "http://"+s.addr+"/mcp", hardeningInit, nil, ""); code != 200 {
		t.Fatalf("first session: %d %s", code, body)
	}
	code, hdr, _ := httpDo(t, http.MethodPost, "http://"+s.addr+"/mcp", hardeningInit, nil, "")
	if code != 503 || hdr.Get("Retry-After") == "" {
		t.Errorf("second session: status %d, Retry-After %q; want 503 with Retry-After", code, hdr.Get("Retry-After"))
	}
}

// TestJSONRPCIDsExact: every id comes back byte for byte, on streamable HTTP, WebSocket
// and stdio.
func TestJSONRPCIDsExact(t *testing.T) {
	cfg := writeConfig(t, "")
	check := func(t *testing.T, id string, r rawID) {
		t.Helper()
		if diff := cmp.Diff(id, string(r.ID)); diff != "" || r.Error != nil {
			t.Errorf("id (-sent +echoed):\n%.400s (error %+v)", diff, r.Error)
		}
	}
	t.Run("streamable", func(t *testing.T) {
		s := serve(t, cfg)
		url := "http://" + s.addr + "/mcp"
		code, hdr, body := httpDo(t, http.MethodPost, url, hardeningInit, nil, "")
		if code != 200 {
			t.Fatalf("initialize: %d %s", code, body)
		}
		h := map[string]string{"Mcp-Session-Id": hdr.Get("Mcp-Session-Id"), "Mcp-Protocol-Version": "2025-11-25"}
		for _, id := range hardeningIDs {
			_, _, body := httpDo(t, http.MethodPost, url, `{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`, h, "")
			check(t, id, decodeReply(t, sseData(body)))
		}
	})
	t.Run("websocket", func(t *testing.T) {
		s := serve(t, cfg)
		c := dialWS(t, s.addr)
		wsRoundTrip(t, c, hardeningInit)
		for _, id := range hardeningIDs {
			check(t, id, wsRoundTrip(t, c, `{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`))
		}
	})
	t.Run("stdio", func(t *testing.T) {
		cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
		lines := bufio.NewReaderSize(stdout, 1<<20)
		roundTrip := func(msg string) rawID {
			t.Helper()
			if _, err := io.WriteString(stdin, msg+"\n"); err != nil {
				t.Fatal(err)
			}
			line, err := lines.ReadBytes('\n')
			if err != nil {
				t.Fatal(err)
			}
			return decodeReply(t, line)
		}
		roundTrip(hardeningInit)
		for _, id := range hardeningIDs {
			check(t, id, roundTrip(`{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`))
		}
	})
}

func dialWS(t *testing.T, addr string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	c, _, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	return c
}

func wsRoundTrip(t *testing.T, c *websocket.Conn, msg string) rawID {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return decodeReply(t, data)
}
