package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestApprovalReachesRunningSymbi: after `symbi tools approve` (another process, same
// data_dir) a running symbi re-lists its upstreams, so the approved tool appears without
// any change from the upstream: by itself (it watches the quarantine's decisions), and at
// once on SIGHUP, which also reloads the policy.
func TestApprovalReachesRunningSymbi(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sighup bool
	}{
		{"by itself", false},
		{"on SIGHUP", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := filepath.Join(t.TempDir(), "spec.json")
			writeSpec(t, spec, mutableSpec{Description: "Probe: brand new."})
			cfg := mutableConfig(t, spec, `schemapin = { first_seen = "pending" }`)
			s := serve(t, cfg)
			cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
			if listedNow(t, cs, "mut__probe") {
				t.Fatal("a pending first-seen tool is listed")
			}
			if out, stderr, code := runCLI(t, "tools", "approve", "--data-dir", dataDirOf(cfg), "probe"); code != 0 {
				t.Fatalf("tools approve: exit %d\n%s%s", code, out, stderr)
			}
			if tc.sighup {
				if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 10*time.Second, "the reload to be logged", func() bool {
					return strings.Contains(s.stderr.String(), "reload requested (SIGHUP)")
				})
			}
			waitFor(t, 15*time.Second, "the approved tool", func() bool { return listedNow(t, cs, "mut__probe") })
		})
	}
}

// TestGracefulShutdownDrains: SIGTERM lets an in-flight call finish, stops the upstream
// processes and exits 0.
func TestGracefulShutdownDrains(t *testing.T) {
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t)))
	s := serve(t, cfg)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	type result struct {
		text  string
		isErr bool
		err   error
	}
	got := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "mg__sleep", Arguments: map[string]any{"ms": 1500}})
		if err != nil {
			got <- result{err: err}
			return
		}
		got <- result{text: resultText(res), isErr: res.IsError}
	}()
	time.Sleep(300 * time.Millisecond) // the call is in flight
	children := childrenOf(s.cmd.Process.Pid)
	if len(children) == 0 {
		t.Fatal("symbi serve has no child process (the upstream)")
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.isErr || r.text != "slept" {
		t.Errorf("in-flight call during shutdown: %+v, want it to finish", r)
	}
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Errorf("symbi serve exited with %v, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("symbi serve did not exit after SIGTERM")
	}
	// No upstream process is left behind.
	for _, pid := range children {
		if _, err := os.Stat(filepath.Join("/proc", pid)); err == nil {
			stat, _ := os.ReadFile(filepath.Join("/proc", pid, "stat"))
			if !strings.Contains(string(stat), ") Z ") { // a zombie is already dead
				t.Errorf("upstream process %s outlived symbi", pid)
			}
		}
	}
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(pid int) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == fmt.Sprint(pid) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestMetricsExposed: /metrics has per-method, upstream and tool series and upstream
// state.
func TestMetricsExposed(t *testing.T) {
	pol := t.TempDir()
	rego := "package symbi.authz\n\ndecision := {\"allow\": false, \"reason\": \"no crashing\"} if input.tool.upstream_name == \"crash\"\n\ndecision := {\"allow\": true} if input.tool.upstream_name != \"crash\"\n\ndecision := {\"allow\": true} if not input.tool\n"
	if err := os.WriteFile(filepath.Join(pol, "authz.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, upstreamTOML("mg", "mg", mcpgoServer(t))+fmt.Sprintf("[policy]\ndir = %q\n", pol))
	s := serve(t, cfg)
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp"}, nil)
	callText(t, cs, "mg__echo", map[string]any{"message": "m"})
	callText(t, cs, "mg__echo", map[string]any{"message": "the same tool again: a cached decision"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "mg__crash", Arguments: map[string]any{}}); err == nil || !strings.Contains(err.Error(), "no crashing") {
		t.Errorf("mg__crash: %v, want the policy's denial", err)
	}
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.WriteString(string(buf[:n]))
		if err != nil {
			break
		}
	}
	body := b.String()
	for _, want := range []string{
		`symbi_requests_total{method="tools/call",tool="mg__echo",upstream="mg"} 2`,
		"symbi_policy_cacheable 1",
		`symbi_request_duration_seconds_bucket{method="tools/call",tool="mg__echo",upstream="mg",le=`,
		`symbi_request_errors_total{kind="denied",method="tools/call",tool="mg__crash",upstream="mg"} 1`,
		`symbi_denials_total{method="tools/call",step="policy"} 1`,
		`symbi_upstream_tools_hidden{upstream="mg"} 0`,
		`symbi_audit_events_appended_total`,
		`symbi_upstream_up{upstream="mg"}`,
		`symbi_sessions `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The policy reads only input.tool: the second call's decision came from the cache.
	if strings.Contains(body, "symbi_policy_cache_hits_total 0\n") || !strings.Contains(body, "symbi_policy_cache_hits_total ") {
		t.Errorf("no policy cache hit counted:\n%s", grepLines(body, "symbi_policy_cache"))
	}
}

// TestAuditSyslogSink: with [audit] syslog set, every event also reaches a syslog
// collector as an RFC 5424 message.
func TestAuditSyslogSink(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := writeConfig(t, fmt.Sprintf("[audit]\nsyslog = \"udp://%s\"\n", pc.LocalAddr()))
	cs := connect(t, stdioTransport(t, cfg), nil)
	callText(t, cs, "symbi__status", map[string]any{})
	_ = pc.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no syslog message about the call: %v", err)
		}
		msg := string(buf[:n])
		if !strings.HasPrefix(msg, "<") || !strings.Contains(msg, " symbi ") {
			t.Fatalf("not an RFC 5424 message from symbi: %q", msg)
		}
		if strings.Contains(msg, "symbi__status") {
			return
		}
	}
}

// TestAuditLiveStream: /audit/stream streams new audit events over SSE, behind the same
// authentication as /mcp.
func TestAuditLiveStream(t *testing.T) {
	t.Setenv("SYMBI_TEST_TOKEN", "stream-token-0123456789")
	cfg := writeConfig(t, "[[server.tokens]]\ntoken = \"env:SYMBI_TEST_TOKEN\"\nidentity = \"dash\"\n")
	s := serve(t, cfg)
	if resp, err := http.Get("http://" + s.addr + "/audit/stream"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unauthenticated /audit/stream: %d, want 401", resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/audit/stream", nil)
	req.Header.Set("Authorization", "Bearer stream-token-0123456789")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content type %q", ct)
	}
	tr := &mcp.StreamableClientTransport{Endpoint: "http://" + s.addr + "/mcp", HTTPClient: &http.Client{Transport: bearer{token: "stream-token-0123456789", next: http.DefaultTransport}}}
	cs := connect(t, tr, nil)
	callText(t, cs, "symbi__status", map[string]any{})
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") && strings.Contains(sc.Text(), "symbi__status") && strings.Contains(sc.Text(), `"dash"`) {
			return
		}
	}
	t.Fatalf("no streamed event for the call: %v", sc.Err())
}

