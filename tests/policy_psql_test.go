package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// TestPolicyCorpusWithPsql sends the statement corpus of the default
// policy through psql, the way an agent types it, and checks the database
// afterwards: nothing refused has run, everything allowed has.
func TestPolicyCorpusWithPsql(t *testing.T) {
	t.Parallel()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t)})
	const table = "psql_policy"
	superExec(t, env, fmt.Sprintf(`CREATE TABLE %[1]s (id int PRIMARY KEY, v text);
		INSERT INTO %[1]s VALUES (1, 'one'), (2, 'two');
		GRANT ALL ON %[1]s TO %[2]s;
		CREATE OR REPLACE PROCEDURE psql_policy_wipe() LANGUAGE sql AS 'DELETE FROM %[1]s';
		GRANT EXECUTE ON PROCEDURE psql_policy_wipe() TO %[2]s`, table, env.Resource.User))
	p := newPsql(t, env, "alice")
	ctx := context.Background()
	dc, err := pgx.Connect(ctx, env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	seq := func() (last int64, called bool) {
		if err := dc.QueryRow(ctx, "SELECT last_value, is_called FROM cards_id_seq").Scan(&last, &called); err != nil {
			t.Fatal(err)
		}
		return last, called
	}
	seqLast, seqCalled := seq()

	refused := []struct{ name, sql, reason string }{
		{"delete", "DELETE FROM " + table, "approval required from dba"},
		{"insert", "INSERT INTO " + table + " VALUES (9, 'x')", "approval required"},
		{"update", "update " + table + " set v = 'x'", "approval required"},
		{"data-modifying CTE", "WITH d AS (DELETE FROM " + table + " RETURNING *) SELECT count(*) FROM d", "approval required"},
		{"select into", "SELECT * INTO psql_policy_copy FROM " + table, ""},
		{"for update", "SELECT * FROM " + table + " FOR UPDATE", "approval required"},
		{"setval", "SELECT setval('cards_id_seq', 1000)", ""},
		{"nextval", "SELECT nextval('cards_id_seq')", ""},
		{"copy program", "COPY " + table + " TO PROGRAM 'cat'", ""},
		{"copy file", "COPY " + table + " TO '/tmp/psql_policy_leak.csv'", ""},
		{"do", "DO $$ BEGIN DELETE FROM " + table + "; END $$", ""},
		{"call", "CALL psql_policy_wipe()", ""},
		{"explain analyze write", "EXPLAIN ANALYZE DELETE FROM " + table, "approval required"},
		{"prepare and execute write", "PREPARE w AS DELETE FROM " + table + "; EXECUTE w", "approval required"},
		{"write after a read", "SELECT 1; DELETE FROM " + table, "approval required"},
		{"comments and case", "/* harmless */ dElEtE -- really\n FROM \"" + table + "\"", "approval required"},
		{"schema qualified", "DELETE FROM public." + table, "approval required"},
		{"set role", "SET ROLE postgres", ""},
		{"session authorization", "SET SESSION AUTHORIZATION postgres", ""},
		{"read only off", "SET default_transaction_read_only = off", ""},
		{"truncate", "TRUNCATE " + table, "approval required"},
		{"merge", "MERGE INTO " + table + " t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE", "approval required"},
		{"on conflict", "INSERT INTO " + table + " VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = 'y'", "approval required"},
		{"ddl", "CREATE TABLE psql_policy_new (x int)", "DDL"},
		{"grant", "GRANT ALL ON " + table + " TO PUBLIC", ""},
		{"admin function", "SELECT pg_terminate_backend(1)", ""},
		{"read file", "SELECT pg_read_file('/etc/passwd')", ""},
	}
	for _, r := range refused {
		t.Run("refused/"+r.name, func(t *testing.T) {
			res := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", r.sql)
			if res.code == 0 || !strings.Contains(res.stderr, "decision dec_") || !strings.Contains(res.stderr, r.reason) {
				t.Errorf("psql -c %q: want a refusal with a decision id (and %q): %s", r.sql, r.reason, res)
			}
		})
	}
	t.Run("refused/copy from stdin", func(t *testing.T) {
		res := p.run([]byte("7\tseven\n"), "-v", "ON_ERROR_STOP=1", "-c", `\copy `+table+` FROM STDIN`)
		if res.code == 0 || !strings.Contains(res.stderr, "approval required") {
			t.Errorf("\\copy from stdin: %s", res)
		}
	})

	allowed := []struct{ name, sql, want string }{
		{"select", "SELECT v FROM " + table + " WHERE id = 1", "one"},
		{"cte read", "WITH x AS (SELECT v FROM " + table + ") SELECT count(*) FROM x", "2"},
		{"join", "SELECT count(*) FROM " + table + " a JOIN public." + table + " b USING (id)", "2"},
		{"explain", "EXPLAIN (COSTS OFF) SELECT * FROM " + table, "Seq Scan"},
		{"masked pan", "SELECT pan FROM cards WHERE id = 1", "************4242"},
		{"transaction", "BEGIN; SELECT count(*) FROM " + table + "; COMMIT", "2"},
		{"copy to stdout", `\copy (SELECT id FROM ` + table + ` ORDER BY id) TO STDOUT`, "1\n2"},
	}
	for _, a := range allowed {
		t.Run("allowed/"+a.name, func(t *testing.T) {
			if out := p.ok("-c", a.sql); !strings.Contains(out, a.want) {
				t.Errorf("psql -c %q = %q, want %q in it", a.sql, out, a.want)
			}
		})
	}

	// The database shows that nothing refused ran.
	var rows int
	var values string
	if err := dc.QueryRow(ctx, "SELECT count(*), string_agg(v, ',' ORDER BY id) FROM "+table).Scan(&rows, &values); err != nil || rows != 2 || values != "one,two" {
		t.Errorf("table after refused writes: %d rows %q, %v", rows, values, err)
	}
	if last, called := seq(); last != seqLast || called != seqCalled {
		t.Errorf("cards_id_seq moved: %d/%v, was %d/%v", last, called, seqLast, seqCalled)
	}
	var created bool
	if err := dc.QueryRow(ctx, "SELECT to_regclass('psql_policy_copy') IS NOT NULL OR to_regclass('psql_policy_new') IS NOT NULL").Scan(&created); err != nil || created {
		t.Errorf("a refused statement created a table: %v %v", created, err)
	}
	var grants int
	if err := dc.QueryRow(ctx, "SELECT count(*) FROM information_schema.role_table_grants WHERE table_name = $1 AND grantee = 'PUBLIC'", table).Scan(&grants); err != nil || grants != 0 {
		t.Errorf("a refused GRANT ran: %d %v", grants, err)
	}
}
