package tests

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// sessionStateEnv runs custos with the default policy and a table the
// agent may read (writes need approval; there is no approval store, so
// they are refused).
func sessionStateEnv(t *testing.T, table string) *pgfiltertest.Env {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t)})
	superExec(t, env, fmt.Sprintf(`CREATE TABLE %[1]s (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s VALUES (1, 'one'), (2, 'two');
		GRANT ALL ON %[1]s TO %[2]s`, table, env.Resource.User))
	return env
}

func tableRows(t *testing.T, env *pgfiltertest.Env, table string) int {
	t.Helper()
	c, err := pgconn.Connect(testCtx(t), env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(testCtx(t))
	res, err := c.Exec(testCtx(t), "SELECT count(*) FROM "+table).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	_, _ = fmt.Sscan(string(res[0].Rows[0][0]), &n)
	return n
}

// TestSessionStatePgxRedefinedStatement: a second Prepare under a name
// that exists is refused by custos, and ExecPrepared runs what the server
// holds under the name, decided as such.
func TestSessionStatePgxRedefinedStatement(t *testing.T) {
	t.Parallel()
	const table = "state_pgx"
	env := sessionStateEnv(t, table)
	pc := connect(t, env, "alice").PgConn()
	ctx := testCtx(t)
	if _, err := pc.Prepare(ctx, "s1", "INSERT INTO "+table+" VALUES (100, 'x')", nil); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	_, err := pc.Prepare(ctx, "s1", "SELECT 1", nil)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P05" || !strings.Contains(pgErr.Message, "custos") || !strings.Contains(pgErr.Message, "decision dec_") {
		t.Fatalf("second prepare: %v", err)
	}
	_, err = pc.ExecPrepared(ctx, "s1", nil, nil, nil).Close()
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "approval required") {
		t.Fatalf("exec prepared: %v", err)
	}
	// The session goes on, the name can be reused once closed.
	if err := pc.Deallocate(ctx, "s1"); err != nil {
		t.Fatalf("deallocate: %v", err)
	}
	if _, err := pc.Prepare(ctx, "s1", "SELECT 41 + 1", nil); err != nil {
		t.Fatalf("prepare after deallocate: %v", err)
	}
	res := pc.ExecPrepared(ctx, "s1", nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "42" {
		t.Fatalf("exec prepared after deallocate: %v %v", res.Rows, res.Err)
	}
	if n := tableRows(t, env, table); n != 2 {
		t.Fatalf("table has %d rows", n)
	}
}

// TestSessionStatePsqlRedefinedPrepare: the SQL-level attack, as separate
// commands and as one string.
func TestSessionStatePsqlRedefinedPrepare(t *testing.T) {
	t.Parallel()
	const table = "state_psql"
	env := sessionStateEnv(t, table)
	p := newPsql(t, env, "alice")
	insert := "INSERT INTO " + table + " VALUES (100, 'x')"
	res := p.run(nil, "-c", "PREPARE p AS "+insert, "-c", "PREPARE p AS SELECT 1", "-c", "EXECUTE p")
	if !strings.Contains(res.stderr, `custos: prepared statement "p" already exists`) || !strings.Contains(res.stderr, "approval required") ||
		strings.Contains(res.stdout, "INSERT 0 1") {
		t.Errorf("separate commands: %s", res)
	}
	res = p.run(nil, "-c", "PREPARE q AS "+insert+"; PREPARE q AS SELECT 1; EXECUTE q")
	if res.code == 0 || !strings.Contains(res.stderr, `custos: prepared statement "q" already exists`) || !strings.Contains(res.stderr, "decision dec_") {
		t.Errorf("one string: %s", res)
	}
	// DEALLOCATE in a string whose later statement fails took effect.
	res = p.run(nil, "-c", "PREPARE r AS "+insert, "-c", "DEALLOCATE r; SELECT 1/0", "-c", "PREPARE r AS SELECT 'r is new'", "-c", "EXECUTE r")
	if !strings.Contains(res.stdout, "r is new") {
		t.Errorf("deallocate in a failed string: %s", res)
	}
	if n := tableRows(t, env, table); n != 2 {
		t.Fatalf("table has %d rows", n)
	}
}
