package pgfilter_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/devenv"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// groupLoginEnv is a proxy with the default policy and masking whose
// sessions log in as their group's login.
func groupLoginEnv(t *testing.T, groupLogins bool) *pgfiltertest.Env {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t), GroupLogins: groupLogins})
}

var allModes = []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec}

func TestGroupLoginCarriesThePrincipal(t *testing.T) {
	t.Parallel()
	env := groupLoginEnv(t, true)
	ctx := context.Background()
	for _, tc := range []struct {
		sub    string
		groups []string
		role   string
	}{
		{"alice", []string{"agents"}, devenv.AgentRole},
		{"bob", []string{"dba"}, devenv.DBARole},
		// In both groups: the stricter login, as the policy treats it.
		{"carol", []string{"dba", "agents"}, devenv.AgentRole},
	} {
		c := connect(t, env.ConnString(tc.sub, env.Token(t, tc.sub, tc.groups...)))
		for _, mode := range allModes {
			var cur, ses, principal, issuer, sid string
			err := c.QueryRow(ctx, "SELECT current_user, session_user, current_setting('custos.principal'), "+
				"current_setting('custos.issuer'), current_setting('custos.session_id')", mode).Scan(&cur, &ses, &principal, &issuer, &sid)
			if err != nil {
				t.Fatalf("%s %v: %v", tc.sub, mode, err)
			}
			if cur != tc.role || ses != tc.role || principal != tc.sub || issuer != env.IssuerURL || len(sid) != 24 {
				t.Errorf("%s %v: current_user %q session_user %q principal %q issuer %q session id %q, want %s, %s, %s",
					tc.sub, mode, cur, ses, principal, issuer, sid, tc.role, tc.sub, env.IssuerURL)
			}
		}
	}

	// In no group with a login: refused, never the gateway's login.
	pgErr := connectErr(t, env.ConnString("dave", env.Token(t, "dave", "auditors")))
	if pgErr.Code != "28000" || !strings.Contains(pgErr.Message, "login") {
		t.Errorf("principal without a group login: %s %s", pgErr.Code, pgErr.Message)
	}
	pgErr = connectErr(t, env.ConnString("erin", env.Token(t, "erin")))
	if pgErr.Code != "28000" {
		t.Errorf("principal without groups: %s %s", pgErr.Code, pgErr.Message)
	}
}

func TestCustosSettingsCannotBeChanged(t *testing.T) {
	t.Parallel()
	env := groupLoginEnv(t, true)
	ctx := context.Background()
	for _, who := range []struct{ sub, group string }{{"alice", "agents"}, {"bob", "dba"}} {
		c := connect(t, env.ConnString(who.sub, env.Token(t, who.sub, who.group)))
		for _, sql := range []string{
			"SET custos.principal = 'mallory'",
			"SET SESSION custos.principal TO 'mallory'",
			"SET custos.Principal = 'mallory'",
			"RESET custos.principal",
			"SET custos.session_id = 'x'",
			"SET custos.anything = 'x'",
			"SELECT set_config('custos.principal', 'mallory', false)",
			"SELECT 1; SET custos.principal = 'mallory'",
			"SET ROLE " + devenv.AgentWriteRole,
			"RESET ROLE",
			"SELECT set_config('role', '" + devenv.AgentWriteRole + "', false)",
		} {
			for _, mode := range allModes {
				if mode != pgx.QueryExecModeSimpleProtocol && strings.Contains(sql, ";") {
					continue
				}
				_, err := c.Exec(ctx, sql, mode)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Detail, "decision id: ") {
					t.Errorf("%s: %q (%v): %v, want a refusal with a decision id", who.sub, sql, mode, err)
				}
			}
		}
		// SET LOCAL inside a transaction, then the transaction goes on.
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET LOCAL custos.principal = 'mallory'"); err == nil {
			t.Errorf("%s: SET LOCAL custos.principal ran", who.sub)
		}
		_ = tx.Rollback(ctx)
		var p, role string
		if err := c.QueryRow(ctx, "SELECT current_setting('custos.principal'), current_user").Scan(&p, &role); err != nil || p != who.sub {
			t.Errorf("%s: principal after the attempts = %q (%v)", who.sub, p, err)
		}
		if want := map[string]string{"alice": devenv.AgentRole, "bob": devenv.DBARole}[who.sub]; role != want {
			t.Errorf("%s: current_user after the attempts = %q, want %q", who.sub, role, want)
		}
	}

	// A startup parameter naming a custos.* setting is refused at connect.
	pgErr := connectErr(t, env.ConnString("alice", env.Token(t, "alice", "agents"), "custos.principal=mallory"))
	if pgErr.Code != "28000" || !strings.Contains(pgErr.Message, "custos.principal") {
		t.Errorf("startup custos.principal: %s %s", pgErr.Code, pgErr.Message)
	}
}

