package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestSSEStream(t *testing.T) {
	l, _ := openTest(t, nil)
	appendN(t, l, 2) // seq 2, 3 before the client connects
	l.Flush(context.Background())
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"?recent=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		l.Append(context.Background(), Event{Type: TypeDecision, Identity: "ide", Decision: Deny})
	}()
	r := bufio.NewReader(resp.Body)
	var seqs []uint64
	for len(seqs) < 2 {
		var id, event, data string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read stream: %v (got seqs %v)", err, seqs)
			}
			line = strings.TrimRight(line, "\n")
			if line == "" {
				break
			}
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "id":
				id = v
			case "event":
				event = v
			case "data":
				data = v
			}
		}
		var rec Record
		if err := json.Unmarshal([]byte(data), &rec); err != nil || event != "audit" {
			t.Fatalf("event %q data %q: %v", event, data, err)
		}
		if id == "" || rec.Hash == "" {
			t.Errorf("record without id or hash: %q", data)
		}
		seqs = append(seqs, rec.Seq)
	}
	if seqs[0] != 3 || seqs[1] != 4 {
		t.Errorf("stream seqs = %v, want replayed 3 then live 4", seqs)
	}
}

func TestWebSocketStream(t *testing.T) {
	l, _ := openTest(t, nil)
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The subscription exists once the upgrade has completed.
	appendN(t, l, 3)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for want := uint64(2); want <= 4; want++ {
		typ, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var rec Record
		if typ != websocket.TextMessage || json.Unmarshal(b, &rec) != nil || rec.Seq != want || rec.Event.Type != TypeCall {
			t.Fatalf("frame %d: type %d %s", want, typ, b)
		}
	}
	// Closing the log ends the stream with a close frame.
	l.Close()
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("after Close: %v, want a going-away close", err)
	}
}
