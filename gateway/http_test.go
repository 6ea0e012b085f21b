package gateway

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/testpki"
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

// TestClientCertificateIdentity: with ClientCerts, a verified client certificate
// authenticates a request as its URI SAN or common name; a bearer token still names its
// own identity; no certificate and no token is refused, loopback or not; a certificate
// from another CA does not get past the handshake.
func TestClientCertificateIdentity(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	issue := func(cn, uri string) tls.Certificate { return ca.Issue(t, testpki.Leaf{CommonName: cn, URI: uri}) }
	const token = "operator-token-0123456789"
	g := New(&Options{Tokens: map[string]string{token: "ops"}, ClientCerts: true})
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := RequestIdentity(r)
		_, _ = fmt.Fprintf(w, "%s %v %v", id.ID, id.Claims["auth"], id.Claims["issuer"])
	})
	srv := httptest.NewUnstartedServer(g.Handler(&HTTPOptions{Routes: map[string]http.Handler{"/whoami": whoami}}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, testpki.Leaf{CommonName: "symbi", Server: true})},
		ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	defer srv.Close()

	other := testpki.NewCA(t, "other CA") // a CA the server does not trust
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs}}}
	}
	for _, tc := range []struct {
		name     string
		client   *http.Client
		path     string
		auth     string
		wantCode int
		wantBody string
	}{
		{"certificate common name", client(issue("agent-7", "")), "/whoami", "", 200, "agent-7 certificate CN=test CA"},
		{"certificate URI SAN first", client(issue("agent-8", "spiffe://example.org/agent/8")), "/whoami", "", 200, "spiffe://example.org/agent/8"},
		{"token wins over certificate", client(issue("agent-7", "")), "/whoami", "Bearer " + token, 200, "ops token"},
		{"token without certificate", client(), "/whoami", "Bearer " + token, 200, "ops token"},
		{"the stand-in token alone is nothing", client(), "/whoami", "Bearer " + certBearer, http.StatusUnauthorized, ""},
		{"neither, even on loopback", client(), "/whoami", "", http.StatusUnauthorized, ""},
		{"certificate sees metrics", client(issue("agent-7", "")), "/metrics", "", 200, "symbi_"},
		{"certificate sees readyz detail", client(issue("agent-7", "")), "/readyz", "", 200, `"upstreams"`},
		{"no certificate: bare readyz", client(), "/readyz", "", 200, `{"ready":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("status %d body %.200q, want %d with %q", resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	// A certificate from a CA the server does not trust authenticates nobody: either the
	// client does not offer it (it matches none of the server's acceptable CAs) or the
	// handshake fails.
	if resp, err := client(other.Issue(t, testpki.Leaf{CommonName: "mallory"})).Get(srv.URL + "/whoami"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a certificate from an untrusted CA: status %d %q, want 401 or a failed handshake", resp.StatusCode, body)
		}
	}
	// The same, with an untrusted CA named like the trusted one: now the client offers
	// its certificate, and the server's verification must refuse it.
	impostor := testpki.NewCA(t, "test CA")
	if _, err := client(impostor.Issue(t, testpki.Leaf{CommonName: "mallory"})).Get(srv.URL + "/whoami"); err == nil {
		t.Error("a certificate from an impostor CA with the trusted CA's name got through the handshake")
	}
}
