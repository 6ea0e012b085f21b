package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProblemKind classifies what is wrong with a trail.
type ProblemKind string

// Problem kinds. Edits show as ProblemHash or ProblemMalformed, deletions and reordering
// as ProblemSequence or ProblemLink, forgeries as ProblemSignature or ProblemUntrusted,
// a shortened trail as ProblemTruncated.
const (
	ProblemMalformed  ProblemKind = "malformed"     // not a well-formed, canonical entry
	ProblemTorn       ProblemKind = "torn"          // incomplete last line (crash not yet recovered)
	ProblemSequence   ProblemKind = "sequence"      // seq gap, repeat or reorder
	ProblemLink       ProblemKind = "chain_link"    // prev_hash is not the previous entry's hash
	ProblemHash       ProblemKind = "hash"          // hash does not match the entry's content
	ProblemSignature  ProblemKind = "signature"     // signature invalid, or by an unexpected key
	ProblemSegment    ProblemKind = "segment"       // segment missing, renamed, replaced or mislinked
	ProblemUntrusted  ProblemKind = "untrusted_key" // the trail is not signed by the trusted key
	ProblemTruncated  ProblemKind = "truncated"     // the trail ends before its signed checkpoint
	ProblemCheckpoint ProblemKind = "checkpoint"    // checkpoint missing, invalid or not trusted
)

// Problem is the first bad entry found: where it is and what is wrong.
type Problem struct {
	Writer string      `json:"writer,omitempty"` // the chain, when the trail holds several
	File   string      `json:"file"`
	Line   int         `json:"line"`
	Seq    uint64      `json:"seq"`
	Kind   ProblemKind `json:"kind"`
	Detail string      `json:"detail"`
}

func (p *Problem) String() string {
	if p.Writer != "" {
		return fmt.Sprintf("writer %s: %s:%d seq %d: %s: %s", p.Writer, p.File, p.Line, p.Seq, p.Kind, p.Detail)
	}
	return fmt.Sprintf("%s:%d seq %d: %s: %s", p.File, p.Line, p.Seq, p.Kind, p.Detail)
}

// Report is the result of Verify.
type Report struct {
	Intact     bool        `json:"intact"`
	Entries    uint64      `json:"entries"`  // entries checked (up to the problem, if any)
	Segments   int         `json:"segments"` // segment files found
	FirstSeq   uint64      `json:"first_seq"`
	LastSeq    uint64      `json:"last_seq"`
	LastHash   string      `json:"last_hash,omitempty"`
	Keys       []string    `json:"keys"`     // signing key ids in the order the trail used them
	Anchored   bool        `json:"anchored"` // a trusted public key was given and found in the chain
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	// AnchorHead is the last head the writer recorded outside the trail, and Losses the
	// parts of the trail it found gone when it reopened it (each one fails the check).
	AnchorHead *Checkpoint `json:"anchor_head,omitempty"`
	Losses     []Loss      `json:"losses,omitempty"`
	Problem    *Problem    `json:"problem,omitempty"`
	Warnings   []string    `json:"warnings,omitempty"`
	// Writer names the chain this report is about, in Writers. Writers are the reports
	// on the other writers' chains when several processes wrote the trail; the report
	// itself is about the main chain, and is intact only if every chain is.
	Writer  string   `json:"writer,omitempty"`
	Writers []Report `json:"writers,omitempty"`
}

// TotalEntries is the number of entries checked in every chain.
func (r *Report) TotalEntries() uint64 {
	n := r.Entries
	for i := range r.Writers {
		n += r.Writers[i].Entries
	}
	return n
}

// ErrNoTrail is returned by Verify when dir holds neither segments nor a checkpoint.
var ErrNoTrail = errors.New("no audit trail")

// Verify checks the trail in dir offline: every line canonical, seq contiguous from 1,
// each prev_hash the previous hash, each hash recomputed, each signature valid under the
// key the chain says is current (genesis key, then each rotation's new key), segments
// named and linked in order, and the signed checkpoint covered by the trail. trusted is
// the public key the operator trusts (the genesis key or any key rotated to); with nil
// the trail is checked against the key its genesis entry names (Report.Anchored false).
// The returned error is for I/O failures; a damaged trail is a Report with a Problem.
func Verify(dir string, trusted ed25519.PublicKey) (Report, error) {
	return VerifyWith(dir, VerifyOptions{Trusted: trusted})
}

