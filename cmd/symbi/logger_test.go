package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	for _, tc := range []struct {
		name, level, format string
		wantErr             string // "" = no error
		wantJSON            bool
		wantDebug           bool
	}{
		{name: "text", level: "info", format: "text"},
		{name: "json", level: "info", format: "json", wantJSON: true},
		{name: "json debug", level: "debug", format: "json", wantJSON: true, wantDebug: true},
		{name: "bad format", level: "info", format: "logfmt", wantErr: `log format "logfmt": must be text or json`},
		{name: "empty format", level: "info", format: "", wantErr: "must be text or json"},
		{name: "upper case format", level: "info", format: "JSON", wantErr: "must be text or json"},
		{name: "bad level", level: "loud", format: "json", wantErr: "parse log level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := newLogger(&buf, tc.level, tc.format)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("newLogger(%q, %q) error = %v, want %q", tc.level, tc.format, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("quiet", "k", 1)
			log.Info("hello world", "upstream", "a b", "n", 2)
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			if want := map[bool]int{false: 1, true: 2}[tc.wantDebug]; len(lines) != want {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), want, buf.String())
			}
			last := lines[len(lines)-1]
			var rec map[string]any
			jsonErr := json.Unmarshal([]byte(last), &rec)
			if !tc.wantJSON {
				if jsonErr == nil {
					t.Fatalf("text format wrote JSON: %s", last)
				}
				if !strings.Contains(last, `level=INFO msg="hello world" upstream="a b" n=2`) {
					t.Errorf("text line = %s", last)
				}
				return
			}
			if jsonErr != nil {
				t.Fatalf("json format line does not parse: %v: %s", jsonErr, last)
			}
			if rec["level"] != "INFO" || rec["msg"] != "hello world" || rec["upstream"] != "a b" || rec["n"] != float64(2) {
				t.Errorf("json record = %v", rec)
			}
			if _, ok := rec["time"].(string); !ok {
				t.Errorf("json record has no time: %v", rec)
			}
		})
	}
}
