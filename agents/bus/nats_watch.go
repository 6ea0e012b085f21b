package bus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// An identity's queue on NATS is kept in memory, current, by a JetStream watcher on
// its keys, started by the first receive (or listing) of that identity in this process:
// a receive reads the copy instead of listing the queue from JetStream each time. To see
// every message committed before it started (by this process or another), a receive
// asks the stream for the last sequence stored under the identity's keys (one small
// request) and waits until the watcher has passed it.

// queueWatch is one identity's queue, as its watcher has seen it.
type queueWatch struct {
	mu      sync.Mutex
	entries map[string]jetstream.KeyValueEntry // key -> latest value
	seen    uint64                             // the highest revision delivered
	ready   bool                               // the initial values are in
	changed chan struct{}                      // closed (and replaced) on every update
	err     error                              // the watcher stopped
	stop    context.CancelFunc                 // stops the watcher
}

// watchQueue returns identity's queue watch, starting it on first use.
func (nb *natsBackend) watchQueue(identity string) (*queueWatch, error) {
	nb.wmu.Lock()
	defer nb.wmu.Unlock()
	if q, ok := nb.queues[identity]; ok {
		return q, nil
	}
	if nb.wclosed {
		return nil, ErrClosed
	}
	wctx, stop := context.WithCancel(nb.wctx)
	w, err := nb.msgs.Watch(wctx, token(identity)+".*")
	if err != nil {
		stop()
		return nil, err
	}
	q := &queueWatch{entries: map[string]jetstream.KeyValueEntry{}, changed: make(chan struct{}), stop: stop}
	nb.queues[identity] = q
	nb.wg.Go(func() {
		defer stop()
		defer func() { _ = w.Stop() }()
		for e := range w.Updates() {
			q.mu.Lock()
			if e == nil {
				q.ready = true
			} else {
				if e.Operation() == jetstream.KeyValuePut {
					q.entries[e.Key()] = e
				} else {
					delete(q.entries, e.Key())
				}
				q.seen = max(q.seen, e.Revision())
			}
			close(q.changed)
			q.changed = make(chan struct{})
			q.mu.Unlock()
		}
		q.mu.Lock()
		q.err = errors.New("queue watcher stopped")
		close(q.changed)
		q.changed = make(chan struct{})
		q.mu.Unlock()
		nb.wmu.Lock()
		if nb.queues[identity] == q {
			delete(nb.queues, identity)
		}
		nb.wmu.Unlock()
	})
	return q, nil
}

// natsCurrentWait bounds how long a receive waits for its watcher to catch up; a
// watcher that has not by then (it lost its consumer in a server outage) is replaced
// and the queue listed from JetStream instead.
const natsCurrentWait = 2 * time.Second

// current returns identity's stored entries, as of no earlier than the call.
func (nb *natsBackend) current(ctx context.Context, identity string) ([]jetstream.KeyValueEntry, error) {
	es, err := nb.watched(ctx, identity)
	if errors.Is(err, errBehind) {
		return list(ctx, nb.msgs, token(identity)+".*")
	}
	return es, err
}

var errBehind = errors.New("queue watcher behind")

func (nb *natsBackend) watched(ctx context.Context, identity string) ([]jetstream.KeyValueEntry, error) {
	q, err := nb.watchQueue(identity)
	if err != nil {
		return nil, err
	}
	var last uint64
	m, err := nb.stream.GetLastMsgForSubject(ctx, nb.msgsSubject+token(identity)+".*")
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return nil, err
	default:
		last = m.Sequence
	}
	timer := time.NewTimer(natsCurrentWait)
	defer timer.Stop()
	for {
		q.mu.Lock()
		if q.err != nil {
			q.mu.Unlock()
			return nil, errBehind // a new watcher starts on the next call
		}
		if q.ready && q.seen >= last {
			out := make([]jetstream.KeyValueEntry, 0, len(q.entries))
			for _, e := range q.entries {
				out = append(out, e)
			}
			q.mu.Unlock()
			return out, nil
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			nb.wmu.Lock()
			if nb.queues[identity] == q {
				delete(nb.queues, identity)
			}
			nb.wmu.Unlock()
			q.stop()
			return nil, errBehind
		}
	}
}

// stopWatches stops every queue watcher and waits for them.
func (nb *natsBackend) stopWatches() {
	nb.wmu.Lock()
	nb.wclosed = true // no watcher starts (wg.Go, under wmu) once Wait may run
	nb.wcancel()
	nb.wmu.Unlock()
	nb.wg.Wait()
}
