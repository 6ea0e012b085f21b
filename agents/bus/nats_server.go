package bus

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedNATS is a NATS server with JetStream run inside this process, for a bus that
// other symbi processes join through its client URL.
type EmbeddedNATS struct {
	srv *server.Server
}

// StartNATS starts a NATS server listening on listen (host:port; port 0 picks one)
// with JetStream keeping its data in storeDir. Close stops it.
func StartNATS(listen, storeDir string, log *slog.Logger) (*EmbeddedNATS, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("start NATS: listen %q: %w", listen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("start NATS: listen %q: bad port", listen)
	}
	if storeDir == "" {
		return nil, fmt.Errorf("start NATS: no store directory")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv, err := server.NewServer(&server.Options{Host: host, Port: p, JetStream: true, StoreDir: storeDir,
		NoSigs: true, ServerName: "symbi-" + strconv.Itoa(p)})
	if err != nil {
		return nil, fmt.Errorf("start NATS: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log.With("component", "nats")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start NATS on %s: not ready after 30s", listen)
	}
	return &EmbeddedNATS{srv: srv}, nil
}

// URL is the server's client URL.
func (e *EmbeddedNATS) URL() string { return e.srv.ClientURL() }

// Close stops the server and waits until it has.
func (e *EmbeddedNATS) Close() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// natsLogger sends the server's log to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
