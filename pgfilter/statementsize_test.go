package pgfilter_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/sqlclass"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// TestStatementTooLongToRead: a Query or Parse longer than the classifier's
// size bound is refused before custos holds it (54001, the session closed),
// and other sessions go on; one just under the bound is classified.
func TestStatementTooLongToRead(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{NoTLS: true, Policy: pgfiltertest.DefaultPolicy(t)})
	ctx := context.Background()
	other := connect(t, env.ConnString("bob", env.Token(t, "bob", "dba")))
	long := "SELECT '" + strings.Repeat("x", sqlclass.DefaultMaxBytes+128<<10) + "'"
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeDescribeExec} {
		c := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
		_, err := c.Exec(ctx, long, mode)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "54001" || !strings.Contains(pe.Message, "longer than") {
			t.Errorf("%v: %v, want 54001", mode, err)
		}
		if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
			t.Errorf("%v: the session went on after the refusal", mode)
		}
		var n int
		if err := other.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
			t.Fatalf("%v: another session: %v", mode, err)
		}
	}
	// Under the size bound: classified (and refused by the classifier's
	// own bound, which keeps the session).
	c := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	justOver := "SELECT '" + strings.Repeat("x", sqlclass.DefaultMaxBytes) + "'"
	_, err := c.Exec(ctx, justOver, pgx.QueryExecModeSimpleProtocol)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "54001" || !strings.Contains(pe.Message, "decision dec_") {
		t.Errorf("just over the classifier's bound: %v", err)
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Errorf("the session did not survive the classifier's refusal: %v", err)
	}
}
