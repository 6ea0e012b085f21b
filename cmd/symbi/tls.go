package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// certificate serves the TLS certificate of `symbi serve` (and, for mutual TLS, the CAs
// that client certificates must chain to) and reloads them from their files on SIGHUP,
// so a renewed certificate or CA bundle is used for new connections without a restart.
type certificate struct {
	certFile, keyFile, clientCAFile string
	cur                             atomic.Pointer[tls.Config]
}

// loadCertificate reads the PEM certificate chain and private key, and the client CA
// bundle when clientCAFile is not ""; an error names the file that is wrong.
func loadCertificate(certFile, keyFile, clientCAFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile, clientCAFile: clientCAFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files again; on an error the configuration in use stays.
func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s with key %s: %w", c.certFile, c.keyFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if c.clientCAFile != "" {
		pem, err := os.ReadFile(c.clientCAFile)
		if err != nil {
			return fmt.Errorf("read client CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("read client CA bundle %s: no PEM certificate in it", c.clientCAFile)
		}
		// A client may still come with a bearer token instead; one that presents a
		// certificate must present a valid one.
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	c.cur.Store(cfg)
	return nil
}

// config is the server's TLS configuration: TLS 1.2 or newer, the current certificate
// and client CAs.
func (c *certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return c.cur.Load(), nil
		},
	}
}
