package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// FsyncMode says when the writer makes entries durable.
type FsyncMode int

const (
	// FsyncBatch syncs once FsyncMaxEntries entries or FsyncMaxDelay have accumulated
	// since the last sync, whichever comes first: a crash loses at most that window plus
	// what was still queued.
	FsyncBatch FsyncMode = iota
	// FsyncEvery syncs after every entry, before the next one is written.
	FsyncEvery
)

// Errors returned by Append and friends. Callers branch with errors.Is.
var (
	ErrClosed    = errors.New("audit log closed")
	ErrQueueFull = errors.New("audit queue full")
	ErrBroken    = errors.New("audit log broken by an earlier write error")
	ErrReserved  = errors.New("event type is reserved for the audit log itself")
)

// Options configure a Log. Only Dir is required; zero values mean the defaults noted.
type Options struct {
	Dir     string // directory of segments and checkpoint; created if missing
	KeyPath string // signing key; "": Dir/audit_ed25519.key. Public key at KeyPath+".pub"
	// AnchorPath is where the writer keeps its Anchor (pinned keys, last head, losses),
	// outside Dir; "" keeps none (then nothing outside the trail vouches for it).
	AnchorPath string
	Logger     *slog.Logger // nil: discard

	// Exclusive opens only the main chain and fails with ErrLocked while another
	// process holds it; otherwise a process that finds it held writes a chain of its
	// own in a writer slot of the same trail (see WriterDir).
	Exclusive bool

	Fsync           FsyncMode
	FsyncMaxDelay   time.Duration // FsyncBatch: 0 means 100ms
	FsyncMaxEntries int           // FsyncBatch: 0 means 1000

	SegmentMaxBytes int64         // 0 means 64 MiB
	SegmentMaxAge   time.Duration // 0 means 24h; negative means never by age

	QueueSize    int           // 0 means 8192
	BlockTimeout time.Duration // how long Append waits on a full queue; 0 means 100ms

	// RecordArguments keeps full arguments in the trail; otherwise only their shape.
	RecordArguments bool

	// SignInterval 0 or 1 signs every entry. N > 1 signs at least every N-th entry and
	// always the last entry of each write batch, key rotations and the log's own
	// notices; the entries in between carry an empty sig and are authenticated through the
	// hash chain by the next signature (Verify checks that one follows). Signing is the
	// writer's main cost, so under load this multiplies throughput; under light load each
	// batch is one entry and every entry is still signed.
	SignInterval int

	Sinks            []Sink // extra sinks beside the file trail; closed by Log.Close
	SinkQueueSize    int    // per sink; 0 means 4096
	RecentSize       int    // events kept for Recent; 0 means 1000
	SubscriberBuffer int    // per live subscriber; 0 means 256

	Now func() time.Time // nil: time.Now
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.KeyPath == "" {
		r.KeyPath = filepath.Join(r.Dir, KeyFileName)
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if r.FsyncMaxDelay <= 0 {
		r.FsyncMaxDelay = 100 * time.Millisecond
	}
	if r.FsyncMaxEntries <= 0 {
		r.FsyncMaxEntries = 1000
	}
	if r.SegmentMaxBytes <= 0 {
		r.SegmentMaxBytes = 64 << 20
	}
	if r.SegmentMaxAge == 0 {
		r.SegmentMaxAge = 24 * time.Hour
	}
	if r.QueueSize <= 0 {
		r.QueueSize = 8192
	}
	if r.BlockTimeout <= 0 {
		r.BlockTimeout = 100 * time.Millisecond
	}
	if r.SinkQueueSize <= 0 {
		r.SinkQueueSize = 4096
	}
	if r.RecentSize <= 0 {
		r.RecentSize = 1000
	}
	if r.SubscriberBuffer <= 0 {
		r.SubscriberBuffer = 256
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return r
}

// Stats are counters since Open.
type Stats struct {
	Appended       uint64 // accepted by Append
	Written        uint64 // written to the trail (including the log's own entries)
	Rejected       uint64 // refused by Append because the queue stayed full (never silent)
	SinkDropped    uint64 // records a slow or failing extra sink did not get
	SinkErrors     uint64 // failed sink writes
	SubscribersCut uint64 // live subscribers dropped for being too slow
	QueueLen       int
}

// Recovery describes what Open repaired after a crash.
type Recovery struct {
	File         string // segment whose tail was torn
	BytesDropped int64
	DroppedSHA   string // SHA-256 of the dropped bytes, kept in File+".torn-<unix>"
	SavedAs      string
}

type itemKind uint8

const (
	kindEvent itemKind = iota
	kindFlush
	kindRotate
)

type item struct {
	kind   itemKind
	ev     Event
	body   []byte
	newKey ed25519.PrivateKey
	keep   bool // kindRotate: leave the key file to RotateKeyAll
	done   chan error
}

// Log is the audit trail writer. One goroutine it owns writes, hashes, signs and syncs
// entries in order; Append only encodes and enqueues. Close flushes and is idempotent.
type Log struct {
	opts Options
	log  *slog.Logger
	lock *os.File // flock held while the log is open

	root       string // the trail directory (opts.Dir is this writer's chain in it)
	writer     string // MainWriter or a slot name; fixed for the log's lifetime
	mainAnchor string // the main chain's anchor path (opts.AnchorPath is this writer's)
	// next is the key an unfinished rotation of every chain is moving to (RotateKeyAll);
	// a chain already rotated to it opens with it.
	next ed25519.PrivateKey

	mu     sync.RWMutex // held for reading while enqueueing, for writing by Close
	closed bool
	queue  chan item
	stop   chan struct{}
	done   chan struct{}

	closeOnce sync.Once
	closeErr  error

	appended, written, rejected atomic.Uint64

	sinks []*sinkRunner
	hub   *hub
	rec   *ring

	recovery *Recovery
	broken   atomic.Pointer[error]

	anchorMu sync.Mutex // guards anchor: the writer moves its head, RotateKey pins keys
	anchor   *Anchor
	pub      atomic.Pointer[ed25519.PublicKey]

	// Writer state: owned by the writer goroutine (and by Open before it starts).
	priv        ed25519.PrivateKey
	kid         string
	seq         uint64
	head        [32]byte
	seg         *os.File
	segName     string
	segSize     int64
	segEntries  int
	segOpened   time.Time
	prevSegName string // previous segment, named by the next segment's first entry
	unsynced    int
	lastSigned  uint64
	timerArmed  bool
	cpSeq       uint64
	buf         []byte
	pend        []pending
}

// Open opens (or creates) the trail in opts.Dir, repairs a torn last line left by a crash,
// loads or generates the signing key, and starts the writer. A new trail begins with a
// genesis entry naming the public key.
func Open(opts *Options) (*Log, error) {
	o := opts.withDefaults()
	if o.Dir == "" {
		return nil, errors.New("open audit log: no dir")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create audit dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.KeyPath), 0o700); err != nil {
		return nil, fmt.Errorf("create key dir: %w", err)
	}
	// One writer per chain: a second process appending to the same segment would fork
	// it. A process that finds the main chain held writes a chain of its own in a
	// writer slot. The lock is released by Close (or by the kernel when the process dies).
	lock, writer, err := claimWriter(o.Dir, o.Exclusive)
	if err != nil {
		return nil, err
	}
	l, err := openChain(o, lock, writer, nil)
	if err != nil {
		return nil, err
	}
	l.sealDead(o)
	return l, nil
}

// openChain opens writer's chain in the trail o.Dir, whose lock the caller took; it
// closes the lock on error.
func openChain(o Options, lock *os.File, writer string, next ed25519.PrivateKey) (_ *Log, err error) {
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	root, mainAnchor := o.Dir, o.AnchorPath
	o.Dir, o.AnchorPath = WriterDir(root, writer), AnchorPathFor(mainAnchor, writer)
	l := &Log{
		lock:       lock,
		root:       root,
		writer:     writer,
		mainAnchor: mainAnchor,
		next:       next,
		opts:       o,
		log:        o.Logger,
		queue:      make(chan item, o.QueueSize),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		rec:        newRing(o.RecentSize),
	}
	if writer != MainWriter {
		l.log = l.log.With("writer", writer)
		l.log.Info("audit main chain held by another process: writing a chain of its own", "writer", writer, "dir", o.Dir)
	}
	l.hub = newHub(l.log, o.SubscriberBuffer)
	priv, created, err := loadOrCreateKey(o.KeyPath)
	if err != nil {
		return nil, err
	}
	l.setKey(priv)
	if created {
		l.log.Info("audit key generated", "path", o.KeyPath, "key", l.kid)
	}
	var notices []Event
	if notices, err = l.openTail(); err != nil {
		return nil, err
	}
	if o.AnchorPath != "" {
		n, err := l.openAnchor()
		if err != nil {
			l.closeFiles()
			return nil, err
		}
		notices = append(notices, n...)
	}
	for _, s := range o.Sinks {
		r := &sinkRunner{sink: s, ch: make(chan Record, o.SinkQueueSize), log: l.log}
		l.sinks = append(l.sinks, r)
		r.wg.Add(1)
		go r.run()
	}
	var first []item
	if l.seq == 0 {
		first = append(first, item{kind: kindEvent, ev: Event{Type: TypeGenesis,
			PublicKey: base64.StdEncoding.EncodeToString(l.priv.Public().(ed25519.PublicKey))}})
	}
	for _, n := range notices {
		first = append(first, item{kind: kindEvent, ev: n})
	}
	for i := range first {
		if err := l.prepare(&first[i].ev, &first[i].body); err != nil {
			return nil, err
		}
	}
	if len(first) > 0 {
		l.process(first)
		l.sync()
		if p := l.broken.Load(); p != nil {
			l.closeFiles()
			return nil, *p
		}
	}
	go l.run()
	ok = true
	return l, nil
}

func (l *Log) setKey(priv ed25519.PrivateKey) {
	pub := priv.Public().(ed25519.PublicKey)
	l.priv = priv
	l.kid = KeyID(pub)
	l.pub.Store(&pub)
}

// Writer names this process's chain in the trail: MainWriter, or the writer slot it
// took because another process writes the main chain. It does not change while the log
// is open.
func (l *Log) Writer() string { return l.writer }

// Err is nil while the trail records events, and the write error that broke it after
// one: from then on every Append fails. It is one atomic load, cheap enough to check
// before every call (see BenchmarkErrCheck).
func (l *Log) Err() error {
	if p := l.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// openAnchor loads the anchor (or creates it for a new trail, or adopts an existing trail
// that has none), checks that the signing key is pinned in it and that the reopened
// trail still holds the head it recorded. A loss is written to the anchor at once.
func (l *Log) openAnchor() ([]Event, error) {
	path := l.opts.AnchorPath
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create audit anchor dir: %w", err)
	}
	a, err := ReadAnchor(path)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w (restore it from a backup; symbi does not trust a trail it cannot anchor)", err)
	}
	now := l.opts.Now()
	var notices []Event
	cur := hex.EncodeToString(l.head[:])
	if a == nil {
		if l.writer != MainWriter {
			// A new writer's chain is signed by the key the main chain's anchor pinned.
			ma, err := ReadAnchor(l.mainAnchor)
			if err != nil {
				return nil, fmt.Errorf("open audit log: %w", err)
			}
			if ma != nil && !ma.hasKey(l.kid) {
				return nil, fmt.Errorf("open audit log: signing key %s is not pinned in the audit anchor %s", l.kid, l.mainAnchor)
			}
		}
		a = &Anchor{Version: 1, Trail: l.opts.Dir}
		if abs, err := filepath.Abs(l.opts.Dir); err == nil {
			a.Trail = abs
		}
		a.pin(l.priv.Public().(ed25519.PublicKey), now)
		if l.seq > 0 {
			a.Head = &Checkpoint{Seq: l.seq, Hash: cur, Segment: l.segName, Key: l.kid, Time: now.UTC()}
			l.log.Warn("audit anchor created for an existing trail: its key and head are trusted from now on", "anchor", path, "seq", l.seq)
		}
	} else {
		if !a.hasKey(l.kid) {
			return nil, fmt.Errorf("open audit log: signing key %s is not pinned in the audit anchor %s: restore the key, or move the anchor aside to adopt this key", l.kid, path)
		}
		loss, err := checkAnchor(l.opts.Dir, a, l.seq, l.head, now)
		if err != nil {
			return nil, err
		}
		if loss != nil {
			a.Losses = append(a.Losses, *loss)
			a.Head = &Checkpoint{Seq: l.seq, Hash: cur, Segment: l.segName, Key: l.kid, Time: now.UTC()}
			l.log.Error("audit trail lost entries symbi had recorded", "from_seq", loss.FromSeq, "to_seq", loss.ToSeq, "reason", loss.Reason)
			notices = append(notices, Event{Type: TypeTruncationDetected, Outcome: OutcomeInvalid,
				Reason: "trail lost entries symbi had recorded: " + loss.Reason,
				Detail: map[string]string{"from_seq": strconv.FormatUint(loss.FromSeq, 10), "to_seq": strconv.FormatUint(loss.ToSeq, 10),
					"known_hash": loss.KnownHash, "trail_seq": strconv.FormatUint(l.seq, 10), "anchor": path}})
		}
	}
	if err := writeAnchor(path, a); err != nil {
		return nil, err
	}
	l.anchor = a
	return notices, nil
}

