package config

import (
	"net/url"
	"strings"
)

// State configures where symbi keeps the state replicas must agree on: SchemaPin key
// pins, the approvals used (and the key that MACs approval questions), MCP tasks and rate
// limit buckets. "" keeps them in the SQLite file in data_dir (and rate limits and used
// approvals in memory): one symbi. A postgres:// URL (or "env:NAME" naming a variable
// that holds one) shares them between every symbi on that database. The audit trail,
// the tool quarantine and everything else stay in each replica's data_dir.
type State struct {
	Store string `toml:"store"`
}

// Shared reports whether the state is in PostgreSQL, shared by replicas.
func (s *State) Shared() bool { return s.Store != "" }

// Validate reports the problems of s (a resolved store) to add.
func (s *State) Validate(add func(key, format string, args ...any)) {
	if s.Store == "" {
		return
	}
	// The messages never show the URL: it may carry a password.
	if !strings.HasPrefix(s.Store, "postgres://") && !strings.HasPrefix(s.Store, "postgresql://") {
		add("state.store", `must be "" (SQLite in data_dir) or a postgres:// URL`)
		return
	}
	if _, err := url.Parse(s.Store); err != nil {
		add("state.store", "is not a valid URL")
	}
}
