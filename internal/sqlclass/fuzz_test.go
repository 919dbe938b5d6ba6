package sqlclass

import (
	"encoding/json"
	"slices"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

func FuzzClassify(f *testing.F) {
	for _, tt := range cases {
		f.Add(tt.q)
	}
	for _, q := range []string{
		"", ";", "SELECT 1 /* 4242 */ -- x\n;", "SELECT $$a$$, $t$b$t$, E'\\'', U&'\\0041', B'1', X'f'",
		"WITH RECURSIVE a AS (SELECT 1 UNION SELECT * FROM a) SELECT * FROM a",
		"SELECT (c).pan, (c).*, c FROM cards c", "SELECT * FROM (cards c JOIN t USING (id)) AS j",
		"SELECT * FROM ROWS FROM (generate_series(1, 2), unnest(ARRAY[1])) AS x(a, b)",
		"SELECT * FROM XMLTABLE('/r' PASSING '<r/>' COLUMNS a int PATH 'a') x",
		"SELECT * FROM JSON_TABLE('[]', '$[*]' COLUMNS (a int PATH '$.a')) j",
		"CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM cards",
		"CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END",
	} {
		f.Add(q)
	}
	c := New(64)
	f.Fuzz(func(t *testing.T, q string) {
		res, err := c.Classify(q)
		if err != nil {
			return
		}
		if _, err := json.Marshal(res); err != nil {
			t.Fatalf("marshal: %v", err)
		}
		for _, st := range res.Statements {
			for _, xs := range [][]string{st.Reads, st.Writes, st.Functions, st.Flags, st.Settings} {
				if xs == nil || !slices.IsSorted(xs) {
					t.Fatalf("nil or unsorted %q", xs)
				}
			}
			if st.Command == "" {
				t.Fatalf("no command for %q", q)
			}
		}
		for _, n := range append([]string{res.Normalized}, normalizedTexts(res)...) {
			if n == redacted {
				continue
			}
			scan, err := pg_query.Scan(n)
			if err != nil {
				continue
			}
			for _, tok := range scan.Tokens {
				switch tok.Token {
				case pg_query.Token_SCONST, pg_query.Token_USCONST, pg_query.Token_BCONST, pg_query.Token_XCONST,
					pg_query.Token_ICONST, pg_query.Token_FCONST, pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
					t.Fatalf("normalized %q of %q keeps %s %q", n, q, tok.Token, n[tok.Start:tok.End])
				}
			}
		}
	})
}

func normalizedTexts(res *Result) []string {
	var out []string
	for _, st := range res.Statements {
		out = append(out, st.Normalized)
	}
	return out
}