// TestDBAQueryTextHiddenFromAgents runs a dba statement with a CVV-like
// literal (not a PAN: masking leaves it) and reads pg_stat_activity as an
// agent meanwhile: with group logins the database itself hides it; with
// the gateway's single login it shows (the contrast proves the check).
func TestDBAQueryTextHiddenFromAgents(t *testing.T) {
	t.Parallel()
	for _, groupLogins := range []bool{true, false} {
		t.Run(fmt.Sprintf("group_logins=%v", groupLogins), func(t *testing.T) {
			t.Parallel()
			m, err := mask.New(mask.Options{})
			if err != nil {
				t.Fatal(err)
			}
			// pg_sleep has side effects: the policy has a dba's statement
			// calling it approved by another dba.
			svc, err := approval.NewService(context.Background(), sqliteStore(t), approval.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t),
				Approvals: svc, GroupLogins: groupLogins})
			ctx := context.Background()
			ids := make(chan string, 1)
			cfg, err := pgx.ParseConfig(env.ConnString("bob", env.Token(t, "bob", "dba")))
			if err != nil {
				t.Fatal(err)
			}
			cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
				if m := approvalIDRE.FindStringSubmatch(n.Message); m != nil {
					ids <- m[1]
				}
			}
			dba, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dba.Close(ctx) })
			agent := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
			var dbaPID int
			if err := dba.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&dbaPID); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := dba.Exec(ctx, "SELECT pg_sleep(2), '123'", pgx.QueryExecModeSimpleProtocol)
				done <- err
			}()
			dbaPrincipal := approval.Principal{Sub: "carol", Iss: env.IssuerURL, Groups: []string{"dba"}}
			if _, err := svc.Approve(ctx, nextID(t, ids), dbaPrincipal, ""); err != nil {
				t.Fatal(err)
			}
			var seen []string
			deadline := time.Now().Add(1500 * time.Millisecond)
			for time.Now().Before(deadline) {
				var q *string
				err := agent.QueryRow(ctx, "SELECT query FROM pg_stat_activity WHERE pid = $1", dbaPID).Scan(&q)
				if err != nil && !errors.Is(err, pgx.ErrNoRows) {
					t.Fatal(err)
				}
				if q != nil {
					seen = append(seen, *q)
					if strings.Contains(*q, "pg_sleep") {
						break
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			leaked := false
			for _, q := range seen {
				if strings.Contains(q, "'123'") {
					leaked = true
				} else if groupLogins && q != "<insufficient privilege>" {
					t.Errorf("agent read %q for the dba's session, want <insufficient privilege>", q)
				}
			}
			if groupLogins && (leaked || len(seen) == 0) {
				t.Errorf("with group logins the agent read %q, want only <insufficient privilege>", seen)
			}
			if !groupLogins && !leaked {
				t.Errorf("with one login the agent read %q; want the dba's text (else this test proves nothing)", seen)
			}
		})
	}
}

