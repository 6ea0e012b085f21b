package bus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/symbi-dev/symbi/internal/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recorder keeps the events the bus reports.
type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) record(ev Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func (r *recorder) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.evs...)
}

var testKey = bytes.Repeat([]byte{7}, KeySize)

// testEpoch is where the tests' clocks start.
var testEpoch = time.Unix(1_800_000_000, 0)

type fixture struct {
	bus   *Bus
	db    *sql.DB    // local
	nc    *nats.Conn // NATS
	clock *clock
	rec   *recorder
}

func newFixture(t *testing.T, o Options) *fixture {
	t.Helper()
	db, err := store.OpenMemory()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return openOn(t, db, testKey, o)
}

func openOn(t *testing.T, db *sql.DB, key []byte, o Options) *fixture {
	t.Helper()
	f := &fixture{db: db, clock: &clock{now: testEpoch}, rec: &recorder{}}
	o.Now, o.Record = f.clock.Now, f.rec.record
	b, err := Open(context.Background(), db, key, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	f.bus = b
	return f
}

func (f *fixture) receive(t *testing.T, identity string) []Message {
	t.Helper()
	msgs, err := f.bus.Receive(context.Background(), identity, 10, 0)
	if err != nil {
		t.Fatalf("receive %s: %v", identity, err)
	}
	return msgs
}

func (f *fixture) send(t *testing.T, from, to, payload string) string {
	t.Helper()
	id, err := f.bus.Send(context.Background(), from, to, []byte(payload))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return id
}

func payloads(msgs []Message) []string {
	out := []string{}
	for _, m := range msgs {
		out = append(out, string(m.Payload))
	}
	return out
}

func TestDirectAck(t *testing.T) { forTransports(t, testDirectAck) }

func testDirectAck(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{})
	ctx := context.Background()
	id := f.send(t, "alice", "bob", "hello")
	if got := f.receive(t, "alice"); len(got) != 0 {
		t.Fatalf("the sender received its own direct message: %v", payloads(got))
	}
	got := f.receive(t, "bob")
	want := []Message{{ID: id, Kind: KindDirect, From: "alice", To: "bob", Payload: []byte("hello"), Created: f.clock.Now(), Attempt: 1}}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("received (-want +got):\n%s", d)
	}
	if err := f.bus.Ack(ctx, "alice", id); !errors.Is(err, ErrNotFound) {
		t.Errorf("another identity acknowledged bob's message: %v", err)
	}
	if err := f.bus.Ack(ctx, "bob", id); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if err := f.bus.Ack(ctx, "bob", id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second ack: %v, want ErrNotFound", err)
	}
	f.clock.add(time.Hour) // past any visibility timeout: an acknowledged message never comes back
	if got := f.receive(t, "bob"); len(got) != 0 {
		t.Errorf("acknowledged message delivered again: %v", payloads(got))
	}
}

func TestRedeliveryAndDeadLetter(t *testing.T) { forTransports(t, testRedeliveryAndDeadLetter) }

func testRedeliveryAndDeadLetter(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{Visibility: time.Minute, MaxAttempts: 2})
	ctx := context.Background()
	id := f.send(t, "alice", "bob", "once")
	for _, step := range []struct {
		name    string
		advance time.Duration
		attempt int // 0: nothing delivered
	}{
		{"first delivery", 0, 1},
		{"hidden within the visibility timeout", 59 * time.Second, 0},
		{"redelivered after it", time.Second, 2},
		{"hidden again", 30 * time.Second, 0},
		{"dead after max attempts", time.Minute, 0},
		{"stays dead", time.Hour, 0},
	} {
		f.clock.add(step.advance)
		got := f.receive(t, "bob")
		switch {
		case step.attempt == 0 && len(got) != 0:
			t.Fatalf("%s: delivered %+v", step.name, got)
		case step.attempt != 0 && (len(got) != 1 || got[0].ID != id || got[0].Attempt != step.attempt):
			t.Fatalf("%s: got %+v, want %s attempt %d", step.name, got, id, step.attempt)
		}
	}
	dead, err := f.bus.DeadLetters(ctx, "bob", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []DeadLetter{{ID: id, Kind: KindDirect, From: "alice", Attempts: 2, Reason: "not acknowledged after 2 deliveries"}}
	if d := cmp.Diff(want, dead); d != "" {
		t.Errorf("dead letters (-want +got):\n%s", d)
	}
	if err := f.bus.Ack(ctx, "bob", id); !errors.Is(err, ErrNotFound) {
		t.Errorf("ack of a dead letter: %v, want ErrNotFound", err)
	}
}