// VerifyOptions say what Verify trusts besides the trail itself.
type VerifyOptions struct {
	// Trusted is the public key the operator trusts; nil: the oldest key pinned in Anchor.
	Trusted ed25519.PublicKey
	// Anchor is the writer's record kept outside the trail (ReadAnchor). With it the
	// trail must reach the head it recorded, hold the entry it recorded there, carry a
	// checkpoint no older than it, and have no recorded loss.
	Anchor *Anchor
	// Writers are the anchors of the other writers' chains (ReadAnchors), by writer.
	// Each chain is held to its own anchor as the main chain is to Anchor; with Anchor
	// set, a chain without one fails.
	Writers map[string]*Anchor
}

// VerifyWith is Verify with anchors kept outside the trail. It checks the main chain
// and every other writer's chain in the trail (and each one an anchor names, so a
// deleted chain is found); the report is intact only if all of them are, and its
// Problem names the writer whose chain is damaged.
func VerifyWith(dir string, o VerifyOptions) (Report, error) {
	ws, err := Writers(dir)
	if err != nil {
		return Report{}, err
	}
	for w := range o.Writers {
		if !slices.Contains(ws, w) {
			ws = append(ws, w)
		}
	}
	sortWriters(ws)
	rep, mainKeys, err := verifyChain(dir, o.Trusted, o.Anchor)
	if err != nil && !(errors.Is(err, ErrNoTrail) && len(ws) > 0) {
		return rep, err
	}
	if len(ws) == 0 {
		return rep, nil
	}
	if err != nil { // no main chain, only other writers': it is missing
		rep.Problem = &Problem{Kind: ProblemTruncated, Detail: "the main chain is gone (no segments, no checkpoint) while other writers' chains remain"}
	}
	if rep.Problem != nil {
		rep.Problem.Writer = MainWriter
	}
	for _, w := range ws {
		wr := verifyWriter(dir, w, o, mainKeys)
		wr.Writer = w
		if wr.Problem != nil {
			wr.Problem.Writer = w
			if rep.Problem == nil {
				rep.Problem = wr.Problem
			}
		}
		rep.Writers = append(rep.Writers, wr)
	}
	rep.Intact = rep.Problem == nil
	return rep, nil
}

// verifyWriter checks writer w's chain against its anchor. With a trusted key given, a
// chain begun after a rotation is trusted if the main chain rotated from the trusted key
// to the key it began with (mainKeys: the keys the main chain trusted, by id).
func verifyWriter(dir, w string, o VerifyOptions, mainKeys map[string]ed25519.PublicKey) Report {
	a := o.Writers[w]
	if a == nil && o.Anchor != nil {
		return Report{Keys: []string{}, Problem: &Problem{Kind: ProblemCheckpoint,
			Detail: "no anchor outside the trail for this writer's chain: it cannot be trusted"}}
	}
	rep, _, err := verifyChain(WriterDir(dir, w), o.Trusted, a)
	if err == nil && o.Trusted != nil && rep.Problem != nil && rep.Problem.Kind == ProblemUntrusted && len(rep.Keys) > 0 {
		if pub := mainKeys[rep.Keys[0]]; pub != nil {
			rep, _, err = verifyChain(WriterDir(dir, w), pub, a)
		}
	}
	if errors.Is(err, ErrNoTrail) || errors.Is(err, fs.ErrNotExist) {
		detail := "the chain is gone (no segments, no checkpoint)"
		if a != nil && a.Head != nil {
			detail = fmt.Sprintf("the chain is gone, but symbi recorded seq %d (%s) outside the trail", a.Head.Seq, a.Head.Time.UTC().Format(time.RFC3339))
		}
		return Report{Keys: []string{}, Problem: &Problem{Seq: 1, Kind: ProblemTruncated, Detail: detail}}
	}
	if err != nil {
		return Report{Keys: []string{}, Problem: &Problem{Kind: ProblemMalformed, Detail: err.Error()}}
	}
	return rep
}

// verifyChain checks one chain: the main one in dir, or a writer's in its directory.
// It also returns the keys the chain used from the trusted one on, by id.
func verifyChain(dir string, trusted ed25519.PublicKey, a *Anchor) (Report, map[string]ed25519.PublicKey, error) {
	v := &verifier{trusted: trusted, anchor: a}
	if v.trusted == nil && a != nil {
		keys, err := a.PublicKeys()
		if err != nil {
			return Report{}, nil, err
		}
		v.trusted = keys[0]
	}
	rep, err := v.run(dir)
	reached := map[string]ed25519.PublicKey{}
	if v.anchorIdx >= 0 {
		for _, id := range rep.Keys[v.anchorIdx:] {
			reached[id] = v.keys[id]
		}
	}
	return rep, reached, err
}

