package bus

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"crypto/ed25519"

	"github.com/nats-io/nats.go/jetstream"
)

// Master key rotation. The master key wraps the identities' signing keys and data keys
// (and encrypted the payloads stored before data keys existed); rotating it re-wraps
// those under a new key, leaving every message's ciphertext and signature as they are.
//
// The bus records a check value sealed by the master key (bus_master; on NATS the
// "=master" entry of the KEYS bucket, a key no identity's token can be), so that a bus
// opened with another key is refused at once instead of dead-lettering every message
// as tampered.

// ErrWrongKey is returned by Open, OpenNATS and RotateKey when the master key given is
// not the one the bus's stored keys are wrapped with.
var ErrWrongKey = errors.New("the master key is not the one the bus's keys are wrapped with")

// NextKeySuffix names the new master key while a rotation runs: <key_file>.next. Its
// presence means a rotation has not finished; LoadKey refuses to start on it.
const NextKeySuffix = ".next"

const (
	masterCheck    = "symbi-bus-master-check-v1"
	masterCheckAAD = "symbi-bus-master-v1"
	natsMasterKey  = "=master"
)

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("master key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts plain under aead with a fresh nonce: nonce || ciphertext.
func seal(aead cipher.AEAD, plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	return aead.Seal(nonce, nonce, plain, aad), nil
}

// unseal opens what seal made.
func unseal(aead cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	ns := aead.NonceSize()
	if len(sealed) < ns {
		return nil, ErrTampered
	}
	return aead.Open(nil, sealed[:ns], sealed[ns:], aad)
}

func checkValue(aead cipher.AEAD) ([]byte, error) {
	return seal(aead, []byte(masterCheck), []byte(masterCheckAAD))
}

func checkOpens(aead cipher.AEAD, sealed []byte) bool {
	p, err := unseal(aead, sealed, []byte(masterCheckAAD))
	return err == nil && string(p) == masterCheck
}

// checkMaster refuses a master key that does not open the stored check value. A state
// store without one (made before it existed) is checked against a stored key, and then
// gets its check value.
func (b *Bus) checkMaster(ctx context.Context, db *sql.DB) error {
	var sealed []byte
	err := db.QueryRowContext(ctx, `SELECT sealed FROM bus_master WHERE id = 1`).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		if err := b.checkStoredKey(ctx, db); err != nil {
			return err
		}
		v, verr := checkValue(b.aead)
		if verr != nil {
			return fmt.Errorf("open bus: %w", verr)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO bus_master (id, sealed) VALUES (1, ?) ON CONFLICT (id) DO NOTHING`, v); err != nil {
			return fmt.Errorf("open bus: record the master key check: %w", err)
		}
		err = db.QueryRowContext(ctx, `SELECT sealed FROM bus_master WHERE id = 1`).Scan(&sealed)
	}
	if err != nil {
		return fmt.Errorf("open bus: read the master key check: %w", err)
	}
	if !checkOpens(b.aead, sealed) {
		return fmt.Errorf("open bus: %w", ErrWrongKey)
	}
	return nil
}

func (b *Bus) checkMasterUnlessSkipped(ctx context.Context, db *sql.DB) error {
	if b.o.skipMasterCheck {
		return nil
	}
	return b.checkMaster(ctx, db)
}

// checkStoredKey tries the master key on one stored data key or signing key, if any.
func (b *Bus) checkStoredKey(ctx context.Context, db *sql.DB) error {
	var identity string
	var wrapped []byte
	err := db.QueryRowContext(ctx, `SELECT identity, wrapped FROM bus_data_keys LIMIT 1`).Scan(&identity, &wrapped)
	aad := dekAAD
	if errors.Is(err, sql.ErrNoRows) {
		aad = keyAAD
		err = db.QueryRowContext(ctx, `SELECT identity, sealed FROM bus_keys LIMIT 1`).Scan(&identity, &wrapped)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open bus: %w", err)
	}
	if _, err := unseal(b.aead, wrapped, aad(identity)); err != nil {
		return fmt.Errorf("open bus: %w", ErrWrongKey)
	}
	return nil
}

// RotateStats counts what a rotation re-wrapped or re-encrypted.
type RotateStats struct {
	SigningKeys int // identities' signing keys re-sealed
	DataKeys    int // data keys re-wrapped (or made, for messages stored under the master key)
	Messages    int // messages moved from the master key to their recipient's data key
}

// rewrap re-wraps one sealed value from old to next. A value that already opens
// under next (a rotation resumed) is left as it is: changed reports false.
func rewrap(old, next cipher.AEAD, sealed, aad []byte) (out []byte, changed bool, err error) {
	if _, err := unseal(next, sealed, aad); err == nil {
		return sealed, false, nil
	}
	plain, err := unseal(old, sealed, aad)
	if err != nil {
		return nil, false, ErrWrongKey
	}
	out, err = seal(next, plain, aad)
	return out, err == nil, err
}

// RotateKey re-wraps every key the bus keeps in db (the identities' signing keys and
// the recipients' data keys) from oldKey to newKey, and moves the messages stored under
// the master key itself (before data keys existed) to their recipient's data key, in
// one transaction. Messages keep their ciphertext and signature. Stop every bus on db
// first: a running one holds the old key. Running it again with the same keys after it
// succeeded (or after an interruption) changes nothing more.
func RotateKey(ctx context.Context, db *sql.DB, oldKey, newKey []byte) (RotateStats, error) {
	var st RotateStats
	old, err := newAEAD(oldKey)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: old key: %w", err)
	}
	next, err := newAEAD(newKey)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: new key: %w", err)
	}
	if bytes.Equal(oldKey, newKey) {
		return st, fmt.Errorf("rotate bus key: the new key is the old one")
	}
	if err := migrate(ctx, db); err != nil {
		return st, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	// The check first: it names the wrong key before anything is read.
	var check []byte
	switch err := tx.QueryRowContext(ctx, `SELECT sealed FROM bus_master WHERE id = 1`).Scan(&check); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("rotate bus key: %w", err)
	case !checkOpens(old, check) && !checkOpens(next, check):
		return st, fmt.Errorf("rotate bus key: %w", ErrWrongKey)
	}
	type wrappedKey struct {
		identity string
		sealed   []byte
	}
	readAll := func(query string) ([]wrappedKey, error) {
		rows, err := tx.QueryContext(ctx, query)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []wrappedKey
		for rows.Next() {
			var k wrappedKey
			if err := rows.Scan(&k.identity, &k.sealed); err != nil {
				return nil, err
			}
			out = append(out, k)
		}
		return out, rows.Err()
	}
	sks, err := readAll(`SELECT identity, sealed FROM bus_keys ORDER BY identity`)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: read signing keys: %w", err)
	}
	for _, k := range sks {
		v, changed, err := rewrap(old, next, k.sealed, keyAAD(k.identity))
		if err != nil {
			return st, fmt.Errorf("rotate bus key: signing key of %s: %w", k.identity, err)
		}
		if !changed {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE bus_keys SET sealed = ? WHERE identity = ?`, v, k.identity); err != nil {
			return st, fmt.Errorf("rotate bus key: signing key of %s: %w", k.identity, err)
		}
		st.SigningKeys++
	}
	dks, err := readAll(`SELECT identity, wrapped FROM bus_data_keys ORDER BY identity`)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: read data keys: %w", err)
	}
	deks := map[string]cipher.AEAD{} // recipient -> data key, for the messages below
	for _, k := range dks {
		v, changed, err := rewrap(old, next, k.sealed, dekAAD(k.identity))
		if err != nil {
			return st, fmt.Errorf("rotate bus key: data key of %s: %w", k.identity, err)
		}
		raw, err := unseal(next, v, dekAAD(k.identity))
		if err != nil {
			return st, fmt.Errorf("rotate bus key: data key of %s: %w", k.identity, err)
		}
		if deks[k.identity], err = newAEAD(raw); err != nil {
			return st, fmt.Errorf("rotate bus key: data key of %s: %w", k.identity, ErrTampered)
		}
		if !changed {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE bus_data_keys SET wrapped = ? WHERE identity = ?`, v, k.identity); err != nil {
			return st, fmt.Errorf("rotate bus key: data key of %s: %w", k.identity, err)
		}
		st.DataKeys++
	}
	if err := moveMasterMessages(ctx, tx, old, next, deks, &st); err != nil {
		return st, err
	}
	v, err := checkValue(next)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO bus_master (id, sealed) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed`, v); err != nil {
		return st, fmt.Errorf("rotate bus key: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return st, fmt.Errorf("rotate bus key: %w", err)
	}
	return st, nil
}

// moveMasterMessages re-encrypts the messages stored under the master key (dek 0)
// under their recipient's data key, making the data key if there is none. A message
// that does not decrypt stays as it was: it fails verification at delivery either way.
func moveMasterMessages(ctx context.Context, tx *sql.Tx, old, next cipher.AEAD, deks map[string]cipher.AEAD, st *RotateStats) error {
	rows, err := tx.QueryContext(ctx, selectRow+` WHERE dek = ?`, dekMaster)
	if err != nil {
		return fmt.Errorf("rotate bus key: read messages: %w", err)
	}
	var rs []*row
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			rows.Close()
			return fmt.Errorf("rotate bus key: read messages: %w", err)
		}
		rs = append(rs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("rotate bus key: read messages: %w", err)
	}
	for _, r := range rs {
		hdr := r.header()
		if len(r.nonce) != old.NonceSize() {
			continue
		}
		payload, err := old.Open(nil, r.nonce, r.ct, hdr)
		if err != nil {
			continue
		}
		dek, ok := deks[r.to]
		if !ok {
			raw := make([]byte, KeySize)
			if _, err := io.ReadFull(rand.Reader, raw); err != nil {
				return fmt.Errorf("rotate bus key: %w", err)
			}
			wrapped, err := seal(next, raw, dekAAD(r.to))
			if err != nil {
				return fmt.Errorf("rotate bus key: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO bus_data_keys (identity, wrapped) VALUES (?, ?)`, r.to, wrapped); err != nil {
				return fmt.Errorf("rotate bus key: data key of %s: %w", r.to, err)
			}
			if dek, err = newAEAD(raw); err != nil {
				return fmt.Errorf("rotate bus key: %w", err)
			}
			deks[r.to] = dek
			st.DataKeys++
		}
		nonce := make([]byte, dek.NonceSize())
		if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
			return fmt.Errorf("rotate bus key: %w", err)
		}
		ct := dek.Seal(nil, nonce, payload, hdr)
		if _, err := tx.ExecContext(ctx, `UPDATE bus_messages SET nonce = ?, ciphertext = ?, dek = ? WHERE id = ?`, nonce, ct, dekRecipient, r.id); err != nil {
			return fmt.Errorf("rotate bus key: message %s: %w", r.id, err)
		}
		st.Messages++
	}
	return nil
}

