package bus

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The NATS transport keeps the bus's state in JetStream key-value buckets instead of
// the state database, so that symbi processes on several hosts can share one bus:
//
//	<prefix>_KEYS  identity             -> public key || sealed private key
//	<prefix>_DEKS  identity             -> wrapped data key
//	<prefix>_MSGS  recipient.message-id -> a stored message (natsRow, JSON)
//	<prefix>_SUBS  topic.identity       -> (empty)
//	<prefix>_REQS  request-id           -> an open request (natsReq, JSON)
//
// (identities and topics appear in keys base64url-encoded). What is stored is what the
// state database holds: ciphertext, nonce and signature, never a payload or an
// unwrapped key. A message's state changes (delivery, dead letter, acknowledgement)
// are compare-and-set on the entry's revision, so that two processes never both
// deliver one delivery. The arrival of a message is announced on the core NATS subject
// <prefix lowercased>.wake.<identity> to every process, which wakes its waiting
// receivers and tells Options.Notify.

// natsPoll is how often a waiting Receive or Request rereads its queue on NATS unless
// Options.Poll says otherwise.
const natsPoll = time.Second

// NATSOptions selects the NATS transport for OpenNATS.
type NATSOptions struct {
	// Conn is the connection to the NATS server or cluster (JetStream enabled). The bus
	// does not close it.
	Conn *nats.Conn
	// Prefix names the buckets and subjects; "" : SYMBI_BUS. Buses that share a prefix
	// share a bus.
	Prefix string
	// Replicas is the number of copies JetStream keeps of each bucket (a clustered
	// server); 0: 1.
	Replicas int
	// MaxBytes bounds the messages bucket (what its entries take on the server); 0:
	// unlimited. A full bucket refuses new messages (the sender gets an error), it never
	// drops stored ones.
	MaxBytes int64
}

// natsMarkerTTL is how long the marker an acknowledged (purged) message leaves behind
// is kept: long enough for a watcher to see it, not forever.
const natsMarkerTTL = time.Minute

// natsDeadLetterKeep is how long a message stays in the bucket after its longest
// possible lifetime (Options.MaxTTL), so that dead letters can be listed meanwhile.
const natsDeadLetterKeep = 24 * time.Hour

type natsBackend struct {
	js                           jetstream.JetStream
	nc                           *nats.Conn
	keys, deks, msgs, subs, reqs jetstream.KeyValue
	wakeSubject                  string // prefix of the wake subjects, with the trailing dot
	sub                          *nats.Subscription

	stream      jetstream.Stream // the messages bucket's stream
	msgsSubject string           // the messages bucket's subject prefix, with the trailing dot
	wmu         sync.Mutex
	queues      map[string]*queueWatch // identity -> its queue, watched
	wctx        context.Context        // the watchers' lifetime
	wcancel     context.CancelFunc
	wclosed     bool // stopWatches ran
	wg          sync.WaitGroup
}

