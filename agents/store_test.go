package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
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
	st, err := OpenStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Flush(context.Background()); err != nil {
			t.Error(err)
		}
		db.Close()
	})
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

// TestStoreGroupCommit: saved rows are visible at once (before they are written), are
// snapshots, and are in the file after Flush, the newest of each key; a failed write is
// reported and its rows are written by a later commit.
func TestStoreGroupCommit(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Flush(ctx); db.Close() })
	at := time.Unix(1700000000, 0)
	count := func(q string, args ...any) int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	r := &RunRecord{ID: "r1", Agent: "a", Identity: "agent:a", Trigger: "manual", State: RunQueued, Created: at,
		Vars: map[string]json.RawMessage{"doc": json.RawMessage(`"x"`)}}
	if err := st.SaveRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.State, r.Step = RunSucceeded, 2
	r.Vars["late"] = json.RawMessage(`1`) // after the save: not part of its snapshot
	if err := st.SaveState(ctx, "a", StateRunning, "run r1", at); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveState(ctx, "a", StateReady, "run r1 succeeded", at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveSchedule(ctx, "a", "@every 1h|UTC", at, false); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSchedule(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if rec, ok, err := st.LoadState(ctx, "a"); err != nil || !ok || rec.State != StateReady {
		t.Errorf("LoadState before the write = %+v, %v, %v; want ready", rec, ok, err)
	}
	if _, _, _, ok, err := st.LoadSchedule(ctx, "a"); ok || err != nil {
		t.Errorf("LoadSchedule after DeleteSchedule: ok=%v, %v", ok, err)
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM agents_state WHERE name = 'a' AND state = 'ready'`); n != 1 {
		t.Errorf("state rows after Flush: %d ready, want 1", n)
	}
	runs, err := st.Runs(ctx, "a", 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].State != RunQueued || runs[0].Step != 0 || len(runs[0].Vars) != 1 {
		t.Errorf("run as saved = %+v, want the snapshot (queued, step 0, one saved result)", runs)
	}

	// A write that fails (its table is gone) is reported, and its rows stay to be written.
	if _, err := db.ExecContext(ctx, `DROP TABLE agents_state`); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveState(ctx, "b", StateSuspended, "hold", at); err != nil {
		t.Fatal(err)
	}
	if err := st.Flush(ctx); err == nil {
		t.Fatal("Flush with the table gone: want an error")
	}
	if rec, ok, _ := st.LoadState(ctx, "b"); !ok || rec.State != StateSuspended {
		t.Errorf("LoadState after a failed write = %+v, %v; want the row kept", rec, ok)
	}
	if _, err := OpenStore(ctx, db); err != nil { // the table is back
		t.Fatal(err)
	}
	if err := st.Flush(ctx); err != nil {
		t.Fatalf("Flush once the table is back: %v", err)
	}
	if n := count(`SELECT count(*) FROM agents_state WHERE name = 'b' AND state = 'suspended'`); n != 1 {
		t.Errorf("the failed write's row was not written later (%d rows)", n)
	}
}

// TestStoreConcurrentSaves: rows saved from many goroutines while reads and flushes go
// on all reach the file, each as last saved.
func TestStoreConcurrentSaves(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	at := time.Unix(1700000000, 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() { // owned: the test waits for it
			defer wg.Done()
			for i := range 200 {
				name := fmt.Sprintf("g%d-%d", g, i)
				r := &RunRecord{ID: name, Agent: name, Identity: "agent:" + name, Trigger: "manual", State: RunQueued, Created: at}
				_ = st.SaveRun(ctx, r)
				_ = st.SaveState(ctx, name, StateRunning, "run", at)
				r.State, r.Finished = RunSucceeded, at
				_ = st.SaveRun(ctx, r)
				_ = st.SaveState(ctx, name, StateReady, "done", at)
				if rec, ok, err := st.LoadState(ctx, name); err != nil || !ok || rec.State != StateReady {
					t.Errorf("LoadState(%s) = %+v, %v, %v", name, rec, ok, err)
				}
				if i%50 == 0 {
					if err := st.Flush(ctx); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := st.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var ready, succeeded int
	if err := st.db.QueryRowContext(ctx, `SELECT count(*) FROM agents_state WHERE state = 'ready'`).Scan(&ready); err != nil {
		t.Fatal(err)
	}
	if err := st.db.QueryRowContext(ctx, `SELECT count(*) FROM agents_runs WHERE state = 'succeeded'`).Scan(&succeeded); err != nil {
		t.Fatal(err)
	}
	if ready != 1600 || succeeded != 1600 {
		t.Errorf("after Flush: %d ready agents and %d succeeded runs, want 1600 of each", ready, succeeded)
	}
}
