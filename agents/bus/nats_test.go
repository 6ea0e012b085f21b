package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSTampered: a message changed in the MSGS bucket (by anyone with access to the
// NATS server) is never delivered; it is dead-lettered and reported.
func TestNATSTampered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(r map[string]any)
	}{
		{"ciphertext", func(r map[string]any) { r["ciphertext"] = flipFirst(r["ciphertext"]) }},
		{"signature", func(r map[string]any) { r["signature"] = flipFirst(r["signature"]) }},
		{"nonce", func(r map[string]any) { r["nonce"] = flipFirst(r["nonce"]) }},
		{"sender", func(r map[string]any) { r["from"] = "mallory" }},
		{"created", func(r map[string]any) { r["created_ns"] = r["created_ns"].(float64) - 1e6 }},
		{"expiry extended", func(r map[string]any) { r["expires_ns"] = r["expires_ns"].(float64) + 1e9 }},
		{"not JSON", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNATSFixture(t, Options{})
			ctx := context.Background()
			f.send(t, "mallory", "carol", "key") // mallory has a key too
			id := f.send(t, "alice", "bob", "secret")
			kv, err := mustJS(t, f).KeyValue(ctx, "SYMBI_BUS_MSGS")
			if err != nil {
				t.Fatal(err)
			}
			e, err := kv.Get(ctx, msgKey("bob", id))
			if err != nil {
				t.Fatal(err)
			}
			v := []byte("{not json")
			if tc.change != nil {
				var r map[string]any
				if err := json.Unmarshal(e.Value(), &r); err != nil {
					t.Fatal(err)
				}
				tc.change(r)
				if v, err = json.Marshal(r); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := kv.Put(ctx, msgKey("bob", id), v); err != nil {
				t.Fatal(err)
			}
			g := f.reopen(t, testKey, Options{}) // another process: no keys cached
			g.bus.o.Record = f.rec.record
			if got := g.receive(t, "bob"); len(got) != 0 {
				t.Fatalf("tampered message delivered: %v", payloads(got))
			}
			dead, err := f.bus.DeadLetters(ctx, "bob", 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(dead) != 1 || dead[0].ID != id || dead[0].Reason != "failed verification" {
				t.Errorf("dead letters = %+v, want %s failed verification", dead, id)
			}
			var reported bool
			for _, ev := range f.rec.events() {
				reported = reported || (ev.Action == "bus/dead_letter" && ev.ID == id && ev.Reason == "failed verification")
			}
			if !reported {
				t.Errorf("tampered message not reported: %+v", f.rec.events())
			}
		})
	}
}

func flipFirst(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var raw []byte
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) == 0 {
		panic("not bytes")
	}
	raw[0] ^= 1
	return raw
}

