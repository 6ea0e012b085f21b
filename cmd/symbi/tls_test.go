package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTestCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCertificateReload: a reload picks up new files; a broken renewal keeps the
// certificate in use and says which files failed.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if _, err := loadCertificate(cf, kf, ""); err == nil || !strings.Contains(err.Error(), cf) {
		t.Fatalf("missing files: err %v, want one naming %s", err, cf)
	}
	writeTestCert(t, cf, kf, 1)
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
	if got := serial(); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	writeTestCert(t, cf, kf, 2)
	if err := c.reload(); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != 2 {
		t.Fatalf("after reload: serial %d, want 2", got)
	}
	if err := os.WriteFile(kf, []byte("truncated"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.reload(); err == nil {
		t.Fatal("a broken key reloaded")
	}
	if got := serial(); got != 2 {
		t.Fatalf("after a failed reload: serial %d, want the previous 2", got)
	}
	if v := c.cur.Load().MinVersion; v < 0x0303 {
		t.Errorf("MinVersion %#x, want TLS 1.2 or newer", v)
	}
}

// TestClientCABundle: a client CA bundle turns on verification of client certificates
// (optional, so bearer tokens still work); a file with no certificate is an error that
// names it.
func TestClientCABundle(t *testing.T) {
	dir := t.TempDir()
	cf, kf, ca := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "ca.pem")
	writeTestCert(t, cf, kf, 1)
	if err := os.WriteFile(ca, []byte("no certificate here"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCertificate(cf, kf, ca); err == nil || !strings.Contains(err.Error(), ca) {
		t.Fatalf("empty CA bundle: err %v, want one naming %s", err, ca)
	}
	pem, err := os.ReadFile(cf) // any certificate will do as a CA for this check
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pem, 0o600); err != nil {
		t.Fatal(err)
	}
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
