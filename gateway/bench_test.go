package gateway_test

// Benchmarks of the hot path, in process: a tools/call through the gateway (client →
// gateway → stdio-framed pipes → an in-process go-sdk server) against the same call made
// directly to that server, with and without the policy and audit steps.
//
//	go test -run '^$' -bench ToolsCall -benchmem ./gateway
//	go test -run '^$' -bench 'ToolsCall/2025-11-25' -benchmem -cpuprofile cpu.out ./gateway
//	go tool pprof -top -cum gateway.test cpu.out

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/policy"
)

// benchServer is the upstream: one echo tool, as small as a real tool gets.
func benchServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "bench-upstream", Version: "1"}, nil)
	type in struct {
		Message string `json:"message"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echo a message back."},
		func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + a.Message}}}, nil, nil
		})
	return s
}

// pipeProcess is a gateway.Process whose "command" is benchServer run in process over
// io.Pipe pairs with newline-delimited JSON, exactly what a stdio upstream speaks.
type pipeProcess struct {
	stdinW  *io.PipeWriter // the gateway writes here; the server reads stdinR
	stdoutR *io.PipeReader // the gateway reads here; the server writes stdoutW
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
}

func pipeLauncher(ctx context.Context) (gateway.Process, error) {
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &pipeProcess{stdinW: stdinW, stdoutR: stdoutR, cancel: cancel, done: make(chan struct{})}
	go func() { // owned by p: Stop and Wait wait for it
		defer close(p.done)
		p.err = benchServer().Run(ctx, &mcp.IOTransport{Reader: stdinR, Writer: stdoutW})
		stdoutW.Close()
		stdinR.Close()
	}()
	return p, nil
}

func (p *pipeProcess) Stdin() io.WriteCloser { return p.stdinW }
func (p *pipeProcess) Stdout() io.ReadCloser { return p.stdoutR }
func (p *pipeProcess) Tier() string          { return "none" }
func (p *pipeProcess) Wait() error           { <-p.done; return p.err }

func (p *pipeProcess) Stop(ctx context.Context) error {
	p.stdinW.Close()
	// As a killed process's would, the server's writes end too: one blocked writing an
	// answer nobody reads would otherwise outlive the test (goleak).
	p.stdoutR.Close()
	p.cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// benchSetup describes one configuration under test.
type benchSetup struct {
	name      string
	gateway   bool
	policy    bool
	audit     bool
	transport string // "inmem" or "http"
	sdkPath   bool   // tools/call through the go-sdk client (Options.NoFastPath)
	sdkServe  bool   // tools/call through the go-sdk's HTTP handler (Options.NoFastServe)
}

// connector opens client sessions to one configuration; its cleanup is registered on b.
type connector struct {
	tool    string
	connect func(ctx context.Context, protocol string) (*mcp.ClientSession, error)
}

func newConnector(b *testing.B, s benchSetup) *connector {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	var server *mcp.Server
	tool := "echo"
	if !s.gateway {
		server = benchServer()
	} else {
		g := gateway.New(&gateway.Options{
			Upstreams:   []gateway.UpstreamConfig{{Name: "up", Prefix: "up", Launch: pipeLauncher}},
			InitialWait: 10 * time.Second,
			NoFastPath:  s.sdkPath,
			NoFastServe: s.sdkServe,
		})
		if s.policy {
			g.UsePolicy(gateway.PolicyOptions{Engine: policy.Default()})
		}
		if s.audit {
			log, err := audit.Open(&audit.Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = log.Close() })
			g.UseAudit(gateway.AuditOptions{Log: log})
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // owned: ends when ctx is cancelled at cleanup
			defer wg.Done()
			_ = g.Run(ctx)
		}()
		b.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait() })
		g.WaitReady(ctx)
		if _, ok := g.Tool("up__echo"); !ok {
			b.Fatalf("up__echo not exposed; status %+v", g.Status())
		}
		server, tool = g.Server(), "up__echo"
		if s.transport == "http" {
			hs := httptest.NewServer(g.Handler(nil))
			b.Cleanup(hs.Close)
			return httpConnector(b, hs.URL+"/mcp", tool)
		}
	}
	if s.transport == "http" {
		h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
		hs := httptest.NewServer(h)
		b.Cleanup(hs.Close)
		return httpConnector(b, hs.URL+"/mcp", tool)
	}
	return &connector{tool: tool, connect: func(ctx context.Context, protocol string) (*mcp.ClientSession, error) {
		ct, st := mcp.NewInMemoryTransports()
		ss, err := server.Connect(ctx, st, nil)
		if err != nil {
			return nil, fmt.Errorf("connect server: %w", err)
		}
		b.Cleanup(func() { _ = ss.Close() })
		return benchClient(ctx, b, ct, protocol)
	}}
}

func httpConnector(b *testing.B, url, tool string) *connector {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(hc.CloseIdleConnections)
	return &connector{tool: tool, connect: func(ctx context.Context, protocol string) (*mcp.ClientSession, error) {
		return benchClient(ctx, b, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, MaxRetries: -1}, protocol)
	}}
}

func benchClient(ctx context.Context, b *testing.B, t mcp.Transport, protocol string) (*mcp.ClientSession, error) {
	c := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
	cs, err := c.Connect(ctx, t, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	if err != nil {
		return nil, fmt.Errorf("connect client: %w", err)
	}
	b.Cleanup(func() { _ = cs.Close() })
	return cs, nil
}

func benchCall(ctx context.Context, cs *mcp.ClientSession, params *mcp.CallToolParams) error {
	res, err := cs.CallTool(ctx, params)
	if err != nil {
		return err
	}
	if res.IsError || len(res.Content) != 1 {
		return errors.New("unexpected tool result")
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); !ok || tc.Text != "echo: hi" {
		return fmt.Errorf("unexpected tool result %+v", res.Content[0])
	}
	return nil
}

var benchSetups = []benchSetup{
	{name: "direct/inmem", transport: "inmem"},
	{name: "gateway/inmem", gateway: true, transport: "inmem"},
	{name: "gateway+policy/inmem", gateway: true, policy: true, transport: "inmem"},
	{name: "gateway+audit/inmem", gateway: true, audit: true, transport: "inmem"},
	{name: "gateway+policy+audit/inmem", gateway: true, policy: true, audit: true, transport: "inmem"},
	{name: "direct/http", transport: "http"},
	{name: "gateway/http", gateway: true, transport: "http"},
	{name: "gateway+sdkserve/http", gateway: true, transport: "http", sdkServe: true},
	{name: "gateway+sdkpath/http", gateway: true, transport: "http", sdkPath: true},
	{name: "gateway+policy+audit/http", gateway: true, policy: true, audit: true, transport: "http"},
	{name: "gateway+policy+audit+sdkserve/http", gateway: true, policy: true, audit: true, transport: "http", sdkServe: true},
	{name: "gateway+policy+audit+sdkpath/http", gateway: true, policy: true, audit: true, transport: "http", sdkPath: true},
}

var benchProtocols = []string{"2025-11-25", "2026-07-28"}

// BenchmarkToolsCall is one client making one call at a time: ns/op is the latency of a
// call, allocs/op what the whole path (client, gateway, upstream) allocates for it.
func BenchmarkToolsCall(b *testing.B) {
	for _, proto := range benchProtocols {
		for _, s := range benchSetups {
			b.Run(proto+"/"+s.name, func(b *testing.B) {
				c := newConnector(b, s)
				ctx := context.Background()
				cs, err := c.connect(ctx, proto)
				if err != nil {
					b.Fatal(err)
				}
				params := &mcp.CallToolParams{Name: c.tool, Arguments: map[string]any{"message": "hi"}}
				for range 20 { // warm up (and, for 2026-07-28, start the on-demand connection)
					if err := benchCall(ctx, cs, params); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				start, cpu := time.Now(), cpuTime()
				for b.Loop() {
					if err := benchCall(ctx, cs, params); err != nil {
						b.Fatal(err)
					}
				}
				reportRate(b, start, cpu)
			})
		}
	}
}

// BenchmarkToolsCallParallel is 16 client sessions calling at once (the load tool's
// shape): calls/s is the throughput on this machine's cores.
func BenchmarkToolsCallParallel(b *testing.B) {
	const sessions = 16
	for _, proto := range benchProtocols {
		for _, s := range benchSetups {
			if s.policy != s.audit { // the two ends are enough here
				continue
			}
			b.Run(proto+"/"+s.name, func(b *testing.B) {
				c := newConnector(b, s)
				ctx := context.Background()
				pool := make([]*mcp.ClientSession, sessions)
				for i := range pool {
					cs, err := c.connect(ctx, proto)
					if err != nil {
						b.Fatal(err)
					}
					pool[i] = cs
				}
				params := &mcp.CallToolParams{Name: c.tool, Arguments: map[string]any{"message": "hi"}}
				for _, cs := range pool {
					if err := benchCall(ctx, cs, params); err != nil {
						b.Fatal(err)
					}
				}
				var next atomic.Int64
				b.ReportAllocs()
				b.SetParallelism((sessions + 1) / 2) // × GOMAXPROCS(2) = 16 goroutines here
				b.ResetTimer()
				start, cpu := time.Now(), cpuTime()
				b.RunParallel(func(pb *testing.PB) {
					cs := pool[int(next.Add(1)-1)%sessions]
					for pb.Next() {
						// Fresh params per call: the SDK writes the request's _meta into them.
						p := &mcp.CallToolParams{Name: c.tool, Arguments: map[string]any{"message": "hi"}}
						if err := benchCall(ctx, cs, p); err != nil {
							b.Error(err)
							return
						}
					}
				})
				reportRate(b, start, cpu)
			})
		}
	}
}

// cpuTime is the user and system CPU time of this process so far: every goroutine of
// the client, the gateway, the in-process upstream and the audit writer.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate adds calls/s (wall clock) and cpu-ns/op (CPU time of the whole process per
// call; steadier than ns/op on a machine shared with other work).
func reportRate(b *testing.B, start time.Time, cpu time.Duration) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
}
