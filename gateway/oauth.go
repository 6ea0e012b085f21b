package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/symbi-dev/symbi/internal/oauth"
)

// OAuth access tokens (Options.OAuth): symbi as an OAuth 2.1 resource server. A bearer
// token that is not a configured static token is validated as a JWT from the configured
// issuer; its claims become input.identity.claims (with "auth": "oauth").

// verifiedKey holds, in a request's context, the TokenInfo the authentication check
// already produced, so the SDK's bearer middleware does not validate the token again.
type verifiedKey struct{}

// looksLikeJWT reports whether token has the shape of a compact JWS (three parts).
func looksLikeJWT(token string) bool { return strings.Count(token, ".") == 2 }

// verifyOAuth validates token as an access token from the configured issuer.
func (g *Gateway) verifyOAuth(ctx context.Context, token string) (*auth.TokenInfo, error) {
	tok, err := g.opts.OAuth.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	claims := make(map[string]any, len(tok.Claims)+1)
	for k, v := range tok.Claims {
		claims[k] = v
	}
	// symbi's own marker, as for static tokens and certificates: a token cannot pass
	// itself off as another kind of credential.
	claims["auth"] = "oauth"
	return &auth.TokenInfo{UserID: tok.Identity, Scopes: tok.Scopes,
		// The SDK's middleware checks Expiration again; allow the same leeway.
		Expiration: tok.Expiry.Add(g.opts.OAuth.Config().Leeway),
		Extra:      map[string]any{claimsKey: claims}}, nil
}

// challenge is the WWW-Authenticate value of a 401 or 403: realm "symbi", the RFC 6750
// error code if a credential was refused, and with OAuth configured the Protected
// Resource Metadata URL (RFC 9728 section 5.1) and the scopes required.
func (g *Gateway) challenge(errCode string) string {
	c := `Bearer realm="symbi"`
	if errCode != "" {
		c += fmt.Sprintf(`, error=%q`, errCode)
	}
	if v := g.opts.OAuth; v != nil {
		cfg := v.Config()
		c += fmt.Sprintf(`, resource_metadata=%q`, oauth.MetadataURL(cfg.Resource))
		if len(cfg.RequiredScopes) > 0 {
			c += fmt.Sprintf(`, scope=%q`, strings.Join(cfg.RequiredScopes, " "))
		}
	}
	return c
}

// refuse answers a request whose credential failed verification: 503 when the token
// could not be checked (the issuer is unavailable: never accepted), 403 for a valid
// token without a required scope, else 401.
func (g *Gateway) refuse(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, oauth.ErrUnavailable):
		g.log.Warn("oauth: cannot check an access token", "err", err)
		w.Header().Set("Retry-After", "10")
		http.Error(w, "symbi: cannot check the access token: the token issuer is unavailable", http.StatusServiceUnavailable)
	case errors.Is(err, oauth.ErrInsufficientScope):
		w.Header().Set("WWW-Authenticate", g.challenge("insufficient_scope"))
		http.Error(w, err.Error(), http.StatusForbidden)
	case errors.Is(err, oauth.ErrInvalid):
		g.unauthorized(w, "invalid_token", "invalid bearer token: "+strings.TrimPrefix(err.Error(), oauth.ErrInvalid.Error()+": "))
	default:
		g.unauthorized(w, "invalid_token", "invalid bearer token")
	}
}

// OAuthRoutes are the unauthenticated routes that describe symbi as a protected
// resource: its metadata document at each of oauth.MetadataPaths. None without OAuth.
func (g *Gateway) OAuthRoutes() map[string]http.Handler {
	v := g.opts.OAuth
	if v == nil {
		return nil
	}
	h := v.MetadataHandler()
	out := map[string]http.Handler{}
	for _, p := range oauth.MetadataPaths(v.Config().Resource) {
		out[p] = h
	}
	return out
}
