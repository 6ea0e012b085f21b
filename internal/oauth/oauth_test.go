package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
)

const resource = "https://symbi.example.com/mcp"

// keyServer is the issuer's side for the unit tests: an HTTP server publishing OpenID
// metadata and a key set that the test can change, counting key set fetches.
type keyServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetches int
	down    bool
}

func newKeyServer(t testing.TB, keys ...jose.JSONWebKey) *keyServer {
	ks := &keyServer{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ks.mu.Lock()
		down := ks.down
		ks.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": ks.srv.URL, "jwks_uri": ks.srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		ks.mu.Lock()
		defer ks.mu.Unlock()
		ks.fetches++
		var pub []jose.JSONWebKey
		for _, k := range ks.keys {
			pub = append(pub, k.Public())
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: pub})
	})
	ks.srv = httptest.NewServer(mux)
	t.Cleanup(ks.srv.Close)
	return ks
}

func (ks *keyServer) set(keys ...jose.JSONWebKey) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.keys = keys
}

func rsaKey(t testing.TB, kid string) jose.JSONWebKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"}
}

func sign(t testing.TB, key jose.JSONWebKey, alg jose.SignatureAlgorithm, claims any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerify(t *testing.T) {
	k1 := rsaKey(t, "k1")
	ks := newKeyServer(t, k1)
	now := time.Now()
	good := func() map[string]any {
		return map[string]any{"iss": ks.srv.URL, "sub": "alice", "aud": []string{resource, "other"},
			"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
			"scope": "mcp:tools read", "role": "admin"}
	}
	with := func(k string, v any) map[string]any {
		c := good()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	stranger := rsaKey(t, "k-unknown")
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k1.Key.(*rsa.PrivateKey).PublicKey)
	hmacWithPub := jose.JSONWebKey{Key: pubDER, KeyID: "k1"}
	tampered := func() string {
		p := strings.Split(sign(t, k1, jose.RS256, good()), ".")
		c := good()
		c["sub"] = "mallory"
		p[1] = b64(c)
		return strings.Join(p, ".")
	}()

	tests := []struct {
		name     string
		token    string
		scopes   []string
		wantErr  error
		wantText string
	}{
		{name: "valid", token: sign(t, k1, jose.RS256, good())},
		{name: "valid with required scopes", token: sign(t, k1, jose.RS256, good()), scopes: []string{"mcp:tools"}},
		{name: "missing scope", token: sign(t, k1, jose.RS256, good()), scopes: []string{"admin"}, wantErr: ErrInsufficientScope, wantText: `scope "admin" is required`},
		{name: "wrong issuer", token: sign(t, k1, jose.RS256, with("iss", "https://evil.example.com")), wantErr: ErrInvalid, wantText: "issuer"},
		{name: "wrong audience", token: sign(t, k1, jose.RS256, with("aud", "https://other.example.com/mcp")), wantErr: ErrInvalid, wantText: "audience"},
		{name: "no audience", token: sign(t, k1, jose.RS256, with("aud", nil)), wantErr: ErrInvalid, wantText: "audience"},
		{name: "expired", token: sign(t, k1, jose.RS256, with("exp", now.Add(-2*time.Minute).Unix())), wantErr: ErrInvalid, wantText: "expired"},
		{name: "expired within leeway", token: sign(t, k1, jose.RS256, with("exp", now.Add(-30*time.Second).Unix()))},
		{name: "no exp", token: sign(t, k1, jose.RS256, with("exp", nil)), wantErr: ErrInvalid, wantText: "no exp"},
		{name: "nbf in the future", token: sign(t, k1, jose.RS256, with("nbf", now.Add(10*time.Minute).Unix())), wantErr: ErrInvalid, wantText: "not valid yet"},
		{name: "no subject", token: sign(t, k1, jose.RS256, with("sub", nil)), wantErr: ErrInvalid, wantText: "no sub claim"},
		{name: "alg none", token: b64(map[string]string{"alg": "none", "kid": "k1"}) + "." + b64(good()) + ".", wantErr: ErrInvalid, wantText: "unexpected signature algorithm"},
		{name: "HS256 with the public key as secret", token: sign(t, hmacWithPub, jose.HS256, good()), wantErr: ErrInvalid, wantText: "unexpected signature algorithm"},
		{name: "unknown kid", token: sign(t, stranger, jose.RS256, good()), wantErr: ErrInvalid, wantText: `unknown signing key "k-unknown"`},
		{name: "key of another alg under a known kid", token: sign(t, jose.JSONWebKey{Key: ec, KeyID: "k1"}, jose.ES256, good()), wantErr: ErrInvalid, wantText: "does not verify"},
		{name: "tampered payload", token: tampered, wantErr: ErrInvalid, wantText: "does not verify"},
		{name: "not a JWT", token: "static-token-value", wantErr: ErrInvalid},
		{name: "too long", token: strings.Repeat("a", MaxTokenBytes+1), wantErr: ErrInvalid, wantText: "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(Config{Issuer: ks.srv.URL, Resource: resource, RequiredScopes: tc.scopes, MinRefresh: time.Nanosecond})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := v.Verify(context.Background(), tc.token)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if tok.Identity != "alice" || tok.Claims["role"] != "admin" || !cmp.Equal(tok.Scopes, []string{"mcp:tools", "read"}) {
					t.Errorf("token = %+v", tok)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("Verify error = %v, want %v containing %q", err, tc.wantErr, tc.wantText)
			}
			if tok != nil {
				t.Errorf("a refused token came back: %+v", tok)
			}
		})
	}
}

