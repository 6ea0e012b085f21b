package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDoctor(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream string
		code     int
		want     []string
	}{
		{"defaults", "", 0, []string{"ok   policy compiles", "decisions cached by input.", "all checks passed"}},
		{"missing command", "[[upstreams]]\nname = \"gone\"\ncommand = [\"/nonexistent/mcp-server\"]\n", 1,
			[]string{"FAIL upstream gone", "risk assessment: docker", "tier none runs the server as a host process"}},
		{"auto tier assessed", "[[upstreams]]\nname = \"web\"\ncommand = [\"/bin/true\"]\nsandbox = { tier = \"auto\", image = \"x\", network = \"bridge\", sensitivity = \"restricted\" }\n", -1,
			[]string{"risk assessment: gvisor", "needs outbound network"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "c.toml")
			body := "version = 1\n[server]\ndata_dir = " + strings.ReplaceAll(`"`+filepath.Join(dir, "data")+`"`, `\`, `\\`) + "\n" + tc.upstream
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			code := run(context.Background(), []string{"doctor", "--config", cfg}, &out, &errb)
			if tc.code >= 0 && code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.code, out.String(), errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