func TestTTL(t *testing.T) { forTransports(t, testTTL) }

func testTTL(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{TTL: time.Minute})
	id := f.send(t, "alice", "bob", "stale")
	f.clock.add(time.Minute)
	if got := f.receive(t, "bob"); len(got) != 0 {
		t.Fatalf("expired message delivered: %+v", got)
	}
	dead, err := f.bus.DeadLetters(context.Background(), "bob", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != id || dead[0].Reason != "expired" {
		t.Errorf("dead letters = %+v, want %s expired", dead, id)
	}
}

// TestTampered: a stored message changed in any part is never delivered; it is
// dead-lettered and reported. The reader is another bus on the same state (another
// process, or symbi after a restart): a process keeps the keys it has already read.
func TestTampered(t *testing.T) {
	for _, tc := range []struct {
		name, sql string
	}{
		{"ciphertext", `UPDATE bus_messages SET ciphertext = CAST(zeroblob(length(ciphertext)) AS BLOB)`},
		{"one ciphertext bit", `UPDATE bus_messages SET ciphertext = CAST(CASE WHEN substr(ciphertext, 1, 1) = X'01' THEN X'02' ELSE X'01' END || substr(ciphertext, 2) AS BLOB)`},
		{"signature", `UPDATE bus_messages SET signature = zeroblob(64)`},
		{"nonce", `UPDATE bus_messages SET nonce = zeroblob(12)`},
		{"short nonce", `UPDATE bus_messages SET nonce = zeroblob(3)`},
		{"sender", `UPDATE bus_messages SET sender = 'mallory'`},
		{"created", `UPDATE bus_messages SET created_ns = created_ns - 1`},
		{"expiry extended", `UPDATE bus_messages SET expires_ns = expires_ns + 1`},
		{"sender's public key", `UPDATE bus_keys SET public = zeroblob(32) WHERE identity = 'alice'`},
		{"sender's key removed", `DELETE FROM bus_keys WHERE identity = 'alice'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			f.send(t, "mallory", "carol", "key") // mallory has a key too
			id := f.send(t, "alice", "bob", "secret")
			if _, err := f.db.Exec(tc.sql + ` WHERE id = '` + id + `'`); err != nil {
				if _, err := f.db.Exec(tc.sql); err != nil { // the statements on bus_keys have their own WHERE
					t.Fatal(err)
				}
			}
			g := openOn(t, f.db, testKey, Options{})
			g.bus.o.Record = f.rec.record
			if got := g.receive(t, "bob"); len(got) != 0 {
				t.Fatalf("tampered message delivered: %v", payloads(got))
			}
			dead, err := f.bus.DeadLetters(context.Background(), "bob", 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(dead) != 1 || dead[0].ID != id || dead[0].Reason != "failed verification" {
				t.Errorf("dead letters = %+v, want %s failed verification", dead, id)
			}
			var reported bool
			for _, ev := range f.rec.events() {
				reported = reported || (ev.Action == "bus/dead_letter" && ev.ID == id && ev.Reason == "failed verification")
			}
			if !reported {
				t.Errorf("tampered message not reported: %+v", f.rec.events())
			}
		})
	}
}

// TestMovedCiphertext: a valid ciphertext and signature copied onto another recipient's
// row does not verify there (the envelope is bound to both).
func TestMovedCiphertext(t *testing.T) {
	f := newFixture(t, Options{})
	a := f.send(t, "alice", "bob", "for bob")
	c := f.send(t, "alice", "carol", "for carol")
	if _, err := f.db.Exec(`UPDATE bus_messages SET (nonce, ciphertext, signature) = (SELECT nonce, ciphertext, signature FROM bus_messages WHERE id = ?) WHERE id = ?`, a, c); err != nil {
		t.Fatal(err)
	}
	if got := f.receive(t, "carol"); len(got) != 0 {
		t.Fatalf("bob's message delivered to carol: %v", payloads(got))
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, store.FileName)
	key, err := LoadKey(filepath.Join(dir, "bus.key"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f := openOn(t, db, key, Options{})
	const secret = "plaintext-canary-6f1d0c"
	id := f.send(t, "alice", "bob", secret)
	f.bus.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Nothing in the directory holds the payload in clear.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the payload in clear", e.Name())
		}
	}

	key2, err := LoadKey(filepath.Join(dir, "bus.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, key2) {
		t.Fatal("the key file changed between loads")
	}
	for _, tc := range []struct {
		name string
		key  []byte
		want []string
	}{
		{"the same key delivers", key, []string{secret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := store.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			f := openOn(t, db, tc.key, Options{})
			got := f.receive(t, "bob")
			if d := cmp.Diff(tc.want, payloads(got)); d != "" {
				t.Errorf("after restart (-want +got):\n%s", d)
			}
			if len(got) == 1 && got[0].ID != id {
				t.Errorf("id %s, want %s", got[0].ID, id)
			}
		})
	}
}

// TestWrongMasterKey: a bus opened with another master key is refused (rather than
// dead-letter every message as tampered); with the check value removed, nothing stored
// under the first key opens either.
func TestWrongMasterKey(t *testing.T) { forTransports(t, testWrongMasterKey) }

func testWrongMasterKey(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{})
	f.send(t, "alice", "bob", "hello")
	otherKey := bytes.Repeat([]byte{1}, KeySize)
	if err := f.openErr(t, otherKey); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with another master key: %v, want ErrWrongKey", err)
	}
	// Without the check value (a store from before it), a stored key is tried instead.
	if f.nc != nil {
		if err := f.bus.nb.keys.Purge(context.Background(), natsMasterKey); err != nil {
			t.Fatal(err)
		}
	} else if _, err := f.db.Exec(`DELETE FROM bus_master`); err != nil {
		t.Fatal(err)
	}
	if err := f.openErr(t, otherKey); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with another master key, no check value: %v, want ErrWrongKey", err)
	}
	other := f.reopen(t, otherKey, Options{skipMasterCheck: true})
	if got := other.receive(t, "bob"); len(got) != 0 {
		t.Fatalf("delivered under another master key: %v", payloads(got))
	}
	if _, err := other.bus.Send(context.Background(), "alice", "bob", []byte("x")); !errors.Is(err, ErrTampered) {
		t.Errorf("alice's key unsealed under another master key: %v", err)
	}
}

func TestTopics(t *testing.T) { forTransports(t, testTopics) }

func testTopics(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{})
	ctx := context.Background()
	for _, s := range []string{"bob", "carol", "bob"} {
		if err := f.bus.Subscribe(ctx, s, "news"); err != nil {
			t.Fatal(err)
		}
	}
	n, err := f.bus.Publish(ctx, "alice", "news", []byte("extra"))
	if err != nil || n != 2 {
		t.Fatalf("publish = %d, %v; want 2 subscribers", n, err)
	}
	if n, err := f.bus.Publish(ctx, "alice", "empty", []byte("x")); err != nil || n != 0 {
		t.Fatalf("publish to a topic without subscribers = %d, %v", n, err)
	}
	for _, tc := range []struct {
		identity string
		want     []string
	}{
		{"bob", []string{"extra"}},
		{"carol", []string{"extra"}},
		{"dave", []string{}},
	} {
		got := f.receive(t, tc.identity)
		if d := cmp.Diff(tc.want, payloads(got)); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.identity, d)
		}
		for _, m := range got {
			if m.Topic != "news" || m.Kind != KindTopic || m.From != "alice" {
				t.Errorf("%s got %+v", tc.identity, m)
			}
		}
	}
	if err := f.bus.Unsubscribe(ctx, "bob", "news"); err != nil {
		t.Fatal(err)
	}
	if n, err := f.bus.Publish(ctx, "alice", "news", []byte("more")); err != nil || n != 1 {
		t.Errorf("publish after unsubscribe = %d, %v; want 1", n, err)
	}
}

func TestRequestReply(t *testing.T) { forTransports(t, testRequestReply) }

func testRequestReply(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(1)
	var replyErr error
	go func() {
		defer wg.Done()
		msgs, err := f.bus.Receive(ctx, "bob", 1, time.Minute)
		if err != nil || len(msgs) != 1 {
			replyErr = errors.Join(err, errors.New("no request"))
			return
		}
		_, replyErr = f.bus.Reply(ctx, "bob", msgs[0].ID, append([]byte("re: "), msgs[0].Payload...))
	}()
	got, err := f.bus.Request(ctx, "alice", "bob", []byte("ping"), time.Minute)
	wg.Wait()
	if err != nil || replyErr != nil {
		t.Fatalf("request: %v; reply: %v", err, replyErr)
	}
	if got.From != "bob" || got.Kind != KindReply || string(got.Payload) != "re: ping" {
		t.Errorf("reply = %+v", got)
	}
	if _, err := f.bus.Reply(ctx, "bob", got.ReplyTo, []byte("again")); !errors.Is(err, ErrNotFound) {
		t.Errorf("second reply: %v, want ErrNotFound", err)
	}
	if msgs := f.receive(t, "bob"); len(msgs) != 0 {
		t.Errorf("answered request still queued: %+v", msgs)
	}
	if msgs := f.receive(t, "alice"); len(msgs) != 0 {
		t.Errorf("reply also queued for the requester: %+v", msgs)
	}
}

func TestRequestTimeout(t *testing.T) { forTransports(t, testRequestTimeout) }

func testRequestTimeout(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{Poll: time.Millisecond})
	ctx := context.Background()
	_, err := f.bus.Request(ctx, "alice", "bob", []byte("anyone?"), 20*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("request = %v, want ErrTimeout", err)
	}
	if msgs := f.receive(t, "bob"); len(msgs) != 0 {
		t.Errorf("withdrawn request delivered: %+v", msgs)
	}
	var id string
	for _, ev := range f.rec.events() {
		if ev.Action == "bus/request" {
			id = ev.ID
		}
	}
	if id == "" {
		t.Fatalf("request not reported: %+v", f.rec.events())
	}
	if _, err := f.bus.Reply(ctx, "bob", id, []byte("late")); !errors.Is(err, ErrNotFound) {
		t.Errorf("late reply: %v, want ErrNotFound", err)
	}
}

// TestReplyOnlyByRecipient: only the identity a request was sent to may answer it.
func TestReplyOnlyByRecipient(t *testing.T) { forTransports(t, testReplyOnlyByRecipient) }

func testReplyOnlyByRecipient(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.bus.Request(ctx, "alice", "bob", []byte("q"), time.Minute)
		done <- err
	}()
	msgs, err := f.bus.Receive(context.Background(), "bob", 1, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive request: %v %v", msgs, err)
	}
	if _, err := f.bus.Reply(context.Background(), "mallory", msgs[0].ID, []byte("forged")); !errors.Is(err, ErrNotFound) {
		t.Errorf("reply by another identity: %v, want ErrNotFound", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled request = %v", err)
	}
}

// TestReceiveWakes: a waiting Receive returns as soon as a message is sent, not at its
// next poll.
func TestReceiveWakes(t *testing.T) { forTransports(t, testReceiveWakes) }

func testReceiveWakes(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{Poll: time.Hour})
	got := make(chan []Message, 1)
	errc := make(chan error, 1)
	go func() {
		msgs, err := f.bus.Receive(context.Background(), "bob", 10, time.Hour)
		got <- msgs
		errc <- err
	}()
	// Sending before or after the receiver starts waiting must both wake it.
	f.send(t, "alice", "bob", "wake up")
	if msgs := <-got; len(msgs) != 1 || string(msgs[0].Payload) != "wake up" {
		t.Errorf("woken receive = %+v", msgs)
	}
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func TestCloseEndsWaits(t *testing.T) { forTransports(t, testCloseEndsWaits) }

func testCloseEndsWaits(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{Poll: time.Hour})
	errc := make(chan error, 1)
	go func() {
		_, err := f.bus.Receive(context.Background(), "bob", 10, time.Hour)
		errc <- err
	}()
	f.bus.Close()
	f.bus.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("receive after close = %v, want ErrClosed", err)
	}
}

func TestInvalid(t *testing.T) { forTransports(t, testInvalid) }

func testInvalid(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{MaxPayload: 8})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"empty sender", func() error { _, err := f.bus.Send(ctx, "", "bob", nil); return err }},
		{"empty recipient", func() error { _, err := f.bus.Send(ctx, "alice", "", nil); return err }},
		{"control character", func() error { _, err := f.bus.Send(ctx, "alice", "bo\nb", nil); return err }},
		{"invalid UTF-8", func() error { _, err := f.bus.Send(ctx, "alice", "\xff", nil); return err }},
		{"payload too large", func() error { _, err := f.bus.Send(ctx, "alice", "bob", make([]byte, 9)); return err }},
		{"empty topic", func() error { return f.bus.Subscribe(ctx, "bob", "") }},
		{"publish too large", func() error { _, err := f.bus.Publish(ctx, "alice", "t", make([]byte, 9)); return err }},
		{"zero timeout", func() error { _, err := f.bus.Request(ctx, "alice", "bob", nil, 0); return err }},
		{"receive as nobody", func() error { _, err := f.bus.Receive(ctx, "", 1, 0); return err }},
	} {
		if err := tc.call(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := Open(ctx, f.db, []byte("short"), nil); err == nil {
		t.Error("Open accepted a 5-byte key")
	}
}

// TestEventsCarryNoPayload: what the bus reports for the audit trail is metadata and the
// payload's hash.
func TestEventsCarryNoPayload(t *testing.T) { forTransports(t, testEventsCarryNoPayload) }

func testEventsCarryNoPayload(t *testing.T, tr transport) {
	f := tr.fixture(t, Options{})
	id := f.send(t, "alice", "bob", "top secret")
	f.receive(t, "bob")
	if err := f.bus.Ack(context.Background(), "bob", id); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("top secret"))
	h := hex.EncodeToString(sum[:])
	want := []Event{
		{Action: "bus/send", ID: id, Kind: KindDirect, From: "alice", To: "bob", PayloadSHA256: h, Size: 10},
		{Action: "bus/deliver", ID: id, Kind: KindDirect, From: "alice", To: "bob", PayloadSHA256: h, Size: 10},
		{Action: "bus/ack", ID: id, To: "bob"},
	}
	if d := cmp.Diff(want, f.rec.events()); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "bus.key")
	k1, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	k2, err := LoadKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("second load: %v, equal %v", err, bytes.Equal(k1, k2))
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err == nil {
		t.Error("a 5-byte key file was accepted")
	}
}

// FuzzOpen: a stored message whose nonce, ciphertext or signature differs in any way
// from what the sender stored never opens.
func FuzzOpen(f *testing.F) {
	db, err := store.OpenMemory()
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	b, err := Open(ctx, db, testKey, nil)
	if err != nil {
		f.Fatal(err)
	}
	defer b.Close()
	id, err := b.Send(ctx, "alice", "bob", []byte("payload"))
	if err != nil {
		f.Fatal(err)
	}
	orig, err := scanRow(db.QueryRow(selectRow+` WHERE id = ?`, id))
	if err != nil {
		f.Fatal(err)
	}
	pub, err := b.PublicKey(ctx, "alice")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(orig.nonce, orig.ct, orig.signature)
	f.Add([]byte{}, []byte{}, []byte{})
	dek, err := b.dataKey(ctx, db, "bob", dekRecipient)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, nonce, ct, sig []byte) {
		r := *orig
		r.nonce, r.ct, r.signature = nonce, ct, sig
		p, err := b.open(&r, dek, pub)
		same := bytes.Equal(nonce, orig.nonce) && bytes.Equal(ct, orig.ct) && bytes.Equal(sig, orig.signature)
		if err == nil && !same {
			t.Fatalf("an altered message opened: %q", p)
		}
		if same && (err != nil || string(p) != "payload") {
			t.Fatalf("the original no longer opens: %v", err)
		}
	})
}

// TestPublishRolledBackRecordsNothing: when one copy of a published message cannot be
// stored, none is, and none is reported to the audit trail.
func TestPublishRolledBackRecordsNothing(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	for _, s := range []string{"bob", "zed"} {
		if err := f.bus.Subscribe(ctx, s, "news"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.db.Exec(`CREATE TRIGGER fail_zed BEFORE INSERT ON bus_messages WHEN NEW.recipient = 'zed'
		BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.bus.Publish(ctx, "alice", "news", []byte("x")); err == nil {
		t.Fatal("publish succeeded although a copy could not be stored")
	}
	if got := f.receive(t, "bob"); len(got) != 0 {
		t.Errorf("bob got a copy of a publish that failed: %v", payloads(got))
	}
	if evs := f.rec.events(); len(evs) != 0 {
		t.Errorf("a rolled-back publish was reported: %+v", evs)
	}
}
