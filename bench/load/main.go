// Command load measures what symbi adds to a tools/call. It starts an upstream MCP
// server twice over (once serving streamable HTTP for direct calls, once as symbi's stdio
// upstream), starts `symbi serve` on loopback in front of it, and drives both with go-sdk
// clients: a serial phase (one client, one call at a time) for unloaded latency, and a
// concurrent phase (-c clients, each its own session) for throughput and latency under
// load. It prints p50/p99 latency, calls/s, CPU per call and symbi's resident memory.
//
// Usage (from the repository root):
//
//	go run ./bench/load -n 5000 -c 16
//
// With -payload SIZE (e.g. 4MB, with -kind mcpgo) every measured call carries an argument
// of that size, and calls that symbi refuses for load (HTTP 429/503, retryable) are
// counted and retried after -refused-wait; its peak and final RSS show what the in-flight
// byte limits bound. -server-toml adds keys to symbi's [server] table (e.g. raised limits).
//
// Binaries are built into a temporary directory unless -symbi / -upstream name them.
// Every run is bounded by -n calls and -timeout per phase; all processes are stopped on
// exit (also on Ctrl-C).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const everythingPkg = "github.com/modelcontextprotocol/go-sdk/conformance/everything-server"

type config struct {
	n, c, serial, warmup int
	timeout              time.Duration
	symbiBin, upBin      string
	kind                 string
	tool                 string
	args                 map[string]any
	protocols            []string
	keep                 bool
	policyDir            string
	payload              int64         // size of the echo argument of each measured call; 0: the small default call
	refusedWait          time.Duration // wait before retrying a call refused with 429/503
	serverTOML           string        // extra lines for symbi's [server] table, written only when set
	noDirect             bool          // skip the direct target
}

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "load:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	return 0
}

// parseFlags parses the command line into a config; usage and flag errors go to errOut.
func parseFlags(args []string, errOut io.Writer) (*config, error) {
	var cfg config
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.IntVar(&cfg.n, "n", 5000, "calls in the concurrent phase (per target and protocol)")
	fs.IntVar(&cfg.c, "c", 16, "concurrent clients, each its own session")
	fs.IntVar(&cfg.serial, "serial", 1000, "calls in the serial (one at a time) phase; 0 skips it")
	fs.IntVar(&cfg.warmup, "warmup", 50, "warm-up calls per session before measuring (small calls, also with -payload)")
	fs.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "time bound of each phase")
	fs.StringVar(&cfg.symbiBin, "symbi", "", "symbi binary (default: go build ./cmd/symbi)")
	fs.StringVar(&cfg.upBin, "upstream", "", "upstream server binary; must accept -http ADDR (default: go build the go-sdk everything-server, or ./test/servers/mcpgo with -kind mcpgo)")
	fs.StringVar(&cfg.kind, "kind", "everything", "upstream kind: everything (go-sdk conformance server, tool test_simple_text) or mcpgo (mark3labs/mcp-go, tool echo)")
	proto := fs.String("protocols", "2026-07-28,2025-11-25", "client protocol versions to measure, comma-separated")
	fs.StringVar(&cfg.policyDir, "policy-dir", "", "symbi [policy] dir (default: the built-in policy)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (binaries, config, audit trail)")
	payload := fs.String("payload", "0", "argument size of each measured call (bytes, or with a unit: 4MB = 4000000, 4MiB = 4194304); needs -kind mcpgo; 0: the small default call")
	fs.DurationVar(&cfg.refusedWait, "refused-wait", time.Second, "with -payload: wait before retrying a call refused with HTTP 429/503 (symbi sends Retry-After: 1)")
	fs.StringVar(&cfg.serverTOML, "server-toml", "", "extra TOML lines for symbi's [server] table, e.g. 'max_inflight_bytes = 1073741824' (none by default)")
	fs.BoolVar(&cfg.noDirect, "no-direct", false, "measure symbi only, not the upstream called directly")
	fs.SetOutput(errOut)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.n <= 0 || cfg.c <= 0 {
		return nil, errors.New("-n and -c must be positive")
	}
	if cfg.refusedWait < 0 {
		return nil, errors.New("-refused-wait must not be negative")
	}
	var err error
	if cfg.payload, err = parseSize(*payload); err != nil {
		return nil, fmt.Errorf("parse -payload: %w", err)
	}
	switch cfg.kind {
	case "everything":
		if cfg.payload > 0 {
			return nil, errors.New("-payload needs -kind mcpgo (its echo tool takes the argument)")
		}
		cfg.tool, cfg.args = "test_simple_text", map[string]any{}
	case "mcpgo":
		cfg.tool, cfg.args = "echo", map[string]any{"message": "hello"}
	default:
		return nil, fmt.Errorf("unknown -kind %q", cfg.kind)
	}
	for _, p := range strings.Split(*proto, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.protocols = append(cfg.protocols, p)
		}
	}
	if len(cfg.protocols) == 0 {
		return nil, errors.New("-protocols names no version")
	}
	return &cfg, nil
}

