package audit

import (
	"context"
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
