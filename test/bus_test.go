package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/symbi-dev/symbi/internal/store"
)

const busPolicy = `package symbi.authz

default decision := {"allow": true}

decision := {"allow": false, "reason": "nobody writes to carol"} if {
	input.action == "bus/send"
	input.recipient == "carol"
}
`

// busClient connects to s as the identity of token.
func busClient(t *testing.T, s *served, token string) *mcp.ClientSession {
	t.Helper()
	return connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}}, nil)
}

// busCall calls a bus tool and decodes its structured result; it fails the test on a
// tool error.
func busCall(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any, out any) {
	t.Helper()
	res, err := call(t, cs, "symbi__bus_"+tool, args)
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	if res.IsError {
		t.Fatalf("%s: tool error: %s", tool, resultText(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: decode %s: %v", tool, b, err)
	}
}

type busMsg struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	Payload string `json:"payload"`
	Attempt int    `json:"attempt"`
}

func busReceive(t *testing.T, cs *mcp.ClientSession, waitMS int) []busMsg {
	t.Helper()
	var out struct {
		Messages []busMsg `json:"messages"`
	}
	busCall(t, cs, "receive", map[string]any{"wait_ms": waitMS}, &out)
	return out.Messages
}

func busSend(t *testing.T, cs *mcp.ClientSession, to, payload string) string {
	t.Helper()
	var out struct {
		ID string `json:"id"`
	}
	busCall(t, cs, "send", map[string]any{"to": to, "payload": payload}, &out)
	return out.ID
}

// stop ends a served symbi and waits for it.
func (s *served) stop(t *testing.T) {
	t.Helper()
	_ = s.cmd.Process.Signal(os.Interrupt)
	err := <-s.done
	s.done <- err // for the cleanup registered by serve
}

// TestBus: two bearer-token identities exchange a direct message through symbi with
// acknowledgement, policy denies a recipient, delivery survives a restart, a stored
// message tampered with in the state file is never delivered, and no payload is kept in
// clear anywhere in data_dir.
func TestBus(t *testing.T) {
	const aliceToken, bobToken = "bus-alice-token-0123456789", "bus-bob-token-0123456789ab"
	pol := policyDir(t, map[string]string{"bus.rego": busPolicy})
	cfg := writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n[policy]\ndir = %q\n",
		aliceToken, bobToken, pol))
	data := dataDirOf(cfg)

	s := serve(t, cfg)
	alice, bob := busClient(t, s, aliceToken), busClient(t, s, bobToken)

	// Direct with ack.
	const first = "canary-first-9b7e1d"
	id := busSend(t, alice, "bob", first)
	if got := busReceive(t, alice, 0); len(got) != 0 {
		t.Fatalf("alice received bob's message: %+v", got)
	}
	got := busReceive(t, bob, 5000)
	if len(got) != 1 || got[0].ID != id || got[0].From != "alice" || got[0].Payload != first || got[0].Attempt != 1 {
		t.Fatalf("bob received %+v, want %s from alice", got, id)
	}
	res, err := call(t, alice, "symbi__bus_ack", map[string]any{"id": id})
	if err != nil || !res.IsError {
		t.Errorf("alice acknowledged bob's message: %v %v", err, res)
	}
	var acked struct{ ID string }
	busCall(t, bob, "ack", map[string]any{"id": id}, &acked)

	// Policy decides bus/send with the recipient.
	res, err = call(t, alice, "symbi__bus_send", map[string]any{"to": "carol", "payload": "x"})
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "nobody writes to carol") {
		t.Errorf("send to carol = %v %v, want denied by policy", err, res)
	}

	// Three messages cross a restart: one intact, two tampered with while symbi is down.
	const kept, badCT, badSig = "canary-kept-4c2a90", "canary-ct-77d0e3", "canary-sig-1a5f6b"
	keptID := busSend(t, alice, "bob", kept)
	ctID := busSend(t, alice, "bob", badCT)
	sigID := busSend(t, alice, "bob", badSig)
	_ = alice.Close()
	_ = bob.Close()
	s.stop(t)

	db, err := store.Open(filepath.Join(data, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct{ sql, id string }{
		{`UPDATE bus_messages SET ciphertext = CAST(CASE WHEN substr(ciphertext, 1, 1) = X'00' THEN X'01' ELSE X'00' END || substr(ciphertext, 2) AS BLOB) WHERE id = ?`, ctID},
		{`UPDATE bus_messages SET signature = CAST(CASE WHEN substr(signature, 1, 1) = X'00' THEN X'01' ELSE X'00' END || substr(signature, 2) AS BLOB) WHERE id = ?`, sigID},
	} {
		r, err := db.Exec(q.sql, q.id)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := r.RowsAffected(); n != 1 {
			t.Fatalf("tampered with %d rows, want 1", n)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = serve(t, cfg)
	bob = busClient(t, s, bobToken)
	got = busReceive(t, bob, 5000)
	if len(got) != 1 || got[0].ID != keptID || got[0].Payload != kept {
		t.Fatalf("after restart bob received %+v, want only %s (the tampered %s and %s must not be delivered)", got, keptID, ctID, sigID)
	}
	busCall(t, bob, "ack", map[string]any{"id": keptID}, &acked)
	if got := busReceive(t, bob, 0); len(got) != 0 {
		t.Errorf("after ack bob still receives %+v", got)
	}
	_ = bob.Close()
	s.stop(t)

	// The master key is kept apart from the state file (which holds only wrapped keys).
	if _, err := os.Stat(filepath.Join(data, "keys", "bus_master.key")); err != nil {
		t.Errorf("bus master key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "bus.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a bus key beside the state file: %v", err)
	}

	// No payload in clear anywhere in data_dir; the trail holds each message's hash.
	var trail []byte
	err = filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, c := range []string{first, kept, badCT, badSig} {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("%s holds payload %q in clear", p, c)
			}
		}
		if strings.HasPrefix(p, filepath.Join(data, "audit")) {
			trail = append(trail, b...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(kept))
	for _, want := range []string{hex.EncodeToString(sum[:]), `"bus/send"`, `"bus/dead_letter"`, `"failed verification"`} {
		if !bytes.Contains(trail, []byte(want)) {
			t.Errorf("audit trail lacks %s", want)
		}
	}
}

// TestBusTopicsAndRequest: through symbi, a subscriber gets a published message, a
// request gets the recipient's reply, and a request nobody answers times out.
func TestBusTopicsAndRequest(t *testing.T) {
	const aliceToken, bobToken = "bus-alice-token-abcdef0123", "bus-bob-token-abcdef012345"
	cfg := writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n",
		aliceToken, bobToken))
	s := serve(t, cfg)
	alice, bob := busClient(t, s, aliceToken), busClient(t, s, bobToken)

	var sub struct{ Topic string }
	busCall(t, bob, "subscribe", map[string]any{"topic": "news"}, &sub)
	var pub struct{ Recipients int }
	busCall(t, alice, "publish", map[string]any{"topic": "news", "payload": "extra"}, &pub)
	if pub.Recipients != 1 {
		t.Errorf("publish reached %d subscribers, want 1", pub.Recipients)
	}
	got := busReceive(t, bob, 5000)
	if len(got) != 1 || got[0].Payload != "extra" || got[0].From != "alice" {
		t.Fatalf("subscriber received %+v", got)
	}
	busCall(t, bob, "ack", map[string]any{"id": got[0].ID}, &struct{}{})

	// Bob answers the request while alice's call waits for it.
	replied := make(chan error, 1)
	go func() {
		// busReceive would call t.Fatal off the test goroutine: check by hand.
		res, err := call(t, bob, "symbi__bus_receive", map[string]any{"wait_ms": 30000})
		if err != nil || res.IsError {
			replied <- fmt.Errorf("receive request: %v %v", err, res)
			return
		}
		var out struct{ Messages []busMsg }
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, &out); err != nil || len(out.Messages) != 1 {
			replied <- fmt.Errorf("receive request: %s %v", b, err)
			return
		}
		m := out.Messages[0]
		res, err = call(t, bob, "symbi__bus_reply", map[string]any{"id": m.ID, "payload": "pong to " + m.Payload})
		if err == nil && res.IsError {
			err = fmt.Errorf("reply: %s", resultText(res))
		}
		replied <- err
	}()
	var reply busMsg
	busCall(t, alice, "request", map[string]any{"to": "bob", "payload": "ping", "timeout_ms": 30000}, &reply)
	if err := <-replied; err != nil {
		t.Fatal(err)
	}
	if reply.From != "bob" || reply.Payload != "pong to ping" {
		t.Errorf("reply = %+v", reply)
	}

	res, err := call(t, alice, "symbi__bus_request", map[string]any{"to": "bob", "payload": "anyone?", "timeout_ms": 200})
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "no reply before the timeout") {
		t.Errorf("unanswered request = %v %v, want a timeout", err, res)
	}
	if got := busReceive(t, bob, 0); len(got) != 0 {
		t.Errorf("a withdrawn request is still delivered: %+v", got)
	}
}

