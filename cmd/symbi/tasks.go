package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/symbi-dev/symbi/gateway"
)

// openTaskStore opens the MCP tasks' table and fails the tasks an earlier symbi left
// running: their upstream calls ended with it. Tasks of another symbi that is still
// running on the same data_dir are left alone.
func openTaskStore(ctx context.Context, db *sql.DB, log *slog.Logger) (*gateway.SQLTaskStore, error) {
	ts, err := gateway.OpenTaskStore(ctx, db)
	if err != nil {
		return nil, err
	}
	n, err := ts.FailUnfinished(ctx, time.Now(), "symbi stopped while the task was running; its upstream call was lost", processAlive)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		log.Info("tasks left running by an earlier symbi marked failed", "tasks", n)
	}
	return ts, nil
}

// processAlive reports whether another process with the pid runs on this host.
func processAlive(pid int) bool {
	if pid <= 0 || pid == os.Getpid() {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
