package tests

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

var shadowSeq atomic.Int64

// shadowEnv runs a proxy with the default policy in front of a schema of
// the test's own holding functions that write a row into its hits table
// when they run: lower(text), named like the read-only built-in, and
// audit_me(); a view calling audit_me, a view over that view, a view
// calling only built-ins, and tables with row security whose policy calls
// audit_me or only built-ins. The schema is the test's own (not public) so
// that other tests of the shared cluster never resolve to it.
func shadowEnv(t *testing.T) (*pgfiltertest.Env, string) {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t)})
	s := fmt.Sprintf("shadow_%d", shadowSeq.Add(1))
	superExec(t, env, fmt.Sprintf(`DROP SCHEMA IF EXISTS %[1]s CASCADE;
		CREATE SCHEMA %[1]s;
		CREATE TABLE %[1]s.hits (what text);
		CREATE FUNCTION %[1]s.lower(text) RETURNS text LANGUAGE plpgsql AS
		  $$ BEGIN INSERT INTO %[1]s.hits VALUES ('lower'); RETURN pg_catalog.upper($1); END $$;
		CREATE FUNCTION %[1]s.audit_me() RETURNS int LANGUAGE plpgsql AS
		  $$ BEGIN INSERT INTO %[1]s.hits VALUES ('audit_me'); RETURN 1; END $$;
		CREATE VIEW %[1]s.v AS SELECT %[1]s.audit_me() AS x;
		CREATE VIEW %[1]s.vv AS SELECT x FROM %[1]s.v;
		CREATE VIEW %[1]s.plain AS SELECT pg_catalog.lower('A') || 'b' AS x;
		CREATE TABLE %[1]s.guarded (x int);
		INSERT INTO %[1]s.guarded VALUES (1);
		ALTER TABLE %[1]s.guarded ENABLE ROW LEVEL SECURITY;
		CREATE POLICY audited ON %[1]s.guarded USING (%[1]s.audit_me() = x);
		CREATE TABLE %[1]s.open (x int);
		ALTER TABLE %[1]s.open ENABLE ROW LEVEL SECURITY;
		CREATE POLICY everyone ON %[1]s.open USING (pg_catalog.abs(x) >= 0);
		GRANT USAGE ON SCHEMA %[1]s TO %[2]s;
		GRANT ALL ON ALL TABLES IN SCHEMA %[1]s TO %[2]s`, s, env.Resource.User))
	t.Cleanup(func() {
		_ = env.Cluster.Exec(context.Background(), pgfiltertest.Database, "DROP SCHEMA IF EXISTS "+s+" CASCADE")
	})
	return env, s
}