// TestAgentLoginCannotWrite connects to PostgreSQL directly with the
// agents' login credential, as if every custos check were bypassed: the
// database itself refuses every write.
func TestAgentLoginCannotWrite(t *testing.T) {
	t.Parallel()
	cl, _ := pgfiltertest.Upstream(t)
	var agent *config.UpstreamLogin
	for _, l := range pgfiltertest.GroupLogins(t) {
		if l.Group == devenv.AgentsGroup {
			agent = &l
		}
	}
	if agent == nil || agent.User != devenv.AgentRole {
		t.Fatalf("no agents login in %+v", pgfiltertest.GroupLogins(t))
	}
	pw, err := os.ReadFile(agent.Password.File)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(cl.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = agent.User, strings.TrimSpace(string(pw))
	ctx := context.Background()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(ctx) })
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM cards").Scan(&n); err != nil || n == 0 {
		t.Fatalf("the agents' login reads cards: %d %v", n, err)
	}
	for _, sql := range []string{
		"INSERT INTO cards (holder, pan, cvv, exp) VALUES ('x', '4111111111111111', '000', '01/30')",
		"UPDATE cards SET holder = 'x'",
		"DELETE FROM customers",
		"TRUNCATE customers",
		"CREATE TABLE agent_owned (x int)",
		"CREATE TEMP TABLE agent_temp (x int)",
		"SELECT nextval('cards_id_seq')",
	} {
		_, err := c.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%q as %s: %v, want 42501", sql, agent.User, err)
		}
	}
}

