package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Several processes may write one trail (two `symbi mcp` started by an IDE with one
// configuration). Each process is one writer with a hash chain of its own; a chain is
// never shared, so no two processes ever append to one chain.
//
// The main chain is the one a single process has always written: segments and head.json
// in the trail directory itself, its anchor at Options.AnchorPath. A process that finds
// the main chain held by another one takes the lowest free writer slot instead:
// DIR/writers/wN (a complete chain of its own: genesis, segments, head.json) with its
// anchor beside the main one (AnchorPathFor). Every chain is signed with the same key.
//
// A slot is held with a flock for the process's lifetime, so the writer id is stable
// while the process lives. When a process ends (even killed), its chain simply stops:
// it is as complete as its last durable checkpoint, which is not a problem to Verify.
// The next process that needs a slot takes the lowest free one and continues that
// chain, with every check of a restart (torn tail, anchor head, recorded losses).

// MainWriter names the chain kept in the trail directory itself.
const MainWriter = "main"

// WritersDir is the subdirectory of a trail that holds the other writers' chains.
const WritersDir = "writers"

// maxWriters bounds the writer slots; a process beyond it is refused with ErrLocked.
const maxWriters = 64

// WriterDir is the directory of writer w's chain in the trail dir.
func WriterDir(dir, w string) string {
	if w == MainWriter || w == "" {
		return dir
	}
	return filepath.Join(dir, WritersDir, w)
}

// AnchorPathFor is where writer w keeps its anchor, given the main chain's anchor path:
// audit_anchor.json becomes audit_anchor.w1.json.
func AnchorPathFor(anchorPath, w string) string {
	if w == MainWriter || w == "" || anchorPath == "" {
		return anchorPath
	}
	ext := filepath.Ext(anchorPath)
	return strings.TrimSuffix(anchorPath, ext) + "." + w + ext
}

// recWriter is the writer as records name it: "" for the main chain.
func (l *Log) recWriter() string {
	if l.writer == MainWriter {
		return ""
	}
	return l.writer
}

func slotName(i int) string { return "w" + strconv.Itoa(i) }

// validWriter reports whether s is a writer slot name (w1 .. w<maxWriters>).
func validWriter(s string) bool {
	if len(s) < 2 || s[0] != 'w' || s[1] == '0' {
		return false
	}
	n, err := strconv.Atoi(s[1:])
	return err == nil && n >= 1 && n <= maxWriters && slotName(n) == s
}

// sortWriters orders slot names by number (w2 before w10).
func sortWriters(ws []string) {
	sort.Slice(ws, func(i, j int) bool {
		a, _ := strconv.Atoi(ws[i][1:])
		b, _ := strconv.Atoi(ws[j][1:])
		return a < b
	})
}

// Writers lists the writer slots (besides the main chain) whose directory exists in the
// trail dir, in slot order.
func Writers(dir string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, WritersDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list audit writers: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && validWriter(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sortWriters(out)
	return out, nil
}

// anchoredWriters lists the writer slots that have an anchor beside anchorPath.
func anchoredWriters(anchorPath string) ([]string, error) {
	if anchorPath == "" {
		return nil, nil
	}
	ext := filepath.Ext(anchorPath)
	prefix := strings.TrimSuffix(filepath.Base(anchorPath), ext) + "."
	ents, err := os.ReadDir(filepath.Dir(anchorPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list audit anchors: %w", err)
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, ext) {
			continue
		}
		if w := strings.TrimSuffix(strings.TrimPrefix(name, prefix), ext); validWriter(w) {
			out = append(out, w)
		}
	}
	sortWriters(out)
	return out, nil
}

// ReadAnchors reads the main anchor at path and the anchors of the other writers beside
// it (keyed by writer). A missing main anchor is nil.
func ReadAnchors(path string) (*Anchor, map[string]*Anchor, error) {
	a, err := ReadAnchor(path)
	if err != nil {
		return nil, nil, err
	}
	ws, err := anchoredWriters(path)
	if err != nil {
		return nil, nil, err
	}
	others := map[string]*Anchor{}
	for _, w := range ws {
		wa, err := ReadAnchor(AnchorPathFor(path, w))
		if err != nil {
			return nil, nil, fmt.Errorf("writer %s: %w", w, err)
		}
		if wa != nil {
			others[w] = wa
		}
	}
	return a, others, nil
}

// claimWriter takes the main chain's lock, or when another process holds it (and
// exclusive is false) the lowest free writer slot. It returns the lock and the writer.
func claimWriter(dir string, exclusive bool) (*os.File, string, error) {
	lock, err := lockDir(dir)
	if err == nil {
		return lock, MainWriter, nil
	}
	if exclusive || !errors.Is(err, ErrLocked) {
		return nil, "", err
	}
	for i := 1; i <= maxWriters; i++ {
		w := slotName(i)
		d := WriterDir(dir, w)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, "", fmt.Errorf("create audit writer dir: %w", err)
		}
		lock, err := lockDir(d)
		if err == nil {
			return lock, w, nil
		}
		if !errors.Is(err, ErrLocked) {
			return nil, "", err
		}
	}
	return nil, "", fmt.Errorf("open audit trail %s: all %d writer slots are held: %w", dir, maxWriters, ErrLocked)
}

// RotateKeyAll rotates the signing key of every chain in the trail (the main one and
// each writer slot's) to one new key: each chain records a key.rotated entry signed by
// the old key, each anchor pins the new key before it signs, and the key file moves to
// the new key once every chain has rotated. It needs every chain free (ErrLocked when a
// process writes one). An interrupted run leaves the new key at KeyPath.next; running
// it again completes the rotation with that key. It returns the old and new key ids.
func RotateKeyAll(ctx context.Context, opts *Options) (oldID, newID string, err error) {
	o := opts.withDefaults()
	if o.Dir == "" {
		return "", "", errors.New("rotate audit key: no dir")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create audit dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.KeyPath), 0o700); err != nil {
		return "", "", fmt.Errorf("create key dir: %w", err)
	}
	ws, err := Writers(o.Dir)
	if err != nil {
		return "", "", err
	}
	ws = append([]string{MainWriter}, ws...)
	locks := make([]*os.File, 0, len(ws))
	defer func() {
		for _, l := range locks {
			l.Close()
		}
	}()
	for _, w := range ws {
		lock, err := lockDir(WriterDir(o.Dir, w))
		if err != nil {
			return "", "", fmt.Errorf("rotate audit key: writer %s: %w", w, err)
		}
		locks = append(locks, lock)
	}
	nextPath := o.KeyPath + ".next"
	var next ed25519.PrivateKey
	if b, err := os.ReadFile(nextPath); err == nil {
		if next, err = parsePrivateKey(b); err != nil {
			return "", "", fmt.Errorf("rotate audit key: unfinished rotation's key %s: %w", nextPath, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("rotate audit key: %w", err)
	} else {
		if _, next, err = ed25519.GenerateKey(nil); err != nil {
			return "", "", fmt.Errorf("generate audit key: %w", err)
		}
		if err := writePrivateKey(nextPath, next); err != nil {
			return "", "", err
		}
	}
	nextPub := next.Public().(ed25519.PublicKey)
	newID = KeyID(nextPub)
	logs := make([]*Log, 0, len(ws))
	defer func() {
		for _, l := range logs {
			if cerr := l.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("rotate audit key: writer %s: %w", l.writer, cerr)
			}
		}
	}()
	for i, w := range ws {
		l, err := openChain(o, locks[i], w, next)
		locks[i] = nil // openChain owns it now
		if err != nil {
			return "", "", fmt.Errorf("rotate audit key: writer %s: %w", w, err)
		}
		logs = append(logs, l)
	}
	locks = nil
	for _, l := range logs {
		if l.kid != newID {
			oldID = l.kid
		}
	}
	for _, l := range logs {
		if l.kid == newID {
			continue // rotated by an interrupted run
		}
		if l.anchor != nil {
			l.anchorMu.Lock()
			l.anchor.pin(nextPub, l.opts.Now())
			err := writeAnchor(l.opts.AnchorPath, l.anchor)
			l.anchorMu.Unlock()
			if err != nil {
				return "", "", fmt.Errorf("rotate audit key: writer %s: %w", l.writer, err)
			}
		}
		if err := l.control(ctx, item{kind: kindRotate, newKey: next, keep: true}); err != nil {
			return "", "", fmt.Errorf("rotate audit key: writer %s: %w", l.writer, err)
		}
	}
	if err := installKey(o.KeyPath, next); err != nil {
		return "", "", err
	}
	if oldID == "" {
		oldID = newID
	}
	return oldID, newID, nil
}

// sealDead finishes the chains of writers whose process died in the middle of a write:
// a chain whose slot nobody holds and whose last line is torn, or not yet covered by a
// signature, is opened and closed once (the repair of a restart, recorded in that
// chain), so that a crash of one process does not read as damage while the others run
// on. Chains that ended cleanly are not touched. Errors are logged: they do not keep
// this process from writing its own chain.
func (l *Log) sealDead(o Options) {
	ws, err := Writers(l.root)
	if err != nil {
		l.log.Warn("audit: list writers", "err", err)
		return
	}
	for _, w := range append([]string{MainWriter}, ws...) {
		if w == l.writer || !tailUnsealed(WriterDir(l.root, w)) {
			continue
		}
		lock, err := lockDir(WriterDir(l.root, w))
		if err != nil {
			continue // its process lives (or just took the slot): it repairs its own chain
		}
		o := o
		o.Dir, o.AnchorPath, o.Sinks = l.root, l.mainAnchor, nil
		o.Logger = l.opts.Logger
		dead, err := openChain(o, lock, w, nil)
		if err == nil {
			err = dead.Close()
		}
		if err != nil {
			l.log.Error("audit: sealing the chain of a writer that died failed", "writer", w, "err", err)
			continue
		}
		l.log.Warn("audit: sealed the chain of a writer whose process died mid-write", "writer", w)
	}
}

// tailUnsealed reports whether the chain in dir ends in a torn line or in entries no
// signature covers yet. It reads only the end of the last segment.
func tailUnsealed(dir string) bool {
	segs, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		return false
	}
	f, err := os.Open(filepath.Join(dir, segs[len(segs)-1]))
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return err == nil
	}
	const window = 256 << 10
	off := max(st.Size()-window, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return false
	}
	if buf[len(buf)-1] != '\n' {
		return true
	}
	start := bytes.LastIndexByte(buf[:len(buf)-1], '\n') + 1
	if start == 0 && off > 0 {
		return false // a line longer than the window: leave it to the next restart
	}
	p, err := parseLine(buf[start : len(buf)-1])
	return err != nil || p.sig == nil
}
