package policy

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestResult is the outcome of one Rego unit test (a rule named test_* in any module of
// the directory, usually in a *_test.rego file).
type TestResult struct {
	Name     string        `json:"name"` // package path and rule, e.g. data.symbi.authz_test.test_read_only
	File     string        `json:"file,omitempty"`
	Line     int           `json:"line,omitempty"`
	Pass     bool          `json:"pass"`
	Skip     bool          `json:"skip,omitempty"` // todo_test_* rules
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// RunTests runs the Rego unit tests of a policy directory with OPA's tester: every
// module, tests included, is compiled together with the directory's data (mounted as in
// [LoadDir]), and every test_* rule is evaluated. Results are sorted by file and line.
// A module that does not parse or compile is a *CompileError.
func RunTests(ctx context.Context, dir string) ([]TestResult, error) {
	src, err := LoadDir(dir)
	if err != nil {
		return nil, err
	}
	mods := make(map[string]*ast.Module, len(src.Bundle.Modules)+len(src.Tests))
	var problems []Problem
	for _, m := range append(append([]Module(nil), src.Bundle.Modules...), src.Tests...) {
		mod, err := ast.ParseModuleWithOpts(m.Name, m.Source, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			problems = append(problems, compileError(err).Problems...)
			continue
		}
		mods[m.Name] = mod
	}
	if len(problems) > 0 {
		return nil, &CompileError{Problems: problems}
	}
	store := inmem.NewFromObject(src.Bundle.Data)
	r := tester.NewRunner().
		SetStore(store).
		SetModules(mods).
		SetDefaultRegoVersion(ast.RegoV1).
		RaiseBuiltinErrors(true).
		SetTimeout(10 * time.Second)
	ch, err := r.RunTests(ctx, nil)
	if err != nil {
		return nil, compileError(err)
	}
	var out []TestResult
	for res := range ch {
		tr := TestResult{
			Name:     res.Package + "." + res.Name,
			Pass:     res.Pass(),
			Skip:     res.Skip,
			Duration: res.Duration,
		}
		if res.Location != nil {
			tr.File, tr.Line = res.Location.File, res.Location.Row
		}
		switch {
		case res.Error != nil:
			tr.Error = res.Error.Error()
		case res.Fail:
			tr.Error = "test failed"
			if res.FailedAt != nil && res.FailedAt.Location != nil {
				tr.Error = fmt.Sprintf("failed at %s:%d: %s", res.FailedAt.Location.File, res.FailedAt.Location.Row, res.FailedAt.String())
			}
		}
		out = append(out, tr)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		if out[i].Line != out[j].Line {
			return out[i].Line < out[j].Line
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
