package config

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseOAuth(t *testing.T) {
	in := `version = 1
[oauth]
issuer = "https://auth.example.com/realms/mcp"
resource = "https://symbi.example.com/mcp"
jwks_uri = "https://auth.example.com/realms/mcp/certs"
required_scopes = ["mcp:tools"]
identity_claim = "client_id"
leeway = "30s"
`
	c, err := Parse("t.toml", []byte(in), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := OAuth{Issuer: "https://auth.example.com/realms/mcp", Resource: "https://symbi.example.com/mcp",
		JWKSURI: "https://auth.example.com/realms/mcp/certs", RequiredScopes: []string{"mcp:tools"},
		IdentityClaim: "client_id", Leeway: dur(30 * time.Second)}
	if diff := cmp.Diff(want, c.OAuth); diff != "" {
		t.Errorf("oauth mismatch (-want +got):\n%s", diff)
	}
	if !c.OAuth.Enabled() || Default().OAuth.Enabled() {
		t.Error("Enabled: want on when issuer is set, off by default")
	}
	// A local issuer over http on loopback is allowed (development, tests).
	local := "version = 1\n[oauth]\nissuer = \"http://127.0.0.1:9000\"\nresource = \"http://localhost:8080/mcp\"\n"
	if _, err := Parse("t.toml", []byte(local), env(nil)); err != nil {
		t.Errorf("loopback http issuer: %v", err)
	}
}

func TestParseOAuthProblems(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"keys without issuer", "[oauth]\nresource = \"https://s/mcp\"\n", []string{"oauth.issuer"}},
		{"no resource", "[oauth]\nissuer = \"https://a\"\n", []string{"oauth.resource"}},
		{"plain http to a remote host", "[oauth]\nissuer = \"http://auth.example.com\"\nresource = \"http://symbi.example.com/mcp\"\n", []string{"oauth.issuer", "oauth.resource"}},
		{"bad values", `[oauth]
issuer = "auth.example.com"
resource = "https://s/mcp?x=1"
jwks_uri = "ftp://k"
required_scopes = ["a", "", "a", "b c"]
identity_claim = "no spaces allowed"
leeway = "10m"
audience = "x"
`, []string{"oauth.audience", "oauth.issuer", "oauth.resource", "oauth.jwks_uri", "oauth.required_scopes", "oauth.required_scopes",
			"oauth.required_scopes", "oauth.identity_claim", "oauth.leeway"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, keys(problems(t, "version = 1\n"+tc.in, nil))); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
