// Package testissuer runs a real OpenID Connect provider (zitadel/oidc's op package) on a
// loopback port for tests of symbi as an OAuth resource server. Tokens come from its
// token endpoint through the client_credentials grant, as JWT access tokens signed with
// the provider's own RSA key and published in its JWKS; nothing here signs a token itself.
//
// A few scopes steer what the provider issues, so tests can obtain tokens the resource
// must refuse: "aud:URL" sets the audience (the default is the resource given to Start),
// "test:expired" issues a token that expired ten minutes ago, and "role:NAME" adds the
// claim "role": NAME, and "set:NAME=VALUE" the claim NAME: VALUE. Every requested scope
// is also put in the "scope" claim.
package testissuer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The client_credentials client the provider knows.
const (
	ClientID     = "sid1"
	ClientSecret = "verysecret"
)

// Issuer is a running provider.
type Issuer struct {
	// URL is the issuer identifier (http://127.0.0.1:PORT).
	URL string
	srv *http.Server
	ln  net.Listener
}

// Start serves a provider on a loopback port; its tokens name resource as audience.
func Start(resource string) (*Issuer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	issuer := "http://" + ln.Addr().String()
	st := &store{Storage: storage.NewStorage(storage.NewUserStore(issuer)), resource: resource}
	cfg := &op.Config{
		CryptoKey:      sha256.Sum256([]byte("symbi test issuer")),
		AuthMethodPost: true,
	}
	p, err := op.NewProvider(cfg, st, op.StaticIssuer(issuer), op.WithAllowInsecure())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("start provider: %w", err)
	}
	is := &Issuer{URL: issuer, ln: ln, srv: &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = is.srv.Serve(ln) }()
	return is, nil
}

// Close stops the provider (tests of an unreachable issuer call it early).
func (is *Issuer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return is.srv.Shutdown(ctx)
}

// Token obtains an access token with the client_credentials grant for scopes.
func (is *Issuer) Token(ctx context.Context, scopes ...string) (string, error) {
	var md struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := getJSON(ctx, is.URL+"/.well-known/openid-configuration", &md); err != nil {
		return "", err
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {strings.Join(scopes, " ")}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(ClientID, ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint: %s: %s", resp.Status, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", fmt.Errorf("token endpoint: %w", err)
	}
	if tr.AccessToken == "" || strings.Count(tr.AccessToken, ".") != 2 {
		return "", errors.New("token endpoint: no JWT access token in the answer")
	}
	return tr.AccessToken, nil
}

func getJSON(ctx context.Context, u string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(dst)
}

// store is the example storage of zitadel/oidc with the client_credentials client
// issuing JWT access tokens whose audience, expiry and claims the scopes steer.
type store struct {
	*storage.Storage
	resource string
}

type jwtClient struct{ op.Client }

func (jwtClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

func (s *store) ClientCredentials(ctx context.Context, clientID, clientSecret string) (op.Client, error) {
	c, err := s.Storage.ClientCredentials(ctx, clientID, clientSecret)
	if err != nil {
		return nil, err
	}
	return jwtClient{c}, nil
}

func (s *store) ClientCredentialsTokenRequest(ctx context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	if _, err := s.Storage.ClientCredentialsTokenRequest(ctx, clientID, scopes); err != nil {
		return nil, err
	}
	aud := []string{s.resource}
	for _, sc := range scopes {
		if a, ok := strings.CutPrefix(sc, "aud:"); ok {
			aud = []string{a}
		}
	}
	return &oidc.JWTTokenRequest{Subject: clientID, Audience: aud, Scopes: scopes}, nil
}

func (s *store) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	id, exp, err := s.Storage.CreateAccessToken(ctx, req)
	for _, sc := range req.GetScopes() {
		if sc == "test:expired" {
			exp = time.Now().Add(-10 * time.Minute)
		}
	}
	return id, exp, err
}

func (s *store) GetPrivateClaimsFromScopes(ctx context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	claims, err := s.Storage.GetPrivateClaimsFromScopes(ctx, userID, clientID, scopes)
	if err != nil {
		return nil, err
	}
	if claims == nil {
		claims = map[string]any{}
	}
	if len(scopes) > 0 {
		claims["scope"] = strings.Join(scopes, " ")
	}
	for _, sc := range scopes {
		if r, ok := strings.CutPrefix(sc, "role:"); ok {
			claims["role"] = r
		}
		if kv, ok := strings.CutPrefix(sc, "set:"); ok {
			if k, v, ok := strings.Cut(kv, "="); ok {
				claims[k] = v
			}
		}
	}
	return claims, nil
}
