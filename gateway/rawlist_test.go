package gateway

import (
	"bufio"
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
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// rawPages are the tools/list pages of the scripted upstream, written the way some
// servers write them: a number as 1.0, an annotation the SDK does not model, fields in
// an unusual order, a field (execution) outside what is signed.
var rawPages = []string{
	`{"tools":[{"name":"calc","description":"Adds","inputSchema":{"type":"object","properties":{"x":{"type":"number","default":1.0}}},"annotations":{"x-vendor":{"audience":["ops"]},"readOnlyHint":true},"execution":{"taskSupport":"forbidden"}}],"nextCursor":"p2"}`,
	`{"tools":[{"inputSchema":{"type":"object"},"name":"plain","annotations":{"title":"Plain"}}]}`,
}

// wantRaw are the tool definitions exactly as rawPages carry them.
var wantRaw = []string{
	`{"name":"calc","description":"Adds","inputSchema":{"type":"object","properties":{"x":{"type":"number","default":1.0}}},"annotations":{"x-vendor":{"audience":["ops"]},"readOnlyHint":true},"execution":{"taskSupport":"forbidden"}}`,
	`{"inputSchema":{"type":"object"},"name":"plain","annotations":{"title":"Plain"}}`,
}

// scriptedAnswer answers one JSON-RPC request of the scripted upstream; "" for a
// notification.
func scriptedAnswer(t *testing.T, line []byte) string {
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Cursor string `json:"cursor"`
		} `json:"params"`
	}
	if err := json.Unmarshal(line, &req); err != nil {
		t.Errorf("scripted upstream: bad request %q: %v", line, err)
		return ""
	}
	if len(req.ID) == 0 {
		return ""
	}
	var result string
	switch req.Method {
	case "initialize":
		result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"scripted","version":"1"}}`
	case "tools/list":
		result = rawPages[0]
		if req.Params.Cursor == "p2" {
			result = rawPages[1]
		}
	default:
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"method not found"}}`, req.ID)
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":%s}`, req.ID, result)
}

// scriptedProcess is a stdio upstream answering with scriptedAnswer.
type scriptedProcess struct {
	stdinW  *io.PipeWriter
	stdoutR *io.PipeReader
	done    chan struct{}
}

func scriptedLauncher(t *testing.T) Launcher {
	return func(ctx context.Context) (Process, error) {
		stdinR, stdinW := io.Pipe()
		stdoutR, stdoutW := io.Pipe()
		p := &scriptedProcess{stdinW: stdinW, stdoutR: stdoutR, done: make(chan struct{})}
		go func() { // owned by p: Stop and Wait wait for it
			defer close(p.done)
			defer stdoutW.Close()
			sc := bufio.NewScanner(stdinR)
			for sc.Scan() {
				if ans := scriptedAnswer(t, sc.Bytes()); ans != "" {
					if _, err := io.WriteString(stdoutW, ans+"\n"); err != nil {
						return
					}
				}
			}
		}()
		return p, nil
	}
}

func (p *scriptedProcess) Stdin() io.WriteCloser { return p.stdinW }
func (p *scriptedProcess) Stdout() io.ReadCloser { return p.stdoutR }
func (p *scriptedProcess) Tier() string          { return "none" }
func (p *scriptedProcess) Wait() error           { <-p.done; return nil }
func (p *scriptedProcess) Stop(ctx context.Context) error {
	p.stdinW.Close()
	p.stdoutR.Close()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// scriptedHTTP is a streamable HTTP upstream answering with scriptedAnswer, as JSON or
// as server-sent events.
func scriptedHTTP(t *testing.T, sse bool) *httptest.Server {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		body, _ := io.ReadAll(r.Body)
		ans := scriptedAnswer(t, body)
		if ans == "" {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		if !sse {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, ans)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		// Split across lines and writes, as a stream may arrive.
		fmt.Fprintf(w, "event: message\r\n")
		w.(http.Flusher).Flush()
		half := len(ans) / 2
		fmt.Fprintf(w, "data: %s", ans[:half])
		w.(http.Flusher).Flush()
		fmt.Fprintf(w, "%s\r\n\r\n", ans[half:])
	}))
	t.Cleanup(hs.Close)
	return hs
}

func rawTestUpstreams(t *testing.T) map[string]UpstreamConfig {
	return map[string]UpstreamConfig{
		"stdio":           {Name: "raw", Prefix: "raw", Launch: scriptedLauncher(t)},
		"streamable json": {Name: "raw", Prefix: "raw", URL: scriptedHTTP(t, false).URL},
		"streamable sse":  {Name: "raw", Prefix: "raw", URL: scriptedHTTP(t, true).URL},
	}
}

// TestToolFilterSeesUpstreamBytes: the ToolFilter (SchemaPin) is handed each tool
// definition exactly as the upstream sent it, not the SDK's re-encoding (which turned
// 1.0 into 1, dropped unknown annotation keys and added absent hints).
func TestToolFilterSeesUpstreamBytes(t *testing.T) {
	for name, up := range rawTestUpstreams(t) {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			filtered := make(chan struct{}, 1)
			g := New(&Options{
				Upstreams:   []UpstreamConfig{up},
				InitialWait: 10 * time.Second,
				ToolFilter: func(ctx context.Context, upstream string, raw []json.RawMessage) []ToolDecision {
					mu.Lock()
					got = got[:0]
					for _, r := range raw {
						got = append(got, string(r))
					}
					mu.Unlock()
					select {
					case filtered <- struct{}{}:
					default:
					}
					return make([]ToolDecision, len(raw))
				},
			})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- g.Run(ctx) }() // owned: waited for below
			defer func() {
				cancel()
				_ = g.Close()
				<-done
			}()
			select {
			case <-filtered:
			case <-time.After(20 * time.Second):
				t.Fatalf("no tool listing reached the filter; status %+v", g.Status())
			}
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(wantRaw, got); diff != "" {
				t.Errorf("raw tools handed to the filter (-want +got):\n%s", diff)
			}
		})
	}
}

// TestListRawTools: what `symbi schemapin sign --from-upstream` signs is the upstream's
// bytes, every page of them, in order.
func TestListRawTools(t *testing.T) {
	for name, up := range rawTestUpstreams(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			raws, err := ListRawTools(ctx, up, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(raws))
			for i, r := range raws {
				got[i] = string(r)
			}
			if diff := cmp.Diff(wantRaw, got); diff != "" {
				t.Errorf("ListRawTools (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSSETapBounds: an event larger than the bound is passed through untouched and not
// collected; the next one is.
func TestSSETapBounds(t *testing.T) {
	tap := &listTap{}
	l := &rawToolList{}
	ctx := withRawTools(t.Context(), l)
	for _, id := range []int64{1, 2} {
		msg, err := decodeRequest(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id))
		if err != nil {
			t.Fatal(err)
		}
		tap.sent(ctx, msg)
	}
	big := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"big","description":%q,"inputSchema":{}}]}}`, strings.Repeat("x", 200))
	small := `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"small","inputSchema":{}}]}}`
	stream := "data: " + big + "\n\n" + "data: " + small + "\n\n"
	s := &sseTap{rc: io.NopCloser(strings.NewReader(stream)), tap: tap, max: 120}
	out, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != stream {
		t.Errorf("stream altered: %q", out)
	}
	if diff := cmp.Diff([]string{"small"}, keysOf(l.byName())); diff != "" {
		t.Errorf("collected (-want +got):\n%s", diff)
	}
}

func decodeRequest(s string) (jsonrpc.Message, error) {
	msg, _, err := decodeFrame([]byte(s))
	return msg, err
}

func keysOf(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
