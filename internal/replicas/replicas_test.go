package replicas

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/internal/pgtest"
	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/policy"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// openShared returns a function opening new handles (replicas) on one new database.
func openShared(t *testing.T) func() *sql.DB {
	t.Helper()
	u := pgtest.URL(t)
	return func() *sql.DB {
		db, err := store.OpenPostgres(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := Migrate(context.Background(), db); err != nil {
			t.Fatal(err)
		}
		return db
	}
}

// limiterBackends give, for one test, a function returning the limiter of each
// "replica": the in-memory limiter has one (it is not shared), PostgreSQL a new one on
// the same database each time.
var limiterBackends = []struct {
	name   string
	shared bool
	new    func(t *testing.T) func() policy.RateLimiter
}{
	{"memory", false, func(t *testing.T) func() policy.RateLimiter {
		l := policy.NewLimiter(nil)
		return func() policy.RateLimiter { return l }
	}},
	{"postgres", true, func(t *testing.T) func() policy.RateLimiter {
		open := openShared(t)
		return func() policy.RateLimiter { return NewLimiter(open(), nil) }
	}},
}

func TestLimiterBackends(t *testing.T) {
	for _, b := range limiterBackends {
		t.Run(b.name, func(t *testing.T) {
			l := b.new(t)()
			for i := range 3 {
				if ok, wait := l.Allow("alice\x00echo", 60, 3); !ok {
					t.Fatalf("call %d of a burst of 3 refused (wait %s)", i, wait)
				}
			}
			ok, wait := l.Allow("alice\x00echo", 60, 3)
			if ok {
				t.Fatal("fourth call of a burst of 3 allowed")
			}
			if wait <= 0 || wait > time.Second {
				t.Errorf("wait = %s, want in (0, 1s] at 60 a minute", wait)
			}
			if ok, _ := l.Allow("bob\x00echo", 60, 3); !ok {
				t.Error("another key shares the bucket")
			}
			time.Sleep(wait + 50*time.Millisecond)
			if ok, wait := l.Allow("alice\x00echo", 60, 3); !ok {
				t.Errorf("refused after the bucket refilled a token (wait %s)", wait)
			}
			if ok, _ := l.Allow("alice\x00echo", 60, 3); ok {
				t.Error("a second token appeared from nowhere")
			}
			if ok, _ := l.Allow("carol\x00echo", 0, 3); ok {
				t.Error("a rate of 0 allowed a call")
			}
			// burst <= 0 means perMinute.
			for i := range 2 {
				if ok, _ := l.Allow("dave\x00echo", 2, 0); !ok {
					t.Fatalf("call %d of a default burst of 2 refused", i)
				}
			}
			if ok, _ := l.Allow("dave\x00echo", 2, 0); ok {
				t.Error("third call of a default burst of 2 allowed")
			}
		})
	}
}

// TestLimiterSharedByReplicas: calls through several limiters on one database, at
// once, draw from one bucket.
func TestLimiterSharedByReplicas(t *testing.T) {
	for _, b := range limiterBackends {
		if !b.shared {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			replica := b.new(t)
			limiters := []policy.RateLimiter{replica(), replica(), replica()}
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for i := range 30 {
				l := limiters[i%len(limiters)]
				wg.Go(func() {
					if ok, _ := l.Allow("alice\x00echo", 1, 5); ok {
						allowed.Add(1)
					}
				})
			}
			wg.Wait()
			if n := allowed.Load(); n != 5 {
				t.Errorf("%d calls allowed across 3 replicas, want 5 (one bucket of 5)", n)
			}
		})
	}
}