// TestBusRefusesAnonymous: without tokens a loopback HTTP client is "anonymous", a
// mailbox everyone would share; the bus refuses it.
func TestBusRefusesAnonymous(t *testing.T) {
	s := serve(t, writeConfig(t, ""))
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	for _, tc := range []struct {
		tool string
		args map[string]any
	}{
		{"symbi__bus_send", map[string]any{"to": "bob", "payload": "x"}},
		{"symbi__bus_receive", map[string]any{}},
		{"symbi__bus_subscribe", map[string]any{"topic": "news"}},
	} {
		res, err := call(t, cs, tc.tool, tc.args)
		if err != nil || !res.IsError || !strings.Contains(resultText(res), "authenticated identity") {
			t.Errorf("%s as anonymous = %v %v, want refused", tc.tool, err, res)
		}
	}
}

// TestBusNotifications: a client subscribed to its queue's resource, symbi://bus/{identity},
// is told when a message arrives for it (direct or on a topic it subscribed to) without
// polling; the resource lists the pending messages without their payload; nobody may
// subscribe to or read another identity's queue. Both protocol generations: 2025-11-25
// (resources/subscribe) and 2026-07-28 (subscriptions/listen).
func TestBusNotifications(t *testing.T) {
	const aliceToken, bobToken = "bus-alice-token-notify-0123", "bus-bob-token-notify-012345"
	cfg := writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n",
		aliceToken, bobToken))
	s := serve(t, cfg)
	for _, version := range []string{"", "2025-11-25"} {
		t.Run("version="+version, func(t *testing.T) {
			ctx := context.Background()
			client := func(token string, updated chan<- string) *mcp.ClientSession {
				return connectVersion(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp",
					HTTPClient: &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}},
					&mcp.ClientOptions{ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
						updated <- req.Params.URI
					}}, version)
			}
			bobUpdated, aliceUpdated := make(chan string, 16), make(chan string, 16)
			bob, alice := client(bobToken, bobUpdated), client(aliceToken, aliceUpdated)

			// Alice may neither read nor follow bob's queue. Under 2026-07-28 a refused
			// subscription is not reported to Subscribe's caller: alice must just hear nothing.
			if err := alice.Subscribe(ctx, &mcp.SubscribeParams{URI: "symbi://bus/bob"}); err == nil && version != "" {
				t.Error("alice subscribed to bob's queue")
			}
			if _, err := alice.ReadResource(ctx, &mcp.ReadResourceParams{URI: "symbi://bus/bob"}); err == nil {
				t.Error("alice read bob's queue")
			}
			if err := bob.Subscribe(ctx, &mcp.SubscribeParams{URI: "symbi://bus/bob"}); err != nil {
				t.Fatalf("bob subscribes to his queue: %v", err)
			}
			topic := "news" + version
			var sub struct{ Topic string }
			busCall(t, bob, "subscribe", map[string]any{"topic": topic}, &sub)

			// The listen stream of 2026-07-28 is opened in the background: send until the
			// first notification comes (each send is a new message, counted below).
			const secret = "canary-notify-5e8d21"
			var sent []string
			deadline := time.Now().Add(10 * time.Second)
		first:
			for {
				sent = append(sent, busSend(t, alice, "bob", secret))
				select {
				case uri := <-bobUpdated:
					if uri != "symbi://bus/bob" {
						t.Fatalf("bob notified of %s", uri)
					}
					break first
				case <-time.After(200 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatal("direct message: no notification within 10s")
				}
			}
			if version != "" && len(sent) != 1 {
				t.Errorf("resources/subscribe had returned but %d sends were needed for a notification", len(sent))
			}
			drain(bobUpdated, 500*time.Millisecond)
			var pub struct{ Recipients int }
			busCall(t, alice, "publish", map[string]any{"topic": topic, "payload": "headline"}, &pub)
			select {
			case uri := <-bobUpdated:
				if uri != "symbi://bus/bob" {
					t.Fatalf("bob notified of %s", uri)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("topic message: no notification within 10s")
			}
			if n := drain(aliceUpdated, 300*time.Millisecond); n != 0 {
				t.Errorf("alice was notified %d times of bob's queue", n)
			}

			res, err := bob.ReadResource(ctx, &mcp.ReadResourceParams{URI: "symbi://bus/bob"})
			if err != nil || len(res.Contents) != 1 {
				t.Fatalf("read bob's queue: %v %v", err, res)
			}
			text := res.Contents[0].Text
			if strings.Contains(text, secret) || strings.Contains(text, "headline") {
				t.Errorf("the queue resource shows a payload: %s", text)
			}
			var q struct {
				Identity string `json:"identity"`
				Pending  []struct {
					ID, Kind, From, Topic string
				} `json:"pending"`
			}
			if err := json.Unmarshal([]byte(text), &q); err != nil {
				t.Fatalf("decode %s: %v", text, err)
			}
			last := len(q.Pending) - 1
			if q.Identity != "bob" || len(q.Pending) != len(sent)+1 || q.Pending[0].ID != sent[0] || q.Pending[0].From != "alice" ||
				q.Pending[last].Kind != "topic" || q.Pending[last].Topic != topic {
				t.Errorf("bob's queue after %d sends and a publish = %s", len(sent), text)
			}

			// Once unsubscribed, bob is told nothing more.
			if err := bob.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: "symbi://bus/bob"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // the 2026-07-28 listen ends asynchronously
			busSend(t, alice, "bob", "after unsubscribe")
			if n := drain(bobUpdated, time.Second); n != 0 {
				t.Errorf("bob was notified %d times after unsubscribing", n)
			}
			// Empty the queue for the next version.
			for {
				got := busReceive(t, bob, 0)
				if len(got) == 0 {
					break
				}
				for _, m := range got {
					busCall(t, bob, "ack", map[string]any{"id": m.ID}, &struct{}{})
				}
			}
		})
	}
}

