package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

// Process is a running upstream command: its stdio carries MCP.
type Process interface {
	Stdin() io.WriteCloser
	Stdout() io.ReadCloser
	// Wait blocks until the process has exited and describes how it ended.
	Wait() error
	// Stop ends the process: stdin is closed first, then it is signalled, then killed.
	// It is idempotent and bounded by ctx.
	Stop(ctx context.Context) error
	// Tier names the sandbox tier the process runs in ("none" for a host process).
	Tier() string
}

// ProcessStats is one sample of a process's resource use.
type ProcessStats struct {
	CPUSeconds  float64
	MemoryBytes uint64
	MemoryLimit uint64
	ReadBytes   uint64
	WriteBytes  uint64
}

// StatsProcess is a Process that can report its resource use (the sandbox tiers).
type StatsProcess interface {
	Process
	Stats(ctx context.Context) (ProcessStats, error)
}

// Launcher starts an upstream's command, on the host or in a sandbox tier.
type Launcher func(ctx context.Context) (Process, error)

// StderrProcess is a Process that keeps the last lines its command wrote to stderr, so
// that a server which fails at start-up (an npx typo, a missing module) is explained in
// the error, the status tools, /readyz and `symbi doctor` instead of as an EOF.
type StderrProcess interface {
	Process
	StderrTail() *StderrTail
}

// Bounds of a StderrTail.
const (
	StderrLines    = 20  // lines kept
	StderrLineSize = 512 // bytes kept of one line
)

// StderrTail is a bounded ring of the last lines of a stream. The zero value is not
// usable; call NewStderrTail.
type StderrTail struct {
	mu    sync.Mutex
	lines []string // ring of at most StderrLines
	next  int      // where the next line goes once the ring is full
	total uint64   // lines added since the start
	done  chan struct{}
}

// NewStderrTail returns an empty tail.
func NewStderrTail() *StderrTail { return &StderrTail{done: make(chan struct{})} }

// Consume reads r to its end, keeping the last lines and handing each to each (which may
// be nil), then marks the tail drained. Lines longer than StderrLineSize are cut.
func (t *StderrTail) Consume(r io.Reader, each func(line string)) {
	defer close(t.done)
	br := bufio.NewReaderSize(r, StderrLineSize)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			full := err == nil
			s := strings.TrimRight(string(line), "\r\n")
			if err == bufio.ErrBufferFull { // an over-long line: keep its start, skip the rest
				s += "…"
				for err == bufio.ErrBufferFull {
					_, err = br.ReadSlice('\n')
				}
				full = err == nil
			}
			if strings.TrimSpace(s) != "" {
				t.add(s)
				if each != nil {
					each(s)
				}
			}
			if full {
				continue
			}
		}
		if err != nil {
			return
		}
	}
}

func (t *StderrTail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total++
	if len(t.lines) < StderrLines {
		t.lines = append(t.lines, s)
		return
	}
	t.lines[t.next] = s
	t.next = (t.next + 1) % StderrLines
}

// Lines returns the kept lines, oldest first.
func (t *StderrTail) Lines() []string {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines))
	out = append(out, t.lines[t.next:]...)
	return append(out, t.lines[:t.next]...)
}

// Since returns the kept lines numbered n and later (the first line written is 0), oldest
// first, and the number of the next line to come: a follower passes it back to get only
// what is new. Lines that have already left the ring are skipped.
func (t *StderrTail) Since(n uint64) (lines []string, next uint64) {
	if t == nil {
		return nil, n
	}
	t.mu.Lock()
	all := append(slices.Clone(t.lines[t.next:]), t.lines[:t.next]...)
	total := t.total
	t.mu.Unlock()
	first := total - uint64(len(all)) // the number of all[0]
	if n < first {
		n = first
	}
	if n > total {
		return nil, total
	}
	return all[n-first:], total
}

// Drained returns the kept lines once the stream has ended, or those kept so far when ctx
// ends first (a grandchild may hold stderr open after the process exits).
func (t *StderrTail) Drained(ctx context.Context) []string {
	if t == nil {
		return nil
	}
	select {
	case <-t.done:
	case <-ctx.Done():
	}
	return t.Lines()
}

// withStderr adds the last lines of a process's stderr to err, so the reason a server
// failed is in the error itself.
func withStderr(err error, lines []string) error {
	if err == nil || len(lines) == 0 {
		return err
	}
	const shown = 5
	if len(lines) > shown {
		lines = lines[len(lines)-shown:]
	}
	return fmt.Errorf("%w; stderr: %s", err, strings.Join(lines, " | "))
}
