package audit

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const crashWriterEnv = "SYMBI_AUDIT_CRASH_WRITER_DIR"

// TestMain lets the test binary double as a writer process that the crash test kills.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashWriterEnv); dir != "" {
		crashWriter(dir)
		return
	}
	os.Exit(m.Run())
}

// crashWriter appends as fast as it can until it is killed, with small segments so a
// kill can land in a rotation too.
func crashWriter(dir string) {
	l, err := Open(&Options{Dir: dir, KeyPath: filepath.Join(filepath.Dir(dir), KeyFileName),
		SegmentMaxBytes: 64 << 10, FsyncMaxEntries: 50, FsyncMaxDelay: time.Millisecond})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(3)
	}
	ctx := context.Background()
	for i := 0; ; i++ {
		if err := l.Append(ctx, callEvent(i)); err != nil {
			continue
		}
		if i == 200 {
			l.Flush(ctx)
			os.Stdout.WriteString("ready\n")
		}
	}
}

func TestTornLastLineRecovered(t *testing.T) {
	l, dir := openTest(t, nil)
	appendN(t, l, 20)
	l.Close()
	seg := filepath.Join(dir, segmentName(1))
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	torn := []byte(`{"seq":22,"prev_hash":"00`)
	f.Write(torn)
	f.Close()
	if rep := mustVerify(t, dir, trustedKey(t, dir)); rep.Intact || rep.Problem.Kind != ProblemTorn {
		t.Fatalf("torn trail: want ProblemTorn, got %+v", rep.Problem)
	}

	l2, _ := openTest(t, &Options{Dir: dir})
	rec := l2.Recovery()
	if rec == nil || rec.BytesDropped != int64(len(torn)) {
		t.Fatalf("Recovery = %+v, want %d bytes dropped", rec, len(torn))
	}
	saved, err := os.ReadFile(filepath.Join(dir, rec.SavedAs))
	if err != nil || !bytes.Equal(saved, torn) {
		t.Errorf("torn bytes kept aside = %q, %v", saved, err)
	}
	appendN(t, l2, 5)
	l2.Close()
	rep := mustVerify(t, dir, trustedKey(t, dir))
	if !rep.Intact {
		t.Fatalf("after recovery: %v", rep.Problem)
	}
	recs, _ := Query(context.Background(), dir, Filter{Type: TypeRecovered})
	if len(recs) != 1 || recs[0].Event.Detail["bytes_dropped"] != "25" {
		t.Errorf("recovery notice = %+v", recs)
	}
}

func TestTruncationNoticedAtOpen(t *testing.T) {
	l, dir := openTest(t, nil)
	appendN(t, l, 10)
	l.Close()
	seg := filepath.Join(dir, segmentName(1))
	b, _ := os.ReadFile(seg)
	lines := bytes.SplitAfter(b, []byte("\n"))
	os.WriteFile(seg, bytes.Join(lines[:8], nil), 0o600) // cut 3 whole entries
	l2, _ := openTest(t, &Options{Dir: dir})
	l2.Close()
	recs, _ := Query(context.Background(), dir, Filter{Type: TypeTruncationDetected})
	if len(recs) != 1 || recs[0].Event.Detail["checkpoint_seq"] != "11" || recs[0].Event.Detail["trail_seq"] != "8" {
		t.Fatalf("truncation notice = %+v", recs)
	}
}

func TestWrongKeyRefusesToOpen(t *testing.T) {
	l, dir := openTest(t, nil)
	l.Close()
	os.Remove(filepath.Join(filepath.Dir(dir), KeyFileName)) // key lost: a new one would be generated
	_, err := Open(&Options{Dir: dir, KeyPath: filepath.Join(filepath.Dir(dir), KeyFileName)})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Open with a different key = %v, want a key mismatch error", err)
	}
}

// TestKillDashNine kills a writer process mid-write, then reopens, appends and verifies.
func TestKillDashNine(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a writer process")
	}
	for round := 0; round < 3; round++ {
		dir := filepath.Join(t.TempDir(), "audit")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashWriterEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			s := bufio.NewScanner(out)
			ready <- s.Scan() && s.Text() == "ready"
		}()
		select {
		case ok := <-ready:
			if !ok {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("writer did not start: %s", stderr.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("writer not ready in time")
		}
		time.Sleep(time.Duration(20+round*37) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		cmd.Wait()

		l, err := Open(&Options{Dir: dir, KeyPath: filepath.Join(filepath.Dir(dir), KeyFileName)})
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		appendN(t, l, 10)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		rep := mustVerify(t, dir, trustedKey(t, dir))
		if !rep.Intact {
			t.Fatalf("round %d: after kill -9 and reopen: %v", round, rep.Problem)
		}
		t.Logf("round %d: %d entries in %d segments survived; torn tail recovered: %v", round, rep.Entries, rep.Segments, l.Recovery() != nil)
	}
}
