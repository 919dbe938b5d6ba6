package tests

// End-to-end tests of the paths by which sensitive authentication data and
// full card numbers could leave the demo database without the column rules
// seeing them: set operations, scalar subqueries, VALUES, whole rows,
// expressions (they give a result column no table origin, which is what the
// masker's CVV rule keys on), and inference by comparing, ordering and
// grouping. Every assertion is on what PostgreSQL reports and on the bytes
// the clients received.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/sqlclass"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// demoCVVs are the CVVs of the demo cards (internal/devenv).
var demoCVVs = []string{"123", "456", "7890", "321", "654", "987", "246", "135"}

// originCorpus are queries on the demo cards; origin says whether PostgreSQL
// reports cards.cvv as the origin of the result column holding the CVV (the
// facts the classifier's "output" usage relies on).
var originCorpus = []struct {
	q      string
	origin bool
}{
	{"SELECT cvv FROM cards", true},
	{"SELECT cvv AS x FROM cards", true},
	{"SELECT c.cvv AS x FROM cards c", true},
	{"SELECT x FROM (SELECT cvv AS x FROM cards) s", true},
	{"SELECT * FROM (SELECT * FROM cards) s", true},
	{"WITH c AS (SELECT cvv AS x FROM cards) SELECT x FROM c", true},
	{"WITH c AS (SELECT * FROM cards) SELECT * FROM c", true},
	{"WITH RECURSIVE c AS (SELECT cvv FROM cards) SELECT cvv AS y FROM c", true},
	{"SELECT x FROM cards c, LATERAL (SELECT c.cvv AS x) l", true},
	{"SELECT j.cvv FROM (cards JOIN customers ON customers.card_id = cards.id) j", true},
	{"SELECT cvv FROM cards JOIN customers ON customers.card_id = cards.id", true},
	{"SELECT (c).cvv FROM cards c", true},
	{"SELECT cvv FROM cards ORDER BY 1", true},
	{"SELECT cvv FROM cards GROUP BY cvv", true},
	{"SELECT DISTINCT cvv FROM cards", true},
	{"SELECT cvv FROM cards UNION ALL SELECT NULL", false},
	{"SELECT cvv FROM cards UNION ALL SELECT cvv FROM cards", false},
	{"SELECT x FROM (SELECT cvv AS x FROM cards INTERSECT SELECT cvv FROM cards) s", false},
	{"WITH RECURSIVE r(x) AS (SELECT cvv FROM cards UNION SELECT x FROM r) SELECT x FROM r", false},
	{"SELECT (SELECT cvv FROM cards LIMIT 1) AS x", false},
	{"SELECT v.x FROM cards c, LATERAL (VALUES (c.cvv)) v(x)", false},
	{"SELECT cvv FROM cards c FULL JOIN cards d USING (cvv)", false},
	{"SELECT cvv || '' AS x FROM cards", false},
	{"SELECT COALESCE(cvv, '') AS x FROM cards", false},
	{"SELECT CASE WHEN true THEN cvv END AS x FROM cards", false},
	{"SELECT format('%s', cvv) AS x FROM cards", false},
	{"SELECT max(cvv) AS x FROM cards", false},
	{"SELECT x FROM cards c, unnest(ARRAY[c.cvv]) x", false},
	{"SELECT first_value(cvv) OVER () AS x FROM cards", false},
}

// TestClassifierOutputHasOrigin runs the corpus on the real server and
// checks, for every column of cards that sqlclass calls output and nothing
// else, that RowDescription reports that column's table OID and attribute
// number: where sqlclass says output, the masker's column rules apply. It
// also confirms which paths lose the origin.
func TestClassifierOutputHasOrigin(t *testing.T) {
	t.Parallel()
	cl, _ := pgfiltertest.Upstream(t)
	ctx := testCtx(t)
	c, err := pgx.Connect(ctx, cl.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var cardsOID uint32
	if err := c.QueryRow(ctx, "SELECT 'public.cards'::regclass::oid").Scan(&cardsOID); err != nil {
		t.Fatal(err)
	}
	attnums := map[string]uint16{}
	rows, err := c.Query(ctx, "SELECT attname, attnum FROM pg_attribute WHERE attrelid = 'public.cards'::regclass AND attnum > 0 AND NOT attisdropped")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var num int16
		if err := rows.Scan(&name, &num); err != nil {
			t.Fatal(err)
		}
		attnums[name] = uint16(num)
	}
	if rows.Err() != nil || len(attnums) == 0 {
		t.Fatalf("cards columns: %v %v", attnums, rows.Err())
	}
	classifier := sqlclass.New(0)
	for _, tc := range originCorpus {
		res, err := c.PgConn().Exec(ctx, tc.q).ReadAll()
		if err != nil || len(res) != 1 || res[0].Err != nil {
			t.Fatalf("%s: %v %v", tc.q, err, res)
		}
		fields := res[0].FieldDescriptions
		reported := func(col string) bool {
			return slices.ContainsFunc(fields, func(f pgconn.FieldDescription) bool {
				return f.TableOID == cardsOID && f.TableAttributeNumber == attnums[col]
			})
		}
		if got := reported("cvv"); got != tc.origin {
			t.Errorf("%s: PostgreSQL reports cards.cvv as an origin: %v, want %v", tc.q, got, tc.origin)
		}
		cr, err := classifier.Classify(tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.q, err)
		}
		cvvOutputOnly := false
		for _, cu := range cr.Statements[0].Columns {
			if cu.Table != "public.cards" || !slices.Equal(cu.Usage, []string{sqlclass.UseOutput}) {
				continue
			}
			cols := []string{cu.Column}
			if cu.Column == "*" {
				cols = cols[:0]
				for name := range attnums {
					cols = append(cols, name)
				}
			}
			for _, col := range cols {
				if col == "cvv" {
					cvvOutputOnly = true
				}
				if !reported(col) {
					t.Errorf("%s: sqlclass says cards.%s is output only, but RowDescription reports no such origin (%v)", tc.q, col, fields)
				}
			}
		}
		if !tc.origin && cvvOutputOnly {
			t.Errorf("%s: sqlclass calls the CVV output where PostgreSQL reports no origin", tc.q)
		}
	}
}

