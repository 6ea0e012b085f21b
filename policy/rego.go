package policy

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// DecisionRef is the rule every policy bundle must define.
const DecisionRef = "data.symbi.authz.decision"

var decisionRef = ast.MustParseRef(DecisionRef)

//go:embed default.rego
var defaultPolicy string

// DefaultPolicy returns the source of the built-in default policy: verified and unsigned
// tools are allowed; invalid, revoked, key_changed, definition_changed and disabled ones,
// or a tool with no verification status, are denied; requests that are not about a tool
// (lists, resources, prompts) are allowed.
func DefaultPolicy() string { return defaultPolicy }

// Module is one Rego source file. Name is used in compile errors and should be the
// file's path.
type Module struct {
	Name   string
	Source string
}

// Bundle is what a Rego engine is compiled from: modules and the data they may read as
// `data.*`. The data must be JSON-like (maps, slices, strings, numbers, bools, nil).
type Bundle struct {
	Modules []Module
	Data    map[string]any
}

// Problem is one compile error, located in a source file.
type Problem struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"col,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	switch {
	case p.File != "" && p.Line > 0:
		return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Message)
	case p.File != "":
		return p.File + ": " + p.Message
	}
	return p.Message
}

// CompileError reports why a bundle did not compile, with every problem located.
type CompileError struct {
	Problems []Problem
}

func (e *CompileError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "compile policy: " + strings.Join(parts, "; ")
}

func compileError(err error) *CompileError {
	var errs ast.Errors
	if errors.As(err, &errs) {
		ce := &CompileError{}
		for _, e := range errs {
			p := Problem{Message: e.Message}
			if e.Location != nil {
				p.File, p.Line, p.Col = e.Location.File, e.Location.Row, e.Location.Col
			}
			ce.Problems = append(ce.Problems, p)
		}
		if len(ce.Problems) > 0 {
			return ce
		}
	}
	var one *ast.Error
	if errors.As(err, &one) {
		p := Problem{Message: one.Message}
		if one.Location != nil {
			p.File, p.Line, p.Col = one.Location.File, one.Location.Row, one.Location.Col
		}
		return &CompileError{Problems: []Problem{p}}
	}
	return &CompileError{Problems: []Problem{{Message: err.Error()}}}
}

// Rego is an [Engine] backed by a compiled, prepared Rego query. Its policy never changes
// and it is safe for concurrent use; hot reload swaps whole engines (see [Watcher]).
//
// A deterministic policy's decisions are cached, keyed on the parts of the input it reads,
// so a new engine also starts with an empty cache (see [CacheInfo]).
type Rego struct {
	pq      rego.PreparedEvalQuery
	modules []string // module names, sorted

	cache       *decisionCache // nil: every decision is evaluated
	uncacheable string         // why cache is nil
	keyPaths    []string       // what the cache is keyed on
}

// Compile parses and compiles a bundle and prepares the decision query. The bundle must
// define data.symbi.authz.decision. Errors are *CompileError.
func Compile(ctx context.Context, b Bundle) (*Rego, error) {
	parsed := make(map[string]*ast.Module, len(b.Modules))
	names := make([]string, 0, len(b.Modules))
	var problems []Problem
	for _, m := range b.Modules {
		if _, dup := parsed[m.Name]; dup {
			problems = append(problems, Problem{File: m.Name, Message: "duplicate module name"})
			continue
		}
		mod, err := ast.ParseModuleWithOpts(m.Name, m.Source, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			problems = append(problems, compileError(err).Problems...)
			continue
		}
		parsed[m.Name] = mod
		names = append(names, m.Name)
	}
	if len(problems) > 0 {
		return nil, &CompileError{Problems: problems}
	}
	sort.Strings(names)

	c := ast.NewCompiler().WithEnablePrintStatements(false)
	c.Compile(parsed)
	if c.Failed() {
		return nil, compileError(c.Errors)
	}
	if len(c.GetRules(decisionRef)) == 0 {
		return nil, &CompileError{Problems: []Problem{{Message: "no rule " + DecisionRef + " defined (package symbi.authz, rule decision)"}}}
	}

	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	r := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(decisionRef)))),
		rego.Compiler(c),
		rego.Store(store),
		rego.StrictBuiltinErrors(true), // a failing builtin is an error (deny), not undefined
	)
	pq, err := r.PrepareForEval(ctx)
	if err != nil {
		return nil, compileError(err)
	}
	e := &Rego{pq: pq, modules: names}
	if key, reason := analyse(c); reason != "" {
		e.uncacheable = "policy " + reason
	} else {
		e.cache = newDecisionCache(key, DecisionCacheSize)
		e.keyPaths = describeKey(key)
	}
	return e, nil
}

