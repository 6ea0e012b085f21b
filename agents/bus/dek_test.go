package bus

import (
	"context"
	"crypto/rand"
	"testing"
)

// TestDataKeys: each recipient's payloads are encrypted under a data key of its own,
// kept in the state store wrapped by the master key: the master key alone does not open
// a payload, and a data key tampered with (or moved to another identity) makes its
// messages fail verification instead of being delivered.
func TestDataKeys(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	bobID := f.send(t, "alice", "bob", "for bob")
	f.send(t, "alice", "carol", "for carol")

	var n int
	if err := f.db.QueryRow(`SELECT count(*) FROM bus_data_keys`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d data keys (%v), want one per recipient", n, err)
	}
	r, err := scanRow(f.db.QueryRow(selectRow+` WHERE id = ?`, bobID))
	if err != nil {
		t.Fatal(err)
	}
	if r.dek != dekRecipient {
		t.Errorf("message stored under key kind %d, want the recipient's data key", r.dek)
	}
	if _, err := f.bus.aead.Open(nil, r.nonce, r.ct, r.header()); err == nil {
		t.Error("the master key opens the payload directly")
	}

	for _, tc := range []struct {
		name, sql string
	}{
		{"flipped byte", `UPDATE bus_data_keys SET wrapped = CAST(substr(wrapped, 1, 20) || CASE WHEN substr(wrapped, 21, 1) = X'00' THEN X'01' ELSE X'00' END || substr(wrapped, 22) AS BLOB) WHERE identity = 'bob'`},
		{"carol's key", `UPDATE bus_data_keys SET wrapped = (SELECT wrapped FROM bus_data_keys WHERE identity = 'carol') WHERE identity = 'bob'`},
		{"deleted", `DELETE FROM bus_data_keys WHERE identity = 'bob'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := openOn(t, f.db, testKey, Options{}) // a fresh process: nothing cached
			id, err := g.bus.Send(ctx, "alice", "bob", []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			var saved []byte
			if err := f.db.QueryRow(`SELECT wrapped FROM bus_data_keys WHERE identity = 'bob'`).Scan(&saved); err != nil {
				t.Fatal(err)
			}
			h := openOn(t, f.db, testKey, Options{})
			if _, err := f.db.Exec(tc.sql); err != nil {
				t.Fatal(err)
			}
			if got := h.receive(t, "bob"); len(got) != 0 {
				t.Errorf("delivered %v with bob's data key %s", payloads(got), tc.name)
			}
			dl, err := h.bus.DeadLetters(ctx, "bob", 10)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range dl {
				found = found || (d.ID == id && d.Reason == "failed verification")
			}
			if !found {
				t.Errorf("message %s not dead-lettered as failing verification: %+v", id, dl)
			}
			if _, err := f.db.Exec(`INSERT INTO bus_data_keys (identity, wrapped) VALUES ('bob', ?) ON CONFLICT (identity) DO UPDATE SET wrapped = excluded.wrapped`, saved); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLegacyMasterKeyMessages: a message stored by an earlier symbi (payload under the
// master key, no dek column) is still delivered after the upgrade.
func TestLegacyMasterKeyMessages(t *testing.T) {
	f := newFixture(t, Options{})
	id := f.send(t, "alice", "bob", "old message")
	r, err := scanRow(f.db.QueryRow(selectRow+` WHERE id = ?`, id))
	if err != nil {
		t.Fatal(err)
	}
	dek, err := f.bus.dataKey(context.Background(), f.db, "bob", dekRecipient)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := dek.Open(nil, r.nonce, r.ct, r.header())
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, f.bus.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	ct := f.bus.aead.Seal(nil, nonce, payload, r.header())
	for _, q := range []string{`UPDATE bus_messages SET nonce = ?, ciphertext = ? WHERE id = ?`, `ALTER TABLE bus_messages DROP COLUMN dek`} {
		args := []any{nonce, ct, id}
		if q[0] == 'A' {
			args = nil
		}
		if _, err := f.db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	g := openOn(t, f.db, testKey, Options{})
	if got := payloads(g.receive(t, "bob")); len(got) != 1 || got[0] != "old message" {
		t.Errorf("after the upgrade bob received %v", got)
	}
}
