//go:build integration

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestBusNATSTwoProcesses: two symbi processes share one bus on NATS; the first runs
// the NATS server (JetStream) embedded, the second joins it by URL; they share
// data_dir, so the bus master key. Alice is served by the first, bob by the second: a
// direct message with acknowledgement, a topic message with a notification of bob's
// queue resource, a request answered across the processes, and a message sent while
// bob's process is down delivered once it is back. No payload in clear in data_dir
// (which holds the JetStream store too).
func TestBusNATSTwoProcesses(t *testing.T) {
	const aliceToken, bobToken = "bus-nats-alice-token-01234", "bus-nats-bob-token-0123456"
	tokens := fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n",
		aliceToken, bobToken)
	port := freePort(t)
	cfg1 := writeConfig(t, tokens+fmt.Sprintf("[bus]\ntransport = \"nats\"\nnats_embedded = { listen = \"127.0.0.1:%d\" }\n", port))
	data := dataDirOf(cfg1)
	cfg2 := filepath.Join(t.TempDir(), "symbi.toml")
	body := fmt.Sprintf("version = 1\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = %q\n\n%s[bus]\ntransport = \"nats\"\nnats_url = \"nats://127.0.0.1:%d\"\n",
		data, tokens, port)
	if err := os.WriteFile(cfg2, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}

	s1 := serve(t, cfg1)
	s2 := serve(t, cfg2)
	ctx := context.Background()
	bobUpdated := make(chan string, 64)
	bobOn := func(s *served) *mcp.ClientSession {
		cs := connectVersion(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp",
			HTTPClient: &http.Client{Transport: bearer{token: bobToken, next: http.DefaultTransport}}},
			&mcp.ClientOptions{ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
				bobUpdated <- req.Params.URI
			}}, "2025-11-25")
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "symbi://bus/bob"}); err != nil {
			t.Fatalf("bob subscribes to his queue: %v", err)
		}
		return cs
	}
	alice, bob := busClient(t, s1, aliceToken), bobOn(s2)
	notified := func(what string) {
		t.Helper()
		select {
		case uri := <-bobUpdated:
			if uri != "symbi://bus/bob" {
				t.Fatalf("bob notified of %s", uri)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: bob's process was not told within 10s", what)
		}
		drain(bobUpdated, 300*time.Millisecond)
	}

	// Direct with ack, across the processes.
	const direct = "canary-nats-direct-3f9a1c"
	id := busSend(t, alice, "bob", direct)
	notified("direct message")
	got := busReceive(t, bob, 5000)
	if len(got) != 1 || got[0].ID != id || got[0].From != "alice" || got[0].Payload != direct || got[0].Attempt != 1 {
		t.Fatalf("bob received %+v, want %s from alice", got, id)
	}
	var acked struct{ ID string }
	busCall(t, bob, "ack", map[string]any{"id": id}, &acked)
	if got := busReceive(t, bob, 0); len(got) != 0 {
		t.Fatalf("after ack bob still receives %+v", got)
	}

	// A topic subscribed on the second process, published on the first.
	var sub struct{ Topic string }
	busCall(t, bob, "subscribe", map[string]any{"topic": "news"}, &sub)
	var pub struct{ Recipients int }
	const headline = "canary-nats-topic-77e2b0"
	busCall(t, alice, "publish", map[string]any{"topic": "news", "payload": headline}, &pub)
	if pub.Recipients != 1 {
		t.Fatalf("published to %d recipients, want 1", pub.Recipients)
	}
	notified("topic message")
	got = busReceive(t, bob, 5000)
	if len(got) != 1 || got[0].Payload != headline || got[0].From != "alice" {
		t.Fatalf("bob received %+v, want the headline", got)
	}
	busCall(t, bob, "ack", map[string]any{"id": got[0].ID}, &acked)

	// A request from the first process answered on the second.
	replied := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			res, err := call(t, bob, "symbi__bus_receive", map[string]any{"wait_ms": 2000})
			if err != nil || res.IsError {
				replied <- fmt.Errorf("receive: %v %v", err, res)
				return
			}
			var out struct{ Messages []busMsg }
			if err := decodeStructured(res, &out); err != nil {
				replied <- err
				return
			}
			if len(out.Messages) == 1 {
				res, err := call(t, bob, "symbi__bus_reply", map[string]any{"id": out.Messages[0].ID, "payload": "re: " + out.Messages[0].Payload})
				if err == nil && res.IsError {
					err = fmt.Errorf("reply: %s", resultText(res))
				}
				replied <- err
				return
			}
		}
		replied <- fmt.Errorf("no request within 20s")
	}()
	var answer busMsg
	busCall(t, alice, "request", map[string]any{"to": "bob", "payload": "canary-nats-ping-0c4d", "timeout_ms": 30000}, &answer)
	if err := <-replied; err != nil {
		t.Fatal(err)
	}
	if answer.From != "bob" || answer.Payload != "re: canary-nats-ping-0c4d" {
		t.Fatalf("reply = %+v", answer)
	}
	drain(bobUpdated, 300*time.Millisecond)

	// Bob's process stops; alice sends meanwhile; bob's process comes back and delivers.
	_ = bob.Close()
	s2.stop(t)
	const later = "canary-nats-later-a81f2e"
	laterID := busSend(t, alice, "bob", later)
	s2 = serve(t, cfg2)
	bob = bobOn(s2)
	got = busReceive(t, bob, 5000)
	if len(got) != 1 || got[0].ID != laterID || got[0].Payload != later {
		t.Fatalf("after bob's process restarted he received %+v, want %s", got, laterID)
	}
	busCall(t, bob, "ack", map[string]any{"id": laterID}, &acked)

	// The first process (and the NATS server in it) restarts too: what is queued survives.
	const survivor = "canary-nats-survivor-5b3e9d"
	survivorID := busSend(t, alice, "bob", survivor)
	_ = alice.Close()
	s1.stop(t)
	s1 = serve(t, cfg1)
	alice = busClient(t, s1, aliceToken)
	got = busReceive(t, bob, 15000) // bob's process reconnects to the restarted server
	if len(got) != 1 || got[0].ID != survivorID || got[0].Payload != survivor {
		t.Fatalf("after the NATS server restarted bob received %+v, want %s", got, survivorID)
	}
	busCall(t, bob, "ack", map[string]any{"id": survivorID}, &acked)
	id = busSend(t, alice, "bob", "after both restarts")
	notified("message after both restarts")
	if got := busReceive(t, bob, 5000); len(got) != 1 || got[0].ID != id {
		t.Fatalf("after both restarts bob received %+v, want %s", got, id)
	}
	_ = alice.Close()
	_ = bob.Close()
	s1.stop(t)
	s2.stop(t)

	if _, err := os.Stat(filepath.Join(data, "nats")); err != nil {
		t.Errorf("the embedded server's JetStream store: %v", err)
	}
	err := filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, c := range []string{direct, headline, "canary-nats-ping-0c4d", later, survivor} {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("%s holds payload %q in clear", p, c)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// decodeStructured decodes a tool result's structured content into out.
func decodeStructured(res *mcp.CallToolResult, out any) error {
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}
