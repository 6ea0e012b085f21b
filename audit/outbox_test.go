package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/internal/store"
)

// TestOutboxDrain: events put by another process are appended in order, with their
// own id and time, once; a second drain records nothing.
func TestOutboxDrain(t *testing.T) {
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	ob, err := NewOutbox(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tool := range []string{"a", "b"} {
		if err := ob.Put(ctx, Event{Type: TypeToolApproved, Tool: tool, Identity: "os:alice", ID: "id-" + tool, Time: when}); err != nil {
			t.Fatal(err)
		}
	}
	l, dir := openTest(t, nil)
	if n, err := ob.Drain(ctx, l); err != nil || n != 2 {
		t.Fatalf("Drain = %d, %v; want 2", n, err)
	}
	if n, err := ob.Drain(ctx, l); err != nil || n != 0 {
		t.Fatalf("second Drain = %d, %v; want 0", n, err)
	}
	recs, err := Query(ctx, dir, Filter{Type: TypeToolApproved})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Event.ID+" "+r.Event.Tool+" "+r.Event.Time.Format(time.RFC3339))
	}
	want := []string{"id-a a 2026-01-02T03:04:05Z", "id-b b 2026-01-02T03:04:05Z"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("drained events (-want +got):\n%s", diff)
	}
}

// TestOutboxDrainTwoWriters: two processes writing one trail (two writers' chains) and
// sharing one state file drain the outbox at the same time; each event is recorded by
// exactly one of them.
func TestOutboxDrainTwoWriters(t *testing.T) {
	ctx := context.Background()
	dbPath := filepath.Join(t.TempDir(), "state.db")
	s := newSharedTrail(t, Options{})
	logs := []*Log{s.open(t), s.open(t)}
	var boxes []*Outbox
	for range logs {
		db, err := store.Open(dbPath) // one connection pool per process
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		ob, err := NewOutbox(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		boxes = append(boxes, ob)
	}
	const events = 40
	for round := range 4 {
		for i := range events / 4 {
			if err := boxes[0].Put(ctx, Event{Type: TypeToolApproved, Tool: fmt.Sprint("t", round, "-", i), Identity: "os:alice"}); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for i := range logs {
			wg.Go(func() {
				if _, err := boxes[i].Drain(ctx, logs[i]); err != nil {
					t.Errorf("Drain %s: %v", logs[i].Writer(), err)
				}
			})
		}
		wg.Wait()
	}
	for _, l := range logs {
		closeLog(t, l)
	}
	recs, err := Query(ctx, s.dir, Filter{Type: TypeToolApproved})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.Event.ID]++
	}
	if len(recs) != events || len(seen) != events {
		t.Errorf("recorded %d events with %d distinct ids; want each of %d once", len(recs), len(seen), events)
	}
	if rep := s.verify(t); !rep.Intact {
		t.Errorf("trail after both drained: %v", rep.Problem)
	}
}
