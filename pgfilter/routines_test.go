package pgfilter_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/devenv"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// TestDDLForgetsFunctionResolutions: a dba's session resolves lower() to
// the built-in and custos caches that; once the session creates a lower of
// its own on its search_path (approved by another dba), the next call is
// decided as that function: it waits for approval and, denied, never runs.
func TestDDLForgetsFunctionResolutions(t *testing.T) {
	t.Parallel()
	ae := newApprovalEnv(t, config.Sessions{})
	ctx := context.Background()
	s := fmt.Sprintf("ddl_shadow_%d", policyTableSeq.Add(1))
	if err := ae.Cluster.Exec(ctx, pgfiltertest.Database, fmt.Sprintf(`CREATE SCHEMA %[1]s;
		CREATE TABLE %[1]s.hits (what text);
		GRANT USAGE, CREATE ON SCHEMA %[1]s TO %[2]s, %[3]s;
		GRANT ALL ON %[1]s.hits TO %[2]s, %[3]s`, s, ae.Resource.User, devenv.DBARole)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ae.Cluster.Exec(ctx, pgfiltertest.Database, "DROP SCHEMA "+s+" CASCADE") })

	ids := make(chan string, 8)
	cfg, err := pgx.ParseConfig(ae.ConnString("carol", ae.Token(t, "carol", "dba")))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = s + ", pg_catalog"
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		if m := approvalIDRE.FindStringSubmatch(n.Message); m != nil {
			ids <- m[1]
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })

	var v string
	if err := c.QueryRow(ctx, "SELECT lower('X')").Scan(&v); err != nil || v != "x" {
		t.Fatalf("lower before: %q %v", v, err)
	}
	done := goExec(c, fmt.Sprintf(`CREATE FUNCTION %[1]s.lower(text) RETURNS text LANGUAGE plpgsql AS
		$$ BEGIN INSERT INTO %[1]s.hits VALUES ('lower'); RETURN pg_catalog.upper($1); END $$`, s))
	apr := nextID(t, ids)
	if _, err := ae.svc.Approve(ctx, apr, ae.dba("bob"), ""); err != nil {
		t.Fatal(err)
	}
	if res := result(t, done); res.err != nil {
		t.Fatalf("approved CREATE FUNCTION: %v", res.err)
	}
	done = goExec(c, "SELECT lower('X')")
	apr = nextID(t, ids)
	r, err := ae.svc.Get(ctx, apr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Summary+r.Detail+strings.Join(r.Reasons, " "), s+".lower") {
		t.Errorf("request does not name %s.lower: %+v", s, r)
	}
	if _, err := ae.svc.Deny(ctx, apr, ae.dba("bob"), ""); err != nil {
		t.Fatal(err)
	}
	res := result(t, done)
	var pgErr *pgconn.PgError
	if !errors.As(res.err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("denied call: %v", res.err)
	}
	if n := rowCount(t, ae.Env, s+".hits"); n != 0 {
		t.Fatalf("the new lower ran %d times", n)
	}
}
