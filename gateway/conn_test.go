package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// connTestBuffer collects what a frameConn writes back.
type connTestBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *connTestBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *connTestBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// connTestResult is what a frameConn made of an input stream.
type connTestResult struct {
	msgs    []string // messages read, re-encoded
	out     string   // everything written back
	reasons []string // OnGarbage reasons, in order
}

// connTestRun feeds input through a lineFramer with the given limit and a frameConn,
// reads until the input ends, and returns what came through and what was written back.
func connTestRun(t testing.TB, input string, limit int, answer bool) connTestResult {
	t.Helper()
	var out connTestBuffer
	var res connTestResult
	var mu sync.Mutex
	c := newFrameConn(newLineFramer(strings.NewReader(input), &out, nil, limit), FrameConnOptions{
		Peer: "test", AnswerGarbage: answer,
		OnGarbage: func(reason string) { mu.Lock(); res.reasons = append(res.reasons, reason); mu.Unlock() },
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		msg, err := c.Read(ctx)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Read: %v", err)
			}
			break
		}
		data, err := jsonrpc.EncodeMessage(msg)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", msg, err)
		}
		res.msgs = append(res.msgs, string(data))
	}
	res.out = out.String()
	mu.Lock()
	defer mu.Unlock()
	return res
}

// connTestError is the part of an error response the tests compare.
type connTestError struct {
	ID   string // raw JSON
	Code int
}

// connTestErrors parses every written line as a JSON-RPC error response.
func connTestErrors(t testing.TB, out string) []connTestError {
	t.Helper()
	var errs []connTestError
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" && out == "" {
			break
		}
		var resp struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Error   *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&resp); err != nil {
			t.Fatalf("written line %q is not a JSON-RPC error response: %v", line, err)
		}
		if resp.JSONRPC != "2.0" || resp.Error == nil || resp.Error.Message == "" || resp.ID == nil {
			t.Fatalf("written line %q is not a complete JSON-RPC error response", line)
		}
		errs = append(errs, connTestError{ID: string(resp.ID), Code: resp.Error.Code})
	}
	return errs
}