// Recovery reports what Open repaired, or nil.
func (l *Log) Recovery() *Recovery { return l.recovery }

// PublicKey is the current signing key's public half.
func (l *Log) PublicKey() ed25519.PublicKey { return *l.pub.Load() }

// Stats returns the counters.
func (l *Log) Stats() Stats {
	s := Stats{
		Appended:       l.appended.Load(),
		Written:        l.written.Load(),
		Rejected:       l.rejected.Load(),
		SubscribersCut: l.hub.cut.Load(),
		QueueLen:       len(l.queue),
	}
	for _, r := range l.sinks {
		s.SinkDropped += r.dropped.Load()
		s.SinkErrors += r.errors.Load()
	}
	return s
}

// prepare fills the defaults of an event and encodes it (without its seq).
func (l *Log) prepare(ev *Event, body *[]byte) error {
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.Time.IsZero() {
		ev.Time = l.opts.Now()
	}
	ev.Time = ev.Time.UTC()
	ev.Seq = 0
	if ev.ArgShape == nil && len(ev.Arguments) > 0 {
		ev.ArgShape = ArgumentShape(ev.Arguments)
	}
	if !l.opts.RecordArguments {
		ev.Arguments = nil
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode audit event: %w", err)
	}
	*body = b
	return nil
}

