package bus

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// KeySize is the size of the master key (AES-256).
const KeySize = 32

// Kinds of message.
const (
	KindDirect  = "direct"
	KindTopic   = "topic"
	KindRequest = "request"
	KindReply   = "reply"
)

// Errors callers branch on with errors.Is.
var (
	ErrNotFound = errors.New("no such message")
	ErrTimeout  = errors.New("no reply before the timeout")
	ErrInvalid  = errors.New("invalid bus request")
	ErrTampered = errors.New("message failed verification")
	ErrClosed   = errors.New("bus closed")
)

// Options tunes a Bus. The zero value gives the defaults.
type Options struct {
	Logger      *slog.Logger          // nil: discard
	Visibility  time.Duration         // how long a delivered, unacknowledged message stays hidden; 0: 30s
	MaxAttempts int                   // deliveries before a message is dead-lettered; 0: 5
	TTL         time.Duration         // a message's lifetime; 0: 24h
	MaxPayload  int                   // bytes; 0: 1 MiB
	Poll        time.Duration         // how often a waiting Receive or Request rereads the state (other processes may write it); 0: 200ms (1s on NATS)
	Record      func(Event)           // every message's metadata, for the audit trail; nil: none
	Notify      func(identity string) // called once a message for identity is committed (it must not block); nil: none
	MaxTTL      time.Duration         // the longest TTL a sender may ask for (SendOptions.TTL); 0: 7 days
	Rate        float64               // messages a second each sender may send (a token bucket per sender); 0: unlimited
	Burst       int                   // tokens a sender may save up; 0: Rate rounded up (at least 1)
	Now         func() time.Time      // clock for timestamps (tests); nil: time.Now

	skipMasterCheck bool // RotateKeyNATS opens the buckets whatever key the check holds
}

// Event is what the bus reports about a message: metadata and the payload's SHA-256,
// never the payload.
type Event struct {
	Action        string // bus/send, bus/publish, bus/request, bus/reply, bus/deliver, bus/ack, bus/dead_letter
	ID            string
	Kind          string
	From, To      string
	Topic         string
	ReplyTo       string
	PayloadSHA256 string // hex; empty when the payload could not be decrypted
	Size          int
	Reason        string // why a message was dead-lettered
}

// Message is a delivered message.
type Message struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Topic   string    `json:"topic,omitempty"`
	ReplyTo string    `json:"reply_to,omitempty"`
	Payload []byte    `json:"-"`
	Created time.Time `json:"created"`
	Attempt int       `json:"attempt"` // 1 on first delivery
}

// DeadLetter is a message that will not be delivered, without its payload.
type DeadLetter struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	From     string `json:"from"`
	Topic    string `json:"topic,omitempty"`
	Attempts int    `json:"attempts"`
	Reason   string `json:"reason"`
}

// Bus is the message bus over one state database. Its methods are safe for concurrent
// use; several processes may share the database.
type Bus struct {
	db   *sql.DB
	aead cipher.AEAD
	o    Options
	log  *slog.Logger

	limit *limiter
	group *grouper     // nil on NATS
	nb    *natsBackend // nil: the state database

	mu    sync.Mutex
	keys  map[string]ed25519.PrivateKey // identity -> its private key (unsealed)
	deks  map[string]cipher.AEAD        // identity -> its data key (unwrapped)
	pubs  map[string]ed25519.PublicKey  // identity -> its public key, as first read
	stmts map[string]*sql.Stmt          // query -> prepared statement
	wake  map[string]chan struct{}      // identity -> closed when a message arrives for it

	closed    chan struct{}
	closeOnce sync.Once
}

const schema = `
CREATE TABLE IF NOT EXISTS bus_keys (
	identity TEXT PRIMARY KEY,
	public   BLOB NOT NULL,
	sealed   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_messages (
	id         TEXT PRIMARY KEY,
	kind       TEXT NOT NULL,
	sender     TEXT NOT NULL,
	recipient  TEXT NOT NULL,
	topic      TEXT NOT NULL DEFAULT '',
	reply_to   TEXT NOT NULL DEFAULT '',
	created_ns INTEGER NOT NULL,
	expires_ns INTEGER NOT NULL,
	visible_ns INTEGER NOT NULL,
	attempts   INTEGER NOT NULL DEFAULT 0,
	state      TEXT NOT NULL DEFAULT 'ready',
	reason     TEXT NOT NULL DEFAULT '',
	nonce      BLOB NOT NULL,
	ciphertext BLOB NOT NULL,
	signature  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_messages_queue ON bus_messages (recipient, state, visible_ns);
CREATE TABLE IF NOT EXISTS bus_subscriptions (
	topic    TEXT NOT NULL,
	identity TEXT NOT NULL,
	PRIMARY KEY (topic, identity)
);
CREATE TABLE IF NOT EXISTS bus_data_keys (
	identity TEXT PRIMARY KEY,
	wrapped  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_master (
	id     INTEGER PRIMARY KEY CHECK (id = 1),
	sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS bus_requests (
	id         TEXT PRIMARY KEY,
	requester  TEXT NOT NULL,
	responder  TEXT NOT NULL,
	expires_ns INTEGER NOT NULL
);`

