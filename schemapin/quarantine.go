package schemapin

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ToolState is where a tool definition stands in the rug-pull quarantine.
type ToolState string

// The quarantine states.
const (
	StateApproved ToolState = "approved" // the listed definition is the approved one
	StatePending  ToolState = "pending"  // new or changed, hidden until an operator decides
	StateRejected ToolState = "rejected" // an operator refused the listed definition
)

// Quarantine pins the SHA-256 of each tool's canonical definition per (upstream, tool)
// and holds new definitions back until approved. It keeps the last approved definition so
// a pending change can be shown as a diff.
type Quarantine struct {
	db  *sql.DB
	now func() time.Time
	mu  sync.Mutex // serializes read-modify-write within this process
}

const quarantineSchema = `CREATE TABLE IF NOT EXISTS schemapin_tools (
	upstream      TEXT NOT NULL,
	tool          TEXT NOT NULL,
	state         TEXT NOT NULL,
	approved_hash TEXT NOT NULL DEFAULT '',
	approved_def  TEXT NOT NULL DEFAULT '',
	pending_hash  TEXT NOT NULL DEFAULT '',
	pending_def   TEXT NOT NULL DEFAULT '',
	rejected_hash TEXT NOT NULL DEFAULT '',
	first_seen    INTEGER NOT NULL,
	updated       INTEGER NOT NULL,
	PRIMARY KEY (upstream, tool)
)`

// decisionsSchema counts operators' approvals and rejections, so a running gateway can
// notice one made by another process (`symbi tools approve`) and re-list its upstreams.
const decisionsSchema = `CREATE TABLE IF NOT EXISTS schemapin_decisions (
	id  INTEGER PRIMARY KEY CHECK (id = 1),
	seq INTEGER NOT NULL
)`

// NewQuarantine creates the quarantine tables on db if needed.
func NewQuarantine(ctx context.Context, db *sql.DB) (*Quarantine, error) {
	for _, schema := range []string{quarantineSchema, decisionsSchema} {
		if _, err := db.ExecContext(ctx, schema); err != nil {
			return nil, fmt.Errorf("create quarantine table: %w", err)
		}
	}
	return &Quarantine{db: db, now: time.Now}, nil
}

// ErrNotPending reports an approve or reject of a tool with nothing pending.
var ErrNotPending = errors.New("no pending definition")

type toolRow struct {
	state                                 ToolState
	approvedHash, approvedDef             string
	pendingHash, pendingDef, rejectedHash string
	firstSeen, updated                    int64
}

func (q *Quarantine) get(ctx context.Context, tx *sql.Tx, upstream, tool string) (*toolRow, error) {
	var r toolRow
	err := tx.QueryRowContext(ctx, `SELECT state, approved_hash, approved_def, pending_hash, pending_def, rejected_hash, first_seen, updated
		FROM schemapin_tools WHERE upstream = ? AND tool = ?`, upstream, tool).
		Scan(&r.state, &r.approvedHash, &r.approvedDef, &r.pendingHash, &r.pendingDef, &r.rejectedHash, &r.firstSeen, &r.updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tool %s/%s: %w", upstream, tool, err)
	}
	return &r, nil
}

