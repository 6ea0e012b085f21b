package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// dashboardPanel is the part of a Grafana panel the test reads.
type dashboardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // inside a row
}

var (
	promStrings    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers   = regexp.MustCompile(`\{[^}]*\}`)
	promRanges     = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdentifier = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promKeywords   = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true}
)

// promMetrics returns the metric names an expression selects: identifiers that are not
// functions, keywords, label names in matchers or groupings, or Grafana variables.
func promMetrics(expr string) []string {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promMatchers.ReplaceAllString(e, "")
	e = promRanges.ReplaceAllString(e, "")
	e = promGrouping.ReplaceAllString(e, "")
	e = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`).ReplaceAllString(e, "")
	e = regexp.MustCompile(`\b[0-9]+(?:\.[0-9]+)?(?:[smhdwy]|ms)?\b`).ReplaceAllString(e, "")
	var out []string
	for _, m := range promIdentifier.FindAllStringSubmatch(e, -1) {
		name := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(m[0]), "("))
		if m[1] != "" || promKeywords[strings.ToLower(name)] {
			continue // a function call or a keyword
		}
		out = append(out, name)
	}
	return out
}

func TestPromMetricsParser(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`sum by (upstream) (rate(symbi_requests_total{method="tools/call", upstream=~"$upstream"}[$__rate_interval]))`, []string{"symbi_requests_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(symbi_request_duration_seconds_bucket[5m])))`, []string{"symbi_request_duration_seconds_bucket"}},
		{`symbi_upstream_up == 0 or on (upstream) symbi_sessions > bool 3`, []string{"symbi_upstream_up", "symbi_sessions"}},
		{`process_resident_memory_bytes{job="symbi"} / 1024`, []string{"process_resident_memory_bytes"}},
	}
	for _, tc := range tests {
		if got := promMetrics(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("promMetrics(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("../configs/grafana/symbi-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string           `json:"title"`
		UID    string           `json:"uid"`
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Error("dashboard without title or uid")
	}
	exprs := map[string][]string{} // panel title -> expressions
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has an empty expression", p.Title)
				}
				exprs[p.Title] = append(exprs[p.Title], tg.Expr)
			}
		}
	}
	walk(d.Panels)
	if len(exprs) < 6 {
		t.Errorf("the dashboard has %d panels with queries; want the requests, errors, latency, denials, upstreams and audit at least", len(exprs))
	}
	return exprs
}

// TestGrafanaDashboardMetricsExist scrapes /metrics of the built symbi after calls that
// exercise every family the dashboard shows (successes, tool errors, an unknown tool, a
// policy denial, an upstream that crashes and restarts) and checks that every metric
// the dashboard queries is among them.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	exprs := dashboardExprs(t)

	policyDir := t.TempDir()
	if err := os.WriteFile(policyDir+"/authz.rego", []byte(`package symbi.authz

default decision := {"allow": true}

decision := {"allow": false, "reason": "no secrets"} if {
	input.action == "tools/call"
	input.tool.upstream_name == "secret"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("[policy]\ndir = %q\n\n", policyDir)+upstreamTOML("mcpgo", "m", mcpgoServer(t)))
	s := serve(t, cfg)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	callText(t, cs, "m__echo", map[string]any{"message": "hi"})
	callText(t, cs, "symbi__status", map[string]any{})
	_, _ = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "nope__missing", Arguments: map[string]any{}})
	_, _ = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "m__secret", Arguments: map[string]any{}})
	_, _ = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "m__crash", Arguments: map[string]any{}})

	var exported map[string]bool
	scrape := func() map[string]bool {
		resp, err := http.Get("http://" + s.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /metrics: %d", resp.StatusCode)
		}
		names := map[string]bool{}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name := line[:strings.IndexAny(line, "{ ")]
			names[name] = true
		}
		return names
	}
	var missing []string
	check := func() bool {
		exported = scrape()
		missing = missing[:0]
		for title, es := range exprs {
			for _, e := range es {
				for _, m := range promMetrics(e) {
					if !exported[m] {
						missing = append(missing, fmt.Sprintf("%s (panel %q)", m, title))
					}
				}
			}
		}
		return len(missing) == 0
	}
	// The crashed upstream's restart is counted when symbi has brought it back.
	deadline := time.Now().Add(30 * time.Second)
	for !check() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		var have []string
		for n := range exported {
			if strings.HasPrefix(n, "symbi_") {
				have = append(have, n)
			}
		}
		sort.Strings(have)
		t.Errorf("the dashboard queries metrics symbi does not export:\n  %s\nsymbi exports:\n  %s",
			strings.Join(missing, "\n  "), strings.Join(have, "\n  "))
	}
}
