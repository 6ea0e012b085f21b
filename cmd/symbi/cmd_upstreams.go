package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/symbi-dev/symbi/internal/catalog"
	"github.com/symbi-dev/symbi/internal/config"
	"github.com/symbi-dev/symbi/internal/tomledit"
)

// defaultConfigPath is the file `symbi add|remove|ls|logs` use without --config:
// $SYMBI_CONFIG, else symbi.toml in the current directory.
func defaultConfigPath() string { return envOr("SYMBI_CONFIG", "symbi.toml") }

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// splitDashes splits args at the first "--": what follows is a command line, taken as is.
func splitDashes(args []string) (before, after []string, dashes bool) {
	if i := slices.Index(args, "--"); i >= 0 {
		return args[:i], args[i+1:], true
	}
	return args, nil, false
}

const addUsage = `usage:
  symbi add [flags] NAME -- COMMAND [ARGS...]   a stdio upstream
  symbi add [flags] NAME --url URL              a streamable HTTP (or --transport sse) upstream
  symbi add [flags] NAME [-- ARGS...]           a server of the built-in catalog (symbi add --list)

The upstream is appended to the configuration as a new [[upstreams]] table (the rest of
the file is kept as it is), the result is validated, written atomically, and every running
symbi on that file is sent SIGHUP so that it starts the upstream at once.
`

// runAdd implements `symbi add`.
func runAdd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flagArgs, cmdline, dashes := splitDashes(args)
	fs := spFlags("add", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, addUsage); fs.PrintDefaults() }
	cfgPath := fs.String("config", defaultConfigPath(), "configuration file (created if missing); default $SYMBI_CONFIG or ./symbi.toml")
	rawURL := fs.String("url", "", "the upstream's URL (an HTTP upstream)")
	transport := fs.String("transport", "", "streamable (default) or sse, for --url")
	prefix := fs.String("prefix", "", "tool name prefix (default: the name)")
	tier := fs.String("tier", "", "sandbox tier: none, docker, gvisor or auto (default: [sandbox] default_tier)")
	image := fs.String("image", "", "sandbox image, for the docker and gvisor tiers")
	disabled := fs.Bool("disabled", false, "add it disabled (validated, not started)")
	list := fs.Bool("list", false, "list the built-in catalog and exit")
	noSignal := fs.Bool("no-reload", false, "do not signal running symbi processes")
	var envs, headers multiFlag
	fs.Var(&envs, "env", "K=V environment for a stdio upstream (repeatable); V may be env:NAME")
	fs.Var(&headers, "header", "K=V header for an HTTP upstream (repeatable); V may be env:NAME")
	pos, ok := spParse(fs, flagArgs)
	if !ok {
		return 2
	}
	if *list {
		return printCatalog(stdout, stderr)
	}
	if len(pos) != 1 {
		return spUsageErr(stderr, fs, "one NAME is needed (then -- COMMAND ARGS..., --url URL, or a catalog name)")
	}
	name := pos[0]
	u := upstreamSpec{Name: name, Prefix: *prefix, URL: *rawURL, Transport: *transport, Tier: *tier, Image: *image, Disabled: *disabled}
	var err error
	if u.Env, err = keyValues(envs); err != nil {
		return spUsageErr(stderr, fs, "--env: %v", err)
	}
	if u.Headers, err = keyValues(headers); err != nil {
		return spUsageErr(stderr, fs, "--header: %v", err)
	}
	var entry *catalog.Server
	switch {
	case u.URL != "" && dashes:
		return spUsageErr(stderr, fs, "give either --url or -- COMMAND, not both")
	case u.URL != "":
	default:
		srv, found, err := catalog.Lookup(name)
		if err != nil {
			fmt.Fprintln(stderr, "symbi add:", err)
			return 2
		}
		switch {
		case found:
			wd, err := os.Getwd()
			if err != nil {
				fmt.Fprintln(stderr, "symbi add:", err)
				return 2
			}
			entry = &srv
			u.Command = srv.Command
			u.Args = srv.Args(cmdline, wd)
			for k := range srv.Env {
				if _, set := u.Env[k]; !set && slices.Contains(srv.RequiredEnv(), k) {
					if u.Env == nil {
						u.Env = map[string]string{}
					}
					u.Env[k] = "env:" + k
				}
			}
		case len(cmdline) == 0:
			return spUsageErr(stderr, fs, "%q is not in the built-in catalog (symbi add --list): give -- COMMAND ARGS... or --url URL", name)
		default:
			u.Command = cmdline
		}
	}
	path := *cfgPath
	src, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		src = []byte("# symbi configuration (see configs/symbi.example.toml for every key)\nversion = 1\n")
		fmt.Fprintf(stdout, "creating %s\n", path)
	case err != nil:
		fmt.Fprintln(stderr, "symbi add:", err)
		return 2
	}
	out, err := tomledit.AppendTable(src, "upstreams", u.render(entry))
	if err != nil {
		fmt.Fprintf(stderr, "symbi add: %s: %v\n", path, err)
		return 2
	}
	cfg, code := saveEdited("symbi add", path, src, out, stderr)
	if cfg == nil {
		return code
	}
	fmt.Fprintf(stdout, "added upstream %s to %s\n", name, path)
	if entry != nil {
		fmt.Fprintf(stdout, "  from the catalog: %s\n", entry.Description)
		if entry.ArgsHint != "" && len(cmdline) == 0 {
			fmt.Fprintf(stdout, "  arguments: %s (used: %s; give others after --)\n", entry.ArgsHint, strings.Join(u.Args, " "))
		}
		for _, k := range entry.RequiredEnv() {
			if _, set := os.LookupEnv(k); !set {
				fmt.Fprintf(stdout, "  needs %s in symbi's environment (%s)\n", k, entry.Env[k])
			}
		}
		if entry.Tier != "" && u.Tier == "" {
			fmt.Fprintf(stdout, "  suggested sandbox tier: %s (add --tier %s --image IMAGE)\n", entry.Tier, entry.Tier)
		}
		if entry.Policy != "" {
			fmt.Fprintf(stdout, "  policy: %s\n", entry.Policy)
		}
	}
	if !*noSignal {
		notifyRunning(stdout, stderr, cfg.Server.DataDir, path)
	}
	return 0
}

