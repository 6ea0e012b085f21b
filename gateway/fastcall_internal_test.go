package gateway

import (
	"encoding/json"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestPlainToolResult(t *testing.T) {
	for _, tc := range []struct {
		raw           string
		ok, wantError bool
	}{
		{`{"content":[{"type":"text","text":"hi"}]}`, true, false},
		{` { "content" : [ ] , "isError" : true } `, true, true},
		{`{"content":[{"type":"image","data":"AA==","mimeType":"image/png"}],"structuredContent":{"a":[1,{"b":"}"}]},"_meta":{"x":1}}`, true, false},
		{`{"content":[{"text":"a \" ] } b","type":"text"}],"isError":false}`, true, false},
		{`{}`, false, false},               // no content: the SDK writes "content":[]
		{`{"content":null}`, false, false}, // likewise
		{`{"content":[{"type":"text","text":"a"}],"extra":1}`, false, false}, // the SDK drops it
		{`{"content":[{"type":"video"}]}`, false, false},                     // the SDK refuses it
		{`{"content":[{"text":"no type"}]}`, false, false},
		{`{"content":[{"type":"text","type":"image"}]}`, false, false},
		{`{"content":[],"content":[]}`, false, false},
		{`{"content":[],"isError":"yes"}`, false, false},
		{`{"content":[],"_meta":[]}`, false, false},
		{`{"cont\u0065nt":[]}`, false, false},
		{`{"content":[],"inputRequests":{}}`, false, false},
		{`[]`, false, false},
	} {
		isError, ok := plainToolResult([]byte(tc.raw))
		if ok != tc.ok || ok && isError != tc.wantError {
			t.Errorf("plainToolResult(%s) = %v, %v; want %v, %v", tc.raw, isError, ok, tc.wantError, tc.ok)
		}
	}
}

// FuzzPlainToolResult: what the fast path passes through raw (upstream bytes) is a
// result the SDK decodes, with the same isError and content present.
func FuzzPlainToolResult(f *testing.F) {
	for _, s := range []string{`{"content":[{"type":"text","text":"hi"}],"isError":true}`, `{"content":[]}`,
		`{"content":[{"type":"resource_link","uri":"a:b","name":"n"}],"structuredContent":{"k":[1,2]},"_meta":{}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // the framing refuses it before
		}
		isError, ok := plainToolResult(raw)
		if !ok {
			return
		}
		var res mcp.CallToolResult
		if err := json.Unmarshal(raw, &res); err != nil {
			// The SDK also checks the fields of items (a text that is not a string); the
			// fast path passes such a result through as the upstream wrote it (see
			// fastcall.go). Nothing to compare.
			return
		}
		if res.IsError != isError || res.Content == nil {
			t.Fatalf("%s: scan says isError=%v, SDK decodes %+v", raw, isError, res)
		}
	})
}
