package agents

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Store keeps agents' lifecycle state, their schedules and their runs in symbi's SQLite
// state file (tables agents_state, agents_schedule, agents_runs).
type Store struct {
	db *sql.DB
}

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
	return &Store{db: db}, nil
}

// StateRecord is an agent's persisted lifecycle state.
type StateRecord struct {
	State   State
	Reason  string
	Updated time.Time
}

// SaveState records an agent's lifecycle state.
func (s *Store) SaveState(ctx context.Context, name string, st State, reason string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO agents_state (name, state, reason, updated_ns) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET state = excluded.state, reason = excluded.reason, updated_ns = excluded.updated_ns`,
		name, string(st), reason, at.UnixNano())
	if err != nil {
		return fmt.Errorf("save agent state %s: %w", name, err)
	}
	return nil
}

// LoadState returns an agent's persisted state; false when there is none.
func (s *Store) LoadState(ctx context.Context, name string) (StateRecord, bool, error) {
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

// SaveSchedule records when an agent's schedule fires next (done: a one-shot that fired).
func (s *Store) SaveSchedule(ctx context.Context, name, spec string, due time.Time, done bool) error {
	var ns int64
	if !due.IsZero() {
		ns = due.UnixNano()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO agents_schedule (name, spec, due_ns, done) VALUES (?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, due_ns = excluded.due_ns, done = excluded.done`,
		name, spec, ns, done)
	if err != nil {
		return fmt.Errorf("save schedule %s: %w", name, err)
	}
	return nil
}

// LoadSchedule returns an agent's persisted schedule; false when there is none.
func (s *Store) LoadSchedule(ctx context.Context, name string) (spec string, due time.Time, done, ok bool, err error) {
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

// DeleteSchedule forgets an agent's schedule.
func (s *Store) DeleteSchedule(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM agents_schedule WHERE name = ?`, name); err != nil {
		return fmt.Errorf("delete schedule %s: %w", name, err)
	}
	return nil
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

// SaveRun inserts or updates a run.
func (s *Store) SaveRun(ctx context.Context, r *RunRecord) error {
	vars, err := json.Marshal(r.Vars)
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.ID, err)
	}
	var fin int64
	if !r.Finished.IsZero() {
		fin = r.Finished.UnixNano()
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO agents_runs (id, agent, identity, trigger, state, reason, step, vars, created_ns, finished_ns)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, reason = excluded.reason, step = excluded.step,
		vars = excluded.vars, finished_ns = excluded.finished_ns`,
		r.ID, r.Agent, r.Identity, r.Trigger, string(r.State), r.Reason, r.Step, string(vars), r.Created.UnixNano(), fin)
	if err != nil {
		return fmt.Errorf("save run %s: %w", r.ID, err)
	}
	return nil
}

// Runs returns an agent's newest runs, newest first.
func (s *Store) Runs(ctx context.Context, agent string, limit int) ([]RunRecord, error) {
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
