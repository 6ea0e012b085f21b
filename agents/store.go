package agents

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"
)

// Store keeps agents' lifecycle state, their schedules and their runs in symbi's SQLite
// state file (tables agents_state, agents_schedule, agents_runs).
//
// Writes of states, schedules and runs are group-committed: SaveState, SaveSchedule,
// DeleteSchedule and SaveRun keep a snapshot of the row (the newest per key replaces an
// older one not yet written) and return; a writer goroutine, started when there is
// something to write and gone when there is not, commits what has accumulated in one
// transaction, then what accumulated meanwhile. Reads see the rows not yet written
// (LoadState, LoadSchedule) or write them first (Runs, FailInterrupted). Flush writes
// everything saved before it; call it before closing the database. A process that dies
// loses at most the rows of the transaction in progress and those saved during it.
type Store struct {
	db *sql.DB

	commitMu sync.Mutex // one commit at a time: rows reach the file in the order saved

	mu       sync.Mutex
	pending  *batch // saved, not yet taken by a commit
	inflight *batch // taken by the commit in progress
	writing  bool   // the writer goroutine is running
	err      error  // the last commit's error; nil after a commit succeeds

	prepOnce sync.Once
	prepErr  error
	stmts    [4]*sql.Stmt // upsert state, upsert schedule, delete schedule, upsert run
}

// The statements of a commit, prepared once (a transaction uses them through Tx.Stmt).
var storeStatements = [4]string{
	`INSERT INTO agents_state (name, state, reason, updated_ns) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET state = excluded.state, reason = excluded.reason, updated_ns = excluded.updated_ns`,
	`INSERT INTO agents_schedule (name, spec, due_ns, done) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, due_ns = excluded.due_ns, done = excluded.done`,
	`DELETE FROM agents_schedule WHERE name = ?`,
	`INSERT INTO agents_runs (id, agent, identity, trigger, state, reason, step, vars, created_ns, finished_ns)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, reason = excluded.reason, step = excluded.step,
		vars = excluded.vars, finished_ns = excluded.finished_ns`,
}

// prepare prepares the commit's statements on first use.
func (s *Store) prepare(ctx context.Context) error {
	s.prepOnce.Do(func() {
		for i, q := range storeStatements {
			st, err := s.db.PrepareContext(ctx, q)
			if err != nil {
				s.prepErr = fmt.Errorf("prepare agents' statements: %w", err)
				return
			}
			s.stmts[i] = st
		}
	})
	return s.prepErr
}

// maxBatch bounds the rows of one transaction, so that the state file's write lock is
// held briefly and other packages' writers are not kept waiting.
const maxBatch = 2048

// batch is rows to write, the newest per key.
type batch struct {
	states map[string]StateRecord
	scheds map[string]schedRow
	runs   map[string]RunRecord
}

type schedRow struct {
	spec    string
	due     time.Time
	done    bool
	deleted bool
}

func newBatch() *batch {
	return &batch{states: map[string]StateRecord{}, scheds: map[string]schedRow{}, runs: map[string]RunRecord{}}
}

func (b *batch) len() int { return len(b.states) + len(b.scheds) + len(b.runs) }

// OpenStore creates or migrates the agents' tables in db.
func OpenStore(ctx context.Context, db *sql.DB) (*Store, error) {
	const schema = `
CREATE TABLE IF NOT EXISTS agents_state (
	name       TEXT PRIMARY KEY,
	state      TEXT NOT NULL,
	reason     TEXT NOT NULL DEFAULT '',
	updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agents_schedule (
	name      TEXT PRIMARY KEY,
	spec      TEXT NOT NULL,
	due_ns    INTEGER NOT NULL,
	done      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS agents_runs (
	id          TEXT PRIMARY KEY,
	agent       TEXT NOT NULL,
	identity    TEXT NOT NULL,
	trigger     TEXT NOT NULL,
	state       TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT '',
	step        INTEGER NOT NULL DEFAULT 0,
	vars        TEXT NOT NULL DEFAULT '{}',
	created_ns  INTEGER NOT NULL,
	finished_ns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS agents_runs_agent ON agents_runs (agent, created_ns);
CREATE TABLE IF NOT EXISTS agents_lease (
	name       TEXT PRIMARY KEY,
	holder     TEXT NOT NULL,
	expires_ns INTEGER NOT NULL
);`
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("migrate agents tables: %w", err)
	}
	return &Store{db: db, pending: newBatch()}, nil
}

