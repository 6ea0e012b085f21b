package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Step is one tool call of a workflow agent.
type Step struct {
	Tool string
	// Arguments are the call's arguments; string values are text/template templates
	// over the results saved by earlier steps.
	Arguments map[string]any
	Save      string        // name the result is saved under: {{ .<save>.text }}
	When      string        // template; the step is skipped when it renders "", false, 0 or no
	Retries   int           // extra attempts after a tool error or an unavailable upstream
	Backoff   time.Duration // before the first retry, doubling; 0 = 1s
	Timeout   time.Duration // per attempt; 0 = the run's own
}

// ToolCaller calls a tool through symbi's request path as identity (so policy, the
// SchemaPin gate and audit apply). A policy refusal is returned as a *DeniedError.
type ToolCaller interface {
	CallTool(ctx context.Context, identity string, tool string, args json.RawMessage) (*mcp.CallToolResult, error)
}

// DeniedError is a call the policy refused.
type DeniedError struct{ Reason string }

func (e *DeniedError) Error() string { return e.Reason }

type compiledStep struct {
	Step
	args any // the arguments with templates compiled
	when *template.Template
}

type workflow struct {
	steps []compiledStep
}

func newTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Parse(text)
}

// compileWorkflow checks and compiles the steps' templates.
func compileWorkflow(steps []Step) (*workflow, error) {
	if len(steps) == 0 {
		return nil, errors.New("compile workflow: no steps")
	}
	w := &workflow{}
	for i, s := range steps {
		cs := compiledStep{Step: s}
		if s.Tool == "" {
			return nil, fmt.Errorf("compile step %d: no tool", i)
		}
		if s.When != "" {
			t, err := newTemplate("when", s.When)
			if err != nil {
				return nil, fmt.Errorf("compile step %d when: %w", i, err)
			}
			cs.when = t
		}
		args, err := compileArgs(s.Arguments, fmt.Sprintf("steps[%d].arguments", i))
		if err != nil {
			return nil, err
		}
		cs.args = args
		w.steps = append(w.steps, cs)
	}
	return w, nil
}

func compileArgs(v any, key string) (any, error) {
	switch x := v.(type) {
	case string:
		if !strings.Contains(x, "{{") {
			return x, nil
		}
		t, err := newTemplate(key, x)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %w", key, err)
		}
		return t, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := compileArgs(e, key+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := compileArgs(e, fmt.Sprintf("%s[%d]", key, i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return v, nil
}

func render(t *template.Template, data map[string]any) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

func renderArgs(v any, data map[string]any) (any, error) {
	switch x := v.(type) {
	case *template.Template:
		return render(x, data)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			r, err := renderArgs(e, data)
			if err != nil {
				return nil, err
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := renderArgs(e, data)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	return v, nil
}

// falsy is what a when condition renders to skip its step.
func falsy(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "false", "0", "no", "<no value>":
		return true
	}
	return false
}

// savedResult is what a step's result looks like to later templates: .text (the text
// content joined by newlines), .structured (the structured content) and .is_error.
func savedResult(res *mcp.CallToolResult) map[string]any {
	var texts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			texts = append(texts, tc.Text)
		}
	}
	out := map[string]any{"text": strings.Join(texts, "\n"), "is_error": res.IsError}
	if res.StructuredContent != nil {
		var sc any
		if b, err := json.Marshal(res.StructuredContent); err == nil && json.Unmarshal(b, &sc) == nil {
			out["structured"] = sc
		}
	}
	return out
}

// stepOutcome is how a run of the workflow ended.
type stepOutcome struct {
	state  RunState
	reason string
}

// run executes the steps from run.Step on, saving results into run.Vars and calling
// progress after each step. It stops at the first denial (suspended), at a step that
// still fails after its retries (failed), or when ctx ends (the caller decides what
// that means).
func (w *workflow) run(ctx context.Context, call func(ctx context.Context, tool string, args json.RawMessage) (*mcp.CallToolResult, error),
	run *RunRecord, progress func()) stepOutcome {
	data := map[string]any{}
	names := make([]string, 0, len(run.Vars))
	for k := range run.Vars {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		var v any
		if err := json.Unmarshal(run.Vars[k], &v); err != nil {
			return stepOutcome{RunFailed, fmt.Sprintf("decode saved result %s: %v", k, err)}
		}
		data[k] = v
	}
	for i := run.Step; i < len(w.steps); i++ {
		s := &w.steps[i]
		where := fmt.Sprintf("step %d (%s)", i+1, s.Tool)
		if s.when != nil {
			out, err := render(s.when, data)
			if err != nil {
				return stepOutcome{RunFailed, fmt.Sprintf("%s: when: %v", where, err)}
			}
			if falsy(out) {
				run.Step = i + 1
				progress()
				continue
			}
		}
		args, err := renderArgs(s.args, data)
		if err != nil {
			return stepOutcome{RunFailed, fmt.Sprintf("%s: arguments: %v", where, err)}
		}
		raw, err := json.Marshal(args)
		if err != nil {
			return stepOutcome{RunFailed, fmt.Sprintf("%s: arguments: %v", where, err)}
		}
		res, out := w.attempt(ctx, s, call, raw, where)
		if res == nil {
			return out
		}
		if s.Save != "" {
			v := savedResult(res)
			b, err := json.Marshal(v)
			if err != nil {
				return stepOutcome{RunFailed, fmt.Sprintf("%s: save: %v", where, err)}
			}
			var norm any
			_ = json.Unmarshal(b, &norm)
			data[s.Save] = norm
			if run.Vars == nil {
				run.Vars = map[string]json.RawMessage{}
			}
			run.Vars[s.Save] = b
		}
		run.Step = i + 1
		progress()
	}
	return stepOutcome{RunSucceeded, ""}
}

// attempt calls a step's tool with retries; a nil result means the run stops with the
// returned outcome.
func (w *workflow) attempt(ctx context.Context, s *compiledStep, call func(context.Context, string, json.RawMessage) (*mcp.CallToolResult, error),
	args json.RawMessage, where string) (*mcp.CallToolResult, stepOutcome) {
	backoff := s.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	var last string
	for attempt := 0; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if s.Timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, s.Timeout)
		}
		res, err := call(actx, s.Tool, args)
		cancel()
		if ctx.Err() != nil {
			return nil, stepOutcome{RunCancelled, ctx.Err().Error()}
		}
		var denied *DeniedError
		switch {
		case errors.As(err, &denied):
			return nil, stepOutcome{RunSuspended, fmt.Sprintf("%s: %s", where, denied.Reason)}
		case err != nil:
			last = err.Error()
		case res.IsError:
			last = "tool error: " + savedResult(res)["text"].(string)
		default:
			return res, stepOutcome{}
		}
		if attempt >= s.Retries {
			return nil, stepOutcome{RunFailed, fmt.Sprintf("%s: %s (after %d attempts)", where, last, attempt+1)}
		}
		t := time.NewTimer(backoff << attempt)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, stepOutcome{RunCancelled, ctx.Err().Error()}
		case <-t.C:
		}
	}
}
