// Package replicas keeps, in the PostgreSQL database several symbi replicas share, the
// state that the single-process default keeps in memory: the rate limit buckets (so N
// replicas enforce one limit), the approvals already used (so an approval is used once
// across replicas) and the key that MACs approval states (so any replica can check an
// approval another asked for). Key pins and MCP tasks have SQL stores of their own
// (schemapin.PinStore, gateway.SQLTaskStore) that run on the same database.
package replicas

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

const schema = `
CREATE TABLE IF NOT EXISTS symbi_rate_buckets (
	key     BYTEA PRIMARY KEY, -- identity NUL tool: TEXT cannot hold NUL
	tokens  DOUBLE PRECISION NOT NULL,
	allowed BOOLEAN NOT NULL,
	at      TIMESTAMPTZ NOT NULL,
	full_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS symbi_rate_buckets_full ON symbi_rate_buckets (full_at);
CREATE TABLE IF NOT EXISTS symbi_approvals_used (
	nonce   BYTEA PRIMARY KEY,
	expires TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS symbi_approvals_used_expires ON symbi_approvals_used (expires);
CREATE TABLE IF NOT EXISTS symbi_secrets (
	name  TEXT PRIMARY KEY,
	value BYTEA NOT NULL
);`

// Migrate creates the package's tables on db (a PostgreSQL database).
func Migrate(ctx context.Context, db *sql.DB) error {
	if !store.IsPostgres(db) {
		return errors.New("the shared replica state needs PostgreSQL")
	}
	return store.Migrate(ctx, db, "replicas", schema)
}

// purgeEvery is how many operations pass between two purges of the rows that no longer
// matter (full buckets, expired approvals).
const purgeEvery = 1024

// opTimeout bounds one database operation of Allow and Spend.
const opTimeout = 3 * time.Second

// Limiter is a token-bucket rate limiter (policy.RateLimiter) whose buckets are rows of
// symbi_rate_buckets: each Allow is one atomic upsert that refills the bucket by the
// time passed (on the database's clock, the same for every replica), takes a token if
// there is one and returns the outcome. A bucket refilled to capacity is equivalent to
// none, so such rows are purged now and then. When the database cannot answer, Allow
// refuses (fail closed) and logs why.
type Limiter struct {
	db    *sql.DB
	log   *slog.Logger
	calls atomic.Uint64
}

// NewLimiter returns a limiter on db (migrated with [Migrate]). log may be nil.
func NewLimiter(db *sql.DB, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{db: db, log: log}
}

// The refilled level of the bucket, capped at the capacity ($2), at the insert's time.
const refilled = `LEAST($2::float8, b.tokens + GREATEST(0, EXTRACT(EPOCH FROM (excluded.at - b.at))::float8) * $3::float8)`

const allowQuery = `INSERT INTO symbi_rate_buckets AS b (key, tokens, allowed, at, full_at)
	VALUES ($1, $2::float8 - 1, true, clock_timestamp(), clock_timestamp() + make_interval(secs => $2::float8 / $3::float8))
	ON CONFLICT (key) DO UPDATE SET
		tokens  = CASE WHEN ` + refilled + ` >= 1 THEN ` + refilled + ` - 1 ELSE ` + refilled + ` END,
		allowed = ` + refilled + ` >= 1,
		at      = GREATEST(b.at, excluded.at),
		full_at = excluded.full_at
	RETURNING allowed, tokens`

// Allow implements policy.RateLimiter.
func (l *Limiter) Allow(key string, perMinute, burst int) (bool, time.Duration) {
	if perMinute <= 0 {
		return false, time.Duration(math.MaxInt64)
	}
	if burst <= 0 {
		burst = perMinute
	}
	rate := float64(perMinute) / 60
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if l.calls.Add(1)%purgeEvery == 0 {
		if _, err := l.db.ExecContext(ctx, `DELETE FROM symbi_rate_buckets WHERE full_at < clock_timestamp()`); err != nil {
			l.log.Warn("purge full rate limit buckets", "err", err)
		}
	}
	var allowed bool
	var tokens float64
	if err := l.db.QueryRowContext(ctx, allowQuery, []byte(key), float64(burst), rate).Scan(&allowed, &tokens); err != nil {
		l.log.Error("rate limit: shared state unavailable; refusing", "err", err)
		return false, time.Second
	}
	if allowed {
		return true, 0
	}
	return false, time.Duration((1 - tokens) / rate * float64(time.Second))
}

// Approvals records the approvals used (gateway.ApprovalLedger) in
// symbi_approvals_used, one row per nonce until it has expired: the row's primary key
// makes the first replica to spend an approval the only one.
type Approvals struct {
	db    *sql.DB
	calls atomic.Uint64
}

// NewApprovals returns the ledger on db (migrated with [Migrate]).
func NewApprovals(db *sql.DB) *Approvals { return &Approvals{db: db} }

// keepSpent is how long past its expiry a used approval is remembered: more than any
// clock difference between replicas, which check the expiry on their own clocks.
const keepSpent = time.Hour

// Spend implements gateway.ApprovalLedger.
func (a *Approvals) Spend(ctx context.Context, nonce []byte, expires time.Time) (bool, error) {
	if a.calls.Add(1)%purgeEvery == 0 {
		if _, err := a.db.ExecContext(ctx, `DELETE FROM symbi_approvals_used WHERE expires < $1`, time.Now().Add(-keepSpent)); err != nil {
			return false, fmt.Errorf("purge used approvals: %w", err)
		}
	}
	res, err := a.db.ExecContext(ctx, `INSERT INTO symbi_approvals_used (nonce, expires) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING`, nonce, expires)
	if err != nil {
		return false, fmt.Errorf("record approval as used: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record approval as used: %w", err)
	}
	return n == 1, nil
}

// ApprovalKey returns the key that MACs approval states, the same for every replica:
// the first to ask creates it (32 random bytes) in symbi_secrets.
func ApprovalKey(ctx context.Context, db *sql.DB) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("approval key: %w", err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO symbi_secrets (name, value) VALUES ('approval_key', $1) ON CONFLICT (name) DO NOTHING`, key); err != nil {
		return nil, fmt.Errorf("approval key: %w", err)
	}
	var got []byte
	if err := db.QueryRowContext(ctx, `SELECT value FROM symbi_secrets WHERE name = 'approval_key'`).Scan(&got); err != nil {
		return nil, fmt.Errorf("approval key: %w", err)
	}
	if len(got) < 32 {
		return nil, fmt.Errorf("approval key: the stored key has %d bytes, want 32", len(got))
	}
	return got, nil
}
