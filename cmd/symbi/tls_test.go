package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/testpki"
)

// writeTestCert writes a fresh self-signed pair and returns its serial number.
func writeTestCert(t *testing.T, certFile, keyFile string) int64 {
	t.Helper()
	c := testpki.SelfSigned(t, testpki.Leaf{CommonName: "t", Server: true})
	testpki.WritePair(t, c, certFile, keyFile)
	return c.Leaf.SerialNumber.Int64()
}

// TestCertificateReload: a reload picks up new files; a broken renewal keeps the
// certificate in use and says which files failed.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if _, err := loadCertificate(cf, kf, ""); err == nil || !strings.Contains(err.Error(), cf) {
		t.Fatalf("missing files: err %v, want one naming %s", err, cf)
	}
	first := writeTestCert(t, cf, kf)
	c, err := loadCertificate(cf, kf, "")
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		t.Helper()
		got, err := c.config().GetConfigForClient(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(got.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.SerialNumber.Int64()
	}
	if got := serial(); got != first {
		t.Fatalf("serial %d, want %d", got, first)
	}
	second := writeTestCert(t, cf, kf)
	if err := c.reload(); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != second {
		t.Fatalf("after reload: serial %d, want %d", got, second)
	}
	if err := os.WriteFile(kf, []byte("truncated"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.reload(); err == nil {
		t.Fatal("a broken key reloaded")
	}
	if got := serial(); got != second {
		t.Fatalf("after a failed reload: serial %d, want the previous %d", got, second)
	}
	if v := c.cur.Load().MinVersion; v < tls.VersionTLS12 {
		t.Errorf("MinVersion %#x, want TLS 1.2 or newer", v)
	}
}

// TestClientCABundle: a client CA bundle turns on verification of client certificates
// (optional, so bearer tokens still work); a file with no certificate is an error that
// names it.
func TestClientCABundle(t *testing.T) {
	dir := t.TempDir()
	cf, kf, ca := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "ca.pem")
	writeTestCert(t, cf, kf)
	if err := os.WriteFile(ca, []byte("no certificate here"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCertificate(cf, kf, ca); err == nil || !strings.Contains(err.Error(), ca) {
		t.Fatalf("empty CA bundle: err %v, want one naming %s", err, ca)
	}
	testpki.NewCA(t, "clients").WritePEM(t, ca)
	c, err := loadCertificate(cf, kf, ca)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.cur.Load(); got.ClientCAs == nil || got.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("ClientAuth %v ClientCAs %v, want optional verified client certificates", got.ClientAuth, got.ClientCAs)
	}
	plain, err := loadCertificate(cf, kf, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.cur.Load(); got.ClientAuth != tls.NoClientCert {
		t.Errorf("without a CA bundle ClientAuth = %v", got.ClientAuth)
	}
}
