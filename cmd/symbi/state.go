package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/internal/replicas"
	"github.com/symbi-dev/symbi/internal/store"
)

// sharedState is the PostgreSQL database replicas share ([state] store): key pins, MCP
// tasks, rate limit buckets, used approvals and the approval key. A nil *sharedState is
// the single-symbi default (SQLite in data_dir, the rest in memory).
type sharedState struct {
	db        *sql.DB
	limiter   *replicas.Limiter
	approvals *replicas.Approvals
	key       []byte
}

// openSharedState connects to the configured shared state and migrates it; nil, nil
// when none is configured. The caller closes db.
func openSharedState(ctx context.Context, cfg config.State, log *slog.Logger) (*sharedState, error) {
	if !cfg.Shared() {
		return nil, nil
	}
	db, err := store.OpenPostgres(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	if err := replicas.Migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("shared state: %w", err)
	}
	key, err := replicas.ApprovalKey(ctx, db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("shared state: %w", err)
	}
	log.Info("state shared with other replicas in PostgreSQL", "shared", "pins, approvals, tasks, rate limits")
	return &sharedState{db: db, limiter: replicas.NewLimiter(db, log.With("component", "ratelimit")),
		approvals: replicas.NewApprovals(db), key: key}, nil
}

// pinDB is the database for key pins: nil (the one given to the gate) without sharing.
func (s *sharedState) pinDB() *sql.DB {
	if s == nil {
		return nil
	}
	return s.db
}

// or returns the shared database, or local without sharing.
func (s *sharedState) or(local *sql.DB) *sql.DB {
	if s == nil {
		return local
	}
	return s.db
}

// policyOptions adds the shared rate limiter and approval ledger to o.
func (s *sharedState) policyOptions(o gateway.PolicyOptions) gateway.PolicyOptions {
	if s != nil {
		o.Limiter, o.Approvals, o.ApprovalKey = s.limiter, s.approvals, s.key
	}
	return o
}

// checkSharedState connects to the shared state and migrates it, for symbi doctor.
func checkSharedState(ctx context.Context, cfg config.State) error {
	db, err := store.OpenPostgres(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := replicas.Migrate(ctx, db); err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	return nil
}

// resolveStateURL resolves a --state flag: a postgres:// URL, or env:NAME naming a
// variable that holds one. Errors never show the URL (it may carry a password).
func resolveStateURL(v string) (string, error) {
	if name, ok := strings.CutPrefix(v, "env:"); ok {
		val, found := os.LookupEnv(name)
		if !found || val == "" {
			return "", fmt.Errorf("environment variable %s is not set or empty", name)
		}
		v = val
	}
	st := config.State{Store: v}
	var probs []string
	st.Validate(func(key, format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) })
	if len(probs) > 0 {
		return "", fmt.Errorf("%s", strings.Join(probs, "; "))
	}
	return v, nil
}