func (q *Quarantine) put(ctx context.Context, tx *sql.Tx, upstream, tool string, r *toolRow) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO schemapin_tools
		(upstream, tool, state, approved_hash, approved_def, pending_hash, pending_def, rejected_hash, first_seen, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (upstream, tool) DO UPDATE SET state = excluded.state,
		  approved_hash = excluded.approved_hash, approved_def = excluded.approved_def,
		  pending_hash = excluded.pending_hash, pending_def = excluded.pending_def,
		  rejected_hash = excluded.rejected_hash, updated = excluded.updated`,
		upstream, tool, string(r.state), r.approvedHash, r.approvedDef, r.pendingHash, r.pendingDef, r.rejectedHash, r.firstSeen, r.updated)
	if err != nil {
		return fmt.Errorf("write tool %s/%s: %w", upstream, tool, err)
	}
	return nil
}

// update runs fn on the row of (upstream, tool) (nil if none) in one transaction and
// writes back what fn returns (nothing if fn returns nil).
func (q *Quarantine) update(ctx context.Context, upstream, tool string, fn func(r *toolRow) (*toolRow, error)) error {
	return q.updateRow(ctx, upstream, tool, false, fn)
}

// Decisions is a counter of the operator decisions (approvals and rejections) recorded
// in this database by any process. It only grows; a change means some tool's state was
// decided since it was last read.
func (q *Quarantine) Decisions(ctx context.Context) (int64, error) {
	var seq int64
	err := q.db.QueryRowContext(ctx, `SELECT seq FROM schemapin_decisions WHERE id = 1`).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read quarantine decisions: %w", err)
	}
	return seq, nil
}

// updateRow is update; decision marks an operator's decision, counted in Decisions.
func (q *Quarantine) updateRow(ctx context.Context, upstream, tool string, decision bool, fn func(r *toolRow) (*toolRow, error)) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	tx, err := q.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin quarantine update: %w", err)
	}
	defer tx.Rollback()
	r, err := q.get(ctx, tx, upstream, tool)
	if err != nil {
		return err
	}
	nr, err := fn(r)
	if err != nil {
		return err
	}
	if nr != nil {
		nr.updated = q.now().UnixMilli()
		if err := q.put(ctx, tx, upstream, tool, nr); err != nil {
			return err
		}
		if decision {
			if _, err := tx.ExecContext(ctx, `INSERT INTO schemapin_decisions (id, seq) VALUES (1, 1)
				ON CONFLICT (id) DO UPDATE SET seq = seq + 1`); err != nil {
				return fmt.Errorf("count quarantine decision: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit quarantine update: %w", err)
	}
	return nil
}

// DefinitionHash is the hex SHA-256 of a canonical tool definition.
func DefinitionHash(canonical []byte) string {
	h := sha256.Sum256(canonical)
	return hex.EncodeToString(h[:])
}

// Observation is what Observe found.
type Observation struct {
	State ToolState
	// FirstSeen is set while no definition of the tool was ever approved.
	FirstSeen bool
}

// Observe records that upstream lists tool with the canonical definition def and returns
// its state. A first-seen tool is approved when autoApprove is set and pending otherwise;
// a definition other than the approved one becomes pending (the approved one is kept); a
// definition an operator rejected stays rejected; listing the approved definition again
// drops whatever was pending.
func (q *Quarantine) Observe(ctx context.Context, upstream, tool string, def []byte, autoApprove bool) (Observation, error) {
	h := DefinitionHash(def)
	var obs Observation
	err := q.update(ctx, upstream, tool, func(r *toolRow) (*toolRow, error) {
		if r == nil {
			r = &toolRow{firstSeen: q.now().UnixMilli()}
			if autoApprove {
				r.state, r.approvedHash, r.approvedDef = StateApproved, h, string(def)
			} else {
				r.state, r.pendingHash, r.pendingDef = StatePending, h, string(def)
			}
			obs = Observation{State: r.state, FirstSeen: !autoApprove}
			return r, nil
		}
		obs.FirstSeen = r.approvedHash == ""
		switch h {
		case r.approvedHash:
			obs.State = StateApproved
			if r.state == StateApproved && r.pendingHash == "" {
				return nil, nil
			}
			r.state, r.pendingHash, r.pendingDef = StateApproved, "", ""
		case r.rejectedHash:
			obs.State = StateRejected
			if r.state == StateRejected && r.pendingHash == "" {
				return nil, nil
			}
			r.state, r.pendingHash, r.pendingDef = StateRejected, "", ""
		default:
			obs.State = StatePending
			if r.state == StatePending && r.pendingHash == h {
				return nil, nil
			}
			r.state, r.pendingHash, r.pendingDef = StatePending, h, string(def)
		}
		return r, nil
	})
	return obs, err
}

// Approve makes the pending definition of (upstream, tool) the approved one. When hash is
// not "", it must be the pending definition's hash (what the operator reviewed).
func (q *Quarantine) Approve(ctx context.Context, upstream, tool, hash string) error {
	return q.updateRow(ctx, upstream, tool, true, func(r *toolRow) (*toolRow, error) {
		if err := checkPending(r, hash); err != nil {
			return nil, fmt.Errorf("approve %s/%s: %w", upstream, tool, err)
		}
		r.approvedHash, r.approvedDef = r.pendingHash, r.pendingDef
		if r.rejectedHash == r.pendingHash {
			r.rejectedHash = ""
		}
		r.state, r.pendingHash, r.pendingDef = StateApproved, "", ""
		return r, nil
	})
}

// Reject refuses the pending definition of (upstream, tool): it stays hidden while the
// upstream lists it. The previously approved definition, if any, remains approved. hash
// is checked as for Approve.
func (q *Quarantine) Reject(ctx context.Context, upstream, tool, hash string) error {
	return q.updateRow(ctx, upstream, tool, true, func(r *toolRow) (*toolRow, error) {
		if err := checkPending(r, hash); err != nil {
			return nil, fmt.Errorf("reject %s/%s: %w", upstream, tool, err)
		}
		r.rejectedHash = r.pendingHash
		r.state, r.pendingHash, r.pendingDef = StateRejected, "", ""
		return r, nil
	})
}

// ErrPendingChanged reports that the pending definition is not the one the operator
// reviewed (the upstream changed it again).
var ErrPendingChanged = errors.New("pending definition changed since it was reviewed")

func checkPending(r *toolRow, hash string) error {
	if r == nil || r.pendingHash == "" {
		return ErrNotPending
	}
	if hash != "" && !strings.EqualFold(strings.TrimPrefix(hash, "sha256:"), r.pendingHash) {
		return ErrPendingChanged
	}
	return nil
}

// PendingTool is a definition awaiting an operator's decision.
type PendingTool struct {
	Upstream string    `json:"upstream"`
	Tool     string    `json:"tool"`
	Hash     string    `json:"hash"`
	Approved string    `json:"approved,omitempty"` // pretty canonical JSON; "" when first seen
	Pending  string    `json:"pending"`
	Diff     string    `json:"diff"` // line diff of Approved and Pending
	Updated  time.Time `json:"updated"`
}

// Pending lists the pending definitions, of one upstream or ("") of all.
func (q *Quarantine) Pending(ctx context.Context, upstream string) ([]PendingTool, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT upstream, tool, pending_hash, approved_def, pending_def, updated
		FROM schemapin_tools WHERE pending_hash != '' AND (? = '' OR upstream = ?) ORDER BY upstream, tool`, upstream, upstream)
	if err != nil {
		return nil, fmt.Errorf("list pending tools: %w", err)
	}
	defer rows.Close()
	var out []PendingTool
	for rows.Next() {
		var p PendingTool
		var oldDef, newDef string
		var upd int64
		if err := rows.Scan(&p.Upstream, &p.Tool, &p.Hash, &oldDef, &newDef, &upd); err != nil {
			return nil, fmt.Errorf("list pending tools: %w", err)
		}
		if oldDef != "" {
			p.Approved = prettyCanonical([]byte(oldDef))
		}
		p.Pending = prettyCanonical([]byte(newDef))
		p.Diff = lineDiff(p.Approved, p.Pending)
		p.Updated = time.UnixMilli(upd).UTC()
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list pending tools: %w", err)
	}
	return out, nil
}