var sizeUnits = map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

// parseSize parses a byte count: a non-negative integer with an optional unit (B, KB, MB,
// GB decimal; KiB, MiB, GiB binary), at most 1 GiB.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit (B, KB, MB, GB, KiB, MiB, GiB)", s)
	}
	unit, ok := sizeUnits[strings.TrimSpace(s[i:])]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, KB, MB, GB, KiB, MiB or GiB)", s, strings.TrimSpace(s[i:]))
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > (1<<30)/unit {
		return 0, fmt.Errorf("size %q: more than 1 GiB", s)
	}
	return n * unit, nil
}

// result is one measured phase.
type result struct {
	target, protocol, phase string
	calls, errors           int
	refused429, refused503  int // retryable refusals (each retried; not in calls or errors)
	p50, p99, mean          time.Duration
	elapsed                 time.Duration
	cpuPerCall              time.Duration // of the server process measured (symbi, or the direct upstream)
	childCPUPerCall         time.Duration // of symbi's stdio upstream processes
}

func (r result) rate() float64 { return float64(r.calls) / r.elapsed.Seconds() }

func bench(ctx context.Context, cfg *config, out io.Writer) error {
	tmp, err := os.MkdirTemp("", "symbi-load-")
	if err != nil {
		return fmt.Errorf("create temp dir: %w", err)
	}
	if cfg.keep {
		fmt.Fprintln(os.Stderr, "load: temporary directory", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if cfg.symbiBin == "" {
		if cfg.symbiBin, err = build(ctx, tmp, "symbi", "./cmd/symbi"); err != nil {
			return err
		}
	}
	if cfg.upBin == "" {
		pkg := everythingPkg
		if cfg.kind == "mcpgo" {
			pkg = "./test/servers/mcpgo"
		}
		if cfg.upBin, err = build(ctx, tmp, cfg.kind, pkg); err != nil {
			return err
		}
	}

	hc := &http.Client{Transport: &http.Transport{
		MaxIdleConns: 4 * cfg.c, MaxIdleConnsPerHost: 4 * cfg.c, IdleConnTimeout: time.Minute,
	}}
	var results []result

	// Direct: the upstream serving streamable HTTP itself.
	for _, p := range cfg.protocols {
		if cfg.noDirect {
			break
		}
		args := []string{"-http", ""}
		if cfg.kind == "everything" && p < "2026-07-28" {
			args = append(args, "-stateless=false") // the stateful generation, as a real server would
		}
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		args[1] = addr
		up, err := start(ctx, cfg.upBin, args, nil)
		if err != nil {
			return err
		}
		if err := waitDial(ctx, addr, 20*time.Second); err != nil {
			up.stop()
			return fmt.Errorf("start upstream: %w\n%s", err, up.stderr.String())
		}
		rs, err := measure(ctx, cfg, hc, "direct", p, "http://"+addr+"/mcp", cfg.tool, up.cmd.Process.Pid)
		up.stop()
		if err != nil {
			return fmt.Errorf("direct %s: %w", p, err)
		}
		results = append(results, rs...)
	}

	// Proxied: symbi over streamable HTTP, the upstream over stdio.
	sym, addr, err := startSymbi(ctx, cfg, tmp)
	if err != nil {
		return err
	}
	defer sym.stop()
	idle := readMem(sym.cmd.Process.Pid)
	type memRow struct {
		when string
		mem  memInfo
	}
	mems := []memRow{{"idle (after start)", idle}}
	for _, p := range cfg.protocols {
		rs, err := measure(ctx, cfg, hc, "symbi", p, "http://"+addr+"/mcp", "up__"+cfg.tool, sym.cmd.Process.Pid)
		if err != nil {
			return fmt.Errorf("symbi %s: %w\n%s", p, err, sym.stderr.String())
		}
		results = append(results, rs...)
		mems = append(mems, memRow{"after " + p, readMem(sym.cmd.Process.Pid)})
	}
	sym.stop()

	fmt.Fprintf(out, "tools/call %s (%s upstream), %d serial calls, %d calls with %d concurrent sessions", cfg.tool, cfg.kind, cfg.serial, cfg.n, cfg.c)
	if cfg.payload > 0 {
		fmt.Fprintf(out, ", argument of %d bytes per call", cfg.payload)
	}
	fmt.Fprintln(out)
	if cfg.serverTOML != "" {
		fmt.Fprintf(out, "symbi [server] extra: %s\n", strings.ReplaceAll(cfg.serverTOML, "\n", "; "))
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tprotocol\tphase\tcalls\terrors\trefused 429/503\tp50\tp99\tmean\tcalls/s\tCPU/call\tupstream CPU/call\t")
	for _, r := range results {
		child := "-"
		if r.target == "symbi" {
			child = us(r.childCPUPerCall)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d/%d\t%s\t%s\t%s\t%.0f\t%s\t%s\t\n", r.target, r.protocol, r.phase, r.calls, r.errors,
			r.refused429, r.refused503, us(r.p50), us(r.p99), us(r.mean), r.rate(), us(r.cpuPerCall), child)
	}
	tw.Flush()

	fmt.Fprintln(out, "\nsymbi overhead (symbi minus direct):")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "protocol\tphase\tadded p50\tadded p99\tthroughput kept\t")
	for _, d := range results {
		if d.target != "direct" {
			continue
		}
		for _, s := range results {
			if s.target == "symbi" && s.protocol == d.protocol && s.phase == d.phase {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f%%\t\n", d.protocol, d.phase, us(s.p50-d.p50), us(s.p99-d.p99), 100*s.rate()/d.rate())
			}
		}
	}
	tw.Flush()

	fmt.Fprintln(out, "\nsymbi resident memory (/proc/PID/status of the symbi process):")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "when\tVmRSS\tVmHWM\t")
	for _, m := range mems {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", m.when, m.mem.rss, m.mem.hwm)
	}
	tw.Flush()
	if cfg.payload > 0 {
		fmt.Fprintln(out, "\n(refused: attempts symbi answered with HTTP 429 or 503, each retried after -refused-wait; latency is from the first attempt to the answer.)")
	}
	fmt.Fprintln(out, "\n(CPU/call: user+system time of the server process over the phase per call: the upstream's for direct, symbi's own for symbi; symbi's stdio upstreams are the last column. USER_HZ resolution, 10 ms per phase. The load generator shares the machine's cores.)")
	return nil
}

func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + "µs"
}