// Append records ev. It fills ID and Time when empty, reduces arguments to their shape
// unless configured otherwise, and enqueues the event for the writer. When the queue is
// full it waits up to Options.BlockTimeout (or ctx), then returns ErrQueueFull and counts
// the rejection. A nil error means the event is queued; Flush waits until it is durable.
func (l *Log) Append(ctx context.Context, ev Event) error {
	if ev.Type == "" {
		return errors.New("append audit event: no type")
	}
	switch ev.Type {
	case TypeGenesis, TypeKeyRotated:
		return fmt.Errorf("append audit event %s: %w", ev.Type, ErrReserved)
	}
	if ev.PublicKey != "" {
		return fmt.Errorf("append audit event: public_key: %w", ErrReserved)
	}
	it := item{kind: kindEvent, ev: ev}
	if err := l.prepare(&it.ev, &it.body); err != nil {
		return err
	}
	if err := l.enqueue(ctx, it); err != nil {
		return err
	}
	l.appended.Add(1)
	return nil
}

func (l *Log) enqueue(ctx context.Context, it item) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	if p := l.broken.Load(); p != nil {
		return *p
	}
	select {
	case l.queue <- it:
		return nil
	default:
	}
	t := time.NewTimer(l.opts.BlockTimeout)
	defer t.Stop()
	select {
	case l.queue <- it:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	l.rejected.Add(1)
	l.log.Warn("audit queue full, event rejected", "type", string(it.ev.Type), "queue", cap(l.queue))
	return fmt.Errorf("append audit event: %w", ErrQueueFull)
}