// RotateKeyFile rotates the master key kept at path: it makes the new key at
// path+NextKeySuffix (or takes the one an interrupted rotation left there), calls
// rotate with the old and the new key, and then moves the new key into place. A
// rotation interrupted at any point is finished by running it again; until then
// LoadKey refuses to start on the key file.
func RotateKeyFile(path string, rotate func(oldKey, newKey []byte) error) error {
	oldKey, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("rotate bus key: %w", err)
	}
	if len(oldKey) != KeySize {
		return fmt.Errorf("rotate bus key: %s is %d bytes, want %d", path, len(oldKey), KeySize)
	}
	nextPath := path + NextKeySuffix
	newKey, err := loadOrCreate(nextPath)
	if err != nil {
		return err
	}
	if err := rotate(oldKey, newKey); err != nil {
		return err
	}
	if err := os.Rename(nextPath, path); err != nil {
		return fmt.Errorf("rotate bus key: install the new key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// loadOrCreate reads the key at path, creating it first when it does not exist.
func loadOrCreate(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := create(path); err != nil {
			return nil, err
		}
		key, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read bus key %s: %w", path, err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("read bus key %s: %d bytes, want %d", path, len(key), KeySize)
	}
	return key, nil
}

// natsCheckMaster is checkMaster on the NATS transport.
func (b *Bus) natsCheckMaster(ctx context.Context) error {
	nb := b.nb
	if _, err := nb.keys.Get(ctx, natsMasterKey); errors.Is(err, jetstream.ErrKeyNotFound) {
		// Buckets from before the check: try the key on a stored data key first.
		es, err := list(ctx, nb.deks, ">")
		if err != nil {
			return fmt.Errorf("open bus: %w", err)
		}
		if len(es) > 0 {
			identity, err := untoken(es[0].Key())
			if err != nil {
				return fmt.Errorf("open bus: data key %q: %w", es[0].Key(), ErrTampered)
			}
			if _, err := unseal(b.aead, es[0].Value(), dekAAD(identity)); err != nil {
				return fmt.Errorf("open bus: %w", ErrWrongKey)
			}
		}
	} else if err != nil {
		return fmt.Errorf("open bus: read the master key check: %w", err)
	}
	v, err := checkValue(b.aead)
	if err != nil {
		return fmt.Errorf("open bus: %w", err)
	}
	sealed, err := getOrCreate(ctx, nb.keys, natsMasterKey, v)
	if err != nil {
		return fmt.Errorf("open bus: read the master key check: %w", err)
	}
	if !checkOpens(b.aead, sealed) {
		return fmt.Errorf("open bus: %w", ErrWrongKey)
	}
	return nil
}

// RotateKeyNATS is RotateKey for a bus on NATS (see OpenNATS): it re-wraps the entries
// of the KEYS and DEKS buckets, each by compare-and-set, and the check value last.
// JetStream has no transaction across entries: a rotation interrupted part way leaves
// some entries under each key, and running it again with the same keys finishes it.
// Stop every symbi that shares the bus first.
func RotateKeyNATS(ctx context.Context, no NATSOptions, oldKey, newKey []byte) (RotateStats, error) {
	var st RotateStats
	old, err := newAEAD(oldKey)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: old key: %w", err)
	}
	next, err := newAEAD(newKey)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: new key: %w", err)
	}
	if bytes.Equal(oldKey, newKey) {
		return st, fmt.Errorf("rotate bus key: the new key is the old one")
	}
	b, err := OpenNATS(ctx, no, newKey, &Options{skipMasterCheck: true})
	if err != nil {
		return st, fmt.Errorf("rotate bus key: %w", err)
	}
	defer b.Close()
	nb := b.nb
	check, err := nb.keys.Get(ctx, natsMasterKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return st, fmt.Errorf("rotate bus key: %w", err)
	case !checkOpens(old, check.Value()) && !checkOpens(next, check.Value()):
		return st, fmt.Errorf("rotate bus key: %w", ErrWrongKey)
	}
	for _, bucket := range []struct {
		kv    jetstream.KeyValue
		what  string
		skip  int // bytes before the sealed part (the public key)
		aad   func(string) []byte
		count *int
	}{{nb.keys, "signing key", ed25519.PublicKeySize, keyAAD, &st.SigningKeys}, {nb.deks, "data key", 0, dekAAD, &st.DataKeys}} {
		es, err := list(ctx, bucket.kv, ">")
		if err != nil {
			return st, fmt.Errorf("rotate bus key: %w", err)
		}
		for _, e := range es {
			if e.Key() == natsMasterKey {
				continue
			}
			identity, err := untoken(e.Key())
			v := e.Value()
			if err != nil || len(v) < bucket.skip {
				return st, fmt.Errorf("rotate bus key: %s %q: %w", bucket.what, e.Key(), ErrTampered)
			}
			sealed, changed, err := rewrap(old, next, v[bucket.skip:], bucket.aad(identity))
			if err != nil {
				return st, fmt.Errorf("rotate bus key: %s of %s: %w", bucket.what, identity, err)
			}
			if !changed {
				continue
			}
			nv := append(append([]byte{}, v[:bucket.skip]...), sealed...)
			if _, err := bucket.kv.Update(ctx, e.Key(), nv, e.Revision()); err != nil {
				return st, fmt.Errorf("rotate bus key: %s of %s: %w", bucket.what, identity, err)
			}
			*bucket.count++
		}
	}
	v, err := checkValue(next)
	if err != nil {
		return st, fmt.Errorf("rotate bus key: %w", err)
	}
	if _, err := nb.keys.Put(ctx, natsMasterKey, v); err != nil {
		return st, fmt.Errorf("rotate bus key: %w", err)
	}
	return st, nil
}
