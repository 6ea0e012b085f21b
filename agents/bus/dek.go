package bus

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
)

// Which key encrypts a stored message's payload (bus_messages.dek).
const (
	dekMaster    = 0 // the master key itself (messages stored before data keys existed)
	dekRecipient = 1 // the recipient's data key, kept in bus_data_keys wrapped by the master key
)

// addDEKColumn adds bus_messages.dek to a table created before data keys existed; its
// rows keep 0, the master key they were encrypted with.
func addDEKColumn(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info('bus_messages')`)
	if err != nil {
		return fmt.Errorf("migrate bus tables: %w", err)
	}
	found := false
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return fmt.Errorf("migrate bus tables: %w", err)
		}
		found = found || name == "dek"
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate bus tables: %w", err)
	}
	if found {
		return nil
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE bus_messages ADD COLUMN dek INTEGER NOT NULL DEFAULT 0`); err != nil {
		// Another process may have added it meanwhile.
		var again int
		if qerr := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('bus_messages') WHERE name = 'dek'`).Scan(&again); qerr != nil || again == 0 {
			return fmt.Errorf("migrate bus tables: %w", err)
		}
	}
	return nil
}

func dekAAD(identity string) []byte { return []byte("symbi-bus-dek-v1\x00" + identity) }

// dataKey returns the key of kind for identity's messages. The recipient's data key is
// read from the state store and unwrapped with the master key; one that is missing or
// does not unwrap is ErrTampered.
func (b *Bus) dataKey(ctx context.Context, q querier, identity string, kind int) (cipher.AEAD, error) {
	return b.dataKeyOf(ctx, q, identity, kind, false)
}

// dataKeyOf is dataKey; create makes a missing data key (q must then be a dbtx).
func (b *Bus) dataKeyOf(ctx context.Context, q querier, identity string, kind int, create bool) (cipher.AEAD, error) {
	switch kind {
	case dekMaster:
		return b.aead, nil
	case dekRecipient:
	default:
		return nil, fmt.Errorf("unknown data key kind %d: %w", kind, ErrTampered)
	}
	b.mu.Lock()
	k, ok := b.deks[identity]
	b.mu.Unlock()
	if ok {
		return k, nil
	}
	var wrapped []byte
	var err error
	if b.nb != nil {
		var fresh []byte
		if create {
			if fresh, err = b.wrapNewDataKey(identity); err != nil {
				return nil, err
			}
		}
		wrapped, err = getOrCreate(ctx, b.nb.deks, token(identity), fresh)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			err = sql.ErrNoRows
		}
	} else {
		err = q.QueryRowContext(ctx, qLoadDataKey, identity).Scan(&wrapped)
	}
	if errors.Is(err, sql.ErrNoRows) && create && b.nb == nil {
		x, ok := q.(dbtx)
		if !ok {
			return nil, fmt.Errorf("create data key of %s: no writer", identity)
		}
		if wrapped, err = b.newDataKey(ctx, x, identity); err != nil {
			return nil, err
		}
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("data key of %s is missing: %w", identity, ErrTampered)
	}
	if err != nil {
		return nil, fmt.Errorf("load data key of %s: %w", identity, err)
	}
	ns := b.aead.NonceSize()
	if len(wrapped) < ns {
		return nil, fmt.Errorf("unwrap data key of %s: %w", identity, ErrTampered)
	}
	raw, err := b.aead.Open(nil, wrapped[:ns], wrapped[ns:], dekAAD(identity))
	if err != nil || len(raw) != KeySize {
		return nil, fmt.Errorf("unwrap data key of %s: %w", identity, ErrTampered)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("data key of %s: %w", identity, err)
	}
	k, err = cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("data key of %s: %w", identity, err)
	}
	// A key read where it may have been created inside a transaction is not cached: the
	// transaction may yet roll back (reads without create only see committed keys, or
	// keys their own transaction did not create).
	if p, ok := q.(prepared); !create || b.nb != nil || (ok && p.tx == nil) {
		b.mu.Lock()
		b.deks[identity] = k
		b.mu.Unlock()
	}
	return k, nil
}

// newDataKey stores a new wrapped data key for identity, unless another writer got
// there first, and returns the stored one.
func (b *Bus) newDataKey(ctx context.Context, x dbtx, identity string) ([]byte, error) {
	wrapped, err := b.wrapNewDataKey(identity)
	if err != nil {
		return nil, err
	}
	if _, err := x.ExecContext(ctx, `INSERT INTO bus_data_keys (identity, wrapped) VALUES (?, ?) ON CONFLICT (identity) DO NOTHING`, identity, wrapped); err != nil {
		return nil, fmt.Errorf("store data key of %s: %w", identity, err)
	}
	var stored []byte
	if err := x.QueryRowContext(ctx, qLoadDataKey, identity).Scan(&stored); err != nil {
		return nil, fmt.Errorf("store data key of %s: %w", identity, err)
	}
	return stored, nil
}

// wrapNewDataKey makes a data key for identity, wrapped by the master key.
func (b *Bus) wrapNewDataKey(identity string) ([]byte, error) {
	raw := make([]byte, KeySize)
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, raw); err != nil {
		return nil, fmt.Errorf("generate data key of %s: %w", identity, err)
	}
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, fmt.Errorf("generate data key of %s: %w", identity, err)
	}
	return b.aead.Seal(nonce, nonce, raw, dekAAD(identity)), nil
}
