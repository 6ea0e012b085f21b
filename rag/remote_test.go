package rag

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeEmbedServer stands in for a remote embedding host: it embeds each text as
// [len(text), 1] and can be told to fail the first requests with a status.
type fakeEmbedServer struct {
	mu       sync.Mutex
	requests [][]string // inputs per request
	fail     []int      // statuses to answer, in order, before succeeding
	auth     []string
	dims     int
}

func (f *fakeEmbedServer) handler(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		want := "/v1/embeddings"
		if kind == "ollama" {
			want = "/api/embed"
		}
		if r.URL.Path != want || r.Method != http.MethodPost {
			http.Error(w, "wrong endpoint "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		var in struct {
			Model string   `json:"model"`
			Input []string `json:"input"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Model != "m1" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, in.Input)
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		if len(f.fail) > 0 {
			st := f.fail[0]
			f.fail = f.fail[1:]
			f.mu.Unlock()
			http.Error(w, "try later", st)
			return
		}
		dims := f.dims
		f.mu.Unlock()
		vecs := make([][]float64, len(in.Input))
		for i, t := range in.Input {
			vecs[i] = make([]float64, max(dims, 2))
			vecs[i][0], vecs[i][1] = float64(len(t)), 1
		}
		if kind == "ollama" {
			_ = json.NewEncoder(w).Encode(map[string]any{"embeddings": vecs})
			return
		}
		type item struct {
			Index     int       `json:"index"`
			Embedding []float64 `json:"embedding"`
		}
		var data []item
		for i := len(vecs) - 1; i >= 0; i-- { // out of order: the client must sort by index
			data = append(data, item{i, vecs[i]})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"data": data})
	}
}

func TestRemote(t *testing.T) {
	for _, kind := range []string{"openai", "ollama"} {
		t.Run(kind, func(t *testing.T) {
			f := &fakeEmbedServer{fail: []int{503, 429}}
			srv := httptest.NewServer(f.handler(kind))
			defer srv.Close()
			e, err := NewRemote(RemoteOptions{Kind: kind, URL: srv.URL, Model: "m1", APIKey: "k", BatchSize: 2, Backoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			texts := []string{"a", "bbb", "cc", "a"}
			got, err := e.Embed(context.Background(), texts)
			if err != nil {
				t.Fatal(err)
			}
			for i, tx := range texts {
				want := normalize([]float64{float64(len(tx)), 1})
				if diff := cmp.Diff(want, got[i]); diff != "" {
					t.Errorf("vector %d (%q) mismatch (-want +got):\n%s", i, tx, diff)
				}
			}
			// Two failures retried, then batches of two; the repeated "a" is asked again
			// within the first call (the cache fills after each batch).
			wantReqs := [][]string{{"a", "bbb"}, {"a", "bbb"}, {"a", "bbb"}, {"cc", "a"}}
			if diff := cmp.Diff(wantReqs, f.requests); diff != "" {
				t.Errorf("requests mismatch (-want +got):\n%s", diff)
			}
			if f.auth[0] != "Bearer k" {
				t.Errorf("Authorization = %q", f.auth[0])
			}
			if _, err := e.Embed(context.Background(), []string{"bbb", "cc"}); err != nil {
				t.Fatal(err)
			}
			if len(f.requests) != len(wantReqs) {
				t.Errorf("cached texts were requested again: %v", f.requests[len(wantReqs):])
			}
		})
	}
}

func TestRemoteErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    []int
		retries int
		dims    int
		want    string
		reqs    int
	}{
		{"client error not retried", []int{400}, 3, 0, "400 Bad Request", 1},
		{"retries exhausted", []int{500, 500, 500}, 2, 0, "500 Internal Server Error", 3},
		{"no retries", []int{503}, -1, 0, "503", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeEmbedServer{fail: tc.fail, dims: tc.dims}
			srv := httptest.NewServer(f.handler("openai"))
			defer srv.Close()
			e, err := NewRemote(RemoteOptions{Kind: "openai", URL: srv.URL + "/v1/embeddings", Model: "m1", Retries: tc.retries, Backoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Embed(context.Background(), []string{"x"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Embed error = %v, want one containing %q", err, tc.want)
			}
			if len(f.requests) != tc.reqs {
				t.Errorf("%d requests, want %d", len(f.requests), tc.reqs)
			}
		})
	}
}

func TestRemoteDimensionChange(t *testing.T) {
	f := &fakeEmbedServer{dims: 3}
	srv := httptest.NewServer(f.handler("ollama"))
	defer srv.Close()
	e, err := NewRemote(RemoteOptions{Kind: "ollama", URL: srv.URL, Model: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Embed(context.Background(), []string{"x"}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.dims = 4
	f.mu.Unlock()
	if _, err := e.Embed(context.Background(), []string{"y"}); err == nil || !strings.Contains(err.Error(), "4 dimensions, earlier ones 3") {
		t.Fatalf("Embed after a dimension change: err = %v", err)
	}
}

func TestNewRemoteInvalid(t *testing.T) {
	for _, o := range []RemoteOptions{
		{Kind: "cohere", URL: "http://x", Model: "m"},
		{Kind: "openai", URL: "ftp://x", Model: "m"},
		{Kind: "openai", URL: "http://x"},
	} {
		if _, err := NewRemote(o); err == nil {
			t.Errorf("NewRemote(%+v) accepted", o)
		}
	}
}