// Flush waits until every event appended before it is written, synced and covered by the
// head checkpoint.
func (l *Log) Flush(ctx context.Context) error {
	return l.control(ctx, item{kind: kindFlush})
}

// RotateKey generates a new signing key and appends a key rotation entry, signed by the
// current key, that names the new public key; later entries are signed by the new key.
// The old public key stays exported as KeyPath+".<key id>.pub".
//
// With several writers' chains in the trail every chain must move to the new key at
// once: RotateKey then refuses, and RotateKeyAll does it.
func (l *Log) RotateKey(ctx context.Context) error {
	if ws, err := Writers(l.root); err != nil {
		return err
	} else if l.writer != MainWriter || len(ws) > 0 {
		return fmt.Errorf("rotate audit key: the trail holds several writers' chains: rotate them all at once (RotateKeyAll, symbi audit rotate-key)")
	}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return fmt.Errorf("generate audit key: %w", err)
	}
	if err := writePrivateKey(l.opts.KeyPath+".next", priv); err != nil {
		return err
	}
	if l.anchor != nil {
		// Pinned before any entry is signed with it, so a crash cannot leave the trail
		// signed by a key the anchor does not know.
		l.anchorMu.Lock()
		l.anchor.pin(priv.Public().(ed25519.PublicKey), l.opts.Now())
		err := writeAnchor(l.opts.AnchorPath, l.anchor)
		l.anchorMu.Unlock()
		if err != nil {
			return fmt.Errorf("rotate audit key: %w", err)
		}
	}
	return l.control(ctx, item{kind: kindRotate, newKey: priv})
}

