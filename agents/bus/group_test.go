package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestGroupCommit: concurrent senders share commits; a message that cannot be stored
// fails only its own sender; every other message is delivered once; after Close a send
// is refused.
func TestGroupCommit(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	if _, err := f.db.Exec(`CREATE TRIGGER fail_zed BEFORE INSERT ON bus_messages WHEN NEW.recipient = 'zed'
		BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	const senders, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				to := "bob"
				if i == 7 {
					to = "zed"
				}
				_, err := f.bus.Send(ctx, fmt.Sprintf("s%d", s), to, []byte(fmt.Sprintf("%d-%d", s, i)))
				if (err != nil) != (to == "zed") {
					errs <- fmt.Errorf("send %d-%d to %s: %v", s, i, to, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for {
		msgs, err := f.bus.Receive(ctx, "bob", 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			if seen[string(m.Payload)] {
				t.Errorf("%s delivered twice", m.Payload)
			}
			seen[string(m.Payload)] = true
			if err := f.bus.Ack(ctx, "bob", m.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(seen) != senders*(each-1) {
		t.Errorf("bob received %d messages, want %d", len(seen), senders*(each-1))
	}
	f.bus.Close()
	if _, err := f.bus.Send(ctx, "alice", "bob", []byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("send after Close = %v, want ErrClosed", err)
	}
}