// StateRecord is an agent's persisted lifecycle state.
type StateRecord struct {
	State   State
	Reason  string
	Updated time.Time
}

// SaveState records an agent's lifecycle state. It returns the error of the last commit
// that failed, if the one after it has not succeeded yet (the state is kept and written
// all the same).
func (s *Store) SaveState(_ context.Context, name string, st State, reason string, at time.Time) error {
	return s.save(func(b *batch) { b.states[name] = StateRecord{State: st, Reason: reason, Updated: at} })
}

// LoadState returns an agent's persisted state; false when there is none.
func (s *Store) LoadState(ctx context.Context, name string) (StateRecord, bool, error) {
	s.mu.Lock()
	rec, ok := s.pending.states[name]
	if !ok && s.inflight != nil {
		rec, ok = s.inflight.states[name]
	}
	s.mu.Unlock()
	if ok {
		return rec, true, nil
	}
	var st, reason string
	var ns int64
	err := s.db.QueryRowContext(ctx, `SELECT state, reason, updated_ns FROM agents_state WHERE name = ?`, name).Scan(&st, &reason, &ns)
	if errors.Is(err, sql.ErrNoRows) {
		return StateRecord{}, false, nil
	}
	if err != nil {
		return StateRecord{}, false, fmt.Errorf("load agent state %s: %w", name, err)
	}
	return StateRecord{State: State(st), Reason: reason, Updated: time.Unix(0, ns)}, true, nil
}

// SaveSchedule records when an agent's schedule fires next (done: a one-shot that
// fired). Its error is SaveState's.
func (s *Store) SaveSchedule(_ context.Context, name, spec string, due time.Time, done bool) error {
	return s.save(func(b *batch) { b.scheds[name] = schedRow{spec: spec, due: due, done: done} })
}

// LoadSchedule returns an agent's persisted schedule; false when there is none.
func (s *Store) LoadSchedule(ctx context.Context, name string) (spec string, due time.Time, done, ok bool, err error) {
	s.mu.Lock()
	row, saved := s.pending.scheds[name]
	if !saved && s.inflight != nil {
		row, saved = s.inflight.scheds[name]
	}
	s.mu.Unlock()
	if saved {
		if row.deleted {
			return "", time.Time{}, false, false, nil
		}
		return row.spec, row.due, row.done, true, nil
	}
	var ns int64
	err = s.db.QueryRowContext(ctx, `SELECT spec, due_ns, done FROM agents_schedule WHERE name = ?`, name).Scan(&spec, &ns, &done)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, false, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, false, fmt.Errorf("load schedule %s: %w", name, err)
	}
	if ns != 0 {
		due = time.Unix(0, ns)
	}
	return spec, due, done, true, nil
}

// DeleteSchedule forgets an agent's schedule. Its error is SaveState's.
func (s *Store) DeleteSchedule(_ context.Context, name string) error {
	return s.save(func(b *batch) { b.scheds[name] = schedRow{deleted: true} })
}

// RunRecord is one run of an agent.
type RunRecord struct {
	ID       string                     `json:"id"`
	Agent    string                     `json:"agent"`
	Identity string                     `json:"identity"`
	Trigger  string                     `json:"trigger"` // schedule, manual, missed, resume
	State    RunState                   `json:"state"`
	Reason   string                     `json:"reason,omitempty"`
	Step     int                        `json:"step"` // steps completed
	Vars     map[string]json.RawMessage `json:"-"`    // saved step results, for a resumed run
	Created  time.Time                  `json:"created"`
	Finished time.Time                  `json:"finished,omitzero"`
}

// RunState is where a run is.
type RunState string

// Run states.
const (
	RunQueued    RunState = "queued"
	RunRunning   RunState = "running"
	RunSucceeded RunState = "succeeded"
	RunFailed    RunState = "failed"
	RunSuspended RunState = "suspended" // stopped at a step; resuming continues there
	RunCancelled RunState = "cancelled"
)

