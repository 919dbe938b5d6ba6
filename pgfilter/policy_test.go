package pgfilter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

var policyTableSeq atomic.Int64

// policyEnv runs a proxy with the default policy and masking, and a table
// of its own the agent can read (writes need approval).
func policyEnv(t *testing.T) (*pgfiltertest.Env, string) {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t)})
	table := fmt.Sprintf("policy_t%d", policyTableSeq.Add(1))
	if err := env.Cluster.Exec(context.Background(), pgfiltertest.Database, fmt.Sprintf(
		`CREATE TABLE %[1]s (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s VALUES (1, 'one'), (2, 'two');
		GRANT ALL ON %[1]s TO %[2]s`, table, env.Resource.User)); err != nil {
		t.Fatal(err)
	}
	return env, table
}

func rowCount(t *testing.T, env *pgfiltertest.Env, table string) int {
	t.Helper()
	c, err := pgx.Connect(context.Background(), env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPolicyDecidesStatements(t *testing.T) {
	t.Parallel()
	env, table := policyEnv(t)
	c := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	ctx := context.Background()
	modes := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec}
	refused := []struct{ sql, reason string }{
		{"DELETE FROM " + table, "approval required from dba"},
		{"INSERT INTO " + table + " VALUES (9, 'x')", "approval required"},
		{"WITH d AS (DELETE FROM " + table + " RETURNING *) SELECT count(*) FROM d", "approval required"},
		{"SELECT * INTO policy_copy FROM " + table, ""},
		{"/* harmless */ dElEtE FROM \"" + table + "\"", "approval required"},
		{"CREATE TABLE policy_new (x int)", "DDL"},
		{"SET ROLE postgres", ""},
		{"SET transaction_read_only = off", ""},
		{"COPY " + table + " TO PROGRAM 'cat'", ""},
		{"SELECT pg_terminate_backend(1)", ""},
		{"SELECT id FROM cards WHERE pan LIKE '4%'", "pan"},
		{"SELECT substr(pan, 9, 8) FROM cards", "pan"},
	}
	for _, mode := range modes {
		for _, r := range refused {
			_, err := c.Exec(ctx, r.sql, mode)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "decision dec_") || !strings.Contains(pgErr.Message, r.reason) {
				t.Errorf("mode %v, %q: err = %v", mode, r.sql, err)
			}
		}
		// The session stays usable and nothing ran.
		var v string
		if err := c.QueryRow(ctx, "SELECT v FROM "+table+" WHERE id = $1", mode, 1).Scan(&v); err != nil || v != "one" {
			t.Fatalf("mode %v: read after refusals: %q %v", mode, v, err)
		}
	}
	if n := rowCount(t, env, table); n != 2 {
		t.Fatalf("table has %d rows after refused writes", n)
	}
	// Masked by the decision's column rules and detection.
	var pan string
	var cvv *string
	if err := c.QueryRow(ctx, "SELECT pan, cvv FROM cards WHERE id = 1").Scan(&pan, &cvv); err != nil {
		t.Fatal(err)
	}
	if pan != "************4242" || cvv != nil {
		t.Errorf("pan %q cvv %v", pan, cvv)
	}
}

func TestPolicyMultiStatementAndTransactions(t *testing.T) {
	t.Parallel()
	env, table := policyEnv(t)
	c := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	ctx := context.Background()
	// A write hidden after a read refuses the whole string.
	_, err := c.Exec(ctx, "SELECT 1; DELETE FROM "+table)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("multi-statement: %v", err)
	}
	// Inside an explicit transaction a refusal fails the transaction, as a
	// server error would.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE "+table+" SET v = 'x'"); err == nil {
		t.Fatal("update allowed")
	}
	if st := c.PgConn().TxStatus(); st != 'E' {
		t.Errorf("transaction status %q, want E", st)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); !errors.As(err, &pgErr) || pgErr.Code != "25P02" {
		t.Errorf("after refusal in a transaction: %v", err)
	}
	_ = tx.Rollback(ctx)
	if st := c.PgConn().TxStatus(); st != 'I' {
		t.Errorf("after rollback: %q", st)
	}
	// SQL-level PREPARE of a write is tracked: EXECUTE is decided as it.
	if _, err := c.Exec(ctx, "PREPARE p AS DELETE FROM "+table, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if _, err := c.Exec(ctx, "EXECUTE p", pgx.QueryExecModeSimpleProtocol); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("execute of a prepared write: %v", err)
	}
	// A statement that does not parse is refused with 42601.
	if _, err := c.Exec(ctx, "SELEC 1"); !errors.As(err, &pgErr) || pgErr.Code != "42601" {
		t.Fatalf("syntax error: %v", err)
	}
	if n := rowCount(t, env, table); n != 2 {
		t.Fatalf("table has %d rows", n)
	}
	// A principal in no known group is denied everything.
	other := connect(t, env.ConnString("bob", env.Token(t, "bob", "marketing")))
	if _, err := other.Exec(ctx, "SELECT 1"); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("unknown group: %v", err)
	}
}
