package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSetTokens: after SetTokens a removed token is refused, a new one authenticates as
// its identity, a changed identity applies at once, and with no tokens left only
// loopback clients are served (httptest's client is one), as at start-up.
func TestSetTokens(t *testing.T) {
	const oldTok, newTok = "old-token-0123456789abcdef", "new-token-0123456789abcdef"
	g := New(&Options{Tokens: map[string]string{oldTok: "alice"}})
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprint(w, RequestIdentity(r).ID)
	})
	srv := httptest.NewServer(g.Handler(&HTTPOptions{Routes: map[string]http.Handler{"/whoami": whoami}}))
	defer srv.Close()
	get := func(tok string) string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/whoami", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Sprint(resp.StatusCode)
		}
		return string(body)
	}
	for _, tc := range []struct {
		name   string
		tokens map[string]string // nil: leave as they are
		tok    string
		want   string
	}{
		{"old token at start", nil, oldTok, "alice"},
		{"new token unknown at start", nil, newTok, "401"},
		{"swapped: old token refused", map[string]string{newTok: "bob"}, oldTok, "401"},
		{"swapped: new token served", nil, newTok, "bob"},
		{"identity changed", map[string]string{newTok: "carol"}, newTok, "carol"},
		{"no token with tokens set", nil, "", "401"},
		{"none left: loopback served", map[string]string{}, "", "anonymous"},
		{"first token again: required", map[string]string{oldTok: "alice"}, "", "401"},
		{"first token again: served", nil, oldTok, "alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tokens != nil {
				g.SetTokens(tc.tokens)
			}
			if diff := cmp.Diff(tc.want, get(tc.tok)); diff != "" {
				t.Errorf("GET /whoami mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSetTokensConcurrent: swapping tokens while requests are authenticated is race-free
// (run with -race) and every request sees one whole set: the token that is in both sets
// is never refused.
func TestSetTokensConcurrent(t *testing.T) {
	const keep = "kept-token-0123456789abcdef"
	g := New(&Options{Tokens: map[string]string{keep: "alice"}})
	srv := httptest.NewServer(g.Handler(nil))
	defer srv.Close()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // owned: ends at stop
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			g.SetTokens(map[string]string{keep: "alice", fmt.Sprintf("other-%d-0123456789abcdef", i): "bob"})
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := 0; i < 200; i++ {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+keep)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d, want 200", i, resp.StatusCode)
		}
	}
}
