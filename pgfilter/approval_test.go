package pgfilter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// approvalEnv is a proxy with the default policy, masking and an approval
// service on an SQLite store, plus a table the agent may only write with
// a dba's approval.
type approvalEnv struct {
	*pgfiltertest.Env
	svc    *approval.Service
	table  string
	offset atomic.Int64 // added to the service's clock
}

func newApprovalEnv(t *testing.T, sessions config.Sessions) *approvalEnv {
	t.Helper()
	return newApprovalEnvWith(t, sessions, sqliteStore(t), pgfiltertest.DefaultPolicy(t))
}

// sqliteStore is an approval store of t's own, closed in t.Cleanup.
func sqliteStore(t *testing.T) approval.Store {
	t.Helper()
	st, err := approval.OpenSQLite(filepath.Join(t.TempDir(), "approvals.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newApprovalEnvWith(t *testing.T, sessions config.Sessions, st approval.Store, eng *policy.Engine) *approvalEnv {
	t.Helper()
	return newApprovalEnvLogins(t, sessions, st, eng, nil)
}

// newApprovalEnvLogins is newApprovalEnvWith with the given group logins
// (nil: the demo database's).
func newApprovalEnvLogins(t *testing.T, sessions config.Sessions, st approval.Store, eng *policy.Engine, logins []config.UpstreamLogin) *approvalEnv {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ae := &approvalEnv{}
	svc, err := approval.NewService(context.Background(), st, approval.Options{
		Now:           func() time.Time { return time.Now().Add(time.Duration(ae.offset.Load())) },
		SweepInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	ae.svc = svc
	// Group logins: the agents' login cannot write, so every approved
	// write here also proves that custos takes the approved role for it,
	// and only for it.
	ae.Env = pgfiltertest.Start(t, pgfiltertest.Options{
		Masker: m, Policy: eng, Approvals: svc, Sessions: sessions, GroupLogins: true, Logins: logins,
	})
	ae.table = fmt.Sprintf("approval_t%d", policyTableSeq.Add(1))
	if err := ae.Cluster.Exec(context.Background(), pgfiltertest.Database, fmt.Sprintf(
		`CREATE TABLE %[1]s (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s VALUES (1, 'one');
		GRANT ALL ON %[1]s TO %[2]s`, ae.table, ae.Resource.User)); err != nil {
		t.Fatal(err)
	}
	return ae
}

var approvalIDRE = regexp.MustCompile(`approval (apr_[a-z2-7]+) required`)

// agent connects as an agent and returns the connection and a channel of
// the approval ids announced by NoticeResponses.
func (ae *approvalEnv) agent(t *testing.T, sub string) (*pgx.Conn, <-chan string) {
	t.Helper()
	ids := make(chan string, 8)
	cfg, err := pgx.ParseConfig(ae.ConnString(sub, ae.Token(t, sub, "agents")))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if m := approvalIDRE.FindStringSubmatch(n.Message); m != nil {
			if !strings.Contains(n.Hint, "custos approvals approve "+m[1]) {
				t.Errorf("notice hint %q does not say how to approve", n.Hint)
			}
			ids <- m[1]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c, ids
}

func (ae *approvalEnv) dba(sub string) approval.Principal {
	return approval.Principal{Sub: sub, Iss: ae.IssuerURL, Groups: []string{"dba"}}
}

func nextID(t *testing.T, ids <-chan string) string {
	t.Helper()
	select {
	case id := <-ids:
		return id
	case <-time.After(20 * time.Second):
		t.Fatal("no approval notice arrived")
		return ""
	}
}

func (ae *approvalEnv) state(t *testing.T, id string) approval.State {
	t.Helper()
	r, err := ae.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r.State
}

func (ae *approvalEnv) waitState(t *testing.T, id string, want approval.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ae.state(t, id) != want {
		if time.Now().After(deadline) {
			t.Fatalf("request %s is %s, want %s", id, ae.state(t, id), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type execResult struct {
	tag pgconn.CommandTag
	err error
}

func goExec(c *pgx.Conn, sql string, args ...any) <-chan execResult {
	done := make(chan execResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tag, err := c.Exec(ctx, sql, args...)
		done <- execResult{tag, err}
	}()
	return done
}

func result(t *testing.T, done <-chan execResult) execResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("the parked statement never finished")
		return execResult{}
	}
}

func TestApprovedWriteRunsOnceExactlyAsParked(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mode pgx.QueryExecMode
	}{
		{"simple", pgx.QueryExecModeSimpleProtocol},
		{"extended", pgx.QueryExecModeCacheStatement},
		{"extended_unnamed", pgx.QueryExecModeExec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ids := ae.agent(t, "alice_"+tc.name)
			id := map[string]int{"simple": 10, "extended": 20, "extended_unnamed": 30}[tc.name]
			done := goExec(c, "INSERT INTO "+ae.table+" VALUES ($1, $2)", tc.mode, id, "card 4111 1111 1111 1111")
			apr := nextID(t, ids)
			r, err := ae.svc.Get(ctx, apr)
			if err != nil {
				t.Fatal(err)
			}
			if r.State != approval.StatePending || r.Resource != ae.Resource.Name || r.Requester.Sub != "alice_"+tc.name {
				t.Fatalf("request = %+v", r)
			}
			if strings.Contains(r.Detail, "4111 1111 1111 1111") || strings.Contains(r.Summary, "4111") {
				t.Fatalf("request shows a clear PAN: summary %q detail %q", r.Summary, r.Detail)
			}
			select {
			case res := <-done:
				t.Fatalf("statement finished before approval: %v", res.err)
			case <-time.After(200 * time.Millisecond):
			}
			if n := rowCount(t, ae.Env, ae.table+" WHERE id = "+fmt.Sprint(id)); n != 0 {
				t.Fatalf("row written before approval")
			}
			if _, err := ae.svc.Approve(ctx, apr, ae.dba("bob"), "ticket 42"); err != nil {
				t.Fatal(err)
			}
			res := result(t, done)
			if res.err != nil || res.tag.String() != "INSERT 0 1" {
				t.Fatalf("approved insert: tag %q err %v", res.tag, res.err)
			}
			if n := rowCount(t, ae.Env, ae.table+" WHERE id = "+fmt.Sprint(id)+" AND v = 'card 4111 1111 1111 1111'"); n != 1 {
				t.Fatalf("rows with the approved values = %d, want 1", n)
			}
			if st := ae.state(t, apr); st != approval.StateConsumed {
				t.Fatalf("state after running = %s, want consumed", st)
			}
			// The session goes on normally.
			var v string
			if err := c.QueryRow(ctx, "SELECT v FROM "+ae.table+" WHERE id = 1").Scan(&v); err != nil || v != "one" {
				t.Fatalf("read after approval: %q %v", v, err)
			}
		})
	}
}

func TestDeniedWriteNeverRuns(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "carol")
	done := goExec(c, "DELETE FROM "+ae.table)
	apr := nextID(t, ids)
	if _, err := ae.svc.Deny(context.Background(), apr, ae.dba("bob"), "not during the freeze"); err != nil {
		t.Fatal(err)
	}
	res := result(t, done)
	var pgErr *pgconn.PgError
	if !errors.As(res.err, &pgErr) || pgErr.Code != "42501" ||
		!strings.Contains(pgErr.Message, "denied by bob: not during the freeze") || !strings.Contains(pgErr.Message, apr) {
		t.Fatalf("denied delete: %v", res.err)
	}
	if n := rowCount(t, ae.Env, ae.table); n != 1 {
		t.Fatalf("rows = %d after a denied delete, want 1", n)
	}
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatalf("session unusable after a denial: %v", err)
	}
}

func TestSelfApprovalRefused(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "dave")
	done := goExec(c, "UPDATE "+ae.table+" SET v = 'x'")
	apr := nextID(t, ids)
	self := approval.Principal{Sub: "dave", Iss: ae.IssuerURL, Groups: []string{"dba"}}
	if _, err := ae.svc.Approve(context.Background(), apr, self, ""); !errors.Is(err, approval.ErrSelfApproval) {
		t.Fatalf("self approval: %v", err)
	}
	if _, err := ae.svc.Approve(context.Background(), apr, approval.Principal{Sub: "erin", Iss: ae.IssuerURL, Groups: []string{"agents"}}, ""); !errors.Is(err, approval.ErrNotApprover) {
		t.Fatalf("approval by a non-approver: %v", err)
	}
	if _, err := ae.svc.Approve(context.Background(), apr, ae.dba("bob"), ""); err != nil {
		t.Fatal(err)
	}
	if res := result(t, done); res.err != nil {
		t.Fatal(res.err)
	}
}

func TestExpiredApprovalRefuses(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "frank")
	done := goExec(c, "INSERT INTO "+ae.table+" VALUES (50, 'late')")
	apr := nextID(t, ids)
	ae.offset.Store(int64(24 * time.Hour)) // the sweep expires it
	res := result(t, done)
	var pgErr *pgconn.PgError
	if !errors.As(res.err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "expired") {
		t.Fatalf("expired insert: %v", res.err)
	}
	if st := ae.state(t, apr); st != approval.StateExpired {
		t.Fatalf("state = %s", st)
	}
	if n := rowCount(t, ae.Env, ae.table); n != 1 {
		t.Fatalf("rows = %d, want 1", n)
	}
}

func TestCancelWithdrawsParkedStatement(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "grace")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "DELETE FROM "+ae.table, pgx.QueryExecModeSimpleProtocol)
		done <- err
	}()
	apr := nextID(t, ids)
	cancel() // pgx sends a CancelRequest on the side
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("cancelled delete succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("cancel did not end the wait")
	}
	ae.waitState(t, apr, approval.StateWithdrawn)
	if _, err := ae.svc.Approve(context.Background(), apr, ae.dba("bob"), ""); !errors.Is(err, approval.ErrNotPending) {
		t.Fatalf("approving a withdrawn request: %v", err)
	}
	if n := rowCount(t, ae.Env, ae.table); n != 1 {
		t.Fatalf("rows = %d, want 1", n)
	}
}