// Modules returns the names of the modules the engine was compiled from.
func (e *Rego) Modules() []string { return append([]string(nil), e.modules...) }

var defaultEngine = sync.OnceValue(func() *Rego {
	e, err := Compile(context.Background(), Bundle{Modules: []Module{{Name: "default.rego", Source: defaultPolicy}}})
	if err != nil {
		panic("policy: built-in default policy does not compile: " + err.Error())
	}
	return e
})

// Default returns the engine for the built-in default policy.
func Default() *Rego { return defaultEngine() }

var neverCancel = topdown.NewCancel()

func identity(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

// DefaultEvalTimeout bounds one policy evaluation unless the caller says otherwise: a
// decision takes microseconds; one that takes this long is stuck (an unbounded
// comprehension, a slow http.send) and denies.
const DefaultEvalTimeout = time.Second

// ErrTimeout is wrapped by the error of an evaluation that ran out of time.
var ErrTimeout = errors.New("policy evaluation timed out")

// errEvalTimeout is the cause of the context of an evaluation that ran out of time.
var errEvalTimeout = errors.New("policy evaluation time bound reached")

// Decide evaluates the decision rule for in, within DefaultEvalTimeout. It fails closed:
// see [Engine].
func (e *Rego) Decide(ctx context.Context, in *Input) (Decision, error) {
	return e.DecideWithin(ctx, in, DefaultEvalTimeout)
}

// DecideWithin is Decide with an evaluation that may take at most limit (<= 0:
// DefaultEvalTimeout). An evaluation that runs out of time denies, with a reason that
// says so, and an error that wraps [ErrTimeout].
func (e *Rego) DecideWithin(ctx context.Context, in *Input, limit time.Duration) (Decision, error) {
	if in == nil {
		return deny("no policy input"), fmt.Errorf("%w: nil input", ErrEvaluate)
	}
	if c := e.cache; c != nil && c.top != nil {
		if err := ctx.Err(); err != nil {
			return deny("policy evaluation cancelled"), fmt.Errorf("%w: %w", ErrEvaluate, err)
		}
		// Key on just the top-level fields the policy reads: on a hit nothing else of
		// the input (arguments, annotations) is converted at all.
		if pv, err := in.value(c.top); err == nil {
			var buf [256]byte
			if key, ok := c.keyFor(buf[:0], pv); ok {
				if d, hit := c.get(key); hit {
					return d, nil
				}
				v, err := in.Value()
				if err != nil {
					return deny("policy input could not be built"), fmt.Errorf("%w: %w", ErrEvaluate, err)
				}
				return e.evaluate(ctx, v, key, limit)
			}
		}
	}
	v, err := in.Value()
	if err != nil {
		return deny("policy input could not be built"), fmt.Errorf("%w: %w", ErrEvaluate, err)
	}
	return e.decideValue(ctx, v, limit)
}

// DecideValue evaluates the decision rule against an input already converted to a Rego
// value (see [Input.Value]), or answers from the decision cache. The evaluation is bounded
// by DefaultEvalTimeout.
func (e *Rego) DecideValue(ctx context.Context, input ast.Value) (Decision, error) {
	return e.decideValue(ctx, input, DefaultEvalTimeout)
}

func (e *Rego) decideValue(ctx context.Context, input ast.Value, limit time.Duration) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return deny("policy evaluation cancelled"), fmt.Errorf("%w: %w", ErrEvaluate, err)
	}
	var (
		buf [256]byte
		key []byte
	)
	if e.cache != nil {
		var ok bool
		if key, ok = e.cache.keyFor(buf[:0], input); ok {
			if d, hit := e.cache.get(key); hit {
				return d, nil
			}
		}
	}
	return e.evaluate(ctx, input, key, limit)
}

