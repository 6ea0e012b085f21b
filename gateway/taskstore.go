package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

// SQLTaskStore keeps tasks in symbi's state (table mcp_tasks): the SQLite file, or the
// PostgreSQL database replicas share, where a task created through one replica is read
// through any other (by its owner only: see Gateway.findTask).
type SQLTaskStore struct {
	db *sql.DB
	// host names this machine in the PostgreSQL table, so that a replica starting up
	// fails only the unfinished tasks of dead symbi processes on its own host ("" on
	// SQLite, whose file is on one host).
	host string
}

// OpenTaskStore creates or migrates the tasks table in db.
func OpenTaskStore(ctx context.Context, db *sql.DB) (*SQLTaskStore, error) {
	if store.IsPostgres(db) {
		if err := store.Migrate(ctx, db, "mcp_tasks", taskSchemaPostgres); err != nil {
			return nil, fmt.Errorf("migrate tasks table: %w", err)
		}
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		return &SQLTaskStore{db: db, host: host}, nil
	}
	const schema = `
CREATE TABLE IF NOT EXISTS mcp_tasks (
	id         TEXT PRIMARY KEY,
	owner      TEXT NOT NULL,
	tool       TEXT NOT NULL,
	upstream   TEXT NOT NULL,
	status     TEXT NOT NULL,
	message    TEXT NOT NULL DEFAULT '',
	created_ns INTEGER NOT NULL,
	updated_ns INTEGER NOT NULL,
	ttl_ns     INTEGER NOT NULL,
	result     BLOB,
	error      BLOB,
	pid        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS mcp_tasks_status ON mcp_tasks (status);`
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("migrate tasks table: %w", err)
	}
	return &SQLTaskStore{db: db}, nil
}

const taskSchemaPostgres = `
CREATE TABLE IF NOT EXISTS mcp_tasks (
	id         TEXT PRIMARY KEY,
	owner      TEXT NOT NULL,
	tool       TEXT NOT NULL,
	upstream   TEXT NOT NULL,
	status     TEXT NOT NULL,
	message    TEXT NOT NULL DEFAULT '',
	created_ns BIGINT NOT NULL,
	updated_ns BIGINT NOT NULL,
	ttl_ns     BIGINT NOT NULL,
	result     BYTEA,
	error      BYTEA,
	pid        INTEGER NOT NULL DEFAULT 0,
	host       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS mcp_tasks_status ON mcp_tasks (status);`

// SaveTask inserts or replaces the task's record.
func (s *SQLTaskStore) SaveTask(ctx context.Context, t *TaskRecord) error {
	q := `INSERT INTO mcp_tasks (id, owner, tool, upstream, status, message, created_ns, updated_ns, ttl_ns, result, error, pid)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, message = excluded.message, updated_ns = excluded.updated_ns,
			result = excluded.result, error = excluded.error`
	args := []any{t.ID, t.Owner, t.Tool, t.Upstream, t.Status, t.Message, t.Created.UnixNano(), t.Updated.UnixNano(), int64(t.TTL),
		nullBytes(t.Result), nullBytes(t.Error), os.Getpid()}
	if s.host != "" {
		q = `INSERT INTO mcp_tasks (id, owner, tool, upstream, status, message, created_ns, updated_ns, ttl_ns, result, error, pid, host)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, message = excluded.message, updated_ns = excluded.updated_ns,
			result = excluded.result, error = excluded.error`
		args = append(args, s.host)
	}
	_, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("save task %s: %w", t.ID, err)
	}
	return nil
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// LoadTask returns the task with the id; false when there is none.
func (s *SQLTaskStore) LoadTask(ctx context.Context, id string) (*TaskRecord, bool, error) {
	t := &TaskRecord{ID: id}
	var created, updated, ttl int64
	var result, errJSON []byte
	err := s.db.QueryRowContext(ctx, store.Rebind(s.db, `SELECT owner, tool, upstream, status, message, created_ns, updated_ns, ttl_ns, result, error
		FROM mcp_tasks WHERE id = ?`), id).Scan(&t.Owner, &t.Tool, &t.Upstream, &t.Status, &t.Message, &created, &updated, &ttl, &result, &errJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("load task %s: %w", id, err)
	}
	t.Result, t.Error = result, errJSON
	t.Created, t.Updated, t.TTL = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC(), time.Duration(ttl)
	return t, true, nil
}