type sigJob struct {
	pub  ed25519.PublicKey
	hash [32]byte
	sig  []byte
	file string
	line int
	seq  uint64
}

type verifier struct {
	trusted    ed25519.PublicKey
	anchor     *Anchor
	anchorHash string // hash of the entry at the anchor's head seq
	rep        Report
	pub        ed25519.PublicKey // current key
	keys       map[string]ed25519.PublicKey
	keyIndex   map[string]int
	anchorIdx  int
	prev       [32]byte
	seq        uint64
	jobs       []sigJob
	cpHash     string
	unsigned   *Problem // first entry not yet covered by a signature
	// linesInLast counts the lines of the segment being read (the last one, at the end).
	linesInLast int
}

const sigChunk = 2048

func (v *verifier) run(dir string) (Report, error) {
	v.rep.Keys = []string{}
	v.keys = map[string]ed25519.PublicKey{}
	v.keyIndex = map[string]int{}
	v.anchorIdx = -1
	if v.anchor != nil {
		v.rep.AnchorHead, v.rep.Losses = v.anchor.Head, v.anchor.Losses
	}
	segs, err := listSegments(dir)
	if err != nil {
		return v.rep, err
	}
	cp, cpErr := readCheckpoint(dir)
	v.rep.Segments = len(segs)
	v.rep.Checkpoint = cp
	if len(segs) == 0 && cp == nil && cpErr == nil {
		return v.rep, fmt.Errorf("verify %s: %w", dir, ErrNoTrail)
	}
	for i, name := range segs {
		prevName := ""
		if i > 0 {
			prevName = segs[i-1]
		}
		p, err := v.segment(dir, name, prevName, i == len(segs)-1)
		if err != nil {
			return v.rep, err
		}
		if p == nil {
			p = v.flushSigs()
		}
		if p != nil {
			v.rep.Problem = p
			return v.rep, nil
		}
	}
	if p := v.flushSigs(); p != nil {
		v.rep.Problem = p
		return v.rep, nil
	}
	v.rep.LastSeq = v.seq
	if v.unsigned != nil && !(cp != nil && cp.Seq == v.seq && cp.Hash == v.cpHash && v.cpKeyOK(cp)) {
		v.rep.Problem = v.unsigned
		return v.rep, nil
	}
	if v.seq > 0 {
		v.rep.LastHash = hex.EncodeToString(v.prev[:])
	}
	lastFile, lastLine := "", 0
	if len(segs) > 0 {
		lastFile = segs[len(segs)-1]
		lastLine = v.linesInLast
	}
	at := func(kind ProblemKind, detail string) *Problem {
		return &Problem{File: lastFile, Line: lastLine + 1, Seq: v.seq + 1, Kind: kind, Detail: detail}
	}
	switch {
	case cpErr != nil:
		v.rep.Problem = at(ProblemCheckpoint, cpErr.Error())
	case cp == nil:
		v.rep.Problem = at(ProblemCheckpoint, "head checkpoint missing: a truncated tail cannot be ruled out")
	case cp.Seq > v.seq:
		v.rep.Problem = at(ProblemTruncated, fmt.Sprintf("signed checkpoint names seq %d but the trail ends at seq %d", cp.Seq, v.seq))
	case cp.Hash != v.cpHash:
		v.rep.Problem = at(ProblemTruncated, fmt.Sprintf("checkpoint hash for seq %d does not match the trail", cp.Seq))
	default:
		idx, ok := v.keyIndex[cp.Key]
		switch {
		case !ok || !cp.verify(v.keys[cp.Key]):
			v.rep.Problem = at(ProblemCheckpoint, "checkpoint signature invalid")
		case v.trusted != nil && v.anchorIdx >= 0 && idx < v.anchorIdx:
			v.rep.Problem = at(ProblemCheckpoint, "nothing after the trusted key's rotation is signed by it")
		}
	}
	if v.rep.Problem == nil && v.trusted != nil && v.anchorIdx < 0 {
		first := ""
		if len(segs) > 0 {
			first = segs[0]
		}
		v.rep.Problem = &Problem{File: first, Line: 1, Seq: 1, Kind: ProblemUntrusted,
			Detail: fmt.Sprintf("trail is signed by key(s) %v, none of them the trusted key %s", v.rep.Keys, KeyID(v.trusted))}
	}
	if ah := v.rep.AnchorHead; v.rep.Problem == nil && ah != nil && ah.Seq > 0 {
		switch {
		case ah.Seq > v.seq:
			v.rep.Problem = at(ProblemTruncated, fmt.Sprintf("the trail ends at seq %d but symbi recorded seq %d (%s) outside the trail: entries %d to %d are missing",
				v.seq, ah.Seq, ah.Time.UTC().Format(time.RFC3339), v.seq+1, ah.Seq))
		case v.anchorHash != ah.Hash:
			v.rep.Problem = at(ProblemTruncated, fmt.Sprintf("the entry at seq %d is not the one symbi recorded outside the trail (trail replaced or rewritten)", ah.Seq))
		case cp != nil && cp.Seq < ah.Seq:
			v.rep.Problem = at(ProblemCheckpoint, fmt.Sprintf("the head checkpoint names seq %d (%s), older than the head symbi recorded outside the trail (seq %d, %s): an old head.json was restored",
				cp.Seq, cp.Time.UTC().Format(time.RFC3339), ah.Seq, ah.Time.UTC().Format(time.RFC3339)))
		}
	}
	if v.rep.Problem == nil && len(v.rep.Losses) > 0 {
		var parts []string
		for _, l := range v.rep.Losses {
			parts = append(parts, l.String())
		}
		first := v.rep.Losses[0]
		v.rep.Problem = &Problem{File: lastFile, Seq: first.FromSeq, Kind: ProblemTruncated,
			Detail: fmt.Sprintf("symbi recorded %d loss(es) outside the trail: %s", len(parts), strings.Join(parts, "; "))}
	}
	v.rep.Anchored = v.trusted != nil && v.anchorIdx >= 0
	if v.trusted == nil {
		v.rep.Warnings = append(v.rep.Warnings, "no trusted public key given: signatures checked against the key the trail names")
	}
	v.rep.Intact = v.rep.Problem == nil
	return v.rep, nil
}

