package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// trail is a closed, intact trail of several segments to damage.
type trail struct {
	dir  string
	pub  ed25519.PublicKey
	segs []string
}

func newTrail(t *testing.T, entries int) *trail {
	t.Helper()
	l, dir := openTest(t, &Options{SegmentMaxBytes: 4096})
	appendN(t, l, entries)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(dir)
	if err != nil || len(segs) < 3 {
		t.Fatalf("want at least 3 segments, got %v (%v)", segs, err)
	}
	tr := &trail{dir: dir, pub: trustedKey(t, dir), segs: segs}
	if rep := mustVerify(t, dir, tr.pub); !rep.Intact {
		t.Fatalf("fresh trail not intact: %v", rep.Problem)
	}
	return tr
}

func (tr *trail) path(i int) string { return filepath.Join(tr.dir, tr.segs[i]) }

func (tr *trail) lines(t *testing.T, i int) [][]byte {
	t.Helper()
	b, err := os.ReadFile(tr.path(i))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

func (tr *trail) write(t *testing.T, i int, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(tr.path(i), bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

// seqAt is the seq of line n (1-based) of segment i, read before damage.
func (tr *trail) seqAt(t *testing.T, i, n int) uint64 {
	t.Helper()
	p, err := parseLine(bytes.TrimSuffix(tr.lines(t, i)[n-1], []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	return p.header.Seq
}

// rechain rewrites every entry from segment i, line n on, as an attacker holding priv
// would: recomputing prev_hash, hash and signature so the chain is self-consistent.
func (tr *trail) rechain(t *testing.T, priv ed25519.PrivateKey, fromSeg, fromLine int, edit func(event []byte) []byte) {
	t.Helper()
	var prev [32]byte
	started := false
	for i := range tr.segs {
		lines := tr.lines(t, i)
		for n := range lines {
			p, err := parseLine(bytes.TrimSuffix(lines[n], []byte("\n")))
			if err != nil {
				t.Fatal(err)
			}
			if i > fromSeg || (i == fromSeg && n+1 >= fromLine) {
				ev := p.event
				if !started && edit != nil {
					ev = edit(ev)
				}
				started = true
				h := p.header
				h.PrevHash = prev
				h.Key = KeyID(priv.Public().(ed25519.PublicKey))
				c := appendCanonical(nil, &h, ev)
				hash := chainHash(prev, c)
				lines[n] = appendLine(nil, c, hash, ed25519.Sign(priv, hash[:]))
				prev = hash
			} else {
				prev = p.hash
			}
		}
		tr.write(t, i, lines)
	}
}

func TestTamperDetected(t *testing.T) {
	_, otherKey, _ := ed25519.GenerateKey(nil)
	ignoreDetail := cmpopts.IgnoreFields(Problem{}, "Detail")
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, tr *trail) Problem // returns the expected first problem
	}{
		{"edit a byte of an event", func(t *testing.T, tr *trail) Problem {
			lines := tr.lines(t, 1)
			lines[2] = bytes.Replace(lines[2], []byte(`"identity":"client-`), []byte(`"identity":"blient-`), 1)
			tr.write(t, 1, lines)
			return Problem{File: tr.segs[1], Line: 3, Seq: tr.seqAt(t, 1, 3), Kind: ProblemHash}
		}},
		{"edit a byte of a signature", func(t *testing.T, tr *trail) Problem {
			lines := tr.lines(t, 1)
			i := bytes.Index(lines[1], []byte(`"sig":"`)) + 10
			// Another valid base64 letter (a flipped bit may leave the alphabet).
			if lines[1][i] == 'A' {
				lines[1][i] = 'B'
			} else {
				lines[1][i] = 'A'
			}
			tr.write(t, 1, lines)
			return Problem{File: tr.segs[1], Line: 2, Seq: tr.seqAt(t, 1, 2), Kind: ProblemSignature}
		}},
		{"edit the spacing only", func(t *testing.T, tr *trail) Problem {
			lines := tr.lines(t, 0)
			seq := tr.seqAt(t, 0, 4)
			lines[3] = bytes.Replace(lines[3], []byte(`"seq":`), []byte(`"seq": `), 1)
			tr.write(t, 0, lines)
			return Problem{File: tr.segs[0], Line: 4, Seq: seq, Kind: ProblemMalformed}
		}},
		{"delete a line", func(t *testing.T, tr *trail) Problem {
			lines := tr.lines(t, 1)
			seq := tr.seqAt(t, 1, 3)
			tr.write(t, 1, append(lines[:2], lines[3:]...))
			return Problem{File: tr.segs[1], Line: 3, Seq: seq, Kind: ProblemSequence}
		}},
		{"swap two lines", func(t *testing.T, tr *trail) Problem {
			lines := tr.lines(t, 0)
			seq := tr.seqAt(t, 0, 2)
			lines[1], lines[2] = lines[2], lines[1]
			tr.write(t, 0, lines)
			return Problem{File: tr.segs[0], Line: 2, Seq: seq, Kind: ProblemSequence}
		}},
		{"truncate the tail by whole lines", func(t *testing.T, tr *trail) Problem {
			last := len(tr.segs) - 1
			lines := tr.lines(t, last)
			seq := tr.seqAt(t, last, len(lines)-1) // the first line cut
			tr.write(t, last, lines[:len(lines)-2])
			return Problem{File: tr.segs[last], Line: len(lines) - 1, Seq: seq, Kind: ProblemTruncated}
		}},
		{"truncate the tail mid-line", func(t *testing.T, tr *trail) Problem {
			last := len(tr.segs) - 1
			lines := tr.lines(t, last)
			seq := tr.seqAt(t, last, len(lines))
			lines[len(lines)-1] = lines[len(lines)-1][:40]
			tr.write(t, last, lines)
			return Problem{File: tr.segs[last], Line: len(lines), Seq: seq, Kind: ProblemTorn}
		}},
		{"delete the last segment", func(t *testing.T, tr *trail) Problem {
			last := len(tr.segs) - 1
			seq := tr.seqAt(t, last, 1)
			os.Remove(tr.path(last))
			return Problem{File: tr.segs[last-1], Line: len(tr.lines(t, last-1)) + 1, Seq: seq, Kind: ProblemTruncated}
		}},
		{"delete a middle segment", func(t *testing.T, tr *trail) Problem {
			seq := tr.seqAt(t, 1, 1)
			os.Remove(tr.path(1))
			return Problem{File: tr.segs[2], Line: 1, Seq: seq, Kind: ProblemSequence}
		}},
		{"delete the first segment", func(t *testing.T, tr *trail) Problem {
			os.Remove(tr.path(0))
			return Problem{File: tr.segs[1], Line: 1, Seq: 1, Kind: ProblemSequence}
		}},
		{"replace a segment with one from another trail", func(t *testing.T, tr *trail) Problem {
			// Same key, same shape: only the chain link can tell.
			other := filepath.Join(t.TempDir(), "audit")
			if err := os.MkdirAll(other, 0o700); err != nil {
				t.Fatal(err)
			}
			key, _ := os.ReadFile(filepath.Join(filepath.Dir(tr.dir), KeyFileName))
			os.WriteFile(filepath.Join(filepath.Dir(other), KeyFileName), key, 0o600)
			l, _ := openTest(t, &Options{Dir: other, SegmentMaxBytes: 4096})
			appendN(t, l, 60)
			l.Close()
			b, err := os.ReadFile(filepath.Join(other, tr.segs[1]))
			if err != nil {
				t.Fatalf("other trail has no %s: %v", tr.segs[1], err)
			}
			seq := tr.seqAt(t, 1, 1)
			os.WriteFile(tr.path(1), b, 0o600)
			return Problem{File: tr.segs[1], Line: 1, Seq: seq, Kind: ProblemLink}
		}},
		{"rename segments to reorder them", func(t *testing.T, tr *trail) Problem {
			a, b := tr.path(1), tr.path(2)
			os.Rename(a, a+".x")
			os.Rename(b, a)
			os.Rename(a+".x", b)
			return Problem{File: tr.segs[1], Line: 1, Seq: tr.seqAt(t, 2, 1), Kind: ProblemSequence}
		}},
		{"forge one entry with another key", func(t *testing.T, tr *trail) Problem {
			seq := tr.seqAt(t, 1, 2)
			tr.rechain(t, otherKey, 1, 2, func(ev []byte) []byte {
				return bytes.Replace(ev, []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1)
			})
			return Problem{File: tr.segs[1], Line: 2, Seq: seq, Kind: ProblemSignature}
		}},
		{"forge one entry claiming the real key id", func(t *testing.T, tr *trail) Problem {
			seq := tr.seqAt(t, 2, 1)
			lines := tr.lines(t, 2)
			p, _ := parseLine(bytes.TrimSuffix(lines[0], []byte("\n")))
			ev := bytes.Replace(p.event, []byte(`"decision":"allow"`), []byte(`"decision":"deny"`), 1)
			c := appendCanonical(nil, &p.header, ev) // header keeps the real key id
			hash := chainHash(p.header.PrevHash, c)
			lines[0] = appendLine(nil, c, hash, ed25519.Sign(otherKey, hash[:]))
			tr.write(t, 2, lines)
			return Problem{File: tr.segs[2], Line: 1, Seq: seq, Kind: ProblemSignature}
		}},
		{"forge the whole trail with another key", func(t *testing.T, tr *trail) Problem {
			tr.rechain(t, otherKey, 0, 1, func(ev []byte) []byte {
				pub := base64.StdEncoding.EncodeToString(otherKey.Public().(ed25519.PublicKey))
				return []byte(`{"id":"x","time":"2026-01-01T00:00:00Z","type":"audit.genesis","public_key":"` + pub + `"}`)
			})
			cp, _ := readCheckpoint(tr.dir)
			lines := tr.lines(t, len(tr.segs)-1)
			p, _ := parseLine(bytes.TrimSuffix(lines[len(lines)-1], []byte("\n")))
			cp.Hash, cp.Key = hex.EncodeToString(p.hash[:]), KeyID(otherKey.Public().(ed25519.PublicKey))
			cp.sign(otherKey)
			writeCheckpoint(tr.dir, cp)
			return Problem{File: tr.segs[0], Line: 1, Seq: 1, Kind: ProblemUntrusted}
		}},
		{"remove the checkpoint", func(t *testing.T, tr *trail) Problem {
			os.Remove(filepath.Join(tr.dir, CheckpointFile))
			last := len(tr.segs) - 1
			n := len(tr.lines(t, last))
			return Problem{File: tr.segs[last], Line: n + 1, Seq: tr.seqAt(t, last, n) + 1, Kind: ProblemCheckpoint}
		}},
		{"truncate and re-sign the checkpoint with another key", func(t *testing.T, tr *trail) Problem {
			last := len(tr.segs) - 1
			lines := tr.lines(t, last)
			p, _ := parseLine(bytes.TrimSuffix(lines[len(lines)-3], []byte("\n")))
			tr.write(t, last, lines[:len(lines)-2])
			cp, _ := readCheckpoint(tr.dir)
			cp.Seq, cp.Hash = p.header.Seq, hex.EncodeToString(p.hash[:])
			cp.sign(otherKey)
			writeCheckpoint(tr.dir, cp)
			return Problem{File: tr.segs[last], Line: len(lines) - 1, Seq: p.header.Seq + 1, Kind: ProblemCheckpoint}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTrail(t, 60)
			want := tc.damage(t, tr)
			rep := mustVerify(t, tr.dir, tr.pub)
			if rep.Intact || rep.Problem == nil {
				t.Fatalf("damaged trail verified as intact")
			}
			if diff := cmp.Diff(want, *rep.Problem, ignoreDetail); diff != "" {
				t.Errorf("first problem mismatch (-want +got):\n%s\ndetail: %s", diff, rep.Problem.Detail)
			}
			if rep.Problem.Detail == "" {
				t.Error("problem has no detail")
			}
		})
	}
}

// A trail forged wholesale is only caught with a trusted key; without one Verify says
// so in a warning.
func TestVerifyWithoutTrustedKeyWarns(t *testing.T) {
	tr := newTrail(t, 60)
	rep := mustVerify(t, tr.dir, nil)
	if !rep.Intact || rep.Anchored || len(rep.Warnings) == 0 {
		t.Errorf("intact %v anchored %v warnings %v; want intact, unanchored, a warning", rep.Intact, rep.Anchored, rep.Warnings)
	}
}

func TestVerifyEmptyDir(t *testing.T) {
	if _, err := Verify(t.TempDir(), nil); err == nil {
		t.Error("Verify of an empty dir succeeded")
	}
}
