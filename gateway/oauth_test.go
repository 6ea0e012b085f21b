package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/oauth"
	"github.com/symbi-dev/symbi/internal/testissuer"
)

// TestOAuthResourceServer: with an issuer configured, JWT access tokens from it (a real
// OpenID provider, tokens from its client_credentials grant) authenticate, their claims
// are the request's identity claims, static tokens keep working, refusals carry the
// resource_metadata challenge, and the metadata document is served at both locations.
func TestOAuthResourceServer(t *testing.T) {
	const static = "operator-token-0123456789"
	const resource = "http://127.0.0.1:1/mcp" // what clients are told; the test server's own address does not matter
	is, err := testissuer.Start(resource)
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	v, err := oauth.New(oauth.Config{Issuer: is.URL, Resource: resource, RequiredScopes: []string{"mcp"}})
	if err != nil {
		t.Fatal(err)
	}
	g := New(&Options{Tokens: map[string]string{static: "ops"}, OAuth: v})
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := RequestIdentity(r)
		_, _ = fmt.Fprintf(w, "%s auth=%v role=%v iss=%v", id.ID, id.Claims["auth"], id.Claims["role"], id.Claims["iss"])
	})
	srv := httptest.NewServer(g.Handler(&HTTPOptions{Routes: map[string]http.Handler{"/whoami": whoami}}))
	defer srv.Close()
	ctx := context.Background()
	token := func(scopes ...string) string {
		tok, err := is.Token(ctx, scopes...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	metadataURL := "http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp"
	challenge := func(code string) string {
		c := `Bearer realm="symbi"`
		if code != "" {
			c += `, error="` + code + `"`
		}
		return c + `, resource_metadata="` + metadataURL + `", scope="mcp"`
	}
	for _, tc := range []struct {
		name, auth    string
		wantCode      int
		wantBody      string
		wantChallenge string
	}{
		{"token from the issuer", "Bearer " + token("mcp", "role:admin"), 200, "sid1 auth=oauth role=admin iss=" + is.URL, ""},
		{"a token cannot claim another kind of credential", "Bearer " + token("mcp", "set:auth=certificate"), 200, "sid1 auth=oauth", ""},
		{"static token still works", "Bearer " + static, 200, "ops auth=token", ""},
		{"no credential", "", 401, "no bearer token", challenge("")},
		{"wrong audience", "Bearer " + token("mcp", "aud:https://other.example.com/mcp"), 401, "audience", challenge("invalid_token")},
		{"expired", "Bearer " + token("mcp", "test:expired"), 401, "expired", challenge("invalid_token")},
		{"missing required scope", "Bearer " + token("role:admin"), 403, `scope "mcp" is required`, challenge("insufficient_scope")},
		{"neither static nor JWT", "Bearer not-a-configured-token-000", 401, "invalid bearer token", challenge("invalid_token")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/whoami", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("status %d body %.300q, want %d with %q", resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tc.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.wantChallenge)
			}
		})
	}

	// /readyz shows its detail to a client with a valid access token, as to /mcp's.
	for auth, wantDetail := range map[string]bool{"Bearer " + token("mcp"): true, "Bearer " + token("mcp", "test:expired"): false, "": false} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/readyz", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := strings.Contains(string(body), `"upstreams"`); got != wantDetail {
			t.Errorf("readyz detail = %v, want %v: %s", got, wantDetail, body)
		}
	}

	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var md map[string]any
		err = json.NewDecoder(resp.Body).Decode(&md)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %v %v", path, resp.StatusCode, resp.Header, err)
		}
		if md["resource"] != resource || fmt.Sprint(md["authorization_servers"]) != "["+is.URL+"]" ||
			fmt.Sprint(md["scopes_supported"]) != "[mcp]" || fmt.Sprint(md["bearer_methods_supported"]) != "[header]" {
			t.Errorf("%s: metadata %v", path, md)
		}
	}

	// The issuer goes away and its keys must be fetched anew (a fresh verifier): the
	// token is not accepted, and the client is told the issuer is unavailable.
	good := token("mcp")
	is.Close()
	v2, _ := oauth.New(oauth.Config{Issuer: is.URL, Resource: resource})
	g2 := New(&Options{OAuth: v2})
	srv2 := httptest.NewServer(g2.Handler(&HTTPOptions{Routes: map[string]http.Handler{"/whoami": whoami}}))
	defer srv2.Close()
	req, _ := http.NewRequest(http.MethodGet, srv2.URL+"/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+good)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "issuer is unavailable") {
		t.Errorf("issuer down: %d %q, want 503", resp.StatusCode, body)
	}
	// With OAuth alone (no static tokens) a loopback client without a token is not
	// served anonymously any more.
	resp, err = http.Get(srv2.URL + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Errorf("no token, OAuth only: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}
