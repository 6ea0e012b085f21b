package schemapin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/symbi-dev/symbi/internal/store"
)

// Pin is a key pinned for one tool of one domain.
type Pin struct {
	ToolID        string    `json:"tool_id"`
	Domain        string    `json:"domain"`
	Fingerprint   string    `json:"fingerprint"`
	PublicKeyPEM  string    `json:"public_key_pem,omitempty"`
	DeveloperName string    `json:"developer_name,omitempty"`
	Source        string    `json:"source"` // "tofu" (first verified use) or "operator"
	PinnedAt      time.Time `json:"pinned_at"`
}

// Key returns "tool@domain", the pin's identity.
func (p Pin) Key() string { return p.ToolID + "@" + p.Domain }

// PinStore keeps trust-on-first-use key pins in symbi's state: the SQLite file, or the
// PostgreSQL database replicas share (then the first replica to pin a key wins, and
// every replica refuses another key for the tool).
type PinStore struct {
	db  *sql.DB
	now func() time.Time
}

const pinSchema = `CREATE TABLE IF NOT EXISTS schemapin_pins (
	tool_id        TEXT NOT NULL,
	domain         TEXT NOT NULL,
	fingerprint    TEXT NOT NULL,
	public_key_pem TEXT NOT NULL DEFAULT '',
	developer_name TEXT NOT NULL DEFAULT '',
	source         TEXT NOT NULL,
	pinned_at      INTEGER NOT NULL,
	PRIMARY KEY (tool_id, domain)
)`

// pinSchemaPostgres is pinSchema for PostgreSQL (64-bit milliseconds).
const pinSchemaPostgres = `CREATE TABLE IF NOT EXISTS schemapin_pins (
	tool_id        TEXT NOT NULL,
	domain         TEXT NOT NULL,
	fingerprint    TEXT NOT NULL,
	public_key_pem TEXT NOT NULL DEFAULT '',
	developer_name TEXT NOT NULL DEFAULT '',
	source         TEXT NOT NULL,
	pinned_at      BIGINT NOT NULL,
	PRIMARY KEY (tool_id, domain)
)`

// NewPinStore creates the pin table on db if needed.
func NewPinStore(ctx context.Context, db *sql.DB) (*PinStore, error) {
	schema := pinSchema
	if store.IsPostgres(db) {
		schema = pinSchemaPostgres
	}
	if err := store.Migrate(ctx, db, "schemapin_pins", schema); err != nil {
		return nil, fmt.Errorf("create pin table: %w", err)
	}
	return &PinStore{db: db, now: time.Now}, nil
}

// Get returns the pin for tool@domain, if any.
func (s *PinStore) Get(ctx context.Context, toolID, domain string) (Pin, bool, error) {
	var p Pin
	var at int64
	err := s.db.QueryRowContext(ctx,
		store.Rebind(s.db, `SELECT tool_id, domain, fingerprint, public_key_pem, developer_name, source, pinned_at
		 FROM schemapin_pins WHERE tool_id = ? AND domain = ?`), toolID, domain).
		Scan(&p.ToolID, &p.Domain, &p.Fingerprint, &p.PublicKeyPEM, &p.DeveloperName, &p.Source, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Pin{}, false, nil
	}
	if err != nil {
		return Pin{}, false, fmt.Errorf("read pin %s@%s: %w", toolID, domain, err)
	}
	p.PinnedAt = time.UnixMilli(at).UTC()
	return p, true, nil
}

// Pin sets (or replaces) the pin for p.ToolID@p.Domain: an operator's decision.
func (s *PinStore) Pin(ctx context.Context, p Pin) error {
	if p.ToolID == "" || p.Fingerprint == "" {
		return errors.New("pin key: tool and fingerprint are required")
	}
	if p.Source == "" {
		p.Source = "operator"
	}
	_, err := s.db.ExecContext(ctx,
		store.Rebind(s.db, `INSERT INTO schemapin_pins (tool_id, domain, fingerprint, public_key_pem, developer_name, source, pinned_at)
		 VALUES (?, ?, ?, ?, ?, ?, ?)
		 ON CONFLICT (tool_id, domain) DO UPDATE SET fingerprint = excluded.fingerprint,
		   public_key_pem = excluded.public_key_pem, developer_name = excluded.developer_name,
		   source = excluded.source, pinned_at = excluded.pinned_at`),
		p.ToolID, p.Domain, p.Fingerprint, p.PublicKeyPEM, p.DeveloperName, p.Source, s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("pin key %s: %w", p.Key(), err)
	}
	return nil
}

// pinFirst pins p unless tool@domain is pinned already, and returns the pin in force.
func (s *PinStore) pinFirst(ctx context.Context, p Pin) (Pin, error) {
	_, err := s.db.ExecContext(ctx,
		store.Rebind(s.db, `INSERT INTO schemapin_pins (tool_id, domain, fingerprint, public_key_pem, developer_name, source, pinned_at)
		 VALUES (?, ?, ?, ?, ?, 'tofu', ?) ON CONFLICT (tool_id, domain) DO NOTHING`),
		p.ToolID, p.Domain, p.Fingerprint, p.PublicKeyPEM, p.DeveloperName, s.now().UnixMilli())
	if err != nil {
		return Pin{}, fmt.Errorf("pin key %s: %w", p.Key(), err)
	}
	got, ok, err := s.Get(ctx, p.ToolID, p.Domain)
	if err != nil {
		return Pin{}, err
	}
	if !ok {
		return Pin{}, fmt.Errorf("pin key %s: pin vanished", p.Key())
	}
	return got, nil
}

// Unpin removes the pin for tool@domain; the next verified use pins again. It reports
// whether a pin existed.
func (s *PinStore) Unpin(ctx context.Context, toolID, domain string) (bool, error) {
	res, err := s.db.ExecContext(ctx, store.Rebind(s.db, `DELETE FROM schemapin_pins WHERE tool_id = ? AND domain = ?`), toolID, domain)
	if err != nil {
		return false, fmt.Errorf("unpin key %s@%s: %w", toolID, domain, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("unpin key %s@%s: %w", toolID, domain, err)
	}
	return n > 0, nil
}

// List returns every pin, ordered by domain and tool.
func (s *PinStore) List(ctx context.Context) ([]Pin, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT tool_id, domain, fingerprint, public_key_pem, developer_name, source, pinned_at
		 FROM schemapin_pins ORDER BY domain, tool_id`)
	if err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	defer rows.Close()
	var out []Pin
	for rows.Next() {
		var p Pin
		var at int64
		if err := rows.Scan(&p.ToolID, &p.Domain, &p.Fingerprint, &p.PublicKeyPEM, &p.DeveloperName, &p.Source, &at); err != nil {
			return nil, fmt.Errorf("list pins: %w", err)
		}
		p.PinnedAt = time.UnixMilli(at).UTC()
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	return out, nil
}
