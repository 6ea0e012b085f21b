package rag

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// RemoteOptions configures an embedder served over HTTP.
type RemoteOptions struct {
	// Kind is "openai" (an OpenAI-compatible /v1/embeddings endpoint) or "ollama".
	Kind string
	// URL is the endpoint, or the server's base URL (then /v1/embeddings or /api/embed
	// is appended).
	URL    string
	Model  string
	APIKey string // sent as a bearer token when set
	// BatchSize is how many texts go in one request (0: 64).
	BatchSize int
	// Retries is how often a request is repeated after a network error, 429 or 5xx
	// (0: 3; negative: none).
	Retries int
	// Backoff is the first wait before a retry, doubled each time (0: 250ms).
	Backoff time.Duration
	// CacheSize is how many vectors are kept by text (0: 4096; negative: no cache).
	CacheSize int
	Client    *http.Client // nil: a client with a 60s timeout
	Logger    *slog.Logger // nil: discard
}

// Remote is an Embedder that asks an OpenAI-compatible or Ollama server, in batches,
// with retries and an in-memory cache.
type Remote struct {
	o        RemoteOptions
	endpoint string
	log      *slog.Logger

	mu    sync.Mutex
	cache map[[32]byte]*list.Element
	lru   *list.List // of cacheEntry, most recent first
	dims  int
}

type cacheEntry struct {
	key [32]byte
	vec []float32
}

// NewRemote checks opts and returns the embedder; it does not contact the server.
func NewRemote(opts RemoteOptions) (*Remote, error) {
	o := opts
	if o.Kind != "openai" && o.Kind != "ollama" {
		return nil, fmt.Errorf("create embedder: kind %q is not openai or ollama", o.Kind)
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("create embedder: url %q is not an http(s) URL", o.URL)
	}
	if o.Model == "" {
		return nil, errors.New("create embedder: model is empty")
	}
	if strings.Trim(u.Path, "/") == "" {
		if o.Kind == "openai" {
			u.Path = "/v1/embeddings"
		} else {
			u.Path = "/api/embed"
		}
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 64
	}
	if o.Retries == 0 {
		o.Retries = 3
	}
	o.Retries = max(o.Retries, 0)
	if o.Backoff <= 0 {
		o.Backoff = 250 * time.Millisecond
	}
	if o.CacheSize == 0 {
		o.CacheSize = 4096
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 60 * time.Second}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Remote{o: o, endpoint: u.String(), log: log, cache: map[[32]byte]*list.Element{}, lru: list.New()}, nil
}

// Name implements Embedder.
func (r *Remote) Name() string { return r.o.Kind + ":" + r.o.Model }

// Embed implements Embedder.
func (r *Remote) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	var miss []int
	for i, t := range texts {
		if v, ok := r.cached(t); ok {
			out[i] = v
		} else {
			miss = append(miss, i)
		}
	}
	for len(miss) > 0 {
		n := min(len(miss), r.o.BatchSize)
		batch := make([]string, n)
		for j, i := range miss[:n] {
			batch[j] = texts[i]
		}
		vecs, err := r.request(ctx, batch)
		if err != nil {
			return nil, err
		}
		for j, i := range miss[:n] {
			out[i] = vecs[j]
			r.store(texts[i], vecs[j])
		}
		miss = miss[n:]
	}
	return out, nil
}

func (r *Remote) key(text string) [32]byte {
	return sha256.Sum256([]byte(r.Name() + "\x00" + text))
}

func (r *Remote) cached(text string) ([]float32, bool) {
	if r.o.CacheSize < 0 {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[r.key(text)]
	if !ok {
		return nil, false
	}
	r.lru.MoveToFront(e)
	return e.Value.(cacheEntry).vec, true
}

func (r *Remote) store(text string, v []float32) {
	if r.o.CacheSize < 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.key(text)
	if _, ok := r.cache[k]; ok {
		return
	}
	r.cache[k] = r.lru.PushFront(cacheEntry{key: k, vec: v})
	for r.lru.Len() > r.o.CacheSize {
		last := r.lru.Back()
		r.lru.Remove(last)
		delete(r.cache, last.Value.(cacheEntry).key)
	}
}

// retryable is a failure worth repeating the request for.
type retryable struct{ err error }

func (e retryable) Error() string { return e.err.Error() }
func (e retryable) Unwrap() error { return e.err }

// request embeds one batch, retrying transient failures.
func (r *Remote) request(ctx context.Context, batch []string) ([][]float32, error) {
	wait := r.o.Backoff
	for attempt := 0; ; attempt++ {
		vecs, err := r.once(ctx, batch)
		var rt retryable
		if err == nil || !errors.As(err, &rt) || attempt >= r.o.Retries {
			if err != nil {
				return nil, fmt.Errorf("embed texts with %s: %w", r.Name(), err)
			}
			return vecs, nil
		}
		r.log.Warn("embedding request failed, retrying", "embedder", r.Name(), "attempt", attempt+1, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("embed texts with %s: %w", r.Name(), ctx.Err())
		case <-t.C:
		}
		wait *= 2
	}
}

func (r *Remote) once(ctx context.Context, batch []string) ([][]float32, error) {
	body, _ := json.Marshal(map[string]any{"model": r.o.Model, "input": batch})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+r.o.APIKey)
	}
	resp, err := r.o.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, retryable{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, retryable{fmt.Errorf("read response: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("server answered %s: %s", resp.Status, snippet(data))
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return nil, retryable{err}
		}
		return nil, err
	}
	var vecs [][]float64
	if r.o.Kind == "ollama" {
		var res struct {
			Embeddings [][]float64 `json:"embeddings"`
		}
		if err := json.Unmarshal(data, &res); err != nil {
			return nil, fmt.Errorf("decode response: %w", err)
		}
		vecs = res.Embeddings
	} else {
		var res struct {
			Data []struct {
				Index     int       `json:"index"`
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
		}
		if err := json.Unmarshal(data, &res); err != nil {
			return nil, fmt.Errorf("decode response: %w", err)
		}
		vecs = make([][]float64, len(res.Data))
		for _, d := range res.Data {
			if d.Index < 0 || d.Index >= len(vecs) || vecs[d.Index] != nil {
				return nil, fmt.Errorf("decode response: bad or repeated index %d", d.Index)
			}
			vecs[d.Index] = d.Embedding
		}
	}
	if len(vecs) != len(batch) {
		return nil, fmt.Errorf("decode response: %d vectors for %d texts", len(vecs), len(batch))
	}
	out := make([][]float32, len(vecs))
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, v := range vecs {
		if len(v) == 0 {
			return nil, fmt.Errorf("decode response: vector %d is empty", i)
		}
		if r.dims == 0 {
			r.dims = len(v)
		}
		if len(v) != r.dims {
			return nil, fmt.Errorf("decode response: vector %d has %d dimensions, earlier ones %d", i, len(v), r.dims)
		}
		for _, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("decode response: vector %d is not finite", i)
			}
		}
		out[i] = normalize(v)
	}
	return out, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
