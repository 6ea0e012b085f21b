package main

import (
	"context"
	"fmt"
	"io"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/symbi-dev/symbi/audit"
	"github.com/symbi-dev/symbi/internal/store"
	"github.com/symbi-dev/symbi/schemapin"
)

const toolsUsage = `usage: symbi tools <command> --data-dir DIR [--upstream U] [TOOL]

rug-pull quarantine: new or changed tool definitions wait here until approved.

commands:
  pending [--json]          list pending definitions with a diff against the approved one
  approve TOOL [--hash H]   approve the pending definition of TOOL
  reject TOOL [--hash H]    keep the pending definition of TOOL hidden
`

// runTools implements `symbi tools pending|approve|reject`.
func runTools(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, toolsUsage)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "pending", "approve", "reject":
	case "-h", "--help", "help":
		fmt.Fprint(stderr, toolsUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "symbi tools: unknown command %q\n\n%s", cmd, toolsUsage)
		return 2
	}
	fs := spFlags("tools "+cmd, stderr)
	dataDir := fs.String("data-dir", "./symbi-data", "symbi data directory")
	upstream := fs.String("upstream", "", "upstream name (needed when several upstreams have a pending TOOL)")
	asJSON := fs.Bool("json", false, "pending: print as JSON")
	hash := fs.String("hash", "", "approve/reject: the definition hash you reviewed (from pending); refuse if it changed since")
	pos, ok := spParse(fs, args[1:])
	if !ok {
		return 2
	}
	var tool string
	switch {
	case cmd == "pending" && len(pos) <= 1:
		if len(pos) == 1 {
			tool = pos[0]
		}
	case cmd != "pending" && len(pos) == 1:
		tool = pos[0]
	default:
		return spUsageErr(stderr, fs, "%s takes one TOOL argument", cmd)
	}

	db, err := store.Open(filepath.Join(*dataDir, store.FileName))
	if err != nil {
		fmt.Fprintln(stderr, "symbi tools:", err)
		return 2
	}
	defer db.Close()
	q, err := schemapin.NewQuarantine(ctx, db)
	if err != nil {
		fmt.Fprintln(stderr, "symbi tools:", err)
		return 2
	}
	pending, err := q.Pending(ctx, *upstream)
	if err != nil {
		fmt.Fprintln(stderr, "symbi tools:", err)
		return 1
	}
	if tool != "" {
		var match []schemapin.PendingTool
		for _, p := range pending {
			if p.Tool == tool {
				match = append(match, p)
			}
		}
		pending = match
	}

	if cmd == "pending" {
		if *asJSON {
			if pending == nil {
				pending = []schemapin.PendingTool{}
			}
			return spPrintJSON(stdout, stderr, pending)
		}
		if len(pending) == 0 {
			fmt.Fprintln(stdout, "no pending tool definitions")
			return 0
		}
		for _, p := range pending {
			kind := "changed"
			if p.Approved == "" {
				kind = "new"
			}
			fmt.Fprintf(stdout, "%s %s (%s, sha256:%s, seen %s)\n", p.Upstream, p.Tool, kind, p.Hash, p.Updated.Format(time.RFC3339))
			for _, line := range strings.SplitAfter(p.Diff, "\n") {
				if line != "" {
					fmt.Fprint(stdout, "    "+line)
				}
			}
			fmt.Fprintln(stdout)
		}
		return 0
	}

	switch len(pending) {
	case 0:
		where := ""
		if *upstream != "" {
			where = " on upstream " + *upstream
		}
		fmt.Fprintf(stderr, "symbi tools %s: no pending definition of %q%s\n", cmd, tool, where)
		return 1
	case 1:
	default:
		var ups []string
		for _, p := range pending {
			ups = append(ups, p.Upstream)
		}
		return spUsageErr(stderr, fs, "%q is pending on several upstreams (%s): give --upstream", tool, strings.Join(ups, ", "))
	}
	p := pending[0]
	want := *hash
	if want == "" {
		want = p.Hash // at least what this command just looked at
	}
	if cmd == "approve" {
		err = q.Approve(ctx, p.Upstream, p.Tool, want)
	} else {
		err = q.Reject(ctx, p.Upstream, p.Tool, want)
	}
	if err != nil {
		fmt.Fprintf(stderr, "symbi tools %s: %v\n", cmd, err)
		return 1
	}
	past := map[string]string{"approve": "approved", "reject": "rejected"}[cmd]
	fmt.Fprintf(stdout, "%s %s %s (sha256:%s)\n", past, p.Upstream, p.Tool, p.Hash)
	// The trail belongs to the symbi that serves this data_dir: it records the decision
	// from the outbox within seconds (or at its next start).
	typ := map[string]audit.Type{"approve": audit.TypeToolApproved, "reject": audit.TypeToolRejected}[cmd]
	ob, err := audit.NewOutbox(ctx, db)
	if err == nil {
		err = ob.Put(ctx, audit.Event{Type: typ, Identity: operatorIdentity(), IdentityKind: "operator",
			Upstream: p.Upstream, Tool: p.Tool, Detail: map[string]string{"hash": p.Hash, "via": "symbi tools " + cmd}})
	}
	if err != nil {
		fmt.Fprintf(stderr, "symbi tools %s: the decision is made but not queued for the audit trail: %v\n", cmd, err)
		return 1
	}
	return 0
}

// operatorIdentity names the operator of a CLI action in the audit trail: the OS user.
func operatorIdentity() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "os:" + u.Username
	}
	return "os:unknown"
}
