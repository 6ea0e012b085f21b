package bus

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
)

// transport is a way of opening the bus, so that one test runs against each.
type transport struct {
	name string
	// fixture opens a fresh bus with o on a fresh state.
	fixture func(t *testing.T, o Options) *fixture
}

var transports = []transport{
	{"local", newFixture},
	{"nats", newNATSFixture},
}

// forTransports runs test once on each transport.
func forTransports(t *testing.T, test func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { test(t, tr) })
	}
}

// startNATS starts an embedded NATS server with JetStream in dir for the test.
func startNATS(t testing.TB, dir string) *EmbeddedNATS {
	t.Helper()
	srv, err := StartNATS("127.0.0.1:0", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// connect opens a client connection to url, closed at the end of the test.
func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// newNATSFixture opens a bus on an embedded NATS server of its own.
func newNATSFixture(t *testing.T, o Options) *fixture {
	t.Helper()
	srv := startNATS(t, t.TempDir())
	return openNATSOn(t, connect(t, srv.URL()), testKey, o)
}

func openNATSOn(t *testing.T, nc *nats.Conn, key []byte, o Options) *fixture {
	t.Helper()
	f := &fixture{nc: nc, clock: &clock{now: testEpoch}, rec: &recorder{}}
	o.Now, o.Record = f.clock.Now, f.rec.record
	b, err := OpenNATS(context.Background(), NATSOptions{Conn: nc}, key, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	f.bus = b
	return f
}

// reopen opens another bus on f's state (another process sharing it) with key and o.
func (f *fixture) reopen(t *testing.T, key []byte, o Options) *fixture {
	t.Helper()
	if f.nc != nil {
		return openNATSOn(t, f.nc, key, o)
	}
	return openOn(t, f.db, key, o)
}
