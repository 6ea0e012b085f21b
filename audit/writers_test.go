package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sharedTrail is a trail directory and keys directory that several Logs open, as
// several processes with one configuration do.
type sharedTrail struct {
	dir, keys string
	o         Options
}

func newSharedTrail(t *testing.T, o Options) *sharedTrail {
	root := t.TempDir()
	return &sharedTrail{dir: filepath.Join(root, "audit"), keys: filepath.Join(root, "keys"), o: o}
}

func (s *sharedTrail) options() *Options {
	o := s.o
	o.Dir = s.dir
	o.KeyPath = filepath.Join(s.keys, KeyFileName)
	o.AnchorPath = filepath.Join(s.keys, AnchorFileName)
	return &o
}

func (s *sharedTrail) open(t *testing.T) *Log {
	t.Helper()
	l, err := Open(s.options())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func (s *sharedTrail) verify(t *testing.T) Report {
	t.Helper()
	a, others, err := ReadAnchors(filepath.Join(s.keys, AnchorFileName))
	if err != nil || a == nil {
		t.Fatalf("ReadAnchors = %v, %v", a, err)
	}
	rep, err := VerifyWith(s.dir, VerifyOptions{Anchor: a, Writers: others})
	if err != nil {
		t.Fatalf("VerifyWith: %v", err)
	}
	return rep
}

func closeLog(t *testing.T, l *Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("Close %s: %v", l.Writer(), err)
	}
}

// writerSegments lists writer w's segment paths, oldest first.
func writerSegments(t *testing.T, dir, w string) []string {
	t.Helper()
	segs, err := listSegments(WriterDir(dir, w))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range segs {
		out = append(out, filepath.Join(WriterDir(dir, w), s))
	}
	return out
}