func (l *Log) control(ctx context.Context, it item) error {
	it.done = make(chan error, 1)
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	select {
	case l.queue <- it:
	case <-ctx.Done():
		l.mu.RUnlock()
		return ctx.Err()
	}
	l.mu.RUnlock()
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting events, writes and syncs everything queued, closes the sinks and
// ends live subscriptions. It is safe to call more than once.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		close(l.stop)
		<-l.done
		for _, r := range l.sinks {
			close(r.ch)
		}
		// Sinks drain and close side by side: each has its own bound (an HTTP
		// collector's final flush, say), and they should not add up at shutdown.
		var closing sync.WaitGroup
		for _, r := range l.sinks {
			closing.Go(func() {
				r.wg.Wait()
				if err := r.sink.Close(); err != nil {
					l.log.Warn("audit sink close failed", "err", err)
				}
			})
		}
		closing.Wait()
		l.hub.close()
		if p := l.broken.Load(); p != nil {
			l.closeErr = *p
		}
		l.lock.Close()
	})
	return l.closeErr
}

// ErrLocked is returned by Open when another process writes the trail.
var ErrLocked = errors.New("audit trail is in use by another process")

// lockDir takes an exclusive, non-blocking flock on DIR/.lock.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open audit trail %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock audit trail %s: %w", dir, err)
	}
	return f, nil
}

