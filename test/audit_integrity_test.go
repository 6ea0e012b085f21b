package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// End-to-end tests of the audit trail's integrity promises: fail closed when the trail
// cannot record, a signing key and a head kept outside the trail, losses that stay
// visible, operator actions recorded.

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of an unlabelled series on /metrics, or "" if absent.
func metricValue(t testing.TB, addr, name string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestAuditFailureFailsClosed: once the trail cannot record (its directory is gone, so
// the head checkpoint cannot be written), calls are refused by default, /readyz and
// /metrics say so; with on_failure = "continue" they are served and counted.
func TestAuditFailureFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		onFailure string
		refuse    bool
	}{{"", true}, {"refuse", true}, {"continue", false}} {
		t.Run("on_failure="+tc.onFailure, func(t *testing.T) {
			body := upstreamTOML("mg", "mg", mcpgoServer(t))
			if tc.onFailure != "" {
				body += fmt.Sprintf("[audit]\non_failure = %q\n", tc.onFailure)
			}
			cfg := writeConfig(t, body)
			s := serve(t, cfg)
			cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
			if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": "before"}); isErr {
				t.Fatalf("call before the failure: %s", text)
			}
			if err := os.RemoveAll(filepath.Join(dataDirOf(cfg), "audit")); err != nil {
				t.Fatal(err)
			}
			// The next event the trail tries to make durable breaks it.
			_, _ = call(t, cs, "mg__echo", map[string]any{"message": "breaks the trail"})
			waitFor(t, 10*time.Second, "/readyz to report the audit failure", func() bool {
				code, _ := httpGet(t, "http://"+s.addr+"/readyz")
				return code != http.StatusOK
			})
			if _, body := httpGet(t, "http://"+s.addr+"/readyz"); !strings.Contains(body, `"audit"`) || !strings.Contains(body, "failed") {
				t.Errorf("/readyz does not name the audit failure: %s", body)
			}
			if v := metricValue(t, s.addr, "symbi_audit_failed"); v != "1" {
				t.Errorf("symbi_audit_failed = %q, want 1", v)
			}
			res, err := call(t, cs, "mg__echo", map[string]any{"message": "after"})
			if tc.refuse {
				wantRefused(t, "call while the trail is broken", res, err, "audit trail cannot record")
				if v := metricValue(t, s.addr, "symbi_audit_refused_total"); v != "1" {
					t.Errorf("symbi_audit_refused_total = %q, want 1", v)
				}
				return
			}
			if err != nil || res.IsError || resultText(res) != "echo: after" {
				t.Errorf("on_failure = continue: call = %v, %v; want it served", res, err)
			}
			if v := metricValue(t, s.addr, "symbi_audit_unrecorded_total"); v != "1" {
				t.Errorf("symbi_audit_unrecorded_total = %q, want 1", v)
			}
		})
	}
}
