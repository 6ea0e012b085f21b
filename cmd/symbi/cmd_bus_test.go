package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/symbi-dev/symbi/agents/bus"
	"github.com/symbi-dev/symbi/internal/store"
)

// TestBusRotateKeyCommand: `symbi bus rotate-key` replaces the master key file; a
// message sent before is delivered under the new key and the old key is refused; on
// both transports (NATS: the embedded server's files).
func TestBusRotateKeyCommand(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"local", ""},
		{"nats", "[bus]\ntransport = \"nats\"\nnats_embedded = { listen = \"127.0.0.1:0\" }\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			data := filepath.Join(t.TempDir(), "data")
			cfgPath := filepath.Join(filepath.Dir(data), "symbi.toml")
			if err := os.WriteFile(cfgPath, []byte("version = 1\n[server]\ndata_dir = "+strconv.Quote(data)+"\n"+tc.extra), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			keyPath := cfg.BusKeyFile()
			oldKey, err := bus.LoadKey(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			// open opens the bus as symbi would, on the state file or the embedded server.
			var stop func() // stops the test's own NATS server, which holds the store dir
			open := func(key []byte) (*bus.Bus, error) {
				if tc.extra == "" {
					db, err := store.Open(filepath.Join(data, store.FileName))
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { db.Close() })
					return bus.Open(ctx, db, key, nil)
				}
				srv, err := bus.StartNATS("127.0.0.1:0", cfg.BusNATSStoreDir(), nil)
				if err != nil {
					t.Fatal(err)
				}
				nc, err := nats.Connect(srv.URL())
				if err != nil {
					t.Fatal(err)
				}
				stop = func() { nc.Close(); srv.Close() }
				t.Cleanup(stop)
				return bus.OpenNATS(ctx, bus.NATSOptions{Conn: nc}, key, nil)
			}
			b, err := open(oldKey)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Send(ctx, "alice", "bob", []byte("before the rotation")); err != nil {
				t.Fatal(err)
			}
			b.Close()
			if stop != nil {
				stop()
			}

			var out, errb bytes.Buffer
			if code := run(ctx, []string{"bus", "rotate-key", "--config", cfgPath}, &out, &errb); code != 0 || !strings.Contains(out.String(), "1 signing keys and 1 data keys re-wrapped") {
				t.Fatalf("rotate-key: code %d out %q err %q", code, out.String(), errb.String())
			}
			newKey, err := bus.LoadKey(keyPath)
			if err != nil || bytes.Equal(newKey, oldKey) {
				t.Fatalf("the key file after the rotation: %v (unchanged: %v)", err, bytes.Equal(newKey, oldKey))
			}
			if _, err := open(oldKey); !errors.Is(err, bus.ErrWrongKey) {
				t.Errorf("the old key still opens the bus: %v", err)
			}
			if stop != nil {
				stop()
			}
			b, err = open(newKey)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			msgs, err := b.Receive(ctx, "bob", 10, 0)
			if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "before the rotation" {
				t.Fatalf("bob received %v, %v after the rotation", msgs, err)
			}
		})
	}
}