// newBus checks the master key and the options, without a transport.
func newBus(key []byte, opts *Options) (*Bus, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("open bus: master key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("open bus: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("open bus: %w", err)
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Visibility <= 0 {
		o.Visibility = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.TTL <= 0 {
		o.TTL = 24 * time.Hour
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 7 * 24 * time.Hour
	}
	if o.TTL > o.MaxTTL {
		return nil, fmt.Errorf("open bus: TTL %s exceeds MaxTTL %s", o.TTL, o.MaxTTL)
	}
	if o.Rate < 0 || o.Burst < 0 {
		return nil, fmt.Errorf("open bus: negative rate limit")
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = 1 << 20
	}
	if o.Poll <= 0 {
		o.Poll = 200 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bus{aead: aead, o: o, log: log, keys: map[string]ed25519.PrivateKey{}, deks: map[string]cipher.AEAD{}, pubs: map[string]ed25519.PublicKey{},
		stmts: map[string]*sql.Stmt{}, limit: newLimiter(o.Rate, o.Burst), wake: map[string]chan struct{}{}, closed: make(chan struct{})}, nil
}

// Open creates or migrates the bus tables in db. key is the 32-byte master key that
// encrypts payloads and seals the identities' signing keys; keep it out of db. A key
// that is not the one db's keys are wrapped with is refused (ErrWrongKey).
func Open(ctx context.Context, db *sql.DB, key []byte, opts *Options) (*Bus, error) {
	b, err := newBus(key, opts)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	if err := b.checkMasterUnlessSkipped(ctx, db); err != nil {
		return nil, err
	}
	stmts := b.stmts
	for _, q := range hotQueries {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			for _, st := range stmts {
				_ = st.Close()
			}
			return nil, fmt.Errorf("prepare bus queries: %w", err)
		}
		stmts[q] = st
	}
	b.db = db
	b.group = newGrouper(b)
	return b, nil
}

// migrate creates or updates the bus tables.
func migrate(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("migrate bus tables: %w", err)
	}
	return addDEKColumn(ctx, db)
}

// Visibility is how long a delivered, unacknowledged message stays hidden.
func (b *Bus) Visibility() time.Duration { return b.o.Visibility }

// MaxAttempts is how many deliveries a message gets before it is dead-lettered.
func (b *Bus) MaxAttempts() int { return b.o.MaxAttempts }

// Close wakes every waiting Receive and Request (they return ErrClosed), stores the
// messages already sent and refuses later ones. It does not close the database. Safe to call twice.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
		close(b.closed)
		if b.nb != nil {
			b.nb.close()
			return
		}
		b.group.close()
		b.closeStmts()
	})
	return nil
}

// checkName validates an identity or a topic.
func checkName(what, s string) error {
	if s == "" || len(s) > 256 || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s must be 1 to 256 bytes of UTF-8", ErrInvalid, what)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s contains a control character", ErrInvalid, what)
		}
	}
	return nil
}

func newID() string {
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		panic(fmt.Sprintf("read random: %v", err)) // crypto/rand does not fail on supported systems
	}
	return hex.EncodeToString(b[:])
}

// envelope is a stored message's authenticated metadata.
type envelope struct {
	id, kind, from, to, topic, replyTo string
	created, expires                   int64
}

// header encodes e unambiguously: it is the AES-GCM additional data (so that a
// ciphertext cannot be moved to another row or recipient) and, with the payload hash,
// what the sender signs.
func (e *envelope) header() []byte {
	out := []byte("symbi-bus-v1")
	for _, f := range []string{e.id, e.kind, e.from, e.to, e.topic, e.replyTo} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(f)))
		out = append(out, f...)
	}
	out = binary.BigEndian.AppendUint64(out, uint64(e.created))
	return binary.BigEndian.AppendUint64(out, uint64(e.expires))
}

func signed(hdr []byte, sum [32]byte) []byte {
	return append(append([]byte{}, hdr...), sum[:]...)
}