// segment checks one file. It returns the first problem found in its lines.
func (v *verifier) segment(dir, name, prevName string, last bool) (*Problem, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("open audit segment: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	lineNo := 0
	v.linesInLast = 0
	firstSeq, _ := strconv.ParseUint(name[len(segPrefix):len(segPrefix)+20], 10, 64)
	var long []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			continue
		}
		line := chunk
		if long != nil {
			line = append(long, chunk...)
			long = nil
		}
		if len(line) == 0 && err == io.EOF {
			break
		}
		lineNo++
		v.linesInLast = lineNo
		bad := func(kind ProblemKind, format string, a ...any) *Problem {
			return &Problem{File: name, Line: lineNo, Seq: v.seq + 1, Kind: kind, Detail: fmt.Sprintf(format, a...)}
		}
		if err == io.EOF {
			if p := v.flushSigs(); p != nil {
				return p, nil
			}
			return bad(ProblemTorn, "incomplete last line (%d bytes without a newline): a crash not yet recovered, or a cut", len(line)), nil
		}
		if err != nil {
			return nil, fmt.Errorf("read audit segment: %w", err)
		}
		if p := v.entry(line[:len(line)-1], name, prevName, lineNo, firstSeq, bad); p != nil {
			if sp := v.flushSigs(); sp != nil {
				return sp, nil
			}
			return p, nil
		}
		if len(v.jobs) >= sigChunk {
			if p := v.flushSigs(); p != nil {
				return p, nil
			}
		}
	}
	if lineNo == 0 {
		if last {
			v.rep.Warnings = append(v.rep.Warnings, name+" is empty (created just before a crash)")
			return nil, nil
		}
		return &Problem{File: name, Line: 0, Seq: v.seq + 1, Kind: ProblemSegment, Detail: "empty segment in the middle of the trail"}, nil
	}
	return nil, nil
}