func TestCancelRequestAnswers57014(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "heidi")
	done := goExec(c, "DELETE FROM "+ae.table, pgx.QueryExecModeSimpleProtocol)
	nextID(t, ids)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	res := result(t, done)
	var pgErr *pgconn.PgError
	if !errors.As(res.err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("cancelled delete: %v, want SQLSTATE 57014", res.err)
	}
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatalf("session unusable after cancel: %v", err)
	}
}

func TestDisconnectWithdrawsParkedStatement(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		c, ids := ae.agent(t, "ivan")
		done := goExec(c, "DELETE FROM "+ae.table, mode)
		apr := nextID(t, ids)
		_ = c.PgConn().Conn().Close() // the agent goes away mid-wait
		<-done
		ae.waitState(t, apr, approval.StateWithdrawn)
		if _, err := ae.svc.Approve(context.Background(), apr, ae.dba("bob"), ""); !errors.Is(err, approval.ErrNotPending) {
			t.Fatalf("approving after disconnect: %v", err)
		}
	}
	if n := rowCount(t, ae.Env, ae.table); n != 1 {
		t.Fatalf("rows = %d, want 1", n)
	}
}

func TestParkedInsideTransaction(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "judy")
	ctx := context.Background()
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() {
		_, err := tx.Exec(ctx, "INSERT INTO "+ae.table+" VALUES ($1, 'a')", 60)
		if err == nil {
			_, err = tx.Exec(ctx, "INSERT INTO "+ae.table+" VALUES ($1, 'b')", 61)
		}
		done <- err
	}()
	for range 2 {
		apr := nextID(t, ids)
		if _, err := ae.svc.Approve(ctx, apr, ae.dba("bob"), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := rowCount(t, ae.Env, ae.table+" WHERE id >= 60"); n != 0 {
		t.Fatalf("uncommitted rows visible: %d", n)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rowCount(t, ae.Env, ae.table+" WHERE id >= 60"); n != 2 {
		t.Fatalf("rows after commit = %d, want 2", n)
	}
}

func TestParkedSessionIsNotIdle(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{IdleTimeout: 300 * time.Millisecond})
	c, ids := ae.agent(t, "ken")
	done := goExec(c, "INSERT INTO "+ae.table+" VALUES (70, 'slow')")
	apr := nextID(t, ids)
	time.Sleep(time.Second) // three idle timeouts
	if _, err := ae.svc.Approve(context.Background(), apr, ae.dba("bob"), ""); err != nil {
		t.Fatal(err)
	}
	if res := result(t, done); res.err != nil {
		t.Fatalf("approved insert after a long wait: %v", res.err)
	}
}

func TestPipelinedMessagesAfterParkedOne(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "leo")
	ctx := context.Background()
	// One batch: a parked write between two reads, all sent at once; what
	// the client sent after the parked statement is relayed after it.
	var wg sync.WaitGroup
	wg.Add(1)
	var got []string
	var berr error
	go func() {
		defer wg.Done()
		b := &pgx.Batch{}
		b.Queue("SELECT v FROM " + ae.table + " WHERE id = 1").QueryRow(func(r pgx.Row) error {
			var v string
			err := r.Scan(&v)
			got = append(got, v)
			return err
		})
		b.Queue("INSERT INTO "+ae.table+" VALUES ($1, $2)", 80, "batched")
		b.Queue("SELECT v FROM " + ae.table + " WHERE id = 80").QueryRow(func(r pgx.Row) error {
			var v string
			err := r.Scan(&v)
			got = append(got, v)
			return err
		})
		bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		berr = c.SendBatch(bctx, b).Close()
	}()
	apr := nextID(t, ids)
	if _, err := ae.svc.Approve(ctx, apr, ae.dba("bob"), ""); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if berr != nil || strings.Join(got, ",") != "one,batched" {
		t.Fatalf("batch: %v, got %v", berr, got)
	}
}

