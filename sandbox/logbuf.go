package sandbox

import (
	"io"
	"sync"
)

// stderrLimit bounds the unread stderr kept per process.
const stderrLimit = 64 << 10

// logBuffer is an in-memory pipe that never blocks its writer: when more than limit bytes
// are unread, the oldest are dropped. Readers block until data arrives or it is closed.
type logBuffer struct {
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	limit   int
	dropped int64
	closed  bool
}

func newLogBuffer(limit int) *logBuffer {
	b := &logBuffer{limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, io.ErrClosedPipe
	}
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.limit; over > 0 {
		b.dropped += int64(over)
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	b.cond.Broadcast()
	return len(p), nil
}

func (b *logBuffer) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 && !b.closed {
		b.cond.Wait()
	}
	if len(b.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.buf = append(b.buf[:0], b.buf[n:]...)
	return n, nil
}

// Close ends the stream: readers get the rest, then io.EOF. Idempotent.
func (b *logBuffer) Close() error {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}
