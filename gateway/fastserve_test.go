package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/gateway"
)

// httpGateway runs a gateway over corpusServer with corpusPolicy behind its HTTP handler;
// noServe turns the client side of the fast path off (Options.NoFastServe).
func httpGateway(t *testing.T, noServe bool, maxMsg int) (*gateway.Gateway, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{})
	var once sync.Once
	g := gateway.New(&gateway.Options{
		Upstreams: []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(corpusServer)}},
		OnUpstreamState: func(_, state, _ string) {
			if state == gateway.StateUp {
				once.Do(func() { close(up) })
			}
		},
		NoFastServe:     noServe,
		MaxMessageBytes: maxMsg,
	})
	g.UsePolicy(gateway.PolicyOptions{Engine: engineFunc(corpusPolicy)})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		t.Fatalf("upstream not up: %+v", g.Status())
	}
	hs := httptest.NewServer(g.Handler(nil))
	t.Cleanup(func() { hs.Close(); cancel(); _ = g.Close(); wg.Wait() })
	return g, hs.URL + "/mcp"
}

// rawResponse is what a client sees of an HTTP response: the status, the headers but
// Date, and the body with the SDK's random stream ids replaced.
type rawResponse struct {
	status  int
	headers string
	body    string
}

var (
	streamIDs = regexp.MustCompile(`(?m)^id: [^_\n]+_`)
	// progress events: the SDK path forwards them asynchronously, so one may overtake
	// the response, follow it or, once the call is over, be dropped.
	progressEvents = regexp.MustCompile(`(?m)^event: message\nid: S_\d+\ndata: \{"jsonrpc":"2.0","method":"notifications/progress".*\n\n`)
	eventNumbers   = regexp.MustCompile(`(?m)^id: S_\d+$`)
)

// post sends body to url with the headers of a 2025-11-25 client (hdr changes them: ""
// removes one) and reads the whole response; a request the response stream carries
// (elicitation) is answered with answer.
func post(t *testing.T, url, session, body string, hdr map[string]string, answer string) rawResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	rd := bufio.NewReader(resp.Body)
	for {
		line, err := rd.ReadString('\n')
		b.WriteString(line)
		if data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: "); ok && answer != "" {
			var m struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
			}
			if json.Unmarshal([]byte(data), &m) == nil && m.Method != "" && len(m.ID) > 0 {
				post(t, url, session, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":`+answer+`}`, nil, "")
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
	}
	resp.Header.Del("Date")
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var h strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&h, "%s: %s\n", k, strings.Join(resp.Header[k], ", "))
	}
	out := streamIDs.ReplaceAllString(b.String(), "id: S_")
	out = progressEvents.ReplaceAllString(out, "")
	return rawResponse{status: resp.StatusCode, headers: h.String(), body: out}
}

// openSession initializes a 2025-11-25 session with the given capabilities.
func openSession(t *testing.T, url, caps string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":`+caps+`,"clientInfo":{"name":"corpus","version":"1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize: %s, session %q", resp.Status, sid)
	}
	t.Cleanup(func() { // the gateway's cleanup, registered before, runs after this
		del, err := http.NewRequest(http.MethodDelete, url, nil)
		if err != nil {
			t.Error(err)
			return
		}
		del.Header.Set("Mcp-Session-Id", sid)
		if resp, err := http.DefaultClient.Do(del); err != nil {
			t.Error(err)
		} else {
			resp.Body.Close()
		}
	})
	if r := post(t, url, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil, ""); r.status != http.StatusAccepted {
		t.Fatalf("initialized: %d %s", r.status, r.body)
	}
	return sid
}

