package sqlclass

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// deepShapes build statements whose parse tree grows with n, one per way PostgreSQL's grammar
// nests: left-deep operator chains, right-recursive prefixes, brackets, keywords.
var deepShapes = []struct {
	name  string
	build func(n int) string
}{
	{"binary operators", func(n int) string { return "SELECT " + strings.Repeat("1+", n) + "1" }},
	{"unary minus", func(n int) string { return "SELECT " + strings.Repeat("- ", n) + "1" }},
	{"not", func(n int) string { return "SELECT " + strings.Repeat("NOT ", n) + "true" }},
	{"parentheses", func(n int) string {
		return "SELECT " + strings.Repeat("(", n) + "pan" + strings.Repeat(")", n) + " FROM cards"
	}},
	{"subqueries", func(n int) string {
		return strings.Repeat("SELECT * FROM (", n) + "SELECT pan FROM cards" + strings.Repeat(") s", n)
	}},
	{"scalar subqueries", func(n int) string { return strings.Repeat("SELECT (", n) + "SELECT 1" + strings.Repeat(")", n) }},
	{"function calls", func(n int) string {
		return "SELECT " + strings.Repeat("lower(", n) + "pan" + strings.Repeat(")", n) + " FROM cards"
	}},
	{"case", func(n int) string {
		return "SELECT " + strings.Repeat("CASE WHEN true THEN ", n) + "1" + strings.Repeat(" END", n)
	}},
	{"case else", func(n int) string {
		return "SELECT " + strings.Repeat("CASE WHEN true THEN 1 ELSE ", n) + "1" + strings.Repeat(" END", n)
	}},
	{"casts", func(n int) string { return "SELECT 1" + strings.Repeat("::int", n) }},
	{"array casts", func(n int) string { return "SELECT 1" + strings.Repeat("::int[]", n) }},
	{"union", func(n int) string { return "SELECT 1" + strings.Repeat(" UNION SELECT 1", n) }},
	{"intersect", func(n int) string { return "SELECT 1" + strings.Repeat(" INTERSECT SELECT 1", n) }},
	{"union all with commas", func(n int) string { return "SELECT 1, 2" + strings.Repeat(" UNION ALL SELECT 1, 2", n) }},
	{"joins", func(n int) string { return "SELECT * FROM cards" + strings.Repeat(" JOIN cards c ON true", n) }},
	{"cross joins", func(n int) string { return "SELECT * FROM cards" + strings.Repeat(" CROSS JOIN cards", n) }},
	{"arrays", func(n int) string { return "SELECT ARRAY" + strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }},
	{"json operators", func(n int) string { return "SELECT a" + strings.Repeat("->'b'", n) + " FROM t" }},
	{"json paths", func(n int) string { return "SELECT a" + strings.Repeat("#>'{b}'", n) + " FROM t" }},
	{"is null", func(n int) string { return "SELECT 1" + strings.Repeat(" IS NULL", n) }},
	{"is not true", func(n int) string { return "SELECT true" + strings.Repeat(" IS NOT TRUE", n) }},
	{"collate", func(n int) string { return "SELECT 'a'" + strings.Repeat(` COLLATE "C"`, n) }},
	{"at time zone", func(n int) string { return "SELECT now()" + strings.Repeat(" AT TIME ZONE 'UTC'", n) }},
	{"concatenation", func(n int) string { return "SELECT 'a'" + strings.Repeat(" || 'a'", n) }},
	{"operator()", func(n int) string { return "SELECT 1" + strings.Repeat(" OPERATOR(pg_catalog.+) 1", n) }},
	{"and", func(n int) string { return "SELECT 1 WHERE " + strings.Repeat("true AND ", n) + "true" }},
	{"or", func(n int) string { return "SELECT 1 WHERE " + strings.Repeat("true OR ", n) + "true" }},
	{"row", func(n int) string { return "SELECT " + strings.Repeat("ROW(", n) + "1" + strings.Repeat(")", n) }},
	{"exists", func(n int) string {
		return "SELECT 1 WHERE " + strings.Repeat("EXISTS (SELECT 1 WHERE ", n) + "true" + strings.Repeat(")", n)
	}},
	{"parenthesized sums", func(n int) string { return "SELECT " + strings.Repeat("(1+", n) + "1" + strings.Repeat(")", n) }},
	{"parenthesized unions", func(n int) string { return strings.Repeat("(SELECT 1 UNION ", n) + "SELECT 1" + strings.Repeat(")", n) }},
	{"parenthesized joins", func(n int) string {
		return "SELECT * FROM " + strings.Repeat("(t JOIN ", n) + "t" + strings.Repeat(" ON true)", n)
	}},
	{"array subqueries", func(n int) string {
		return "SELECT " + strings.Repeat("ARRAY(SELECT ", n) + "1" + strings.Repeat(")", n)
	}},
	{"ctes", func(n int) string {
		return strings.Repeat("WITH a AS (", n) + "SELECT 1" + strings.Repeat(") SELECT * FROM a", n)
	}},
}

