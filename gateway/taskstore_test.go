package gateway

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/symbi-dev/symbi/internal/pgtest"
	"github.com/symbi-dev/symbi/internal/store"
)

// taskBackends open the databases a task store runs on: the SQLite state file and the
// PostgreSQL database replicas share. Each returns two handles on one new database,
// as two replicas would have.
var taskBackends = []struct {
	name string
	open func(t *testing.T) (*sql.DB, *sql.DB)
}{
	{"sqlite", func(t *testing.T) (*sql.DB, *sql.DB) {
		path := t.TempDir() + "/" + store.FileName
		return openT(t, func() (*sql.DB, error) { return store.Open(path) }), openT(t, func() (*sql.DB, error) { return store.Open(path) })
	}},
	{"postgres", func(t *testing.T) (*sql.DB, *sql.DB) {
		u := pgtest.URL(t)
		open := func() (*sql.DB, error) { return store.OpenPostgres(context.Background(), u) }
		return openT(t, open), openT(t, open)
	}},
}

func openT(t *testing.T, open func() (*sql.DB, error)) *sql.DB {
	t.Helper()
	db, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSQLTaskStore(t *testing.T) {
	for _, b := range taskBackends {
		t.Run(b.name, func(t *testing.T) {
			db, db2 := b.open(t)
			testSQLTaskStore(t, db, db2)
		})
	}
}

func testSQLTaskStore(t *testing.T, db, db2 *sql.DB) {
	ctx := context.Background()
	st, err := OpenTaskStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTaskStore(ctx, db); err != nil { // migrating twice is fine
		t.Fatal(err)
	}
	other, err := OpenTaskStore(ctx, db2) // another replica on the same state
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	recs := []TaskRecord{
		{ID: "working", Status: TaskWorking, TTL: time.Hour},
		{ID: "waiting", Status: TaskInputRequired, TTL: time.Hour},
		{ID: "done", Status: TaskCompleted, TTL: time.Hour, Result: json.RawMessage(`{"content":[]}`)},
		{ID: "old", Status: TaskCompleted, TTL: time.Minute, Created: now.Add(-time.Hour)},
	}
	for i := range recs {
		r := &recs[i]
		r.Owner, r.Tool, r.Upstream = "alice", "slow", "jobs"
		if r.Created.IsZero() {
			r.Created = now
		}
		r.Updated = r.Created
		if err := st.SaveTask(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range map[string]*SQLTaskStore{"same": st, "other replica": other} {
		got, ok, err := s.LoadTask(ctx, "done")
		if err != nil || !ok {
			t.Fatalf("%s: load done: %v %v", name, ok, err)
		}
		if got.Owner != "alice" || got.Status != TaskCompleted || string(got.Result) != `{"content":[]}` || !got.Created.Equal(now) || got.TTL != time.Hour {
			t.Errorf("%s: loaded %+v", name, got)
		}
	}
	// The console's list: the owner's own tasks, newest first, none past its TTL, none
	// of another identity's, on either replica.
	if err := st.SaveTask(ctx, &TaskRecord{ID: "bobs", Owner: "bob", Tool: "slow", Upstream: "jobs", Status: TaskCompleted,
		Created: now.Add(time.Second), Updated: now, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	list, err := other.RecentTasks(ctx, "alice", 10, now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range list {
		ids = append(ids, r.ID)
		if r.Owner != "alice" || r.Tool != "slow" || r.Result != nil {
			t.Errorf("listed %+v", r)
		}
	}
	if got, want := strings.Join(ids, ","), "done,waiting,working"; got != want {
		t.Errorf("alice's tasks = %s, want %s", got, want)
	}
	if list, err := st.RecentTasks(ctx, "alice", 2, now); err != nil || len(list) != 2 {
		t.Errorf("limit 2: %d tasks (%v)", len(list), err)
	}
	if list, err := st.RecentTasks(ctx, "mallory", 10, now); err != nil || len(list) != 0 {
		t.Errorf("mallory sees %d tasks (%v)", len(list), err)
	}
	if list, _ := st.RecentTasks(ctx, "bob", 10, now); len(list) != 1 || list[0].ID != "bobs" {
		t.Errorf("bob's tasks = %+v", list)
	}

	// An update keeps the owner and creation time.
	upd := recs[0]
	upd.Status, upd.Owner, upd.Updated = TaskInputRequired, "mallory", now.Add(time.Second)
	if err := other.SaveTask(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := st.LoadTask(ctx, "working"); got.Owner != "alice" || got.Status != TaskInputRequired {
		t.Errorf("after update: %+v", got)
	}

	// A task of a symbi that still runs on the same state is left alone.
	n, err := st.FailUnfinished(ctx, now.Add(time.Second), "symbi stopped", func(int) bool { return true })
	if err != nil || n != 0 {
		t.Fatalf("with its symbi alive: failed %d tasks (%v), want 0", n, err)
	}
	n, err = st.FailUnfinished(ctx, now.Add(time.Second), "symbi stopped", func(pid int) bool { return pid != os.Getpid() })
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("failed %d unfinished tasks, want 2", n)
	}
	for _, id := range []string{"working", "waiting"} {
		got, ok, _ := other.LoadTask(ctx, id)
		if !ok || got.Status != TaskFailed || got.Message != "symbi stopped" || !strings.Contains(string(got.Error), "symbi stopped") {
			t.Errorf("%s after restart: %+v", id, got)
		}
	}
	if got, _, _ := st.LoadTask(ctx, "done"); got.Status != TaskCompleted {
		t.Errorf("a finished task must stay as it was: %+v", got)
	}
	if _, ok, _ := st.LoadTask(ctx, "old"); ok {
		t.Error("a task past its TTL must be gone")
	}
	if _, ok, err := st.LoadTask(ctx, "nope"); ok || err != nil {
		t.Errorf("unknown id: %v %v", ok, err)
	}
}

// TestSQLTaskStorePostgresOtherHost: a replica starting on one host leaves alone the
// unfinished tasks of replicas on other hosts (it cannot tell whether they still run).
func TestSQLTaskStorePostgresOtherHost(t *testing.T) {
	ctx := context.Background()
	db, db2 := taskBackends[1].open(t)
	here, err := OpenTaskStore(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	there, err := OpenTaskStore(ctx, db2)
	if err != nil {
		t.Fatal(err)
	}
	there.host = "elsewhere.example"
	now := time.Now()
	for s, id := range map[*SQLTaskStore]string{here: "mine", there: "theirs"} {
		if err := s.SaveTask(ctx, &TaskRecord{ID: id, Owner: "alice", Tool: "slow", Upstream: "jobs", Status: TaskWorking,
			Created: now, Updated: now, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := here.FailUnfinished(ctx, now, "symbi stopped", func(int) bool { return false })
	if err != nil || n != 1 {
		t.Fatalf("failed %d tasks (%v), want 1 (this host's)", n, err)
	}
	for id, want := range map[string]string{"mine": TaskFailed, "theirs": TaskWorking} {
		if got, ok, err := here.LoadTask(ctx, id); err != nil || !ok || got.Status != want {
			t.Errorf("task %s: %+v %v %v, want status %s", id, got, ok, err, want)
		}
	}
}
