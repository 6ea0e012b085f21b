// Package store opens symbi's state: the embedded SQLite file in data_dir, or a PostgreSQL
// database several replicas share ([OpenPostgres]). It owns only the connection
// settings (WAL, busy timeout, foreign keys); each domain package creates and migrates
// its own tables on the *sql.DB it is handed.
package store

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// FileName is the state file inside the data directory.
const FileName = "symbi.db"

// Open opens (creating if missing) the SQLite database at path with the settings every
// package relies on. The caller closes it.
func Open(path string) (*sql.DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
	}
	dsn := "file:" + path + "?_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=on&_synchronous=NORMAL"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return db, nil
}

// OpenMemory opens a private in-memory database, for tests.
func OpenMemory() (*sql.DB, error) {
	db, err := sql.Open("sqlite3", "file::memory:?_foreign_keys=on")
	if err != nil {
		return nil, fmt.Errorf("open memory state: %w", err)
	}
	db.SetMaxOpenConns(1) // one connection: every query sees the same in-memory database
	return db, nil
}
