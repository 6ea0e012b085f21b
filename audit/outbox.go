package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Outbox holds events that another process recorded for the trail (an operator's
// `symbi tools approve`, say) in the state database the writer shares with it. The
// process that holds the trail drains it: each event is appended with its own id and
// time, made durable, and only then removed, so none is lost; a crash between the two
// can record one twice, with the same id.
type Outbox struct{ db *sql.DB }

// NewOutbox creates the outbox table if needed.
func NewOutbox(ctx context.Context, db *sql.DB) (*Outbox, error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS audit_outbox (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		event BLOB NOT NULL)`); err != nil {
		return nil, fmt.Errorf("create audit outbox: %w", err)
	}
	return &Outbox{db: db}, nil
}

// Put stores ev for the trail, filling its id and time.
func (o *Outbox) Put(ctx context.Context, ev Event) error {
	if ev.Type == "" {
		return fmt.Errorf("put audit event: no type")
	}
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode audit event: %w", err)
	}
	if _, err := o.db.ExecContext(ctx, `INSERT INTO audit_outbox (event) VALUES (?)`, b); err != nil {
		return fmt.Errorf("put audit event: %w", err)
	}
	return nil
}

// Drain appends every waiting event to l in the order they were put, flushes, and
// removes them. It returns how many it recorded. Several processes writing one trail
// may drain at once: each drain holds the state database's write lock (BEGIN
// IMMEDIATE) from reading the events to removing them, so an event goes to one writer.
func (o *Outbox) Drain(ctx context.Context, l *Log) (n int, err error) {
	var waiting int
	if err := o.db.QueryRowContext(ctx, `SELECT count(*) FROM audit_outbox`).Scan(&waiting); err != nil {
		return 0, fmt.Errorf("read audit outbox: %w", err)
	}
	if waiting == 0 {
		return 0, nil // the common case costs no write lock
	}
	conn, err := o.db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("read audit outbox: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return 0, fmt.Errorf("lock audit outbox: %w", err)
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), `ROLLBACK`)
		}
	}()
	rows, err := conn.QueryContext(ctx, `SELECT id, event FROM audit_outbox ORDER BY id`)
	if err != nil {
		return 0, fmt.Errorf("read audit outbox: %w", err)
	}
	type row struct {
		id int64
		ev Event
	}
	var todo []row
	for rows.Next() {
		var r row
		var b []byte
		if err := rows.Scan(&r.id, &b); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read audit outbox: %w", err)
		}
		if err := json.Unmarshal(b, &r.ev); err != nil {
			rows.Close()
			return 0, fmt.Errorf("decode audit outbox event %d: %w", r.id, err)
		}
		todo = append(todo, r)
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("read audit outbox: %w", err)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read audit outbox: %w", err)
	}
	if len(todo) == 0 { // another process drained them meanwhile
		_, err = conn.ExecContext(ctx, `COMMIT`)
		return 0, err
	}
	for _, r := range todo {
		if err := l.Append(ctx, r.ev); err != nil {
			return 0, err
		}
	}
	if err := l.Flush(ctx); err != nil {
		return 0, err
	}
	if _, err := conn.ExecContext(ctx, `DELETE FROM audit_outbox WHERE id <= ?`, todo[len(todo)-1].id); err != nil {
		return len(todo), fmt.Errorf("clear audit outbox: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
		return len(todo), fmt.Errorf("clear audit outbox: %w", err)
	}
	return len(todo), nil
}
