package bus

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// openErr opens another bus on f's state with key, returning Open's error.
func (f *fixture) openErr(t *testing.T, key []byte) error {
	t.Helper()
	var b *Bus
	var err error
	if f.nc != nil {
		b, err = OpenNATS(context.Background(), NATSOptions{Conn: f.nc}, key, nil)
	} else {
		b, err = Open(context.Background(), f.db, key, nil)
	}
	if err == nil {
		b.Close()
	}
	return err
}

// rotate rotates the master key of f's state.
func (f *fixture) rotate(oldKey, newKey []byte) (RotateStats, error) {
	if f.nc != nil {
		return RotateKeyNATS(context.Background(), NATSOptions{Conn: f.nc}, oldKey, newKey)
	}
	return RotateKey(context.Background(), f.db, oldKey, newKey)
}

// TestRotateKey: after a rotation the messages stored before it are delivered under the
// new key (queued, delivered and not yet acknowledged, and a reply's request), identities
// keep their signing keys, the old key is refused, and a rotation run again changes
// nothing; a rotation with a key that is not the bus's is refused.
func TestRotateKey(t *testing.T) { forTransports(t, testRotateKey) }

func testRotateKey(t *testing.T, tr transport) {
	ctx := context.Background()
	f := tr.fixture(t, Options{})
	f.send(t, "alice", "bob", "one")
	f.send(t, "carol", "bob", "two")
	f.send(t, "bob", "alice", "three")
	if got := payloads(f.receive(t, "alice")); len(got) != 1 || got[0] != "three" {
		t.Fatalf("alice received %v", got)
	}
	alicePub, err := f.bus.PublicKey(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	f.bus.Close()

	newKey := bytes.Repeat([]byte{9}, KeySize)
	st, err := f.rotate(testKey, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if st.SigningKeys != 3 || st.DataKeys != 2 || st.Messages != 0 {
		t.Errorf("rotated %+v, want 3 signing keys (alice, bob, carol) and 2 data keys (bob, alice)", st)
	}
	if err := f.openErr(t, testKey); !errors.Is(err, ErrWrongKey) {
		t.Errorf("open with the old key after the rotation: %v, want ErrWrongKey", err)
	}
	if st, err := f.rotate(testKey, newKey); err != nil || st != (RotateStats{}) {
		t.Errorf("the rotation again: %+v %v, want nothing to do", st, err)
	}
	third := bytes.Repeat([]byte{10}, KeySize)
	if _, err := f.rotate(third, bytes.Repeat([]byte{11}, KeySize)); !errors.Is(err, ErrWrongKey) {
		t.Errorf("rotate from a key that is not the bus's: %v, want ErrWrongKey", err)
	}

	g := f.reopen(t, newKey, Options{})
	g.clock.add(f.bus.Visibility() + 1) // alice's delivery comes back
	if got := payloads(g.receive(t, "bob")); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"one", "two"}) {
		t.Errorf("bob received %v after the rotation, want [one two]", got)
	}
	if got := payloads(g.receive(t, "alice")); len(got) != 1 || got[0] != "three" {
		t.Errorf("alice's unacknowledged message came back as %v", got)
	}
	if pub, err := g.bus.PublicKey(ctx, "alice"); err != nil || !pub.Equal(alicePub) {
		t.Errorf("alice's public key changed with the rotation: %v", err)
	}
	g.send(t, "alice", "bob", "four")
	if got := payloads(g.receive(t, "bob")); len(got) != 1 || got[0] != "four" {
		t.Errorf("bob received %v after a send under the new key", got)
	}
}

// TestRotateKeyLegacyMessages: a message an earlier symbi stored under the master key
// itself is moved to its recipient's data key by the rotation, and still delivered.
func TestRotateKeyLegacyMessages(t *testing.T) {
	f := newFixture(t, Options{})
	id := f.send(t, "alice", "dave", "old message")
	r, err := scanRow(f.db.QueryRow(selectRow+` WHERE id = ?`, id))
	if err != nil {
		t.Fatal(err)
	}
	dek, err := f.bus.dataKey(context.Background(), f.db, "dave", dekRecipient)
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
	// As an earlier symbi stored it: under the master key, and dave without a data key.
	if _, err := f.db.Exec(`UPDATE bus_messages SET nonce = ?, ciphertext = ?, dek = 0 WHERE id = ?`, nonce, f.bus.aead.Seal(nil, nonce, payload, r.header()), id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Exec(`DELETE FROM bus_data_keys WHERE identity = 'dave'`); err != nil {
		t.Fatal(err)
	}
	f.bus.Close()
	newKey := bytes.Repeat([]byte{9}, KeySize)
	st, err := RotateKey(context.Background(), f.db, testKey, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 1 || st.DataKeys != 1 {
		t.Errorf("rotated %+v, want the message moved to a new data key of dave's", st)
	}
	var kind int
	if err := f.db.QueryRow(`SELECT dek FROM bus_messages WHERE id = ?`, id).Scan(&kind); err != nil || kind != dekRecipient {
		t.Errorf("the message is under key kind %d (%v), want the recipient's data key", kind, err)
	}
	g := openOn(t, f.db, newKey, Options{})
	if got := payloads(g.receive(t, "dave")); len(got) != 1 || got[0] != "old message" {
		t.Errorf("dave received %v after the rotation", got)
	}
}

// TestRotateKeyFile: the new key waits beside the old one until the rotation has
// succeeded; an interrupted rotation keeps the bus from starting until it is run again,
// which finishes it with the same new key.
func TestRotateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "bus_master.key")
	old, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	failed := errors.New("the store went away")
	err = RotateKeyFile(path, func(o, n []byte) error {
		if !bytes.Equal(o, old) || bytes.Equal(n, old) {
			t.Errorf("rotate got old %x new %x, want old %x and another", o, n, old)
		}
		first = n
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("a failed rotation: %v", err)
	}
	if _, err := LoadKey(path); err == nil {
		t.Error("the bus key loads while a rotation is unfinished")
	}
	err = RotateKeyFile(path, func(o, n []byte) error {
		if !bytes.Equal(o, old) || !bytes.Equal(n, first) {
			t.Errorf("the resumed rotation got old %x new %x, want %x and %x", o, n, old, first)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadKey(path)
	if err != nil || !bytes.Equal(got, first) {
		t.Errorf("key after the rotation = %x %v, want the new one %x", got, err, first)
	}
	if _, err := os.Stat(path + NextKeySuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the new key is still beside the old: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v %v, want 0600", fi.Mode(), err)
	}
}