// twoWriters opens two Logs on one trail, appends n events from each side by side and
// closes both.
func twoWriters(t *testing.T, s *sharedTrail, n int) {
	t.Helper()
	a, b := s.open(t), s.open(t)
	if a.Writer() != MainWriter || b.Writer() != "w1" {
		t.Fatalf("writers %q, %q; want main, w1", a.Writer(), b.Writer())
	}
	var wg sync.WaitGroup
	for _, l := range []*Log{a, b} {
		wg.Go(func() {
			for i := 0; i < n; i++ {
				ev := callEvent(i)
				ev.Identity = l.Writer()
				if err := l.Append(context.Background(), ev); err != nil {
					t.Errorf("Append %s %d: %v", l.Writer(), i, err)
				}
				if i%7 == 0 {
					if err := l.Flush(context.Background()); err != nil {
						t.Errorf("Flush: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	closeLog(t, a)
	closeLog(t, b)
}

// TestTwoWritersOneTrail: two writers append side by side to one trail, each to its own
// chain; Verify checks both and counts every entry, and Query returns both writers'
// events, each named by its writer.
func TestTwoWritersOneTrail(t *testing.T) {
	s := newSharedTrail(t, Options{SegmentMaxBytes: 4 << 10})
	twoWriters(t, s, 60)
	rep := s.verify(t)
	if !rep.Intact {
		t.Fatalf("not intact: %v", rep.Problem)
	}
	if len(rep.Writers) != 1 || rep.Writers[0].Writer != "w1" || !rep.Writers[0].Intact || !rep.Writers[0].Anchored {
		t.Fatalf("writer reports %+v; want one intact, anchored w1", rep.Writers)
	}
	// 60 calls and a genesis per chain.
	if rep.Entries != 61 || rep.Writers[0].Entries != 61 || rep.TotalEntries() != 122 {
		t.Errorf("entries main %d, w1 %d, total %d; want 61, 61, 122", rep.Entries, rep.Writers[0].Entries, rep.TotalEntries())
	}
	if rep.Writers[0].Segments < 2 {
		t.Errorf("w1 has %d segments; want several (SegmentMaxBytes 4 KiB)", rep.Writers[0].Segments)
	}
	recs, err := Query(context.Background(), s.dir, Filter{Type: TypeCall})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for i, r := range recs {
		want := r.Writer
		if want == "" {
			want = MainWriter
		}
		if r.Event.Identity != want {
			t.Fatalf("record %d of writer %q has identity %q", i, r.Writer, r.Event.Identity)
		}
		if i > 0 && r.Event.Time.Before(recs[i-1].Event.Time) {
			t.Fatalf("Query out of time order at %d", i)
		}
		count[want]++
	}
	if count[MainWriter] != 60 || count["w1"] != 60 {
		t.Errorf("Query found %v; want 60 calls of each writer", count)
	}
	tail, err := Tail(context.Background(), s.dir, 10)
	if err != nil || len(tail) != 10 {
		t.Fatalf("Tail = %d records, %v", len(tail), err)
	}
}

// TestWriterTamperNamed: an edit in one writer's chain fails Verify, and the problem
// names that writer; the other chain still verifies on its own.
func TestWriterTamperNamed(t *testing.T) {
	s := newSharedTrail(t, Options{})
	twoWriters(t, s, 20)
	seg := writerSegments(t, s.dir, "w1")[0]
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(b, []byte(`"identity":"w1"`), []byte(`"identity":"w2"`), 1)
	if bytes.Equal(edited, b) {
		t.Fatal("nothing to edit")
	}
	if err := os.WriteFile(seg, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	rep := s.verify(t)
	if rep.Intact || rep.Problem == nil || rep.Problem.Writer != "w1" || rep.Problem.Kind != ProblemHash {
		t.Fatalf("after editing w1: intact %v, problem %v; want a hash problem naming w1", rep.Intact, rep.Problem)
	}
	if !strings.HasPrefix(rep.Problem.String(), "writer w1: ") {
		t.Errorf("problem %q does not name the writer first", rep.Problem)
	}
	if rep.Checkpoint == nil || rep.Entries != 21 {
		t.Errorf("main chain report %+v; want its 21 entries checked", rep)
	}
}

// TestWriterNewestSegmentDeleted: deleting a writer's newest segment (and its
// head.json) is found by Verify through that writer's anchor, recorded as a loss by the
// next process that takes the slot, and stays visible after that process appends more.
func TestWriterNewestSegmentDeleted(t *testing.T) {
	s := newSharedTrail(t, Options{SegmentMaxBytes: 4 << 10})
	twoWriters(t, s, 60)
	segs := writerSegments(t, s.dir, "w1")
	if len(segs) < 2 {
		t.Fatalf("w1 has %d segments; want several", len(segs))
	}
	for _, p := range []string{segs[len(segs)-1], filepath.Join(WriterDir(s.dir, "w1"), CheckpointFile)} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	rep := s.verify(t)
	if rep.Intact || rep.Problem.Writer != "w1" || (rep.Problem.Kind != ProblemTruncated && rep.Problem.Kind != ProblemCheckpoint) {
		t.Fatalf("after deleting w1's newest segment: problem %v; want truncated or checkpoint missing, naming w1", rep.Problem)
	}
	// Two processes again: the second takes w1 and finds the loss at once.
	a, b := s.open(t), s.open(t)
	if b.Writer() != "w1" {
		t.Fatalf("second writer took %q; want w1", b.Writer())
	}
	recs := b.Recent(10)
	found := false
	for _, r := range recs {
		found = found || r.Event.Type == TypeTruncationDetected
	}
	if !found {
		t.Error("w1 reopened without recording the truncation")
	}
	appendN(t, a, 5)
	appendN(t, b, 5)
	closeLog(t, a)
	closeLog(t, b)
	rep = s.verify(t)
	if rep.Intact || rep.Problem.Writer != "w1" || len(rep.Writers[0].Losses) != 1 {
		t.Fatalf("after w1 went on: problem %v, losses %v; want the loss named for good", rep.Problem, rep.Writers[0].Losses)
	}
}

// TestWriterChainGone: a writer's whole chain deleted, or its anchor, fails Verify
// naming the writer.
func TestWriterChainGone(t *testing.T) {
	s := newSharedTrail(t, Options{})
	twoWriters(t, s, 3)
	if err := os.RemoveAll(WriterDir(s.dir, "w1")); err != nil {
		t.Fatal(err)
	}
	rep := s.verify(t)
	if rep.Intact || rep.Problem.Writer != "w1" || rep.Problem.Kind != ProblemTruncated || !strings.Contains(rep.Problem.Detail, "recorded seq") {
		t.Fatalf("after deleting w1's chain: problem %v; want truncated, naming w1", rep.Problem)
	}

	s = newSharedTrail(t, Options{})
	twoWriters(t, s, 3)
	if err := os.Remove(AnchorPathFor(filepath.Join(s.keys, AnchorFileName), "w1")); err != nil {
		t.Fatal(err)
	}
	rep = s.verify(t)
	if rep.Intact || rep.Problem.Writer != "w1" || rep.Problem.Kind != ProblemCheckpoint {
		t.Fatalf("after deleting w1's anchor: problem %v; want a checkpoint problem naming w1", rep.Problem)
	}
}

// TestDeadWriterAdopted: a writer whose process ended (without Close: its lock and
// files dropped as by the kernel) leaves a chain that verifies; the next process that
// needs a slot continues that chain.
func TestDeadWriterAdopted(t *testing.T) {
	s := newSharedTrail(t, Options{})
	a, b := s.open(t), s.open(t)
	appendN(t, b, 4)
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Die: stop the writer goroutine without anything a clean Close would add.
	b.lock.Close()
	appendN(t, a, 3)
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := s.verify(t); !rep.Intact {
		t.Fatalf("with a writer that died: %v", rep.Problem)
	}
	c := s.open(t)
	if c.Writer() != "w1" {
		t.Fatalf("next process took %q; want the dead writer's w1", c.Writer())
	}
	appendN(t, c, 2)
	closeLog(t, c)
	closeLog(t, a)
	b.Close()
	rep := s.verify(t)
	if !rep.Intact {
		t.Fatalf("after w1 was adopted: %v", rep.Problem)
	}
	if got := rep.Writers[0].Entries; got != 1+4+2 {
		t.Errorf("w1 holds %d entries; want genesis, 4 and 2 in one chain", got)
	}
}

// TestRotateKeyAllWriters: rotation needs every chain free, moves every chain to one new
// key, and each chain verifies under its anchor afterwards; Log.RotateKey refuses on a
// trail with several chains.
func TestRotateKeyAllWriters(t *testing.T) {
	s := newSharedTrail(t, Options{})
	twoWriters(t, s, 3)
	held := s.open(t)
	if err := held.RotateKey(context.Background()); err == nil {
		t.Error("Log.RotateKey rotated one chain of several")
	}
	if _, _, err := RotateKeyAll(context.Background(), s.options()); !errors.Is(err, ErrLocked) {
		t.Fatalf("RotateKeyAll with a chain held = %v; want ErrLocked", err)
	}
	closeLog(t, held)
	oldPub := held.PublicKey()
	oldID, newID, err := RotateKeyAll(context.Background(), s.options())
	if err != nil || oldID == newID {
		t.Fatalf("RotateKeyAll = %s, %s, %v", oldID, newID, err)
	}
	a, b, c := s.open(t), s.open(t), s.open(t) // c begins w2 with the new key
	if KeyID(a.PublicKey()) != newID || KeyID(b.PublicKey()) != newID || c.Writer() != "w2" {
		t.Fatalf("after rotation keys %s, %s, writer %s; want %s and w2", KeyID(a.PublicKey()), KeyID(b.PublicKey()), c.Writer(), newID)
	}
	for _, l := range []*Log{a, b, c} {
		appendN(t, l, 2)
		closeLog(t, l)
	}
	rep := s.verify(t)
	if !rep.Intact {
		t.Fatalf("after rotating both chains: %v", rep.Problem)
	}
	for _, r := range append([]Report{rep}, rep.Writers[0]) {
		if len(r.Keys) != 2 || r.Keys[1] != newID {
			t.Errorf("writer %q keys %v; want old then %s", r.Writer, r.Keys, newID)
		}
	}
	// A verifier that trusts only the old key follows the main chain's rotation to the
	// key w2 began with.
	ma, others, err := ReadAnchors(filepath.Join(s.keys, AnchorFileName))
	if err != nil {
		t.Fatal(err)
	}
	rep, err = VerifyWith(s.dir, VerifyOptions{Trusted: oldPub, Anchor: ma, Writers: others})
	if err != nil || !rep.Intact || len(rep.Writers) != 2 || !rep.Writers[1].Anchored {
		t.Fatalf("verify trusting the old key: %v, %v, writers %d", err, rep.Problem, len(rep.Writers))
	}
	_, other, _ := ed25519.GenerateKey(nil)
	rep, err = VerifyWith(s.dir, VerifyOptions{Trusted: other.Public().(ed25519.PublicKey), Anchor: ma, Writers: others})
	if err != nil || rep.Intact || rep.Problem.Kind != ProblemUntrusted {
		t.Fatalf("verify trusting an unrelated key: %v, %v", err, rep.Problem)
	}
}

// TestRotateKeyAllResumes: a rotation interrupted after one chain rotated (the new key
// still at KeyPath.next) refuses to open the other chain with a clear hint, and running
// RotateKeyAll again completes it with the same key.
func TestRotateKeyAllResumes(t *testing.T) {
	s := newSharedTrail(t, Options{})
	twoWriters(t, s, 2)
	// Interrupt by hand: rotate only the w1 chain, as RotateKeyAll does, and stop.
	o := s.options()
	o.Exclusive = true
	main, err := Open(o) // hold the main chain so the next Open takes w1
	if err != nil {
		t.Fatal(err)
	}
	w1, err := Open(s.options())
	if err != nil || w1.Writer() != "w1" {
		t.Fatalf("Open w1 = %v, %v", w1, err)
	}
	_, next, _ := ed25519.GenerateKey(nil)
	if err := writePrivateKey(o.KeyPath+".next", next); err != nil {
		t.Fatal(err)
	}
	w1.anchor.pin(next.Public().(ed25519.PublicKey), w1.opts.Now())
	if err := writeAnchor(w1.opts.AnchorPath, w1.anchor); err != nil {
		t.Fatal(err)
	}
	if err := w1.control(context.Background(), item{kind: kindRotate, newKey: next, keep: true}); err != nil {
		t.Fatal(err)
	}
	closeLog(t, w1)
	closeLog(t, main)
	a := s.open(t) // main: not rotated, key file still old: opens
	if _, err := Open(s.options()); err == nil || !strings.Contains(err.Error(), "rotate-key") {
		t.Fatalf("opening the rotated w1 before the rotation completed = %v; want a hint to run rotate-key", err)
	}
	closeLog(t, a)
	_, newID, err := RotateKeyAll(context.Background(), s.options())
	if err != nil || newID != KeyID(next.Public().(ed25519.PublicKey)) {
		t.Fatalf("RotateKeyAll = %s, %v; want the interrupted rotation's key", newID, err)
	}
	a, b := s.open(t), s.open(t)
	appendN(t, a, 1)
	appendN(t, b, 1)
	closeLog(t, a)
	closeLog(t, b)
	if rep := s.verify(t); !rep.Intact {
		t.Fatalf("after completing the rotation: %v", rep.Problem)
	}
}

// TestExclusiveOpen: Exclusive refuses while another process holds the main chain.
func TestExclusiveOpen(t *testing.T) {
	s := newSharedTrail(t, Options{})
	s.open(t)
	o := s.options()
	o.Exclusive = true
	if _, err := Open(o); !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive Open of a held trail = %v; want ErrLocked", err)
	}
}

func TestAnchorPathFor(t *testing.T) {
	for _, c := range []struct{ in, w, want string }{
		{"/d/keys/audit_anchor.json", "main", "/d/keys/audit_anchor.json"},
		{"/d/keys/audit_anchor.json", "w3", "/d/keys/audit_anchor.w3.json"},
		{"", "w3", ""},
	} {
		if got := AnchorPathFor(c.in, c.w); got != c.want {
			t.Errorf("AnchorPathFor(%q, %q) = %q; want %q", c.in, c.w, got, c.want)
		}
	}
	for s, want := range map[string]bool{"w1": true, "w64": true, "w65": false, "w01": false, "w0": false, "main": false, "w": false, "wx": false} {
		if validWriter(s) != want {
			t.Errorf("validWriter(%q) = %v", s, !want)
		}
	}
}

// TestKeyCreationRace: processes that start together on a new data dir all end up with
// the one key that is in the key file.
func TestKeyCreationRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", KeyFileName)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	const n = 8
	keys := make([]ed25519.PrivateKey, n)
	created := make([]bool, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if keys[i], created[i], err = loadOrCreateKey(path); err != nil {
				t.Errorf("loadOrCreateKey: %v", err)
			}
		})
	}
	wg.Wait()
	onDisk, _, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	made := 0
	for i := range n {
		if !keys[i].Equal(onDisk) {
			t.Errorf("caller %d uses key %s; the file holds %s", i, KeyID(keys[i].Public().(ed25519.PublicKey)), KeyID(onDisk.Public().(ed25519.PublicKey)))
		}
		if created[i] {
			made++
		}
	}
	if made != 1 {
		t.Errorf("%d callers say they created the key; want 1", made)
	}
	pub, err := ReadPublicKey(path + PublicKeySuffix)
	if err != nil || !pub.Equal(onDisk.Public()) {
		t.Errorf("exported public key %v, %v; want the key in the file", pub, err)
	}
}

// TestDeadWriterTornTailSealed: a writer killed in the middle of a write leaves a torn
// line; the next process to start (taking another slot) seals that chain, recording the
// repair in it, so the trail verifies while the other processes run on.
func TestDeadWriterTornTailSealed(t *testing.T) {
	s := newSharedTrail(t, Options{})
	a, b, c := s.open(t), s.open(t), s.open(t)
	if c.Writer() != "w2" {
		t.Fatalf("third writer %q; want w2", c.Writer())
	}
	appendN(t, c, 3)
	closeLog(t, c)
	segs := writerSegments(t, s.dir, "w2")
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"seq":5,"prev_hash":"00`); err != nil { // died mid-line
		t.Fatal(err)
	}
	f.Close()
	closeLog(t, b)
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := s.verify(t); rep.Intact || rep.Problem.Writer != "w2" || rep.Problem.Kind != ProblemTorn {
		t.Fatalf("before sealing: %v; want a torn line in w2", rep.Problem)
	}
	d := s.open(t)
	if d.Writer() != "w1" {
		t.Fatalf("next process took %q; want the free w1", d.Writer())
	}
	rep := s.verify(t)
	if !rep.Intact {
		t.Fatalf("after the dead writer's chain was sealed: %v", rep.Problem)
	}
	recs, err := Query(context.Background(), s.dir, Filter{Type: TypeRecovered})
	if err != nil || len(recs) != 1 || recs[0].Writer != "w2" {
		t.Fatalf("recovery events %+v, %v; want one in w2", recs, err)
	}
	closeLog(t, d)
	closeLog(t, a)
}

// TestWriterOldHeadRestored: putting back an older head.json of one writer's chain
// (with its tail cut to match) is found through that writer's anchor.
func TestWriterOldHeadRestored(t *testing.T) {
	s := newSharedTrail(t, Options{})
	a, b := s.open(t), s.open(t)
	appendN(t, b, 3)
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	head := filepath.Join(WriterDir(s.dir, "w1"), CheckpointFile)
	old, err := os.ReadFile(head)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, b, 3)
	closeLog(t, b)
	closeLog(t, a)
	segs := writerSegments(t, s.dir, "w1")
	cutLines(t, segs[len(segs)-1], 4) // genesis and 3 calls, as when the old head was made
	if err := os.WriteFile(head, old, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := s.verify(t)
	if rep.Intact || rep.Problem.Writer != "w1" || rep.Problem.Kind != ProblemTruncated {
		t.Fatalf("after restoring w1's old head: %v; want truncated, naming w1", rep.Problem)
	}
}

// TestWriterNamedDownstream: a writer slot's records name it in Recent, in the syslog
// structured data and in the HTTP sink's header, so a collector can tell the chains
// apart; the main chain's records stay as they were.
func TestWriterNamedDownstream(t *testing.T) {
	s := newSharedTrail(t, Options{})
	a := s.open(t)
	c, srv := newCollector(t, false, nil)
	sink := newTestHTTPSink(t, HTTPSinkOptions{URL: srv.URL, BatchSize: 4, FlushInterval: 10 * time.Millisecond})
	o := s.options()
	o.Sinks = []Sink{sink}
	b, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, a, 2)
	appendN(t, b, 5)
	closeLog(t, b)
	for _, r := range b.Recent(10) {
		if r.Writer != "w1" {
			t.Fatalf("w1's recent record names writer %q", r.Writer)
		}
		msg, err := FormatRFC5424(&r, 1, "h", "symbi")
		if err != nil || !bytes.Contains(msg, []byte(` writer="w1"]`)) {
			t.Fatalf("syslog message %q, %v; want writer=\"w1\"", msg, err)
		}
	}
	for _, r := range a.Recent(10) {
		if r.Writer != "" {
			t.Fatalf("main chain's record names writer %q", r.Writer)
		}
		if msg, _ := FormatRFC5424(&r, 1, "h", "symbi"); bytes.Contains(msg, []byte("writer=")) {
			t.Fatalf("main chain's syslog message names a writer: %q", msg)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.headers) == 0 {
		t.Fatal("collector got nothing")
	}
	for i, h := range c.headers {
		if got := h.Get(HTTPSinkWriterHeader); got != "w1" {
			t.Errorf("request %d: %s = %q; want w1", i, HTTPSinkWriterHeader, got)
		}
	}
}
