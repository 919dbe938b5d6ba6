package sqlclass

import (
	"errors"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// TestPreScanLexical: brackets, operators and keywords inside strings, quoted identifiers,
// dollar quotes and comments do not count toward the depth; the same outside do. For each
// text, PostgreSQL's own scanner confirms where the brackets are.
func TestPreScanLexical(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("(", 5000) + strings.Repeat("1+", 5000) + strings.Repeat("CASE ", 500)
	for name, q := range map[string]string{
		"string":              "SELECT '" + deep + "'",
		"doubled quotes":      "SELECT 'it''s " + deep + "'",
		"escape string":       "SELECT E'\\'" + deep + "\\\\'",
		"bit and hex strings": "SELECT B'" + deep + "', X'" + deep + "'",
		"unicode string":      "SELECT U&'" + deep + "'",
		"quoted identifier":   `SELECT 1 AS "` + deep + `"`,
		"dollar quotes":       "SELECT $$" + deep + "$$",
		"tagged dollar":       "SELECT $body$ $$ " + deep + " $$ $body$",
		"line comment":        "SELECT 1 -- " + deep + "\n",
		"block comment":       "SELECT 1 /* " + deep + " */",
		"nested comment":      "SELECT 1 /* /* */ " + deep + " */",
	} {
		if err := checkLimits(q, DefaultMaxBytes, DefaultMaxDepth); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if n := scannedBrackets(t, q); n != 0 {
			t.Errorf("%s: PostgreSQL's scanner finds %d brackets outside the literal", name, n)
		}
	}
	// Outside a literal, the same refused; a backslash in a standard string ends nothing.
	for name, q := range map[string]string{
		"bare":                     "SELECT " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"after a standard string":  "SELECT 'a\\', " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"after an escape string":   "SELECT E'a\\'b', " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"after a closed comment":   "SELECT /* a */ " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"after a dollar tag close": "SELECT $a$ x $a$, " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
	} {
		var le *LimitError
		if err := checkLimits(q, DefaultMaxBytes, DefaultMaxDepth); !errors.As(err, &le) || le.Limit != "depth" {
			t.Errorf("%s: %v, want the depth bound", name, err)
		}
		if n := scannedBrackets(t, q); n != 5000 {
			t.Errorf("%s: PostgreSQL's scanner finds %d opening brackets, want 5000", name, n)
		}
	}
	// The bound itself: just under passes, just over is refused.
	at := func(n int) string { return "SELECT " + strings.Repeat("(", n) + "1" + strings.Repeat(")", n) }
	under, over := 0, 0
	for n := 1; n < 2*DefaultMaxDepth; n++ {
		if checkLimits(at(n), DefaultMaxBytes, DefaultMaxDepth) == nil {
			under = n
		} else if over == 0 {
			over = n
		}
	}
	if under == 0 || over != under+1 || over > DefaultMaxDepth+1 {
		t.Errorf("parentheses: deepest accepted %d, first refused %d (limit %d)", under, over, DefaultMaxDepth)
	}
	if _, err := New(-1).Classify(at(under)); err != nil {
		t.Errorf("the deepest accepted text does not classify: %v", err)
	}
}

// scannedBrackets counts the opening brackets PostgreSQL's scanner sees as tokens.
func scannedBrackets(t *testing.T, q string) int {
	t.Helper()
	res, err := pg_query.Scan(q)
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	n := 0
	for _, tok := range res.Tokens {
		if s := q[tok.Start:tok.End]; s == "(" || s == "[" {
			n++
		}
	}
	return n
}
