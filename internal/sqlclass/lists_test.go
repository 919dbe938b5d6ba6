package sqlclass

import (
	"errors"
	"strings"
	"testing"
)

// TestListBound: SELECT, RETURNING and GROUP BY lists are bounded at PostgreSQL's own limit
// on a target list, whatever words appear inside them; other lists (VALUES rows, IN lists,
// function arguments, arrays) are not.
func TestListBound(t *testing.T) {
	t.Parallel()
	c := New(-1)
	items := func(n int, item string) string { return strings.Repeat(item+", ", n-1) + item }
	refused := map[string]string{
		"select list":              "SELECT " + items(MaxListItems+1, "1"),
		"select columns":           "SELECT " + items(MaxListItems+1, "a") + " FROM t",
		"returning":                "DELETE FROM t RETURNING " + items(MaxListItems+1, "a"),
		"group by":                 "SELECT 1 FROM t GROUP BY " + items(MaxListItems+1, "a"),
		"in a subquery":            "SELECT * FROM (SELECT " + items(MaxListItems+1, "1") + ") s",
		"after a label from":       "SELECT 1 AS from, " + items(MaxListItems, "1"),
		"after is distinct from":   "SELECT 1 IS DISTINCT FROM 2, " + items(MaxListItems, "1"),
		"after a qualified limit":  "SELECT t.limit, " + items(MaxListItems, "1") + " FROM t",
		"distinct on":              "SELECT DISTINCT ON (1) " + items(MaxListItems+1, "1"),
		"second statement":         "SELECT 1; SELECT " + items(MaxListItems+1, "1"),
		"the 200 KB of the report": "SELECT " + items(100000, "1"),
	}
	for name, q := range refused {
		_, err := c.Classify(q)
		var le *LimitError
		if !errors.As(err, &le) || le.Limit != "list" || !errors.Is(err, ErrTooComplex) {
			t.Errorf("%s: %v, want the list bound", name, err)
		}
	}
	passed := map[string]string{
		"select list at the bound":  "SELECT " + items(MaxListItems, "1"),
		"values rows":               "INSERT INTO t VALUES " + items(20000, "(1, 'a')"),
		"values after select":       "INSERT INTO t SELECT * FROM (VALUES " + items(20000, "(1)") + ") v",
		"in list":                   "SELECT 1 FROM t WHERE a IN (" + items(20000, "1") + ")",
		"function arguments":        "SELECT coalesce(" + items(20000, "1") + ")",
		"array":                     "SELECT ARRAY[" + items(20000, "1") + "]",
		"statements each below":     strings.Repeat("SELECT "+items(MaxListItems, "1")+"; ", 3),
		"commas in strings":         "SELECT '" + strings.Repeat(",", 5000) + "', \"" + strings.Repeat(",", 5000) + "\"",
		"commas in comments":        "SELECT 1 /* " + strings.Repeat(",", 5000) + " */ -- " + strings.Repeat(",", 5000),
		"commas in dollar quotes":   "SELECT $x$" + strings.Repeat(",", 5000) + "$x$",
		"update set list":           "UPDATE t SET " + items(1000, "a = 1"),
		"insert column list":        "INSERT INTO t (" + items(1500, "a") + ") VALUES (1)",
		"cte commas before select":  "WITH " + items(100, "a AS (SELECT 1)") + " SELECT 1",
		"select words in a comment": "/* select */ VALUES " + items(5000, "(1)"),
	}
	for name, q := range passed {
		if err := checkLimits(q, DefaultMaxBytes, DefaultMaxDepth); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestTokenBound: a text of more than MaxTokens tokens is refused before the parser; a 1 MB
// multi-row INSERT of ordinary rows is far below it.
func TestTokenBound(t *testing.T) {
	t.Parallel()
	c := New(-1)
	dense := "SELECT 1 FROM t WHERE a IN (" + strings.Repeat("1,", MaxTokens/2+1) + "1)"
	_, err := c.Classify(dense)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "tokens" || !strings.Contains(err.Error(), "COPY") {
		t.Errorf("%d-byte IN list: %v, want the token bound", len(dense), err)
	}
	row := "(12345, 'a card holder name', 2.5, now()), "
	insert := "INSERT INTO t VALUES " + strings.Repeat(row, (1<<20)/len(row)) + "(1, 'x', 2.5, now())"
	if err := checkLimits(insert, DefaultMaxBytes, DefaultMaxDepth); err != nil {
		t.Errorf("a 1 MB INSERT: %v", err)
	}
}
