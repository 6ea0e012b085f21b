package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/internal/config"
)

const auditUsage = `usage: symbi audit <command> [flags]

commands:
  verify --dir DIR [--data-dir D] [--pubkey FILE] [--json]
         check the trail against the keys and head pinned outside it
         (D/keys/audit_anchor.json, D defaults to the directory above DIR);
         every writer's chain is checked (several symbi processes with one
         configuration each write one); exit 1 names the first bad entry or a
         loss symbi recorded, and the writer whose chain has it
  tail   --dir DIR [-n N] [-f] [--format table|json]
  query  --dir DIR [--since T] [--until T] [--identity ID] [--tool NAME]
         [--decision allow|deny] [--type TYPE] [--limit N] [--format table|json]
  report --dir DIR [--since T] [--until T] [--data-dir D] [--pubkey FILE] [--format md|json]

  rotate-key [--config FILE]
         replace the trail's signing key: the trail records a key.rotated entry,
         signed by the old key, that names the new one, and the new key is pinned in
         the anchor before it signs; a verifier that trusts the old key follows the
         chain to the new one. Every writer's chain rotates to the same key;
         run it while no symbi serves the trail.

T is an RFC 3339 time or a duration back from now (90m, 24h, 7d).
`

// auditPaths are where a configuration keeps its trail, the trail's signing key and its
// anchor (the pinned keys and last head, outside the trail).
type auditPaths struct{ dir, key, anchor string }

func auditPathsOf(cfg *config.Config) auditPaths {
	p := auditPaths{dir: cfg.Audit.Dir, key: cfg.Audit.KeyFile}
	if p.dir == "" {
		p.dir = filepath.Join(cfg.Server.DataDir, "audit")
	}
	keys := filepath.Join(cfg.Server.DataDir, "keys")
	if p.key == "" {
		p.key = filepath.Join(keys, audit.KeyFileName)
	}
	p.anchor = filepath.Join(keys, audit.AnchorFileName)
	return p
}

// runAudit implements "symbi audit". Exit codes: 0 ok, 1 trail not intact, 2 usage.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	switch args[0] {
	case "verify":
		return auditVerify(args[1:], stdout, stderr)
	case "tail":
		return auditTail(ctx, args[1:], stdout, stderr)
	case "query":
		return auditQuery(ctx, args[1:], stdout, stderr)
	case "report":
		return auditReport(ctx, args[1:], stdout, stderr)
	case "rotate-key":
		return auditRotateKey(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "symbi audit: unknown command %q\n%s", args[0], auditUsage)
		return 2
	}
}

func auditFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("symbi audit "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "audit trail directory (required)")
	return fs, dir
}

func parseAuditFlags(fs *flag.FlagSet, dir *string, args []string, stderr io.Writer) bool {
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return false
	}
	if *dir == "" {
		fmt.Fprintf(stderr, "%s: --dir is required\n", fs.Name())
		return false
	}
	return true
}

// trustFlags are the verification flags of verify and report.
type trustFlags struct {
	dataDir, pubkey *string
	trustTrail      *bool
}

func addTrustFlags(fs *flag.FlagSet) trustFlags {
	return trustFlags{
		dataDir: fs.String("data-dir", "", "data_dir of the symbi that writes the trail, where its anchor (pinned keys, last head) is kept; default: the directory above --dir"),
		pubkey:  fs.String("pubkey", "", "trusted Ed25519 public key (PEM) instead of the keys pinned in the anchor"),
		trustTrail: fs.Bool("trust-trail-key", false, "with no anchor and no --pubkey, check the trail against the key it names itself "+
			"(proves only that it is self-consistent: anyone can write such a trail)"),
	}
}

// auditTrust says what verification trusts: the anchor kept outside the trail (by default
// <data dir>/keys/audit_anchor.json, the data dir being the one above the trail), and
// --pubkey if given. Nothing inside the trail is trusted unless --trust-trail-key says so.
func auditTrust(dir string, tf trustFlags, stderr io.Writer) (audit.VerifyOptions, bool) {
	var o audit.VerifyOptions
	dataDir := *tf.dataDir
	if dataDir == "" {
		dataDir = filepath.Dir(filepath.Clean(dir))
	}
	anchorPath := filepath.Join(dataDir, "keys", audit.AnchorFileName)
	a, others, err := audit.ReadAnchors(anchorPath)
	if err != nil {
		fmt.Fprintf(stderr, "symbi audit: %v\n", err)
		return o, false
	}
	o.Anchor, o.Writers = a, others
	if *tf.pubkey != "" {
		if o.Trusted, err = audit.ReadPublicKey(*tf.pubkey); err != nil {
			fmt.Fprintf(stderr, "symbi audit: %v\n", err)
			return o, false
		}
	}
	switch {
	case a != nil && o.Trusted == nil:
		ids := make([]string, len(a.Keys))
		for i, k := range a.Keys {
			ids[i] = k.ID
		}
		fmt.Fprintf(stderr, "symbi audit: trusting the keys pinned in %s (%s) and the head recorded there\n", anchorPath, strings.Join(ids, " -> "))
	case a != nil:
		fmt.Fprintf(stderr, "symbi audit: trusting --pubkey and the head recorded in %s\n", anchorPath)
	case o.Trusted != nil:
		fmt.Fprintf(stderr, "symbi audit: warning: no anchor at %s: a truncated tail before the last checkpoint cannot be ruled out\n", anchorPath)
	case *tf.trustTrail:
		fmt.Fprintln(stderr, "symbi audit: warning: --trust-trail-key: checking against the key the trail names itself")
	default:
		fmt.Fprintf(stderr, "symbi audit: no key pinned outside the trail (no anchor at %s): give --data-dir (the data_dir of the symbi that writes the trail), "+
			"--pubkey FILE, or --trust-trail-key to check only that the trail is self-consistent\n", anchorPath)
		return o, false
	}
	return o, true
}

