package bus

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// natsBenchBus opens a bus on an embedded NATS server (JetStream file store) in a
// temporary directory.
func natsBenchBus(b *testing.B) *Bus {
	b.Helper()
	srv := startNATS(b, b.TempDir())
	bus, err := OpenNATS(context.Background(), NATSOptions{Conn: connect(b, srv.URL())}, testKey, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bus.Close() })
	return bus
}

// BenchmarkNATSSendReceiveAck: BenchmarkSendReceiveAck on the NATS transport.
func BenchmarkNATSSendReceiveAck(b *testing.B) {
	bus := natsBenchBus(b)
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 256)
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		start := time.Now()
		if _, err := bus.Send(ctx, "alice", "bob", payload); err != nil {
			b.Fatal(err)
		}
		msgs, err := bus.Receive(ctx, "bob", 1, 0)
		if err != nil || len(msgs) != 1 {
			b.Fatalf("receive: %v %d", err, len(msgs))
		}
		lat = append(lat, time.Since(start))
		if err := bus.Ack(ctx, "bob", msgs[0].ID); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
	reportLatency(b, lat)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkNATSSendParallel: BenchmarkSendParallel on the NATS transport.
func BenchmarkNATSSendParallel(b *testing.B) {
	bus := natsBenchBus(b)
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 256)
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		from := fmt.Sprintf("sender%d", n.Add(1))
		for pb.Next() {
			if _, err := bus.Send(ctx, from, fmt.Sprintf("bob%d", n.Load()%4), payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportCPU(b, cpu)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkCryptoParallel: the per-message crypto (sign, encrypt, decrypt, verify) on
// every core: the ceiling of signed and encrypted messages a second on this machine,
// before any storage.
func BenchmarkCryptoParallel(b *testing.B) {
	bus, err := newBus(testKey, nil)
	if err != nil {
		b.Fatal(err)
	}
	dek := bus.aead // an AES-256-GCM key, as a recipient's data key is
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 256)
	b.ReportAllocs()
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		nonce := make([]byte, dek.NonceSize())
		for pb.Next() {
			e := envelope{id: newID(), kind: KindDirect, from: "alice", to: "bob", created: 1, expires: 2}
			r := row{envelope: e, nonce: nonce}
			hdr := e.header()
			r.signature = ed25519.Sign(priv, signed(hdr, sha256Sum(payload)))
			r.ct = dek.Seal(nil, nonce, payload, hdr)
			if _, err := bus.open(&r, dek, pub); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportCPU(b, cpu)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "procs")
}