// classifyOrRefuse fails unless q classifies as one statement or is refused with an error.
func classifyOrRefuse(t *testing.T, c *Classifier, q string) error {
	t.Helper()
	res, err := c.Classify(q)
	if err != nil {
		if !errors.Is(err, ErrTooComplex) && !errors.Is(err, ErrSyntax) {
			t.Fatalf("error neither ErrTooComplex nor ErrSyntax: %v", err)
		}
		return err
	}
	if len(res.Statements) != 1 {
		t.Fatalf("%d statements", len(res.Statements))
	}
	return nil
}

// TestDeepShapes sends every shape at depths 10 to 1e6: each classifies or is refused, in
// this process: a statement that overflowed the parser's C stack would kill the test binary.
func TestDeepShapes(t *testing.T) {
	t.Parallel()
	c := New(-1)
	for _, sh := range deepShapes {
		t.Run(sh.name, func(t *testing.T) {
			for _, n := range []int{10, 100, 1000, 10000, 100000, 1000000} {
				err := classifyOrRefuse(t, c, sh.build(n))
				if n <= 10 && err != nil && !strings.Contains(sh.name, "case") {
					t.Errorf("depth %d refused: %v", n, err)
				}
				flat := sh.name == "and" || sh.name == "or" // PostgreSQL keeps AND/OR chains flat
				if n >= 10000 && !flat && !errors.Is(err, ErrTooComplex) {
					t.Errorf("depth %d: want ErrTooComplex, got %v", n, err)
				}
			}
		})
	}
}

// TestDeepShapesAtTheLimit classifies every shape at the deepest n the pre-scan lets through
// (and checks n+1 is refused): the bound holds where it is tightest.
func TestDeepShapesAtTheLimit(t *testing.T) {
	t.Parallel()
	c := New(-1)
	for _, sh := range deepShapes {
		t.Run(sh.name, func(t *testing.T) {
			lo, hi := 0, 1
			for checkLimits(sh.build(hi), DefaultMaxBytes, DefaultMaxDepth) == nil {
				lo, hi = hi, hi*2
			}
			for hi-lo > 1 {
				mid := (lo + hi) / 2
				if checkLimits(sh.build(mid), DefaultMaxBytes, DefaultMaxDepth) == nil {
					lo = mid
				} else {
					hi = mid
				}
			}
			t.Logf("deepest accepted: %d", lo)
			if lo < 1 {
				t.Fatalf("depth 1 refused")
			}
			_ = classifyOrRefuse(t, c, sh.build(lo))
			if _, err := c.Classify(sh.build(hi)); !errors.Is(err, ErrTooComplex) {
				t.Fatalf("depth %d: want ErrTooComplex, got %v", hi, err)
			}
		})
	}
}

// TestLargeFlatStatements: long flat lists are not deep and still classify.
func TestLargeFlatStatements(t *testing.T) {
	t.Parallel()
	c := New(0)
	var b strings.Builder
	b.WriteString("INSERT INTO cards (id, holder, pan) VALUES ")
	for i := 0; b.Len() < 1<<20; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(%d, 'holder %d', '4111111111111111')", i, i)
	}
	in := "SELECT 1 FROM cards WHERE id IN (" + strings.Repeat("1, ", 50000) + "1)"
	ors := "SELECT 1 FROM cards WHERE " + strings.Repeat("id = 1 OR ", 20000) + "id = 2"
	for name, q := range map[string]string{"1 MB insert": b.String(), "in list": in, "or chain": ors} {
		res, err := c.Classify(q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(res.Statements) != 1 {
			t.Fatalf("%s: %d statements", name, len(res.Statements))
		}
	}
}

func TestSizeLimit(t *testing.T) {
	t.Parallel()
	c := New(0, WithMaxBytes(100), WithMaxDepth(5))
	_, err := c.Classify("SELECT " + strings.Repeat("1, ", 40) + "1")
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "size" || le.Max != 100 || !errors.Is(err, ErrTooComplex) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.Classify("SELECT 1+1+1+1+1+1+1"); !errors.As(err, &le) || le.Limit != "depth" || le.Max != 5 {
		t.Fatalf("got %v", err)
	}
	if _, err := c.Classify("SELECT 1+1+1"); err != nil {
		t.Fatal(err)
	}
}
