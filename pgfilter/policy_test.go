package pgfilter_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

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
		{"SELECT reverse(pan) FROM cards", "pan"},
		{"SELECT id FROM cards ORDER BY pan", "pan"},
		{"SELECT count(DISTINCT pan) FROM cards", "pan"},
		{"EXPLAIN ANALYZE DELETE FROM " + table, "approval required"},
		{"TRUNCATE " + table, "approval required"},
		{"MERGE INTO " + table + " t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE", "approval required"},
		{"INSERT INTO " + table + " VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = 'y'", "approval required"},
		{"SELECT * FROM " + table + " FOR UPDATE", "approval required"},
		{"SELECT setval('cards_id_seq', 1000)", ""},
		{"DO $$ BEGIN DELETE FROM " + table + "; END $$", ""},
		{"GRANT ALL ON " + table + " TO PUBLIC", ""},
		{"BEGIN READ ONLY; SET TRANSACTION READ WRITE; DELETE FROM " + table + "; COMMIT", ""},
		{"CREATE TABLE policy_cp AS SELECT pan FROM cards", ""},
		{"COPY " + table + " TO '/tmp/policy_leak.csv'", ""},
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
	var last int64
	if err := env.Cluster.Exec(ctx, pgfiltertest.Database, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	dc, err := pgx.Connect(ctx, env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	if err := dc.QueryRow(ctx, "SELECT last_value FROM cards_id_seq").Scan(&last); err != nil || last >= 1000 {
		t.Errorf("sequence moved: %d %v", last, err)
	}
	var exists bool
	if err := dc.QueryRow(ctx, "SELECT to_regclass('policy_new') IS NOT NULL OR to_regclass('policy_copy') IS NOT NULL OR to_regclass('policy_cp') IS NOT NULL").Scan(&exists); err != nil || exists {
		t.Errorf("a refused statement created a table: %v %v", exists, err)
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

func TestPolicyPipelineAndFunctionCall(t *testing.T) {
	t.Parallel()
	env, table := policyEnv(t)
	c := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	ctx := context.Background()
	// A batch (one Sync): a read, a refused write, another read. The server
	// discards what follows the error until Sync; nothing is written.
	b := &pgx.Batch{}
	b.Queue("SELECT v FROM " + table + " WHERE id = 1")
	b.Queue("UPDATE " + table + " SET v = 'changed'")
	b.Queue("SELECT v FROM " + table + " WHERE id = 2")
	br := c.SendBatch(ctx, b)
	var v string
	if err := br.QueryRow().Scan(&v); err != nil || v != "one" {
		t.Fatalf("first read: %q %v", v, err)
	}
	_, err := br.Exec()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("refused write in a batch: %v", err)
	}
	_ = br.Close()
	if err := c.QueryRow(ctx, "SELECT v FROM "+table+" WHERE id = 1").Scan(&v); err != nil || v != "one" {
		t.Fatalf("after the batch: %q %v", v, err)
	}
	// The large-object API speaks FunctionCall messages: refused.
	pc := c.PgConn()
	res, err := pc.Exec(ctx, "SELECT 'lo_creat'::regproc::oid").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	oid, _ := strconv.ParseUint(string(res[0].Rows[0][0]), 10, 32)
	if err := functionCall(pc, uint32(oid)); err == nil || !strings.Contains(err.Error(), "42501") {
		t.Fatalf("FunctionCall lo_creat: %v", err)
	}
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("session after a refused FunctionCall: %v", err)
	}
	// A dba's DDL needs another dba's approval.
	dba := connect(t, env.ConnString("dora", env.Token(t, "dora", "dba")))
	if _, err := dba.Exec(ctx, "CREATE TABLE dba_new (x int)"); !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "approval required") {
		t.Fatalf("dba DDL: %v", err)
	}
}

// functionCall sends a FunctionCall message for oid with argument -1 and
// returns the server's (or custos') error.
func functionCall(pc *pgconn.PgConn, oid uint32) error {
	if err := pc.SyncConn(context.Background()); err != nil {
		return err
	}
	fe := pc.Frontend()
	fe.Send(&pgproto3.FunctionCall{Function: oid, Arguments: [][]byte{[]byte("-1")}, ArgFormatCodes: []uint16{0}, ResultFormatCode: 0})
	if err := fe.Flush(); err != nil {
		return err
	}
	var result error
	for {
		msg, err := fe.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			result = fmt.Errorf("%s: %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return result
		}
	}
}