// measure connects the sessions once, then runs the serial phase on one of them and the
// concurrent phase on all of them.
func measure(ctx context.Context, cfg *config, hc *http.Client, target, protocol, endpoint, tool string, pid int) ([]result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sessions := make([]*mcp.ClientSession, cfg.c)
	defer func() {
		for _, cs := range sessions {
			if cs != nil {
				_ = cs.Close()
			}
		}
	}()
	for i := range sessions {
		client := mcp.NewClient(&mcp.Implementation{Name: "symbi-load", Version: "1"}, nil)
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		cs, err := client.Connect(cctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1},
			&mcp.ClientSessionOptions{ProtocolVersion: protocol})
		ccancel()
		if err != nil {
			return nil, fmt.Errorf("connect session %d: %w", i, err)
		}
		sessions[i] = cs
	}
	args := cfg.args
	if cfg.payload > 0 {
		args = map[string]any{"message": strings.Repeat("x", int(cfg.payload))}
	}
	var callArgs func(ctx context.Context, cs *mcp.ClientSession, args map[string]any) error
	call := func(ctx context.Context, cs *mcp.ClientSession) error {
		return callArgs(ctx, cs, args)
	}
	// Warm-up calls are the small default ones also with -payload: they open the
	// sessions and the upstream, they are not the load.
	warm := func(ctx context.Context, cs *mcp.ClientSession) error {
		return callArgs(ctx, cs, cfg.args)
	}
	callArgs = func(ctx context.Context, cs *mcp.ClientSession, args map[string]any) error {
		// Fresh params per call: the SDK writes the request's _meta into them.
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			return err
		}
		if res.IsError || len(res.Content) == 0 {
			return fmt.Errorf("tool error: %+v", res.Content)
		}
		return nil
	}
	// Warm-up, and a check that the call works at all.
	var wg sync.WaitGroup
	errs := make([]error, len(sessions))
	for i, cs := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range cfg.warmup {
				if err := warm(ctx, cs); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("warm up: %w", err)
	}

	var out []result
	if cfg.serial > 0 {
		pctx, pcancel := context.WithTimeout(ctx, cfg.timeout)
		cpu0 := cpuTime(pid)
		lat := make([]time.Duration, 0, cfg.serial)
		nerr := 0
		start := time.Now()
		for range cfg.serial {
			if pctx.Err() != nil {
				break
			}
			t := time.Now()
			if err := call(pctx, sessions[0]); err != nil {
				nerr++
				continue
			}
			lat = append(lat, time.Since(t))
		}
		el := time.Since(start)
		pcancel()
		out = append(out, summarize(target, protocol, "serial", lat, nerr, el, cpuTime(pid).sub(cpu0)))
	}

	pctx, pcancel := context.WithTimeout(ctx, cfg.timeout)
	defer pcancel()
	var next atomic.Int64
	lats := make([][]time.Duration, len(sessions))
	nerrs := make([]int, len(sessions))
	refused := make([][2]int, len(sessions))
	cpu0 := cpuTime(pid)
	start := time.Now()
	for i, cs := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, cfg.n/len(sessions)+1)
			for next.Add(1) <= int64(cfg.n) && pctx.Err() == nil {
				t := time.Now()
				err := call(pctx, cs)
				for cfg.payload > 0 && err != nil && pctx.Err() == nil {
					k := refusal(err)
					if k < 0 {
						break
					}
					refused[i][k]++
					select {
					case <-time.After(cfg.refusedWait):
					case <-pctx.Done():
					}
					if pctx.Err() == nil {
						err = call(pctx, cs)
					}
				}
				if err != nil {
					nerrs[i]++
					continue
				}
				lat = append(lat, time.Since(t))
			}
			lats[i] = lat
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime(pid).sub(cpu0)
	var all []time.Duration
	nerr := 0
	for i := range lats {
		all = append(all, lats[i]...)
		nerr += nerrs[i]
	}
	r := summarize(target, protocol, fmt.Sprintf("c=%d", cfg.c), all, nerr, el, cpu)
	for _, k := range refused {
		r.refused429 += k[0]
		r.refused503 += k[1]
	}
	out = append(out, r)
	return out, nil
}

