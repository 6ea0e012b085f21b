package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// bigBatchTrail writes a trail with SignInterval 64 in which most entries were written in
// one batch, so most carry no signature of their own.
func bigBatchTrail(t *testing.T) *trail {
	t.Helper()
	l, dir := openTest(t, &Options{SignInterval: 64, SegmentMaxBytes: 64 << 10})
	l.hub.mu.Lock() // holds the writer in its fan-out so the queue fills
	appendN(t, l, 500)
	l.hub.mu.Unlock()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(dir)
	tr := &trail{dir: dir, pub: trustedKey(t, dir), segs: segs}
	var unsigned int
	for i := range segs {
		b, _ := os.ReadFile(tr.path(i))
		unsigned += bytes.Count(b, []byte(`"sig":""`))
	}
	if unsigned < 400 {
		t.Fatalf("only %d unsigned entries; the batch did not form", unsigned)
	}
	return tr
}

func TestSignIntervalIntact(t *testing.T) {
	tr := bigBatchTrail(t)
	if rep := mustVerify(t, tr.dir, tr.pub); !rep.Intact || rep.Entries != 501 {
		t.Fatalf("verify: entries %d problem %v", rep.Entries, rep.Problem)
	}
}

func TestSignIntervalTamper(t *testing.T) {
	t.Run("edit an unsigned entry", func(t *testing.T) {
		tr := bigBatchTrail(t)
		lines := tr.lines(t, 0)
		i := 10
		for !bytes.Contains(lines[i], []byte(`"sig":""`)) {
			i++
		}
		seq := tr.seqAt(t, 0, i+1)
		lines[i] = bytes.Replace(lines[i], []byte(`"decision":"allow"`), []byte(`"decision":"deny!"`), 1)
		tr.write(t, 0, lines)
		rep := mustVerify(t, tr.dir, tr.pub)
		if rep.Intact || rep.Problem.Seq != seq || rep.Problem.Kind != ProblemHash {
			t.Fatalf("problem = %+v, want hash at seq %d", rep.Problem, seq)
		}
	})
	t.Run("edit and rechain up to the next signature", func(t *testing.T) {
		tr := bigBatchTrail(t)
		lines := tr.lines(t, 0)
		i := 10
		for !bytes.Contains(lines[i], []byte(`"sig":""`)) {
			i++
		}
		// Re-hash every entry from i on with the real key id, keeping the old signatures.
		var prev [32]byte
		firstSigned := uint64(0)
		for n := range lines {
			p, err := parseLine(bytes.TrimSuffix(lines[n], []byte("\n")))
			if err != nil {
				t.Fatal(err)
			}
			if n < i {
				prev = p.hash
				continue
			}
			ev := p.event
			if n == i {
				ev = bytes.Replace(ev, []byte(`"decision":"allow"`), []byte(`"decision":"deny!"`), 1)
			}
			if p.sig != nil && firstSigned == 0 {
				firstSigned = p.header.Seq
			}
			h := p.header
			h.PrevHash = prev
			c := appendCanonical(nil, &h, ev)
			prev = chainHash(prev, c)
			lines[n] = appendLine(nil, c, prev, p.sig)
		}
		tr.write(t, 0, lines)
		rep := mustVerify(t, tr.dir, tr.pub)
		if rep.Intact || rep.Problem.Seq != firstSigned || rep.Problem.Kind != ProblemSignature {
			t.Fatalf("problem = %+v, want signature at seq %d", rep.Problem, firstSigned)
		}
	})
	t.Run("cut to an unsigned tail and drop the checkpoint", func(t *testing.T) {
		tr := bigBatchTrail(t)
		last := len(tr.segs) - 1
		lines := tr.lines(t, last)
		n := len(lines) - 1
		for bytes.Contains(lines[n-1], []byte(`"sig":""`)) == false || bytes.Contains(lines[n], []byte(`"sig":""`)) {
			n--
		}
		// lines[n-1] is unsigned and lines[n] signed: keep through n-1.
		first := n - 1
		for first > 0 && bytes.Contains(lines[first-1], []byte(`"sig":""`)) {
			first--
		}
		seq := tr.seqAt(t, last, first+1)
		tr.write(t, last, lines[:n])
		os.Remove(filepath.Join(tr.dir, CheckpointFile))
		rep := mustVerify(t, tr.dir, tr.pub)
		if rep.Intact || rep.Problem.Kind != ProblemSignature || rep.Problem.Seq != seq {
			t.Fatalf("problem = %+v, want signature at seq %d (first uncovered)", rep.Problem, seq)
		}
		// Reopening seals the uncovered entries with a signed notice.
		l, _ := openTest(t, &Options{Dir: tr.dir})
		l.Close()
		if rep := mustVerify(t, tr.dir, tr.pub); !rep.Intact {
			t.Fatalf("after reopen: %v", rep.Problem)
		}
	})
	t.Run("unsigned genesis", func(t *testing.T) {
		tr := bigBatchTrail(t)
		lines := tr.lines(t, 0)
		p, _ := parseLine(bytes.TrimSuffix(lines[0], []byte("\n")))
		lines[0] = appendLine(nil, p.canonical, p.hash, nil)
		tr.write(t, 0, lines)
		rep := mustVerify(t, tr.dir, tr.pub)
		if rep.Intact || rep.Problem.Seq != 1 || rep.Problem.Kind != ProblemSignature {
			t.Fatalf("problem = %+v", rep.Problem)
		}
	})
}
