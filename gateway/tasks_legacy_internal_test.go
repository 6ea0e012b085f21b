package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestLiftTaskParam(t *testing.T) {
	tests := []struct {
		name, in string
		lifted   bool
		meta     map[string]any // expected params._meta when lifted
	}{
		{"task moved into _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":"<b>"},"task":{"ttl":5}}}`,
			true, map[string]any{metaTaskKey: map[string]any{"ttl": float64(5)}}},
		{"existing _meta kept", `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":{"progressToken":7},"name":"x","task":{}}}`,
			true, map[string]any{"progressToken": float64(7), metaTaskKey: map[string]any{}}},
		{"null _meta", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"_meta":null,"name":"x","task":{}}}`,
			true, map[string]any{metaTaskKey: map[string]any{}}},
		{"no task", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"task","arguments":{"task":1}}}`, false, nil},
		{"other method", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"x","task":{}}}`, false, nil},
		{"duplicate task", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","task":{},"task":{}}}`, false, nil},
		{"bad _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":[1],"name":"x","task":{}}}`, false, nil},
		{"not json", `{"method":"tools/call","params":{"task":`, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := liftTaskParam([]byte(tt.in))
			if !tt.lifted {
				if string(out) != tt.in {
					t.Fatalf("changed: %s", out)
				}
				return
			}
			var msg struct {
				ID     json.RawMessage            `json:"id"`
				Params map[string]json.RawMessage `json:"params"`
			}
			if err := json.Unmarshal(out, &msg); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if _, ok := msg.Params["task"]; ok {
				t.Fatalf("task still in params: %s", out)
			}
			var meta map[string]any
			if err := json.Unmarshal(msg.Params["_meta"], &meta); err != nil {
				t.Fatal(err)
			}
			gb, _ := json.Marshal(meta)
			wb, _ := json.Marshal(tt.meta)
			if !bytes.Equal(gb, wb) {
				t.Fatalf("_meta = %s, want %s", gb, wb)
			}
			var in struct {
				ID json.RawMessage `json:"id"`
			}
			_ = json.Unmarshal([]byte(tt.in), &in)
			if !bytes.Equal(in.ID, msg.ID) {
				t.Fatalf("id changed: %s", msg.ID)
			}
			if strings.Contains(tt.in, "<b>") && !bytes.Contains(out, []byte("<b>")) {
				t.Fatalf("arguments re-escaped: %s", out)
			}
		})
	}
}

func TestTakeTaskParam(t *testing.T) {
	p := &mcp.CallToolParamsRaw{Name: "x", Meta: mcp.Meta{metaTaskKey: map[string]any{"ttl": float64(1500)}, "k": "v"}}
	lt := takeTaskParam(p)
	if lt == nil || lt.ttl != 1500*time.Millisecond {
		t.Fatalf("took %+v", lt)
	}
	if _, ok := p.Meta[metaTaskKey]; ok || p.Meta["k"] != "v" {
		t.Fatalf("meta after: %v", p.Meta)
	}
	if takeTaskParam(p) != nil || takeTaskParam(&mcp.CallToolParamsRaw{}) != nil {
		t.Fatal("a call without a task has one")
	}
	if lt := takeTaskParam(&mcp.CallToolParamsRaw{Meta: mcp.Meta{metaTaskKey: map[string]any{"ttl": -3.0}}}); lt == nil || lt.ttl != 0 {
		t.Fatalf("negative ttl: %+v", lt)
	}
}

func TestRewriteTaskNotes(t *testing.T) {
	note := func() []byte {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress", "params": map[string]any{
			"progressToken": taskNoteToken, "progress": 0, "_meta": map[string]any{taskNoteKey: map[string]any{"taskId": "t1", "status": "completed"}}}})
		return b
	}
	want := `{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"status":"completed","taskId":"t1"}}`
	tests := []struct {
		name     string
		in, want string
	}{
		{"line", string(note()), want},
		{"sse event", "event: message\nid: 3\ndata: " + string(note()) + "\n\n", "event: message\nid: 3\ndata: " + want + "\n\n"},
		{"other message untouched", `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x"}}`,
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := taskNotes.Load()
			taskNotes.Add(1)
			defer taskNotes.Store(before)
			if got := string(rewriteTaskNotes([]byte(tt.in))); got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
	// With none pending, nothing is looked at.
	before := taskNotes.Load()
	taskNotes.Store(0)
	defer taskNotes.Store(before)
	if got := rewriteTaskNotes(note()); !bytes.Equal(got, note()) {
		t.Fatalf("rewritten with none pending: %s", got)
	}
}

func TestLegacyWire(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := TaskRecord{ID: "t1", Status: TaskWorking, Created: created, Updated: created, TTL: time.Minute}
	b, _ := json.Marshal(&legacyCreateTaskResult{Task: legacyWire(&rec)})
	if string(b) != `{"task":{"taskId":"t1","status":"working","createdAt":"2026-01-02T03:04:05Z","lastUpdatedAt":"2026-01-02T03:04:05Z","ttl":60000,"pollInterval":500}}` {
		t.Fatalf("CreateTaskResult: %s", b)
	}
	rec.Status, rec.TTL, rec.Message = TaskFailed, 0, "broke"
	b, _ = json.Marshal(&legacyTaskResult{legacyTask: legacyWire(&rec)})
	if string(b) != `{"taskId":"t1","status":"failed","statusMessage":"broke","createdAt":"2026-01-02T03:04:05Z","lastUpdatedAt":"2026-01-02T03:04:05Z","ttl":null}` {
		t.Fatalf("GetTaskResult: %s", b)
	}
}

// FuzzLiftTaskParam: whatever a client sends, the lift either leaves the message alone
// or yields valid JSON without params.task and with the same id.
func FuzzLiftTaskParam(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","task":{"ttl":5}}}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"_meta":{"a":1},"task":null}}`))
	f.Add([]byte(`{"method":"tools/call","params":{"task":{}},"id":1e3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out := liftTaskParam(data)
		if bytes.Equal(out, data) {
			return
		}
		var msg struct {
			ID     json.RawMessage            `json:"id"`
			Params map[string]json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(out, &msg); err != nil {
			t.Fatalf("invalid output %q from %q: %v", out, data, err)
		}
		if _, ok := msg.Params["task"]; ok {
			t.Fatalf("task left in %q", out)
		}
		s, e, ok := jsonSpan(data, "id")
		s2, e2, ok2 := jsonSpan(out, "id")
		if ok != ok2 || (ok && !bytes.Equal(data[s:e], out[s2:e2])) {
			t.Fatalf("id changed: %q -> %q", data, out)
		}
	})
}
