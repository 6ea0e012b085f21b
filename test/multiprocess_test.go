package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/symbi-dev/symbi/audit"
)

// TestTwoMCPProcessesOneConfig: an IDE with two windows starts `symbi mcp` twice with
// one configuration, on a data_dir neither has used before. Both start (agreeing on one
// signing key), serve their client side by side, and each records into a chain of its
// own in the one trail; `symbi audit verify` checks both chains, counts every event, and
// names the writer when one chain loses its newest entries.
func TestTwoMCPProcessesOneConfig(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	const calls = 8

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sessions := make([]*mcp.ClientSession, 2)
	var wg sync.WaitGroup
	for i := range sessions {
		wg.Go(func() { // both processes start at the same time on a fresh data_dir
			c := mcp.NewClient(&mcp.Implementation{Name: fmt.Sprint("window-", i), Version: "1"}, nil)
			cs, err := c.Connect(ctx, stdioTransport(t, cfg), nil)
			if err != nil {
				t.Errorf("symbi mcp %d: connect: %v", i, err)
				return
			}
			sessions[i] = cs
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for i, cs := range sessions {
		wg.Go(func() { // both serve at the same time
			for n := range calls {
				msg := fmt.Sprintf("window %d call %d", i, n)
				text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": msg})
				if isErr || !strings.Contains(text, msg) {
					t.Errorf("window %d call %d: %q (error %v)", i, n, text, isErr)
				}
			}
			if _, isErr := callText(t, cs, "symbi__status", map[string]any{}); isErr {
				t.Errorf("window %d: symbi__status failed", i)
			}
		})
	}
	wg.Wait()
	for _, cs := range sessions {
		if err := cs.Close(); err != nil {
			t.Logf("close: %v", err)
		}
	}

	out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir, "--json")
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("verify --json: %v\n%s%s", err, out, stderr)
	}
	if code != 0 || !rep.Intact {
		t.Fatalf("audit verify after two processes: exit %d, problem %v\n%s", code, rep.Problem, stderr)
	}
	if len(rep.Writers) != 1 || rep.Writers[0].Writer != "w1" || !rep.Anchored || !rep.Writers[0].Anchored {
		t.Fatalf("verify report: anchored %v, writers %+v; want the main chain and w1, both anchored", rep.Anchored, rep.Writers)
	}
	recs, err := audit.Query(context.Background(), auditDir, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(recs)) != rep.TotalEntries() {
		t.Errorf("verify counted %d entries; the trail holds %d", rep.TotalEntries(), len(recs))
	}
	echoes := map[string]map[string]bool{} // writer -> messages
	for _, r := range recs {
		if r.Event.Type != audit.TypeCall || r.Event.Tool != "mg__echo" {
			continue
		}
		w := r.Writer
		if w == "" {
			w = audit.MainWriter
		}
		if echoes[w] == nil {
			echoes[w] = map[string]bool{}
		}
		echoes[w][r.Event.ID] = true
	}
	if len(echoes[audit.MainWriter]) != calls || len(echoes["w1"]) != calls {
		t.Errorf("call events per writer: main %d, w1 %d; want %d each", len(echoes[audit.MainWriter]), len(echoes["w1"]), calls)
	}
	text, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir)
	if code != 0 || !strings.Contains(text, fmt.Sprintf("intact: %d entries in 2 writers' chains", len(recs))) || !strings.Contains(text, "writer w1: intact") {
		t.Errorf("audit verify: exit %d\n%s%s", code, text, stderr)
	}

	// The second window's newest entries go: verify names its chain.
	w1 := audit.WriterDir(auditDir, "w1")
	segs, _ := filepath.Glob(filepath.Join(w1, "seg-*.jsonl"))
	if len(segs) == 0 {
		t.Fatal("no segment in w1")
	}
	b, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if err := os.WriteFile(segs[len(segs)-1], []byte(strings.Join(lines[:len(lines)-4], "")), 0o600); err != nil {
		t.Fatal(err)
	}
	text, stderr, code = runCLI(t, "audit", "verify", "--dir", auditDir)
	if code != 1 || !strings.Contains(text, "NOT INTACT: writer w1: ") {
		t.Errorf("audit verify after cutting w1's last lines: exit %d\n%s%s", code, text, stderr)
	}
}

// TestMCPProcessKilledWhileAnotherServes: one of two `symbi mcp` on one config is
// killed (SIGKILL) while the other serves on. Its chain just ends: the trail verifies
// while the other still runs and after; the next `symbi mcp` takes the dead one's writer
// slot and continues that chain.
func TestMCPProcessKilledWhileAnotherServes(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := func(name string) (*mcp.ClientSession, *exec.Cmd) {
		cmd := exec.Command(symbiBin(t), "mcp", "--config", cfg)
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s stderr:\n%s", name, stderr.String())
			}
		})
		c := mcp.NewClient(&mcp.Implementation{Name: name, Version: "1"}, nil)
		cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatalf("%s: connect: %v", name, err)
		}
		return cs, cmd
	}
	echo := func(cs *mcp.ClientSession, msg string) {
		if text, isErr := callText(t, cs, "mg__echo", map[string]any{"message": msg}); isErr || !strings.Contains(text, msg) {
			t.Fatalf("echo %q: %q (error %v)", msg, text, isErr)
		}
	}
	first, _ := start("first")
	echo(first, "first before")
	second, secondCmd := start("second")
	echo(second, "second before")
	// Kill it once its call is in its chain (an event still queued in memory dies with
	// the process; that is not what this test is about).
	w1Echoes := func() int {
		recs, err := audit.Query(context.Background(), auditDir, audit.Filter{Type: audit.TypeCall, Tool: "mg__echo"})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range recs {
			if r.Writer == "w1" {
				n++
			}
		}
		return n
	}
	waitFor(t, 10*time.Second, "the second process's call in its chain", func() bool { return w1Echoes() == 1 })
	if err := secondCmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = second.Close()
	echo(first, "first after the kill")

	verify := func(when string) audit.Report {
		out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir, "--json")
		var rep audit.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("verify --json %s: %v\n%s%s", when, err, out, stderr)
		}
		if code != 0 || !rep.Intact {
			t.Fatalf("audit verify %s: exit %d, problem %v\n%s", when, code, rep.Problem, stderr)
		}
		return rep
	}
	// The first process's last call may still sit in its fsync window; what is
	// durable verifies.
	verify("while the first process still serves")

	third, _ := start("third")
	echo(third, "third")
	_ = third.Close()
	_ = first.Close()
	rep := verify("after the third process took the dead writer's slot")
	if len(rep.Writers) != 1 || rep.Writers[0].Writer != "w1" {
		t.Fatalf("writers %+v; want only w1 (the third process continued the dead one's chain)", rep.Writers)
	}
	if n := w1Echoes(); n != 2 {
		t.Errorf("w1 chain holds %d echo calls; want the killed process's and the third's", n)
	}
}
