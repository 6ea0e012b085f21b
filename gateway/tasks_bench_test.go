package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/store"
)

// taskBenchServer is an upstream that knows nothing of tasks: echo answers at once,
// hold answers after 50 ms (or when cancelled).
func taskBenchServer() *mcp.Server {
	s := benchServer()
	s.AddTool(&mcp.Tool{Name: "hold", Description: "Answer after 50 ms.", InputSchema: map[string]any{"type": "object"}},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "held"}}}, nil
		})
	return s
}

// rawCaller posts 2026-07-28 requests to a gateway's HTTP handler.
type rawCaller struct {
	url string
	hc  *http.Client
}

func (c *rawCaller) call(method, name string, params map[string]any, tasks bool) (map[string]any, error) {
	caps := map[string]any{}
	if tasks {
		caps["extensions"] = map[string]any{gateway.TasksExtension: map[string]any{}}
	}
	params["_meta"] = map[string]any{
		"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
		"io.modelcontextprotocol/clientCapabilities": caps,
		"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "bench", "version": "1"},
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest(http.MethodPost, c.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", method)
	req.Header.Set("Mcp-Name", name)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if i := bytes.Index(b, []byte("data: ")); i >= 0 { // an SSE answer
		b = b[i+len("data: "):]
		if j := bytes.IndexByte(b, '\n'); j >= 0 {
			b = b[:j]
		}
	}
	var msg struct {
		Result map[string]any  `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(b, &msg); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", method, err, b)
	}
	if msg.Result == nil {
		return nil, fmt.Errorf("%s: %s", method, msg.Error)
	}
	return msg.Result, nil
}

func taskBenchGateway(b *testing.B, window time.Duration, taskTools ...string) *rawCaller {
	b.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	ts, err := gateway.OpenTaskStore(context.Background(), db)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := gateway.New(&gateway.Options{
		Upstreams: []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(taskBenchServer),
			TaskTools: taskTools}},
		// No bound on unfinished tasks: past it a task tool's call is served
		// synchronously, which is not what task_created measures.
		InitialWait: 10 * time.Second, TaskStore: ts, TaskWindow: window, MaxTasksPerIdentity: 1 << 30,
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	b.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait() })
	g.WaitReady(ctx)
	hs := httptest.NewServer(g.Handler(nil))
	b.Cleanup(hs.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(hc.CloseIdleConnections)
	return &rawCaller{url: hs.URL + "/mcp", hc: hc}
}

// BenchmarkTaskCreation compares, on the 2026-07-28 HTTP wire with the task store on
// SQLite: a plain proxied call of a fast tool; the same call of a task tool from a client
// that negotiated the extension (answered at once, through the task window); and the
// creation of a task (a call that outlives a 1 µs window, answered with a
// CreateTaskResult once the task is stored; then cancelled, outside the timing).
func BenchmarkTaskCreation(b *testing.B) {
	echo := func(c *rawCaller, tasks bool) error {
		res, err := c.call("tools/call", "up__echo", map[string]any{"name": "up__echo", "arguments": map[string]any{"message": "hi"}}, tasks)
		if err == nil && !strings.Contains(fmt.Sprint(res["content"]), "echo: hi") {
			err = fmt.Errorf("unexpected result %v", res)
		}
		return err
	}
	b.Run("plain_call", func(b *testing.B) {
		c := taskBenchGateway(b, 0)
		b.ReportAllocs()
		start, cpu := time.Now(), cpuTime()
		for b.Loop() {
			if err := echo(c, false); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start, cpu)
	})
	b.Run("task_tool_immediate", func(b *testing.B) {
		c := taskBenchGateway(b, 0, "echo")
		b.ReportAllocs()
		start, cpu := time.Now(), cpuTime()
		for b.Loop() {
			if err := echo(c, true); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start, cpu)
	})
	b.Run("task_created", func(b *testing.B) {
		c := taskBenchGateway(b, time.Microsecond, "hold")
		b.ReportAllocs()
		var ids []string
		start, cpu := time.Now(), cpuTime()
		for b.Loop() {
			res, err := c.call("tools/call", "up__hold", map[string]any{"name": "up__hold", "arguments": map[string]any{}}, true)
			if err != nil {
				b.Fatal(err)
			}
			id, _ := res["taskId"].(string)
			if id == "" {
				b.Fatalf("no task: %v", res)
			}
			ids = append(ids, id)
		}
		reportRate(b, start, cpu)
		b.StopTimer()
		for _, id := range ids {
			_, _ = c.call("tasks/cancel", id, map[string]any{"taskId": id}, true)
		}
	})
}

// session2025 is a 2025-11-25 streamable HTTP session spoken to in raw JSON-RPC.
type session2025 struct {
	url, id string
	hc      *http.Client
	seq     int
}

func (s *session2025) call(method string, params any) (map[string]any, error) {
	s.seq++
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": s.seq, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if s.id != "" {
		req.Header.Set("Mcp-Session-Id", s.id)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if s.id == "" {
		s.id = resp.Header.Get("Mcp-Session-Id")
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	for _, line := range bytes.Split(b, []byte("\n")) { // an SSE answer: its data line with an id
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok && bytes.Contains(d, []byte(`"id"`)) {
			b = d
		}
	}
	var msg struct {
		Result map[string]any  `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(b, &msg); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", method, err, b)
	}
	if msg.Result == nil {
		return nil, fmt.Errorf("%s: %s", method, msg.Error)
	}
	return msg.Result, nil
}

// BenchmarkTaskCreation2025 is BenchmarkTaskCreation for a 2025-11-25 client on a
// streamable HTTP session, with the task store on SQLite: a plain proxied call of echo;
// the same call with params.task, answered with a CreateTaskResult once the task is
// stored (the call then completes in the background); and the round trip of such a
// task (the CreateTaskResult, then tasks/result).
func BenchmarkTaskCreation2025(b *testing.B) {
	open := func(b *testing.B) *session2025 {
		db, err := store.OpenMemory()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		ts, err := gateway.OpenTaskStore(context.Background(), db)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		g := gateway.New(&gateway.Options{
			Upstreams: []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: serverLauncher(taskBenchServer),
				TaskTools: []string{"echo"}}},
			InitialWait: 10 * time.Second, TaskStore: ts, MaxTasksPerIdentity: 1 << 30,
		})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // owned: ends when ctx is cancelled at cleanup
			defer wg.Done()
			_ = g.Run(ctx)
		}()
		b.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait() })
		g.WaitReady(ctx)
		hs := httptest.NewServer(g.Handler(nil))
		b.Cleanup(hs.Close)
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.Cleanup(hc.CloseIdleConnections)
		s := &session2025{url: hs.URL + "/mcp", hc: hc}
		if _, err := s.call("initialize", map[string]any{"protocolVersion": "2025-11-25", "capabilities": map[string]any{},
			"clientInfo": map[string]any{"name": "bench", "version": "1"}}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { // end the session (before the server closes: cleanups run last first)
			req, _ := http.NewRequest(http.MethodDelete, s.url, nil)
			req.Header.Set("Mcp-Session-Id", s.id)
			if resp, err := hc.Do(req); err == nil {
				resp.Body.Close()
			}
		})
		return s
	}
	args := map[string]any{"message": "hi"}
	b.Run("plain_call", func(b *testing.B) {
		s := open(b)
		b.ReportAllocs()
		start, cpu := time.Now(), cpuTime()
		for b.Loop() {
			res, err := s.call("tools/call", map[string]any{"name": "up__echo", "arguments": args})
			if err != nil || !strings.Contains(fmt.Sprint(res["content"]), "echo: hi") {
				b.Fatalf("%v %v", res, err)
			}
		}
		reportRate(b, start, cpu)
	})
	create := func(s *session2025) (string, error) {
		res, err := s.call("tools/call", map[string]any{"name": "up__echo", "arguments": args, "task": map[string]any{"ttl": 60000}})
		if err != nil {
			return "", err
		}
		task, _ := res["task"].(map[string]any)
		id, _ := task["taskId"].(string)
		if id == "" {
			return "", fmt.Errorf("no task: %v", res)
		}
		return id, nil
	}
	b.Run("task_created", func(b *testing.B) {
		s := open(b)
		b.ReportAllocs()
		start, cpu := time.Now(), cpuTime()
		for b.Loop() {
			if _, err := create(s); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start, cpu)
	})
	b.Run("task_roundtrip", func(b *testing.B) {
		s := open(b)
		b.ReportAllocs()
		start, cpu := time.Now(), cpuTime()
		for b.Loop() {
			id, err := create(s)
			if err != nil {
				b.Fatal(err)
			}
			res, err := s.call("tasks/result", map[string]any{"taskId": id})
			if err != nil || !strings.Contains(fmt.Sprint(res["content"]), "echo: hi") {
				b.Fatalf("%v %v", res, err)
			}
		}
		reportRate(b, start, cpu)
	})
}
