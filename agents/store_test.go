package agents

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/symbi-dev/symbi/internal/store"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := OpenStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	// Migrating twice is harmless.
	if _, err := OpenStore(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	at := time.Unix(1700000000, 5)

	if _, ok, err := st.LoadState(ctx, "a"); ok || err != nil {
		t.Fatalf("LoadState of an unknown agent: %v, %v", ok, err)
	}
	if err := st.SaveState(ctx, "a", StateSuspended, "denied by policy", at); err != nil {
		t.Fatal(err)
	}
	rec, ok, err := st.LoadState(ctx, "a")
	if err != nil || !ok || rec != (StateRecord{State: StateSuspended, Reason: "denied by policy", Updated: at}) {
		t.Errorf("LoadState = %+v, %v, %v", rec, ok, err)
	}

	if err := st.SaveSchedule(ctx, "a", "0 0 2 * * *", at, false); err != nil {
		t.Fatal(err)
	}
	spec, due, done, ok, err := st.LoadSchedule(ctx, "a")
	if err != nil || !ok || spec != "0 0 2 * * *" || !due.Equal(at) || done {
		t.Errorf("LoadSchedule = %q %s %v %v %v", spec, due, done, ok, err)
	}
	if err := st.DeleteSchedule(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok, _ := st.LoadSchedule(ctx, "a"); ok {
		t.Error("schedule still there after DeleteSchedule")
	}

	runs := []*RunRecord{
		{ID: "r1", Agent: "a", Identity: "agent:a", Trigger: "schedule", State: RunSucceeded, Step: 2, Created: at, Finished: at.Add(time.Second),
			Vars: map[string]json.RawMessage{"doc": json.RawMessage(`{"text":"hi"}`)}},
		{ID: "r2", Agent: "a", Identity: "agent:a", Trigger: "manual", State: RunRunning, Created: at.Add(time.Minute)},
		{ID: "r3", Agent: "b", Identity: "agent:b", Trigger: "manual", State: RunQueued, Created: at},
	}
	for _, r := range runs {
		if err := st.SaveRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	failed, err := st.FailInterrupted(ctx, at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 2 {
		t.Errorf("FailInterrupted failed %d runs, want 2 (r2, r3)", len(failed))
	}
	got, err := st.Runs(ctx, "a", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []RunRecord{
		{ID: "r2", Agent: "a", Identity: "agent:a", Trigger: "manual", State: RunFailed, Reason: "symbi stopped during the run", Created: at.Add(time.Minute), Finished: at.Add(time.Hour)},
		*runs[0],
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("Runs mismatch (-want +got):\n%s", diff)
	}
}
