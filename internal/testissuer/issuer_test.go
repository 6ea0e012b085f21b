package testissuer_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/oauth"
	"github.com/symbi-dev/symbi/internal/testissuer"
)

const resource = "https://symbi.example.com/mcp"

// TestRealIssuer: oauth.Verifier validates tokens from a real OpenID provider (zitadel/oidc) obtained
// with the client_credentials grant: discovery, its JWKS, its RS256 signatures.
func TestRealIssuer(t *testing.T) {
	is, err := testissuer.Start(resource)
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	ctx := context.Background()
	v, err := oauth.New(oauth.Config{Issuer: is.URL, Resource: resource, RequiredScopes: []string{"mcp"}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.Check(ctx); err != nil || n == 0 {
		t.Fatalf("Check = %d, %v", n, err)
	}
	raw, err := is.Token(ctx, "mcp", "role:admin", "set:auth=certificate")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if tok.Identity != testissuer.ClientID || tok.Claims["role"] != "admin" || tok.Claims["auth"] != "certificate" || tok.Claims["iss"] != is.URL {
		t.Errorf("token = %+v", tok)
	}
	for _, tc := range []struct {
		scopes []string
		want   error
		text   string
	}{
		{[]string{"mcp", "aud:https://other.example.com/mcp"}, oauth.ErrInvalid, "audience"},
		{[]string{"mcp", "test:expired"}, oauth.ErrInvalid, "expired"},
		{[]string{"role:admin"}, oauth.ErrInsufficientScope, `"mcp"`},
	} {
		raw, err := is.Token(ctx, tc.scopes...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(ctx, raw); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("scopes %v: Verify = %v, want %v containing %s", tc.scopes, err, tc.want, tc.text)
		}
	}
	// The issuer goes away: its keys are cached, but once they must be fetched again
	// nothing is accepted.
	is.Close()
	v2, _ := oauth.New(oauth.Config{Issuer: is.URL, Resource: resource})
	if _, err := v2.Verify(ctx, raw); !errors.Is(err, oauth.ErrUnavailable) {
		t.Fatalf("issuer stopped: %v, want oauth.ErrUnavailable", err)
	}
}