// hits is how often the schema's functions ran, read past the proxy.
func hits(t *testing.T, env *pgfiltertest.Env, schema string) int {
	t.Helper()
	ctx := testCtx(t)
	c, err := pgx.Connect(ctx, env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM "+schema+".hits").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func psqlAs(t *testing.T, env *pgfiltertest.Env, user, token string, extra ...string) *psqlClient {
	return &psqlClient{t: t, bin: pgProgram(t, env, "psql"), conn: proxyConnInfo(env, user, extra...), token: token}
}

// TestStartupParametersDecidedAsSet: a startup parameter reaches the
// server only when the policy lets the principal SET it; search_path,
// which chooses the function an unqualified name calls, is refused to
// agents whether it comes as a parameter or inside options, with FATAL
// 42501 and a decision id, and the shadowing function never runs.
func TestStartupParametersDecidedAsSet(t *testing.T) {
	t.Parallel()
	env, s := shadowEnv(t)
	agent := env.Token(t, "alice", "agents")
	path := s + ",pg_catalog"

	t.Run("psql options search_path", func(t *testing.T) {
		p := psqlAs(t, env, "alice", agent, "options='-c search_path="+path+"'")
		r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", "SELECT lower('X')")
		if r.code == 0 || !strings.Contains(r.stderr, "FATAL") || !strings.Contains(r.stderr, "startup parameters refused") ||
			!strings.Contains(r.stderr, "search_path") || !strings.Contains(r.stderr, "decision dec_") {
			t.Fatalf("psql with options search_path: %s", r)
		}
	})
	t.Run("psql options long form", func(t *testing.T) {
		p := psqlAs(t, env, "alice", agent, "options='--search-path="+path+"'")
		r := p.run(nil, "-A", "-t", "-c", "SELECT lower('X')")
		if r.code == 0 || !strings.Contains(r.stderr, "search_path") || !strings.Contains(r.stderr, "decision dec_") {
			t.Fatalf("psql with --search-path: %s", r)
		}
	})
	t.Run("psql options switch", func(t *testing.T) {
		p := psqlAs(t, env, "alice", agent, "options='-B 100'")
		r := p.run(nil, "-A", "-t", "-c", "SELECT 1")
		if r.code == 0 || !strings.Contains(r.stderr, "only -c name=value and --name=value settings") {
			t.Fatalf("psql with a command-line switch in options: %s", r)
		}
	})
	t.Run("psql allowed options", func(t *testing.T) {
		p := psqlAs(t, env, "alice", agent, `options='-c statement_timeout=4321 --DateStyle=SQL,\\ DMY'`)
		out := p.ok("-c", "SHOW statement_timeout", "-c", "SHOW DateStyle")
		if out != "4321ms\nSQL, DMY\n" {
			t.Fatalf("settings from options: %q", out)
		}
	})
	for _, tt := range []struct {
		name   string
		params map[string]string
	}{
		{"pgx search_path parameter", map[string]string{"search_path": path}},
		{"pgx options search_path", map[string]string{"options": "-c search_path=" + path}},
		{"pgx geqo parameter", map[string]string{"geqo": "off"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(env.ConnString("alice", agent))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.params {
				cfg.RuntimeParams[k] = v
			}
			c, err := pgx.ConnectConfig(testCtx(t), cfg)
			var pgErr *pgconn.PgError
			if err == nil {
				_, _ = c.Exec(testCtx(t), "SELECT lower('X')")
				_ = c.Close(context.Background())
				t.Fatal("connected")
			}
			if !errors.As(err, &pgErr) || pgErr.Severity != "FATAL" || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "decision dec_") {
				t.Fatalf("connect: %v", err)
			}
		})
	}
	t.Run("pgx allowed parameter", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(env.ConnString("alice", agent))
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["extra_float_digits"] = "1"
		cfg.RuntimeParams["options"] = "-c lock_timeout=1234"
		c := connectConfig(t, cfg)
		var efd, lt string
		if err := c.QueryRow(testCtx(t), "SELECT current_setting('extra_float_digits'), current_setting('lock_timeout')").Scan(&efd, &lt); err != nil {
			t.Fatal(err)
		}
		if efd != "1" || lt != "1234ms" {
			t.Fatalf("extra_float_digits %q lock_timeout %q", efd, lt)
		}
	})
	if n := hits(t, env, s); n != 0 {
		t.Fatalf("the shadowing function ran %d times", n)
	}
}