// evaluate runs the decision query on input, for at most limit (<= 0:
// DefaultEvalTimeout), and, when key is not nil, caches a well-formed decision under it.
func (e *Rego) evaluate(ctx context.Context, input ast.Value, key []byte, limit time.Duration) (d Decision, err error) {
	defer func() {
		if r := recover(); r != nil {
			d = deny("policy evaluation failed")
			err = fmt.Errorf("%w: evaluate %s: panic: %v", ErrEvaluate, DecisionRef, r)
		}
	}()
	if err := ctx.Err(); err != nil {
		return deny("policy evaluation cancelled"), fmt.Errorf("%w: %w", ErrEvaluate, err)
	}
	if limit <= 0 {
		limit = DefaultEvalTimeout
	}
	ctx, stopTimer := context.WithTimeoutCause(ctx, limit, errEvalTimeout)
	defer stopTimer()
	// OPA watches the context with one goroutine per evaluation unless it is handed a
	// Cancel; context.AfterFunc does the same job without a goroutine, and a context that
	// can never be cancelled needs nothing at all.
	cancel := neverCancel
	if ctx.Done() != nil {
		c := topdown.NewCancel()
		stop := context.AfterFunc(ctx, c.Cancel)
		defer stop()
		cancel = c
	}
	rs, err := e.pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalGenerateJSON(identity), rego.EvalExternalCancel(cancel), rego.EvalMetrics(noMetrics))
	if err != nil {
		if errors.Is(context.Cause(ctx), errEvalTimeout) {
			return deny(fmt.Sprintf("policy evaluation timed out after %s", limit)),
				fmt.Errorf("%w: evaluate %s: %w after %s", ErrEvaluate, DecisionRef, ErrTimeout, limit)
		}
		return deny("policy evaluation failed"), fmt.Errorf("%w: evaluate %s: %w", ErrEvaluate, DecisionRef, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return deny("policy produced no decision"), fmt.Errorf("%w: %s is undefined", ErrEvaluate, DecisionRef)
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return deny("policy produced a malformed decision"), fmt.Errorf("%w: unexpected result %T", ErrEvaluate, rs[0].Expressions[0].Value)
	}
	d, err = parseDecision(t.Value)
	if err != nil {
		return deny("policy produced a malformed decision"), fmt.Errorf("%w: %w", ErrEvaluate, err)
	}
	if key != nil {
		e.cache.put(key, d)
	}
	return d, nil
}

var (
	fieldAllow      = ast.StringTerm("allow")
	fieldReason     = ast.StringTerm("reason")
	fieldConditions = ast.StringTerm("conditions")
	condFields      = map[string]*ast.Term{}
	noMetrics       = metrics.NoOp()
)

func init() {
	for _, k := range []string{"type", "mode", "tier", "message", "level", "per_minute", "burst", "paths"} {
		condFields[k] = ast.StringTerm(k)
	}
}

// parseDecision reads a decision object. Anything but the documented shape is an error.
func parseDecision(v ast.Value) (Decision, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("decision is %s, not an object", ast.ValueName(v))
	}
	var d Decision
	at := obj.Get(fieldAllow)
	if at == nil {
		return Decision{}, errors.New("decision has no allow field")
	}
	allow, ok := at.Value.(ast.Boolean)
	if !ok {
		return Decision{}, fmt.Errorf("decision allow is %s, not a boolean", ast.ValueName(at.Value))
	}
	d.Allow = bool(allow)
	if rt := obj.Get(fieldReason); rt != nil {
		s, ok := rt.Value.(ast.String)
		if !ok {
			return Decision{}, fmt.Errorf("decision reason is %s, not a string", ast.ValueName(rt.Value))
		}
		d.Reason = string(s)
	}
	if !d.Allow {
		if d.Reason == "" {
			d.Reason = "denied by policy"
		}
		return d, nil // conditions of a denial are irrelevant
	}
	ct := obj.Get(fieldConditions)
	if ct == nil {
		return d, nil
	}
	var err error
	d.Conditions, err = parseConditions(ct.Value)
	if err != nil {
		return Decision{}, err
	}
	return d, nil
}

