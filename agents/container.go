package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/symbi-dev/symbi/sandbox"
)

// Container is what a container agent runs: a command in an image, in a sandbox tier.
type Container struct {
	Image   string
	Command []string          // empty: the image's entrypoint
	Tier    sandbox.Tier      // "" = docker
	Env     map[string]string // besides SYMBI_AGENT, SYMBI_IDENTITY and SYMBI_RUN
}

// SessionServer serves an MCP session to a container agent over its stdio: every
// request of the session acts as identity, so the policy decides it and the audit trail
// records it as the agent's (gateway.Gateway's ServeAs, adapted).
type SessionServer interface {
	ServeAs(ctx context.Context, identity string, r io.Reader, w io.Writer, c io.Closer) error
}

// CodeDenied is the JSON-RPC error code of a request the policy refused (the gateway's
// CodeDenied): a container agent that receives it has violated the policy.
const CodeDenied = -32001

// maxWatchedLine bounds the bytes of one JSON-RPC line the runtime buffers to watch a
// container's session; a longer line is not inspected (it is still forwarded whole).
const maxWatchedLine = 1 << 20

// stderrTail is how much of a container's standard error a failed run reports.
const stderrTail = 2 << 10

// compileContainer checks a container definition.
func compileContainer(c *Container) error {
	if c == nil || c.Image == "" && c.Tier != sandbox.TierNone {
		return errors.New("a container agent needs an image")
	}
	if c.Tier != "" && !c.Tier.Valid() {
		return fmt.Errorf("sandbox tier %q: want none, docker or gvisor", c.Tier)
	}
	if c.Tier == sandbox.TierNone && len(c.Command) == 0 {
		return errors.New("a container agent in tier none needs a command")
	}
	return nil
}

// runContainer runs one container agent run: it starts the container in its sandbox
// tier with no network, serves it an MCP session on its stdio as the agent's identity,
// and waits for it to exit. A call the policy denies stops the container at once: the
// run is suspended with the policy's reason (a resume starts the container again). The
// run's timeout and limits.memory suspend it too; a non-zero exit fails it.
func (r *Runtime) runContainer(ctx context.Context, d Definition, rec *RunRecord) stepOutcome {
	if r.o.Sandbox == nil || r.o.Sessions == nil {
		return stepOutcome{RunFailed, "container agents are not available (no sandbox or session server)"}
	}
	c := d.Container
	env := map[string]string{}
	for k, v := range c.Env {
		env[k] = v
	}
	env["SYMBI_AGENT"], env["SYMBI_IDENTITY"], env["SYMBI_RUN"] = d.Name, d.ID(), rec.ID
	spec := sandbox.Spec{Name: "agent-" + d.Name, Image: c.Image, Command: c.Command, Tier: c.Tier, Env: env,
		CPUs: float64(d.MilliCPU) / 1000}
	if d.MemoryBytes > 0 {
		spec.Memory = strconv.FormatInt(d.MemoryBytes, 10)
	}
	proc, err := r.o.Sandbox.Start(ctx, spec)
	if err != nil {
		return stepOutcome{RunFailed, "start container: " + err.Error()}
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := proc.Stop(sctx); err != nil {
			r.log.Warn("stop agent container", "agent", d.Name, "run", rec.ID, "err", err)
		}
	}()

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := &sessionWatch{calls: map[string]string{}, onDenied: func(err *policyViolation) { cancel(err) }}
	var wg sync.WaitGroup
	var tail tailBuffer
	wg.Add(2)
	go func() { // owned: ends when the container's stderr ends (it exited or was stopped)
		defer wg.Done()
		_, _ = io.Copy(&tail, proc.Stderr())
	}()
	go func() { // owned: ends when the container's stdout ends or sctx does
		defer wg.Done()
		if err := r.o.Sessions.ServeAs(sctx, d.ID(), &watchedReader{r: proc.Stdout(), w: w}, &watchedWriter{w: proc.Stdin(), watch: w}, proc.Stdin()); err != nil {
			r.log.Info("agent session ended", "agent", d.Name, "run", rec.ID, "err", err)
		}
	}()
	exited := make(chan sandbox.ExitStatus, 1)
	go func() { exited <- proc.Wait() }() // owned: Wait returns once Stop has run at the latest
	var st sandbox.ExitStatus
	select {
	case st = <-exited:
	case <-sctx.Done():
		stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if err := proc.Stop(stopCtx); err != nil {
			r.log.Warn("stop agent container", "agent", d.Name, "run", rec.ID, "err", err)
		}
		stopCancel()
		st = <-exited
	}
	cancel(nil)
	wg.Wait()
	rec.Step = w.answered()

	var violation *policyViolation
	switch cause := context.Cause(sctx); {
	case errors.As(cause, &violation):
		return stepOutcome{RunSuspended, violation.Error()}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return stepOutcome{RunSuspended, fmt.Sprintf("limit: run exceeded its timeout (%s)", d.Timeout)}
	case ctx.Err() != nil:
		return stepOutcome{RunCancelled, "cancelled: " + context.Cause(ctx).Error()}
	case st.OOMKilled:
		return stepOutcome{RunSuspended, "limit: container killed for exceeding limits.memory"}
	case st.Err != nil:
		return stepOutcome{RunFailed, "container: " + st.Err.Error()}
	case st.Code != 0:
		reason := "container exited: " + st.String()
		if t := strings.TrimSpace(tail.String()); t != "" {
			reason += ": " + t
		}
		return stepOutcome{RunFailed, reason}
	}
	return stepOutcome{RunSucceeded, ""}
}

