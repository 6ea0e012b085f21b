package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManifestFile(t *testing.T) {
	good := `[{"schema":{"name":"x"},"signature":"c2ln","signed_at":"2026-01-01T00:00:00Z"}]`
	fail := false
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case fail:
			http.Error(w, "down", http.StatusServiceUnavailable)
		case r.URL.Path == "/big":
			w.Write([]byte(strings.Repeat(" ", maxManifestBytes+10)))
		case r.URL.Path == "/away":
			http.Redirect(w, r, "https://elsewhere.example/m.json", http.StatusFound)
		default:
			w.Write([]byte(good))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	dir := t.TempDir()

	if p, err := manifestFile(ctx, srv.Client(), dir, "up", "/etc/m.json", nil); err != nil || p != "/etc/m.json" {
		t.Errorf("a local path = %q, %v", p, err)
	}
	p, err := manifestFile(ctx, srv.Client(), dir, "up", srv.URL+"/m.json", discardLog())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != good || filepath.Dir(p) != filepath.Join(dir, "schemapin", "manifests") {
		t.Errorf("fetched manifest at %s = %q", p, b)
	}
	for _, tc := range []struct{ name, ref, want string }{
		{"http refused", "http://example.com/m.json", "only https://"},
		{"too big", srv.URL + "/big", "larger than"},
		{"cross-host redirect", srv.URL + "/away", "another host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := manifestFile(ctx, srv.Client(), t.TempDir(), "up", tc.ref, discardLog())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	// The upstream's site is down: the last good copy is used.
	fail = true
	if p2, err := manifestFile(ctx, srv.Client(), dir, "up", srv.URL+"/m.json", discardLog()); err != nil || p2 != p {
		t.Errorf("with the site down = %q, %v; want the cached copy", p2, err)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
