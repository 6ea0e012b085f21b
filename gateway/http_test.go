package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOperatorEndpointsExposure: /healthz is open; /metrics and the detail of /readyz go
// only to clients that /mcp would serve (a valid bearer token when tokens are set);
// everyone else gets /readyz's bare verdict and no metrics.
func TestOperatorEndpointsExposure(t *testing.T) {
	const token = "operator-token-0123456789"
	g := New(&Options{Tokens: map[string]string{token: "ops"}})
	srv := httptest.NewServer(g.Handler(nil))
	defer srv.Close()

	get := func(t *testing.T, path, auth string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	for _, tc := range []struct {
		name, path, auth string
		wantCode         int
		wantDetail       bool // /readyz: the body has more than "ready"
		wantIn           string
	}{
		{"healthz open", "/healthz", "", 200, false, "ok"},
		{"readyz anonymous verdict only", "/readyz", "", 200, false, `"ready":true`},
		{"readyz wrong token verdict only", "/readyz", "Bearer not-the-token-0000000", 200, false, `"ready":true`},
		{"readyz with token has detail", "/readyz", "Bearer " + token, 200, true, `"upstreams"`},
		{"readyz bearer scheme is case-insensitive", "/readyz", "bearer " + token, 200, true, `"upstreams"`},
		{"metrics anonymous refused", "/metrics", "", http.StatusUnauthorized, false, ""},
		{"metrics wrong token refused", "/metrics", "Bearer not-the-token-0000000", http.StatusUnauthorized, false, ""},
		{"metrics with token", "/metrics", "Bearer " + token, 200, false, "symbi_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, tc.path, tc.auth)
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d (body %q)", code, tc.wantCode, body)
			}
			if tc.wantIn != "" && !strings.Contains(body, tc.wantIn) {
				t.Errorf("body lacks %q: %.300s", tc.wantIn, body)
			}
			if tc.path == "/readyz" {
				var m map[string]any
				if err := json.Unmarshal([]byte(body), &m); err != nil {
					t.Fatalf("readyz body: %v", err)
				}
				if got := len(m) > 1; got != tc.wantDetail {
					t.Errorf("detail shown = %v, want %v: %s", got, tc.wantDetail, body)
				}
			}
		})
	}
}

// TestOperatorEndpointsNoTokens: with no tokens only loopback clients are trusted, and
// httptest's client is one, so it sees everything.
func TestOperatorEndpointsNoTokens(t *testing.T) {
	g := New(nil)
	srv := httptest.NewServer(g.Handler(nil))
	defer srv.Close()
	for _, path := range []string{"/metrics", "/readyz"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d", path, resp.StatusCode)
		}
		if path == "/readyz" && !strings.Contains(string(body), `"upstreams"`) {
			t.Errorf("loopback /readyz lacks detail: %s", body)
		}
	}
}
