package sqlclass

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// redacted stands for a text that could not be normalized safely.
const redacted = "<unnormalizable>"

// normalize returns query with constants replaced by $n and comments removed.
//
// pg_query's Normalize replaces the constants the parse tree records, which leaves literals in
// some utility statements (COPY ... TO 'file', COMMENT ... IS '...', SET ... DEFAULT '...') and
// keeps comments, which may hold anything. Its output is therefore scanned again: every
// remaining string, bit-string or numeric constant becomes a further $n and every comment
// becomes a space. Nothing the scanner calls a constant or a comment survives.
func normalize(query string) string {
	norm, err := pg_query.Normalize(query)
	if err != nil {
		norm = query
	}
	out, ok := scrub(norm)
	if !ok {
		return redacted
	}
	return out
}

// scrub replaces the constants and comments that the PostgreSQL scanner finds in text.
func scrub(text string) (string, bool) {
	if !mayHoldLiteral(text) {
		return text, true
	}
	scan, err := pg_query.Scan(text)
	if err != nil {
		return "", false
	}
	next := 1
	for _, t := range scan.Tokens {
		if t.Token == pg_query.Token_PARAM {
			if n, err := strconv.Atoi(strings.TrimPrefix(text[t.Start:t.End], "$")); err == nil && n >= next {
				next = n + 1
			}
		}
	}
	var b strings.Builder
	b.Grow(len(text))
	pos := 0
	for _, t := range scan.Tokens {
		start, end := int(t.Start), int(t.End)
		if start < pos || end > len(text) || start > end {
			return "", false
		}
		switch t.Token {
		case pg_query.Token_SQL_COMMENT, pg_query.Token_C_COMMENT:
			b.WriteString(text[pos:start])
			b.WriteByte(' ')
		case pg_query.Token_SCONST, pg_query.Token_USCONST, pg_query.Token_BCONST, pg_query.Token_XCONST,
			pg_query.Token_ICONST, pg_query.Token_FCONST:
			b.WriteString(text[pos:start])
			b.WriteString("$" + strconv.Itoa(next))
			next++
		default:
			b.WriteString(text[pos:end])
		}
		pos = end
	}
	rest := text[pos:]
	if strings.TrimSpace(rest) != "" {
		return "", false // the scanner stopped early: do not pass unscanned text on
	}
	b.WriteString(rest)
	return b.String(), true
}

// mayHoldLiteral is a cheap pre-check: text without quotes, digits (outside $n), comment
// starts or dollar quotes has nothing for scrub to do.
func mayHoldLiteral(text string) bool {
	for i := 0; i < len(text); i++ {
		switch c := text[i]; {
		case c == '\'' || c == '-' || c == '/':
			return true
		case c == '$':
			// $n is a parameter; anything else ($$, $tag$) may start a dollar-quoted string.
			j := i + 1
			for j < len(text) && text[j] >= '0' && text[j] <= '9' {
				j++
			}
			if j == i+1 {
				return true
			}
			i = j - 1
		case c >= '0' && c <= '9':
			return true
		}
	}
	return false
}