// run is the writer goroutine.
func (l *Log) run() {
	defer close(l.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	l.timerArmed = false
	batch := make([]item, 0, 1024)
	for {
		select {
		case it := <-l.queue:
			batch = l.drain(append(batch[:0], it))
			l.process(batch)
			if l.opts.Fsync == FsyncBatch && l.unsynced > 0 && !l.timerArmed {
				timer.Reset(l.opts.FsyncMaxDelay)
				l.timerArmed = true
			}
		case <-timer.C:
			l.timerArmed = false
			l.sync()
		case <-l.stop:
			for {
				select {
				case it := <-l.queue:
					batch = l.drain(append(batch[:0], it))
					l.process(batch)
					continue
				default:
				}
				break
			}
			timer.Stop()
			l.sync()
			l.closeFiles()
			return
		}
	}
}

func (l *Log) drain(batch []item) []item {
	for len(batch) < cap(batch) {
		select {
		case it := <-l.queue:
			batch = append(batch, it)
		default:
			return batch
		}
	}
	return batch
}

func (l *Log) closeFiles() {
	if l.seg != nil {
		if err := l.seg.Close(); err != nil {
			l.log.Error("audit segment close failed", "file", l.segName, "err", err)
		}
		l.seg = nil
	}
}

func (l *Log) fail(err error) {
	if l.broken.Load() == nil {
		werr := fmt.Errorf("%w: %w", ErrBroken, err)
		l.broken.Store(&werr)
		l.log.Error("audit write failed; trail stops accepting events", "err", err)
	}
}

// pending is an entry between hashing and writing.
type pending struct {
	hdr       entryHeader
	canonical []byte
	hash      [32]byte
	sig       []byte
	signer    ed25519.PrivateKey
	signed    bool
	written   bool
	newSeg    string // open this segment before writing the entry
	rotateTo  ed25519.PrivateKey
	keepKey   bool
	ev        *Event
}

// process writes one batch in order: chain (sequential, cheap), sign (parallel, the costly
// part), then write with segment cuts and syncs as configured.
func (l *Log) process(batch []item) {
	if l.broken.Load() != nil {
		for _, it := range batch {
			if it.done != nil {
				it.done <- *l.broken.Load()
			}
		}
		return
	}
	pend := l.pend[:0]
	var flushes []chan error
	segName, segSize, segEntries, prevSeg := l.segName, l.segSize, l.segEntries, l.prevSegName
	segOpened := l.segOpened
	signer := l.priv
	now := l.opts.Now()
	lastEvent := -1
	for i := range batch {
		if batch[i].kind != kindFlush {
			lastEvent = i
		}
	}
	for i := range batch {
		it := &batch[i]
		switch it.kind {
		case kindFlush:
			flushes = append(flushes, it.done)
			continue
		case kindRotate:
			it.ev = Event{Type: TypeKeyRotated,
				PublicKey: base64.StdEncoding.EncodeToString(it.newKey.Public().(ed25519.PublicKey)),
				Detail:    map[string]string{"new_key": KeyID(it.newKey.Public().(ed25519.PublicKey))}}
			if err := l.prepare(&it.ev, &it.body); err != nil {
				it.done <- err
				continue
			}
			flushes = append(flushes, it.done)
		}
		var p pending
		p.hdr = entryHeader{Seq: l.seq + 1, PrevHash: l.head, Key: KeyID(signer.Public().(ed25519.PublicKey))}
		p.signed = l.opts.SignInterval <= 1 || i == lastEvent || it.kind == kindRotate ||
			p.hdr.Seq-l.lastSigned >= uint64(l.opts.SignInterval) || internalType(it.ev.Type)
		if p.signed {
			l.lastSigned = p.hdr.Seq
		}
		n := lineLen(len(it.body)+200, p.signed) // upper bound before the header is final
		age := l.opts.SegmentMaxAge > 0 && now.Sub(segOpened) >= l.opts.SegmentMaxAge
		if segName == "" || (segEntries > 0 && (segSize+int64(n) > l.opts.SegmentMaxBytes || age)) {
			if segName != "" {
				prevSeg = segName
			}
			segName, segSize, segEntries, segOpened = segmentName(p.hdr.Seq), 0, 0, now
			p.newSeg = segName
		}
		if segEntries == 0 {
			p.hdr.PrevSegment = prevSeg
		}
		p.canonical = appendCanonical(make([]byte, 0, len(it.body)+160), &p.hdr, it.body)
		p.hash = chainHash(l.head, p.canonical)
		p.signer = signer
		p.ev = &it.ev
		if it.kind == kindRotate {
			p.rotateTo, p.keepKey = it.newKey, it.keep
			signer = it.newKey
		}
		l.seq, l.head = p.hdr.Seq, p.hash
		segSize += int64(lineLen(len(p.canonical), p.signed))
		segEntries++
		pend = append(pend, p)
	}
	l.pend = pend
	signAll(pend)
	l.write(pend)
	if l.opts.Fsync == FsyncEvery || len(flushes) > 0 {
		l.sync()
	}
	err := error(nil)
	if p := l.broken.Load(); p != nil {
		err = *p
	}
	l.fanout(pend)
	for _, ch := range flushes {
		ch <- err
	}
	for i := range pend {
		pend[i] = pending{}
	}
}

// signAll signs the entries that carry a signature, in parallel when there are enough
// to pay for it.
func signAll(pend []pending) {
	var todo []*pending
	for i := range pend {
		if pend[i].signed {
			todo = append(todo, &pend[i])
		}
	}
	workers := runtime.GOMAXPROCS(0)
	if len(todo) < 32 || workers < 2 {
		for _, p := range todo {
			p.sig = ed25519.Sign(p.signer, p.hash[:])
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (len(todo) + workers - 1) / workers
	for start := 0; start < len(todo); start += chunk {
		part := todo[start:min(start+chunk, len(todo))]
		wg.Go(func() {
			for _, p := range part {
				p.sig = ed25519.Sign(p.signer, p.hash[:])
			}
		})
	}
	wg.Wait()
}

// internalType reports the event types the log writes itself; they are always signed.
func internalType(t Type) bool {
	switch t {
	case TypeGenesis, TypeKeyRotated, TypeRecovered, TypeTruncationDetected:
		return true
	}
	return false
}

func (l *Log) write(pend []pending) {
	buf := l.buf[:0]
	flush := func() bool {
		if len(buf) == 0 {
			return true
		}
		if _, err := l.seg.Write(buf); err != nil {
			l.fail(fmt.Errorf("write segment %s: %w", l.segName, err))
			return false
		}
		buf = buf[:0]
		return true
	}
	for i := range pend {
		p := &pend[i]
		if p.newSeg != "" {
			if !flush() || !l.openSegment(p.newSeg) {
				return
			}
		}
		buf = appendLine(buf, p.canonical, p.hash, p.sig)
		p.written = true
		l.segSize += int64(lineLen(len(p.canonical), p.signed))
		l.segEntries++
		l.written.Add(1)
		if l.opts.Fsync == FsyncEvery || p.rotateTo != nil {
			if !flush() || !l.syncSegment() {
				return
			}
		} else {
			l.unsynced++
			if l.unsynced >= l.opts.FsyncMaxEntries {
				if !flush() {
					return
				}
				l.sync()
			}
		}
		if p.rotateTo != nil {
			l.promoteKey(p.rotateTo, !p.keepKey)
		}
	}
	flush()
	l.buf = buf
}

// openSegment syncs and closes the current segment and creates the next one.
func (l *Log) openSegment(name string) bool {
	if l.seg != nil {
		if !l.syncSegment() {
			return false
		}
		l.closeFiles()
		l.prevSegName = l.segName
	}
	f, err := os.OpenFile(filepath.Join(l.opts.Dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		l.fail(fmt.Errorf("create segment: %w", err))
		return false
	}
	if err := syncDir(l.opts.Dir); err != nil {
		l.fail(fmt.Errorf("sync audit dir: %w", err))
		f.Close()
		return false
	}
	l.seg, l.segName, l.segSize, l.segEntries, l.segOpened = f, name, 0, 0, l.opts.Now()
	l.log.Debug("audit segment opened", "file", name)
	return true
}

func (l *Log) syncSegment() bool {
	if l.seg == nil {
		return true
	}
	if err := l.seg.Sync(); err != nil {
		l.fail(fmt.Errorf("sync segment %s: %w", l.segName, err))
		return false
	}
	l.unsynced = 0
	return true
}

// sync makes everything written durable and then moves the head checkpoint, so the
// checkpoint never names an entry a crash could lose.
func (l *Log) sync() {
	if l.broken.Load() != nil || l.seg == nil {
		return
	}
	if !l.syncSegment() {
		return
	}
	if l.cpSeq == l.seq {
		return
	}
	cp := &Checkpoint{Seq: l.seq, Hash: hex.EncodeToString(l.head[:]), Segment: l.segName,
		Key: l.kid, Time: l.opts.Now().UTC()}
	cp.sign(l.priv)
	if err := writeCheckpoint(l.opts.Dir, cp); err != nil {
		l.fail(err)
		return
	}
	if l.anchor != nil {
		l.anchorMu.Lock()
		l.anchor.Head = cp
		err := writeAnchor(l.opts.AnchorPath, l.anchor)
		l.anchorMu.Unlock()
		if err != nil {
			l.fail(err)
			return
		}
	}
	l.cpSeq = l.seq
}

// promoteKey makes a rotated-to key current once its rotation entry is durable; with
// install it also moves the key file (RotateKeyAll installs once, after every chain).
func (l *Log) promoteKey(priv ed25519.PrivateKey, install bool) {
	old := l.priv.Public().(ed25519.PublicKey)
	if err := writePublicKey(l.opts.KeyPath+"."+KeyID(old)+PublicKeySuffix, old); err != nil {
		l.log.Warn("audit old public key not archived", "err", err)
	}
	if install {
		if err := installKey(l.opts.KeyPath, priv); err != nil {
			l.fail(err)
			return
		}
	}
	l.setKey(priv)
	l.log.Info("audit key rotated", "key", l.kid)
}

// installKey moves the rotated-to key from KeyPath.next to KeyPath and exports its
// public half.
func installKey(keyPath string, priv ed25519.PrivateKey) error {
	if err := os.Rename(keyPath+".next", keyPath); err != nil {
		return fmt.Errorf("install rotated audit key: %w", err)
	}
	return writePublicKey(keyPath+PublicKeySuffix, priv.Public().(ed25519.PublicKey))
}