// drain empties ch, waiting up to wait for stragglers, and says how many it took.
func drain(ch <-chan string, wait time.Duration) int {
	n := 0
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ch:
			n++
		case <-t.C:
			return n
		}
	}
}

// TestBusRateLimit: a sender over its [bus] rate is refused with a retryable JSON-RPC
// error that says when to retry; another sender is not affected; after the wait the
// sender is served again. [bus] keys reach the bus (ttl_ms over max_ttl is refused).
func TestBusRateLimit(t *testing.T) {
	const aliceToken, bobToken = "bus-alice-token-rate-012345", "bus-bob-token-rate-01234567"
	cfg := writeConfig(t, fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n[bus]\nrate = 2.0\nburst = 2\ndefault_ttl = \"30s\"\nmax_ttl = \"1m\"\n",
		aliceToken, bobToken))
	s := serve(t, cfg)
	alice, bob := busClient(t, s, aliceToken), busClient(t, s, bobToken)
	busSend(t, alice, "bob", "1")
	busSend(t, alice, "bob", "2")
	_, err := alice.CallTool(context.Background(), &mcp.CallToolParams{Name: "symbi__bus_send", Arguments: map[string]any{"to": "bob", "payload": "3"}})
	var rpc *jsonrpc.Error
	if !errors.As(err, &rpc) {
		t.Fatalf("third send in a burst of 2 = %v, want a JSON-RPC error", err)
	}
	var data struct {
		Retryable    bool  `json:"retryable"`
		RetryAfterMS int64 `json:"retry_after_ms"`
	}
	if err := json.Unmarshal(rpc.Data, &data); err != nil {
		t.Fatalf("error data %s: %v", rpc.Data, err)
	}
	if rpc.Code != -32002 || !data.Retryable || data.RetryAfterMS <= 0 || data.RetryAfterMS > 500 || !strings.Contains(rpc.Message, "retry after") {
		t.Errorf("refusal = %d %q %s, want -32002, retryable, retry within 500ms", rpc.Code, rpc.Message, rpc.Data)
	}
	busSend(t, bob, "alice", "bob is not limited by alice's rate")
	time.Sleep(time.Duration(data.RetryAfterMS) * time.Millisecond)
	busSend(t, alice, "bob", "3")

	time.Sleep(time.Second) // a fresh token for the refusal below to be about the TTL
	res, err := call(t, alice, "symbi__bus_send", map[string]any{"to": "bob", "payload": "x", "ttl_ms": 120000})
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "exceeds the maximum") {
		t.Errorf("ttl_ms over max_ttl = %v %v, want refused", err, res)
	}
	if got := busReceive(t, bob, 0); len(got) != 3 {
		t.Errorf("bob received %d messages, want 3", len(got))
	}
}
