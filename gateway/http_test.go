package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestOperatorEndpointsExposure: /healthz is open; /metrics and the detail of /readyz go
// only to clients that /mcp would serve (a valid bearer token when tokens are set);
// everyone else gets /readyz's bare verdict and no metrics.
func TestOperatorEndpointsExposure(t *testing.T) {
	const token = "operator-token-0123456789"
	g := New(&Options{Tokens: map[string]string{token: "ops"}})
	srv := httptest.NewServer(g.Handler(nil))
	defer srv.Close()

	get := func(t *testing.T, path, auth string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	for _, tc := range []struct {
		name, path, auth string
		wantCode         int
		wantDetail       bool // /readyz: the body has more than "ready"
		wantIn           string
	}{
		{"healthz open", "/healthz", "", 200, false, "ok"},
		{"readyz anonymous verdict only", "/readyz", "", 200, false, `"ready":true`},
		{"readyz wrong token verdict only", "/readyz", "Bearer not-the-token-0000000", 200, false, `"ready":true`},
		{"readyz with token has detail", "/readyz", "Bearer " + token, 200, true, `"upstreams"`},
		{"readyz bearer scheme is case-insensitive", "/readyz", "bearer " + token, 200, true, `"upstreams"`},
		{"metrics anonymous refused", "/metrics", "", http.StatusUnauthorized, false, ""},
		{"metrics wrong token refused", "/metrics", "Bearer not-the-token-0000000", http.StatusUnauthorized, false, ""},
		{"metrics with token", "/metrics", "Bearer " + token, 200, false, "symbi_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, tc.path, tc.auth)
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d (body %q)", code, tc.wantCode, body)
			}
			if tc.wantIn != "" && !strings.Contains(body, tc.wantIn) {
				t.Errorf("body lacks %q: %.300s", tc.wantIn, body)
			}
			if tc.path == "/readyz" {
				var m map[string]any
				if err := json.Unmarshal([]byte(body), &m); err != nil {
					t.Fatalf("readyz body: %v", err)
				}
				if got := len(m) > 1; got != tc.wantDetail {
					t.Errorf("detail shown = %v, want %v: %s", got, tc.wantDetail, body)
				}
			}
		})
	}
}

// TestOperatorEndpointsNoTokens: with no tokens only loopback clients are trusted, and
// httptest's client is one, so it sees everything.
func TestOperatorEndpointsNoTokens(t *testing.T) {
	g := New(nil)
	srv := httptest.NewServer(g.Handler(nil))
	defer srv.Close()
	for _, path := range []string{"/metrics", "/readyz"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d", path, resp.StatusCode)
		}
		if path == "/readyz" && !strings.Contains(string(body), `"upstreams"`) {
			t.Errorf("loopback /readyz lacks detail: %s", body)
		}
	}
}

// testPKI is a CA, a server certificate for 127.0.0.1 and client certificates it signed.
type testPKI struct {
	caPool *x509.CertPool
	server tls.Certificate
	issue  func(cn string, uri string) tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	serial := int64(2)
	leaf := func(tmpl *x509.Certificate) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	p := &testPKI{caPool: pool}
	p.server = leaf(&x509.Certificate{Subject: pkix.Name{CommonName: "symbi"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.issue = func(cn, uri string) tls.Certificate {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if uri != "" {
			u, err := url.Parse(uri)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = []*url.URL{u}
		}
		return leaf(tmpl)
	}
	return p
}

// TestClientCertificateIdentity: with ClientCerts, a verified client certificate
// authenticates a request as its URI SAN or common name; a bearer token still names its
// own identity; no certificate and no token is refused, loopback or not; a certificate
// from another CA does not get past the handshake.
func TestClientCertificateIdentity(t *testing.T) {
	pki := newTestPKI(t)
	const token = "operator-token-0123456789"
	g := New(&Options{Tokens: map[string]string{token: "ops"}, ClientCerts: true})
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := RequestIdentity(r)
		_, _ = fmt.Fprintf(w, "%s %v %v", id.ID, id.Claims["auth"], id.Claims["issuer"])
	})
	srv := httptest.NewUnstartedServer(g.Handler(&HTTPOptions{Routes: map[string]http.Handler{"/whoami": whoami}}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.caPool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	defer srv.Close()

	other := newTestPKI(t) // a CA the server does not trust
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.caPool, Certificates: certs}}}
	}
	for _, tc := range []struct {
		name     string
		client   *http.Client
		path     string
		auth     string
		wantCode int
		wantBody string
	}{
		{"certificate common name", client(pki.issue("agent-7", "")), "/whoami", "", 200, "agent-7 certificate CN=test CA"},
		{"certificate URI SAN first", client(pki.issue("agent-8", "spiffe://example.org/agent/8")), "/whoami", "", 200, "spiffe://example.org/agent/8"},
		{"token wins over certificate", client(pki.issue("agent-7", "")), "/whoami", "Bearer " + token, 200, "ops token"},
		{"token without certificate", client(), "/whoami", "Bearer " + token, 200, "ops token"},
		{"the stand-in token alone is nothing", client(), "/whoami", "Bearer " + certBearer, http.StatusUnauthorized, ""},
		{"neither, even on loopback", client(), "/whoami", "", http.StatusUnauthorized, ""},
		{"certificate sees metrics", client(pki.issue("agent-7", "")), "/metrics", "", 200, "symbi_"},
		{"certificate sees readyz detail", client(pki.issue("agent-7", "")), "/readyz", "", 200, `"upstreams"`},
		{"no certificate: bare readyz", client(), "/readyz", "", 200, `{"ready":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("status %d body %.200q, want %d with %q", resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
		})
	}
	if _, err := client(other.issue("mallory", "")).Get(srv.URL + "/whoami"); err == nil {
		t.Error("a certificate from an untrusted CA got through the handshake")
	}
}