// SaveRun inserts or updates a run (a snapshot of r: later changes to r are not
// saved). Its error is SaveState's.
func (s *Store) SaveRun(_ context.Context, r *RunRecord) error {
	rec := *r
	rec.Vars = maps.Clone(r.Vars)
	return s.save(func(b *batch) { b.runs[rec.ID] = rec })
}

// save adds a row to the pending batch and starts the writer if it is not running.
func (s *Store) save(add func(*batch)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	add(s.pending)
	if !s.writing {
		s.writing = true
		go s.writer() // owned by the store: it ends when nothing is pending (Flush waits for the rows it took)
	}
	return s.err
}

// writer commits pending rows until there are none. A failing write is tried again
// after a pause, up to writeAttempts times; then the rows it could not write are dropped
// (their error stays for the next save or Flush to report).
func (s *Store) writer() {
	failures := 0
	for {
		s.mu.Lock()
		if s.pending.len() == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		time.Sleep(gather)
		if err := s.commit(context.Background()); err == nil {
			failures = 0
			continue
		}
		if failures++; failures >= writeAttempts {
			s.mu.Lock()
			s.pending = newBatch()
			s.mu.Unlock()
			failures = 0
			continue
		}
		time.Sleep(10 * time.Millisecond << failures) // 20ms, 40ms, 80ms, 160ms (and each attempt waits out a busy file)
	}
}

// gather is how long the writer lets rows accumulate before a commit: under load a
// commit then carries the rows of many runs (and a row saved twice meanwhile is written
// once); alone, a row waits that long to be written.
const gather = 2 * time.Millisecond

// writeAttempts is how many times the writer tries to write rows before it drops them.
const writeAttempts = 5

