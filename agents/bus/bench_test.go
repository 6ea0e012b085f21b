package bus

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

// benchBus opens a bus on a state file in a temporary directory, as symbi does.
func benchBus(b *testing.B, o *Options) *Bus {
	b.Helper()
	db, err := store.Open(filepath.Join(b.TempDir(), store.FileName))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	bus, err := Open(context.Background(), db, testKey, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bus.Close() })
	return bus
}

// cpuTime is the CPU time this process has used (user and system): on a shared machine it
// says more about a change than the wall clock does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds the CPU time per operation since start to b's output.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}

// reportLatency adds the p50 and p99 of lat (one entry per message) to b's output.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkSendReceiveAck: one message's whole life through the state file (signed,
// encrypted, stored, claimed, verified, decrypted, acknowledged), one at a time; the
// latency is send to receive.
func BenchmarkSendReceiveAck(b *testing.B) {
	bus := benchBus(b, nil)
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

// BenchmarkBatched: senders send, a receiver takes up to 100 at a time and acknowledges
// them, so that claims are batched.
func BenchmarkBatched(b *testing.B) {
	for _, senders := range []int{1, 4} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			bus := benchBus(b, nil)
			ctx := context.Background()
			payload := bytes.Repeat([]byte("x"), 256)
			b.ReportAllocs()
			var sent atomic.Int64
			errs := make(chan error, senders)
			b.ResetTimer()
			cpu := cpuTime()
			for s := range senders {
				go func() {
					for sent.Add(1) <= int64(b.N) {
						if _, err := bus.Send(ctx, fmt.Sprintf("sender%d", s), "bob", payload); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			for got := 0; got < b.N; {
				msgs, err := bus.Receive(ctx, "bob", 100, time.Second)
				if err != nil {
					b.Fatal(err)
				}
				for _, m := range msgs {
					if err := bus.Ack(ctx, "bob", m.ID); err != nil {
						b.Fatal(err)
					}
				}
				got += len(msgs)
			}
			for range senders {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkCrypto: the per-message crypto, alone: sign and encrypt on send, decrypt and
// verify on receive.
func BenchmarkCrypto(b *testing.B) {
	db, err := store.OpenMemory()
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	bus, err := Open(context.Background(), db, testKey, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	dek, err := bus.dataKeyOf(context.Background(), db, "bob", dekRecipient, true)
	if err != nil {
		b.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	payload := bytes.Repeat([]byte("x"), 256)
	e := envelope{id: newID(), kind: KindDirect, from: "alice", to: "bob", created: 1, expires: 2}
	nonce := make([]byte, dek.NonceSize())
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		r := row{envelope: e, nonce: nonce}
		hdr := e.header()
		sum := sha256Sum(payload)
		r.signature = ed25519.Sign(priv, signed(hdr, sum))
		r.ct = dek.Seal(nil, nonce, payload, hdr)
		if _, err := bus.open(&r, dek, pub); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

func sha256Sum(p []byte) [32]byte { return sha256.Sum256(p) }

// BenchmarkSendParallel: senders only (signed, encrypted, stored), 8 goroutines a core:
// what group commit buys.
func BenchmarkSendParallel(b *testing.B) {
	bus := benchBus(b, nil)
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 256)
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		from := fmt.Sprintf("sender%d", n.Add(1))
		for pb.Next() {
			if _, err := bus.Send(ctx, from, "bob", payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportCPU(b, cpu)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkEmptyPoll: a Receive that finds nothing, as a waiting client's poll does.
func BenchmarkEmptyPoll(b *testing.B) {
	bus := benchBus(b, nil)
	ctx := context.Background()
	if _, err := bus.Send(ctx, "alice", "carol", []byte("not for bob")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		if msgs, err := bus.Receive(ctx, "bob", 10, 0); err != nil || len(msgs) != 0 {
			b.Fatalf("receive: %v %d", err, len(msgs))
		}
	}
	reportCPU(b, cpu)
}
