package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// sigLen is the length of a base64 Ed25519 signature; with it a line's length is known
// before it is signed, so segments can be cut before signing runs in parallel.
var sigLen = base64.StdEncoding.EncodedLen(ed25519.SignatureSize)

// Record is one entry of the trail as read back: the event plus its chain fields and
// where it was found.
type Record struct {
	Seq         uint64 `json:"seq"`
	PrevHash    string `json:"prev_hash"`
	Key         string `json:"key"`
	PrevSegment string `json:"prev_segment,omitempty"`
	Hash        string `json:"hash"`
	Sig         string `json:"sig"`
	Event       Event  `json:"event"`
	Writer      string `json:"writer,omitempty"` // the writer's chain; "" for the main one
	File        string `json:"-"`                // segment file name (base name)
	Line        int    `json:"-"`                // 1-based line in File
}

// entryHeader is the part of a line that the chain covers besides the event bytes.
type entryHeader struct {
	Seq         uint64
	PrevHash    [32]byte
	Key         string // key id
	PrevSegment string // set on the first entry of every segment but the first
}

// appendCanonical appends the canonical bytes of an entry: a JSON object with a fixed key
// order whose "event" value is the event's bytes verbatim.
func appendCanonical(dst []byte, h *entryHeader, event []byte) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, h.Seq, 10)
	dst = append(dst, `,"prev_hash":"`...)
	dst = hex.AppendEncode(dst, h.PrevHash[:])
	dst = append(dst, `","key":"`...)
	dst = append(dst, h.Key...) // validated hex
	dst = append(dst, '"')
	if h.PrevSegment != "" {
		dst = append(dst, `,"prev_segment":`...)
		dst = strconv.AppendQuote(dst, h.PrevSegment) // validated segment name: plain ASCII
	}
	dst = append(dst, `,"event":`...)
	dst = append(dst, event...)
	return append(dst, '}')
}

// chainHash is SHA-256 over the previous hash and the entry's canonical bytes.
func chainHash(prev [32]byte, canonical []byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(canonical)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// appendLine turns canonical bytes into the stored line (with its newline): the canonical
// object with the hash and signature added as its last members.
func appendLine(dst, canonical []byte, hash [32]byte, sig []byte) []byte {
	dst = append(dst, canonical[:len(canonical)-1]...)
	dst = append(dst, `,"hash":"`...)
	dst = hex.AppendEncode(dst, hash[:])
	dst = append(dst, `","sig":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, sig)
	return append(dst, "\"}\n"...)
}

// lineLen is the length appendLine will produce for canonical bytes of length n.
func lineLen(n int, signed bool) int {
	s := 0
	if signed {
		s = sigLen
	}
	return n - 1 + len(`,"hash":"`) + 64 + len(`","sig":"`) + s + len("\"}\n")
}

// KeyID is a short, stable name for a public key: the first 8 bytes of its SHA-256, hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// parsedLine is a line decoded and checked for form, not yet for its place in the chain.
type parsedLine struct {
	header    entryHeader
	hash      [32]byte
	sig       []byte
	event     json.RawMessage
	canonical []byte
}

// wireLine is the JSON form of a line.
type wireLine struct {
	Seq         *uint64         `json:"seq"`
	PrevHash    string          `json:"prev_hash"`
	Key         string          `json:"key"`
	PrevSegment string          `json:"prev_segment"`
	Event       json.RawMessage `json:"event"`
	Hash        string          `json:"hash"`
	Sig         string          `json:"sig"`
}

var errNotCanonical = errors.New("line is not in canonical form (edited)")

// parseLine decodes one line (without its newline) and checks that it is exactly the
// line the writer would have produced for its fields, so any edit that the hash would not
// see (spacing, duplicate or extra members) is rejected too. It does not check the hash or
// signature.
func parseLine(line []byte) (*parsedLine, error) {
	var w wireLine
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, fmt.Errorf("decode entry: %w", err)
	}
	if w.Seq == nil {
		return nil, errors.New("decode entry: no seq")
	}
	p := &parsedLine{event: w.Event}
	p.header.Seq = *w.Seq
	if err := decodeHex32(w.PrevHash, &p.header.PrevHash); err != nil {
		return nil, fmt.Errorf("decode prev_hash: %w", err)
	}
	if err := decodeHex32(w.Hash, &p.hash); err != nil {
		return nil, fmt.Errorf("decode hash: %w", err)
	}
	if len(w.Key) != 16 || !isHex(w.Key) {
		return nil, errors.New("decode key: not a key id")
	}
	p.header.Key = w.Key
	if w.PrevSegment != "" && !validSegmentName(w.PrevSegment) {
		return nil, errors.New("decode prev_segment: not a segment name")
	}
	p.header.PrevSegment = w.PrevSegment
	if len(w.Event) == 0 || w.Event[0] != '{' {
		return nil, errors.New("decode event: not an object")
	}
	var sig []byte // empty: an entry covered by a later signature (Options.SignInterval)
	if w.Sig != "" {
		var err error
		sig, err = base64.StdEncoding.DecodeString(w.Sig)
		if err != nil || len(sig) != ed25519.SignatureSize {
			return nil, errors.New("decode sig: not an Ed25519 signature")
		}
	}
	p.sig = sig
	p.canonical = appendCanonical(make([]byte, 0, len(line)), &p.header, w.Event)
	want := appendLine(make([]byte, 0, len(line)+1), p.canonical, p.hash, sig)
	if !bytes.Equal(want[:len(want)-1], line) {
		return nil, errNotCanonical
	}
	return p, nil
}

// record converts a parsed line into a Record.
func (p *parsedLine) record(file string, line int) (Record, error) {
	r := Record{
		Seq:         p.header.Seq,
		PrevHash:    hex.EncodeToString(p.header.PrevHash[:]),
		Key:         p.header.Key,
		PrevSegment: p.header.PrevSegment,
		Hash:        hex.EncodeToString(p.hash[:]),
		Sig:         encodeSig(p.sig),
		File:        file,
		Line:        line,
	}
	if err := json.Unmarshal(p.event, &r.Event); err != nil {
		return r, fmt.Errorf("decode event: %w", err)
	}
	r.Event.Seq = r.Seq
	return r, nil
}

func decodeHex32(s string, out *[32]byte) error {
	if len(s) != 64 {
		return errors.New("want 64 hex digits")
	}
	_, err := hex.Decode(out[:], []byte(s))
	if err != nil || !isLowerHex(s) {
		return errors.New("want 64 lowercase hex digits")
	}
	return nil
}

func isHex(s string) bool { return isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Segment file names are "seg-" + 20-digit first sequence number + ".jsonl".
const (
	segPrefix = "seg-"
	segSuffix = ".jsonl"
)

func segmentName(firstSeq uint64) string {
	return fmt.Sprintf("%s%020d%s", segPrefix, firstSeq, segSuffix)
}

func validSegmentName(s string) bool {
	if len(s) != len(segPrefix)+20+len(segSuffix) || s[:len(segPrefix)] != segPrefix ||
		s[len(s)-len(segSuffix):] != segSuffix {
		return false
	}
	for _, c := range s[len(segPrefix) : len(segPrefix)+20] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// decodePublicKey decodes the base64 public key named by genesis and rotation entries.
func decodePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("decode public key: not a base64 Ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

func encodeSig(sig []byte) string {
	if sig == nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(sig)
}