// Flush writes every row saved before it and returns the error of that write.
func (s *Store) Flush(ctx context.Context) error {
	for {
		s.mu.Lock()
		n := s.pending.len()
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if err := s.commit(ctx); err != nil {
			return err
		}
	}
	// A commit in progress (taken before this Flush) ends before commitMu is free.
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// commit takes up to maxBatch pending rows and writes them in one transaction. Rows of a
// failed write go back to the pending batch unless newer ones replaced them, and are
// tried again by the next commit.
func (s *Store) commit(ctx context.Context) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	b := s.take()
	s.inflight = b
	s.mu.Unlock()
	err := s.write(ctx, b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight = nil
	s.err = err
	if err != nil {
		for k, v := range b.states {
			if _, ok := s.pending.states[k]; !ok {
				s.pending.states[k] = v
			}
		}
		for k, v := range b.scheds {
			if _, ok := s.pending.scheds[k]; !ok {
				s.pending.scheds[k] = v
			}
		}
		for k, v := range b.runs {
			if _, ok := s.pending.runs[k]; !ok {
				s.pending.runs[k] = v
			}
		}
	}
	return err
}

// take removes up to maxBatch rows from the pending batch. The caller holds mu.
func (s *Store) take() *batch {
	if s.pending.len() <= maxBatch {
		b := s.pending
		s.pending = newBatch()
		return b
	}
	b, n := newBatch(), 0
	for k, v := range s.pending.states {
		if n == maxBatch {
			return b
		}
		b.states[k] = v
		delete(s.pending.states, k)
		n++
	}
	for k, v := range s.pending.scheds {
		if n == maxBatch {
			return b
		}
		b.scheds[k] = v
		delete(s.pending.scheds, k)
		n++
	}
	for k, v := range s.pending.runs {
		if n == maxBatch {
			return b
		}
		b.runs[k] = v
		delete(s.pending.runs, k)
		n++
	}
	return b
}

// write stores a batch in one transaction.
func (s *Store) write(ctx context.Context, b *batch) (err error) {
	if b.len() == 0 {
		return nil
	}
	if err := s.prepare(ctx); err != nil {
		return err
	}

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save agents' rows: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stmt := func(i int) *sql.Stmt { return tx.StmtContext(ctx, s.stmts[i]) }
	if len(b.states) > 0 {
		st := stmt(0)
		for name, r := range b.states {
			if _, err := st.ExecContext(ctx, name, string(r.State), r.Reason, r.Updated.UnixNano()); err != nil {
				return fmt.Errorf("save agent state %s: %w", name, err)
			}
		}
	}
	if len(b.scheds) > 0 {
		up, del := stmt(1), stmt(2)
		for name, r := range b.scheds {
			if r.deleted {
				if _, err := del.ExecContext(ctx, name); err != nil {
					return fmt.Errorf("delete schedule %s: %w", name, err)
				}
				continue
			}
			var ns int64
			if !r.due.IsZero() {
				ns = r.due.UnixNano()
			}
			if _, err := up.ExecContext(ctx, name, r.spec, ns, r.done); err != nil {
				return fmt.Errorf("save schedule %s: %w", name, err)
			}
		}
	}
	if len(b.runs) > 0 {
		st := stmt(3)
		for _, r := range b.runs {
			vars, err := json.Marshal(r.Vars)
			if err != nil {
				return fmt.Errorf("save run %s: %w", r.ID, err)
			}
			var fin int64
			if !r.Finished.IsZero() {
				fin = r.Finished.UnixNano()
			}
			if _, err := st.ExecContext(ctx, r.ID, r.Agent, r.Identity, r.Trigger, string(r.State), r.Reason, r.Step, string(vars),
				r.Created.UnixNano(), fin); err != nil {
				return fmt.Errorf("save run %s: %w", r.ID, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save agents' rows: %w", err)
	}
	return nil
}

// Runs returns an agent's newest runs, newest first.
func (s *Store) Runs(ctx context.Context, agent string, limit int) ([]RunRecord, error) {
	if err := s.Flush(ctx); err != nil {
		return nil, fmt.Errorf("list runs of %s: %w", agent, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, agent, identity, trigger, state, reason, step, vars, created_ns, finished_ns
		FROM agents_runs WHERE agent = ? ORDER BY created_ns DESC, rowid DESC LIMIT ?`, agent, limit)
	if err != nil {
		return nil, fmt.Errorf("list runs of %s: %w", agent, err)
	}
	defer rows.Close()
	var out []RunRecord
	for rows.Next() {
		var r RunRecord
		var st, vars string
		var cr, fin int64
		if err := rows.Scan(&r.ID, &r.Agent, &r.Identity, &r.Trigger, &st, &r.Reason, &r.Step, &vars, &cr, &fin); err != nil {
			return nil, fmt.Errorf("list runs of %s: %w", agent, err)
		}
		r.State, r.Created = RunState(st), time.Unix(0, cr)
		if fin != 0 {
			r.Finished = time.Unix(0, fin)
		}
		if err := json.Unmarshal([]byte(vars), &r.Vars); err != nil {
			return nil, fmt.Errorf("list runs of %s: decode saved results of %s: %w", agent, r.ID, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs of %s: %w", agent, err)
	}
	return out, nil
}

// FailInterrupted marks runs that were queued or running when symbi stopped as failed,
// and returns them.
func (s *Store) FailInterrupted(ctx context.Context, at time.Time) ([]RunRecord, error) {
	if err := s.Flush(ctx); err != nil {
		return nil, fmt.Errorf("find interrupted runs: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, agent FROM agents_runs WHERE state IN ('queued', 'running')`)
	if err != nil {
		return nil, fmt.Errorf("find interrupted runs: %w", err)
	}
	var out []RunRecord
	for rows.Next() {
		var r RunRecord
		if err := rows.Scan(&r.ID, &r.Agent); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find interrupted runs: %w", err)
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find interrupted runs: %w", err)
	}
	const reason = "symbi stopped during the run"
	if _, err := s.db.ExecContext(ctx, `UPDATE agents_runs SET state = 'failed', reason = ?, finished_ns = ? WHERE state IN ('queued', 'running')`,
		reason, at.UnixNano()); err != nil {
		return nil, fmt.Errorf("fail interrupted runs: %w", err)
	}
	for i := range out {
		out[i].State, out[i].Reason = RunFailed, reason
	}
	return out, nil
}

// AcquireLease takes or renews the named lease for holder until now+ttl, unless another
// holder's lease is still valid. It reports whether holder has it.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO agents_lease (name, holder, expires_ns) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ns = excluded.expires_ns
		WHERE agents_lease.holder = excluded.holder OR agents_lease.expires_ns < ?`,
		name, holder, now.Add(ttl).UnixNano(), now.UnixNano())
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return n == 1, nil
}

// ReleaseLease gives up holder's lease, if it has it.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM agents_lease WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}
