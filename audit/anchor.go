package audit

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// AnchorFileName is the default name of the anchor beside the signing key, outside the
// trail.
const AnchorFileName = "audit_anchor.json"

// Anchor is what the writer knows about its trail, kept outside the trail directory (by
// default beside the signing key) so that whoever can rewrite the trail cannot rewrite
// it too: the public keys the trail may be signed with (pinned when symbi created or
// first adopted the trail, and at each rotation), the last head it made durable, and
// every loss it found when it reopened the trail. Verify trusts it instead of anything
// inside the trail; a recorded loss keeps the trail from verifying as intact for good.
type Anchor struct {
	Version int         `json:"version"`
	Trail   string      `json:"trail"` // the trail directory, as the writer opened it
	Keys    []AnchorKey `json:"keys"`  // oldest first
	Head    *Checkpoint `json:"head,omitempty"`
	Losses  []Loss      `json:"losses,omitempty"`
}

// AnchorKey is a public key the writer signed (or was about to sign) the trail with.
type AnchorKey struct {
	ID        string    `json:"id"`
	PublicKey string    `json:"public_key"` // base64, as in genesis and rotation entries
	Pinned    time.Time `json:"pinned"`
}

// Loss is a part of the trail that was gone when the writer reopened it: entries FromSeq
// to ToSeq (the last the writer had made durable), or a trail that no longer holds the
// entry the writer recorded at ToSeq (Reason says which).
type Loss struct {
	DetectedAt time.Time `json:"detected_at"`
	FromSeq    uint64    `json:"from_seq"`
	ToSeq      uint64    `json:"to_seq"`
	KnownHash  string    `json:"known_hash"` // hash of seq ToSeq the writer recorded
	TrailSeq   uint64    `json:"trail_seq"`  // where the trail ended when the loss was found
	Reason     string    `json:"reason"`
}

func (l Loss) String() string {
	return fmt.Sprintf("entries seq %d to %d lost (%s; found %s when the trail ended at seq %d)",
		l.FromSeq, l.ToSeq, l.Reason, l.DetectedAt.UTC().Format(time.RFC3339), l.TrailSeq)
}

// PublicKeys decodes the pinned keys, oldest first.
func (a *Anchor) PublicKeys() ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for _, k := range a.Keys {
		pub, err := decodePublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("anchor key %s: %w", k.ID, err)
		}
		if KeyID(pub) != k.ID {
			return nil, fmt.Errorf("anchor key %s: id does not match the key", k.ID)
		}
		out = append(out, pub)
	}
	return out, nil
}

func (a *Anchor) hasKey(id string) bool {
	for _, k := range a.Keys {
		if k.ID == id {
			return true
		}
	}
	return false
}

func (a *Anchor) pin(pub ed25519.PublicKey, now time.Time) {
	if a.hasKey(KeyID(pub)) {
		return
	}
	a.Keys = append(a.Keys, AnchorKey{ID: KeyID(pub), PublicKey: base64.StdEncoding.EncodeToString(pub), Pinned: now.UTC()})
}

// ReadAnchor reads an anchor file; nil, nil when there is none.
func ReadAnchor(path string) (*Anchor, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit anchor: %w", err)
	}
	var a Anchor
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("decode audit anchor %s: %w", path, err)
	}
	if a.Version != 1 || len(a.Keys) == 0 {
		return nil, fmt.Errorf("decode audit anchor %s: version %d with %d keys: not an anchor this symbi writes", path, a.Version, len(a.Keys))
	}
	if _, err := a.PublicKeys(); err != nil {
		return nil, fmt.Errorf("decode audit anchor %s: %w", path, err)
	}
	return &a, nil
}

func writeAnchor(path string, a *Anchor) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return fmt.Errorf("encode audit anchor: %w", err)
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write audit anchor: %w", err)
	}
	return nil
}

// entryHash finds the hash of entry seq in the trail (nil if it is not there).
func entryHash(dir string, seq uint64) ([]byte, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	name := ""
	for _, s := range segs {
		first, _ := strconv.ParseUint(s[len(segPrefix):len(segPrefix)+20], 10, 64)
		if first > seq {
			break
		}
		name = s
	}
	if name == "" {
		return nil, nil
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("open audit segment: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if p, perr := parseLine(line[:len(line)-1]); perr == nil && p.header.Seq == seq {
				return p.hash[:], nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read audit segment: %w", err)
		}
	}
}

// checkAnchor compares the reopened trail (its head at seq with hash head) with the
// last head the anchor recorded and returns the loss, if any.
func checkAnchor(dir string, a *Anchor, seq uint64, head [32]byte, now time.Time) (*Loss, error) {
	h := a.Head
	if h == nil || h.Seq == 0 {
		return nil, nil
	}
	loss := &Loss{DetectedAt: now.UTC(), ToSeq: h.Seq, KnownHash: h.Hash, TrailSeq: seq}
	switch {
	case seq < h.Seq:
		loss.FromSeq = seq + 1
		loss.Reason = fmt.Sprintf("the trail ends at seq %d, before the head symbi last recorded outside it", seq)
		return loss, nil
	case seq == h.Seq:
		if hex.EncodeToString(head[:]) == h.Hash {
			return nil, nil
		}
	default:
		got, err := entryHash(dir, h.Seq)
		if err != nil {
			return nil, err
		}
		if got != nil && hex.EncodeToString(got) == h.Hash {
			return nil, nil
		}
	}
	loss.FromSeq = h.Seq
	loss.Reason = fmt.Sprintf("the trail's entry at seq %d is not the one symbi recorded (trail replaced or rewritten)", h.Seq)
	return loss, nil
}