// TestAuditStreamPolicy: the policy decides who may watch the audit stream (action
// "audit/stream"); a refused client gets 403 with the reason, and the refusal is in the
// trail.
func TestAuditStreamPolicy(t *testing.T) {
	pol := t.TempDir()
	rego := `package symbi.authz

decision := {"allow": false, "reason": "the audit stream is for operators"} if {
	input.action == "audit/stream"
	input.identity.id != "ops"
}

decision := {"allow": true} if input.action != "audit/stream"

decision := {"allow": true} if {
	input.action == "audit/stream"
	input.identity.id == "ops"
}
`
	if err := os.WriteFile(filepath.Join(pol, "authz.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SYMBI_TEST_OPS", "ops-token-0123456789abc")
	t.Setenv("SYMBI_TEST_DEV", "dev-token-0123456789abc")
	cfg := writeConfig(t, "[[server.tokens]]\ntoken = \"env:SYMBI_TEST_OPS\"\nidentity = \"ops\"\n\n"+
		"[[server.tokens]]\ntoken = \"env:SYMBI_TEST_DEV\"\nidentity = \"dev\"\n\n"+
		fmt.Sprintf("[policy]\ndir = %q\n", pol))
	s := serve(t, cfg)
	open := func(token string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+"/audit/stream", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		return resp.StatusCode, resp.Header.Get("Content-Type")
	}
	if code, body := open("dev-token-0123456789abc"); code != http.StatusForbidden || !strings.Contains(body, "the audit stream is for operators") {
		t.Errorf("dev opens the audit stream: %d %q, want 403 with the policy's reason", code, body)
	}
	if code, ct := open("ops-token-0123456789abc"); code != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("ops opens the audit stream: %d %q, want 200 event stream", code, ct)
	}
	// The refusal is recorded.
	waitFor(t, 10*time.Second, "the refusal in the audit trail", func() bool {
		out, _, _ := runCLI(t, "audit", "query", "--dir", filepath.Join(dataDirOf(cfg), "audit"), "--type", "decision", "--format", "json")
		return strings.Contains(out, `"audit/stream"`) && strings.Contains(out, `"dev"`)
	})
}
