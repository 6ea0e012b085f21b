package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// listSegments returns the segment file names in dir, oldest first.
func listSegments(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list audit segments: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && validSegmentName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// lastGoodLine finds the end of the last complete, well-formed line in data. Bytes after
// it are a torn write (or garbage a crash left behind).
func lastGoodLine(data []byte) (end int, line []byte, p *parsedLine) {
	end = len(data)
	for end > 0 {
		if data[end-1] != '\n' {
			end = bytes.LastIndexByte(data[:end], '\n') + 1
			continue
		}
		start := bytes.LastIndexByte(data[:end-1], '\n') + 1
		if pl, err := parseLine(data[start : end-1]); err == nil {
			return end, data[start : end-1], pl
		}
		end = start
	}
	return 0, nil, nil
}

// headKeyID is the key that signs the entry after p: the new key after a rotation.
func headKeyID(p *parsedLine) string {
	if bytes.Contains(p.event, []byte(`"type":"key.rotated"`)) {
		var ev struct {
			Type      Type   `json:"type"`
			PublicKey string `json:"public_key"`
		}
		if json.Unmarshal(p.event, &ev) == nil && ev.Type == TypeKeyRotated {
			if pub, err := decodePublicKey(ev.PublicKey); err == nil {
				return KeyID(pub)
			}
		}
	}
	return p.header.Key
}

// openTail repairs the tail of the trail and positions the writer after its last entry.
// It returns notice events to append (recovery, truncation detected).
func (l *Log) openTail() ([]Event, error) {
	dir := l.opts.Dir
	if tmps, _ := filepath.Glob(filepath.Join(dir, "."+CheckpointFile+".tmp*")); len(tmps) > 0 {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	others, err := Writers(l.root)
	if err != nil {
		return nil, err
	}
	shared := l.writer != MainWriter || len(others) > 0
	var notices []Event
	var head *parsedLine
	for len(segs) > 0 {
		name := segs[len(segs)-1]
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read audit segment: %w", err)
		}
		end, _, p := lastGoodLine(data)
		if end < len(data) {
			n, err := l.repairTail(path, data, end)
			if err != nil {
				return nil, err
			}
			notices = append(notices, n)
		}
		if p == nil {
			// Empty segment (created just before a crash, or all of it torn): drop it.
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("remove empty audit segment: %w", err)
			}
			segs = segs[:len(segs)-1]
			continue
		}
		head = p
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return nil, fmt.Errorf("open audit segment: %w", err)
		}
		l.seg, l.segName, l.segSize, l.segEntries, l.segOpened = f, name, int64(end), 1, l.opts.Now()
		if len(segs) > 1 {
			l.prevSegName = segs[len(segs)-2]
		}
		break
	}
	next := l.opts.KeyPath + ".next"
	if head != nil {
		l.seq, l.head = head.header.Seq, head.hash
		if head.sig == nil {
			// A crash left entries that a later signature was to cover: cover them now.
			notices = append(notices, Event{Type: TypeRecovered, Outcome: OutcomeOK,
				Reason: "entries after the last signature sealed after a crash",
				Detail: map[string]string{"unsigned_through_seq": strconv.FormatUint(head.header.Seq, 10)}})
		} else {
			l.lastSigned = head.header.Seq
		}
		want := headKeyID(head)
		if l.next != nil && want == KeyID(l.next.Public().(ed25519.PublicKey)) {
			// RotateKeyAll resumes a rotation this chain already took part in.
			l.setKey(l.next)
		}
		if want != l.kid && shared {
			l.closeFiles()
			return nil, fmt.Errorf("open audit log: writer %s: signing key %s does not match key %s of the chain head: "+
				"a key rotation of several writers' chains was interrupted; run `symbi audit rotate-key` to complete it", l.writer, l.kid, want)
		}
		if want != l.kid {
			if b, err := os.ReadFile(next); err == nil {
				if priv, err := parsePrivateKey(b); err == nil && KeyID(priv.Public().(ed25519.PublicKey)) == want {
					// A rotation entry was written but the crash came before the key moved.
					l.promoteKey(priv, true)
					if p := l.broken.Load(); p != nil {
						l.closeFiles()
						return nil, *p
					}
				}
			}
		}
		if want != l.kid {
			l.closeFiles()
			return nil, fmt.Errorf("open audit log: signing key %s does not match key %s of the trail head; restore the key or move the trail aside", l.kid, want)
		}
	}
	if !shared && l.next == nil {
		// Left by a rotation that crashed before its entry was written. With several
		// chains only RotateKeyAll removes it: it may still have chains to rotate.
		os.Remove(next)
	}
	cp, err := readCheckpoint(dir)
	if err != nil {
		l.log.Error("audit checkpoint unreadable", "err", err)
		notices = append(notices, Event{Type: TypeTruncationDetected, Outcome: OutcomeInvalid,
			Reason: "head checkpoint unreadable", Detail: map[string]string{"error": err.Error()}})
	} else if cp != nil {
		hash := hex.EncodeToString(l.head[:])
		if cp.Seq > l.seq || (cp.Seq == l.seq && cp.Hash != hash) {
			l.log.Error("audit trail shorter than its checkpoint", "checkpoint_seq", cp.Seq, "trail_seq", l.seq)
			notices = append(notices, Event{Type: TypeTruncationDetected, Outcome: OutcomeInvalid,
				Reason: "trail ends before the signed head checkpoint",
				Detail: map[string]string{"checkpoint_seq": strconv.FormatUint(cp.Seq, 10),
					"checkpoint_hash": cp.Hash, "trail_seq": strconv.FormatUint(l.seq, 10), "trail_hash": hash}})
		} else if cp.Seq == l.seq {
			l.cpSeq = cp.Seq
		}
	}
	return notices, nil
}

// repairTail cuts the torn bytes after end, keeping them in a side file as evidence.
func (l *Log) repairTail(path string, data []byte, end int) (Event, error) {
	dropped := data[end:]
	sum := sha256.Sum256(dropped)
	saved := path + ".torn-" + strconv.FormatInt(l.opts.Now().Unix(), 10)
	if err := os.WriteFile(saved, dropped, 0o600); err != nil {
		return Event{}, fmt.Errorf("save torn audit tail: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return Event{}, fmt.Errorf("open audit segment: %w", err)
	}
	err = f.Truncate(int64(end))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Event{}, fmt.Errorf("truncate torn audit tail: %w", err)
	}
	l.recovery = &Recovery{File: filepath.Base(path), BytesDropped: int64(len(dropped)),
		DroppedSHA: hex.EncodeToString(sum[:]), SavedAs: filepath.Base(saved)}
	l.log.Warn("audit torn tail recovered", "file", l.recovery.File, "bytes_dropped", len(dropped), "saved_as", l.recovery.SavedAs)
	return Event{Type: TypeRecovered, Outcome: OutcomeOK, Reason: "torn last line after a crash cut and kept aside",
		Detail: map[string]string{"file": l.recovery.File, "bytes_dropped": strconv.Itoa(len(dropped)),
			"dropped_sha256": l.recovery.DroppedSHA, "saved_as": l.recovery.SavedAs}}, nil
}
