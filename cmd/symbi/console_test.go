package main

import (
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/config"
)

func TestConsoleDoctor(t *testing.T) {
	for _, tc := range []struct {
		name       string
		server     config.Server
		want       []string
		wantWarn   bool
		notInclude string
	}{
		{"loopback, no tokens", config.Server{Listen: "127.0.0.1:8080"},
			[]string{"http://127.0.0.1:8080/ui/", "local browsers only"}, false, "sign in with"},
		{"tokens on all interfaces over plain HTTP", config.Server{Listen: "0.0.0.0:8080", Tokens: []config.Token{{Token: "t", Identity: "a"}}},
			[]string{"http://127.0.0.1:8080/ui/", "sign in with a [[server.tokens]] token"}, true, "local browsers"},
		{"TLS with client certificates", config.Server{Listen: "10.0.0.1:8443", TLSCert: "c.pem", TLSKey: "k.pem", TLSClientCA: "ca.pem"},
			[]string{"https://10.0.0.1:8443/ui/", "a client certificate"}, false, "[[server.tokens]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Server.Listen, cfg.Server.Tokens = tc.server.Listen, tc.server.Tokens
			cfg.Server.TLSCert, cfg.Server.TLSKey, cfg.Server.TLSClientCA = tc.server.TLSCert, tc.server.TLSKey, tc.server.TLSClientCA
			detail, warn := consoleDoctor(cfg)
			for _, w := range tc.want {
				if !strings.Contains(detail, w) {
					t.Errorf("detail %q lacks %q", detail, w)
				}
			}
			if strings.Contains(detail, tc.notInclude) {
				t.Errorf("detail %q has %q", detail, tc.notInclude)
			}
			if (warn != "") != tc.wantWarn {
				t.Errorf("warning = %q, want one: %v", warn, tc.wantWarn)
			}
		})
	}
}
