package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// End-to-end tests of the bridge's bounds: a 2026-07-28 client in front of an upstream
// that speaks only 2025-11-25 (test/servers/asker) and asks for input in the middle of
// a call, with a client that never answers.

const (
	bridgeAlice = "alice-token-0123456789abcdef"
	bridgeBob   = "bob-token-0123456789abcdefgh"
)

func askerServer(t testing.TB) string {
	return bin(t, "asker", "github.com/symbi-dev/symbi/test/servers/asker")
}

// bridgeConfig writes a configuration with the tokens of alice and bob, the [server]
// keys given, and the asker upstream "ask" with the given timeout. It returns the file
// and the file where the asker records the notifications/cancelled it receives.
func bridgeConfig(t testing.TB, serverKeys, timeout string) (cfg, cancelLog string) {
	t.Helper()
	cancelLog = filepath.Join(t.TempDir(), "cancelled.jsonl")
	cfg = writeConfig(t, serverKeys+"\n"+
		fmt.Sprintf("[[server.tokens]]\ntoken = %q\nidentity = \"alice\"\n\n[[server.tokens]]\ntoken = %q\nidentity = \"bob\"\n\n", bridgeAlice, bridgeBob)+
		upstreamTOML("ask", "ask", askerServer(t), "-log", cancelLog)+fmt.Sprintf("timeout = %q\n", timeout))
	return cfg, cancelLog
}

// modernClient connects to s as a 2026-07-28 client that handles input-required
// results itself (and so can fail to come back).
func modernClient(t testing.TB, s *served, token string) *mcp.ClientSession {
	t.Helper()
	return connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{token: token, next: http.DefaultTransport}}},
		&mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}})
}

// askDelete calls ask__confirm_delete and expects the upstream's question back as an
// input-required result; it returns the requestState that names the pending call.
func askDelete(t testing.TB, cs *mcp.ClientSession, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "ask__confirm_delete", Arguments: map[string]any{"path": path}})
	if err != nil {
		t.Fatalf("call ask__confirm_delete: %v", err)
	}
	q, ok := res.InputRequests["symbi"].(*mcp.ElicitParams)
	if !ok || q.Message != "Delete "+path+"?" || !strings.HasPrefix(res.RequestState, "symbi-bridge:") {
		t.Fatalf("ask__confirm_delete = %+v, want the upstream's question as an input-required result", res)
	}
	return res.RequestState
}

// retry answers the pending call named by state.
func retry(cs *mcp.ClientSession, path, state string, answer *mcp.ElicitResult) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: "ask__confirm_delete", Arguments: map[string]any{"path": path},
		RequestState: state, InputResponses: mcp.InputResponseMap{"symbi": answer}})
}