func TestLimiterPurgesFullBuckets(t *testing.T) {
	db := openShared(t)()
	l := NewLimiter(db, nil)
	if ok, _ := l.Allow("old", 6000, 1); !ok { // full again after 10ms
		t.Fatal("refused")
	}
	time.Sleep(50 * time.Millisecond)
	l.calls.Store(purgeEvery - 1)
	if ok, _ := l.Allow("new", 1, 1); !ok {
		t.Fatal("refused")
	}
	var keys []string
	rows, err := db.Query(`SELECT key FROM symbi_rate_buckets ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k []byte
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, string(k))
	}
	if fmt.Sprint(keys) != "[new]" {
		t.Errorf("buckets after a purge: %v, want [new]", keys)
	}
}

func TestLimiterFailsClosed(t *testing.T) {
	db := openShared(t)()
	l := NewLimiter(db, nil)
	db.Close()
	if ok, wait := l.Allow("alice", 60, 10); ok || wait <= 0 {
		t.Errorf("with the database gone: Allow = %v, %s; want a refusal", ok, wait)
	}
}

func TestApprovalsSpendOnce(t *testing.T) {
	open := openShared(t)
	a1, a2 := NewApprovals(open()), NewApprovals(open())
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	n1, n2 := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 16)
	for i, step := range []struct {
		a     *Approvals
		nonce []byte
		fresh bool
	}{{a1, n1, true}, {a2, n1, false}, {a1, n1, false}, {a2, n2, true}, {a1, n2, false}} {
		fresh, err := step.a.Spend(ctx, step.nonce, exp)
		if err != nil {
			t.Fatal(err)
		}
		if fresh != step.fresh {
			t.Errorf("step %d: fresh = %v, want %v", i, fresh, step.fresh)
		}
	}
	// Concurrent replays: exactly one wins.
	n3 := bytes.Repeat([]byte{3}, 16)
	var wins atomic.Int64
	var wg sync.WaitGroup
	for i := range 10 {
		a := []*Approvals{a1, a2}[i%2]
		wg.Go(func() {
			if fresh, err := a.Spend(ctx, n3, exp); err == nil && fresh {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d replicas spent one approval", wins.Load())
	}
	// Long-expired approvals are purged; live ones stay.
	old := bytes.Repeat([]byte{4}, 16)
	if _, err := a1.Spend(ctx, old, time.Now().Add(-2*keepSpent)); err != nil {
		t.Fatal(err)
	}
	a1.calls.Store(purgeEvery - 1)
	if _, err := a1.Spend(ctx, bytes.Repeat([]byte{5}, 16), exp); err != nil {
		t.Fatal(err)
	}
	if fresh, _ := a2.Spend(ctx, n1, exp); fresh {
		t.Error("a live used approval was purged")
	}
	if fresh, _ := a2.Spend(ctx, old, exp); !fresh {
		t.Error("a long-expired approval was kept")
	}
}

func TestApprovalKeyShared(t *testing.T) {
	open := openShared(t)
	ctx := context.Background()
	k1, err := ApprovalKey(ctx, open())
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ApprovalKey(ctx, open())
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 32 || !bytes.Equal(k1, k2) {
		t.Errorf("replicas got keys %x and %x, want one key of 32 bytes", k1, k2)
	}
	if bytes.Equal(k1, make([]byte, 32)) {
		t.Error("the key is all zeros")
	}
}

func TestMigrateRefusesSQLite(t *testing.T) {
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(context.Background(), db); err == nil {
		t.Error("Migrate on SQLite succeeded")
	}
}

// BenchmarkLimiterAllow: one shared-bucket decision (one upsert round trip over the
// unix socket of the test cluster), one key and many keys.
func BenchmarkLimiterAllow(b *testing.B) {
	u := pgtest.URL(b)
	db, err := store.OpenPostgres(context.Background(), u)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	l := NewLimiter(db, nil)
	b.Run("one_key", func(b *testing.B) {
		for b.Loop() {
			l.Allow("alice\x00echo", 1_000_000, 1_000_000)
		}
	})
	b.Run("parallel_keys", func(b *testing.B) {
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			key := fmt.Sprintf("id%d\x00echo", n.Add(1))
			for pb.Next() {
				l.Allow(key, 1_000_000, 1_000_000)
			}
		})
	})
}
