package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/internal/oauth"
)

// oauthVerifier builds the access token verifier of [oauth]; nil when it is off.
func oauthVerifier(cfg *config.Config, log *slog.Logger) (*oauth.Verifier, error) {
	o := cfg.OAuth
	if !o.Enabled() {
		return nil, nil
	}
	v, err := oauth.New(oauth.Config{
		Issuer: o.Issuer, Resource: o.Resource, JWKSURI: o.JWKSURI, RequiredScopes: o.RequiredScopes,
		IdentityClaim: o.IdentityClaim, Leeway: o.Leeway.Duration, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("[oauth]: %w", err)
	}
	return v, nil
}

// checkOAuthIssuer is doctor's check of [oauth]: the issuer's metadata and signing keys
// can be fetched now. detail says what was found or why it is off.
func checkOAuthIssuer(ctx context.Context, cfg *config.Config) (detail string, err error) {
	v, err := oauthVerifier(cfg, nil)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	n, err := v.Check(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w (no access token will be accepted while it is unreachable)", cfg.OAuth.Issuer, err)
	}
	return fmt.Sprintf("%s reachable, %d signing key(s); resource %s", cfg.OAuth.Issuer, n, cfg.OAuth.Resource), nil
}
