package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/policy"
)

// repoRoot is the checkout's root, from this package's directory.
const repoRoot = "../.."

// repoFiles lists the checkout's files whose name ends in one of exts, skipping VCS data,
// caches and installed npm packages.
func repoFiles(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".cache", "node_modules", "testdata", "bin":
				if path != repoRoot {
					return filepath.SkipDir
				}
			}
			return nil
		}
		for _, e := range exts {
			if strings.HasSuffix(path, e) {
				out = append(out, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// codeBlock is one fenced block of a Markdown file.
type codeBlock struct {
	file string
	line int
	text string
}

var fenceRE = regexp.MustCompile("(?m)^```([a-z]*)[ \t]*$")

// blocks returns the fenced blocks of lang in every Markdown file of the checkout.
func blocks(t *testing.T, lang string) []codeBlock {
	t.Helper()
	var out []codeBlock
	for _, f := range repoFiles(t, ".md") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		locs := fenceRE.FindAllStringSubmatchIndex(s, -1)
		for i := 0; i+1 < len(locs); i += 2 {
			open, end := locs[i], locs[i+1]
			if s[open[2]:open[3]] != lang {
				continue
			}
			out = append(out, codeBlock{file: f, line: strings.Count(s[:open[0]], "\n") + 1, text: s[open[1]+1 : end[0]]})
		}
	}
	return out
}

// exampleEnv resolves every env: reference of an example to a value that passes
// validation (tokens need 16 characters).
func exampleEnv(string) (string, bool) { return "example-value-0123456789", true }

// TestEveryTOMLExampleValidates checks every configuration example in the repository
// with the real loader: the files under configs/ and every ```toml block of every
// Markdown file. A block that is a fragment (no version line) is completed with
// `version = 1`. Relative paths resolve against the file that shows the example.
func TestEveryTOMLExampleValidates(t *testing.T) {
	n := 0
	check := func(name, file, text string) {
		t.Helper()
		n++
		if !regexp.MustCompile(`(?m)^version\s*=`).MatchString(text) {
			text = "version = 1\n" + text
		}
		abs, err := filepath.Abs(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Parse(abs, []byte(text), exampleEnv); err != nil {
			t.Errorf("%s: the example does not validate: %v\n%s", name, err, text)
		}
	}
	for _, f := range repoFiles(t, ".toml") {
		if filepath.Base(f) == "catalog.toml" {
			continue // the server catalog, not a configuration (TestCatalogEntriesValidate)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		check(f, f, string(data))
	}
	for _, b := range blocks(t, "toml") {
		check(b.file+":"+strconv.Itoa(b.line), b.file, b.text)
	}
	if n < 4 { // configs/symbi.example.toml, README.md, sandbox/README.md, configs/policies/README.md
		t.Errorf("found only %d TOML examples; did the layout change?", n)
	}
}

// TestEveryRegoExampleCompiles compiles every directory of .rego files in the repository
// and runs its Rego tests, and compiles every ```rego block of the Markdown files: a
// block with a package alone, a block of test rules (no package) as a test of the
// example policies in configs/policies, which it must pass.
func TestEveryRegoExampleCompiles(t *testing.T) {
	ctx := context.Background()
	dirs := map[string]bool{}
	for _, f := range repoFiles(t, ".rego") {
		dirs[filepath.Dir(f)] = true
	}
	dirs[filepath.Join(repoRoot, "policy", "testdata", "realistic")] = true
	if !dirs[filepath.Join(repoRoot, "configs", "policies")] {
		t.Fatalf("configs/policies has no .rego files; did the layout change? (%v)", dirs)
	}
	for dir := range dirs {
		// Only the directory's own files: LoadDir reads subdirectories too.
		tmp := copyFlat(t, dir, t.TempDir())
		runRegoTests(ctx, t, dir, tmp)
	}
	n := 0
	for _, b := range blocks(t, "rego") {
		n++
		where := b.file + ":" + strconv.Itoa(b.line)
		if strings.Contains(b.text, "package ") {
			if _, err := policy.Compile(ctx, policy.Bundle{Modules: []policy.Module{{Name: where, Source: b.text}}}); err != nil {
				t.Errorf("%s: the example does not compile: %v\n%s", where, err, b.text)
			}
			continue
		}
		tmp := copyFlat(t, filepath.Join(repoRoot, "configs", "policies"), t.TempDir())
		src := "package symbi.authz_test\n\nimport data.symbi.authz\n\n" + b.text
		if err := os.WriteFile(filepath.Join(tmp, "example_test.rego"), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		runRegoTests(ctx, t, where, tmp)
	}
	if n < 2 {
		t.Errorf("found only %d rego blocks; did the layout change?", n)
	}
}

func runRegoTests(ctx context.Context, t *testing.T, name, dir string) {
	t.Helper()
	res, err := policy.RunTests(ctx, dir)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	for _, r := range res {
		if !r.Pass && !r.Skip {
			t.Errorf("%s: Rego test %s fails: %s", name, r.Name, r.Error)
		}
	}
}

// copyFlat copies the .rego and .json files of dir (not its subdirectories) into dst.
func copyFlat(t *testing.T, dir, dst string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".rego") || strings.HasSuffix(e.Name(), ".json")) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestReadmeInstallsFromAClone: symbi is not a published module, so an install line that
// fetches it by module path (go install github.com/...@latest) cannot work; every
// go install in the docs builds from the clone.
func TestReadmeInstallsFromAClone(t *testing.T) {
	remote := regexp.MustCompile(`go install\s+[a-z0-9.-]+\.[a-z]+/\S*symbi\S*@`)
	for _, f := range repoFiles(t, ".md") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := remote.FindString(string(data)); m != "" {
			t.Errorf("%s: %q fetches symbi by module path, which is not published; install from a clone (go install ./cmd/symbi)", f, m)
		}
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "go install ./cmd/symbi") || !strings.Contains(string(readme), "git clone") {
		t.Errorf("README.md does not say how to install from a clone (git clone, then go install ./cmd/symbi or make build)")
	}
}