// signingKey returns identity's private key, creating and storing it on first use.
func (b *Bus) signingKey(ctx context.Context, identity string) (ed25519.PrivateKey, error) {
	b.mu.Lock()
	k, ok := b.keys[identity]
	b.mu.Unlock()
	if ok {
		return k, nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key of %s: %w", identity, err)
	}
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, fmt.Errorf("generate key of %s: %w", identity, err)
	}
	sealed := b.aead.Seal(nonce, nonce, priv.Seed(), keyAAD(identity))
	var pub ed25519.PublicKey
	var stored []byte
	if b.nb != nil {
		pub, stored, err = b.nb.natsKey(ctx, identity, priv.Public().(ed25519.PublicKey), sealed)
	} else {
		// Another process may have created it first: the stored key wins.
		if _, err := b.x(nil).ExecContext(ctx, `INSERT INTO bus_keys (identity, public, sealed) VALUES (?, ?, ?) ON CONFLICT (identity) DO NOTHING`,
			identity, []byte(priv.Public().(ed25519.PublicKey)), sealed); err != nil {
			return nil, fmt.Errorf("store key of %s: %w", identity, err)
		}
		pub, stored, err = b.loadKey(ctx, b.x(nil), identity)
	}
	if err != nil {
		return nil, err
	}
	if len(stored) < b.aead.NonceSize() {
		return nil, fmt.Errorf("unseal key of %s: %w", identity, ErrTampered)
	}
	seed, err := b.aead.Open(nil, stored[:b.aead.NonceSize()], stored[b.aead.NonceSize():], keyAAD(identity))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("unseal key of %s: %w", identity, ErrTampered)
	}
	k = ed25519.NewKeyFromSeed(seed)
	if !k.Public().(ed25519.PublicKey).Equal(pub) {
		return nil, fmt.Errorf("unseal key of %s: public key does not match: %w", identity, ErrTampered)
	}
	b.mu.Lock()
	b.keys[identity] = k
	b.pubs[identity] = pub
	b.mu.Unlock()
	return k, nil
}

func keyAAD(identity string) []byte { return []byte("symbi-bus-key-v1\x00" + identity) }

// loadKey reads identity's stored public key and sealed private key.
func (b *Bus) loadKey(ctx context.Context, q querier, identity string) (ed25519.PublicKey, []byte, error) {
	var pub, sealed []byte
	err := q.QueryRowContext(ctx, qLoadKey, identity).Scan(&pub, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("load key of %s: %w", identity, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load key of %s: %w", identity, err)
	}
	if len(pub) != ed25519.PublicKeySize || len(sealed) < b.aead.NonceSize() {
		return nil, nil, fmt.Errorf("load key of %s: %w", identity, ErrTampered)
	}
	return ed25519.PublicKey(pub), sealed, nil
}

// publicKey returns identity's stored public key, read once per process: a key read
// (or created) earlier is kept, so that changing the stored one later changes nothing.
func (b *Bus) publicKey(ctx context.Context, q querier, identity string) (ed25519.PublicKey, error) {
	b.mu.Lock()
	pub, ok := b.pubs[identity]
	b.mu.Unlock()
	if ok {
		return pub, nil
	}
	var err error
	if b.nb != nil {
		pub, _, err = b.nb.natsKey(ctx, identity, nil, nil)
	} else {
		pub, _, err = b.loadKey(ctx, q, identity)
	}
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.pubs[identity] = pub
	b.mu.Unlock()
	return pub, nil
}

// PublicKey returns identity's public signing key (creating the key pair on first use).
func (b *Bus) PublicKey(ctx context.Context, identity string) (ed25519.PublicKey, error) {
	if err := checkName("identity", identity); err != nil {
		return nil, err
	}
	k, err := b.signingKey(ctx, identity)
	if err != nil {
		return nil, err
	}
	return k.Public().(ed25519.PublicKey), nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

type dbtx interface {
	execer
	querier
}

// put signs, encrypts (under the recipient's data key) and stores one message. It
// returns the event to record once the message is committed.
func (b *Bus) put(ctx context.Context, x dbtx, e envelope, payload []byte, action string) (Event, error) {
	key, err := b.signingKey(ctx, e.from)
	if err != nil {
		return Event{}, err
	}
	dek, err := b.dataKeyOf(ctx, x, e.to, dekRecipient, true)
	if err != nil {
		return Event{}, err
	}
	hdr := e.header()
	sum := sha256.Sum256(payload)
	sig := ed25519.Sign(key, signed(hdr, sum))
	nonce := make([]byte, dek.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return Event{}, fmt.Errorf("store message: %w", err)
	}
	ct := dek.Seal(nil, nonce, payload, hdr)
	args := []any{e.id, e.kind, e.from, e.to, e.topic, e.replyTo, e.created, e.expires, e.created, nonce, ct, sig, dekRecipient}
	if b.nb != nil {
		err = b.natsPut(ctx, e, nonce, ct, sig)
	} else if p, ok := x.(prepared); ok && p.tx == nil {
		err = b.group.insert(args) // outside a transaction: share a commit with other senders
	} else {
		_, err = x.ExecContext(ctx, qInsertMessage, args...)
	}
	if err != nil {
		return Event{}, fmt.Errorf("store message %s: %w", e.id, err)
	}
	return Event{Action: action, ID: e.id, Kind: e.kind, From: e.from, To: e.to, Topic: e.topic, ReplyTo: e.replyTo,
		PayloadSHA256: hex.EncodeToString(sum[:]), Size: len(payload)}, nil
}

func (b *Bus) record(ev Event) {
	if b.o.Record != nil {
		b.o.Record(ev)
	}
}

// row is a stored message as read back.
type row struct {
	envelope
	attempts             int
	nonce, ct, signature []byte
	dek                  int
}

// open decrypts r with dek and verifies it with its sender's public key.
func (b *Bus) open(r *row, dek cipher.AEAD, pub ed25519.PublicKey) ([]byte, error) {
	if len(r.nonce) != dek.NonceSize() {
		return nil, fmt.Errorf("open message %s: bad nonce: %w", r.id, ErrTampered)
	}
	hdr := r.header()
	payload, err := dek.Open(nil, r.nonce, r.ct, hdr)
	if err != nil {
		return nil, fmt.Errorf("open message %s: decrypt: %w", r.id, ErrTampered)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, signed(hdr, sha256.Sum256(payload)), r.signature) {
		return nil, fmt.Errorf("open message %s: bad signature: %w", r.id, ErrTampered)
	}
	return payload, nil
}

// verify opens r with the stored public key of its sender.
func (b *Bus) verify(ctx context.Context, q querier, r *row) ([]byte, error) {
	pub, err := b.publicKey(ctx, q, r.from)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("open message %s: sender %s has no key: %w", r.id, r.from, ErrTampered)
	}
	if err != nil {
		return nil, err
	}
	dek, err := b.dataKey(ctx, q, r.to, r.dek)
	if err != nil {
		return nil, fmt.Errorf("open message %s: %w", r.id, err)
	}
	return b.open(r, dek, pub)
}

func (b *Bus) checkPayload(p []byte) error {
	if len(p) > b.o.MaxPayload {
		return fmt.Errorf("%w: payload is %d bytes, at most %d", ErrInvalid, len(p), b.o.MaxPayload)
	}
	return nil
}

// notify wakes whoever waits for identity's messages, and tells Options.Notify; on
// NATS, in every process that shares the bus.
func (b *Bus) notify(identity string) {
	if b.nb != nil {
		if err := b.nb.wake(identity); err == nil {
			return // the wake-up comes back to this process too
		} else {
			b.log.Warn("announce bus message", "identity", identity, "err", err)
		}
	}
	b.wakeLocal(identity)
}

// wakeLocal wakes whoever waits for identity's messages in this process, and tells
// Options.Notify.
func (b *Bus) wakeLocal(identity string) {
	b.mu.Lock()
	if ch, ok := b.wake[identity]; ok {
		close(ch)
		delete(b.wake, identity)
	}
	b.mu.Unlock()
	if b.o.Notify != nil {
		b.o.Notify(identity)
	}
}

func (b *Bus) waiter(identity string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.wake[identity]
	if !ok {
		ch = make(chan struct{})
		b.wake[identity] = ch
	}
	return ch
}

// await blocks until identity may have a new message, the next poll, the deadline,
// ctx or Close. It reports false when the caller should stop waiting.
func (b *Bus) await(ctx context.Context, ch <-chan struct{}, deadline time.Time) (bool, error) {
	left := time.Until(deadline)
	if left <= 0 {
		return false, nil
	}
	t := time.NewTimer(min(left, b.o.Poll))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return false, ctx.Err()
	case <-b.closed:
		return false, ErrClosed
	}
	return true, nil
}

