package schemapin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func testDiscoveryJSON(t *testing.T, extra string) (string, string) {
	t.Helper()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := NewDiscovery(&priv.PublicKey, "Test Dev", "sec@example.com")
	if err != nil {
		t.Fatal(err)
	}
	b, err := doc.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if extra != "" {
		s = strings.Replace(s, "{", "{"+extra+",", 1)
	}
	fp, _ := Fingerprint(&priv.PublicKey)
	return s, fp
}

func TestWellKnownResolver(t *testing.T) {
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request reached the other host: %s", r.URL)
	}))
	defer other.Close()

	var routes map[string]http.HandlerFunc
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := routes[r.URL.Path]; h != nil {
			h(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	serve := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }
	}
	docJSON, fp := testDiscoveryJSON(t, "")
	revURL := srv.URL + "/rev.json"
	docWithRev, _ := testDiscoveryJSON(t, `"revocation_endpoint":"`+revURL+`"`)
	docWithForeignRev, _ := testDiscoveryJSON(t, `"revocation_endpoint":"`+other.URL+`/rev.json"`)
	docWithHTTPRev, _ := testDiscoveryJSON(t, `"revocation_endpoint":"http://`+host+`/rev.json"`)
	revJSON := `{"schema_version":"1.2","domain":"x","revoked_keys":[{"fingerprint":"` + fp + `","reason":"key_compromise"}]}`

	for _, tc := range []struct {
		name    string
		domain  string
		routes  map[string]http.HandlerFunc
		wantErr string
		check   func(t *testing.T, d *Discovery)
	}{
		{name: "served", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: serve(docJSON)},
			check: func(t *testing.T, d *Discovery) {
				if d.DeveloperName != "Test Dev" {
					t.Errorf("developer %q", d.DeveloperName)
				}
			}},
		{name: "revocation fetched", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: serve(docWithRev), "/rev.json": serve(revJSON)},
			check: func(t *testing.T, d *Discovery) {
				if ok, reason := d.Revoked(fp); !ok || !strings.Contains(reason, "key_compromise") {
					t.Errorf("Revoked = %v %q", ok, reason)
				}
			}},
		{name: "revocation unavailable fails closed", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: serve(docWithRev)}, wantErr: "status 404"},
		{name: "revocation on another host refused", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: serve(docWithForeignRev)}, wantErr: "same host"},
		{name: "revocation over http refused", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: serve(docWithHTTPRev)}, wantErr: "same host"},
		{name: "not found", domain: host, routes: nil, wantErr: "status 404"},
		{name: "body too large", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: serve(`{"x":"` + strings.Repeat("a", 70<<10) + `"}`)}, wantErr: "larger than"},
		{name: "not json", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: serve(`<html>`)}, wantErr: "parse discovery"},
		{name: "same-host redirect followed", domain: host, routes: map[string]http.HandlerFunc{
			WellKnownPath: func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/moved.json", http.StatusFound) },
			"/moved.json": serve(docJSON)}},
		{name: "cross-host redirect refused", domain: host, routes: map[string]http.HandlerFunc{
			WellKnownPath: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, other.URL+WellKnownPath, http.StatusFound)
			}}, wantErr: "redirect"},
		{name: "path in domain refused", domain: host + "/evil", wantErr: "not a host name"},
		{name: "userinfo in domain refused", domain: "user@" + host, wantErr: "not a host name"},
		{name: "slow server times out", domain: host, routes: map[string]http.HandlerFunc{WellKnownPath: func(w http.ResponseWriter, r *http.Request) {
			// Answer only well after the client's deadline (not when the client goes away,
			// which would race an empty 200 against the deadline on a loaded machine).
			time.Sleep(time.Second)
		}}, wantErr: "deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			routes = tc.routes
			r := NewWellKnownResolver(&WellKnownOptions{Client: srv.Client(), Timeout: 300 * time.Millisecond})
			d, err := r.Resolve(t.Context(), tc.domain)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

func TestWellKnownResolverRejectsUntrustedCert(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	r := NewWellKnownResolver(&WellKnownOptions{Timeout: time.Second}) // default roots: no test CA
	if _, err := r.Resolve(t.Context(), strings.TrimPrefix(srv.URL, "https://")); err == nil {
		t.Fatal("self-signed server accepted without its CA")
	}
}

func TestFileResolver(t *testing.T) {
	dir := t.TempDir()
	docJSON, _ := testDiscoveryJSON(t, "")
	if err := os.WriteFile(filepath.Join(dir, "tools.example.com.json"), []byte(docJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	single := filepath.Join(dir, "tools.example.com.json")
	for _, tc := range []struct {
		name, path, domain string
		wantNone, wantErr  bool
	}{
		{name: "directory by domain", path: dir, domain: "Tools.Example.com"},
		{name: "directory unknown domain", path: dir, domain: "other.example", wantNone: true},
		{name: "directory traversal refused", path: dir, domain: "../x", wantNone: true},
		{name: "single file any domain", path: single, domain: "whatever"},
		{name: "missing file", path: filepath.Join(dir, "nope.json"), domain: "x", wantNone: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := FileResolver{Path: tc.path}.Resolve(t.Context(), tc.domain)
			switch {
			case tc.wantNone:
				if !errors.Is(err, ErrNoDiscovery) {
					t.Fatalf("err = %v, want ErrNoDiscovery", err)
				}
			case err != nil:
				t.Fatal(err)
			case d.DeveloperName != "Test Dev":
				t.Errorf("developer %q", d.DeveloperName)
			}
		})
	}
}

type countingResolver struct {
	n   atomic.Int32
	doc *Discovery
	err error
}

func (c *countingResolver) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	c.n.Add(1)
	return c.doc, c.err
}

func TestCachedResolver(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	next := &countingResolver{doc: &Discovery{DeveloperName: "a"}}
	c := NewCachedResolver(next, time.Minute, clock)
	for range 3 {
		if _, err := c.Resolve(t.Context(), "d"); err != nil {
			t.Fatal(err)
		}
	}
	if got := next.n.Load(); got != 1 {
		t.Errorf("lookups within TTL = %d, want 1", got)
	}
	now = now.Add(2 * time.Minute)
	c.Resolve(t.Context(), "d")
	if got := next.n.Load(); got != 2 {
		t.Errorf("lookups after TTL = %d, want 2", got)
	}

	failing := &countingResolver{err: errors.New("down")}
	c = NewCachedResolver(failing, time.Hour, clock)
	c.Resolve(t.Context(), "d")
	c.Resolve(t.Context(), "d")
	if got := failing.n.Load(); got != 1 {
		t.Errorf("failed lookups within 30s = %d, want 1", got)
	}
	now = now.Add(31 * time.Second)
	if _, err := c.Resolve(t.Context(), "d"); err == nil {
		t.Error("cached failure lost")
	}
	if got := failing.n.Load(); got != 2 {
		t.Errorf("failed lookups after 30s = %d, want 2", got)
	}
}

func TestWellKnownHandlerRoundTrip(t *testing.T) {
	k := newTestKey(t)
	mux := http.NewServeMux()
	mux.Handle(WellKnownPath, WellKnownHandler(k.doc))
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	r := NewWellKnownResolver(&WellKnownOptions{Client: srv.Client()})
	d, err := r.Resolve(t.Context(), strings.TrimPrefix(srv.URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := d.PublicKey()
	if err != nil || !pub.Equal(&k.priv.PublicKey) {
		t.Fatalf("served key differs: %v", err)
	}
}
