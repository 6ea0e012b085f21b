package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxFileSize bounds every policy or data file read from a directory.
const maxFileSize = 8 << 20

// Source is what was read from a policy directory.
type Source struct {
	Bundle Bundle   // decision modules (no *_test.rego) and data
	Tests  []Module // *_test.rego modules
	Files  []string // every file read, relative to the directory, sorted
	// Revision is a hash of the names and contents of the files: equal revisions mean
	// the same policy.
	Revision string
}

// LoadDir reads a policy directory:
//
//   - every *.rego file, recursively, is a module of the decision bundle, except
//     *_test.rego files, which are Rego unit tests (Source.Tests, see [RunTests]);
//   - every *.json file is a data document mounted under data at its path relative to the
//     directory without the extension: users.json is data.users, teams/blue.json is
//     data.teams.blue;
//   - files and directories whose name starts with "." are skipped (editor backups,
//     Kubernetes ConfigMap "..data" directories); symbolic links to files are followed.
//
// Module names in errors are paths relative to dir.
func LoadDir(dir string) (*Source, error) {
	src := &Source{Bundle: Bundle{Data: map[string]any{}}}
	h := sha256.New()
	err := walkPolicyFiles(dir, func(path string, info fs.FileInfo) error {
		name := info.Name()
		isRego := strings.HasSuffix(name, ".rego")
		if info.Size() > maxFileSize {
			return fmt.Errorf("read %s: larger than %d bytes", path, maxFileSize)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		src.Files = append(src.Files, rel)
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
		h.Write(data)
		switch {
		case strings.HasSuffix(name, "_test.rego"):
			src.Tests = append(src.Tests, Module{Name: rel, Source: string(data)})
		case isRego:
			src.Bundle.Modules = append(src.Bundle.Modules, Module{Name: rel, Source: string(data)})
		default:
			if err := mountData(src.Bundle.Data, rel, data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load policy dir: %w", err)
	}
	sort.Strings(src.Files)
	src.Revision = hex.EncodeToString(h.Sum(nil))[:16]
	return src, nil
}

// walkPolicyFiles calls fn for every policy file below dir: regular *.rego and *.json
// files, symbolic links followed, skipping files and directories whose name starts with
// ".". LoadDir reads this set and the Watcher's change detection stamps it, so both
// always agree on what the policy is made of.
func walkPolicyFiles(dir string, fn func(path string, info fs.FileInfo) error) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if path != dir && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !(strings.HasSuffix(name, ".rego") || strings.HasSuffix(name, ".json")) {
			return nil
		}
		info, err := os.Stat(path) // follows symbolic links
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		return fn(path, info)
	})
}

// mountData decodes a JSON data file and places it at its path under root.
func mountData(root map[string]any, rel string, data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("decode data file %s: %w", rel, err)
	}
	if dec.More() {
		return fmt.Errorf("decode data file %s: trailing data after the JSON value", rel)
	}
	parts := strings.Split(strings.TrimSuffix(rel, ".json"), "/")
	node := root
	for i, p := range parts {
		if p == "" {
			return fmt.Errorf("mount data file %s: empty path segment", rel)
		}
		if i == len(parts)-1 {
			if _, exists := node[p]; exists {
				return fmt.Errorf("mount data file %s: data.%s is already defined", rel, strings.Join(parts, "."))
			}
			node[p] = v
			return nil
		}
		next, ok := node[p].(map[string]any)
		if !ok {
			if _, exists := node[p]; exists {
				return fmt.Errorf("mount data file %s: data.%s is not an object", rel, strings.Join(parts[:i+1], "."))
			}
			next = map[string]any{}
			node[p] = next
		}
		node = next
	}
	return nil
}

// CompileDir loads a directory with [LoadDir] and compiles its decision bundle. Compile
// errors are *CompileError; file names in them are relative to dir.
func CompileDir(ctx context.Context, dir string) (*Rego, *Source, error) {
	src, err := LoadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	if len(src.Bundle.Modules) == 0 {
		return nil, src, &CompileError{Problems: []Problem{{File: dir, Message: "no *.rego policy files"}}}
	}
	e, err := Compile(ctx, src.Bundle)
	if err != nil {
		return nil, src, err
	}
	return e, src, nil
}

// IsCompileError reports whether err is (or wraps) a *CompileError.
func IsCompileError(err error) bool {
	var ce *CompileError
	return errors.As(err, &ce)
}