// TestFunctionsDecidedAsResolved: a dba may set search_path at startup,
// but a call of lower() is then decided as the schema's lower (it needs
// approval, so with no approval store it is refused) and does not run; the
// built-in, qualified, still runs. On the default path the same call is
// the built-in's. A SET search_path in the session makes custos resolve in
// every schema.
func TestFunctionsDecidedAsResolved(t *testing.T) {
	t.Parallel()
	env, s := shadowEnv(t)
	dba := env.Token(t, "bob", "dba")
	ctx := testCtx(t)

	refusedApproval := func(t *testing.T, err error) {
		t.Helper()
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "cannot prove read-only") || !strings.Contains(pgErr.Message, s+".lower") {
			t.Fatalf("err = %v, want a refusal naming %s.lower", err, s)
		}
	}
	t.Run("pgx startup search_path", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(env.ConnString("bob", dba))
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["search_path"] = s + ", pg_catalog"
		c := connectConfig(t, cfg)
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			var v string
			refusedApproval(t, c.QueryRow(ctx, "SELECT lower('X')", mode).Scan(&v))
			if err := c.QueryRow(ctx, "SELECT pg_catalog.lower('X')", mode).Scan(&v); err != nil || v != "x" {
				t.Fatalf("qualified built-in: %q %v", v, err)
			}
		}
	})
	t.Run("psql options search_path", func(t *testing.T) {
		p := psqlAs(t, env, "bob", dba, "options='-c search_path="+s+",pg_catalog'")
		r := p.run(nil, "-A", "-t", "-c", "SELECT lower('X')")
		if r.code == 0 || !strings.Contains(r.stderr, "cannot prove read-only") || !strings.Contains(r.stderr, s+".lower") {
			t.Fatalf("psql: %s", r)
		}
	})
	t.Run("default path", func(t *testing.T) {
		c := connectConfig(t, mustConfig(t, env.ConnString("bob", dba)))
		var v string
		if err := c.QueryRow(ctx, "SELECT lower('X')").Scan(&v); err != nil || v != "x" {
			t.Fatalf("lower on the default path: %q %v", v, err)
		}
		// The dba may SET search_path; from then on custos resolves
		// names in every schema.
		if _, err := c.Exec(ctx, "SET search_path = "+s+", pg_catalog"); err != nil {
			t.Fatal(err)
		}
		refusedApproval(t, c.QueryRow(ctx, "SELECT lower('X')").Scan(&v))
	})
	if n := hits(t, env, s); n != 0 {
		t.Fatalf("the shadowing function ran %d times", n)
	}
}

func mustConfig(t *testing.T, cs string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(cs)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestCursorsAndViewsDecidedAsWhatTheyRun: a cursor over a user function,
// a view (or a view over it) whose body calls one, and a table whose row
// security policy calls one, are decided as the
// function custos cannot prove read-only: refused to an agent without an
// approval store, and the function's insert never happens. A view, or a
// policy, of built-ins only is read as before.
func TestCursorsAndViewsDecidedAsWhatTheyRun(t *testing.T) {
	t.Parallel()
	env, s := shadowEnv(t)
	agent := env.Token(t, "alice", "agents")
	ctx := testCtx(t)
	refused := []string{
		"DECLARE c CURSOR WITH HOLD FOR SELECT " + s + ".audit_me()",
		"DECLARE c CURSOR WITH HOLD FOR SELECT x FROM " + s + ".v",
		"SELECT x FROM " + s + ".v",
		"SELECT x FROM " + s + ".vv",
		"SELECT * FROM (SELECT x FROM " + s + ".vv) q",
		"SELECT x FROM " + s + ".guarded",
	}
	t.Run("pgx", func(t *testing.T) {
		c := connectConfig(t, mustConfig(t, env.ConnString("alice", agent)))
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			for _, q := range refused {
				_, err := c.Exec(ctx, q, mode)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "cannot prove read-only") {
					t.Errorf("mode %v, %q: %v", mode, q, err)
				}
				_, _ = c.Exec(ctx, "CLOSE ALL", pgx.QueryExecModeSimpleProtocol)
			}
			var x string
			if err := c.QueryRow(ctx, "SELECT x FROM "+s+".plain", mode).Scan(&x); err != nil || x != "ab" {
				t.Fatalf("mode %v: view of built-ins: %q %v", mode, x, err)
			}
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM "+s+".open", mode).Scan(&n); err != nil || n != 0 {
				t.Fatalf("mode %v: table whose policy calls built-ins: %d %v", mode, n, err)
			}
		}
	})
	t.Run("psql", func(t *testing.T) {
		p := psqlAs(t, env, "alice", agent)
		for _, q := range refused {
			r := p.run([]byte("BEGIN;\n"+q+";\nFETCH ALL FROM c;\nCOMMIT;\n"), "-v", "ON_ERROR_STOP=1", "-A", "-t")
			if r.code == 0 || !strings.Contains(r.stderr, "cannot prove read-only") {
				t.Errorf("psql %q: %s", q, r)
			}
		}
		if out := p.ok("-c", "SELECT x FROM "+s+".plain"); out != "ab\n" {
			t.Fatalf("view of built-ins: %q", out)
		}
	})
	if n := hits(t, env, s); n != 0 {
		t.Fatalf("a user function ran %d times", n)
	}
}
