package bus

import (
	"context"
	"fmt"
	"sync"
)

// maxGroup bounds the messages one group commit stores.
const maxGroup = 256

// grouper stores messages sent outside a transaction (Send) in group commits: one
// goroutine takes every message queued meanwhile into one transaction, so that
// concurrent senders share a commit. A sender returns once its message is committed:
// durability is what it was with a commit of its own.
type grouper struct {
	b *Bus

	mu     sync.Mutex
	queue  []*groupInsert
	closed bool
	wake   chan struct{} // a message was queued, or the grouper is closing
	done   chan struct{}
}

type groupInsert struct {
	args []any
	err  chan error
}

func newGrouper(b *Bus) *grouper {
	g := &grouper{b: b, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go g.run()
	return g
}

// insert stores one message (qInsertMessage's arguments) and waits for its commit.
func (g *grouper) insert(args []any) error {
	in := &groupInsert{args: args, err: make(chan error, 1)}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	g.queue = append(g.queue, in)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return <-in.err
}

func (g *grouper) run() {
	defer close(g.done)
	for {
		<-g.wake
		for {
			g.mu.Lock()
			n := min(len(g.queue), maxGroup)
			batch := g.queue[:n:n]
			g.queue = g.queue[n:]
			closed := g.closed
			g.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			g.commit(batch)
		}
	}
}

// commit stores batch in one transaction; when that fails, each message alone, so that
// one bad message fails only its sender.
func (g *grouper) commit(batch []*groupInsert) {
	err := g.store(batch)
	if err == nil || len(batch) == 1 {
		for _, in := range batch {
			in.err <- err
		}
		return
	}
	for _, in := range batch {
		in.err <- g.store([]*groupInsert{in})
	}
}

func (g *grouper) store(batch []*groupInsert) error {
	ctx := context.Background()
	tx, err := g.b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store messages: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, in := range batch {
		if _, err := g.b.x(tx).ExecContext(ctx, qInsertMessage, in.args...); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store messages: %w", err)
	}
	return nil
}

// close stores what is queued, refuses what comes later and waits for the goroutine.
func (g *grouper) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	<-g.done
}
