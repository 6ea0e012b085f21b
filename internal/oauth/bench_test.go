package oauth

import (
	"context"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// BenchmarkVerify measures validating an RS256 access token with the keys cached (the
// cost per request of a client using an access token).
func BenchmarkVerify(b *testing.B) {
	k := rsaKey(b, "k1")
	ks := newKeyServer(b, k)
	v, err := New(Config{Issuer: ks.srv.URL, Resource: resource})
	if err != nil {
		b.Fatal(err)
	}
	raw := sign(b, k, jose.RS256, map[string]any{"iss": ks.srv.URL, "sub": "s", "aud": resource,
		"exp": time.Now().Add(time.Hour).Unix(), "scope": "mcp"})
	ctx := context.Background()
	if _, err := v.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}