// TestApprovedRoleOnlyForTheApprovedStatement checks that the approved
// write runs as the write role, and that the session is back on the
// agents' login after it, when it failed, and after a rollback.
func TestApprovedRoleOnlyForTheApprovedStatement(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	ctx := context.Background()
	if err := ae.Cluster.Exec(ctx, pgfiltertest.Database, fmt.Sprintf(
		`ALTER TABLE %s ADD COLUMN who text DEFAULT current_user`, ae.table)); err != nil {
		t.Fatal(err)
	}
	approve := func(t *testing.T, ids <-chan string) {
		t.Helper()
		if _, err := ae.svc.Approve(ctx, nextID(t, ids), ae.dba("bob"), ""); err != nil {
			t.Fatal(err)
		}
	}
	currentUser := func(t *testing.T, c *pgx.Conn, mode pgx.QueryExecMode) string {
		t.Helper()
		var u string
		if err := c.QueryRow(ctx, "SELECT current_user", mode).Scan(&u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	for i, mode := range allModes {
		t.Run(mode.String(), func(t *testing.T) {
			c, ids := ae.agent(t, fmt.Sprintf("role_%d", i))
			id := 100 + 10*i
			done := goExec(c, "INSERT INTO "+ae.table+" (id, v) VALUES ($1, 'x')", mode, id)
			approve(t, ids)
			if res := result(t, done); res.err != nil {
				t.Fatalf("approved insert: %v", res.err)
			}
			var who string
			if err := c.QueryRow(ctx, "SELECT who FROM "+ae.table+" WHERE id = $1", mode, id).Scan(&who); err != nil || who != devenv.AgentWriteRole {
				t.Errorf("the approved insert ran as %q (%v), want %s", who, err, devenv.AgentWriteRole)
			}
			if u := currentUser(t, c, mode); u != devenv.AgentRole {
				t.Errorf("after the approved insert current_user = %q, want %s", u, devenv.AgentRole)
			}

			// An approved statement that fails outside a transaction.
			done = goExec(c, "INSERT INTO "+ae.table+" (id, v) VALUES ($1, 'dup')", mode, id)
			approve(t, ids)
			var pgErr *pgconn.PgError
			if res := result(t, done); !errors.As(res.err, &pgErr) || pgErr.Code != "23505" {
				t.Fatalf("duplicate approved insert: %v, want 23505", res.err)
			}
			if u := currentUser(t, c, mode); u != devenv.AgentRole {
				t.Errorf("after a failed approved insert current_user = %q, want %s", u, devenv.AgentRole)
			}

			// One that fails inside a transaction block, then ROLLBACK.
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			txDone := make(chan execResult, 1)
			go func() {
				tag, err := tx.Exec(ctx, "INSERT INTO "+ae.table+" (id, v) VALUES ($1, 'dup')", mode, id)
				txDone <- execResult{tag, err}
			}()
			done = txDone
			approve(t, ids)
			if res := result(t, done); !errors.As(res.err, &pgErr) || pgErr.Code != "23505" {
				t.Fatalf("duplicate approved insert in a transaction: %v, want 23505", res.err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if u := currentUser(t, c, mode); u != devenv.AgentRole {
				t.Errorf("after a rolled back approved insert current_user = %q, want %s", u, devenv.AgentRole)
			}
			// The session still refuses what it refused: a write parks.
			done = goExec(c, "DELETE FROM "+ae.table+" WHERE id = $1", mode, id)
			apr := nextID(t, ids)
			if _, err := ae.svc.Deny(ctx, apr, ae.dba("bob"), "no"); err != nil {
				t.Fatal(err)
			}
			if res := result(t, done); res.err == nil {
				t.Fatal("denied delete ran")
			}
			if st := ae.state(t, apr); st != approval.StateDenied {
				t.Errorf("state = %s", st)
			}
		})
	}
}

// TestApprovedRoleFailsClosed: when the approved role cannot be taken the
// approved statement runs as the login (and fails) or not at all, and the
// session goes on; when custos cannot know the role was dropped, the
// session ends.
func TestApprovedRoleFailsClosed(t *testing.T) {
	t.Parallel()
	t.Run("role missing", func(t *testing.T) {
		t.Parallel()
		logins := pgfiltertest.GroupLogins(t)
		for i := range logins {
			if logins[i].Group == devenv.AgentsGroup {
				logins[i].ApprovedRole = "custos_no_such_role"
			}
		}
		ae := newApprovalEnvLogins(t, config.Sessions{}, sqliteStore(t), pgfiltertest.DefaultPolicy(t), logins)
		ctx := context.Background()
		for i, mode := range allModes {
			c, ids := ae.agent(t, fmt.Sprintf("missing_%d", i))
			done := goExec(c, "INSERT INTO "+ae.table+" VALUES ($1, 'x')", mode, 200+i)
			if _, err := ae.svc.Approve(ctx, nextID(t, ids), ae.dba("bob"), ""); err != nil {
				t.Fatal(err)
			}
			var pgErr *pgconn.PgError
			res := result(t, done)
			// Simple: SET ROLE failed apart, the INSERT ran as the login.
			// Extended: the server skipped the Execute; SET ROLE's error
			// is the answer.
			want := map[bool]string{true: "42501", false: "22023"}[mode == pgx.QueryExecModeSimpleProtocol]
			if !errors.As(res.err, &pgErr) || (pgErr.Code != want && pgErr.Code != "42704") {
				t.Errorf("%v: approved insert with a missing role: %v, want %s", mode, res.err, want)
			}
			if n := rowCount(t, ae.Env, ae.table+fmt.Sprintf(" WHERE id = %d", 200+i)); n != 0 {
				t.Errorf("%v: the insert wrote %d rows", mode, n)
			}
			var u string
			if err := c.QueryRow(ctx, "SELECT current_user", mode).Scan(&u); err != nil || u != devenv.AgentRole {
				t.Errorf("%v: the session after it: %q %v", mode, u, err)
			}
		}
	})
	t.Run("role kept after the approved query's own transaction failed", func(t *testing.T) {
		t.Parallel()
		ae := newApprovalEnv(t, config.Sessions{})
		ctx := context.Background()
		c, ids := ae.agent(t, "txcontrol")
		// SET ROLE commits on its own (the session was idle); the approved
		// query opens a block and fails in it, so RESET ROLE cannot run and
		// a ROLLBACK would not undo the SET: custos ends the session.
		done := goExec(c, "BEGIN; INSERT INTO "+ae.table+" VALUES (1, 'dup')", pgx.QueryExecModeSimpleProtocol)
		if _, err := ae.svc.Approve(ctx, nextID(t, ids), ae.dba("bob"), ""); err != nil {
			t.Fatal(err)
		}
		var pgErr *pgconn.PgError
		if res := result(t, done); !errors.As(res.err, &pgErr) || pgErr.Code != "23505" {
			t.Fatalf("approved query: %v, want 23505", res.err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := c.Exec(ctx, "ROLLBACK")
			if err != nil {
				if errors.As(err, &pgErr) && pgErr.Code != "XX000" {
					t.Errorf("after it: %v, want the session closed", err)
				}
				break
			}
			var u string
			if err := c.QueryRow(ctx, "SELECT current_user").Scan(&u); err == nil && u != devenv.AgentRole {
				t.Fatalf("the session goes on as %q", u)
			}
			if time.Now().After(deadline) {
				t.Fatal("the session goes on")
			}
		}
	})
}

// TestPerPrincipalUsers: with per_principal, each agent runs as a user of
// its own, enabled for its sessions only, so agents no longer see each
// other's query text either; approved writes still take the approved role.
func TestPerPrincipalUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cl, _ := pgfiltertest.Upstream(t)
	// Provisioning runs as the resource's own login.
	if err := cl.Exec(ctx, "postgres", "ALTER ROLE "+devenv.GatewayRole+" CREATEROLE"); err != nil {
		t.Fatal(err)
	}
	logins := pgfiltertest.GroupLogins(t)
	for i := range logins {
		logins[i].PerPrincipal = logins[i].Group == devenv.AgentsGroup
	}
	ae := newApprovalEnvLogins(t, config.Sessions{}, sqliteStore(t), pgfiltertest.DefaultPolicy(t), logins)
	alice, ids := ae.agent(t, "pp.alice@example.com")
	var cur, ses, principal string
	if err := alice.QueryRow(ctx, "SELECT current_user, session_user, current_setting('custos.principal')").Scan(&cur, &ses, &principal); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cur, "custos_u_pp_alice_example_com_") || ses != cur || principal != "pp.alice@example.com" {
		t.Fatalf("per-principal session: current_user %q session_user %q principal %q", cur, ses, principal)
	}
	if _, err := alice.Exec(ctx, "SELECT 'alice-secret-123'", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	zed, _ := ae.agent(t, "pp.zed")
	var q string
	if err := zed.QueryRow(ctx, "SELECT query FROM pg_stat_activity WHERE usename = $1", cur).Scan(&q); err != nil || q != "<insufficient privilege>" {
		t.Errorf("another agent reads %q (%v) of alice's session, want <insufficient privilege>", q, err)
	}

	// An approved write takes the approved role through the group login.
	done := goExec(alice, "INSERT INTO "+ae.table+" VALUES (300, 'per principal')")
	if _, err := ae.svc.Approve(ctx, nextID(t, ids), ae.dba("bob"), ""); err != nil {
		t.Fatal(err)
	}
	if res := result(t, done); res.err != nil {
		t.Fatalf("approved insert as a per-principal user: %v", res.err)
	}

	su, err := pgx.Connect(ctx, cl.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = su.Close(ctx) })
	canLogin := func() (bool, bool) {
		var can, hasPW bool
		if err := su.QueryRow(ctx, "SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1", cur).Scan(&can, &hasPW); err != nil {
			t.Fatal(err)
		}
		return can, hasPW
	}
	// A second session shares the user; closing one keeps it enabled.
	second, _ := ae.agent(t, "pp.alice@example.com")
	if err := alice.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var again string
	if err := second.QueryRow(ctx, "SELECT current_user").Scan(&again); err != nil || again != cur {
		t.Fatalf("second session: %q %v", again, err)
	}
	if can, _ := canLogin(); !can {
		t.Fatal("the user was disabled while a session of its principal was open")
	}
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		can, hasPW := canLogin()
		if !can && !hasPW {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the last session the user can log in %v, has a password %v", can, hasPW)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
