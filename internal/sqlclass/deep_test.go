package sqlclass

import (
	"strings"
	"testing"
)

func TestDeepNesting(t *testing.T) {
	t.Parallel()
	c := New(0)
	for _, depth := range []int{100, 1000, 10000, 100000} {
		for _, q := range []string{
			"SELECT " + strings.Repeat("(", depth) + "pan" + strings.Repeat(")", depth) + " FROM cards",
			strings.Repeat("SELECT * FROM (", depth) + "SELECT pan FROM cards" + strings.Repeat(") s", depth),
			"SELECT " + strings.Repeat("lower(", depth) + "pan" + strings.Repeat(")", depth) + " FROM cards",
			"SELECT 1 WHERE " + strings.Repeat("a = 1 AND ", depth) + "true",
		} {
			res, err := c.Classify(q)
			if err != nil {
				continue // the parser's own depth limit: refused, which is fine
			}
			if len(res.Statements) != 1 {
				t.Fatalf("depth %d: %d statements", depth, len(res.Statements))
			}
		}
	}
}