// refusal classifies a call error: 0 for HTTP 429, 1 for HTTP 503 (the go-sdk client
// reports these transient statuses by their status text, keeping the session), -1 for
// anything else.
func refusal(err error) int {
	switch msg := err.Error(); {
	case strings.Contains(msg, http.StatusText(http.StatusTooManyRequests)):
		return 0
	case strings.Contains(msg, http.StatusText(http.StatusServiceUnavailable)):
		return 1
	}
	return -1
}

func summarize(target, protocol, phase string, lat []time.Duration, nerr int, el time.Duration, cpu cpuUsage) result {
	r := result{target: target, protocol: protocol, phase: phase, calls: len(lat), errors: nerr, elapsed: el}
	if len(lat) == 0 {
		return r
	}
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	r.mean = sum / time.Duration(len(lat))
	r.p50 = lat[len(lat)*50/100]
	r.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	r.cpuPerCall = cpu.self / time.Duration(len(lat)+nerr)
	r.childCPUPerCall = cpu.children / time.Duration(len(lat)+nerr)
	return r
}

// proc is a started child process.
type proc struct {
	cmd      *exec.Cmd
	stderr   *lockedBuffer
	done     chan struct{}
	stopOnce sync.Once
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // keep the head; enough to diagnose a failed start
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func start(ctx context.Context, bin string, args []string, stdout io.Writer) (*proc, error) {
	cmd := exec.Command(bin, args...)
	p := &proc{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	cmd.Stdout = stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches us, not them
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	go func() { // owned by p: ends when the process exits; stop waits for it
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop interrupts the process (then kills its group) and waits for it; idempotent.
func (p *proc) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

var addrRE = regexp.MustCompile(`http://([0-9.:]+)/mcp`)

func startSymbi(ctx context.Context, cfg *config, tmp string) (*proc, string, error) {
	policy := ""
	if cfg.policyDir != "" {
		policy = fmt.Sprintf("[policy]\ndir = %q\n", cfg.policyDir)
	}
	server := ""
	if cfg.serverTOML != "" {
		server = cfg.serverTOML + "\n" // only when asked: older symbi binaries reject keys they do not know
	}
	toml := fmt.Sprintf("version = 1\n[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = %q\n%s%s\n[[upstreams]]\nname = \"up\"\ncommand = [%q]\nprefix = \"up\"\n",
		filepath.Join(tmp, "data"), server, policy, cfg.upBin)
	path := filepath.Join(tmp, "symbi.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		return nil, "", fmt.Errorf("write config: %w", err)
	}
	pr, pw := io.Pipe()
	p, err := start(ctx, cfg.symbiBin, []string{"serve", "--config", path}, pw)
	if err != nil {
		return nil, "", err
	}
	lines := make(chan string, 1)
	go func() { // ends when symbi closes its stdout (it exits)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { <-p.done; pw.Close() }() // ends when symbi exits
	var addr string
	select {
	case line := <-lines:
		m := addrRE.FindStringSubmatch(line)
		if m == nil {
			p.stop()
			return nil, "", fmt.Errorf("unexpected first line from symbi serve: %q", line)
		}
		addr = m[1]
	case <-p.done:
		return nil, "", fmt.Errorf("symbi serve exited\n%s", p.stderr.String())
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, "", fmt.Errorf("symbi serve did not start\n%s", p.stderr.String())
	case <-ctx.Done():
		p.stop()
		return nil, "", ctx.Err()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, addr, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, "", fmt.Errorf("symbi not ready: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func build(ctx context.Context, dir, name, pkg string) (string, error) {
	out := filepath.Join(dir, name)
	fmt.Fprintf(os.Stderr, "load: building %s\n", pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s (run from the repository root): %w\n%s", pkg, err, b)
	}
	return out, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitDial(ctx context.Context, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("dial %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// memInfo is VmRSS and VmHWM as /proc reports them ("12345 kB").
type memInfo struct{ rss, hwm string }

func readMem(pid int) memInfo {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{"?", "?"}
	}
	var m memInfo
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			m.rss = mib(v)
		case "VmHWM":
			m.hwm = mib(v)
		}
	}
	return m
}

func mib(v string) string {
	kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
	if err != nil {
		return strings.TrimSpace(v)
	}
	return strconv.FormatFloat(kb/1024, 'f', 1, 64) + " MiB"
}

// children lists the direct children of pid (symbi's stdio upstreams).
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// cpuUsage is the user and system time of a server process and of its children.
type cpuUsage struct{ self, children time.Duration }

func (a cpuUsage) sub(b cpuUsage) cpuUsage {
	return cpuUsage{a.self - b.self, a.children - b.children}
}

// cpuTime reads the CPU time of pid and of its current children (symbi starts an
// upstream connection on demand, so they are listed again each time).
func cpuTime(pid int) cpuUsage {
	u := cpuUsage{self: procCPU(pid)}
	for _, c := range children(pid) {
		u.children += procCPU(c)
	}
	return u
}

// procCPU is utime+stime of one process from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // field 14 of stat
	st, _ := strconv.ParseInt(f[12], 10, 64)        // field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}