func auditVerify(args []string, stdout, stderr io.Writer) int {
	fs, dir := auditFlags("verify", stderr)
	tf := addTrustFlags(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if !parseAuditFlags(fs, dir, args, stderr) {
		return 2
	}
	vo, ok := auditTrust(*dir, tf, stderr)
	if !ok {
		return 2
	}
	rep, err := audit.VerifyWith(*dir, vo)
	if err != nil {
		fmt.Fprintf(stderr, "symbi audit verify: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else if rep.Intact {
		if len(rep.Writers) > 0 {
			fmt.Fprintf(stdout, "intact: %d entries in %d writers' chains\n", rep.TotalEntries(), 1+len(rep.Writers))
			fmt.Fprintf(stdout, "writer %s: ", audit.MainWriter)
		}
		for i := -1; i < len(rep.Writers); i++ {
			r := &rep
			if i >= 0 {
				r = &rep.Writers[i]
				fmt.Fprintf(stdout, "writer %s: ", r.Writer)
			}
			fmt.Fprintf(stdout, "intact: %d entries (seq %d to %d) in %d segments, keys %s, checkpoint seq %d\n",
				r.Entries, r.FirstSeq, r.LastSeq, r.Segments, strings.Join(r.Keys, " -> "), r.Checkpoint.Seq)
		}
	} else {
		fmt.Fprintf(stdout, "NOT INTACT: %s\n", rep.Problem)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "symbi audit verify: warning: %s\n", w)
	}
	if !rep.Intact {
		return 1
	}
	return 0
}

// parseAuditTime accepts RFC 3339 or a duration before now (with a "d" suffix for days).
func parseAuditTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("parse time %q: want RFC 3339 or a duration such as 24h or 7d", s)
}

func printRecords(w io.Writer, recs []audit.Record, format string) {
	if format == "json" {
		enc := json.NewEncoder(w)
		for i := range recs {
			enc.Encode(jsonRecord(&recs[i]))
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tIDENTITY\tTARGET\tDECISION\tOUTCOME\tREASON")
	for i := range recs {
		writeRow(tw, &recs[i])
	}
	tw.Flush()
}

// jsonRecord is what --format json prints for r: its event, and the writer slot whose
// chain holds it when that is not the main chain (seq counts within that chain).
func jsonRecord(r *audit.Record) any {
	if r.Writer == "" || r.Writer == audit.MainWriter {
		return &r.Event
	}
	return struct {
		*audit.Event
		Writer string `json:"writer"`
	}{&r.Event, r.Writer}
}

func writeRow(w io.Writer, r *audit.Record) {
	ev := &r.Event
	target := ev.Tool
	for _, alt := range []string{ev.Resource, ev.Prompt, ev.Upstream} {
		if target == "" {
			target = alt
		}
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return strings.NewReplacer("\t", " ", "\n", " ").Replace(s)
	}
	seq := strconv.FormatUint(r.Seq, 10)
	if r.Writer != "" {
		seq = r.Writer + ":" + seq // seq counts within the writer's chain
	}
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", seq, ev.Time.UTC().Format(time.RFC3339), ev.Type,
		dash(ev.Identity), dash(target), dash(string(ev.Decision)), dash(string(ev.Outcome)), dash(ev.Reason))
}

func checkFormat(fs *flag.FlagSet, got string, allowed ...string) bool {
	for _, a := range allowed {
		if got == a {
			return true
		}
	}
	fmt.Fprintf(fs.Output(), "%s: --format %q: want one of %s\n", fs.Name(), got, strings.Join(allowed, ", "))
	return false
}

func auditTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, dir := auditFlags("tail", stderr)
	n := fs.Int("n", 10, "number of records to show")
	follow := fs.Bool("f", false, "keep printing records as they are written")
	format := fs.String("format", "table", "table or json")
	if !parseAuditFlags(fs, dir, args, stderr) || !checkFormat(fs, *format, "table", "json") {
		return 2
	}
	recs, err := audit.Tail(ctx, *dir, *n)
	if err != nil {
		fmt.Fprintf(stderr, "symbi audit tail: %v\n", err)
		return 2
	}
	printRecords(stdout, recs, *format)
	if !*follow {
		return 0
	}
	last := map[string]uint64{}
	for _, r := range recs {
		last[r.Writer] = max(last[r.Writer], r.Seq)
	}
	var tw *tabwriter.Writer
	enc := json.NewEncoder(stdout)
	if *format == "table" {
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	}
	err = audit.FollowAll(ctx, *dir, last, 0, func(r audit.Record) error {
		if tw != nil {
			writeRow(tw, &r)
			return tw.Flush()
		}
		return enc.Encode(jsonRecord(&r))
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "symbi audit tail: %v\n", err)
		return 2
	}
	return 0
}