// runRemove implements `symbi remove NAME`.
func runRemove(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := spFlags("remove", stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration file; default $SYMBI_CONFIG or ./symbi.toml")
	noSignal := fs.Bool("no-reload", false, "do not signal running symbi processes")
	pos, ok := spParse(fs, args)
	if !ok {
		return 2
	}
	if len(pos) != 1 {
		return spUsageErr(stderr, fs, "one NAME is needed")
	}
	path := *cfgPath
	src, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "symbi remove:", err)
		return 2
	}
	out, err := tomledit.RemoveTable(src, "upstreams", "name", pos[0])
	if errors.Is(err, tomledit.ErrNotFound) {
		fmt.Fprintf(stderr, "symbi remove: %s has no upstream %q\n", path, pos[0])
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "symbi remove: %s: %v\n", path, err)
		return 2
	}
	cfg, code := saveEdited("symbi remove", path, src, out, stderr)
	if cfg == nil {
		return code
	}
	fmt.Fprintf(stdout, "removed upstream %s from %s\n", pos[0], path)
	if !*noSignal {
		notifyRunning(stdout, stderr, cfg.Server.DataDir, path)
	}
	return 0
}

// saveEdited checks the edited file (checkEdited) and writes it in place atomically. It
// returns the edited configuration, or nil and the exit code.
func saveEdited(cmd, path string, before, after []byte, stderr io.Writer) (*config.Config, int) {
	cfg, code := checkEdited(path, before, after, stderr)
	if cfg == nil {
		return nil, code
	}
	if err := writeFileAtomic(path, after, 0o600); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return nil, 2
	}
	return cfg, 0
}

// placeholderEnv validates a file without the environment it will run with: an
// env:NAME value unset here gets a placeholder (long enough for a bearer token).
func placeholderEnv(name string) (string, bool) {
	if v, ok := os.LookupEnv(name); ok {
		return v, true
	}
	return "symbi-placeholder-value-0123456789abcdef", true
}

// checkEdited validates the edited file with the configuration's own loader (env:
// values unset here are taken as set). A file that was valid and no longer is, is not
// written: every problem is printed with its key (exit 1). It returns the edited
// configuration.
func checkEdited(path string, before, after []byte, stderr io.Writer) (*config.Config, int) {
	abs, err := filepath.Abs(path)
	if err != nil {
		fmt.Fprintln(stderr, "symbi:", err)
		return nil, 2
	}
	cfg, err := config.Parse(abs, after, placeholderEnv)
	if err == nil {
		return cfg, 0
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Fprintf(stderr, "symbi: %s would not be valid; nothing written: %d problem(s)\n", path, len(ce.Problems))
		for _, p := range ce.Problems {
			fmt.Fprintf(stderr, "  %s\n", p)
		}
		if _, berr := config.Parse(abs, before, placeholderEnv); berr != nil {
			fmt.Fprintf(stderr, "(the file already had problems before this change)\n")
		}
		return nil, 1
	}
	fmt.Fprintf(stderr, "symbi: %s: %v\n", path, err)
	return nil, 2
}