// OpenNATS opens the bus on a NATS server with JetStream: its keys, messages,
// subscriptions and open requests are kept in JetStream buckets that every bus with the
// same master key and prefix shares. key is the 32-byte master key (see Open).
func OpenNATS(ctx context.Context, no NATSOptions, key []byte, opts *Options) (*Bus, error) {
	if no.Conn == nil {
		return nil, fmt.Errorf("open bus: no NATS connection")
	}
	if no.Prefix == "" {
		no.Prefix = "SYMBI_BUS"
	}
	if !validPrefix(no.Prefix) {
		return nil, fmt.Errorf("open bus: NATS prefix %q: want letters, digits, - and _", no.Prefix)
	}
	if no.Replicas <= 0 {
		no.Replicas = 1
	}
	b, err := newBus(key, opts)
	if err != nil {
		return nil, err
	}
	if opts == nil || opts.Poll <= 0 {
		// Arrivals wake receivers at once (the wake subject): the poll only catches
		// deliveries whose visibility timeout ran out, so poll less often.
		b.o.Poll = natsPoll
	}
	js, err := jetstream.New(no.Conn)
	if err != nil {
		return nil, fmt.Errorf("open bus: %w", err)
	}
	nb := &natsBackend{js: js, nc: no.Conn, wakeSubject: strings.ToLower(no.Prefix) + ".wake."}
	if no.MaxBytes < 0 {
		return nil, fmt.Errorf("open bus: negative NATS MaxBytes")
	}
	// Messages and requests age out of their buckets once no delivery can want them
	// (every write renews an entry's age; a message lives at most MaxTTL), and the
	// markers that acknowledgements leave expire.
	msgAge, maxBytes := b.o.MaxTTL+natsDeadLetterKeep, no.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	for _, kv := range []struct {
		name     string
		to       *jetstream.KeyValue
		ttl      time.Duration
		maxBytes int64
	}{{"KEYS", &nb.keys, 0, -1}, {"DEKS", &nb.deks, 0, -1}, {"MSGS", &nb.msgs, msgAge, maxBytes}, {"SUBS", &nb.subs, 0, -1}, {"REQS", &nb.reqs, msgAge, -1}} {
		cfg := jetstream.KeyValueConfig{Bucket: no.Prefix + "_" + kv.name,
			Storage: jetstream.FileStorage, History: 1, Replicas: no.Replicas, TTL: kv.ttl, MaxBytes: kv.maxBytes}
		if kv.ttl > 0 {
			cfg.LimitMarkerTTL = natsMarkerTTL
		}
		*kv.to, err = js.CreateOrUpdateKeyValue(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("open bus: bucket %s_%s: %w", no.Prefix, kv.name, err)
		}
	}
	if nb.stream, err = js.Stream(ctx, "KV_"+no.Prefix+"_MSGS"); err != nil {
		return nil, fmt.Errorf("open bus: bucket %s_MSGS: %w", no.Prefix, err)
	}
	nb.msgsSubject = "$KV." + no.Prefix + "_MSGS."
	nb.queues = map[string]*queueWatch{}
	nb.wctx, nb.wcancel = context.WithCancel(context.Background())
	b.nb = nb
	nb.sub, err = no.Conn.Subscribe(nb.wakeSubject+"*", func(m *nats.Msg) {
		id, err := untoken(strings.TrimPrefix(m.Subject, nb.wakeSubject))
		if err != nil {
			return
		}
		b.wakeLocal(id)
	})
	if err != nil {
		nb.wcancel()
		return nil, fmt.Errorf("open bus: subscribe to wake-ups: %w", err)
	}
	if err := no.Conn.FlushTimeout(10 * time.Second); err != nil {
		nb.close()
		return nil, fmt.Errorf("open bus: %w", err)
	}
	b.group = nil
	if !b.o.skipMasterCheck {
		if err := b.natsCheckMaster(ctx); err != nil {
			nb.close()
			return nil, err
		}
	}
	return b, nil
}