func auditQuery(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, dir := auditFlags("query", stderr)
	since := fs.String("since", "", "RFC 3339 time or duration back from now")
	until := fs.String("until", "", "RFC 3339 time or duration back from now")
	identity := fs.String("identity", "", "only this identity")
	tool := fs.String("tool", "", "only this tool")
	decision := fs.String("decision", "", "allow or deny")
	typ := fs.String("type", "", "only this event type (call, decision, policy.reloaded, ...)")
	limit := fs.Int("limit", 0, "only the newest N matches")
	format := fs.String("format", "table", "table or json")
	if !parseAuditFlags(fs, dir, args, stderr) || !checkFormat(fs, *format, "table", "json") {
		return 2
	}
	if *decision != "" && *decision != "allow" && *decision != "deny" {
		fmt.Fprintf(stderr, "%s: --decision %q: want allow or deny\n", fs.Name(), *decision)
		return 2
	}
	now := time.Now()
	f := audit.Filter{Identity: *identity, Tool: *tool, Decision: audit.Decision(*decision), Type: audit.Type(*typ), Limit: *limit}
	var err error
	if f.Since, err = parseAuditTime(*since, now); err == nil {
		f.Until, err = parseAuditTime(*until, now)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	recs, err := audit.Query(ctx, *dir, f)
	if err != nil {
		fmt.Fprintf(stderr, "symbi audit query: %v\n", err)
		return 2
	}
	printRecords(stdout, recs, *format)
	return 0
}

func auditReport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, dir := auditFlags("report", stderr)
	since := fs.String("since", "", "RFC 3339 time or duration back from now")
	until := fs.String("until", "", "RFC 3339 time or duration back from now")
	tf := addTrustFlags(fs)
	format := fs.String("format", "md", "md or json")
	if !parseAuditFlags(fs, dir, args, stderr) || !checkFormat(fs, *format, "md", "json") {
		return 2
	}
	now := time.Now()
	from, err := parseAuditTime(*since, now)
	var to time.Time
	if err == nil {
		to, err = parseAuditTime(*until, now)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	vo, ok := auditTrust(*dir, tf, stderr)
	if !ok {
		return 2
	}
	rep, err := audit.VerifyWith(*dir, vo)
	if err != nil {
		fmt.Fprintf(stderr, "symbi audit report: %v\n", err)
		return 2
	}
	recs, err := audit.Query(ctx, *dir, audit.Filter{Since: from, Until: to})
	if err != nil {
		fmt.Fprintf(stderr, "symbi audit report: %v\n", err)
		return 2
	}
	c := audit.Summarize(recs, from, to)
	c.Integrity = &rep
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(c)
	} else {
		io.WriteString(stdout, c.Markdown())
	}
	if !rep.Intact {
		fmt.Fprintf(stderr, "symbi audit report: trail NOT INTACT: %s\n", rep.Problem)
		return 1
	}
	return 0
}

func auditRotateKey(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("symbi audit rotate-key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (its data_dir and [audit] settings); default: the built-in configuration")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	ap := auditPathsOf(cfg)
	if _, err := audit.MoveKey(filepath.Join(ap.dir, audit.KeyFileName), ap.key); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 1
	}
	old, cur, err := audit.RotateKeyAll(ctx, &audit.Options{Dir: ap.dir, KeyPath: ap.key, AnchorPath: ap.anchor})
	if err != nil {
		if errors.Is(err, audit.ErrLocked) {
			fmt.Fprintf(stderr, "%s: a running symbi holds the trail %s (%v): stop every symbi using it, rotate, and start them again\n", fs.Name(), ap.dir, err)
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "rotated audit key %s -> %s (public key %s)\n", old, cur, ap.key+audit.PublicKeySuffix)
	return 0
}