// RecentTasks lists owner's newest tasks, at most limit, newest first, without their
// results (the web console's list). Tasks past their TTL are left out, as tasks/get
// would leave them.
func (s *SQLTaskStore) RecentTasks(ctx context.Context, owner string, limit int, now time.Time) ([]TaskRecord, error) {
	rows, err := s.db.QueryContext(ctx, store.Rebind(s.db, `SELECT id, tool, upstream, status, message, created_ns, updated_ns, ttl_ns
		FROM mcp_tasks WHERE owner = ? ORDER BY created_ns DESC, id LIMIT ?`), owner, limit)
	if err != nil {
		return nil, fmt.Errorf("list tasks of %s: %w", owner, err)
	}
	defer rows.Close()
	var out []TaskRecord
	for rows.Next() {
		t := TaskRecord{Owner: owner}
		var created, updated, ttl int64
		if err := rows.Scan(&t.ID, &t.Tool, &t.Upstream, &t.Status, &t.Message, &created, &updated, &ttl); err != nil {
			return nil, fmt.Errorf("list tasks of %s: %w", owner, err)
		}
		t.Created, t.Updated, t.TTL = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC(), time.Duration(ttl)
		if !t.expired(now) {
			out = append(out, t)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tasks of %s: %w", owner, err)
	}
	return out, nil
}

// FailUnfinished fails the tasks an earlier symbi left working or waiting for input,
// with message (a JSON-RPC internal error), and deletes the tasks past their TTL. A
// task whose symbi process is still alive (alive(pid), when alive is set: another
// symbi on the same state file) is left alone. On PostgreSQL only the tasks of symbi
// processes on this host are looked at: another host's replica may be running them
// (they go when their TTL has passed).
func (s *SQLTaskStore) FailUnfinished(ctx context.Context, now time.Time, message string, alive func(pid int) bool) (int, error) {
	errJSON, err := jsonRPCError(message)
	if err != nil {
		return 0, err
	}
	q, args := `SELECT id, pid FROM mcp_tasks WHERE status IN (?, ?)`, []any{TaskWorking, TaskInputRequired}
	if s.host != "" {
		q, args = q+` AND host = ?`, append(args, s.host)
	}
	rows, err := s.db.QueryContext(ctx, store.Rebind(s.db, q), args...)
	if err != nil {
		return 0, fmt.Errorf("find unfinished tasks: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		var pid int
		if err := rows.Scan(&id, &pid); err != nil {
			rows.Close()
			return 0, fmt.Errorf("find unfinished tasks: %w", err)
		}
		if alive == nil || !alive(pid) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("find unfinished tasks: %w", err)
	}
	n := 0
	for _, id := range ids {
		res, err := s.db.ExecContext(ctx, store.Rebind(s.db, `UPDATE mcp_tasks SET status = ?, message = ?, updated_ns = ?, error = ?, result = NULL
			WHERE id = ? AND status IN (?, ?)`), TaskFailed, message, now.UnixNano(), errJSON, id, TaskWorking, TaskInputRequired)
		if err != nil {
			return n, fmt.Errorf("fail unfinished task %s: %w", id, err)
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	if _, err := s.db.ExecContext(ctx, store.Rebind(s.db, `DELETE FROM mcp_tasks WHERE ttl_ns > 0 AND created_ns + ttl_ns < ?`), now.UnixNano()); err != nil {
		return n, fmt.Errorf("delete expired tasks: %w", err)
	}
	return n, nil
}

// DeleteExpired deletes the finished tasks past their TTL at now (the gateway's
// periodic sweep) and reports how many went.
func (s *SQLTaskStore) DeleteExpired(ctx context.Context, now time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, store.Rebind(s.db, `DELETE FROM mcp_tasks WHERE ttl_ns > 0 AND created_ns + ttl_ns < ?
		AND status NOT IN (?, ?)`), now.UnixNano(), TaskWorking, TaskInputRequired)
	if err != nil {
		return 0, fmt.Errorf("delete expired tasks: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
