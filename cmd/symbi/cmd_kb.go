package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/rag"
)

const kbUsage = `usage: symbi kb <command> [--config FILE] ...

the knowledge base that symbi__knowledge_search and symbi__rag_answer serve.

commands:
  ingest [--title T] [--id ID] [--meta k=v]... PATH...   add files, or the text files under directories
  search [--limit N] [--filter k=v]... [--json] QUERY    search it as clients do (hybrid ranking)
  stats [--json]                                         count documents and chunks
`

// kbExts are the files a directory ingest takes.
var kbExts = map[string]bool{".md": true, ".txt": true, ".rst": true, ".adoc": true, ".html": true, ".json": true, ".toml": true,
	".yaml": true, ".yml": true, ".go": true, ".py": true, ".js": true, ".ts": true, ".rs": true, ".java": true, ".c": true, ".h": true, ".sh": true, ".rego": true}

// kvFlag collects repeated k=v flags.
type kvFlag map[string]string

func (m kvFlag) String() string { return fmt.Sprint(map[string]string(m)) }
func (m kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}

// runKB implements `symbi kb ingest|search|stats`.
func runKB(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, kbUsage)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "ingest", "search", "stats":
	case "-h", "--help", "help":
		fmt.Fprint(stderr, kbUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "symbi kb: unknown command %q\n\n%s", cmd, kbUsage)
		return 2
	}
	fset := spFlags("kb "+cmd, stderr)
	cfgPath := fset.String("config", "", "configuration file (default: built-in defaults)")
	title := fset.String("title", "", "ingest: title (default: the file name)")
	id := fset.String("id", "", "ingest: document id, for a single file (default: derived from the path)")
	limit := fset.Int("limit", 10, "search: at most this many results")
	asJSON := fset.Bool("json", false, "print JSON")
	meta, filter := kvFlag{}, kvFlag{}
	fset.Var(meta, "meta", "ingest: metadata key=value (repeatable)")
	fset.Var(filter, "filter", "search: metadata key=value that must match (repeatable)")
	pos, ok := spParse(fset, args[1:])
	if !ok {
		return 2
	}
	switch {
	case cmd == "ingest" && len(pos) == 0:
		return spUsageErr(stderr, fset, "ingest needs at least one PATH")
	case cmd == "search" && len(pos) == 0:
		return spUsageErr(stderr, fset, "search needs a QUERY")
	case cmd == "stats" && len(pos) > 0:
		return spUsageErr(stderr, fset, "stats takes no arguments")
	case *id != "" && len(pos) != 1:
		return spUsageErr(stderr, fset, "--id needs exactly one PATH")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "symbi kb: %v\n", err)
		return 2
	}
	var db *sql.DB
	if cfg.Context.Store == "" {
		if db, err = store.Open(filepath.Join(cfg.Server.DataDir, store.FileName)); err != nil {
			fmt.Fprintf(stderr, "symbi kb: %v\n", err)
			return 1
		}
		defer db.Close()
	}
	ccfg := cfg.Context
	if ccfg.Store == "" {
		// A one-off command would spend its run building the in-memory index; it scans.
		ccfg.Index, ccfg.HNSWM, ccfg.HNSWEfConstruction, ccfg.HNSWEfSearch = "", 0, 0, 0
	}
	st, err := openContextStore(ctx, ccfg, db, nil)
	if err != nil {
		fmt.Fprintf(stderr, "symbi kb: %v\n", err)
		return 1
	}
	defer st.Close()
	ccfg.IngestRoots = nil // the operator may ingest any file; roots bound what clients may
	eng, err := newContextEngine(ctx, ccfg, st, nil)
	if err != nil {
		fmt.Fprintf(stderr, "symbi kb: %v\n", err)
		return 2
	}
	switch cmd {
	case "ingest":
		return kbIngest(ctx, eng, pos, *title, *id, meta, stdout, stderr)
	case "search":
		hits, err := eng.Search(ctx, strings.Join(pos, " "), filter, *limit)
		if err != nil {
			fmt.Fprintf(stderr, "symbi kb search: %v\n", err)
			return 1
		}
		if *asJSON {
			return printJSON(stdout, stderr, searchOut{Results: passages(hits)})
		}
		for i, h := range hits {
			fmt.Fprintf(stdout, "%d. %s  (score %.4f", i+1, h.ID, h.Score)
			if t := h.Meta["title"]; t != "" {
				fmt.Fprintf(stdout, ", %s", t)
			}
			fmt.Fprintf(stdout, ")\n   %s\n", oneLine(h.Text, 160))
		}
		if len(hits) == 0 {
			fmt.Fprintln(stdout, "no results")
			return 1
		}
		return 0
	default:
		s, err := st.Stats(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "symbi kb stats: %v\n", err)
			return 1
		}
		if *asJSON {
			return printJSON(stdout, stderr, s)
		}
		fmt.Fprintf(stdout, "documents  %d\nchunks     %d\nembedder   %s\n", s.Docs, s.Chunks, eng.Embedder().Name())
		names := make([]string, 0, len(s.Collections))
		for n := range s.Collections {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(stdout, "  %-30s %d\n", n, s.Collections[n])
		}
		return 0
	}
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "symbi kb: %v\n", err)
		return 1
	}
	return 0
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// kbIngest ingests files and directories, drawing a progress bar on stderr when there
// are several files.
func kbIngest(ctx context.Context, eng *rag.Engine, paths []string, title, id string, meta map[string]string, stdout, stderr io.Writer) int {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(stderr, "symbi kb ingest: %v\n", err)
			return 1
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != p {
				return filepath.SkipDir
			}
			if d.Type().IsRegular() && kbExts[strings.ToLower(filepath.Ext(path))] {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(stderr, "symbi kb ingest: %v\n", err)
			return 1
		}
	}
	bar := len(files) > 1
	failed, chunks := 0, 0
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			abs, _ := filepath.Abs(f)
			t := title
			if t == "" {
				t = filepath.Base(f)
			}
			var info rag.DocInfo
			info, err = eng.Ingest(ctx, rag.Document{ID: id, Title: t, Source: abs, Text: string(b), Metadata: meta})
			if err == nil {
				chunks += info.Chunks
				if !bar {
					fmt.Fprintf(stdout, "ingested %s as %s (%d chunks)\n", f, info.ID, info.Chunks)
				}
			}
		}
		if err != nil {
			failed++
			if bar {
				fmt.Fprintln(stderr)
			}
			fmt.Fprintf(stderr, "symbi kb ingest: %s: %v\n", f, err)
		}
		if bar {
			const width = 30
			done := (i + 1) * width / len(files)
			fmt.Fprintf(stderr, "\r[%s%s] %d/%d files, %d chunks", strings.Repeat("#", done), strings.Repeat(".", width-done), i+1, len(files), chunks)
		}
	}
	if bar {
		fmt.Fprintln(stderr)
		fmt.Fprintf(stdout, "ingested %d of %d files (%d chunks)\n", len(files)-failed, len(files), chunks)
	}
	if failed > 0 || len(files) == 0 {
		return 1
	}
	return 0
}
