package sqlclass

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
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

// FuzzDeepStatements builds a statement from a fuzzed prefix and suffix repeated up to 50,000
// times around a fuzzed core: whatever the shape, Classify answers it or refuses it as too
// complex (or as a syntax error), and never takes the process down with it.
func FuzzDeepStatements(f *testing.F) {
	for _, s := range deepShapes {
		q := s.build(3)
		f.Add("SELECT ", "", "1", uint16(3), q)
	}
	for _, seed := range []struct{ pre, suf, core string }{
		{"(", ")", "1"}, {"1+", "", "1"}, {"- ", "", "1"}, {"NOT ", "", "true"}, {"ARRAY[", "]", "1"},
		{"SELECT * FROM (", ") s", "SELECT 1"}, {"'{}'::jsonb->'", "'", "b"}, {"lower(", ")", "'x'"},
		{"CASE WHEN true THEN ", " END", "1"}, {"ROW(", ")", "1"}, {"1,", "", "1"}, {"(1),", "", "(1)"},
		{"$$", "$$", "x"}, {"/*", "*/", "1"}, {"'", "'", "("}, {"\"", "\"", ")"},
	} {
		f.Add("SELECT ", seed.suf, seed.core, uint16(1000), seed.pre)
	}
	c := New(-1)
	f.Fuzz(func(t *testing.T, head, suffix, core string, n uint16, prefix string) {
		reps := int(n) % 50001
		if len(head)+len(core)+reps*(len(prefix)+len(suffix)) > DefaultMaxBytes+1<<10 {
			return // over the size bound: refused unread
		}
		q := head + strings.Repeat(prefix, reps) + core + strings.Repeat(suffix, reps)
		_, err := c.Classify(q)
		if err != nil && !errors.Is(err, ErrTooComplex) && !errors.Is(err, ErrSyntax) {
			t.Fatalf("%d×%q…%q: %v, want a result, ErrTooComplex or ErrSyntax", reps, prefix, suffix, err)
		}
	})
}

// FuzzPreScan: the pre-scan never panics, reports a depth within its limit when it accepts,
// and refuses a text at a lower limit whenever it refuses it at a higher one.
func FuzzPreScan(f *testing.F) {
	for _, tt := range cases {
		f.Add(tt.q, uint16(10))
	}
	for _, s := range deepShapes {
		f.Add(s.build(50), uint16(20))
	}
	f.Fuzz(func(t *testing.T, q string, limit uint16) {
		lim := int(limit)%2000 + 1
		sc := scanQuery(q, lim, MaxListItems, MaxTokens)
		if !sc.depthOver && sc.depth > lim {
			t.Fatalf("accepted at depth %d over the limit %d", sc.depth, lim)
		}
		if sc.depthOver && lim > 1 && !scanQuery(q, lim-1, MaxListItems, MaxTokens).depthOver {
			t.Fatalf("refused at %d but accepted at %d", lim, lim-1)
		}
	})
}