func TestSameStatementNeedsNewApproval(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	c, ids := ae.agent(t, "mallory")
	ctx := context.Background()
	update := "UPDATE " + ae.table + " SET v = v || 'x' WHERE id = 1"
	seen := map[string]bool{}
	for round := 1; round <= 2; round++ {
		done := goExec(c, update)
		apr := nextID(t, ids)
		if seen[apr] {
			t.Fatalf("round %d reused approval %s", round, apr)
		}
		seen[apr] = true
		if _, err := ae.svc.Approve(ctx, apr, ae.dba("bob"), ""); err != nil {
			t.Fatal(err)
		}
		if res := result(t, done); res.err != nil || res.tag.String() != "UPDATE 1" {
			t.Fatalf("round %d: %q %v", round, res.tag, res.err)
		}
		want := "one" + strings.Repeat("x", round)
		if n := rowCount(t, ae.Env, ae.table+" WHERE id = 1 AND v = '"+want+"'"); n != 1 {
			t.Fatalf("after round %d the row is not %q: each approval runs the statement exactly once", round, want)
		}
		if _, err := ae.svc.Consume(ctx, apr, "anything"); err == nil {
			t.Fatalf("a used approval was accepted again")
		}
	}
}

// quorumPolicy is the default policy with approvals needing two dbas.
func quorumPolicy(t *testing.T) *policy.Engine {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir("../policies")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || (!strings.HasSuffix(e.Name(), ".rego") && e.Name() != "data.json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("../policies", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "data.json" {
			if !strings.Contains(string(b), `"quorum": 1,`) {
				t.Fatalf("policies/data.json no longer sets \"quorum\": 1")
			}
			b = []byte(strings.Replace(string(b), `"quorum": 1,`, `"quorum": 2,`, 1))
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := policy.New(context.Background(), policy.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

func TestQuorumOfTwoDistinctApprovers(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnvWith(t, config.Sessions{}, sqliteStore(t), quorumPolicy(t))
	ctx := context.Background()
	c, ids := ae.agent(t, "nina")
	done := goExec(c, "DELETE FROM "+ae.table+" WHERE id = 1")
	apr := nextID(t, ids)
	if _, err := ae.svc.Approve(ctx, apr, ae.dba("bob"), "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := ae.svc.Approve(ctx, apr, ae.dba("bob"), "again"); !errors.Is(err, approval.ErrAlreadyVoted) {
		t.Fatalf("second vote by the same approver: %v", err)
	}
	select {
	case r := <-done:
		t.Fatalf("ran with one approval of two: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if n := rowCount(t, ae.Env, ae.table); n != 1 {
		t.Fatalf("rows = %d before the quorum, want 1", n)
	}
	if _, err := ae.svc.Approve(ctx, apr, ae.dba("oscar"), "second"); err != nil {
		t.Fatal(err)
	}
	if res := result(t, done); res.err != nil || res.tag.String() != "DELETE 1" {
		t.Fatalf("delete after quorum: %q %v", res.tag, res.err)
	}
	if n := rowCount(t, ae.Env, ae.table); n != 0 {
		t.Fatalf("rows = %d after the approved delete, want 0", n)
	}
}

var approvalDBSeq atomic.Int64

// TestReplicasShareAPostgresStore runs two proxies, each with its own
// approval service, on one PostgreSQL store: a statement parked on one is
// released by an approval given through the other (LISTEN/NOTIFY).
func TestReplicasShareAPostgresStore(t *testing.T) {
	t.Parallel()
	cl, _ := pgfiltertest.Upstream(t)
	ctx := context.Background()
	db := fmt.Sprintf("approvals_%d", approvalDBSeq.Add(1))
	if err := cl.Exec(ctx, "postgres", "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	open := func() approval.Store {
		st, err := approval.OpenPostgres(ctx, cl.DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	a := newApprovalEnvWith(t, config.Sessions{}, open(), pgfiltertest.DefaultPolicy(t))
	b := newApprovalEnvWith(t, config.Sessions{}, open(), pgfiltertest.DefaultPolicy(t))
	c, ids := a.agent(t, "peggy")
	done := goExec(c, "UPDATE "+a.table+" SET v = 'approved elsewhere' WHERE id = 1")
	apr := nextID(t, ids)
	// The other replica sees the request and decides it.
	r, err := b.svc.Get(ctx, apr)
	if err != nil || r.State != approval.StatePending {
		t.Fatalf("replica b: %+v %v", r, err)
	}
	if _, err := b.svc.Approve(ctx, apr, approval.Principal{Sub: "bob", Iss: a.IssuerURL, Groups: []string{"dba"}}, ""); err != nil {
		t.Fatal(err)
	}
	if res := result(t, done); res.err != nil || res.tag.String() != "UPDATE 1" {
		t.Fatalf("update released by the other replica: %q %v", res.tag, res.err)
	}
	if n := rowCount(t, a.Env, a.table+" WHERE v = 'approved elsewhere'"); n != 1 {
		t.Fatalf("the approved update did not run")
	}
	if st := b.state(t, apr); st != approval.StateConsumed {
		t.Fatalf("state seen by replica b = %s, want consumed", st)
	}
}