func validPrefix(p string) bool {
	if p == "" || len(p) > 64 {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// token encodes an identity or topic for a key or subject.
func token(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func untoken(t string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(t)
	return string(b), err
}

// natsRow is a stored message in the MSGS bucket.
type natsRow struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	From      string `json:"from"`
	To        string `json:"to"`
	Topic     string `json:"topic,omitempty"`
	ReplyTo   string `json:"reply_to,omitempty"`
	Created   int64  `json:"created_ns"`
	Expires   int64  `json:"expires_ns"`
	Visible   int64  `json:"visible_ns"`
	Attempts  int    `json:"attempts"`
	State     string `json:"state"` // ready or dead
	Reason    string `json:"reason,omitempty"`
	Nonce     []byte `json:"nonce"`
	Cipher    []byte `json:"ciphertext"`
	Signature []byte `json:"signature"`
}

func (r *natsRow) row() *row {
	return &row{envelope: envelope{id: r.ID, kind: r.Kind, from: r.From, to: r.To, topic: r.Topic, replyTo: r.ReplyTo,
		created: r.Created, expires: r.Expires}, attempts: r.Attempts, nonce: r.Nonce, ct: r.Cipher, signature: r.Signature, dek: dekRecipient}
}

// natsReq is an open request in the REQS bucket.
type natsReq struct {
	Requester string `json:"requester"`
	Responder string `json:"responder"`
	Expires   int64  `json:"expires_ns"`
	Reply     string `json:"reply,omitempty"` // the reply's id, once answered
}

func msgKey(recipient, id string) string { return token(recipient) + "." + id }

// wake tells every process sharing the bus that identity has a message.
func (nb *natsBackend) wake(identity string) error {
	return nb.nc.Publish(nb.wakeSubject+token(identity), nil)
}

func (nb *natsBackend) close() {
	_ = nb.sub.Unsubscribe()
	nb.stopWatches()
}

// getOrCreate stores value under key in kv unless a value is there already, and
// returns the stored one: the first writer wins, as INSERT ... ON CONFLICT DO NOTHING.
func getOrCreate(ctx context.Context, kv jetstream.KeyValue, key string, value []byte) ([]byte, error) {
	if value != nil {
		if _, err := kv.Create(ctx, key, value); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, err
		}
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	return e.Value(), nil
}

// natsKey stores identity's key pair (public || sealed) unless one is there, and
// returns the stored one.
func (nb *natsBackend) natsKey(ctx context.Context, identity string, pub, sealed []byte) (ed25519.PublicKey, []byte, error) {
	var v []byte
	if pub != nil {
		v = append(append([]byte{}, pub...), sealed...)
	}
	stored, err := getOrCreate(ctx, nb.keys, token(identity), v)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil, fmt.Errorf("load key of %s: %w", identity, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load key of %s: %w", identity, err)
	}
	if len(stored) < ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("load key of %s: %w", identity, ErrTampered)
	}
	return ed25519.PublicKey(stored[:ed25519.PublicKeySize]), stored[ed25519.PublicKeySize:], nil
}

// list returns the entries of kv whose keys match filter, without deleted ones.
func list(ctx context.Context, kv jetstream.KeyValue, filter string) ([]jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	var out []jetstream.KeyValueEntry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list %s: watcher stopped", filter)
			}
			if e == nil { // the end of the current values
				return out, nil
			}
			if e.Operation() == jetstream.KeyValuePut {
				out = append(out, e)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

type natsEntry struct {
	r   natsRow
	rev uint64
	key string
	bad bool // the stored value did not decode
}

// rows lists identity's stored messages, oldest first.
func (nb *natsBackend) rows(ctx context.Context, identity string) ([]natsEntry, error) {
	es, err := nb.current(ctx, identity)
	if err != nil {
		return nil, err
	}
	out := make([]natsEntry, 0, len(es))
	for _, e := range es {
		var n natsEntry
		if err := json.Unmarshal(e.Value(), &n.r); err != nil {
			// An entry that does not decode is reported as a tampered message of its key.
			n.r = natsRow{ID: strings.TrimPrefix(e.Key(), token(identity)+"."), To: identity, State: "ready", Kind: "unknown"}
			n.bad = true
		}
		n.rev, n.key = e.Revision(), e.Key()
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b natsEntry) int {
		if c := a.r.Created - b.r.Created; c != 0 {
			if c < 0 {
				return -1
			}
			return 1
		}
		return strings.Compare(a.r.ID, b.r.ID)
	})
	return out, nil
}

// update replaces an entry if it has not changed since it was read; false: it had.
func (nb *natsBackend) update(ctx context.Context, n *natsEntry) (bool, error) {
	v, err := json.Marshal(&n.r)
	if err != nil {
		return false, err
	}
	rev, err := nb.msgs.Update(ctx, n.key, v, n.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	n.rev = rev
	return true, nil
}

// natsPut stores a sealed message.
func (b *Bus) natsPut(ctx context.Context, e envelope, nonce, ct, sig []byte) error {
	select {
	case <-b.closed:
		return ErrClosed
	default:
	}
	v, err := json.Marshal(&natsRow{ID: e.id, Kind: e.kind, From: e.from, To: e.to, Topic: e.topic, ReplyTo: e.replyTo,
		Created: e.created, Expires: e.expires, Visible: e.created, State: "ready", Nonce: nonce, Cipher: ct, Signature: sig})
	if err != nil {
		return fmt.Errorf("store message: %w", err)
	}
	if _, err := b.nb.msgs.Create(ctx, msgKey(e.to, e.id), v); err != nil {
		return fmt.Errorf("store message: %w", err)
	}
	return nil
}

// natsTake is take on the NATS transport.
func (b *Bus) natsTake(ctx context.Context, identity string, max int) ([]Message, error) {
	nb := b.nb
	entries, err := nb.rows(ctx, identity)
	if err != nil {
		return nil, fmt.Errorf("receive messages of %s: %w", identity, err)
	}
	now := b.o.Now().UnixNano()
	out := []Message{}
	var evs []Event
	defer func() {
		for _, ev := range evs {
			b.record(ev)
		}
	}()
	for i := range entries {
		n := &entries[i]
		if len(out) >= max {
			break
		}
		if n.r.State != "ready" {
			continue
		}
		reason := ""
		var payload []byte
		switch {
		case n.bad || n.r.To != identity || n.key != msgKey(identity, n.r.ID):
			reason = "failed verification"
			b.log.Warn("bus message failed verification", "id", n.r.ID, "recipient", identity, "err", "stored entry does not decode or is under another key")
		case n.r.Expires <= now:
			reason = "expired"
		case n.r.Kind == KindReply || n.r.Visible > now:
			continue
		case n.r.Attempts >= b.o.MaxAttempts:
			reason = fmt.Sprintf("not acknowledged after %d deliveries", n.r.Attempts)
		default:
			if payload, err = b.verify(ctx, nil, n.r.row()); errors.Is(err, ErrTampered) {
				reason = "failed verification"
				b.log.Warn("bus message failed verification", "id", n.r.ID, "sender", n.r.From, "recipient", n.r.To, "err", err)
			} else if err != nil {
				return nil, err
			}
		}
		if reason != "" {
			n.r.State, n.r.Reason = "dead", reason
			ok, err := nb.update(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("dead-letter message %s: %w", n.r.ID, err)
			}
			if ok && reason != "expired" {
				evs = append(evs, Event{Action: "bus/dead_letter", ID: n.r.ID, Kind: n.r.Kind, From: n.r.From, To: n.r.To, Topic: n.r.Topic, Reason: reason})
			}
			continue
		}
		n.r.Attempts++
		n.r.Visible = now + int64(b.o.Visibility)
		ok, err := nb.update(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("receive message %s: %w", n.r.ID, err)
		}
		if !ok { // another receiver claimed it meanwhile
			continue
		}
		sum := sha256.Sum256(payload)
		evs = append(evs, Event{Action: "bus/deliver", ID: n.r.ID, Kind: n.r.Kind, From: n.r.From, To: n.r.To, Topic: n.r.Topic,
			PayloadSHA256: hex.EncodeToString(sum[:]), Size: len(payload)})
		out = append(out, Message{ID: n.r.ID, Kind: n.r.Kind, From: n.r.From, To: n.r.To, Topic: n.r.Topic, ReplyTo: n.r.ReplyTo,
			Payload: payload, Created: time.Unix(0, n.r.Created), Attempt: n.r.Attempts})
	}
	return out, nil
}

// natsAck is Ack on the NATS transport.
func (b *Bus) natsAck(ctx context.Context, identity, id string) error {
	if checkName("identity", identity) != nil || !isMessageID(id) {
		return fmt.Errorf("ack message %s: %w", id, ErrNotFound)
	}
	key := msgKey(identity, id)
	e, err := b.nb.msgs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("ack message %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("ack message %s: %w", id, err)
	}
	var r natsRow
	if err := json.Unmarshal(e.Value(), &r); err != nil || r.State != "ready" || r.Kind == KindReply {
		return fmt.Errorf("ack message %s: %w", id, ErrNotFound)
	}
	err = b.nb.msgs.Purge(ctx, key, jetstream.LastRevision(e.Revision()), jetstream.PurgeTTL(natsMarkerTTL))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("ack message %s: changed meanwhile: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("ack message %s: %w", id, err)
	}
	b.record(Event{Action: "bus/ack", ID: id, To: identity})
	return nil
}

// isMessageID reports whether id can be a message id (32 hex digits), and so a key.
func isMessageID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// natsDeadLetters is DeadLetters on the NATS transport.
func (b *Bus) natsDeadLetters(ctx context.Context, identity string, limit int) ([]DeadLetter, error) {
	entries, err := b.nb.rows(ctx, identity)
	if err != nil {
		return nil, fmt.Errorf("list dead letters of %s: %w", identity, err)
	}
	out := []DeadLetter{}
	for _, n := range entries {
		if n.r.State == "dead" && len(out) < limit {
			out = append(out, DeadLetter{ID: n.r.ID, Kind: n.r.Kind, From: n.r.From, Topic: n.r.Topic, Attempts: n.r.Attempts, Reason: n.r.Reason})
		}
	}
	return out, nil
}

// natsPending is Pending on the NATS transport.
func (b *Bus) natsPending(ctx context.Context, identity string, limit int) ([]Pending, error) {
	entries, err := b.nb.rows(ctx, identity)
	if err != nil {
		return nil, fmt.Errorf("list pending messages of %s: %w", identity, err)
	}
	now := b.o.Now().UnixNano()
	out := []Pending{}
	for _, n := range entries {
		if n.r.State != "ready" || n.r.Kind == KindReply || n.r.Expires <= now || len(out) >= limit {
			continue
		}
		out = append(out, Pending{ID: n.r.ID, Kind: n.r.Kind, From: n.r.From, Topic: n.r.Topic, Created: time.Unix(0, n.r.Created).UTC(),
			Expires: time.Unix(0, n.r.Expires).UTC(), Attempts: n.r.Attempts, Due: n.r.Visible <= now})
	}
	return out, nil
}

// natsSubscribers lists topic's subscribers, sorted.
func (b *Bus) natsSubscribers(ctx context.Context, topic string) ([]string, error) {
	es, err := list(ctx, b.nb.subs, token(topic)+".*")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range es {
		_, t, _ := strings.Cut(e.Key(), ".")
		id, err := untoken(t)
		if err != nil {
			continue
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

// natsRequest stores request e (before its message) and returns when it is stored.
func (b *Bus) natsOpenRequest(ctx context.Context, e envelope) error {
	v, err := json.Marshal(&natsReq{Requester: e.from, Responder: e.to, Expires: e.expires})
	if err != nil {
		return err
	}
	_, err = b.nb.reqs.Create(ctx, e.id, v)
	return err
}

// natsTakeReply is takeReply on the NATS transport.
func (b *Bus) natsTakeReply(ctx context.Context, requester, id string) (Message, bool, error) {
	e, err := b.nb.reqs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Message{}, false, nil
	}
	if err != nil {
		return Message{}, false, fmt.Errorf("read reply to %s: %w", id, err)
	}
	var q natsReq
	if err := json.Unmarshal(e.Value(), &q); err != nil || q.Reply == "" || q.Requester != requester {
		return Message{}, false, nil
	}
	key := msgKey(requester, q.Reply)
	me, err := b.nb.msgs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) { // answered, the reply not yet stored
		return Message{}, false, nil
	}
	if err != nil {
		return Message{}, false, fmt.Errorf("read reply to %s: %w", id, err)
	}
	n := natsEntry{rev: me.Revision(), key: key}
	if err := json.Unmarshal(me.Value(), &n.r); err != nil {
		n.r = natsRow{ID: q.Reply, Kind: KindReply, To: requester, ReplyTo: id}
	}
	if n.r.State != "ready" {
		return Message{}, false, nil
	}
	r := n.r.row()
	payload, verr := b.verify(ctx, nil, r)
	if verr == nil && (n.r.Kind != KindReply || n.r.ReplyTo != id || n.r.To != requester) {
		verr = fmt.Errorf("reply %s is not the reply to %s: %w", n.r.ID, id, ErrTampered)
	}
	if verr != nil && !errors.Is(verr, ErrTampered) {
		return Message{}, false, verr
	}
	if verr != nil {
		b.log.Warn("bus message failed verification", "id", r.id, "sender", r.from, "recipient", r.to, "err", verr)
		n.r.State, n.r.Reason = "dead", "failed verification"
		if ok, err := b.nb.update(ctx, &n); err != nil {
			return Message{}, false, fmt.Errorf("dead-letter message %s: %w", r.id, err)
		} else if ok {
			b.record(Event{Action: "bus/dead_letter", ID: r.id, Kind: r.kind, From: r.from, To: r.to, ReplyTo: id, Reason: "failed verification"})
		}
		return Message{}, false, nil
	}
	if err := b.nb.msgs.Purge(ctx, key, jetstream.PurgeTTL(natsMarkerTTL)); err != nil {
		return Message{}, false, fmt.Errorf("take reply to %s: %w", id, err)
	}
	if err := b.nb.reqs.Purge(ctx, id, jetstream.PurgeTTL(natsMarkerTTL)); err != nil {
		return Message{}, false, fmt.Errorf("take reply to %s: %w", id, err)
	}
	sum := sha256.Sum256(payload)
	b.record(Event{Action: "bus/deliver", ID: r.id, Kind: r.kind, From: r.from, To: r.to, ReplyTo: id,
		PayloadSHA256: hex.EncodeToString(sum[:]), Size: len(payload)})
	return Message{ID: r.id, Kind: r.kind, From: r.from, To: r.to, ReplyTo: id, Payload: payload,
		Created: time.Unix(0, r.created), Attempt: 1}, true, nil
}

// natsWithdraw forgets a request that timed out, its message and any reply.
func (b *Bus) natsWithdraw(id, to, requester string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e, err := b.nb.reqs.Get(ctx, id); err == nil {
		var q natsReq
		if json.Unmarshal(e.Value(), &q) == nil && q.Reply != "" {
			if err := b.nb.msgs.Purge(ctx, msgKey(requester, q.Reply), jetstream.PurgeTTL(natsMarkerTTL)); err != nil {
				b.log.Error("withdraw bus request", "id", id, "err", err)
			}
		}
	}
	for _, del := range []func() error{
		func() error { return b.nb.reqs.Purge(ctx, id, jetstream.PurgeTTL(natsMarkerTTL)) },
		func() error { return b.nb.msgs.Purge(ctx, msgKey(to, id), jetstream.PurgeTTL(natsMarkerTTL)) },
	} {
		if err := del(); err != nil {
			b.log.Error("withdraw bus request", "id", id, "err", err)
		}
	}
}

// natsReply is Reply on the NATS transport, after the checks and the rate limit.
func (b *Bus) natsReply(ctx context.Context, identity, id string, payload []byte) (string, error) {
	if !isMessageID(id) {
		return "", fmt.Errorf("reply to %s: no pending request for %s: %w", id, identity, ErrNotFound)
	}
	now := b.o.Now().UnixNano()
	e, err := b.nb.reqs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("reply to %s: no pending request for %s: %w", id, identity, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	var q natsReq
	if err := json.Unmarshal(e.Value(), &q); err != nil || q.Responder != identity || q.Expires <= now {
		return "", fmt.Errorf("reply to %s: no pending request for %s: %w", id, identity, ErrNotFound)
	}
	if q.Reply != "" {
		return "", fmt.Errorf("reply to %s: %w: already answered", id, ErrInvalid)
	}
	re := envelope{id: newID(), kind: KindReply, from: identity, to: q.Requester, replyTo: id, created: now, expires: q.Expires}
	q.Reply = re.id
	v, err := json.Marshal(&q)
	if err != nil {
		return "", err
	}
	// Claim the request first: of two replies, one wins.
	if _, err := b.nb.reqs.Update(ctx, id, v, e.Revision()); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return "", fmt.Errorf("reply to %s: %w: already answered", id, ErrInvalid)
	} else if err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	ev, err := b.put(ctx, nil, re, payload, "bus/reply")
	if err != nil {
		return "", err
	}
	if err := b.nb.msgs.Purge(ctx, msgKey(identity, id), jetstream.PurgeTTL(natsMarkerTTL)); err != nil {
		return "", fmt.Errorf("reply to %s: %w", id, err)
	}
	b.record(ev)
	b.notify(q.Requester)
	return re.id, nil
}

// natsPublish is PublishTTL on the NATS transport, after the checks, the rate limit and
// the sender's key. Each subscriber's copy is stored on its own: unlike the state
// database, a failure part way leaves the copies stored so far.
func (b *Bus) natsPublish(ctx context.Context, from, topic string, payload []byte, ttl time.Duration) (int, error) {
	subs, err := b.natsSubscribers(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("publish to %s: %w", topic, err)
	}
	now := b.o.Now().UnixNano()
	for _, s := range subs {
		e := envelope{id: newID(), kind: KindTopic, from: from, to: s, topic: topic, created: now, expires: now + int64(ttl)}
		ev, err := b.put(ctx, nil, e, payload, "bus/publish")
		if err != nil {
			return 0, err
		}
		b.record(ev)
		b.notify(s)
	}
	return len(subs), nil
}
