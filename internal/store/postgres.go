package store

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// OpenPostgres opens the PostgreSQL database at url (postgres:// or postgresql://) that
// several symbi replicas share for their state: key pins, approvals, tasks and rate
// limits. The caller closes it. The error never contains the URL (it may carry a
// password).
func OpenPostgres(ctx context.Context, url string) (*sql.DB, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("open shared state: %w", redact(err, url))
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to the shared state database: %w", redact(err, url))
	}
	return db, nil
}

// redact keeps a URL out of an error message.
func redact(err error, url string) error {
	if url == "" || !strings.Contains(err.Error(), url) {
		return err
	}
	return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), url, "REDACTED"))
}

// IsPostgres reports whether db is a PostgreSQL database opened by [OpenPostgres]
// rather than the SQLite state file.
func IsPostgres(db *sql.DB) bool {
	_, ok := db.Driver().(*stdlib.Driver)
	return ok
}

// Rebind rewrites the ? placeholders of query as $1, $2, ... when db is PostgreSQL, so
// one query text serves both backends. The queries it is used on have no ? inside
// string literals.
func Rebind(db *sql.DB, query string) string {
	if !IsPostgres(db) {
		return query
	}
	return rebindDollar(query)
}

func rebindDollar(query string) string {
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// Migrate runs the schema statements ddl on db. On PostgreSQL it holds a transaction
// advisory lock named after name meanwhile: replicas starting at once would otherwise
// race on CREATE TABLE IF NOT EXISTS (PostgreSQL can then fail one of them with a
// unique violation in its catalog).
func Migrate(ctx context.Context, db *sql.DB, name, ddl string) error {
	if !IsPostgres(db) {
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
		return nil
	}
	h := fnv.New64a()
	h.Write([]byte("symbi-state:" + name))
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return fmt.Errorf("migrate %s: lock: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	return nil
}
