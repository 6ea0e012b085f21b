package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/symbi-dev/symbi/agents/bus"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/internal/store"
)

const busUsage = `usage: symbi bus <command> [--config FILE]

the agent bus's keys.

commands:
  rotate-key   replace the bus master key ([bus] key_file): the signing keys and data
               keys kept in the state store (or the NATS buckets) are re-wrapped under a
               new key, which then replaces the file; messages are kept. Stop every
               symbi that uses the bus first. An interrupted rotation leaves the new key
               at <key_file>.next and symbi refuses to start until this is run again.
`

// runBus implements `symbi bus rotate-key`.
func runBus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, busUsage)
		return 2
	}
	switch args[0] {
	case "rotate-key":
	case "-h", "--help", "help":
		fmt.Fprint(stderr, busUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "symbi bus: unknown command %q\n\n%s", args[0], busUsage)
		return 2
	}
	fs := flag.NewFlagSet("symbi bus rotate-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (its data_dir and [bus] settings); default: the built-in configuration")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	if running := instances(cfg.Server.DataDir); len(running) > 0 {
		fmt.Fprintf(stderr, "%s: %d symbi process(es) running on %s (pid %d): stop every symbi that uses the bus, rotate, and start them again\n",
			fs.Name(), len(running), cfg.Server.DataDir, running[0].PID)
		return 1
	}
	path := cfg.BusKeyFile()
	if _, err := bus.MoveKey(filepath.Join(cfg.Server.DataDir, legacyBusKeyFile), path); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	var st bus.RotateStats
	err = bus.RotateKeyFile(path, func(oldKey, newKey []byte) error {
		st, err = rotateBusKey(ctx, cfg, oldKey, newKey)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	fmt.Fprintf(stdout, "rotated the bus master key %s: %d signing keys and %d data keys re-wrapped, %d messages moved to their data key\n",
		path, st.SigningKeys, st.DataKeys, st.Messages)
	return 0
}

// rotateBusKey re-wraps the bus's stored keys where cfg keeps them.
func rotateBusKey(ctx context.Context, cfg *config.Config, oldKey, newKey []byte) (bus.RotateStats, error) {
	c := cfg.Bus
	if c.Transport != config.BusNATS {
		db, err := store.Open(filepath.Join(cfg.Server.DataDir, store.FileName))
		if err != nil {
			return bus.RotateStats{}, err
		}
		defer db.Close()
		return bus.RotateKey(ctx, db, oldKey, newKey)
	}
	url := c.NATSURL
	if c.NATSEmbedded != nil {
		// Every symbi is stopped: this process serves the embedded server's files itself,
		// on a port of its own.
		srv, err := bus.StartNATS("127.0.0.1:0", cfg.BusNATSStoreDir(), nil)
		if err != nil {
			return bus.RotateStats{}, err
		}
		defer srv.Close()
		url = srv.URL()
	}
	nc, err := connectNATS(ctx, url, c, slog.New(slog.DiscardHandler))
	if err != nil {
		return bus.RotateStats{}, err
	}
	defer nc.Close()
	return bus.RotateKeyNATS(ctx, bus.NATSOptions{Conn: nc, Prefix: c.NATSPrefix, Replicas: c.NATSReplicas}, oldKey, newKey)
}