func mustJS(t *testing.T, f *fixture) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(f.nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestNATSSharedBus: two buses on two connections (two processes) share one bus: a
// message sent on one wakes a receiver waiting on the other at once, and its Notify.
func TestNATSSharedBus(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	notified := make(chan string, 10)
	p1 := openNATSOn(t, connect(t, srv.URL()), testKey, Options{Poll: time.Hour})
	p2 := openNATSOn(t, connect(t, srv.URL()), testKey, Options{Poll: time.Hour, Notify: func(id string) { notified <- id }})
	p2.bus.o.Now = p1.clock.Now // one clock for both processes
	ctx := context.Background()
	got := make(chan []Message, 1)
	errc := make(chan error, 1)
	go func() {
		msgs, err := p2.bus.Receive(ctx, "bob", 10, time.Hour)
		got <- msgs
		errc <- err
	}()
	id := p1.send(t, "alice", "bob", "across")
	if msgs := <-got; len(msgs) != 1 || msgs[0].ID != id || string(msgs[0].Payload) != "across" {
		t.Fatalf("received on the other process: %+v", msgs)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	select {
	case who := <-notified:
		if who != "bob" {
			t.Errorf("notified %q, want bob", who)
		}
	case <-time.After(10 * time.Second):
		t.Error("the other process was not notified")
	}
	// Acknowledged on the second process, gone for both.
	if err := p2.bus.Ack(ctx, "bob", id); err != nil {
		t.Fatal(err)
	}
	p1.clock.add(time.Hour)
	if msgs := p1.receive(t, "bob"); len(msgs) != 0 {
		t.Errorf("acknowledged message delivered again: %+v", msgs)
	}
	// Topic subscribed on one process, published on the other.
	if err := p2.bus.Subscribe(ctx, "carol", "news"); err != nil {
		t.Fatal(err)
	}
	if n, err := p1.bus.Publish(ctx, "alice", "news", []byte("extra")); err != nil || n != 1 {
		t.Fatalf("publish = %d, %v", n, err)
	}
	if msgs := p2.receive(t, "carol"); len(msgs) != 1 || string(msgs[0].Payload) != "extra" {
		t.Errorf("topic message on the other process: %+v", msgs)
	}
	// A request from one process answered on the other.
	go func() {
		msgs, err := p2.bus.Receive(ctx, "bob", 1, time.Minute)
		if err == nil && len(msgs) == 1 {
			_, _ = p2.bus.Reply(ctx, "bob", msgs[0].ID, []byte("pong"))
		}
	}()
	m, err := p1.bus.Request(ctx, "alice", "bob", []byte("ping"), 30*time.Second)
	if err != nil || string(m.Payload) != "pong" {
		t.Fatalf("request across processes = %+v, %v", m, err)
	}
}

// TestNATSRestart: messages survive a restart of the NATS server (JetStream's file
// store), and nothing in the store holds a payload in clear.
func TestNATSRestart(t *testing.T) {
	dir := t.TempDir()
	const secret = "plaintext-canary-2b7e41"
	srv, err := StartNATS("127.0.0.1:0", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, srv.URL())
	b, err := OpenNATS(context.Background(), NATSOptions{Conn: nc}, testKey, nil)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	id, err := b.Send(context.Background(), "alice", "bob", []byte(secret))
	b.Close()
	nc.Close()
	srv.Close()
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("%s holds the payload in clear", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := startNATS(t, dir)
	f := openNATSOn(t, connect(t, srv2.URL()), testKey, Options{})
	f.clock.now = time.Now()
	got := f.receive(t, "bob")
	if len(got) != 1 || got[0].ID != id || string(got[0].Payload) != secret {
		t.Fatalf("after restart: %+v", got)
	}
}

func TestOpenNATSInvalid(t *testing.T) {
	if _, err := OpenNATS(context.Background(), NATSOptions{}, testKey, nil); err == nil {
		t.Error("no connection accepted")
	}
	srv := startNATS(t, t.TempDir())
	nc := connect(t, srv.URL())
	for _, p := range []string{"has space", "dot.ted", "star*"} {
		if _, err := OpenNATS(context.Background(), NATSOptions{Conn: nc, Prefix: p}, testKey, nil); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
	if _, err := OpenNATS(context.Background(), NATSOptions{Conn: nc}, []byte("short"), nil); err == nil {
		t.Error("short key accepted")
	}
	if _, err := StartNATS("nohostport", t.TempDir(), nil); err == nil {
		t.Error("bad listen address accepted")
	}
}

// TestNATSTamperedElsewhere: what a NATS user could change besides a message's fields:
// a valid message moved under another recipient's key, the sender's public key, the
// recipient's data key. Each makes the message fail verification in a fresh process.
func TestNATSTamperedElsewhere(t *testing.T) {
	for _, tc := range []struct {
		name      string
		recipient string // whose queue the message ends up in
		change    func(t *testing.T, js jetstream.JetStream, id string)
	}{
		{"moved to another recipient", "carol", func(t *testing.T, js jetstream.JetStream, id string) {
			kv := kvBucket(t, js, "MSGS")
			e, err := kv.Get(context.Background(), msgKey("bob", id))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(context.Background(), msgKey("carol", id), e.Value()); err != nil {
				t.Fatal(err)
			}
		}},
		{"moved with its recipient changed", "carol", func(t *testing.T, js jetstream.JetStream, id string) {
			kv := kvBucket(t, js, "MSGS")
			e, err := kv.Get(context.Background(), msgKey("bob", id))
			if err != nil {
				t.Fatal(err)
			}
			var r map[string]any
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				t.Fatal(err)
			}
			r["to"] = "carol"
			v, _ := json.Marshal(r)
			if _, err := kv.Put(context.Background(), msgKey("carol", id), v); err != nil {
				t.Fatal(err)
			}
		}},
		{"sender's public key", "bob", func(t *testing.T, js jetstream.JetStream, _ string) {
			kv := kvBucket(t, js, "KEYS")
			e, err := kv.Get(context.Background(), token("alice"))
			if err != nil {
				t.Fatal(err)
			}
			v := append([]byte{}, e.Value()...)
			v[0] ^= 1
			if _, err := kv.Put(context.Background(), token("alice"), v); err != nil {
				t.Fatal(err)
			}
		}},
		{"sender's key removed", "bob", func(t *testing.T, js jetstream.JetStream, _ string) {
			if err := kvBucket(t, js, "KEYS").Purge(context.Background(), token("alice")); err != nil {
				t.Fatal(err)
			}
		}},
		{"recipient's data key replaced", "bob", func(t *testing.T, js jetstream.JetStream, _ string) {
			kv := kvBucket(t, js, "DEKS")
			e, err := kv.Get(context.Background(), token("mallory"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(context.Background(), token("bob"), e.Value()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNATSFixture(t, Options{})
			ctx := context.Background()
			f.send(t, "alice", "mallory", "key") // mallory has a data key too
			f.send(t, "alice", "carol", "key")   // and carol
			msgs := f.receive(t, "carol")
			if len(msgs) != 1 {
				t.Fatalf("carol's own message: %+v", msgs)
			}
			if err := f.bus.Ack(ctx, "carol", msgs[0].ID); err != nil {
				t.Fatal(err)
			}
			id := f.send(t, "alice", "bob", "secret")
			tc.change(t, mustJS(t, f), id)
			g := f.reopen(t, testKey, Options{}) // another process: no keys cached
			g.bus.o.Now = f.clock.Now
			for _, m := range g.receive(t, tc.recipient) {
				if m.ID == id {
					t.Fatalf("tampered message delivered to %s: %q", tc.recipient, m.Payload)
				}
			}
			dead, err := g.bus.DeadLetters(ctx, tc.recipient, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(dead) != 1 || dead[0].ID != id || dead[0].Reason != "failed verification" {
				t.Errorf("dead letters of %s = %+v, want %s failed verification", tc.recipient, dead, id)
			}
		})
	}
}

func kvBucket(t *testing.T, js jetstream.JetStream, name string) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), "SYMBI_BUS_"+name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestNATSBucketLimits: the messages bucket ages entries out once no delivery can want
// them, acknowledgement markers expire, and a full bucket refuses a new message instead
// of dropping a stored one.
func TestNATSBucketLimits(t *testing.T) {
	ctx := context.Background()
	srv := startNATS(t, t.TempDir())
	nc := connect(t, srv.URL())
	o := Options{MaxTTL: time.Hour, TTL: time.Hour}
	b, err := OpenNATS(ctx, NATSOptions{Conn: nc, MaxBytes: 16 << 10}, testKey, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := b.nb.msgs.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != time.Hour+natsDeadLetterKeep || st.LimitMarkerTTL() != natsMarkerTTL {
		t.Errorf("messages bucket TTL %s, marker TTL %s; want %s and %s", st.TTL(), st.LimitMarkerTTL(), time.Hour+natsDeadLetterKeep, natsMarkerTTL)
	}
	payload := bytes.Repeat([]byte("x"), 1000)
	var sent []string
	var full error
	for range 100 {
		id, err := b.Send(ctx, "alice", "bob", payload)
		if err != nil {
			full = err
			break
		}
		sent = append(sent, id)
	}
	if full == nil || len(sent) == 0 {
		t.Fatalf("100 sends of 1 KB into a 16 KB bucket: %d stored, no refusal", len(sent))
	}
	got := map[string]bool{}
	for {
		msgs, err := b.Receive(ctx, "bob", 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			got[m.ID] = true
		}
	}
	for _, id := range sent {
		if !got[id] {
			t.Errorf("message %s, acknowledged as sent, was dropped by the full bucket", id)
		}
	}
	if _, err := OpenNATS(ctx, NATSOptions{Conn: nc, MaxBytes: -1}, testKey, nil); err == nil {
		t.Error("a negative MaxBytes was accepted")
	}
}

// TestNATSWatchedQueueCurrent: once a process watches an identity's queue, a receive
// without waiting still sees at once what another process has just stored, acknowledged
// or claimed.
func TestNATSWatchedQueueCurrent(t *testing.T) {
	f := newNATSFixture(t, Options{})
	g := f.reopen(t, testKey, Options{})
	g.clock = f.clock
	if got := f.receive(t, "bob"); len(got) != 0 { // starts f's watcher of bob's queue
		t.Fatalf("empty queue gave %v", payloads(got))
	}
	for i := range 20 {
		want := fmt.Sprintf("m%d", i)
		g.send(t, "alice", "bob", want)
		got := f.receive(t, "bob")
		if len(got) != 1 || string(got[0].Payload) != want {
			t.Fatalf("round %d: bob received %v right after the send, want [%s]", i, payloads(got), want)
		}
		if err := g.bus.Ack(context.Background(), "bob", got[0].ID); err != nil {
			t.Fatal(err)
		}
		if p, err := f.bus.Pending(context.Background(), "bob", 10); err != nil || len(p) != 0 {
			t.Fatalf("round %d: pending after the other process's ack: %v %v", i, p, err)
		}
	}
}
