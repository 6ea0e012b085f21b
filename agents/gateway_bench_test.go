package agents

// BenchmarkWorkflowRuns: 10,000 two-step workflow agents run at once against a fixture
// MCP upstream, wired as `symbi serve` wires them: their steps go through the gateway's
// chain (default policy, the signed audit trail, with the agent's identity), their
// lifecycle transitions and run ends are audited, their state and runs are kept in a
// SQLite state file, and the scheduler runs them. The "direct" sub-benchmark runs the
// same workflows' steps through the same chain with the runtime bypassed (no scheduler,
// no lifecycle, no store, no lifecycle audit): the difference is the runtime's cost.
//
//	go test -run '^$' -bench WorkflowRuns -benchtime 1x -count 3 ./agents/

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/gateway"
	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/policy"
)

// fixtureServer is the upstream: read returns a short document, write echoes its text.
func fixtureServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "fixture-upstream", Version: "1"}, nil)
	type writeIn struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "read", Description: "Read the document."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello"}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "write", Description: "Write a text."},
		func(_ context.Context, _ *mcp.CallToolRequest, in writeIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "wrote " + in.Text}}}, nil, nil
		})
	return s
}

// pipeUpstream is a gateway.Process whose command is fixtureServer run in process over
// io.Pipe pairs, speaking newline-delimited JSON as a stdio upstream does.
type pipeUpstream struct {
	stdinW  *io.PipeWriter
	stdoutR *io.PipeReader
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
}

func launchFixture(ctx context.Context) (gateway.Process, error) {
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &pipeUpstream{stdinW: stdinW, stdoutR: stdoutR, cancel: cancel, done: make(chan struct{})}
	go func() { // owned by p: Stop and Wait wait for it
		defer close(p.done)
		p.err = fixtureServer().Run(ctx, &mcp.IOTransport{Reader: stdinR, Writer: stdoutW})
		stdoutW.Close()
		stdinR.Close()
	}()
	return p, nil
}

func (p *pipeUpstream) Stdin() io.WriteCloser { return p.stdinW }
func (p *pipeUpstream) Stdout() io.ReadCloser { return p.stdoutR }
func (p *pipeUpstream) Tier() string          { return "none" }
func (p *pipeUpstream) Wait() error           { <-p.done; return p.err }

func (p *pipeUpstream) Stop(ctx context.Context) error {
	p.stdinW.Close()
	p.stdoutR.Close()
	p.cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// chainCaller is the ToolCaller `symbi serve` gives workflow agents (cmd/symbi): a call
// through the gateway's chain as the agent, a policy denial as a *DeniedError.
type chainCaller struct{ gw *gateway.Gateway }

func (c chainCaller) CallTool(ctx context.Context, identity, tool string, args json.RawMessage) (*mcp.CallToolResult, error) {
	res, err := c.gw.CallTool(ctx, gateway.Identity{ID: identity, Kind: "agent"}, tool, args)
	var ge *gateway.Error
	if errors.As(err, &ge) && ge.Kind == gateway.Denied {
		return nil, &DeniedError{Reason: ge.Public}
	}
	return res, err
}

// benchGateway starts a gateway on the fixture upstream with the default policy and an
// audit trail in a temporary directory; both end at the benchmark's cleanup.
func benchGateway(b *testing.B) (*gateway.Gateway, *audit.Log) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log, err := audit.Open(&audit.Options{Dir: filepath.Join(b.TempDir(), "audit")})
	if err != nil {
		b.Fatal(err)
	}
	g := gateway.New(&gateway.Options{
		Upstreams:   []gateway.UpstreamConfig{{Name: "fx", Prefix: "fx", Launch: launchFixture}},
		InitialWait: 10 * time.Second,
	})
	g.UseAudit(gateway.AuditOptions{Log: log})
	g.UsePolicy(gateway.PolicyOptions{Engine: policy.Default()})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned: ends when ctx is cancelled at cleanup
		defer wg.Done()
		_ = g.Run(ctx)
	}()
	b.Cleanup(func() { cancel(); _ = g.Close(); wg.Wait(); _ = log.Close() })
	g.WaitReady(ctx)
	for _, tool := range []string{"fx__read", "fx__write"} {
		if _, ok := g.Tool(tool); !ok {
			b.Fatalf("%s not exposed; status %+v", tool, g.Status())
		}
	}
	return g, log
}

