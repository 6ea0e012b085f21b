package test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAuditHTTPCollector: with [audit] http set, every event also reaches an HTTP
// collector, as NDJSON lines identical to the trail's records, with the configured
// (env:) headers.
func TestAuditHTTPCollector(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []string
		auth  []string
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-ndjson") {
			http.Error(w, "want a POST of NDJSON", http.StatusBadRequest)
			return
		}
		sc := bufio.NewScanner(r.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		mu.Lock()
		defer mu.Unlock()
		auth = append(auth, r.Header.Get("Authorization"))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()

	t.Setenv("SYMBI_TEST_SIEM", "Splunk siem-token-0123")
	cfg := writeConfig(t, fmt.Sprintf("[audit]\nhttp = %q\nhttp_headers = { Authorization = \"env:SYMBI_TEST_SIEM\" }\n", collector.URL+"/ingest"))
	cs := connect(t, stdioTransport(t, cfg), nil)
	callText(t, cs, "symbi__status", map[string]any{})

	waitFor(t, 15*time.Second, "the call's event at the collector", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, "symbi__status") {
				return true
			}
		}
		return false
	})
	mu.Lock()
	got, gotAuth := append([]string(nil), lines...), append([]string(nil), auth...)
	mu.Unlock()
	for _, a := range gotAuth {
		if a != "Splunk siem-token-0123" {
			t.Errorf("collector got Authorization %q", a)
		}
	}
	// Every line the collector got is a record of the file trail, byte for byte.
	trail := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(dataDirOf(cfg), "audit", "*.jsonl"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			trail[l] = true
		}
	}
	for _, l := range got {
		if !trail[l] {
			t.Errorf("collector line is not in the trail: %.200s", l)
		}
	}
	if len(got) < 2 {
		t.Errorf("collector got %d records, want the genesis, config and call at least", len(got))
	}
}