// eachElem iterates over an array or a set.
func eachElem(v ast.Value, what string, f func(i int, t *ast.Term) error) error {
	switch c := v.(type) {
	case *ast.Array:
		for i := range c.Len() {
			if err := f(i, c.Elem(i)); err != nil {
				return err
			}
		}
		return nil
	case ast.Set:
		return eachElem(c.Sorted(), what, f)
	}
	return fmt.Errorf("%s is %s, not an array", what, ast.ValueName(v))
}

func parseConditions(v ast.Value) ([]Condition, error) {
	var out []Condition
	err := eachElem(v, "decision conditions", func(i int, t *ast.Term) error {
		c, err := parseCondition(t.Value)
		if err != nil {
			return fmt.Errorf("decision condition %d: %w", i, err)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

func parseCondition(v ast.Value) (Condition, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return Condition{}, fmt.Errorf("is %s, not an object", ast.ValueName(v))
	}
	var c Condition
	var err error
	str := func(key string, dst *string) {
		if err != nil {
			return
		}
		t := obj.Get(condFields[key])
		if t == nil {
			return
		}
		s, ok := t.Value.(ast.String)
		if !ok {
			err = fmt.Errorf("%s is %s, not a string", key, ast.ValueName(t.Value))
			return
		}
		*dst = string(s)
	}
	num := func(key string, dst *int) {
		if err != nil {
			return
		}
		t := obj.Get(condFields[key])
		if t == nil {
			return
		}
		n, ok := t.Value.(ast.Number)
		if !ok {
			err = fmt.Errorf("%s is %s, not a number", key, ast.ValueName(t.Value))
			return
		}
		i, ok := n.Int()
		if !ok || i < 0 {
			err = fmt.Errorf("%s is not a non-negative integer", key)
			return
		}
		*dst = i
	}
	str("type", &c.Type)
	str("mode", &c.Mode)
	str("tier", &c.Tier)
	str("message", &c.Message)
	str("level", &c.Level)
	num("per_minute", &c.PerMinute)
	num("burst", &c.Burst)
	if err != nil {
		return Condition{}, err
	}
	if pt := obj.Get(condFields["paths"]); pt != nil {
		err = eachElem(pt.Value, "paths", func(i int, t *ast.Term) error {
			s, ok := t.Value.(ast.String)
			if !ok {
				return fmt.Errorf("paths[%d] is %s, not a string", i, ast.ValueName(t.Value))
			}
			c.Paths = append(c.Paths, string(s))
			return nil
		})
		if err != nil {
			return Condition{}, err
		}
	}
	if err := c.Validate(); err != nil {
		return Condition{}, err
	}
	return c, nil
}

// Validate reports whether the gateway can enforce the condition. An unknown type is an
// error: a condition the gateway does not understand cannot be enforced, so the decision
// that carries it denies.
func (c Condition) Validate() error {
	switch c.Type {
	case CondRedact:
		if len(c.Paths) == 0 {
			return errors.New("redact needs paths")
		}
		for _, p := range c.Paths {
			if _, err := ParsePath(p); err != nil {
				return err
			}
		}
		if c.Mode != "" && c.Mode != RedactMask && c.Mode != RedactRemove {
			return fmt.Errorf("redact mode %q is not mask or remove", c.Mode)
		}
	case CondRedactSecrets, CondBlockSecrets:
		for _, p := range c.Paths {
			if p != "arguments" && p != "result" {
				return fmt.Errorf("%s path %q is not arguments or result", c.Type, p)
			}
		}
	case CondRateLimit:
		if c.PerMinute <= 0 {
			return errors.New("rate_limit needs per_minute > 0")
		}
	case CondRequireTier:
		if _, ok := tierRank[c.Tier]; !ok || c.Tier == "" {
			return fmt.Errorf("require_tier tier %q is not one of %s", c.Tier, strings.Join(Tiers(), ", "))
		}
	case CondRequireApproval:
	case CondPriority:
		if priorityRank(c.Level) < 0 {
			return fmt.Errorf("priority level %q is not one of %s", c.Level, strings.Join(priorityLevels, ", "))
		}
	case "":
		return errors.New("condition has no type")
	default:
		return fmt.Errorf("unknown condition type %q", c.Type)
	}
	return nil
}