// sadLeaks are queries that would show a CVV or reveal a full PAN without
// column rules; each is refused for agents, or its CVV comes back NULL.
var sadLeaks = []struct {
	name, q string
	allowed bool // runs, with the CVV nulled by the masker
}{
	{"union all", "SELECT cvv FROM cards UNION ALL SELECT NULL", false},
	{"union aliased", "SELECT x FROM (SELECT cvv AS x FROM cards UNION SELECT 'a') s", false},
	{"scalar subquery", "SELECT (SELECT cvv FROM cards LIMIT 1) AS x", false},
	{"recursive cte", "WITH RECURSIVE r(x) AS (SELECT cvv FROM cards UNION SELECT x FROM r) SELECT x AS y FROM r", false},
	{"values join", "SELECT v.x FROM cards c, LATERAL (VALUES (c.cvv)) v(x)", false},
	{"row constructor", "SELECT ROW(cvv) AS r FROM cards", false},
	{"whole row of a subquery", "SELECT s FROM (SELECT cvv FROM cards) s", false},
	{"array_agg", "SELECT array_agg(cvv) AS a FROM cards", false},
	{"json_agg", "SELECT json_agg(cvv) AS a FROM cards", false},
	{"string_agg", "SELECT string_agg(cvv, ',') AS a FROM cards", false},
	{"format", "SELECT format('%s', cvv) AS a FROM cards", false},
	{"concatenation", "SELECT cvv || '' AS a FROM cards", false},
	{"case", "SELECT CASE WHEN true THEN cvv END AS a FROM cards", false},
	{"coalesce", "SELECT COALESCE(cvv, '') AS a FROM cards", false},
	{"merged using column", "SELECT cvv AS y FROM cards c FULL JOIN cards d USING (cvv)", false},
	{"alias", "SELECT cvv AS x FROM cards", true},
	{"subquery in from", "SELECT x FROM (SELECT cvv AS x FROM cards) s", true},
	{"cte", "WITH c AS (SELECT cvv AS x FROM cards) SELECT x FROM c", true},
	{"lateral subquery", "SELECT x FROM cards c, LATERAL (SELECT c.cvv AS x) l", true},
	// Inference: the PAN is compared, ordered or grouped, never selected.
	{"search clause", "WITH RECURSIVE r(p, n) AS (SELECT pan, 1 FROM cards UNION ALL SELECT p, n + 1 FROM r WHERE n < 1) SEARCH DEPTH FIRST BY p SET ord SELECT n FROM r ORDER BY ord", false},
	{"exists intersect probe", "SELECT EXISTS (SELECT pan FROM cards INTERSECT SELECT '4242424242424242')", false},
	{"in subquery", "SELECT 1 WHERE '4242424242424242' IN (SELECT pan FROM cards)", false},
	{"order by", "SELECT id FROM cards ORDER BY pan", false},
	{"window", "SELECT id, rank() OVER (ORDER BY pan) FROM cards", false},
	{"distinct", "SELECT DISTINCT pan FROM cards", false},
	{"rollup", "SELECT count(*) FROM cards GROUP BY ROLLUP (pan)", false},
	{"aggregate order", "SELECT string_agg(id::text, ',' ORDER BY pan) FROM cards", false},
	{"limit expression", "SELECT id FROM cards LIMIT (SELECT ascii(substr(pan, 7, 1)) FROM cards LIMIT 1)", false},
	{"join using", "SELECT c.id FROM cards c JOIN cards d USING (pan)", false},
	{"natural join", "SELECT id FROM cards NATURAL JOIN (SELECT id, pan FROM cards) d", false},
	{"any", "SELECT id FROM cards WHERE pan = ANY (ARRAY['4242424242424242'])", false},
	{"row comparison", "SELECT id FROM cards WHERE (pan, id) > ('4242424242424241', 0)", false},
}

// sadEnv is a masking custos with the default policy, without TLS so that
// the clients' recordings are the cleartext protocol.
func sadEnv(t *testing.T) *pgfiltertest.Env {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t), NoTLS: true})
}

