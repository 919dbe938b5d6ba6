package pgfilter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// statementLog is a StatementRecorder that keeps copies of what pgfilter
// reports, so that tests can check the contract itself; the journal that
// serve and dev use is tested end to end in tests/.
type statementLog struct {
	mu     sync.Mutex
	events []pgfilter.StatementEvent
	// refuse makes Admit fail; fail makes every record's Wait fail; hold,
	// when set, is waited on by each record's Wait.
	refuse, fail atomic.Bool
	hold         chan struct{}
	waits        atomic.Int64
}

func (l *statementLog) Admit(*pgfilter.Session) error {
	if l.refuse.Load() {
		return errors.New("journal down")
	}
	return nil
}

func (l *statementLog) Record(ev *pgfilter.StatementEvent) pgfilter.Durable {
	cp := *ev
	cp.Collections = append([]string(nil), ev.Collections...)
	cp.ResultRows = append([]string(nil), ev.ResultRows...)
	cp.Columns = append([]string(nil), ev.Columns...)
	l.mu.Lock()
	l.events = append(l.events, cp)
	l.mu.Unlock()
	return durableFunc(func(ctx context.Context) error {
		l.waits.Add(1)
		if l.hold != nil {
			select {
			case <-l.hold:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if l.fail.Load() {
			return errors.New("disk full")
		}
		return nil
	})
}

func (l *statementLog) list() []pgfilter.StatementEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]pgfilter.StatementEvent(nil), l.events...)
}

type durableFunc func(ctx context.Context) error

func (f durableFunc) Wait(ctx context.Context) error { return f(ctx) }

func statementEnv(t *testing.T, l *statementLog, policy bool) (*pgfiltertest.Env, string) {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := pgfiltertest.Options{Masker: m, Statements: l, ResultRows: 3}
	if policy {
		opts.Policy = pgfiltertest.DefaultPolicy(t)
	}
	env := pgfiltertest.Start(t, opts)
	tok := env.Mint(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}})
	return env, tok
}

func TestStatementRecords(t *testing.T) {
	t.Parallel()
	var l statementLog
	env, tok := statementEnv(t, &l, true)
	ctx := context.Background()
	c := connect(t, env.ConnString("alice", tok))
	defer c.Close(ctx)

	// Extended protocol (pgx prepares and executes): masked rows captured.
	rows, err := c.Query(ctx, "SELECT id, pan FROM cards WHERE id <= $1 ORDER BY id", 5)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
	}
	rows.Close()
	// Simple protocol, two statements in one Query.
	if _, err := c.PgConn().Exec(ctx, "SELECT 1 AS one; SELECT holder FROM cards WHERE id = 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
	// Denied by policy.
	if _, err := c.Exec(ctx, "DROP TABLE cards"); err == nil {
		t.Fatal("DROP TABLE ran")
	}
	// A server error in a pipeline: the next Execute is skipped.
	b := &pgx.Batch{}
	b.Queue("SELECT 1/0")
	b.Queue("SELECT 2")
	_ = c.SendBatch(ctx, b).Close()
	// A literal card number is fingerprinted, never kept.
	if _, err := c.Exec(ctx, "SELECT count(*) FROM cards WHERE holder = '4111 1111 1111 1111'", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}

	got := l.list()
	find := func(prefix string) pgfilter.StatementEvent {
		t.Helper()
		for _, ev := range got {
			if strings.HasPrefix(ev.Text, prefix) {
				return ev
			}
		}
		t.Fatalf("no record of %q in %d records", prefix, len(got))
		return pgfilter.StatementEvent{}
	}
	for i, ev := range got {
		if ev.Seq != int64(i+1) {
			t.Errorf("record %d has seq %d", i, ev.Seq)
		}
		if ev.Session == nil || ev.Session.Principal.Subject != "alice" {
			t.Errorf("record %d: session %+v", i, ev.Session)
		}
	}

	sel := find("SELECT id, pan FROM cards")
	if sel.Protocol != pgfilter.ProtocolExtended || sel.Operation != "SELECT" || sel.Outcome != pgfilter.StatementSucceeded {
		t.Errorf("select: %+v", sel)
	}
	if sel.Rows != 5 || sel.Masked != 5 || !sel.Truncated || len(sel.ResultRows) != 3 {
		t.Errorf("select: rows %d masked %d truncated %v captured %d", sel.Rows, sel.Masked, sel.Truncated, len(sel.ResultRows))
	}
	if strings.Join(sel.Columns, ",") != "id,pan" || sel.ResultRows[0] != `["1","************4242"]` {
		t.Errorf("select result: %v %v", sel.Columns, sel.ResultRows)
	}
	if sel.Decision == nil || sel.Decision.ID == "" || !sel.Decision.Allow {
		t.Errorf("select decision: %+v", sel.Decision)
	}
	if len(sel.Collections) != 1 || sel.Collections[0] != "public.cards" {
		t.Errorf("select collections: %v", sel.Collections)
	}

	multi := find("SELECT $1 AS one")
	if multi.Protocol != pgfilter.ProtocolSimple || multi.Operation != "BATCH SELECT" || multi.Rows != 2 {
		t.Errorf("multi: %+v", multi)
	}
	if strings.Join(multi.Columns, ",") != "one" || len(multi.ResultRows) != 2 {
		t.Errorf("multi result: %v %v", multi.Columns, multi.ResultRows)
	}

	drop := find("DROP TABLE cards")
	if drop.Outcome != pgfilter.StatementDenied || drop.SQLState != "42501" || drop.Decision == nil || drop.Decision.Allow {
		t.Errorf("drop: %+v", drop)
	}

	div := find("SELECT $1/$2")
	if div.Outcome != pgfilter.StatementFailed || div.SQLState != "22012" {
		t.Errorf("division: %+v", div)
	}
	var skipped bool
	for _, ev := range got {
		if ev.Text == "SELECT $1" && ev.Outcome == pgfilter.StatementFailed && strings.Contains(ev.Error, "skipped") {
			skipped = true
		}
	}
	if !skipped {
		t.Errorf("the Execute after the error is not recorded as skipped: %+v", got)
	}

	lit := find("SELECT count(*) FROM cards WHERE holder = $1")
	if len(lit.PANSources) != 1 || !strings.Contains(lit.PANSources[0], "4111 1111 1111 1111") {
		t.Errorf("literal PAN sources: %q", lit.PANSources)
	}
	if mask.Contains([]byte(lit.Text)) {
		t.Errorf("normalized text holds a PAN: %q", lit.Text)
	}
	if l.waits.Load() < int64(len(got)) {
		t.Errorf("%d records waited on, %d recorded", l.waits.Load(), len(got))
	}
}