// checkTTL returns the TTL a message asked for, ttl (0: Options.TTL), unless it exceeds
// Options.MaxTTL.
func (b *Bus) checkTTL(ttl time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return b.o.TTL, nil
	case ttl < 0:
		return 0, fmt.Errorf("%w: ttl must be positive", ErrInvalid)
	case ttl > b.o.MaxTTL:
		return 0, fmt.Errorf("%w: ttl %s exceeds the maximum %s", ErrInvalid, ttl, b.o.MaxTTL)
	}
	return ttl, nil
}

// admit spends one of from's tokens, or refuses with a *RateLimitError.
func (b *Bus) admit(from string) error {
	return b.limit.take(from, b.o.Now())
}

// Send stores a direct message from one identity to another, with the default TTL, and
// returns its id.
func (b *Bus) Send(ctx context.Context, from, to string, payload []byte) (string, error) {
	return b.SendTTL(ctx, from, to, payload, 0)
}

// SendTTL is Send with a TTL of the sender's choosing (0: the default; at most
// Options.MaxTTL).
func (b *Bus) SendTTL(ctx context.Context, from, to string, payload []byte, ttl time.Duration) (string, error) {
	ttl, terr := b.checkTTL(ttl)
	if err := errors.Join(checkName("sender", from), checkName("recipient", to), b.checkPayload(payload), terr); err != nil {
		return "", err
	}
	if err := b.admit(from); err != nil {
		return "", err
	}
	now := b.o.Now().UnixNano()
	e := envelope{id: newID(), kind: KindDirect, from: from, to: to, created: now, expires: now + int64(ttl)}
	ev, err := b.put(ctx, b.x(nil), e, payload, "bus/send")
	if err != nil {
		return "", err
	}
	b.record(ev)
	b.notify(to)
	return e.id, nil
}

// Subscribe adds identity to topic's subscribers (again is not an error).
func (b *Bus) Subscribe(ctx context.Context, identity, topic string) error {
	if err := errors.Join(checkName("identity", identity), checkName("topic", topic)); err != nil {
		return err
	}
	if b.nb != nil {
		if _, err := b.nb.subs.Put(ctx, token(topic)+"."+token(identity), nil); err != nil {
			return fmt.Errorf("subscribe %s to %s: %w", identity, topic, err)
		}
		return nil
	}
	if _, err := b.x(nil).ExecContext(ctx, `INSERT INTO bus_subscriptions (topic, identity) VALUES (?, ?) ON CONFLICT DO NOTHING`, topic, identity); err != nil {
		return fmt.Errorf("subscribe %s to %s: %w", identity, topic, err)
	}
	return nil
}

