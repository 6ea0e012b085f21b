package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/symbi-dev/symbi/policy"
)

const policyUsage = `usage: symbi policy <command> [flags]

commands:
  eval [--policies DIR] --input FILE [--exit-code]
        evaluate the decision for the input document in FILE (JSON, the policy input
        shape) and print the decision as JSON. Without --policies, the built-in default
        policy decides. Exit 0 with the decision printed (1 with --exit-code if it
        denies; 1 if evaluation failed, which denies); 2 on a usage error, an unreadable
        input or a policy that does not compile (each problem printed as file:line:col).
  test [--json] DIR
        run the Rego unit tests (test_* rules, usually in *_test.rego files) of DIR and
        print PASS/FAIL per test. Exit 0 if all pass, 1 if any fails or there are none,
        2 if a module does not compile.
`

// runPolicy implements `symbi policy eval|test`.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "eval":
		return runPolicyEval(ctx, args[1:], stdout, stderr)
	case "test":
		return runPolicyTest(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stderr, policyUsage)
		return 0
	}
	fmt.Fprintf(stderr, "symbi policy: unknown command %q\n\n%s", args[0], policyUsage)
	return 2
}

func policyFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("symbi policy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// policyPrintCompileError prints each problem as file:line:col: message, with the file
// relative to the current directory (dir joined), so editors can jump to it.
func policyPrintCompileError(stderr io.Writer, dir string, err error) bool {
	var ce *policy.CompileError
	if !errors.As(err, &ce) {
		return false
	}
	for _, p := range ce.Problems {
		if p.File != "" && dir != "" && !filepath.IsAbs(p.File) && p.File != dir {
			p.File = filepath.Join(dir, filepath.FromSlash(p.File))
		}
		fmt.Fprintln(stderr, p.String())
	}
	return true
}

func runPolicyEval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := policyFlagSet("eval", stderr)
	dir := fs.String("policies", "", "policy directory (*.rego and *.json data); empty: the built-in default policy")
	inputFile := fs.String("input", "", "input document (JSON)")
	exitCode := fs.Bool("exit-code", false, "exit 1 when the decision denies")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "symbi policy eval: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *inputFile == "" {
		fmt.Fprintln(stderr, "symbi policy eval: --input FILE is required")
		fs.Usage()
		return 2
	}
	data, err := os.ReadFile(*inputFile)
	if err != nil {
		fmt.Fprintln(stderr, "symbi policy eval: read input:", err)
		return 2
	}
	in, err := policy.ParseInput(data)
	if err != nil {
		fmt.Fprintf(stderr, "symbi policy eval: %s: %v\n", *inputFile, err)
		return 2
	}

	engine := policy.Default()
	if *dir != "" {
		e, _, err := policy.CompileDir(ctx, *dir)
		if err != nil {
			if !policyPrintCompileError(stderr, *dir, err) {
				fmt.Fprintln(stderr, "symbi policy eval:", err)
			}
			return 2
		}
		engine = e
	}

	d, evalErr := engine.Decide(ctx, in)
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		fmt.Fprintln(stderr, "symbi policy eval: encode decision:", err)
		return 2
	}
	fmt.Fprintf(stdout, "%s\n", out)
	if evalErr != nil {
		fmt.Fprintln(stderr, "symbi policy eval:", evalErr)
		return 1
	}
	if *exitCode && !d.Allow {
		return 1
	}
	return 0
}

func runPolicyTest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := policyFlagSet("test", stderr)
	asJSON := fs.Bool("json", false, "print the results as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "symbi policy test: exactly one DIR argument is required")
		fs.Usage()
		return 2
	}
	dir := fs.Arg(0)
	results, err := policy.RunTests(ctx, dir)
	if err != nil {
		if !policyPrintCompileError(stderr, dir, err) {
			fmt.Fprintln(stderr, "symbi policy test:", err)
		}
		return 2
	}

	var pass, fail, skip int
	for _, r := range results {
		switch {
		case r.Skip:
			skip++
		case r.Pass:
			pass++
		default:
			fail++
		}
	}
	if *asJSON {
		out, err := json.MarshalIndent(struct {
			Results []policy.TestResult `json:"results"`
			Pass    int                 `json:"pass"`
			Fail    int                 `json:"fail"`
			Skip    int                 `json:"skip"`
		}{results, pass, fail, skip}, "", "  ")
		if err != nil {
			fmt.Fprintln(stderr, "symbi policy test: encode results:", err)
			return 2
		}
		fmt.Fprintf(stdout, "%s\n", out)
	} else {
		for _, r := range results {
			loc := filepath.Join(dir, filepath.FromSlash(r.File))
			switch {
			case r.Skip:
				fmt.Fprintf(stdout, "SKIP %s (%s:%d)\n", r.Name, loc, r.Line)
			case r.Pass:
				fmt.Fprintf(stdout, "PASS %s (%s:%d, %s)\n", r.Name, loc, r.Line, r.Duration)
			default:
				fmt.Fprintf(stdout, "FAIL %s (%s:%d): %s\n", r.Name, loc, r.Line, r.Error)
			}
		}
		fmt.Fprintf(stdout, "%d passed, %d failed, %d skipped\n", pass, fail, skip)
	}
	if fail > 0 {
		return 1
	}
	if pass == 0 {
		fmt.Fprintln(stderr, "symbi policy test: no tests found (rules named test_* in", dir+")")
		return 1
	}
	return 0
}
