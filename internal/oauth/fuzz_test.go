package oauth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// FuzzVerify feeds arbitrary bearer tokens to the parsing and validation path. No input
// may panic, and none may be accepted: the fuzzer has no access to the signing key, so
// only the seed signed here verifies (or an encoding of the very same signed bytes).
func FuzzVerify(f *testing.F) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "k1", Algorithm: string(jose.RS256), Use: "sig"}
	ks := newKeyServer(f, jwk)
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk}, nil)
	valid, _ := jwt.Signed(s).Claims(map[string]any{"iss": ks.srv.URL, "sub": "s", "aud": resource, "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
	f.Add(valid)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("")
	f.Add("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.AAAA")
	v, err := New(Config{Issuer: ks.srv.URL, Resource: resource, MinRefresh: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := v.Verify(context.Background(), raw)
		if raw == valid {
			if err != nil {
				t.Fatalf("the signed seed was refused: %v", err)
			}
			return
		}
		if err == nil {
			// Only a re-encoding of the seed itself may verify (same signed bytes).
			if tok.Identity != "s" || tok.Claims["iss"] != ks.srv.URL {
				t.Fatalf("accepted a token the fuzzer made: %q -> %+v", raw, tok)
			}
			return
		}
		if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrInsufficientScope) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}
