package audit

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerifyLine feeds arbitrary bytes to the line reader and the chain checks: nothing
// may panic, and a line accepted as canonical must re-encode to itself.
func FuzzVerifyLine(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "audit")
	l, err := Open(&Options{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	appendN(f, l, 3)
	l.Close()
	b, _ := os.ReadFile(filepath.Join(dir, segmentName(1)))
	for _, line := range bytes.Split(b, []byte("\n")) {
		f.Add(line)
	}
	f.Add([]byte(`{"seq":1}`))
	f.Add([]byte(`{"seq":1,"seq":2,"event":{}}`))
	f.Add([]byte(`null`))
	f.Add([]byte("{\"seq\":18446744073709551615,\"event\":[]}"))
	pub, _, _ := ed25519.GenerateKey(nil)
	f.Fuzz(func(t *testing.T, line []byte) {
		p, err := parseLine(line)
		if err != nil {
			return
		}
		again := appendLine(nil, p.canonical, p.hash, p.sig)
		if !bytes.Equal(again[:len(again)-1], line) {
			t.Fatalf("accepted line does not re-encode to itself:\n%q\n%q", line, again)
		}
		_, _ = p.record("x", 1)
		_ = headKeyID(p)
		// Run the whole verifier over a one-line trail.
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, segmentName(p.header.Seq)), append(line, '\n'), 0o600)
		rep, err := Verify(d, pub)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Intact {
			t.Fatal("a fuzzed line verified under an unrelated key")
		}
	})
}