// cancellations reads the asker's record of notifications/cancelled.
func cancellations(t testing.TB, file string) []map[string]any {
	t.Helper()
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("cancellation record %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// bridgeReady reads the bridged_calls entry of /readyz.
func bridgeReady(t testing.TB, s *served) (pending int, byIdentity map[string]int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+"/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+bridgeAlice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Bridged struct {
			OK     bool `json:"ok"`
			Detail struct {
				Pending           int            `json:"pending"`
				PendingByIdentity map[string]int `json:"pending_by_identity"`
				MaxPending        int            `json:"max_pending"`
			} `json:"detail"`
		} `json:"bridged_calls"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Bridged.Detail.MaxPending == 0 {
		t.Fatalf("/readyz has no bridged_calls detail (%v)", err)
	}
	return body.Bridged.Detail.Pending, body.Bridged.Detail.PendingByIdentity
}

// metric returns the value of one series (name with its labels, as exposed) from
// /metrics, 0 when absent.
func metric(t testing.TB, s *served, series string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+bridgeAlice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// stopServed ends symbi serve with SIGTERM and returns how long it took to exit.
func stopServed(t testing.TB, s *served) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		s.done <- err // for the harness's cleanup
		return time.Since(start), err
	case <-time.After(60 * time.Second):
		t.Fatalf("symbi serve still running a minute after SIGTERM\n%s", s.stderr.String())
	}
	return 0, nil
}

// TestBridgedCallDeadline: a client that never answers the upstream's question does
// not keep the call forever. It ends at the first of its two deadlines (the client's
// input_timeout, or the upstream's timeout for the whole call): the upstream receives
// notifications/cancelled for its tools/call, a late retry is refused, and the trail
// records the call as abandoned.
func TestBridgedCallDeadline(t *testing.T) {
	for _, tc := range []struct {
		name, serverKeys, timeout string
		deadline                  time.Duration
	}{
		{"input_timeout", `input_timeout = "1500ms"`, "60s", 1500 * time.Millisecond},
		{"upstream timeout", `input_timeout = "60s"`, "2s", 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, cancelLog := bridgeConfig(t, tc.serverKeys, tc.timeout)
			s := serve(t, cfg)
			cs := modernClient(t, s, bridgeAlice)
			asked := time.Now()
			state := askDelete(t, cs, "/srv/data")
			if pending, _ := bridgeReady(t, s); pending != 1 {
				t.Errorf("/readyz: %d bridged calls pending, want 1", pending)
			}

			// The client never answers.
			waitFor(t, tc.deadline+15*time.Second, "the upstream to receive notifications/cancelled", func() bool {
				return len(cancellations(t, cancelLog)) > 0
			})
			if took := time.Since(asked); took < tc.deadline {
				t.Errorf("call cancelled after %s, before its deadline of %s", took, tc.deadline)
			}
			got := cancellations(t, cancelLog)
			if len(got) != 1 || got[0]["requestId"] == nil {
				t.Errorf("upstream received %v, want one notifications/cancelled for its tools/call", got)
			}
			waitFor(t, 10*time.Second, "the pending call to be forgotten", func() bool {
				pending, _ := bridgeReady(t, s)
				return pending == 0
			})
			if v := metric(t, s, `symbi_bridged_calls_ended_total{outcome="abandoned",upstream="ask"}`); v != 1 {
				t.Errorf("symbi_bridged_calls_ended_total{abandoned} = %v, want 1", v)
			}

			// The client coming back too late gets a clear error.
			_, err := retry(cs, "/srv/data", state, &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}})
			var je *jsonrpc.Error
			if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams || !strings.Contains(je.Message, "expired") {
				t.Errorf("late retry: %v, want an expired requestState error", err)
			}

			// The gateway still serves the upstream.
			if text, isErr := callText(t, cs, "ask__echo", map[string]any{"message": "still here"}); isErr || text != "echo: still here" {
				t.Errorf("ask__echo = %q (error %v)", text, isErr)
			}

			if _, err := stopServed(t, s); err != nil {
				t.Errorf("symbi serve exited with %v", err)
			}
			auditDir := filepath.Join(dataDirOf(cfg), "audit")
			recs, raw := auditQuery(t, auditDir, "--tool", "ask__confirm_delete")
			var abandoned []auditRecord
			for _, r := range recs {
				if r.Outcome == "abandoned" {
					abandoned = append(abandoned, r)
				}
			}
			if len(abandoned) != 1 || abandoned[0].Identity != "alice" || abandoned[0].Reason == "" {
				t.Errorf("ask__confirm_delete records = %s, want one abandoned call of alice with its reason", raw)
			}
			if out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir); code != 0 {
				t.Errorf("audit verify: exit %d\n%s%s", code, out, stderr)
			}
		})
	}
}

// TestBridgedCallsShutdown: SIGTERM while calls wait for a client that never answers
// (and an upstream that never withdraws its question) exits within shutdown_timeout,
// with every such call recorded as abandoned in a trail that verifies.
func TestBridgedCallsShutdown(t *testing.T) {
	const shutdown = 3 * time.Second
	cfg, _ := bridgeConfig(t, fmt.Sprintf("input_timeout = \"10m\"\nshutdown_timeout = %q", shutdown), "10m")
	s := serve(t, cfg)
	cs := modernClient(t, s, bridgeAlice)
	const calls = 3
	for i := range calls {
		askDelete(t, cs, fmt.Sprintf("/srv/%d", i))
	}
	if pending, _ := bridgeReady(t, s); pending != calls {
		t.Fatalf("/readyz: %d bridged calls pending, want %d", pending, calls)
	}
	took, err := stopServed(t, s)
	if err != nil {
		t.Errorf("symbi serve exited with %v\n%s", err, s.stderr.String())
	}
	// Process start-up and exit add a little to the bound symbi keeps itself.
	if took > shutdown+time.Second {
		t.Errorf("symbi serve took %s to exit after SIGTERM, want at most shutdown_timeout (%s)", took, shutdown)
	}
	auditDir := filepath.Join(dataDirOf(cfg), "audit")
	recs, raw := auditQuery(t, auditDir, "--tool", "ask__confirm_delete")
	n := 0
	for _, r := range recs {
		if r.Outcome == "abandoned" && strings.Contains(r.Reason, "shut down") {
			n++
		}
	}
	if n != calls {
		t.Errorf("ask__confirm_delete records = %s, want %d calls abandoned at shutdown", raw, calls)
	}
	if out, stderr, code := runCLI(t, "audit", "verify", "--dir", auditDir); code != 0 {
		t.Errorf("audit verify: exit %d\n%s%s", code, out, stderr)
	}
}

// TestBridgedCallsBound: an identity that piles up calls it never answers hits its
// bound and is refused with a retryable error (-32002, unavailable), counted in the
// metrics and shown in /readyz, while another identity is still served end to end.
func TestBridgedCallsBound(t *testing.T) {
	cfg, _ := bridgeConfig(t, "input_timeout = \"10m\"\nmax_pending_inputs = 10\nmax_pending_inputs_per_identity = 2", "10m")
	s := serve(t, cfg)
	alice := modernClient(t, s, bridgeAlice)
	askDelete(t, alice, "/a/1")
	askDelete(t, alice, "/a/2")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := alice.CallTool(ctx, &mcp.CallToolParams{Name: "ask__confirm_delete", Arguments: map[string]any{"path": "/a/3"}})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != -32002 || !strings.Contains(je.Message, "retry") {
		t.Fatalf("third pending call of alice: %v, want a retryable -32002 error", err)
	}
	if v := metric(t, s, `symbi_bridged_calls_refused_total{limit="identity"}`); v != 1 {
		t.Errorf("symbi_bridged_calls_refused_total{identity} = %v, want 1", v)
	}
	if pending, by := bridgeReady(t, s); pending != 2 || by["alice"] != 2 {
		t.Errorf("/readyz: %d pending %v, want alice's 2", pending, by)
	}

	// bob is served, question and answer.
	bob := modernClient(t, s, bridgeBob)
	state := askDelete(t, bob, "/b/1")
	res, err := retry(bob, "/b/1", state, &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}})
	if err != nil || resultText(res) != "deleted /b/1" {
		t.Fatalf("bob's answered call = %+v, %v; want deleted /b/1", res, err)
	}
	// alice may not answer bob's call with his state.
	state = askDelete(t, bob, "/b/2")
	if _, err := retry(alice, "/b/2", state, &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}}); err == nil {
		t.Error("alice answered a call of bob's")
	}
}