const (
	connPing  = `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	connPing2 = `{"jsonrpc":"2.0","id":2,"method":"ping"}`
)

func TestFrameConnServerSide(t *testing.T) {
	long := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"x":"` + strings.Repeat("a", 300) + `"}}`
	huge := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"x":"` + strings.Repeat("b", 200<<10) + `"}}`
	for _, tc := range []struct {
		name        string
		in          string
		limit       int
		wantMsgs    []string
		wantErrs    []connTestError
		wantReasons []string
	}{
		{name: "valid request", in: connPing + "\n", wantMsgs: []string{connPing}},
		{name: "notification", in: `{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n",
			wantMsgs: []string{`{"jsonrpc":"2.0","method":"notifications/initialized"}`}},
		{name: "response", in: `{"jsonrpc":"2.0","id":"r1","result":{}}` + "\n", wantMsgs: []string{`{"jsonrpc":"2.0","id":"r1","result":{}}`}},
		{name: "string id and params", in: `{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"cursor":"c"}}` + "\n",
			wantMsgs: []string{`{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{"cursor":"c"}}`}},
		{name: "crlf and spaces", in: "  " + connPing + " \r\n", wantMsgs: []string{connPing}},
		{name: "last line without newline", in: connPing, wantMsgs: []string{connPing}},
		{name: "empty lines skipped", in: "\n\n   \n\t\n" + connPing + "\n\n", wantMsgs: []string{connPing}},
		{name: "empty input", in: ""},

		{name: "not json", in: "not json\n",
			wantErrs: []connTestError{{"null", codeParseError}}, wantReasons: []string{"parse"}},
		{name: "truncated json", in: `{"jsonrpc":"2.0","id":1,"method":"pi` + "\n",
			wantErrs: []connTestError{{"null", codeParseError}}, wantReasons: []string{"parse"}},
		{name: "batch", in: "[" + connPing + "," + connPing2 + "]\n",
			wantErrs: []connTestError{{"null", codeInvalidRequest}}, wantReasons: []string{"batch"}},
		{name: "empty batch", in: "[]\n",
			wantErrs: []connTestError{{"null", codeInvalidRequest}}, wantReasons: []string{"batch"}},
		{name: "method not a string", in: `{"jsonrpc":"2.0","id":7,"method":42}` + "\n",
			wantErrs: []connTestError{{"7", codeInvalidRequest}}, wantReasons: []string{"invalid"}},
		{name: "string id echoed", in: `{"jsonrpc":"2.0","id":"req-1","method":["x"]}` + "\n",
			wantErrs: []connTestError{{`"req-1"`, codeInvalidRequest}}, wantReasons: []string{"invalid"}},
		{name: "wrong version", in: `{"jsonrpc":"1.0","id":3,"method":"ping"}` + "\n",
			wantErrs: []connTestError{{"3", codeInvalidRequest}}, wantReasons: []string{"invalid"}},
		{name: "no version", in: `{"id":4,"method":"ping"}` + "\n",
			wantErrs: []connTestError{{"4", codeInvalidRequest}}, wantReasons: []string{"invalid"}},
		{name: "empty object", in: "{}\n",
			wantErrs: []connTestError{{"null", codeInvalidRequest}}, wantReasons: []string{"invalid"}},
		{name: "object id becomes null", in: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}` + "\n",
			wantErrs: []connTestError{{"null", codeInvalidRequest}}, wantReasons: []string{"invalid"}},
		{name: "response without id", in: `{"jsonrpc":"2.0","result":{}}` + "\n",
			wantErrs: []connTestError{{"null", codeInvalidRequest}}, wantReasons: []string{"invalid"}},

		{name: "oversized line then valid", in: long + "\n" + connPing + "\n", limit: 256,
			wantMsgs: []string{connPing}, wantErrs: []connTestError{{"null", codeInvalidRequest}}, wantReasons: []string{"too_large"}},
		{name: "oversized beyond the read buffer then valid", in: huge + "\n" + connPing + "\n", limit: 1024,
			wantMsgs: []string{connPing}, wantErrs: []connTestError{{"null", codeInvalidRequest}}, wantReasons: []string{"too_large"}},
		{name: "large line under a large limit", in: huge + "\n", limit: 1 << 20, wantMsgs: []string{huge}},

		{name: "session survives a mix", in: "garbage\n" + connPing + "\n[1]\n" + `{"jsonrpc":"2.0","id":5,"method":false}` + "\n" + long + "\n" + connPing2 + "\n", limit: 256,
			wantMsgs:    []string{connPing, connPing2},
			wantErrs:    []connTestError{{"null", codeParseError}, {"null", codeInvalidRequest}, {"5", codeInvalidRequest}, {"null", codeInvalidRequest}},
			wantReasons: []string{"parse", "batch", "invalid", "too_large"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := tc.limit
			if limit == 0 {
				limit = 4096
			}
			got := connTestRun(t, tc.in, limit, true)
			if diff := cmp.Diff(tc.wantMsgs, got.msgs); diff != "" {
				t.Errorf("messages read (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantErrs, connTestErrors(t, got.out)); diff != "" {
				t.Errorf("errors written (-want +got):\n%s\nraw output: %q", diff, got.out)
			}
			if diff := cmp.Diff(tc.wantReasons, got.reasons); diff != "" {
				t.Errorf("OnGarbage reasons (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFrameConnClientSide: a client side (AnswerGarbage false) skips bad frames, writes
// nothing back, still reports them, and passes the good ones.
func TestFrameConnClientSide(t *testing.T) {
	in := "not json\n[1]\n" + `{"jsonrpc":"2.0","id":7,"method":42}` + "\n" + strings.Repeat("x", 500) + "\n" + connPing + "\n"
	got := connTestRun(t, in, 256, false)
	if got.out != "" {
		t.Errorf("client side wrote %q, want nothing", got.out)
	}
	if diff := cmp.Diff([]string{connPing}, got.msgs); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"parse", "batch", "invalid", "too_large"}, got.reasons); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
}

// TestFrameConnStaysAlive talks to a frameConn over pipes: after an oversized and a
// malformed frame have been answered, the same session still reads the next request
// and writes a response.
func TestFrameConnStaysAlive(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := newFrameConn(newLineFramer(inR, outW, inR, 128), FrameConnOptions{Peer: "test", AnswerGarbage: true})
	defer c.Close()
	replies := bufio.NewReader(outR)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	readMsg := make(chan jsonrpc.Message, 1)
	readErr := make(chan error, 1)
	go func() { // owned: ends when c is closed (the pipe reader closes) or the input ends
		for {
			msg, err := c.Read(ctx)
			if err != nil {
				readErr <- err
				return
			}
			readMsg <- msg
		}
	}()
	send := func(s string) {
		if _, err := io.WriteString(inW, s+"\n"); err != nil {
			t.Errorf("write input: %v", err)
		}
	}
	reply := func() connTestError {
		t.Helper()
		line, err := replies.ReadString('\n')
		if err != nil {
			t.Fatalf("read reply: %v", err)
		}
		return connTestErrors(t, line)[0]
	}

	go send(strings.Repeat("z", 1000)) // the reply blocks until read below
	if diff := cmp.Diff(connTestError{"null", codeInvalidRequest}, reply()); diff != "" {
		t.Errorf("oversized frame reply (-want +got):\n%s", diff)
	}
	go send("{oops")
	if diff := cmp.Diff(connTestError{"null", codeParseError}, reply()); diff != "" {
		t.Errorf("malformed frame reply (-want +got):\n%s", diff)
	}
	send(connPing)
	select {
	case msg := <-readMsg:
		req, ok := msg.(*jsonrpc.Request)
		if !ok || req.Method != "ping" {
			t.Fatalf("read %#v, want the ping request", msg)
		}
		done := make(chan error, 1)
		go func() { done <- c.Write(ctx, &jsonrpc.Response{ID: req.ID, Result: json.RawMessage(`{}`)}) }()
		line, err := replies.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line != `{"jsonrpc":"2.0","id":1,"result":{}}`+"\n" {
			t.Errorf("response line = %q", line)
		}
		if err := <-done; err != nil {
			t.Errorf("Write: %v", err)
		}
	case err := <-readErr:
		t.Fatalf("session ended: %v", err)
	case <-ctx.Done():
		t.Fatal("timed out waiting for the request after bad frames")
	}

	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("Read after Close returned no error")
		}
	case <-ctx.Done():
		t.Fatal("reader did not end after Close")
	}
	if err := c.Write(ctx, &jsonrpc.Response{ID: mustID(t, float64(2))}); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("Write after Close = %v, want io.ErrClosedPipe", err)
	}
	if _, err := c.Read(ctx); !errors.Is(err, io.EOF) {
		t.Errorf("Read after Close = %v, want io.EOF", err)
	}
	inW.Close()
	outR.Close()
}

func mustID(t *testing.T, v any) jsonrpc.ID {
	t.Helper()
	id, err := jsonrpc.MakeID(v)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFrameConnSessionID(t *testing.T) {
	c := newFrameConn(newLineFramer(strings.NewReader(""), io.Discard, nil, 1024), FrameConnOptions{SessionID: "ws-123"})
	if got := c.SessionID(); got != "ws-123" {
		t.Errorf("SessionID() = %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Read(ctx); err == nil {
		t.Error("Read with a cancelled context returned no error")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestLineFramer(t *testing.T) {
	var out bytes.Buffer
	f := newLineFramer(strings.NewReader("a\nbb\r\n\nccc"), &out, nil, 8)
	var frames []string
	for {
		b, err := f.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("ReadFrame: %v", err)
		}
		frames = append(frames, string(b))
	}
	if diff := cmp.Diff([]string{"a", "bb", "", "ccc"}, frames); diff != "" {
		t.Errorf("frames (-want +got):\n%s", diff)
	}
	if err := f.WriteFrame([]byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFrame(nil); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "{\"x\":1}\n\n" {
		t.Errorf("written %q", got)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close without closer: %v", err)
	}
}

// TestLineFramerConcurrentWrites: frames written from many goroutines never interleave.
func TestLineFramerConcurrentWrites(t *testing.T) {
	var out connTestBuffer
	f := newLineFramer(strings.NewReader(""), &out, nil, 1024)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frame := bytes.Repeat([]byte{byte('a' + i)}, 100)
			for range 50 {
				if err := f.WriteFrame(frame); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if len(l) != 100 || strings.Count(l, l[:1]) != 100 {
			t.Fatalf("interleaved line %q", l)
		}
	}
}

// TestLineFramerLimitBoundary: a line of exactly limit bytes is accepted and one of
// limit+1 rejected, whatever ends it ("\n", "\r\n" or the end of input).
func TestLineFramerLimitBoundary(t *testing.T) {
	const limit = 64
	var bugs []string
	for _, end := range []string{"\n", "\r\n", ""} {
		for _, n := range []int{limit, limit + 1} {
			f := newLineFramer(strings.NewReader(strings.Repeat("x", n)+end), io.Discard, nil, limit)
			_, err := f.ReadFrame()
			tooLarge := errors.Is(err, errFrameTooLarge) || (end == "" && errors.Is(err, io.EOF))
			if err != nil && !tooLarge {
				t.Fatalf("ReadFrame(%d bytes + %q): %v", n, end, err)
			}
			if want := n > limit; tooLarge != want {
				bugs = append(bugs, fmt.Sprintf("a line of %d bytes ending %q: rejected = %v", n, end, tooLarge))
			}
		}
	}
	if len(bugs) > 0 {
		t.Errorf("lineFramer limit (%d) is off by one for some line endings: %s", limit, strings.Join(bugs, "; "))
	}
}

// TestFrameConnTrailingData: a line holding a JSON object followed by more text is not
// valid JSON and is answered with a parse error, not half-accepted.
func TestFrameConnTrailingData(t *testing.T) {
	var bugs []string
	for _, in := range []string{connPing + " x", connPing + connPing2, connPing + "}"} {
		got := connTestRun(t, in+"\n", 1024, true)
		errs := connTestErrors(t, got.out)
		if len(got.msgs) != 0 || len(errs) != 1 || errs[0].Code != codeParseError {
			bugs = append(bugs, fmt.Sprintf("%s: read %q, replied %v", in, got.msgs, errs))
		}
	}
	if len(bugs) > 0 {
		t.Error("trailing data after a JSON object is silently dropped and the object accepted: " + strings.Join(bugs, "; "))
	}
}

// TestFrameConnValidJSONNotObject: JSON-RPC 2.0 answers invalid JSON with -32700 and
// valid JSON that is not a Request object with -32600.
func TestFrameConnValidJSONNotObject(t *testing.T) {
	var bugs []string
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"42", codeInvalidRequest},
		{`"ping"`, codeInvalidRequest},
		{"null", codeInvalidRequest},
		{"true", codeInvalidRequest},
		{"[1,2", codeParseError},
		{`[{"jsonrpc":"2.0","method"]`, codeParseError},
	} {
		got := connTestErrors(t, connTestRun(t, tc.in+"\n", 1024, true).out)
		if len(got) != 1 {
			t.Fatalf("%s: %d replies, want 1", tc.in, len(got))
		}
		if got[0].Code != tc.want {
			bugs = append(bugs, fmt.Sprintf("%s -> %d, want %d", tc.in, got[0].Code, tc.want))
		}
	}
	if len(bugs) > 0 {
		t.Error("frameConn error codes differ from JSON-RPC 2.0: " + strings.Join(bugs, "; "))
	}
}

// FuzzFrameConn feeds arbitrary input to a server-side frameConn: it must never panic,
// must end at the end of input, and everything it writes back must be a JSON-RPC error
// response (-32700 or -32600) with a string, number or null id, at most one per line.
func FuzzFrameConn(f *testing.F) {
	for _, s := range []string{
		connPing + "\n",
		"not json\n" + connPing + "\n",
		"[" + connPing + "]\n",
		`{"jsonrpc":"2.0","id":7,"method":42}` + "\n",
		`{"jsonrpc":"2.0","id":{"a":[1]},"method":"x"}` + "\n{}\n",
		`{"jsonrpc":"2.0","id":"s","result":{"content":[]}}` + "\r\n\n",
		strings.Repeat("y", 300) + "\n" + connPing2,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := connTestRun(t, string(data), 256, true)
		errs := connTestErrors(t, got.out)
		for _, e := range errs {
			if e.Code != codeParseError && e.Code != codeInvalidRequest {
				t.Errorf("unexpected error code %d", e.Code)
			}
			var id any
			if err := json.Unmarshal([]byte(e.ID), &id); err != nil {
				t.Errorf("id %s: %v", e.ID, err)
			}
			switch id.(type) {
			case nil, string, float64:
			default:
				t.Errorf("id %s is not a string, number or null", e.ID)
			}
		}
		if len(errs) != len(got.reasons) {
			t.Errorf("%d replies for %d rejected frames", len(errs), len(got.reasons))
		}
		if lines := bytes.Count(data, []byte("\n")) + 1; len(errs)+len(got.msgs) > lines {
			t.Errorf("%d replies and %d messages from %d lines", len(errs), len(got.msgs), lines)
		}
	})
}

func TestRebindingGuard(t *testing.T) {
	g := New(nil)
	srv := httptest.NewServer(g.Handler(nil))
	defer srv.Close()
	for _, tc := range []struct {
		host string
		want int
	}{
		{"", http.StatusBadRequest}, // Host as dialled (127.0.0.1:port): reaches the handler
		{"localhost:8080", http.StatusBadRequest},
		{"[::1]:8080", http.StatusBadRequest},
		{"evil.example:8080", http.StatusForbidden},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/ws", nil)
		if tc.host != "" {
			req.Host = tc.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// /ws without an Upgrade answers 400 once past the guard.
		if resp.StatusCode != tc.want {
			t.Errorf("Host %q: status %d, want %d", tc.host, resp.StatusCode, tc.want)
		}
	}
}
