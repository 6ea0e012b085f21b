package schemapin

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
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// WellKnownPath is where a domain publishes its discovery document.
const WellKnownPath = "/.well-known/schemapin.json"

// WellKnownOptions tune the online resolver. Nil means defaults.
type WellKnownOptions struct {
	// Client is the HTTP client (tests inject one trusting their own CA). Its redirect
	// policy is replaced: redirects are followed only to HTTPS on the same host. Nil means
	// a client with the default transport.
	Client *http.Client
	// Timeout bounds each fetch (discovery and revocation). 0 means 10s.
	Timeout time.Duration
	// MaxBody bounds each response body. 0 means 64 KiB.
	MaxBody int64
	// Logger receives fetch failures. Nil discards.
	Logger *slog.Logger
}

// WellKnownResolver fetches https://{domain}/.well-known/schemapin.json and, when the
// document names one, its revocation endpoint (which must be HTTPS on the same host).
type WellKnownResolver struct {
	client  *http.Client
	timeout time.Duration
	maxBody int64
	log     *slog.Logger
}

// NewWellKnownResolver returns an online resolver.
func NewWellKnownResolver(opts *WellKnownOptions) *WellKnownResolver {
	var o WellKnownOptions
	if opts != nil {
		o = *opts
	}
	c := &http.Client{}
	if o.Client != nil {
		cp := *o.Client
		c = &cp
	}
	c.CheckRedirect = sameHostRedirects
	r := &WellKnownResolver{client: c, timeout: o.Timeout, maxBody: o.MaxBody, log: o.Logger}
	if r.timeout <= 0 {
		r.timeout = 10 * time.Second
	}
	if r.maxBody <= 0 {
		r.maxBody = maxDocument
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	if req.URL.Scheme != "https" || !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
		return fmt.Errorf("redirect to %s://%s refused: only the same host over HTTPS", req.URL.Scheme, req.URL.Host)
	}
	return nil
}

// WellKnownURL returns the discovery URL of domain ("host" or "host:port"), or an error if
// domain is not a plain host name.
func WellKnownURL(domain string) (string, error) {
	if domain == "" || strings.ContainsAny(domain, "/\\@?#% \t\r\n") {
		return "", fmt.Errorf("discovery domain %q: not a host name", domain)
	}
	u, err := url.Parse("https://" + domain + WellKnownPath)
	if err != nil || u.Host != domain || u.Hostname() == "" {
		return "", fmt.Errorf("discovery domain %q: not a host name", domain)
	}
	return u.String(), nil
}

// Resolve implements Resolver.
func (r *WellKnownResolver) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	u, err := WellKnownURL(domain)
	if err != nil {
		return nil, err
	}
	body, err := r.fetch(ctx, u)
	if err != nil {
		r.log.Warn("schemapin discovery fetch failed", "domain", domain, "error", err)
		return nil, fmt.Errorf("fetch discovery for %s: %w", domain, err)
	}
	doc, err := ParseDiscovery(body)
	if err != nil {
		return nil, fmt.Errorf("fetch discovery for %s: %w", domain, err)
	}
	if doc.RevocationEndpoint != "" {
		// Fail closed: a document that names a revocation list we cannot read is not used.
		ru, err := url.Parse(doc.RevocationEndpoint)
		if err != nil || ru.Scheme != "https" || !strings.EqualFold(ru.Host, domain) {
			return nil, fmt.Errorf("fetch revocation for %s: endpoint %q is not HTTPS on the same host", domain, doc.RevocationEndpoint)
		}
		body, err := r.fetch(ctx, ru.String())
		if err != nil {
			r.log.Warn("schemapin revocation fetch failed", "domain", domain, "error", err)
			return nil, fmt.Errorf("fetch revocation for %s: %w", domain, err)
		}
		rev, err := ParseRevocation(body)
		if err != nil {
			return nil, fmt.Errorf("fetch revocation for %s: %w", domain, err)
		}
		doc.Revocation = rev
	}
	return doc, nil
}

func (r *WellKnownResolver) fetch(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", u, err)
	}
	if int64(len(body)) > r.maxBody {
		return nil, fmt.Errorf("read %s: body larger than %d bytes", u, r.maxBody)
	}
	return body, nil
}

// FileResolver reads discovery documents from the local file system. If Path is a
// directory it reads {domain}.json inside it (the reference LocalFileResolver layout);
// otherwise Path is one discovery document used for every domain (an upstream's
// discovery_file). The file is read on every call; wrap it in a CachedResolver.
type FileResolver struct{ Path string }

// Resolve implements Resolver.
func (f FileResolver) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	p := f.Path
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		if domain == "" || strings.ContainsAny(domain, `/\`) || domain == "." || domain == ".." {
			return nil, fmt.Errorf("resolve %q in %s: %w", domain, f.Path, ErrNoDiscovery)
		}
		p = filepath.Join(p, strings.ToLower(domain)+".json")
	}
	data, err := readBounded(p, maxDocument)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("resolve %s: %w: %v", domain, ErrNoDiscovery, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read discovery file: %w", err)
	}
	doc, err := ParseDiscovery(data)
	if err != nil {
		return nil, fmt.Errorf("read discovery file %s: %w", p, err)
	}
	return doc, nil
}

// readBounded reads a file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return data, nil
}

// CachedResolver remembers what another resolver returned for a while: documents for TTL,
// failures for at most 30s (so an unreachable domain is not asked once per tool), and it
// merges concurrent lookups of the same domain.
type CachedResolver struct {
	next Resolver
	ttl  time.Duration
	now  func() time.Time

	group singleflight.Group
	mu    sync.Mutex
	cache map[string]cacheEntry
}

type cacheEntry struct {
	doc     *Discovery
	err     error
	expires time.Time
}

// NewCachedResolver wraps next. ttl 0 means 5 minutes; now nil means time.Now.
func NewCachedResolver(next Resolver, ttl time.Duration, now func() time.Time) *CachedResolver {
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &CachedResolver{next: next, ttl: ttl, now: now, cache: map[string]cacheEntry{}}
}

// Resolve implements Resolver.
func (c *CachedResolver) Resolve(ctx context.Context, domain string) (*Discovery, error) {
	key := strings.ToLower(domain)
	c.mu.Lock()
	e, ok := c.cache[key]
	c.mu.Unlock()
	if ok && c.now().Before(e.expires) {
		return e.doc, e.err
	}
	v, err, _ := c.group.Do(key, func() (any, error) {
		doc, err := c.next.Resolve(ctx, domain)
		ttl := c.ttl
		if err != nil {
			ttl = min(ttl, 30*time.Second)
			if ctx.Err() != nil {
				return doc, err // our caller gave up: not the domain's fault, do not cache
			}
		}
		c.mu.Lock()
		c.cache[key] = cacheEntry{doc: doc, err: err, expires: c.now().Add(ttl)}
		c.mu.Unlock()
		return doc, err
	})
	doc, _ := v.(*Discovery)
	return doc, err
}

// Forget drops any cached result for domain.
func (c *CachedResolver) Forget(domain string) {
	c.mu.Lock()
	delete(c.cache, strings.ToLower(domain))
	c.mu.Unlock()
}
