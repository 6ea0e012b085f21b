package schemapin

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const typicalTool = `{"name":"search_issues","title":"Search issues","description":"Search issues and pull requests across repositories with the GitHub search syntax.","inputSchema":{"type":"object","properties":{"query":{"type":"string","description":"Search query, e.g. is:open label:bug"},"sort":{"type":"string","enum":["comments","reactions","created","updated"]},"order":{"type":"string","enum":["asc","desc"]},"perPage":{"type":"number","minimum":1,"maximum":100},"page":{"type":"number","minimum":1}},"required":["query"]},"annotations":{"readOnlyHint":true,"openWorldHint":true}}`

func BenchmarkCanonicalize(b *testing.B) {
	data := []byte(typicalTool)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Canonicalize(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalizeVerify is the per-tool cryptographic cost: canonical form of a
// typical tool schema plus one ECDSA P-256 verification.
func BenchmarkCanonicalizeVerify(b *testing.B) {
	k := newTestKey(b)
	data := []byte(typicalTool)
	sig, err := SignSchema(k.priv, data, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifySchema(&k.priv.PublicKey, data, sig, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGateCheck measures one tool through the whole gate (parse, verify, pin,
// quarantine on in-memory SQLite): cold means a first-seen tool (pin and approval are
// written), pinned means a re-list of a known tool.
func BenchmarkGateCheck(b *testing.B) {
	k := newTestKey(b)
	opts := UpstreamOptions{Mode: ModeStrict, Domain: "tools.example.com"}
	b.Run("cold", func(b *testing.B) {
		g := newGate(b, &GateOptions{Resolver: mapResolver{"tools.example.com": k.doc}})
		tools := make([][]byte, 0, 1024)
		for i := range 1024 {
			tools = append(tools, []byte(signedTool(b, k, strings.Replace(typicalTool, "search_issues", fmt.Sprintf("t%d", i), 1))))
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if i == len(tools) { // fresh state, so every check is a first sighting
				b.StopTimer()
				g = newGate(b, &GateOptions{Resolver: mapResolver{"tools.example.com": k.doc}})
				i = 0
				b.StartTimer()
			}
			d, err := g.Check(b.Context(), "up", opts, tools[i])
			if err != nil || !d.Allowed {
				b.Fatal(d, err)
			}
			i++
		}
	})
	b.Run("pinned", func(b *testing.B) {
		g := newGate(b, &GateOptions{Resolver: mapResolver{"tools.example.com": k.doc}})
		tool := []byte(signedTool(b, k, typicalTool))
		if _, err := g.Check(b.Context(), "up", opts, tool); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			d, err := g.Check(b.Context(), "up", opts, tool)
			if err != nil || !d.Allowed {
				b.Fatal(d, err)
			}
		}
	})
}

// BenchmarkUpstream500 is the start-up cost of verifying a 500-tool upstream from scratch.
func BenchmarkUpstream500(b *testing.B) {
	k := newTestKey(b)
	opts := UpstreamOptions{Mode: ModeStrict, Domain: "tools.example.com"}
	tools := make([][]byte, 500)
	for i := range tools {
		tools[i] = []byte(signedTool(b, k, strings.Replace(typicalTool, "search_issues", fmt.Sprintf("t%d", i), 1)))
	}
	b.ReportAllocs()
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		g := newGate(b, &GateOptions{Resolver: mapResolver{"tools.example.com": k.doc}})
		b.StartTimer()
		start := time.Now()
		for _, tool := range tools {
			if d, err := g.Check(b.Context(), "up", opts, tool); err != nil || !d.Allowed {
				b.Fatal(d, err)
			}
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/upstream")
}