// notifyRunning sends SIGHUP to every running symbi whose configuration is path.
func notifyRunning(stdout, stderr io.Writer, dataDir, path string) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return
	}
	n := 0
	for _, in := range instances(dataDir) {
		if in.Config != abs {
			continue
		}
		if err := syscall.Kill(in.PID, syscall.SIGHUP); err != nil {
			fmt.Fprintf(stderr, "symbi: signal symbi %s (pid %d): %v\n", in.Mode, in.PID, err)
			continue
		}
		fmt.Fprintf(stdout, "told symbi %s (pid %d) to reload\n", in.Mode, in.PID)
		n++
	}
	if n == 0 {
		fmt.Fprintln(stdout, "no running symbi uses this file: the change applies at its next start")
	}
}

// upstreamSpec is an upstream as `symbi add` writes it.
type upstreamSpec struct {
	Name, Prefix, URL, Transport, Tier, Image string
	Command, Args                             []string
	Env, Headers                              map[string]string
	Disabled                                  bool
}

// render writes the keys of the new [[upstreams]] table, with the catalog's notes as
// comments.
func (u upstreamSpec) render(entry *catalog.Server) string {
	var b strings.Builder
	if entry != nil {
		fmt.Fprintf(&b, "# %s (symbi catalog: %s)\n", entry.Description, entry.URL)
		if entry.Tier != "" {
			fmt.Fprintf(&b, "# suggested sandbox tier: %s (with an image that has the runtime)\n", entry.Tier)
		}
		if entry.Policy != "" {
			fmt.Fprintf(&b, "# policy: %s\n", entry.Policy)
		}
	}
	fmt.Fprintf(&b, "name = %s\n", tomlString(u.Name))
	if u.URL != "" {
		fmt.Fprintf(&b, "url = %s\n", tomlString(u.URL))
		if u.Transport != "" {
			fmt.Fprintf(&b, "transport = %s\n", tomlString(u.Transport))
		}
	} else {
		fmt.Fprintf(&b, "command = %s\n", tomlArray(u.Command))
		if len(u.Args) > 0 {
			fmt.Fprintf(&b, "args = %s\n", tomlArray(u.Args))
		}
	}
	if len(u.Env) > 0 {
		fmt.Fprintf(&b, "env = %s\n", tomlInline(u.Env))
	}
	if len(u.Headers) > 0 {
		fmt.Fprintf(&b, "headers = %s\n", tomlInline(u.Headers))
	}
	if u.Prefix != "" {
		fmt.Fprintf(&b, "prefix = %s\n", tomlString(u.Prefix))
	}
	if u.Tier != "" || u.Image != "" {
		m := map[string]string{}
		if u.Tier != "" {
			m["tier"] = u.Tier
		}
		if u.Image != "" {
			m["image"] = u.Image
		}
		fmt.Fprintf(&b, "sandbox = %s\n", tomlInline(m))
	}
	if u.Disabled {
		b.WriteString("disabled = true\n")
	}
	return b.String()
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlKey writes k bare when TOML allows it, else quoted.
func tomlKey(k string) string {
	if k == "" || strings.ContainsFunc(k, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) {
		return tomlString(k)
	}
	return k
}

func tomlArray(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func tomlInline(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = tomlKey(k) + " = " + tomlString(m[k])
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func keyValues(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not K=V", kv)
		}
		m[k] = v
	}
	return m, nil
}

func printCatalog(stdout, stderr io.Writer) int {
	all, err := catalog.Load()
	if err != nil {
		fmt.Fprintln(stderr, "symbi add:", err)
		return 2
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCOMMAND\tNEEDS\tTIER\tDESCRIPTION")
	for _, s := range all {
		needs := strings.Join(s.RequiredEnv(), ",")
		if needs == "" {
			needs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, strings.Join(s.Command, " "), needs, s.Tier, s.Description)
	}
	_ = tw.Flush()
	return 0
}

// targetInstances finds the running symbi processes of a configuration file: its data
// directory's registry, those running that file (or all of them with no file).
func targetInstances(path string, stderr io.Writer) (string, []instance, bool) {
	cfg, err := config.Parse(absOr(path), mustRead(path), placeholderEnv)
	if err != nil {
		fmt.Fprintln(stderr, "symbi:", err)
		return "", nil, false
	}
	var out []instance
	for _, in := range instances(cfg.Server.DataDir) {
		if in.Config == absOr(path) {
			out = append(out, in)
		}
	}
	return cfg.Server.DataDir, out, true
}

func absOr(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func mustRead(p string) []byte {
	b, _ := os.ReadFile(p) // a missing file parses as the defaults; Parse reports bad ones
	return b
}

// runLs implements `symbi ls`: the upstreams of the running symbi processes of a file.
func runLs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := spFlags("ls", stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration file; default $SYMBI_CONFIG or ./symbi.toml")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, ok := spParse(fs, args)
	if !ok {
		return 2
	}
	if len(pos) > 0 {
		return spUsageErr(stderr, fs, "no arguments are taken")
	}
	if _, err := os.Stat(*cfgPath); err != nil {
		fmt.Fprintln(stderr, "symbi ls:", err)
		return 2
	}
	_, ins, ok := targetInstances(*cfgPath, stderr)
	if !ok {
		return 2
	}
	if len(ins) == 0 {
		cfg, _ := config.Parse(absOr(*cfgPath), mustRead(*cfgPath), placeholderEnv)
		fmt.Fprintf(stdout, "no running symbi uses %s; configured upstreams:\n", *cfgPath)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tTRANSPORT\tSTATE")
		for _, u := range cfg.Upstreams {
			state, tr := "not running", "stdio"
			if u.Disabled {
				state = "disabled"
			}
			if u.URL != "" {
				tr = "http"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, tr, state)
		}
		_ = tw.Flush()
		return 0
	}
	type proc struct {
		instance
		Upstreams []controlInfo `json:"upstreams"`
	}
	var all []proc
	for _, in := range ins {
		var infos []controlInfo
		if err := controlGet(ctx, in, "/upstreams", &infos); err != nil {
			fmt.Fprintf(stderr, "symbi ls: symbi %s (pid %d): %v\n", in.Mode, in.PID, err)
			continue
		}
		all = append(all, proc{in, infos})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(all)
		return 0
	}
	for _, p := range all {
		fmt.Fprintf(stdout, "symbi %s (pid %d, since %s)\n", p.Mode, p.PID, p.Started.Local().Format(time.DateTime))
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tTRANSPORT\tSTATE\tTOOLS\tTIER\tVERIFICATION\tRESTARTS\tLAST ERROR")
		for _, u := range p.Upstreams {
			tools := fmt.Sprint(u.Tools)
			if u.Hidden > 0 {
				tools += fmt.Sprintf(" (+%d hidden)", u.Hidden)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", u.Name, u.Transport, u.State, tools, u.Tier,
				verificationSummary(u.Verification), u.Restarts, oneLine(u.LastError, 60))
		}
		_ = tw.Flush()
	}
	return 0
}

func verificationSummary(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func controlGet(ctx context.Context, in instance, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://symbi"+path, nil)
	if err != nil {
		return err
	}
	resp, err := controlClient(in.Socket).Do(req)
	if err != nil {
		return fmt.Errorf("reach the control socket: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// runLogs implements `symbi logs NAME [-f]`: the upstream's last stderr lines, from the
// running symbi.
func runLogs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := spFlags("logs", stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration file; default $SYMBI_CONFIG or ./symbi.toml")
	follow := fs.Bool("f", false, "follow: keep printing new lines until interrupted")
	pid := fs.Int("pid", 0, "the symbi process to ask, when several run the file (default: the oldest)")
	pos, ok := spParse(fs, args)
	if !ok {
		return 2
	}
	if len(pos) != 1 {
		return spUsageErr(stderr, fs, "one upstream NAME is needed")
	}
	_, ins, ok := targetInstances(*cfgPath, stderr)
	if !ok {
		return 2
	}
	if *pid != 0 {
		ins = slices.DeleteFunc(ins, func(in instance) bool { return in.PID != *pid })
	}
	if len(ins) == 0 {
		fmt.Fprintf(stderr, "symbi logs: no running symbi uses %s (the stderr of upstreams is kept by the process that runs them)\n", *cfgPath)
		return 1
	}
	q := url.Values{"upstream": {pos[0]}}
	if *follow {
		q.Set("follow", "1")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://symbi/logs?"+q.Encode(), nil)
	if err != nil {
		fmt.Fprintln(stderr, "symbi logs:", err)
		return 2
	}
	resp, err := controlClient(ins[0].Socket).Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "symbi logs: reach the control socket:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(stderr, "symbi logs: %s\n", strings.TrimSpace(string(b)))
		return 1
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		fmt.Fprintln(stdout, sc.Text())
	}
	return 0
}