// TestStatementRecordsWithoutPolicy: with no statement policy the records
// are still kept, without a decision.
func TestStatementRecordsWithoutPolicy(t *testing.T) {
	t.Parallel()
	var l statementLog
	env, tok := statementEnv(t, &l, false)
	ctx := context.Background()
	c := connect(t, env.ConnString("alice", tok))
	defer c.Close(ctx)
	var pan string
	if err := c.QueryRow(ctx, "SELECT pan FROM cards WHERE id = 2").Scan(&pan); err != nil {
		t.Fatal(err)
	}
	got := l.list()
	if len(got) != 1 {
		t.Fatalf("%d records: %+v", len(got), got)
	}
	ev := got[0]
	if ev.Decision != nil || ev.Text != "SELECT pan FROM cards WHERE id = $1" || ev.Rows != 1 || ev.Masked != 1 ||
		ev.ResultRows[0] != `["************4444"]` {
		t.Errorf("record: %+v", ev)
	}
}

// TestStatementCompletionWaitsForRecord: the client does not see a
// statement complete before its record is durable.
func TestStatementCompletionWaitsForRecord(t *testing.T) {
	t.Parallel()
	l := statementLog{hold: make(chan struct{})}
	env, tok := statementEnv(t, &l, true)
	ctx := context.Background()
	c := connect(t, env.ConnString("alice", tok))
	defer c.Close(ctx)
	done := make(chan error, 1)
	go func() {
		var n int
		done <- c.QueryRow(ctx, "SELECT count(*) FROM cards").Scan(&n)
	}()
	for len(l.list()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the client saw the statement complete before its record was durable (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(l.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestStatementFailClosed: a statement whose record cannot be kept ends
// the session before the client sees its results; while records cannot be
// written, statements are refused before they run.
func TestStatementFailClosed(t *testing.T) {
	t.Parallel()
	var l statementLog
	env, tok := statementEnv(t, &l, false)
	ctx := context.Background()
	table := fmt.Sprintf("stmt_fc_%d", time.Now().UnixNano())
	if err := env.Cluster.Exec(ctx, pgfiltertest.Database, fmt.Sprintf(
		`CREATE TABLE %[1]s (id int); GRANT ALL ON %[1]s TO %[2]s`, table, env.Resource.User)); err != nil {
		t.Fatal(err)
	}

	c := connect(t, env.ConnString("alice", tok))
	l.refuse.Store(true)
	_, err := c.Exec(ctx, "INSERT INTO "+table+" VALUES (1)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "58030" || pgErr.Severity != "ERROR" {
		t.Fatalf("refused statement: %v", err)
	}
	if n := rowCount(t, env, table); n != 0 {
		t.Fatalf("the refused INSERT ran: %d rows", n)
	}
	l.refuse.Store(false)

	// The session goes on; now the record of a transaction's INSERT is lost.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.fail.Store(true)
	_, err = tx.Exec(ctx, "INSERT INTO "+table+" VALUES (2)")
	if !errors.As(err, &pgErr) || pgErr.Code != "58030" || pgErr.Severity != "FATAL" {
		t.Fatalf("unrecorded statement: %v", err)
	}
	if !c.IsClosed() {
		_ = c.Ping(ctx)
	}
	if !c.IsClosed() {
		t.Fatal("the session went on after a statement record was lost")
	}
	l.fail.Store(false)
	waitFor(t, func() bool { return rowCount(t, env, table) == 0 })
}
