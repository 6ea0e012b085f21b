package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/internal/testissuer"
)

// oauthPolicy lets a client call tools only with an access token from the issuer that
// carries role "admin", or as the static-token identity "ops": the claims of the token
// must reach the policy for the first rule to match.
const oauthPolicy = `package symbi.authz

decision := {"allow": true} if {
	input.action != "tools/call"
} else := {"allow": true} if {
	input.identity.claims.auth == "oauth"
	input.identity.claims.role == "admin"
} else := {"allow": true} if {
	input.identity.id == "ops"
} else := {"allow": false, "reason": "role admin required"}
`

// TestOAuthResourceServer runs the binary as an OAuth resource server in front of a real
// OpenID provider (zitadel/oidc, started here) whose tokens come from its
// client_credentials grant: the metadata document, the 401 challenge naming it, a token
// whose claims the policy allows by, one whose claims it refuses, expired and
// wrong-audience tokens refused, a static token still working, and doctor's check of
// the issuer.
func TestOAuthResourceServer(t *testing.T) {
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	resource := base + "/mcp"
	is, err := testissuer.Start(resource)
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	t.Setenv("SYMBI_TEST_OPS_TOKEN", "ops-token-0123456789")
	dir := policyDir(t, map[string]string{"oauth.rego": oauthPolicy})
	// writeConfig listens on port 0; the resource URL needs the port in advance.
	path := writeConfig(t, fmt.Sprintf(`[[server.tokens]]
token = "env:SYMBI_TEST_OPS_TOKEN"
identity = "ops"

[oauth]
issuer = %q
resource = %q
required_scopes = ["mcp"]

[policy]
dir = %q

`, is.URL, resource, dir)+upstreamTOML("mg", "mg", mcpgoServer(t)))
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	body = []byte(strings.Replace(string(body), `listen = "127.0.0.1:0"`, fmt.Sprintf(`listen = "127.0.0.1:%d"`, port), 1))
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	s := serve(t, path)
	if s.addr != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("symbi listens on %s, want port %d", s.addr, port)
	}

	t.Run("metadata", func(t *testing.T) {
		for _, p := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
			resp, err := http.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			var md struct {
				Resource             string   `json:"resource"`
				AuthorizationServers []string `json:"authorization_servers"`
				ScopesSupported      []string `json:"scopes_supported"`
			}
			err = json.NewDecoder(resp.Body).Decode(&md)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || md.Resource != resource || len(md.AuthorizationServers) != 1 ||
				md.AuthorizationServers[0] != is.URL || len(md.ScopesSupported) != 1 || md.ScopesSupported[0] != "mcp" {
				t.Errorf("%s: %d %+v %v", p, resp.StatusCode, md, err)
			}
		}
	})

	t.Run("challenge", func(t *testing.T) {
		code, hdr, _ := httpDo(t, http.MethodPost, resource, hardeningInit, nil, "")
		want := fmt.Sprintf(`Bearer realm="symbi", resource_metadata="%s/.well-known/oauth-protected-resource/mcp", scope="mcp"`, base)
		if code != 401 || hdr.Get("WWW-Authenticate") != want {
			t.Errorf("no token: %d WWW-Authenticate %q, want 401 %q", code, hdr.Get("WWW-Authenticate"), want)
		}
	})

	ctx := context.Background()
	token := func(scopes ...string) string {
		tok, err := is.Token(ctx, scopes...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	session := func(t *testing.T, bearer string) (*mcp.ClientSession, error) {
		c := mcp.NewClient(&mcp.Implementation{Name: "oauth-e2e", Version: "1"}, nil)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cs, err := c.Connect(cctx, &mcp.StreamableClientTransport{Endpoint: resource,
			HTTPClient: &http.Client{Transport: bearerTransport{bearer}}}, nil)
		if err == nil {
			t.Cleanup(func() { cs.Close() })
		}
		return cs, err
	}

	t.Run("token with role admin is allowed by its claims", func(t *testing.T) {
		cs, err := session(t, token("mcp", "role:admin"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := call(t, cs, "mg__echo", map[string]any{"message": "via oauth"})
		if err != nil || res.IsError || !strings.Contains(resultText(res), "via oauth") {
			t.Fatalf("echo: %v %+v", err, res)
		}
	})
	t.Run("token without the role is refused by policy", func(t *testing.T) {
		cs, err := session(t, token("mcp", "role:viewer"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := call(t, cs, "mg__echo", map[string]any{"message": "x"})
		wantRefused(t, "viewer echo", res, err, "role admin required")
	})
	t.Run("static token still works", func(t *testing.T) {
		cs, err := session(t, "ops-token-0123456789")
		if err != nil {
			t.Fatal(err)
		}
		res, err := call(t, cs, "mg__echo", map[string]any{"message": "static"})
		if err != nil || res.IsError {
			t.Fatalf("echo: %v %+v", err, res)
		}
	})
	for _, tc := range []struct {
		name   string
		scopes []string
		code   int
		want   string
	}{
		{"expired token refused", []string{"mcp", "role:admin", "test:expired"}, 401, `error="invalid_token"`},
		{"wrong audience refused", []string{"mcp", "role:admin", "aud:https://elsewhere.example.com/mcp"}, 401, `error="invalid_token"`},
		{"missing scope refused", []string{"role:admin"}, 403, `error="insufficient_scope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := httpDo(t, http.MethodPost, resource, hardeningInit, map[string]string{"Authorization": "Bearer " + token(tc.scopes...)}, "")
			if code != tc.code || !strings.Contains(hdr.Get("WWW-Authenticate"), tc.want) || !strings.Contains(hdr.Get("WWW-Authenticate"), "resource_metadata=") {
				t.Errorf("status %d WWW-Authenticate %q body %.200q; want %d with %s", code, hdr.Get("WWW-Authenticate"), body, tc.code, tc.want)
			}
		})
	}

	t.Run("web console sign-in with an access token", func(t *testing.T) {
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		login := func(tok string) *http.Response {
			req, _ := http.NewRequest(http.MethodPost, base+"/ui/login", strings.NewReader(url.Values{"token": {tok}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", base)
			res, err := browser.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res
		}
		// Refused as /mcp refuses it: a token without the required scope.
		if res := login(token("role:admin")); res.StatusCode != 403 || !strings.Contains(res.Header.Get("WWW-Authenticate"), "insufficient_scope") {
			t.Errorf("sign-in without scope mcp: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
		}
		if res := login(token("mcp", "role:admin")); res.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in with an access token: %d", res.StatusCode)
		}
		res, err := browser.Get(base + "/ui/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(page), `<b id="identity">`) || !strings.Contains(string(page), `<td>mg</td>`) {
			t.Errorf("console with an access token: %d\n%s", res.StatusCode, page)
		}
	})

	t.Run("doctor", func(t *testing.T) {
		out, err := exec.Command(symbiBin(t), "doctor", "--config", path).CombinedOutput()
		if !strings.Contains(string(out), "ok   OAuth issuer") || !strings.Contains(string(out), is.URL+" reachable") {
			t.Errorf("doctor (%v) does not report the issuer reachable:\n%s", err, out)
		}
		is.Close()
		out, err = exec.Command(symbiBin(t), "doctor", "--config", path).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "FAIL OAuth issuer") {
			t.Errorf("doctor with the issuer down: %v, want exit 1 and a FAIL line:\n%s", err, out)
		}
	})
}
