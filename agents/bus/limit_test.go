package bus

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestLimiter: a sender's bucket holds burst tokens, refills at rate, and a refusal says
// how long until the next token.
func TestLimiter(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	type step struct {
		at        time.Duration // since t0
		sender    string
		ok        bool
		wantAfter time.Duration // refusals only
	}
	for _, tc := range []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{"unlimited", 0, 0, []step{{0, "a", true, 0}, {0, "a", true, 0}, {0, "a", true, 0}}},
		{"burst then refill", 10, 3, []step{
			{0, "a", true, 0}, {0, "a", true, 0}, {0, "a", true, 0},
			{0, "a", false, 100 * time.Millisecond},
			{40 * time.Millisecond, "a", false, 60 * time.Millisecond},
			{100 * time.Millisecond, "a", true, 0},
			{100 * time.Millisecond, "a", false, 100 * time.Millisecond},
		}},
		{"per sender", 1, 1, []step{{0, "a", true, 0}, {0, "a", false, time.Second}, {0, "b", true, 0}}},
		{"burst defaults to the rate", 2, 0, []step{{0, "a", true, 0}, {0, "a", true, 0}, {0, "a", false, 500 * time.Millisecond}}},
		{"refill caps at burst", 100, 2, []step{
			{0, "a", true, 0}, {0, "a", true, 0},
			{time.Hour, "a", true, 0}, {time.Hour, "a", true, 0}, {time.Hour, "a", false, 10 * time.Millisecond},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(tc.rate, tc.burst)
			for i, s := range tc.steps {
				err := l.take(s.sender, t0.Add(s.at))
				if s.ok {
					if err != nil {
						t.Fatalf("step %d: refused: %v", i, err)
					}
					continue
				}
				var rl *RateLimitError
				if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
					t.Fatalf("step %d: err = %v, want a rate limit", i, err)
				}
				if d := rl.RetryAfter - s.wantAfter; d < -time.Millisecond || d > time.Millisecond {
					t.Errorf("step %d: retry after %s, want %s", i, rl.RetryAfter, s.wantAfter)
				}
			}
		})
	}
}

// TestLimiterSweep: buckets that have refilled are forgotten.
func TestLimiterSweep(t *testing.T) {
	l := newLimiter(1, 1)
	t0 := time.Unix(1_800_000_000, 0)
	for _, s := range []string{"a", "b", "c"} {
		if err := l.take(s, t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.take("d", t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if len(l.buckets) != 1 {
		t.Errorf("%d buckets kept, want 1", len(l.buckets))
	}
}

// TestRateLimitedSend: every way of sending spends the sender's tokens; another sender
// and the recipients are not affected; nothing is stored for a refused message.
func TestRateLimitedSend(t *testing.T) { forTransports(t, testRateLimitedSend) }

func testRateLimitedSend(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{Rate: 1, Burst: 2})
	ctx := context.Background()
	if err := f.bus.Subscribe(ctx, "bob", "news"); err != nil {
		t.Fatal(err)
	}
	f.send(t, "alice", "bob", "one")
	if _, err := f.bus.Publish(ctx, "alice", "news", []byte("two")); err != nil {
		t.Fatal(err)
	}
	for name, fn := range map[string]func() error{
		"send":    func() error { _, err := f.bus.Send(ctx, "alice", "bob", []byte("x")); return err },
		"publish": func() error { _, err := f.bus.Publish(ctx, "alice", "news", []byte("x")); return err },
		"request": func() error { _, err := f.bus.Request(ctx, "alice", "bob", []byte("x"), time.Second); return err },
		"reply":   func() error { _, err := f.bus.Reply(ctx, "alice", "nope", []byte("x")); return err },
	} {
		var rl *RateLimitError
		if err := fn(); !errors.As(err, &rl) || rl.Sender != "alice" || rl.RetryAfter <= 0 || rl.RetryAfter > time.Second {
			t.Errorf("%s over the limit = %v, want a rate limit", name, err)
		}
	}
	f.send(t, "carol", "bob", "three")
	if got := payloads(f.receive(t, "bob")); len(got) != 3 {
		t.Errorf("bob received %v, want 3 messages", got)
	}
	f.clock.add(time.Second)
	f.send(t, "alice", "bob", "four")
}

// TestTTLBounds: a sender may choose a TTL up to MaxTTL.
func TestTTLBounds(t *testing.T) { forTransports(t, testTTLBounds) }

func testTTLBounds(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{TTL: time.Minute, MaxTTL: time.Hour})
	ctx := context.Background()
	if _, err := f.bus.SendTTL(ctx, "alice", "bob", []byte("x"), 2*time.Hour); !errors.Is(err, ErrInvalid) {
		t.Errorf("ttl over the maximum = %v, want invalid", err)
	}
	if _, err := f.bus.SendTTL(ctx, "alice", "bob", []byte("x"), -time.Second); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative ttl = %v, want invalid", err)
	}
	if _, err := f.bus.Request(ctx, "alice", "bob", []byte("x"), 2*time.Hour); !errors.Is(err, ErrInvalid) {
		t.Errorf("request timeout over the maximum = %v, want invalid", err)
	}
	if _, err := f.bus.SendTTL(ctx, "alice", "bob", []byte("long"), time.Hour); err != nil {
		t.Fatal(err)
	}
	f.send(t, "alice", "bob", "short")
	f.clock.add(2 * time.Minute)
	if got := payloads(f.receive(t, "bob")); len(got) != 1 || got[0] != "long" {
		t.Errorf("after 2m bob received %v, want only the 1h message", got)
	}
	if _, err := Open(ctx, f.db, testKey, &Options{TTL: 2 * time.Hour, MaxTTL: time.Hour}); err == nil {
		t.Error("a default TTL above the maximum was accepted")
	}
}

// TestMoveKey: a key at the old place moves to the new one; nothing to move is no error;
// two keys are refused rather than one silently lost.
func TestMoveKey(t *testing.T) {
	dir := t.TempDir()
	old, path := filepath.Join(dir, "bus.key"), filepath.Join(dir, "keys", "bus_master.key")
	if moved, err := MoveKey(old, path); moved || err != nil {
		t.Fatalf("nothing to move: %v %v", moved, err)
	}
	key := bytes.Repeat([]byte{3}, KeySize)
	if err := os.WriteFile(old, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if moved, err := MoveKey(old, path); !moved || err != nil {
		t.Fatalf("move: %v %v", moved, err)
	}
	if got, err := LoadKey(path); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("moved key = %x %v", got, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old key is still there: %v", err)
	}
	other := bytes.Repeat([]byte{4}, KeySize)
	if err := os.WriteFile(old, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := MoveKey(old, path); err == nil {
		t.Error("moved a key over another")
	}
	if got, err := LoadKey(path); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("the key in place changed: %x %v", got, err)
	}
	// The same key at both places (another symbi's move raced this one): done.
	if err := os.WriteFile(old, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if moved, err := MoveKey(old, path); !moved || err != nil {
		t.Fatalf("same key at both places: %v %v", moved, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the old key is still there: %v", err)
	}
}

// TestMoveKeyConcurrent: processes starting together on an older data directory all
// move the one key, and none fails.
func TestMoveKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	old, path := filepath.Join(dir, "bus.key"), filepath.Join(dir, "keys", "bus_master.key")
	key := bytes.Repeat([]byte{5}, KeySize)
	for round := range 20 {
		if err := os.WriteFile(old, key, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Remove(path)
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				_, err := MoveKey(old, path)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if got, err := LoadKey(path); err != nil || !bytes.Equal(got, key) {
			t.Fatalf("round %d: key = %x %v", round, got, err)
		}
	}
}