// TestFastServeSameBytes: for a corpus of HTTP requests, a gateway answering tools/call
// on the client side of the fast path gives the client exactly the response (status,
// headers, body but the random stream ids) that the go-sdk's streamable handler gives;
// and the requests that fit were answered on the fast path.
func TestFastServeSameBytes(t *testing.T) {
	const maxMsg = 64 << 10
	fastG, fastURL := httpGateway(t, false, maxMsg)
	_, sdkURL := httpGateway(t, true, maxMsg)
	plain := `{}`
	eliciting := `{"elicitation":{}}`
	sessions := map[string][2]string{
		plain:     {openSession(t, fastURL, plain), openSession(t, sdkURL, plain)},
		eliciting: {openSession(t, fastURL, eliciting), openSession(t, sdkURL, eliciting)},
	}
	call := func(id any, tool, args string, meta string) string {
		p := `{"name":"` + tool + `"`
		if args != "" {
			p += `,"arguments":` + args
		}
		if meta != "" {
			p += `,"_meta":` + meta
		}
		idj, _ := json.Marshal(id)
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":%s}}`, idj, p)
	}
	accept := `{"action":"accept","content":{"ok":true}}`
	big := `{"text":"` + strings.Repeat("x", maxMsg) + `"}`
	for _, tc := range []struct {
		name   string
		body   string
		hdr    map[string]string
		caps   string
		noSess bool
		// progress events may be left out: the events' numbers are not compared
		progress bool
		served   bool // answered on the client side of the fast path
	}{
		{name: "success", body: call(1, "up__echo", `{"text":"hello"}`, ""), served: true},
		{name: "string id", body: call("a-1", "up__echo", `{"text":"hello"}`, ""), served: true},
		{name: "spaced envelope and arguments", body: ` { "params" : { "arguments" : { "text" : "a \"quoted\" \u00e9 <b>&</b>" } , "name" : "up__echo" } , "method" : "tools/call" , "id" : 2 , "jsonrpc" : "2.0" } `, served: true},
		{name: "no arguments", body: call(3, "up__echo", "", ""), served: true},
		{name: "tool error", body: call(4, "up__fail", `{"text":"x"}`, ""), served: true},
		{name: "structured", body: call(5, "up__structured", `{"text":"abc"}`, ""), served: true},
		{name: "upstream JSON-RPC error", body: call(6, "up__rpcerr", `{}`, ""), served: true},
		{name: "empty result", body: call(7, "up__empty", `{}`, ""), served: true},
		{name: "unknown tool", body: call(8, "up__nope", `{"text":"x"}`, "")},
		{name: "policy deny", body: call(9, "up__echo", `{"text":"deny"}`, ""), served: true},
		{name: "condition redact_secrets", body: call(10, "up__echo", `{"text":"redact"}`, ""), served: true},
		{name: "condition redact arguments", body: call(11, "up__echo", `{"text":"mask"}`, ""), served: true},
		{name: "secret in arguments, redacted", body: call(12, "up__echo", `{"text":"redact `+argSecret+`"}`, ""), served: true},
		{name: "progress token", body: call(13, "up__progress", `{"text":"p"}`, `{"progressToken":"tok-1"}`), progress: true},
		{name: "no progress token", body: call(14, "up__progress", `{"text":"p"}`, ""), served: true},
		{name: "other _meta", body: call(15, "up__echo", `{"text":"m"}`, `{"example.com/trace":"abc"}`), served: true},
		{name: "duplicate argument key", body: call(16, "up__echo", `{"text":"a","text":"b"}`, ""), served: true},
		{name: "arguments not an object", body: call(17, "up__echo", `["text"]`, "")},
		{name: "elicitation, client cannot answer", body: call(18, "up__ask", `{"text":"go"}`, ""), served: true},
		{name: "mid-call elicitation", body: call(19, "up__ask", `{"text":"go"}`, ""), caps: eliciting},
		{name: "builtin tool", body: call(20, "symbi__status", `{}`, "")},
		{name: "malformed JSON", body: `{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"up__echo"`},
		{name: "batch", body: `[` + call(22, "up__echo", `{"text":"b"}`, "") + `]`},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"up__echo"}}`},
		{name: "oversized body", body: call(23, "up__echo", big, "")},
		{name: "extra member", body: `{"jsonrpc":"2.0","id":24,"method":"tools/call","params":{"name":"up__echo"},"x":1}`},
		{name: "escaped name", body: call(25, "up\\u005f_echo", `{"text":"e"}`, "")},
		{name: "Mcp-Method header", body: call(26, "up__echo", `{"text":"h"}`, ""), hdr: map[string]string{"Mcp-Method": "tools/list"}},
		{name: "other protocol version", body: call(27, "up__echo", `{"text":"h"}`, ""), hdr: map[string]string{"Mcp-Protocol-Version": "2025-06-18"}},
		{name: "no protocol version", body: call(28, "up__echo", `{"text":"h"}`, ""), hdr: map[string]string{"Mcp-Protocol-Version": ""}},
		{name: "Accept without SSE", body: call(29, "up__echo", `{"text":"h"}`, ""), hdr: map[string]string{"Accept": "application/json"}},
		{name: "wrong Content-Type", body: call(30, "up__echo", `{"text":"h"}`, ""), hdr: map[string]string{"Content-Type": "text/plain"}},
		{name: "Last-Event-ID", body: call(31, "up__echo", `{"text":"h"}`, ""), hdr: map[string]string{"Last-Event-ID": "x_1"}},
		{name: "unknown session", body: call(32, "up__echo", `{"text":"h"}`, ""), noSess: true},
		{name: "large id", body: call(int64(1)<<53, "up__echo", `{"text":"h"}`, "")},
		{name: "task", body: `{"jsonrpc":"2.0","id":33,"method":"tools/call","params":{"name":"up__echo","task":{"ttl":1000}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caps := tc.caps
			if caps == "" {
				caps = plain
			}
			s := sessions[caps]
			fastSess, sdkSess := s[0], s[1]
			if tc.noSess {
				fastSess, sdkSess = "nope", "nope"
			}
			before := gateway.FastServed(fastG)
			want := post(t, sdkURL, sdkSess, tc.body, tc.hdr, accept)
			got := post(t, fastURL, fastSess, tc.body, tc.hdr, accept)
			if tc.progress {
				want.body = eventNumbers.ReplaceAllString(want.body, "id: S_n")
				got.body = eventNumbers.ReplaceAllString(got.body, "id: S_n")
			}
			if got != want {
				t.Errorf("fast path answered\n%d\n%s\n%s\nthe SDK\n%d\n%s\n%s", got.status, got.headers, got.body, want.status, want.headers, want.body)
			}
			if n := gateway.FastServed(fastG) - before; n != map[bool]uint64{true: 1, false: 0}[tc.served] {
				t.Errorf("answered on the fast path %d times, want served=%v", n, tc.served)
			}
		})
	}
}

// TestFastServeResume: the events of a call answered on the fast path are in the
// session's event store, so a client that lost the stream gets them again with
// Last-Event-ID, as from the SDK.
func TestFastServeResume(t *testing.T) {
	g, url := httpGateway(t, false, 0)
	sid := openSession(t, url, `{}`)
	before := gateway.FastServed(g)
	raw := rawPost(t, url, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"up__echo","arguments":{"text":"again"}}}`)
	if gateway.FastServed(g)-before != 1 {
		t.Fatal("the call was not answered on the fast path")
	}
	// The priming event's id names the stream; resume after it.
	m := regexp.MustCompile(`(?m)^id: ([^\n]+_0)$`).FindStringSubmatch(raw)
	if m == nil {
		t.Fatalf("no priming event id in %q", raw)
	}
	get, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	get.Header.Set("Accept", "text/event-stream")
	get.Header.Set("Mcp-Session-Id", sid)
	get.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	get.Header.Set("Last-Event-ID", m[1])
	resp, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"id":2,"result":{"content":[{"type":"text","text":"got text=again`) {
		t.Fatalf("resume: %s\n%s", resp.Status, b)
	}
}

// rawPost sends a call and returns the response body as it came.
func rawPost(t *testing.T, url, sid, body string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
