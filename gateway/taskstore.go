package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"
)

// SQLTaskStore keeps tasks in symbi's SQLite state file (table mcp_tasks).
type SQLTaskStore struct {
	db *sql.DB
}

// OpenTaskStore creates or migrates the tasks table in db.
func OpenTaskStore(ctx context.Context, db *sql.DB) (*SQLTaskStore, error) {
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

// SaveTask inserts or replaces the task's record.
func (s *SQLTaskStore) SaveTask(ctx context.Context, t *TaskRecord) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO mcp_tasks (id, owner, tool, upstream, status, message, created_ns, updated_ns, ttl_ns, result, error, pid)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, message = excluded.message, updated_ns = excluded.updated_ns,
			result = excluded.result, error = excluded.error`,
		t.ID, t.Owner, t.Tool, t.Upstream, t.Status, t.Message, t.Created.UnixNano(), t.Updated.UnixNano(), int64(t.TTL),
		nullBytes(t.Result), nullBytes(t.Error), os.Getpid())
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
	err := s.db.QueryRowContext(ctx, `SELECT owner, tool, upstream, status, message, created_ns, updated_ns, ttl_ns, result, error
		FROM mcp_tasks WHERE id = ?`, id).Scan(&t.Owner, &t.Tool, &t.Upstream, &t.Status, &t.Message, &created, &updated, &ttl, &result, &errJSON)
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

// FailUnfinished fails the tasks an earlier symbi left working or waiting for input,
// with message (a JSON-RPC internal error), and deletes the tasks past their TTL. A
// task whose symbi process is still alive (alive(pid), when alive is set: another
// symbi on the same state file) is left alone.
func (s *SQLTaskStore) FailUnfinished(ctx context.Context, now time.Time, message string, alive func(pid int) bool) (int, error) {
	errJSON, err := jsonRPCError(message)
	if err != nil {
		return 0, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, pid FROM mcp_tasks WHERE status IN (?, ?)`, TaskWorking, TaskInputRequired)
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
		res, err := s.db.ExecContext(ctx, `UPDATE mcp_tasks SET status = ?, message = ?, updated_ns = ?, error = ?, result = NULL
			WHERE id = ? AND status IN (?, ?)`, TaskFailed, message, now.UnixNano(), errJSON, id, TaskWorking, TaskInputRequired)
		if err != nil {
			return n, fmt.Errorf("fail unfinished task %s: %w", id, err)
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM mcp_tasks WHERE ttl_ns > 0 AND created_ns + ttl_ns < ?`, now.UnixNano()); err != nil {
		return n, fmt.Errorf("delete expired tasks: %w", err)
	}
	return n, nil
}
