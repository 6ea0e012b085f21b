package gateway

import "maps"

// SetTokens replaces the bearer tokens (token -> identity) that HTTP clients
// authenticate with, as one atomic swap: a request is checked against either the old set
// or the new one, never a mix. Sessions already open keep the identity they were opened
// with; their next request is checked against the new set (a removed token gets 401).
// With no tokens (and no client certificates) only loopback clients are served, as at
// start-up. The map is copied.
func (g *Gateway) SetTokens(tokens map[string]string) {
	m := maps.Clone(tokens)
	if m == nil {
		m = map[string]string{}
	}
	g.tokens.Store(&m)
}

// tokenMap is the current token -> identity map; callers must not modify it.
func (g *Gateway) tokenMap() map[string]string {
	if p := g.tokens.Load(); p != nil {
		return *p
	}
	return nil
}