// Unsubscribe removes identity from topic's subscribers.
func (b *Bus) Unsubscribe(ctx context.Context, identity, topic string) error {
	if b.nb != nil {
		if err := errors.Join(checkName("identity", identity), checkName("topic", topic)); err != nil {
			return err
		}
		if err := b.nb.subs.Purge(ctx, token(topic)+"."+token(identity)); err != nil {
			return fmt.Errorf("unsubscribe %s from %s: %w", identity, topic, err)
		}
		return nil
	}
	if _, err := b.x(nil).ExecContext(ctx, `DELETE FROM bus_subscriptions WHERE topic = ? AND identity = ?`, topic, identity); err != nil {
		return fmt.Errorf("unsubscribe %s from %s: %w", identity, topic, err)
	}
	return nil
}

// Publish puts a copy of payload, signed by from, in the queue of every subscriber of
// topic, with the default TTL, and returns how many there were.
func (b *Bus) Publish(ctx context.Context, from, topic string, payload []byte) (int, error) {
	return b.PublishTTL(ctx, from, topic, payload, 0)
}

// PublishTTL is Publish with a TTL of the sender's choosing (0: the default; at most
// Options.MaxTTL). A publish spends one of the sender's tokens, whatever the number of
// subscribers.
func (b *Bus) PublishTTL(ctx context.Context, from, topic string, payload []byte, ttl time.Duration) (int, error) {
	ttl, terr := b.checkTTL(ttl)
	if err := errors.Join(checkName("sender", from), checkName("topic", topic), b.checkPayload(payload), terr); err != nil {
		return 0, err
	}
	if err := b.admit(from); err != nil {
		return 0, err
	}
	if _, err := b.signingKey(ctx, from); err != nil { // outside the transaction: it writes on its own
		return 0, err
	}
	if b.nb != nil {
		return b.natsPublish(ctx, from, topic, payload, ttl)
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("publish to %s: %w", topic, err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := b.x(tx).QueryContext(ctx, `SELECT identity FROM bus_subscriptions WHERE topic = ? ORDER BY identity`, topic)
	if err != nil {
		return 0, fmt.Errorf("publish to %s: %w", topic, err)
	}
	var subs []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return 0, fmt.Errorf("publish to %s: %w", topic, err)
		}
		subs = append(subs, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("publish to %s: %w", topic, err)
	}
	now := b.o.Now().UnixNano()
	evs := make([]Event, 0, len(subs))
	for _, s := range subs {
		e := envelope{id: newID(), kind: KindTopic, from: from, to: s, topic: topic, created: now, expires: now + int64(ttl)}
		ev, err := b.put(ctx, b.x(tx), e, payload, "bus/publish")
		if err != nil {
			return 0, err
		}
		evs = append(evs, ev)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("publish to %s: %w", topic, err)
	}
	for i, s := range subs {
		b.record(evs[i])
		b.notify(s)
	}
	return len(subs), nil
}

const selectRow = `SELECT id, kind, sender, recipient, topic, reply_to, created_ns, expires_ns, attempts, nonce, ciphertext, signature, dek FROM bus_messages`

// The queries of every message's path, prepared when the bus opens.
const (
	qLoadKey       = `SELECT public, sealed FROM bus_keys WHERE identity = ?`
	qLoadDataKey   = `SELECT wrapped FROM bus_data_keys WHERE identity = ?`
	qInsertMessage = `INSERT INTO bus_messages (id, kind, sender, recipient, topic, reply_to, created_ns, expires_ns, visible_ns, nonce, ciphertext, signature, dek)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qExpire = `UPDATE bus_messages SET state = 'dead', reason = 'expired'
		WHERE recipient = ? AND state = 'ready' AND expires_ns <= ?`
	qDue = selectRow + ` WHERE recipient = ? AND state = 'ready' AND kind != 'reply' AND visible_ns <= ?
			ORDER BY created_ns, id LIMIT ?`
	qDelivered = `UPDATE bus_messages SET attempts = attempts + 1, visible_ns = ? WHERE id = ?`
	qAck       = `DELETE FROM bus_messages WHERE id = ? AND recipient = ? AND state = 'ready' AND kind != 'reply'`
	// qAnyDue: whether identity has a message to deliver (qDue) or to expire (qExpire).
	qAnyDue = `SELECT EXISTS (SELECT 1 FROM bus_messages WHERE recipient = ?1 AND state = 'ready'
		AND ((kind != 'reply' AND visible_ns <= ?2) OR expires_ns <= ?2))`
)

var hotQueries = []string{qLoadKey, qLoadDataKey, qInsertMessage, qExpire, qDue, qDelivered, qAck, qAnyDue}

func scanRow(sc interface{ Scan(...any) error }) (*row, error) {
	r := &row{}
	err := sc.Scan(&r.id, &r.kind, &r.from, &r.to, &r.topic, &r.replyTo, &r.created, &r.expires, &r.attempts, &r.nonce, &r.ct, &r.signature, &r.dek)
	return r, err
}

// Receive returns up to max (0: 10, at most 100) of identity's messages that are due,
// waiting up to wait for the first one. A delivered message stays hidden for the
// visibility timeout and comes back unless it is acknowledged. Messages that fail
// verification are dead-lettered and reported, never returned.
func (b *Bus) Receive(ctx context.Context, identity string, max int, wait time.Duration) ([]Message, error) {
	if err := checkName("identity", identity); err != nil {
		return nil, err
	}
	if max <= 0 {
		max = 10
	}
	max = min(max, 100)
	deadline := time.Now().Add(wait)
	for {
		ch := b.waiter(identity) // before reading, so that a message stored meanwhile wakes us
		msgs, err := b.take(ctx, identity, max)
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
		if ok, err := b.await(ctx, ch, deadline); !ok {
			return []Message{}, err
		}
	}
}

// take claims up to max due messages of identity.
func (b *Bus) take(ctx context.Context, identity string, max int) ([]Message, error) {
	if b.nb != nil {
		return b.natsTake(ctx, identity, max)
	}
	// A read first: a poll that finds nothing (the common case of a waiting Receive)
	// takes no write lock and writes nothing.
	var due int
	if err := b.x(nil).QueryRowContext(ctx, qAnyDue, identity, b.o.Now().UnixNano()).Scan(&due); err != nil {
		return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
	}
	if due == 0 {
		return []Message{}, nil
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
	}
	defer func() { _ = tx.Rollback() }()
	now := b.o.Now().UnixNano()
	// A write first, so that the transaction holds the write lock from its start.
	if _, err := b.x(tx).ExecContext(ctx, qExpire, identity, now); err != nil {
		return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
	}
	out := []Message{}
	var dead []Event
	for len(out) < max {
		rows, err := b.x(tx).QueryContext(ctx, qDue, identity, now, max-len(out))
		if err != nil {
			return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
		}
		var batch []*row
		for rows.Next() {
			r, err := scanRow(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
			}
			batch = append(batch, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
		}
		if len(batch) == 0 {
			break
		}
		for _, r := range batch {
			reason := ""
			var payload []byte
			if r.attempts >= b.o.MaxAttempts {
				reason = fmt.Sprintf("not acknowledged after %d deliveries", r.attempts)
			} else if payload, err = b.verify(ctx, b.x(tx), r); errors.Is(err, ErrTampered) {
				reason = "failed verification"
				b.log.Warn("bus message failed verification", "id", r.id, "sender", r.from, "recipient", r.to, "err", err)
			} else if err != nil {
				return nil, err
			}
			if reason != "" {
				if _, err := b.x(tx).ExecContext(ctx, `UPDATE bus_messages SET state = 'dead', reason = ? WHERE id = ?`, reason, r.id); err != nil {
					return nil, fmt.Errorf("dead-letter message %s: %w", r.id, err)
				}
				dead = append(dead, Event{Action: "bus/dead_letter", ID: r.id, Kind: r.kind, From: r.from, To: r.to, Topic: r.topic, Reason: reason})
				continue
			}
			if _, err := b.x(tx).ExecContext(ctx, qDelivered,
				now+int64(b.o.Visibility), r.id); err != nil {
				return nil, fmt.Errorf("receive message %s: %w", r.id, err)
			}
			sum := sha256.Sum256(payload)
			dead = append(dead, Event{Action: "bus/deliver", ID: r.id, Kind: r.kind, From: r.from, To: r.to, Topic: r.topic,
				PayloadSHA256: hex.EncodeToString(sum[:]), Size: len(payload)})
			out = append(out, Message{ID: r.id, Kind: r.kind, From: r.from, To: r.to, Topic: r.topic, ReplyTo: r.replyTo,
				Payload: payload, Created: time.Unix(0, r.created), Attempt: r.attempts + 1})
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
	}
	for _, ev := range dead {
		b.record(ev)
	}
	return out, nil
}

// Ack removes a message identity received.
func (b *Bus) Ack(ctx context.Context, identity, id string) error {
	if b.nb != nil {
		return b.natsAck(ctx, identity, id)
	}
	res, err := b.x(nil).ExecContext(ctx, qAck, id, identity)
	if err != nil {
		return fmt.Errorf("ack message %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("ack message %s: %w", id, ErrNotFound)
	}
	b.record(Event{Action: "bus/ack", ID: id, To: identity})
	return nil
}

// DeadLetters lists identity's dead-lettered messages, oldest first.
func (b *Bus) DeadLetters(ctx context.Context, identity string, limit int) ([]DeadLetter, error) {
	if b.nb != nil {
		return b.natsDeadLetters(ctx, identity, limit)
	}
	rows, err := b.x(nil).QueryContext(ctx, `SELECT id, kind, sender, topic, attempts, reason FROM bus_messages
		WHERE recipient = ? AND state = 'dead' ORDER BY created_ns, id LIMIT ?`, identity, limit)
	if err != nil {
		return nil, fmt.Errorf("list dead letters of %s: %w", identity, err)
	}
	defer rows.Close()
	out := []DeadLetter{}
	for rows.Next() {
		var d DeadLetter
		if err := rows.Scan(&d.ID, &d.Kind, &d.From, &d.Topic, &d.Attempts, &d.Reason); err != nil {
			return nil, fmt.Errorf("list dead letters of %s: %w", identity, err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list dead letters of %s: %w", identity, err)
	}
	return out, nil
}

// Pending describes a message waiting in an identity's queue, without its payload.
type Pending struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	From     string    `json:"from"`
	Topic    string    `json:"topic,omitempty"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	Attempts int       `json:"attempts"` // deliveries so far
	Due      bool      `json:"due"`      // false while a delivery awaits its acknowledgement
}

// Pending lists up to limit (0: 100) of identity's queued messages (direct, topic and
// requests, delivered or not, not yet acknowledged), oldest first: metadata only.
func (b *Bus) Pending(ctx context.Context, identity string, limit int) ([]Pending, error) {
	if err := checkName("identity", identity); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	if b.nb != nil {
		return b.natsPending(ctx, identity, limit)
	}
	now := b.o.Now().UnixNano()
	rows, err := b.x(nil).QueryContext(ctx, `SELECT id, kind, sender, topic, created_ns, expires_ns, attempts, visible_ns FROM bus_messages
		WHERE recipient = ? AND state = 'ready' AND kind != 'reply' AND expires_ns > ? ORDER BY created_ns, id LIMIT ?`, identity, now, limit)
	if err != nil {
		return nil, fmt.Errorf("list pending messages of %s: %w", identity, err)
	}
	defer rows.Close()
	out := []Pending{}
	for rows.Next() {
		var p Pending
		var created, expires, visible int64
		if err := rows.Scan(&p.ID, &p.Kind, &p.From, &p.Topic, &created, &expires, &p.Attempts, &visible); err != nil {
			return nil, fmt.Errorf("list pending messages of %s: %w", identity, err)
		}
		p.Created, p.Expires, p.Due = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC(), visible <= now
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pending messages of %s: %w", identity, err)
	}
	return out, nil
}

// Request sends payload to identity to as a request and waits up to timeout for its
// Reply. On timeout the request is withdrawn and ErrTimeout returned.
func (b *Bus) Request(ctx context.Context, from, to string, payload []byte, timeout time.Duration) (Message, error) {
	if err := errors.Join(checkName("sender", from), checkName("recipient", to), b.checkPayload(payload)); err != nil {
		return Message{}, err
	}
	if timeout <= 0 || timeout > b.o.MaxTTL {
		return Message{}, fmt.Errorf("%w: timeout must be positive and at most %s", ErrInvalid, b.o.MaxTTL)
	}
	if err := b.admit(from); err != nil {
		return Message{}, err
	}
	now := b.o.Now().UnixNano()
	e := envelope{id: newID(), kind: KindRequest, from: from, to: to, created: now, expires: now + int64(timeout)}
	if _, err := b.signingKey(ctx, from); err != nil { // outside the transaction: it writes on its own
		return Message{}, err
	}
	ev, err := b.openRequest(ctx, e, payload)
	if err != nil {
		return Message{}, err
	}
	b.record(ev)
	b.notify(to)
	deadline := time.Now().Add(timeout)
	for {
		ch := b.waiter(from)
		m, ok, err := b.takeReply(ctx, from, e.id)
		if err != nil || ok {
			return m, err
		}
		if ok, err := b.await(ctx, ch, deadline); !ok {
			if b.nb != nil {
				b.natsWithdraw(e.id, to, from)
			} else {
				b.withdraw(e.id)
			}
			if err == nil {
				err = fmt.Errorf("request %s to %s: %w", e.id, to, ErrTimeout)
			}
			return Message{}, err
		}
	}
}

// openRequest stores request e and its message.
func (b *Bus) openRequest(ctx context.Context, e envelope, payload []byte) (Event, error) {
	if b.nb != nil {
		if err := b.natsOpenRequest(ctx, e); err != nil {
			return Event{}, fmt.Errorf("send request: %w", err)
		}
		ev, err := b.put(ctx, nil, e, payload, "bus/request")
		if err != nil {
			b.natsWithdraw(e.id, e.to, e.from)
		}
		return ev, err
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return Event{}, fmt.Errorf("send request: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := b.x(tx).ExecContext(ctx, `INSERT INTO bus_requests (id, requester, responder, expires_ns) VALUES (?, ?, ?, ?)`,
		e.id, e.from, e.to, e.expires); err != nil {
		return Event{}, fmt.Errorf("send request: %w", err)
	}
	ev, err := b.put(ctx, b.x(tx), e, payload, "bus/request")
	if err != nil {
		return Event{}, err
	}
	if err := tx.Commit(); err != nil {
		return Event{}, fmt.Errorf("send request: %w", err)
	}
	return ev, nil
}

// withdraw forgets a request that timed out, and its message if still queued.
func (b *Bus) withdraw(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.x(nil).ExecContext(ctx, `DELETE FROM bus_requests WHERE id = ?`, id); err != nil {
		b.log.Error("withdraw bus request", "id", id, "err", err)
	}
	if _, err := b.x(nil).ExecContext(ctx, `DELETE FROM bus_messages WHERE id = ? OR (kind = 'reply' AND reply_to = ?)`, id, id); err != nil {
		b.log.Error("withdraw bus request", "id", id, "err", err)
	}
}

// takeReply removes and returns the reply to request id, if there is one.
func (b *Bus) takeReply(ctx context.Context, requester, id string) (Message, bool, error) {
	if b.nb != nil {
		return b.natsTakeReply(ctx, requester, id)
	}
	r, err := scanRow(b.x(nil).QueryRowContext(ctx, selectRow+` WHERE recipient = ? AND kind = 'reply' AND reply_to = ? AND state = 'ready'`, requester, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Message{}, false, nil
	}
	if err != nil {
		return Message{}, false, fmt.Errorf("read reply to %s: %w", id, err)
	}
	payload, verr := b.verify(ctx, b.x(nil), r)
	if verr != nil && !errors.Is(verr, ErrTampered) {
		return Message{}, false, verr
	}
	if verr != nil {
		b.log.Warn("bus message failed verification", "id", r.id, "sender", r.from, "recipient", r.to, "err", verr)
		if _, err := b.x(nil).ExecContext(ctx, `UPDATE bus_messages SET state = 'dead', reason = 'failed verification' WHERE id = ?`, r.id); err != nil {
			return Message{}, false, fmt.Errorf("dead-letter message %s: %w", r.id, err)
		}
		b.record(Event{Action: "bus/dead_letter", ID: r.id, Kind: r.kind, From: r.from, To: r.to, ReplyTo: id, Reason: "failed verification"})
		return Message{}, false, nil
	}
	if _, err := b.x(nil).ExecContext(ctx, `DELETE FROM bus_messages WHERE id = ?`, r.id); err != nil {
		return Message{}, false, fmt.Errorf("take reply to %s: %w", id, err)
	}
	if _, err := b.x(nil).ExecContext(ctx, `DELETE FROM bus_requests WHERE id = ?`, id); err != nil {
		return Message{}, false, fmt.Errorf("take reply to %s: %w", id, err)
	}
	sum := sha256.Sum256(payload)
	b.record(Event{Action: "bus/deliver", ID: r.id, Kind: r.kind, From: r.from, To: r.to, ReplyTo: id,
		PayloadSHA256: hex.EncodeToString(sum[:]), Size: len(payload)})
	return Message{ID: r.id, Kind: r.kind, From: r.from, To: r.to, ReplyTo: id, Payload: payload,
		Created: time.Unix(0, r.created), Attempt: 1}, true, nil
}

// Reply answers request id, which identity received; it also acknowledges the request.
func (b *Bus) Reply(ctx context.Context, identity, id string, payload []byte) (string, error) {
	if err := errors.Join(checkName("identity", identity), b.checkPayload(payload)); err != nil {
		return "", err
	}
	if err := b.admit(identity); err != nil {
		return "", err
	}
	if _, err := b.signingKey(ctx, identity); err != nil { // outside the transaction: it writes on its own
		return "", err
	}
	if b.nb != nil {
		return b.natsReply(ctx, identity, id, payload)
	}
	now := b.o.Now().UnixNano()
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }()
	// The write first: it takes the write lock and ends the request, once.
	res, err := b.x(tx).ExecContext(ctx, `UPDATE bus_requests SET responder = responder WHERE id = ? AND responder = ? AND expires_ns > ?`, id, identity, now)
	if err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return "", fmt.Errorf("reply to %s: no pending request for %s: %w", id, identity, ErrNotFound)
	}
	var requester string
	var expires int64
	if err := b.x(tx).QueryRowContext(ctx, `SELECT requester, expires_ns FROM bus_requests WHERE id = ?`, id).Scan(&requester, &expires); err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	var replied int
	if err := b.x(tx).QueryRowContext(ctx, `SELECT count(*) FROM bus_messages WHERE kind = 'reply' AND reply_to = ?`, id).Scan(&replied); err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	if replied > 0 {
		return "", fmt.Errorf("reply to %s: %w: already answered", id, ErrInvalid)
	}
	e := envelope{id: newID(), kind: KindReply, from: identity, to: requester, replyTo: id, created: now, expires: expires}
	ev, err := b.put(ctx, b.x(tx), e, payload, "bus/reply")
	if err != nil {
		return "", err
	}
	if _, err := b.x(tx).ExecContext(ctx, `DELETE FROM bus_messages WHERE id = ? AND recipient = ?`, id, identity); err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	b.record(ev)
	b.notify(requester)
	return e.id, nil
}
