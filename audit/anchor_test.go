package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// anchoredTrail opens a trail whose key and anchor live in a keys directory beside it.
func anchoredTrail(t *testing.T, o *Options) (*Log, string, string) {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	root := t.TempDir()
	if o.Dir == "" {
		o.Dir = filepath.Join(root, "audit")
	}
	if o.KeyPath == "" {
		o.KeyPath = filepath.Join(root, "keys", KeyFileName)
	}
	if o.AnchorPath == "" {
		o.AnchorPath = filepath.Join(root, "keys", AnchorFileName)
	}
	l, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l, o.Dir, o.AnchorPath
}

func reopen(t *testing.T, dir, anchor string) *Log {
	t.Helper()
	l, err := Open(&Options{Dir: dir, KeyPath: filepath.Join(filepath.Dir(anchor), KeyFileName), AnchorPath: anchor})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func verifyAnchored(t *testing.T, dir, anchor string) Report {
	t.Helper()
	a, err := ReadAnchor(anchor)
	if err != nil || a == nil {
		t.Fatalf("ReadAnchor = %v, %v", a, err)
	}
	rep, err := VerifyWith(dir, VerifyOptions{Anchor: a})
	if err != nil {
		t.Fatalf("VerifyWith: %v", err)
	}
	return rep
}

func cutLines(t *testing.T, path string, keep int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if err := os.WriteFile(path, bytes.Join(lines[:keep], nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAnchorKeepsLossesVisible: entries removed from the end of the trail (with the
// head checkpoint, or with an older checkpoint put back) are found at the next Open by
// comparing with the head recorded outside the trail, and the loss keeps Verify from
// saying "intact" even after the writer has gone on appending. Without the anchor the
// same trail verifies.
func TestAnchorKeepsLossesVisible(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string, oldHead []byte)
	}{
		{"last lines and head.json deleted", func(t *testing.T, dir string, _ []byte) {
			segs, _ := listSegments(dir)
			last := filepath.Join(dir, segs[len(segs)-1])
			b, _ := os.ReadFile(last)
			cutLines(t, last, bytes.Count(b, []byte("\n"))-1)
			os.Remove(filepath.Join(dir, CheckpointFile))
		}},
		{"newest segments and head.json deleted", func(t *testing.T, dir string, _ []byte) {
			segs, _ := listSegments(dir)
			for _, s := range segs[len(segs)-2:] {
				os.Remove(filepath.Join(dir, s))
			}
			os.Remove(filepath.Join(dir, CheckpointFile))
		}},
		{"older signed head.json restored", func(t *testing.T, dir string, oldHead []byte) {
			var cp Checkpoint
			if err := json.Unmarshal(oldHead, &cp); err != nil {
				t.Fatal(err)
			}
			segs, _ := listSegments(dir)
			for _, s := range segs {
				if s > cp.Segment {
					os.Remove(filepath.Join(dir, s))
				}
			}
			seg := filepath.Join(dir, cp.Segment)
			b, _ := os.ReadFile(seg)
			keep := 0
			for i, line := range bytes.SplitAfter(b, []byte("\n")) {
				if p, err := parseLine(bytes.TrimSuffix(line, []byte("\n"))); err == nil && p.header.Seq == cp.Seq {
					keep = i + 1
				}
			}
			cutLines(t, seg, keep)
			os.WriteFile(filepath.Join(dir, CheckpointFile), oldHead, 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, dir, anchor := anchoredTrail(t, &Options{SegmentMaxBytes: 2048})
			appendN(t, l, 10)
			if err := l.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			oldHead, _ := os.ReadFile(filepath.Join(dir, CheckpointFile))
			appendN(t, l, 30)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, dir, oldHead)

			// Before any restart, verify already sees the trail ends early.
			if rep := verifyAnchored(t, dir, anchor); rep.Intact {
				t.Fatalf("damaged trail verifies as intact against the anchor")
			}
			l2 := reopen(t, dir, anchor)
			appendN(t, l2, 5)
			if err := l2.Close(); err != nil {
				t.Fatal(err)
			}
			recs, _ := Query(context.Background(), dir, Filter{Type: TypeTruncationDetected})
			if len(recs) == 0 || !strings.Contains(recs[len(recs)-1].Event.Reason, "symbi had recorded") {
				t.Errorf("no truncation notice after the restart: %+v", recs)
			}
			rep := verifyAnchored(t, dir, anchor)
			if rep.Intact || rep.Problem == nil || rep.Problem.Kind != ProblemTruncated || !strings.Contains(rep.Problem.Detail, "to 41 lost") {
				t.Fatalf("verify after the restart = intact %v, problem %v; want the loss of entries up to seq 41", rep.Intact, rep.Problem)
			}
			if len(rep.Losses) != 1 {
				t.Errorf("losses = %+v, want one", rep.Losses)
			}
			// Restarting again neither forgets nor repeats the loss.
			l3 := reopen(t, dir, anchor)
			l3.Close()
			if rep := verifyAnchored(t, dir, anchor); rep.Intact || len(rep.Losses) != 1 {
				t.Errorf("after a second restart: intact %v, losses %+v", rep.Intact, rep.Losses)
			}
		})
	}
}

// TestAnchorRejectsSwappedTrail: a trail wiped and rewritten by another writer (its own
// key, its own head) does not verify against the anchor, and the writer refuses a key
// the anchor did not pin.
func TestAnchorRejectsSwappedTrail(t *testing.T) {
	l, dir, anchor := anchoredTrail(t, nil)
	appendN(t, l, 5)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := verifyAnchored(t, dir, anchor); !rep.Intact {
		t.Fatalf("own trail not intact: %v", rep.Problem)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	other, err := Open(&Options{Dir: dir, KeyPath: filepath.Join(t.TempDir(), KeyFileName)})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, other, 8)
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, nil); !rep.Intact {
		t.Fatalf("the swapped trail should be self-consistent: %v", rep.Problem)
	}
	rep := verifyAnchored(t, dir, anchor)
	if rep.Intact || rep.Problem.Kind != ProblemUntrusted {
		t.Fatalf("swapped trail against the anchor: intact %v, problem %v; want untrusted_key", rep.Intact, rep.Problem)
	}

	// A signing key the anchor does not know is refused.
	_, err = Open(&Options{Dir: filepath.Join(t.TempDir(), "audit"), KeyPath: filepath.Join(t.TempDir(), KeyFileName), AnchorPath: anchor})
	if err == nil || !strings.Contains(err.Error(), "not pinned") {
		t.Errorf("Open with an unpinned key = %v, want refusal", err)
	}
}

// TestAnchorFollowsKeyRotation: a rotated-to key is pinned before it signs, so the
// trail still verifies against the anchor and reopens.
func TestAnchorFollowsKeyRotation(t *testing.T) {
	l, dir, anchor := anchoredTrail(t, nil)
	appendN(t, l, 3)
	if err := l.RotateKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	a, _ := ReadAnchor(anchor)
	if len(a.Keys) != 2 {
		t.Fatalf("anchor keys = %+v, want 2", a.Keys)
	}
	if rep := verifyAnchored(t, dir, anchor); !rep.Intact {
		t.Fatalf("rotated trail not intact: %v", rep.Problem)
	}
	reopen(t, dir, anchor).Close()
}
