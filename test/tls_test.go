package test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/symbi-dev/symbi/internal/testpki"
)

// TestServeTLS: with server.tls_cert and tls_key, symbi serve speaks HTTPS: an MCP client
// that trusts the certificate calls tools over it, plain HTTP is refused, and SIGHUP
// picks up a renewed certificate for new connections.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	firstPair := testpki.SelfSigned(t, testpki.Leaf{CommonName: "symbi test", Server: true})
	testpki.WritePair(t, firstPair, certFile, keyFile)
	first := firstPair.Leaf
	t.Setenv("SYMBI_TEST_TOKEN", "tls-token-0123456789abcd")
	cfg := writeConfig(t, "[[server.tokens]]\ntoken = \"env:SYMBI_TEST_TOKEN\"\nidentity = \"ide\"\n")
	addServerKeys(t, cfg, fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", certFile, keyFile))

	pool := x509.NewCertPool()
	pool.AddCert(first)
	trusting := func(pool *x509.CertPool) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	}
	s := serveWith(t, trusting(pool), cfg)
	if s.scheme != "https" {
		t.Fatalf("symbi serve announced %s, want https", s.scheme)
	}

	// An MCP client over HTTPS, authenticated.
	hc := trusting(pool)
	hc.Transport = bearer{token: "tls-token-0123456789abcd", next: hc.Transport}
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "https://" + s.addr + "/mcp", HTTPClient: hc}, nil)
	if text, isErr := callText(t, cs, "symbi__status", map[string]any{}); isErr || !strings.Contains(text, "symbi") {
		t.Fatalf("symbi__status over HTTPS = %q (error %v)", text, isErr)
	}

	// Plain HTTP on the TLS port gets no MCP answer.
	if resp, err := http.Get("http://" + s.addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the TLS listener answered 200")
		}
	}

	// A renewed certificate, picked up on SIGHUP.
	secondPair := testpki.SelfSigned(t, testpki.Leaf{CommonName: "symbi test", Server: true})
	testpki.WritePair(t, secondPair, certFile, keyFile)
	second := secondPair.Leaf
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the renewed certificate", func() bool {
		// Only the served certificate is inspected here, not trusted.
		conn, err := tls.Dial("tcp", s.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return false
		}
		defer conn.Close()
		certs := conn.ConnectionState().PeerCertificates
		return len(certs) > 0 && certs[0].SerialNumber.Cmp(second.SerialNumber) == 0
	})
	pool2 := x509.NewCertPool()
	pool2.AddCert(second)
	resp, err := trusting(pool2).Get("https://" + s.addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz with the renewed certificate: %v", err)
	}
	resp.Body.Close()
}

// TestServeTLSBadCertificate: a certificate that does not load stops symbi serve at
// start with exit 2 and a message naming the file.
func TestServeTLSBadCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, "")
	addServerKeys(t, cfg, fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", certFile, keyFile))
	out, stderr, code := runCLI(t, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, "server.tls_cert") || !strings.Contains(stderr, certFile) {
		t.Errorf("serve with a bad certificate: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// addServerKeys adds keys to the [server] table of a configuration from writeConfig.
func addServerKeys(t *testing.T, cfg, keys string) {
	t.Helper()
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "[server]\n", "[server]\n"+keys, 1)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServeMutualTLS: with server.tls_client_ca, an MCP client authenticates with its
// certificate alone; the audit trail and the policy see the certificate's common name
// as the identity; a client with neither certificate nor token is refused.
func TestServeMutualTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca := testpki.NewCA(t, "symbi test CA")
	ca.WritePEM(t, caFile)
	testpki.WritePair(t, ca.Issue(t, testpki.Leaf{CommonName: "symbi", Server: true}), certFile, keyFile)
	// Tools only for clients that came with a certificate from this CA: the certificate
	// reaches the policy as input.identity.claims.
	pol := t.TempDir()
	rego := `package symbi.authz

default decision := {"allow": false, "reason": "tools need a client certificate"}

decision := {"allow": true} if not input.tool

decision := {"allow": true} if {
	input.identity.claims.auth == "certificate"
	input.identity.claims.issuer == "CN=symbi test CA"
}
`
	if err := os.WriteFile(filepath.Join(pol, "authz.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf("[policy]\ndir = %q\n", pol))
	addServerKeys(t, cfg, fmt.Sprintf("tls_cert = %q\ntls_key = %q\ntls_client_ca = %q\n", certFile, keyFile, caFile))

	roots := ca.Pool()
	agent := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots,
		Certificates: []tls.Certificate{ca.Issue(t, testpki.Leaf{CommonName: "agent-7"})}}}}
	s := serveWith(t, agent, cfg)

	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "https://" + s.addr + "/mcp", HTTPClient: agent}, nil)
	if text, isErr := callText(t, cs, "symbi__status", map[string]any{}); isErr {
		t.Fatalf("symbi__status with a client certificate: %s", text)
	}
	// symbi__audit_recent shows the caller's own events: the call above, under the
	// certificate's name.
	waitFor(t, 10*time.Second, "the call in the caller's audit events", func() bool {
		text, isErr := callText(t, cs, "symbi__audit_recent", map[string]any{})
		return !isErr && strings.Contains(text, "symbi__status") && strings.Contains(text, `"agent-7"`)
	})

	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := anonymous.Post("https://"+s.addr+"/mcp", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no certificate, no token: status %d, want 401", resp.StatusCode)
	}
}