// policyViolation is a call of a container agent that the policy denied.
type policyViolation struct {
	tool, message string
}

func (e *policyViolation) Error() string {
	if e.tool != "" {
		return fmt.Sprintf("call of %s: %s", e.tool, e.message)
	}
	return e.message
}

// sessionWatch follows a container agent's MCP session: it remembers the tool each
// tools/call request names and reports the first response that is a policy denial.
type sessionWatch struct {
	mu       sync.Mutex
	calls    map[string]string // request id -> tool name, until answered
	done     int               // tools/call requests answered
	denied   bool
	onDenied func(*policyViolation)
}

func (w *sessionWatch) request(line []byte) {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	if json.Unmarshal(line, &m) != nil || m.Method != "tools/call" || len(m.ID) == 0 {
		return
	}
	w.mu.Lock()
	if len(w.calls) < 1024 {
		w.calls[string(m.ID)] = m.Params.Name
	}
	w.mu.Unlock()
}

func (w *sessionWatch) response(line []byte) {
	var m struct {
		ID    json.RawMessage `json:"id"`
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(line, &m) != nil || len(m.ID) == 0 {
		return
	}
	w.mu.Lock()
	tool, isCall := w.calls[string(m.ID)]
	if isCall {
		delete(w.calls, string(m.ID))
		w.done++
	}
	report := m.Error != nil && m.Error.Code == CodeDenied && !w.denied
	if report {
		w.denied = true
	}
	w.mu.Unlock()
	if report {
		w.onDenied(&policyViolation{tool: tool, message: m.Error.Message})
	}
}

func (w *sessionWatch) stopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.denied
}

func (w *sessionWatch) answered() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done
}

// lines splits a stream into lines for f, buffering at most maxWatchedLine bytes.
type lines struct {
	buf  []byte
	skip bool // the current line is too long to inspect
}

func (l *lines) feed(p []byte, f func([]byte)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !l.skip {
			if len(l.buf)+len(chunk) > maxWatchedLine {
				l.skip, l.buf = true, l.buf[:0]
			} else {
				l.buf = append(l.buf, chunk...)
			}
		}
		if i < 0 {
			return
		}
		if !l.skip && len(l.buf) > 0 {
			f(l.buf)
		}
		l.buf, l.skip = l.buf[:0], false
		p = p[i+1:]
	}
}

// watchedReader is the container's stdout (its requests) as the session reads it.
type watchedReader struct {
	r io.Reader
	w *sessionWatch
	l lines
}

// Read ends the session's input once a call was denied: a request the container sends
// after it learnt of the denial is never served.
func (r *watchedReader) Read(p []byte) (int, error) {
	if r.w.stopped() {
		return 0, io.EOF
	}
	n, err := r.r.Read(p)
	if r.w.stopped() {
		return 0, io.EOF
	}
	r.l.feed(p[:n], r.w.request)
	return n, err
}

// watchedWriter is the container's stdin (symbi's answers) as the session writes it.
type watchedWriter struct {
	w     io.Writer
	watch *sessionWatch
	mu    sync.Mutex
	l     lines
}

// Write inspects symbi's answers before the container sees them, so that a denial
// stops the session's input before the container can act on it.
func (w *watchedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.l.feed(p, w.watch.response)
	w.mu.Unlock()
	return w.w.Write(p)
}

// tailBuffer keeps the last stderrTail bytes written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > stderrTail {
		t.b = append(t.b[:0], t.b[len(t.b)-stderrTail:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
