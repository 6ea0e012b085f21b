package oauth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/testissuer"
)

// TestRealIssuer validates tokens from a real OpenID provider (zitadel/oidc) obtained
// with the client_credentials grant: discovery, its JWKS, its RS256 signatures.
func TestRealIssuer(t *testing.T) {
	is, err := testissuer.Start(resource)
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	ctx := context.Background()
	v, err := New(Config{Issuer: is.URL, Resource: resource, RequiredScopes: []string{"mcp"}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.Check(ctx); err != nil || n == 0 {
		t.Fatalf("Check = %d, %v", n, err)
	}
	raw, err := is.Token(ctx, "mcp", "role:admin")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if tok.Identity != testissuer.ClientID || tok.Claims["role"] != "admin" || tok.Claims["iss"] != is.URL {
		t.Errorf("token = %+v", tok)
	}
	for _, tc := range []struct {
		scopes []string
		want   error
		text   string
	}{
		{[]string{"mcp", "aud:https://other.example.com/mcp"}, ErrInvalid, "audience"},
		{[]string{"mcp", "test:expired"}, ErrInvalid, "expired"},
		{[]string{"role:admin"}, ErrInsufficientScope, `"mcp"`},
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
	v2, _ := New(Config{Issuer: is.URL, Resource: resource})
	if _, err := v2.Verify(ctx, raw); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("issuer stopped: %v, want ErrUnavailable", err)
	}
}
