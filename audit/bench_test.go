package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkAppend measures sustained throughput: events appended, hashed, signed and
// written per second, including the final Flush.
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name string
		o    Options
	}{
		{"batched", Options{Fsync: FsyncBatch}},
		{"fsync-every", Options{Fsync: FsyncEvery}},
		{"batched-sign-interval-256", Options{Fsync: FsyncBatch, SignInterval: 256}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			o := bc.o
			o.BlockTimeout = 1 << 40 // measure throughput, not rejections
			l, _ := openTest(b, &o)
			ctx := context.Background()
			ev := callEvent(1)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := l.Append(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			if err := l.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			l.Close()
		})
	}
}

// BenchmarkAppendParallel is many sessions appending at once.
func BenchmarkAppendParallel(b *testing.B) {
	l, _ := openTest(b, &Options{BlockTimeout: 1 << 40})
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ev := callEvent(2)
		for pb.Next() {
			if err := l.Append(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	l.Flush(ctx)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	l.Close()
}

// BenchmarkAppendLatency is what Append adds to a proxied call when the queue has room:
// encoding the event and enqueueing it (ns/op).
func BenchmarkAppendLatency(b *testing.B) {
	l, _ := openTest(b, &Options{QueueSize: b.N + 16})
	ctx := context.Background()
	ev := callEvent(3)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := l.Append(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	l.Close()
}

// BenchmarkVerify measures offline verification speed.
func BenchmarkVerify(b *testing.B) {
	for _, interval := range []int{1, 256} {
		b.Run(fmt.Sprintf("sign-interval-%d", interval), func(b *testing.B) { benchVerify(b, interval) })
	}
}

func benchVerify(b *testing.B, interval int) {
	const entries = 20000
	dir := filepath.Join(b.TempDir(), "audit")
	l, _ := openTest(b, &Options{Dir: dir, BlockTimeout: 1 << 40, SignInterval: interval})
	ctx := context.Background()
	for i := 0; i < entries; i++ {
		l.Append(ctx, callEvent(i))
	}
	l.Close()
	pub := trustedKey(b, dir)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := Verify(dir, pub)
		if err != nil || !rep.Intact {
			b.Fatal(err, rep.Problem)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(entries*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkErrCheck is the fail-closed check the gateway makes before every call.
func BenchmarkErrCheck(b *testing.B) {
	l, _ := openTest(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		if l.Err() != nil {
			b.Fatal("trail broken")
		}
	}
}
