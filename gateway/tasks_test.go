package gateway

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestTaskTransition(t *testing.T) {
	all := []string{TaskWorking, TaskInputRequired, TaskCompleted, TaskFailed, TaskCancelled}
	allowed := map[[2]string]bool{
		{TaskWorking, TaskInputRequired}: true, {TaskWorking, TaskCompleted}: true,
		{TaskWorking, TaskFailed}: true, {TaskWorking, TaskCancelled}: true,
		{TaskInputRequired, TaskWorking}: true, {TaskInputRequired, TaskCompleted}: true,
		{TaskInputRequired, TaskFailed}: true, {TaskInputRequired, TaskCancelled}: true,
	}
	for _, from := range all {
		for _, to := range all {
			if got, want := taskTransition(from, to), allowed[[2]string{from, to}]; got != want {
				t.Errorf("taskTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	if taskTransition("", TaskWorking) || taskTransition(TaskWorking, "bogus") {
		t.Error("unknown statuses must not transition")
	}
}

func TestTaskRunSetStatus(t *testing.T) {
	tests := []struct {
		name    string
		steps   []string
		want    string
		changed []bool
	}{
		{"ask then answer then finish", []string{TaskInputRequired, TaskWorking, TaskCompleted}, TaskCompleted, []bool{true, true, true}},
		{"same status is no change", []string{TaskWorking}, TaskWorking, []bool{false}},
		{"final never changes", []string{TaskCancelled, TaskCompleted, TaskWorking}, TaskCancelled, []bool{true, false, false}},
		{"failed while waiting for input", []string{TaskInputRequired, TaskFailed, TaskInputRequired}, TaskFailed, []bool{true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &taskRun{rec: TaskRecord{Status: TaskWorking, Updated: time.Unix(0, 0)}}
			for i, s := range tt.steps {
				if got := r.setStatus(s, ""); got != tt.changed[i] {
					t.Errorf("step %d (%s): changed = %v, want %v", i, s, got, tt.changed[i])
				}
			}
			if r.rec.Status != tt.want {
				t.Errorf("status = %s, want %s", r.rec.Status, tt.want)
			}
		})
	}
}

func TestTaskWire(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	base := TaskRecord{ID: "t1", Owner: "alice", Created: created, Updated: created.Add(time.Second), TTL: time.Hour}
	tests := []struct {
		name         string
		status       string
		inputs       map[string]*taskInput
		has, hasNot  []string
		pollInterval bool
	}{
		{"working", TaskWorking, nil, []string{"taskId", "status", "createdAt", "lastUpdatedAt", "ttlMs"}, []string{"result", "error", "inputRequests", "requestState", "ttl", "pollInterval"}, true},
		{"input required", TaskInputRequired, map[string]*taskInput{"k": {ask: &bridgeAsk{req: &mcp.ElicitParams{Message: "ok?"}}}}, []string{"inputRequests"}, []string{"result", "error"}, true},
		{"completed", TaskCompleted, nil, []string{"result"}, []string{"error", "inputRequests", "pollIntervalMs"}, false},
		{"failed", TaskFailed, nil, []string{"error"}, []string{"result", "inputRequests"}, false},
		{"cancelled", TaskCancelled, nil, nil, []string{"result", "error", "inputRequests"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := base
			rec.Status = tt.status
			rec.Result = json.RawMessage(`{"content":[{"type":"text","text":"done"}]}`)
			rec.Error = json.RawMessage(`{"code":-32603,"message":"broke"}`)
			b, err := json.Marshal(taskWire(&rec, tt.inputs))
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range tt.has {
				if _, ok := m[k]; !ok {
					t.Errorf("%s: missing %q in %s", tt.status, k, b)
				}
			}
			for _, k := range tt.hasNot {
				if _, ok := m[k]; ok {
					t.Errorf("%s: unexpected %q in %s", tt.status, k, b)
				}
			}
			if _, ok := m["pollIntervalMs"]; ok != tt.pollInterval {
				t.Errorf("pollIntervalMs present = %v, want %v", ok, tt.pollInterval)
			}
			if m["ttlMs"] != float64(time.Hour.Milliseconds()) || m["resultType"] != "complete" || m["status"] != tt.status {
				t.Errorf("wire = %s", b)
			}
			if m["createdAt"] != "2026-01-02T03:04:05Z" {
				t.Errorf("createdAt = %v", m["createdAt"])
			}
		})
	}
}

func TestClientHasTasks(t *testing.T) {
	ext := map[string]any{"extensions": map[string]any{TasksExtension: map[string]any{}}}
	tests := []struct {
		name string
		meta mcp.Meta
		want bool
	}{
		{"per request", mcp.Meta{mcp.MetaKeyClientCapabilities: ext}, true},
		{"other extension", mcp.Meta{mcp.MetaKeyClientCapabilities: map[string]any{"extensions": map[string]any{"x/y": map[string]any{}}}}, false},
		{"no extensions", mcp.Meta{mcp.MetaKeyClientCapabilities: map[string]any{"elicitation": map[string]any{}}}, false},
		{"no capabilities", nil, false},
		{"wrong shape", mcp.Meta{mcp.MetaKeyClientCapabilities: "tasks"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &mcp.CallToolParamsRaw{Meta: tt.meta}
			if got := clientHasTasks(nil, p); got != tt.want {
				t.Errorf("clientHasTasks = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDeclaredTaskSupport(t *testing.T) {
	tests := map[string]string{
		`{"name":"a","execution":{"taskSupport":"optional"}}`:  "optional",
		`{"name":"a","execution":{"taskSupport":"required"}}`:  "required",
		`{"name":"a","execution":{"taskSupport":"forbidden"}}`: "",
		`{"name":"a"}`:          "",
		`{"execution":"weird"}`: "",
		`not json`:              "",
	}
	for raw, want := range tests {
		if got := declaredTaskSupport(json.RawMessage(raw)); got != want {
			t.Errorf("declaredTaskSupport(%s) = %q, want %q", raw, got, want)
		}
	}
}

func TestTaskDeliver(t *testing.T) {
	a1 := &bridgeAsk{req: &mcp.ElicitParams{Message: "one?"}, reply: make(chan mcp.InputResponse, 1)}
	a2 := &bridgeAsk{req: &mcp.ElicitParams{Message: "two?"}, reply: make(chan mcp.InputResponse, 1)}
	r := &taskRun{rec: TaskRecord{Status: TaskInputRequired}, inputs: map[string]*taskInput{"k1": {ask: a1}, "k2": {ask: a2}}}
	answer := json.RawMessage(`{"action":"accept","content":{"name":"x"}}`)

	r.deliver(map[string]json.RawMessage{"k1": answer, "unknown": json.RawMessage(`{"ignored":true}`)})
	if r.rec.Status != TaskInputRequired || len(r.inputs) != 1 || r.inputs["k2"] == nil {
		t.Fatalf("after a partial answer: status %s, inputs %v", r.rec.Status, r.inputs)
	}
	select {
	case resp := <-a1.reply:
		if er, ok := resp.(*mcp.ElicitResult); !ok || er.Action != "accept" {
			t.Errorf("k1 got %#v", resp)
		}
	default:
		t.Fatal("k1 was not answered")
	}
	r.deliver(map[string]json.RawMessage{"k2": json.RawMessage(`not json`)})
	if len(r.inputs) != 1 {
		t.Fatal("an unreadable answer must leave the question pending")
	}
	r.deliver(map[string]json.RawMessage{"k2": answer})
	if r.rec.Status != TaskWorking || len(r.inputs) != 0 {
		t.Fatalf("after every answer: status %s, inputs %d", r.rec.Status, len(r.inputs))
	}
}

func FuzzTaskDeliver(f *testing.F) {
	f.Add([]byte(`{"action":"accept","content":{"confirm":true}}`))
	f.Add([]byte(`{"ignored":true}`))
	f.Add([]byte(`}{`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		a := &bridgeAsk{req: &mcp.ElicitParams{Message: "?"}, reply: make(chan mcp.InputResponse, 1)}
		r := &taskRun{rec: TaskRecord{Status: TaskInputRequired}, inputs: map[string]*taskInput{"k": {ask: a}}}
		r.deliver(map[string]json.RawMessage{"k": raw, "other": raw})
		answered := len(a.reply) == 1
		if answered == (r.inputs["k"] != nil) {
			t.Fatalf("answered = %v but question pending = %v", answered, r.inputs["k"] != nil)
		}
		if answered != (r.rec.Status == TaskWorking) {
			t.Fatalf("answered = %v, status %s", answered, r.rec.Status)
		}
	})
}