func benchSteps() []Step {
	return []Step{{Tool: "fx__read", Save: "doc"}, {Tool: "fx__write", Arguments: map[string]any{"text": "{{ .doc.text }} world"}}}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkWorkflowRuns(b *testing.B) {
	const n = 10000
	b.Run("runtime", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			gw, alog := benchGateway(b)
			db, err := store.Open(filepath.Join(b.TempDir(), store.FileName))
			if err != nil {
				b.Fatal(err)
			}
			st, err := OpenStore(context.Background(), db)
			if err != nil {
				b.Fatal(err)
			}
			sched := NewScheduler(&Options{MaxRunning: n, MaxQueued: n})
			var succeeded, ended atomic.Int64
			all := make(chan struct{})
			record := func(ev audit.Event) { // as cmd/symbi records the runtime's events
				if ev.Type == TypeAgentRun && ev.Detail["state"] == string(RunSucceeded) {
					succeeded.Add(1)
				}
				actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if err := alog.Append(actx, ev); err != nil {
					b.Error(err)
				}
			}
			rt := NewRuntime(RuntimeOptions{Scheduler: sched, Store: st, Caller: chainCaller{gw}, Record: record,
				OnRunEnd: func(context.Context, string) {
					if ended.Add(1) == n {
						close(all)
					}
				}})
			defs := make([]Definition, n)
			for i := range defs {
				defs[i] = Definition{Name: fmt.Sprintf("agent-%05d", i), Kind: "workflow", Steps: benchSteps()}
			}
			if err := rt.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			if err := rt.Sync(context.Background(), defs); err != nil {
				b.Fatal(err)
			}
			cpu0, start := processCPU(), time.Now()
			b.StartTimer()
			for _, d := range defs {
				if _, err := rt.Run(context.Background(), d.Name, "manual", "bench"); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-all:
			case <-time.After(5 * time.Minute):
				b.Fatalf("%d of %d runs ended in 5 minutes", ended.Load(), n)
			}
			if err := st.Flush(context.Background()); err != nil { // the runs' rows are part of the cost
				b.Fatal(err)
			}
			if err := alog.Flush(context.Background()); err != nil { // and so is signing the trail
				b.Fatal(err)
			}
			b.StopTimer()
			el, cpu := time.Since(start), processCPU()-cpu0
			if got := succeeded.Load(); got != n {
				b.Fatalf("%d of %d runs succeeded", got, n)
			}
			b.ReportMetric(n/el.Seconds(), "runs/s")
			b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/run")
			_ = rt.Close()
			_ = sched.Close(context.Background())
			db.Close()
		}
	})
	b.Run("direct", func(b *testing.B) {
		wf, err := compileWorkflow(benchSteps())
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			b.StopTimer()
			gw, alog := benchGateway(b)
			caller := chainCaller{gw}
			var wg sync.WaitGroup
			var succeeded atomic.Int64
			cpu0, start := processCPU(), time.Now()
			b.StartTimer()
			for i := range n {
				id := fmt.Sprintf("agent:agent-%05d", i)
				wg.Add(1)
				go func() { // owned: the benchmark waits for it
					defer wg.Done()
					rec := &RunRecord{}
					out := wf.run(context.Background(), func(ctx context.Context, tool string, args json.RawMessage) (*mcp.CallToolResult, error) {
						return caller.CallTool(ctx, id, tool, args)
					}, rec, func() {})
					if out.state == RunSucceeded {
						succeeded.Add(1)
					}
				}()
			}
			wg.Wait()
			if err := alog.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			el, cpu := time.Since(start), processCPU()-cpu0
			if got := succeeded.Load(); got != n {
				b.Fatalf("%d of %d runs succeeded", got, n)
			}
			b.ReportMetric(n/el.Seconds(), "runs/s")
			b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/run")
		}
	})
}
