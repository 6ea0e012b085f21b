package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxManifestBytes bounds a fetched SchemaPin manifest.
const maxManifestBytes = 1 << 20

// manifestFile returns a local file holding the upstream's signed manifest. A path is
// used as it is; an https:// URL is fetched (bounded in size and time, no redirect to
// another host) into DATA_DIR/schemapin/manifests/NAME.json, and the last good copy is
// kept when a later fetch fails.
func manifestFile(ctx context.Context, client *http.Client, dataDir, upstream, ref string, log *slog.Logger) (string, error) {
	if !strings.Contains(ref, "://") {
		return ref, nil
	}
	u, err := url.Parse(ref)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("upstream %s: schemapin manifest %q: only https:// URLs or local files", upstream, ref)
	}
	dir := filepath.Join(dataDir, "schemapin", "manifests")
	path := filepath.Join(dir, upstream+".json")
	body, err := fetchManifest(ctx, client, u)
	if err == nil {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			// A temporary file of its own: another symbi on the same data_dir may be
			// fetching the same manifest.
			var f *os.File
			if f, err = os.CreateTemp(dir, "."+upstream+".json.tmp*"); err == nil {
				_, err = f.Write(body)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err == nil {
					err = os.Rename(f.Name(), path)
				}
				if err != nil {
					os.Remove(f.Name())
				}
			}
		}
	}
	if err != nil {
		if _, serr := os.Stat(path); serr == nil {
			log.Warn("fetch schemapin manifest failed; using the last good copy", "upstream", upstream, "url", ref, "err", err)
			return path, nil
		}
		return "", fmt.Errorf("upstream %s: fetch schemapin manifest: %w", upstream, err)
	}
	return path, nil
}

func fetchManifest(ctx context.Context, client *http.Client, u *url.URL) ([]byte, error) {
	c := *client
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" || req.URL.Host != u.Host {
			return errors.New("redirect to another host refused")
		}
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", u, err)
	}
	if len(body) > maxManifestBytes {
		return nil, fmt.Errorf("GET %s: manifest larger than %d bytes", u, maxManifestBytes)
	}
	return body, nil
}