// dataRowValues returns the values of every DataRow in a recording of
// backend messages (what a client read after its startup packet).
func dataRowValues(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) >= 5 {
		typ := b[0]
		l := int(binary.BigEndian.Uint32(b[1:5]))
		if l < 4 || len(b) < 1+l {
			t.Fatalf("recording: truncated message %q", typ)
		}
		body := b[5 : 1+l]
		b = b[1+l:]
		if typ != 'D' || len(body) < 2 {
			continue
		}
		n := int(binary.BigEndian.Uint16(body))
		body = body[2:]
		for range n {
			vl := int(int32(binary.BigEndian.Uint32(body)))
			body = body[4:]
			if vl < 0 {
				continue
			}
			out = append(out, bytes.Clone(body[:vl]))
			body = body[vl:]
		}
	}
	return out
}

// noCVV fails when a value holds one of the demo CVVs.
func noCVV(t *testing.T, where string, values [][]byte) {
	t.Helper()
	for _, v := range values {
		for _, cvv := range demoCVVs {
			if bytes.Contains(v, []byte(cvv)) {
				t.Errorf("%s: a CVV reached the client: %q", where, v)
			}
		}
	}
}

// TestSADPathsPgx sends every leak query through custos with pgx, in the
// extended and the simple protocol: each is refused with a decision id (the
// session goes on) or its CVV is NULL, and no CVV nor full PAN is in what
// the client read.
func TestSADPathsPgx(t *testing.T) {
	t.Parallel()
	env := sadEnv(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		c, log := connectRecorded(t, env, "alice")
		ctx := testCtx(t)
		for _, l := range sadLeaks {
			rows, err := c.Query(ctx, l.q, mode)
			var values [][]any
			if err == nil {
				for rows.Next() {
					v, verr := rows.Values()
					if verr != nil {
						t.Fatalf("%s: %v", l.q, verr)
					}
					values = append(values, v)
				}
				err = rows.Err()
			}
			var pe *pgconn.PgError
			switch {
			case l.allowed && err != nil:
				t.Errorf("mode %v, %s: %v, want it to run", mode, l.name, err)
			case l.allowed:
				for _, row := range values {
					if row[0] != nil {
						t.Errorf("mode %v, %s: CVV column = %v, want NULL", mode, l.name, row[0])
					}
				}
			case err == nil:
				t.Errorf("mode %v, %s: ran (%d rows), want a refusal", mode, l.name, len(values))
			case !errors.As(err, &pe) || !strings.Contains(pe.Message+pe.Detail, "dec_"):
				t.Errorf("mode %v, %s: %v, want a refusal with a decision id", mode, l.name, err)
			}
		}
		// A card looked up by its number as a bound parameter is refused too by
		// default (cardholder_column_grants can allow filter_eq_param).
		var id int
		err := c.QueryRow(ctx, "SELECT id FROM cards WHERE pan = $1", "4242424242424242").Scan(&id)
		if err == nil || !strings.Contains(err.Error(), "filter_eq_param") {
			t.Errorf("mode %v, pan = $1: %v, want a refusal naming filter_eq_param", mode, err)
		}
		// The session survived every refusal.
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM cards").Scan(&n); err != nil || n == 0 {
			t.Fatalf("mode %v: session after the refusals: %d %v", mode, n, err)
		}
		noCVV(t, fmt.Sprintf("pgx mode %v", mode), dataRowValues(t, log.bytes()))
	}
}

// TestSADPathsPsql sends the leak queries as an agent types them into psql.
func TestSADPathsPsql(t *testing.T) {
	t.Parallel()
	env := sadEnv(t)
	p := &psqlClient{
		t:     t,
		bin:   pgProgram(t, env, "psql"),
		conn:  fmt.Sprintf("host=%s port=%s dbname=%s user=alice sslmode=disable application_name=custos-e2e-psql", env.Host, env.Port, pgfiltertest.Database),
		token: env.Token(t, "alice", "agents"),
	}
	for _, l := range sadLeaks {
		res := p.run(nil, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", l.q)
		noPANString(t, l.name, res.stdout+res.stderr)
		noCVV(t, l.name, [][]byte{[]byte(res.stdout)})
		switch {
		case l.allowed && res.code != 0:
			t.Errorf("%s: %s, want it to run", l.name, res)
		case l.allowed && strings.TrimSpace(strings.ReplaceAll(res.stdout, "\n", "")) != "":
			t.Errorf("%s: printed %q, want only NULLs (empty lines)", l.name, res.stdout)
		case !l.allowed && (res.code == 0 || !strings.Contains(res.stderr, "decision dec_")):
			t.Errorf("%s: %s, want a refusal with a decision id", l.name, res)
		}
	}
	// \copy of a leak query is decided the same way.
	res := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", `\copy (SELECT cvv FROM cards UNION ALL SELECT NULL) TO STDOUT`)
	noCVV(t, `\copy`, [][]byte{[]byte(res.stdout)})
	if res.code == 0 || !strings.Contains(res.stderr, "decision dec_") {
		t.Errorf(`\copy of a set operation: %s, want a refusal`, res)
	}
}
