package audit

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// CheckpointFile is the signed head checkpoint kept beside the segments.
const CheckpointFile = "head.json"

// Checkpoint names the last durable entry of a trail (its seq and hash), signed by the
// key that was current then. A trail that ends before the checkpoint was truncated.
type Checkpoint struct {
	Seq     uint64    `json:"seq"`
	Hash    string    `json:"hash"`
	Segment string    `json:"segment"`
	Key     string    `json:"key"`
	Time    time.Time `json:"time"`
	Sig     string    `json:"sig"`
}

func (c *Checkpoint) signedBytes() []byte {
	b := []byte(`{"seq":`)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = append(b, `,"hash":`...)
	b = strconv.AppendQuote(b, c.Hash)
	b = append(b, `,"segment":`...)
	b = strconv.AppendQuote(b, c.Segment)
	b = append(b, `,"key":`...)
	b = strconv.AppendQuote(b, c.Key)
	b = append(b, `,"time":`...)
	b = strconv.AppendQuote(b, c.Time.UTC().Format(time.RFC3339Nano))
	return append(b, '}')
}

func (c *Checkpoint) sign(priv ed25519.PrivateKey) {
	c.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, c.signedBytes()))
}

func (c *Checkpoint) verify(pub ed25519.PublicKey) bool {
	sig, err := base64.StdEncoding.DecodeString(c.Sig)
	return err == nil && ed25519.Verify(pub, c.signedBytes(), sig)
}

func writeCheckpoint(dir string, c *Checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CheckpointFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

// readCheckpoint returns nil, nil when there is no checkpoint.
func readCheckpoint(dir string) (*Checkpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, CheckpointFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode checkpoint: %w", err)
	}
	return &c, nil
}
