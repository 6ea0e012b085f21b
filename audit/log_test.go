package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// openTest opens a log in a fresh directory; the key lives beside the trail's directory.
func openTest(t testing.TB, o *Options) (*Log, string) {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "audit")
	}
	if o.KeyPath == "" {
		o.KeyPath = filepath.Join(filepath.Dir(o.Dir), KeyFileName)
	}
	l, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, o.Dir
}

func trustedKey(t testing.TB, dir string) ed25519.PublicKey {
	t.Helper()
	pub, err := ReadPublicKey(filepath.Join(filepath.Dir(dir), KeyFileName+PublicKeySuffix))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func callEvent(i int) Event {
	return Event{Type: TypeCall, Identity: fmt.Sprintf("client-%d", i%3), Tool: fmt.Sprintf("everything__tool%d", i%4),
		Upstream: "everything", Decision: Allow, Outcome: OutcomeOK, Latency: time.Duration(i) * time.Microsecond,
		Arguments: json.RawMessage(`{"message":"secret value","n":1}`)}
}

func appendN(t testing.TB, l *Log, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if err := l.Append(ctx, callEvent(i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
}

func mustVerify(t testing.TB, dir string, pub ed25519.PublicKey) Report {
	t.Helper()
	rep, err := Verify(dir, pub)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func TestAppendVerifyIntact(t *testing.T) {
	l, dir := openTest(t, nil)
	appendN(t, l, 50)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	rep := mustVerify(t, dir, trustedKey(t, dir))
	if !rep.Intact || rep.Problem != nil {
		t.Fatalf("want intact, got %+v", rep.Problem)
	}
	if rep.Entries != 51 || rep.LastSeq != 51 || !rep.Anchored {
		t.Errorf("report = entries %d last %d anchored %v, want 51 51 true", rep.Entries, rep.LastSeq, rep.Anchored)
	}
	if rep.Checkpoint == nil || rep.Checkpoint.Seq != 51 {
		t.Errorf("checkpoint = %+v, want seq 51", rep.Checkpoint)
	}
	if err := l.Append(context.Background(), callEvent(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
}

func TestArgumentsShapeOnlyByDefault(t *testing.T) {
	for _, record := range []bool{false, true} {
		t.Run(fmt.Sprint("record=", record), func(t *testing.T) {
			l, dir := openTest(t, &Options{RecordArguments: record})
			appendN(t, l, 1)
			l.Close()
			raw, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(raw), "secret value"); got != record {
				t.Errorf("trail contains argument value = %v, want %v", got, record)
			}
			recs, err := Query(context.Background(), dir, Filter{Type: TypeCall})
			if err != nil || len(recs) != 1 {
				t.Fatalf("Query = %d, %v", len(recs), err)
			}
			want := map[string]any{"message": "string", "n": "number"}
			if diff := cmp.Diff(want, recs[0].Event.ArgShape); diff != "" {
				t.Errorf("arg shape (-want +got):\n%s", diff)
			}
		})
	}
}

func TestArgumentShape(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want any
	}{
		{"object", json.RawMessage(`{"a":"x","b":2,"c":true,"d":null}`), map[string]any{"a": "string", "b": "number", "c": "bool", "d": "null"}},
		{"nested", json.RawMessage(`{"a":{"b":[1,2,"x"]}}`), map[string]any{"a": map[string]any{"b": []any{"number", "string"}}}},
		{"go map", map[string]any{"k": 1.5}, map[string]any{"k": "number"}},
		{"struct", struct {
			Name string `json:"name"`
		}{"x"}, map[string]any{"name": "string"}},
		{"invalid", json.RawMessage(`{"a":`), "invalid"},
		{"empty", json.RawMessage(``), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ArgumentShape(tc.in)); diff != "" {
				t.Errorf("ArgumentShape mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReservedTypesRejected(t *testing.T) {
	l, _ := openTest(t, nil)
	for _, ev := range []Event{{Type: TypeKeyRotated}, {Type: TypeGenesis}, {Type: TypeCall, PublicKey: "x"}, {}} {
		if err := l.Append(context.Background(), ev); err == nil {
			t.Errorf("Append(%+v) succeeded, want error", ev)
		}
	}
}

func TestSegmentRotationBySize(t *testing.T) {
	l, dir := openTest(t, &Options{SegmentMaxBytes: 4096})
	appendN(t, l, 200)
	l.Close()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) < 5 {
		t.Fatalf("got %d segments, want several", len(segs))
	}
	for _, s := range segs {
		fi, _ := os.Stat(filepath.Join(dir, s))
		if fi.Size() > 4096 {
			t.Errorf("%s is %d bytes, over the 4096 limit", s, fi.Size())
		}
	}
	rep := mustVerify(t, dir, trustedKey(t, dir))
	if !rep.Intact || rep.Segments != len(segs) {
		t.Fatalf("verify: %+v", rep.Problem)
	}
}

func TestSegmentRotationByAge(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l, dir := openTest(t, &Options{SegmentMaxAge: time.Hour, Now: clock})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		appendN(t, l, 5)
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		now = now.Add(2 * time.Hour)
		mu.Unlock()
	}
	l.Close()
	segs, _ := listSegments(dir)
	if len(segs) != 3 {
		t.Errorf("got segments %v, want 3", segs)
	}
	if rep := mustVerify(t, dir, trustedKey(t, dir)); !rep.Intact {
		t.Fatalf("verify: %v", rep.Problem)
	}
}

func TestReopenContinuesChain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	for round := 0; round < 3; round++ {
		l, _ := openTest(t, &Options{Dir: dir, SegmentMaxBytes: 8192})
		appendN(t, l, 40)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustVerify(t, dir, trustedKey(t, dir))
	if !rep.Intact || rep.LastSeq != 121 {
		t.Fatalf("verify = intact %v last %d problem %v, want intact 121", rep.Intact, rep.LastSeq, rep.Problem)
	}
}

func TestConcurrentAppenders(t *testing.T) {
	l, dir := openTest(t, &Options{QueueSize: 256, BlockTimeout: 10 * time.Second})
	const writers, each = 32, 100
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Go(func() {
			for i := 0; i < each; i++ {
				ev := callEvent(i)
				ev.SessionID = fmt.Sprintf("s%d", w)
				ev.ID = fmt.Sprintf("%d-%d", w, i)
				if err := l.Append(context.Background(), ev); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, trustedKey(t, dir))
	if !rep.Intact || rep.Entries != writers*each+1 {
		t.Fatalf("verify = %d entries, problem %v", rep.Entries, rep.Problem)
	}
	seen := map[string]bool{}
	last := map[string]int{}
	if _, err := Scan(context.Background(), dir, func(r Record) error {
		if r.Event.Type != TypeCall {
			return nil
		}
		if seen[r.Event.ID] {
			t.Errorf("event %s written twice", r.Event.ID)
		}
		seen[r.Event.ID] = true
		var w, i int
		fmt.Sscanf(r.Event.ID, "%d-%d", &w, &i)
		if prev, ok := last[r.Event.SessionID]; ok && i <= prev {
			t.Errorf("session %s: event %d after %d (per-writer order lost)", r.Event.SessionID, i, prev)
		}
		last[r.Event.SessionID] = i
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != writers*each {
		t.Errorf("saw %d events, want %d", len(seen), writers*each)
	}
	if s := l.Stats(); s.Appended != writers*each || s.Rejected != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestQueueFullRejectsAndCounts(t *testing.T) {
	// A tiny queue with fsync on every entry: appenders outrun the writer.
	l, _ := openTest(t, &Options{QueueSize: 1, BlockTimeout: time.Microsecond, Fsync: FsyncEvery})
	var rejected int
	for i := 0; i < 2000; i++ {
		err := l.Append(context.Background(), callEvent(i))
		if errors.Is(err, ErrQueueFull) {
			rejected++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if rejected == 0 {
		t.Skip("writer kept up with a 1-slot queue; nothing to observe")
	}
	if got := l.Stats().Rejected; got != uint64(rejected) {
		t.Errorf("Stats.Rejected = %d, want %d", got, rejected)
	}
}

func TestKeyRotation(t *testing.T) {
	l, dir := openTest(t, nil)
	genesis := l.PublicKey()
	appendN(t, l, 10)
	if err := l.RotateKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	rotated := l.PublicKey()
	if rotated.Equal(genesis) {
		t.Fatal("key did not change")
	}
	appendN(t, l, 10)
	l.Close()
	for name, pub := range map[string]ed25519.PublicKey{"genesis": genesis, "rotated": rotated, "exported": trustedKey(t, dir)} {
		rep := mustVerify(t, dir, pub)
		if !rep.Intact || len(rep.Keys) != 2 || !rep.Anchored {
			t.Errorf("%s: intact %v keys %v problem %v", name, rep.Intact, rep.Keys, rep.Problem)
		}
	}
	// Reopen: the rotated key is the one on disk now.
	l2, _ := openTest(t, &Options{Dir: dir})
	if !l2.PublicKey().Equal(rotated) {
		t.Error("reopened log does not use the rotated key")
	}
	appendN(t, l2, 3)
	l2.Close()
	if rep := mustVerify(t, dir, genesis); !rep.Intact {
		t.Errorf("after reopen: %v", rep.Problem)
	}
}

func TestRecentAndSubscribe(t *testing.T) {
	l, _ := openTest(t, &Options{RecentSize: 5})
	sub := l.Subscribe()
	defer sub.Close()
	appendN(t, l, 8)
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := l.Recent(100)
	if len(recs) != 5 || recs[4].Seq != 9 || recs[0].Seq != 5 {
		t.Fatalf("Recent = %d records, seqs %d..%d; want 5, 5..9", len(recs), recs[0].Seq, recs[len(recs)-1].Seq)
	}
	for want := uint64(2); want <= 9; want++ {
		select {
		case r := <-sub.C:
			if r.Seq != want || r.Event.Seq != want {
				t.Fatalf("subscriber got seq %d, want %d", r.Seq, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("subscriber got nothing")
		}
	}
}

func TestSlowSubscriberDropped(t *testing.T) {
	l, _ := openTest(t, &Options{SubscriberBuffer: 2})
	slow := l.Subscribe()
	appendN(t, l, 10)
	l.Flush(context.Background())
	n := 0
	for range slow.C {
		n++
	}
	if n != 2 {
		t.Errorf("slow subscriber got %d records before being dropped, want its buffer (2)", n)
	}
	if got := l.Stats().SubscribersCut; got != 1 {
		t.Errorf("SubscribersCut = %d, want 1", got)
	}
	// The writer kept going.
	appendN(t, l, 1)
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestWriteErrorBreaksTrail: once a write fails (the trail's directory is gone, so the
// head checkpoint cannot be written) Err reports it and Append refuses, so a caller can
// fail closed.
func TestWriteErrorBreaksTrail(t *testing.T) {
	l, dir := openTest(t, nil)
	ctx := context.Background()
	if err := l.Err(); err != nil {
		t.Fatalf("Err on a fresh trail = %v", err)
	}
	appendN(t, l, 3)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1)
	if err := l.Flush(ctx); !errors.Is(err, ErrBroken) {
		t.Fatalf("Flush after the directory went = %v, want ErrBroken", err)
	}
	if err := l.Err(); !errors.Is(err, ErrBroken) {
		t.Errorf("Err = %v, want ErrBroken", err)
	}
	if err := l.Append(ctx, callEvent(9)); !errors.Is(err, ErrBroken) {
		t.Errorf("Append on a broken trail = %v, want ErrBroken", err)
	}
}
