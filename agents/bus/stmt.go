package bus

import (
	"context"
	"database/sql"
)

// prepared runs the bus's queries as prepared statements, inside tx when it is set:
// each query is compiled once per connection instead of on every call.
type prepared struct {
	b  *Bus
	tx *sql.Tx
}

// x returns the bus's database (tx nil) or tx, with prepared statements: the queries
// of a message's path are prepared when the bus opens, others on first use outside a
// transaction.
func (b *Bus) x(tx *sql.Tx) prepared { return prepared{b: b, tx: tx} }

// stmt returns query prepared on the database, preparing it on first use.
func (b *Bus) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	b.mu.Lock()
	st, ok := b.stmts[query]
	b.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := b.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if prev, ok := b.stmts[query]; ok {
		_ = st.Close()
		return prev, nil
	}
	b.stmts[query] = st
	return st, nil
}

func (p prepared) get(ctx context.Context, query string) (*sql.Stmt, error) {
	if p.tx == nil {
		return p.b.stmt(ctx, query)
	}
	p.b.mu.Lock()
	st, ok := p.b.stmts[query]
	p.b.mu.Unlock()
	if !ok {
		// Preparing on the database would wait for a free connection, which a pool of
		// one (the transaction holds it) never has: prepare on the transaction.
		return p.tx.PrepareContext(ctx, query)
	}
	return p.tx.StmtContext(ctx, st), nil // closed with the transaction
}

func (p prepared) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := p.get(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (p prepared) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := p.get(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (p prepared) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := p.get(ctx, query)
	if err != nil { // the unprepared query reports the same error through its Row
		if p.tx != nil {
			return p.tx.QueryRowContext(ctx, query, args...)
		}
		return p.b.db.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// closeStmts closes the prepared statements.
func (b *Bus) closeStmts() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for q, st := range b.stmts {
		_ = st.Close()
		delete(b.stmts, q)
	}
}