func (v *verifier) entry(line []byte, name, prevName string, lineNo int, firstSeq uint64,
	bad func(ProblemKind, string, ...any) *Problem) *Problem {
	p, err := parseLine(line)
	if err != nil {
		return bad(ProblemMalformed, "%v", err)
	}
	h := &p.header
	if h.Seq != v.seq+1 {
		kind := ProblemSequence
		return bad(kind, "expected seq %d, found %d (entries deleted, repeated or reordered)", v.seq+1, h.Seq)
	}
	if lineNo == 1 {
		if h.Seq != firstSeq {
			return bad(ProblemSegment, "segment is named for seq %d but starts at seq %d (renamed or replaced)", firstSeq, h.Seq)
		}
		if h.PrevSegment != prevName {
			return bad(ProblemSegment, "first entry links to segment %q, expected %q (segment replaced or missing)", h.PrevSegment, prevName)
		}
	} else if h.PrevSegment != "" {
		return bad(ProblemSegment, "prev_segment on an entry that does not start a segment")
	}
	if h.PrevHash != v.prev {
		return bad(ProblemLink, "prev_hash does not match the hash of seq %d (entry deleted, reordered or replaced)", v.seq)
	}
	if chainHash(h.PrevHash, p.canonical) != p.hash {
		return bad(ProblemHash, "hash does not match the entry's content (entry edited)")
	}
	var rot struct {
		Type      Type   `json:"type"`
		PublicKey string `json:"public_key"`
	}
	special := bytes.Contains(p.event, []byte(`"type":"key.rotated"`)) || bytes.Contains(p.event, []byte(`"type":"audit.genesis"`))
	if special || h.Seq == 1 {
		if err := json.Unmarshal(p.event, &rot); err != nil {
			return bad(ProblemMalformed, "decode event: %v", err)
		}
	}
	if h.Seq == 1 {
		if rot.Type != TypeGenesis {
			return bad(ProblemSequence, "trail does not start with a genesis entry (leading segment deleted?)")
		}
		pub, err := decodePublicKey(rot.PublicKey)
		if err != nil {
			return bad(ProblemMalformed, "genesis: %v", err)
		}
		v.addKey(pub)
	} else if rot.Type == TypeGenesis {
		return bad(ProblemSequence, "genesis entry in the middle of the trail")
	}
	if h.Key != KeyID(v.pub) {
		return bad(ProblemSignature, "signed by key %s, but the current key is %s (forged with another key)", h.Key, KeyID(v.pub))
	}
	if p.sig == nil {
		if special || h.Seq == 1 {
			return bad(ProblemSignature, "genesis or key rotation entry without a signature")
		}
		if v.unsigned == nil {
			v.unsigned = &Problem{File: name, Line: lineNo, Seq: h.Seq, Kind: ProblemSignature,
				Detail: "no signature follows this entry: it is not authenticated (cut after a crash, or forged)"}
		}
	} else {
		v.jobs = append(v.jobs, sigJob{pub: v.pub, hash: p.hash, sig: p.sig, file: name, line: lineNo, seq: h.Seq})
		v.unsigned = nil
	}
	if rot.Type == TypeKeyRotated {
		pub, err := decodePublicKey(rot.PublicKey)
		if err != nil {
			return bad(ProblemMalformed, "key rotation: %v", err)
		}
		v.addKey(pub)
	}
	if v.rep.Entries == 0 {
		v.rep.FirstSeq = h.Seq
	}
	v.rep.Entries++
	v.seq, v.prev = h.Seq, p.hash
	if v.rep.Checkpoint != nil && h.Seq == v.rep.Checkpoint.Seq {
		v.cpHash = hex.EncodeToString(p.hash[:])
	}
	if v.rep.AnchorHead != nil && h.Seq == v.rep.AnchorHead.Seq {
		v.anchorHash = hex.EncodeToString(p.hash[:])
	}
	return nil
}

func (v *verifier) addKey(pub ed25519.PublicKey) {
	id := KeyID(pub)
	v.pub = pub
	v.keys[id] = pub
	v.keyIndex[id] = len(v.rep.Keys)
	if v.trusted != nil && v.anchorIdx < 0 && pub.Equal(v.trusted) {
		v.anchorIdx = len(v.rep.Keys)
	}
	v.rep.Keys = append(v.rep.Keys, id)
}

// flushSigs verifies the queued signatures, in parallel, and returns the earliest failure.
func (v *verifier) flushSigs() *Problem {
	jobs := v.jobs
	v.jobs = v.jobs[:0]
	if len(jobs) == 0 {
		return nil
	}
	bad := make([]bool, len(jobs))
	workers := runtime.GOMAXPROCS(0)
	if len(jobs) < 64 {
		workers = 1
	}
	chunk := (len(jobs) + workers - 1) / workers
	var wg sync.WaitGroup
	for start := 0; start < len(jobs); start += chunk {
		end := min(start+chunk, len(jobs))
		wg.Go(func() {
			for i := start; i < end; i++ {
				j := &jobs[i]
				bad[i] = !ed25519.Verify(j.pub, j.hash[:], j.sig)
			}
		})
	}
	wg.Wait()
	for i, b := range bad {
		if b {
			j := &jobs[i]
			return &Problem{File: j.file, Line: j.line, Seq: j.seq, Kind: ProblemSignature,
				Detail: "signature does not verify (signature edited or entry forged)"}
		}
	}
	return nil
}

func (v *verifier) cpKeyOK(cp *Checkpoint) bool {
	pub, ok := v.keys[cp.Key]
	return ok && cp.verify(pub)
}
