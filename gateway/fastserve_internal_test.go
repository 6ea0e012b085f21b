package gateway

import (
	"bytes"
	"encoding/json"
	"testing"
)

// scanCallCorpus are request bodies for the envelope scanner: ones it takes and ones it
// must leave to the SDK.
var scanCallCorpus = []struct {
	body string
	ok   bool
}{
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__b","arguments":{"x":1}}}`, true},
	{` { "params" : { "_meta" : {"k":[1,{"a":"}"}]} , "arguments" : { "t" : "a \"q\" \u00e9" } , "name" : "t" } , "method" : "tools/call" , "id" : "s-1" , "jsonrpc" : "2.0" } `, true},
	{`{"jsonrpc":"2.0","id":-7,"method":"tools/call","params":{"name":"t"}}`, true},
	{`{"jsonrpc":"2.0","id":123456789012345,"method":"tools/call","params":{"name":"t"}}`, true},
	{`{"jsonrpc":"2.0","id":1234567890123456,"method":"tools/call","params":{"name":"t"}}`, false},
	{`{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"t"}}`, false},
	{`{"jsonrpc":"2.0","id":1e3,"method":"tools/call","params":{"name":"t"}}`, false},
	{`{"jsonrpc":"2.0","id":-0,"method":"tools/call","params":{"name":"t"}}`, false},
	{`{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"t"}}`, false},
	{`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"},"id":2}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","name":"u"}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[]}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":null}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","task":{}}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t\u0041"}}`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}} x`, false},
	{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}`, false},
	{`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}]`, false},
	{`{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"t"}}`, false},
	{`{"Method":"tools/call","jsonrpc":"2.0","id":1,"params":{"name":"t"}}`, false},
	{``, false},
}

func TestScanCall(t *testing.T) {
	for _, tc := range scanCallCorpus {
		env, ok := scanCall([]byte(tc.body))
		if ok != tc.ok {
			t.Errorf("scanCall(%s) ok=%v, want %v", tc.body, ok, tc.ok)
			continue
		}
		if ok {
			checkEnvelope(t, []byte(tc.body), env)
		}
	}
}

// checkEnvelope checks that what scanCall read of body is what a JSON decoder reads.
func checkEnvelope(t *testing.T, body []byte, env callEnvelope) {
	t.Helper()
	var m struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      any             `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("scanCall took %q, which does not decode: %v", body, err)
	}
	var p struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
		Meta      json.RawMessage `json:"_meta"`
	}
	if err := json.Unmarshal(m.Params, &p); err != nil {
		t.Fatalf("params of %q: %v", body, err)
	}
	if m.JSONRPC != "2.0" || m.Method != "tools/call" || p.Name != env.name {
		t.Errorf("%q: read name %q, decoder %+v %+v", body, env.name, m, p)
	}
	switch id := m.ID.(type) {
	case string:
		if !env.strID || env.sid != id {
			t.Errorf("%q: read id %+v, decoder %q", body, env, id)
		}
	case float64:
		if env.strID || float64(env.id) != id {
			t.Errorf("%q: read id %+v, decoder %v", body, env, id)
		}
	default:
		t.Errorf("%q: id %v taken", body, m.ID)
	}
	if !bytes.Equal(env.args, p.Arguments) || !bytes.Equal(env.meta, p.Meta) {
		t.Errorf("%q: read arguments %q meta %q, decoder %q %q", body, env.args, env.meta, p.Arguments, p.Meta)
	}
}

// FuzzScanCall: the envelope scanner reads request bodies from clients. Whatever it
// takes decodes, with encoding/json, to the same id, name, arguments and _meta; it never
// panics on what it refuses.
func FuzzScanCall(f *testing.F) {
	for _, tc := range scanCallCorpus {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		env, ok := scanCall(body)
		if ok {
			checkEnvelope(t, body, env)
		}
	})
}