// lineDiff renders the difference of a and b line by line ("-", "+", or " " prefixes),
// by longest common subsequence. Inputs beyond maxDiffLines lines are shown whole.
func lineDiff(a, b string) string {
	const maxDiffLines = 3000
	var al, bl []string
	if a != "" {
		al = strings.Split(a, "\n")
	}
	if b != "" {
		bl = strings.Split(b, "\n")
	}
	var sb strings.Builder
	if len(al) > maxDiffLines || len(bl) > maxDiffLines {
		for _, l := range al {
			sb.WriteString("- " + l + "\n")
		}
		for _, l := range bl {
			sb.WriteString("+ " + l + "\n")
		}
		return sb.String()
	}
	// lcs[i][j] = length of the LCS of al[i:] and bl[j:].
	lcs := make([][]int, len(al)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(bl)+1)
	}
	for i := len(al) - 1; i >= 0; i-- {
		for j := len(bl) - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(al) || j < len(bl) {
		switch {
		case i < len(al) && j < len(bl) && al[i] == bl[j]:
			sb.WriteString("  " + al[i] + "\n")
			i++
			j++
		case i < len(al) && (j == len(bl) || lcs[i+1][j] >= lcs[i][j+1]):
			sb.WriteString("- " + al[i] + "\n")
			i++
		default:
			sb.WriteString("+ " + bl[j] + "\n")
			j++
		}
	}
	return sb.String()
}