// TestUnknownKidRefetches: a token naming a key symbi has not seen makes it fetch the
// key set again: a rotated-in key is then accepted, an unknown one still refused, and
// such refetches are bounded by MinRefresh.
func TestUnknownKidRefetches(t *testing.T) {
	k1, k2, k3 := rsaKey(t, "k1"), rsaKey(t, "k2"), rsaKey(t, "k3")
	ks := newKeyServer(t, k1)
	clock := time.Now()
	v, err := New(Config{Issuer: ks.srv.URL, Resource: resource, MinRefresh: time.Minute, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": ks.srv.URL, "sub": "s", "aud": resource, "exp": clock.Add(time.Hour).Unix()}
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, k1, jose.RS256, claims)); err != nil {
		t.Fatal(err)
	}
	if got := v.Fetches(); got != 1 {
		t.Fatalf("fetches = %d, want 1", got)
	}
	// The issuer rotates in k2; right after the first fetch a refetch is not allowed yet.
	ks.set(k1, k2)
	if _, err := v.Verify(ctx, sign(t, k2, jose.RS256, claims)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("k2 before MinRefresh: %v, want ErrInvalid", err)
	}
	if got := v.Fetches(); got != 1 {
		t.Fatalf("fetches = %d, want still 1 (rate-limited)", got)
	}
	clock = clock.Add(2 * time.Minute)
	if _, err := v.Verify(ctx, sign(t, k2, jose.RS256, claims)); err != nil {
		t.Fatalf("k2 after refetch: %v", err)
	}
	if got := v.Fetches(); got != 2 {
		t.Fatalf("fetches = %d, want 2", got)
	}
	clock = clock.Add(2 * time.Minute)
	_, err = v.Verify(ctx, sign(t, k3, jose.RS256, claims))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `unknown signing key "k3"`) {
		t.Fatalf("k3: %v", err)
	}
	if got := v.Fetches(); got != 3 {
		t.Fatalf("fetches = %d, want 3 (refetched for k3, then refused)", got)
	}
	// Many tokens with unknown keys do not each cause a fetch.
	for range 20 {
		_, _ = v.Verify(ctx, sign(t, k3, jose.RS256, claims))
	}
	if got := v.Fetches(); got != 3 {
		t.Fatalf("fetches = %d after a burst, want 3", got)
	}
}

// TestIssuerUnreachable: with the issuer down, nothing is accepted and the error says
// the issuer is unavailable (not that the token is bad); keys fetched earlier are
// dropped when their TTL is up and the refetch fails.
func TestIssuerUnreachable(t *testing.T) {
	k1 := rsaKey(t, "k1")
	ks := newKeyServer(t, k1)
	clock := time.Now()
	v, err := New(Config{Issuer: ks.srv.URL, Resource: resource, KeysTTL: time.Hour, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": ks.srv.URL, "sub": "s", "aud": resource, "exp": clock.Add(3 * time.Hour).Unix()}
	tok := sign(t, k1, jose.RS256, claims)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	ks.mu.Lock()
	ks.down = true
	ks.mu.Unlock()
	clock = clock.Add(2 * time.Hour)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("issuer down: %v, want ErrUnavailable", err)
	}
	if _, err := v.Check(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "502") {
		t.Fatalf("Check: %v", err)
	}

	// An issuer that never answered at all.
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	v2, _ := New(Config{Issuer: url, Resource: resource})
	if _, err := v2.Verify(context.Background(), tok); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("dead issuer: %v, want ErrUnavailable", err)
	}
}

// TestDiscoveryIssuerMismatch: metadata naming another issuer is refused (RFC 8414 3.3).
func TestDiscoveryIssuerMismatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": "https://elsewhere.example.com", "jwks_uri": "https://elsewhere.example.com/keys"})
	}))
	defer srv.Close()
	v, _ := New(Config{Issuer: srv.URL, Resource: resource})
	if _, err := v.Check(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "names issuer") {
		t.Fatalf("Check: %v", err)
	}
}

func TestMetadataLocations(t *testing.T) {
	if got, want := MetadataPaths("https://h.example.com/mcp"), []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"}; !cmp.Equal(got, want) {
		t.Errorf("MetadataPaths = %v, want %v", got, want)
	}
	if got, want := MetadataPaths("https://h.example.com/"), []string{"/.well-known/oauth-protected-resource"}; !cmp.Equal(got, want) {
		t.Errorf("MetadataPaths(root) = %v, want %v", got, want)
	}
	if got, want := MetadataURL("https://h.example.com:8443/mcp"), "https://h.example.com:8443/.well-known/oauth-protected-resource/mcp"; got != want {
		t.Errorf("MetadataURL = %q, want %q", got, want)
	}
	if got, want := MetadataURLs("https://auth.example.com/realms/x"), []string{
		"https://auth.example.com/realms/x/.well-known/openid-configuration",
		"https://auth.example.com/.well-known/oauth-authorization-server/realms/x",
		"https://auth.example.com/realms/x/.well-known/oauth-authorization-server",
	}; !cmp.Equal(got, want) {
		t.Errorf("MetadataURLs = %v, want %v", got, want)
	}
}

func TestNewRefusesBadURLs(t *testing.T) {
	for _, c := range []Config{
		{Issuer: "", Resource: resource},
		{Issuer: "ftp://x", Resource: resource},
		{Issuer: "https://x", Resource: "/mcp"},
		{Issuer: "https://x", Resource: resource, JWKSURI: "keys.json"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
