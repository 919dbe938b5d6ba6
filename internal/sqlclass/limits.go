package sqlclass

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrTooComplex is wrapped by the error Classify returns for a text refused before it reaches
// the parser because it is too long or nests too deeply (SQLSTATE 54001). The wrapping error
// is a *LimitError naming the limit.
//
// PostgreSQL's parser (pg_query, in C) builds arbitrarily deep trees from left-deep chains
// such as 1+1+…+1, and its output, normalization and fingerprint code recurse over them on
// the C stack of the calling thread, which a Go program cannot grow or recover: a deep enough
// statement kills the process. The pre-scan below bounds the depth before the parser runs.
var ErrTooComplex = errors.New("statement too complex")

// Default limits. Measured (pg_query v6, x86-64): parse and normalize overflow a 1 MiB C
// stack at about 2,700 levels of the cheapest chains and a 2 MiB stack (the thread default
// when RLIMIT_STACK is unlimited) at about 5,400; an 8 MiB stack at about 11,000 to 22,000.
// The depth bound, an over-estimate of the tree depth, keeps a wide margin below all of them.
const (
	DefaultMaxDepth = 1000
	DefaultMaxBytes = 4 << 20
)

// MaxListItems bounds a SELECT or RETURNING list and a GROUP BY list. pg_query's parser and
// normalization cost about 9 KB of C memory and 25 µs per item of such lists (measured: a
// 200 KB `SELECT 1,1,…,1` took 3.4 s and 0.9 GB), far more than any other list, and PostgreSQL
// itself refuses a target list of more than 1664 entries (MaxTupleAttributeNumber), so the
// bound refuses nothing the server would run.
const MaxListItems = 1664

// MaxTokens bounds the tokens of a text (a token: a word, number, string, operator character
// or punctuation). The parser's time and memory grow with the tree, which grows with the
// tokens: a million tokens of IN or VALUES lists cost about 2.5 s and 200 MB. Bulk loads
// belong in COPY.
const MaxTokens = 1 << 20

// LimitError is a statement refused by a limit: Limit is "depth", "size", "list", "tokens"
// or "rate" (a caller's budget of time parsing long texts, Max in milliseconds a second),
// Max its value.
type LimitError struct {
	Limit string
	Max   int
	// Wait, for "rate", is how long until the budget allows a long text again.
	Wait time.Duration
}

func (e *LimitError) Error() string {
	switch e.Limit {
	case "size":
		return fmt.Sprintf("%s: longer than %d bytes", ErrTooComplex, e.Max)
	case "list":
		return fmt.Sprintf("%s: a SELECT, RETURNING or GROUP BY list of more than %d items", ErrTooComplex, e.Max)
	case "tokens":
		return fmt.Sprintf("%s: more than %d tokens (load bulk data with COPY)", ErrTooComplex, e.Max)
	case "rate":
		return fmt.Sprintf("%s: one principal's long statements took more than %d ms a second to parse (load bulk data with COPY, or wait %v)",
			ErrTooComplex, e.Max, e.Wait.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("%s: nesting deeper than %d levels", ErrTooComplex, e.Max)
}

// Unwrap makes errors.Is(err, ErrTooComplex) hold.
func (e *LimitError) Unwrap() error { return ErrTooComplex }

// Option configures a Classifier.
type Option func(*Classifier)

// WithMaxDepth sets the bound on the estimated parse tree depth (0 or less: DefaultMaxDepth).
func WithMaxDepth(n int) Option {
	return func(c *Classifier) {
		if n > 0 {
			c.maxDepth = n
		}
	}
}

// WithMaxBytes sets the longest text classified (0 or less: DefaultMaxBytes).
func WithMaxBytes(n int) Option {
	return func(c *Classifier) {
		if n > 0 {
			c.maxBytes = n
		}
	}
}

// checkLimits refuses a text over the size limit or whose estimated tree depth is over the
// depth limit.
func checkLimits(query string, maxBytes, maxDepth int) error {
	if len(query) > maxBytes {
		return &LimitError{Limit: "size", Max: maxBytes}
	}
	if sc := scanQuery(query, maxDepth, MaxListItems, MaxTokens); sc.depthOver {
		return &LimitError{Limit: "depth", Max: maxDepth}
	} else if sc.listOver {
		return &LimitError{Limit: "list", Max: MaxListItems}
	} else if sc.tokensOver {
		return &LimitError{Limit: "tokens", Max: MaxTokens}
	}
	return nil
}

// frame is one level of brackets: ( ), [ ] or CASE … END. Within a frame, a segment is the
// text between two separators that end a subtree (commas, AND, OR, semicolons, and WHEN,
// THEN, ELSE within CASE): PostgreSQL keeps lists and AND/OR chains flat, so only what a
// segment chains (operators, operator keywords) adds to the depth. Set operations and joins
// nest across commas and are counted for the whole frame.
type frame struct {
	isCase  bool
	nesting int // set operations and joins in the frame
	boolean bool
	seg     int // weight of the chain in the current segment
	child   int // deepest child frame in the current segment
	best    int // deepest finished segment
	// inList: a SELECT, RETURNING or GROUP BY list started in the frame; items counts it and
	// every later comma of the frame.
	inList bool
	items  int
}

func (f *frame) endSegment() {
	f.best = max(f.best, f.seg+f.child)
	f.seg, f.child = 0, 0
}

func (f *frame) depth() int {
	d := max(f.best, f.seg+f.child) + f.nesting
	if f.boolean {
		d += 2 // OR over AND over the operands
	}
	return d
}

// scan is what the pre-scan found: the estimated depth, and whether a limit was exceeded.
type scan struct {
	depth      int
	depthOver  bool
	listOver   bool
	tokensOver bool
}

// scanQuery returns an upper bound of the depth of the tree PostgreSQL's parser builds from
// query, in units of one chained operator, and counts the items of SELECT, RETURNING and
// GROUP BY lists; it stops as soon as the depth exceeds limit or a list has more than
// maxItems items or the text more than maxTokens tokens (0: not counted). It follows PostgreSQL's lexical rules so that
// nothing inside a string, a quoted identifier, a dollar-quoted body or a comment counts, and
// errs towards counting where in doubt.
func scanQuery(query string, limit, maxItems, maxTokens int) scan {
	tokens := 0
	stack := make([]frame, 1, 16)
	groupPending := false // GROUP seen: BY starts a list
	worst := 0
	n := len(query)
	// over reports whether the open frames alone already exceed the limit.
	over := func() bool {
		top := &stack[len(stack)-1]
		return len(stack)-1+top.seg+top.nesting > limit
	}
	closeFrame := func() {
		d := stack[len(stack)-1].depth() + 1
		stack = stack[:len(stack)-1]
		p := &stack[len(stack)-1]
		p.child = max(p.child, d)
	}
	for i := 0; i < n; {
		c := query[i]
		top := &stack[len(stack)-1]
		if c != ' ' && c != '\n' {
			if tokens++; maxTokens > 0 && tokens > maxTokens {
				return scan{depth: worst, tokensOver: true}
			}
		}
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < n && query[i+1] == '-':
			j := strings.IndexAny(query[i:], "\n\r")
			if j < 0 {
				i = n
			} else {
				i += j
			}
		case c == '/' && i+1 < n && query[i+1] == '*':
			i = skipComment(query, i+2)
		case c == '\'':
			i = skipQuoted(query, i+1, '\'', false)
		case c == '"':
			i = skipQuoted(query, i+1, '"', false)
		case c == '$':
			i = skipDollar(query, i)
		case c == '(' || c == '[':
			top.seg++ // the bracket's own node
			stack = append(stack, frame{})
			i++
		case c == ')' || c == ']':
			if len(stack) > 1 && !stack[len(stack)-1].isCase {
				closeFrame()
			} else if len(stack) > 1 {
				// ")" inside CASE: a syntax error; close both, counting both.
				closeFrame()
				if len(stack) > 1 {
					closeFrame()
				}
			}
			i++
		case c == ',':
			top.endSegment()
			if top.inList {
				top.items++
			}
			i++
		case c == ';':
			if len(stack) == 1 {
				worst = max(worst, top.depth())
				stack[0] = frame{}
				groupPending = false
			} else {
				top.endSegment()
			}
			i++
		case c == ':' && i+1 < n && query[i+1] == ':':
			top.seg++
			i += 2
		case isOpChar(c) || c == ':':
			top.seg++
			i++
		case c >= '0' && c <= '9' || c == '.':
			for i++; i < n && (isIdentChar(query[i]) && query[i] != '$' || query[i] == '.'); i++ {
			}
		case isIdentStart(c):
			j := i + 1
			for j < n && isIdentChar(query[j]) {
				j++
			}
			word := query[i:j]
			if j < n && (query[j] == '\'' || query[j] == '"') {
				switch {
				case len(word) == 1 && (c == 'e' || c == 'E') && query[j] == '\'':
					i = skipQuoted(query, j+1, '\'', true)
					continue
				case len(word) == 1 && strings.ContainsRune("bBxXnN", rune(c)) && query[j] == '\'':
					i = skipQuoted(query, j+1, '\'', false)
					continue
				}
			}
			if len(word) == 1 && (c == 'u' || c == 'U') && j+1 < n && query[j] == '&' && (query[j+1] == '\'' || query[j+1] == '"') {
				i = skipQuoted(query, j+2, query[j+1], false)
				continue
			}
			i = j
			if maxItems > 0 && !top.inList {
				switch listKeyword(word) {
				case listStart:
					top.inList, top.items = true, 1
				case listGroup:
					groupPending = true
				case listBy:
					if groupPending {
						top.inList, top.items = true, 1
					}
				}
				groupPending = groupPending && listKeyword(word) == listGroup
			}
			switch k := keyword(word); k {
			case kwNone:
			case kwCase:
				top.seg++
				stack = append(stack, frame{isCase: true})
			case kwEnd:
				if top.isCase && len(stack) > 1 {
					closeFrame()
				}
			case kwWhen:
				if top.isCase {
					top.endSegment()
				}
			case kwAndOr:
				top.endSegment()
				top.boolean = true
			case kwNesting:
				top.nesting += 2
			default:
				top.seg += int(k)
			}
		default:
			i++ // other bytes: the parser refuses what it cannot lex
		}
		if over() {
			return scan{depth: limit + 1, depthOver: true}
		}
		if maxItems > 0 && stack[len(stack)-1].items > maxItems {
			return scan{depth: worst, listOver: true}
		}
	}
	for len(stack) > 1 {
		closeFrame()
	}
	worst = max(worst, stack[0].depth())
	return scan{depth: worst, depthOver: worst > limit}
}

// Keyword classes; a positive value is the weight the keyword adds to its segment.
const (
	kwNone    = 0
	kwCase    = -1
	kwEnd     = -2
	kwWhen    = -3 // WHEN, THEN, ELSE
	kwAndOr   = -4
	kwNesting = -5 // UNION, INTERSECT, EXCEPT, JOIN
)

// keyword classifies an identifier that matters to the depth estimate.
func keyword(w string) int {
	var buf [9]byte
	switch string(lowerWord(&buf, w)) {
	case "case":
		return kwCase
	case "end":
		return kwEnd
	case "when", "then", "else":
		return kwWhen
	case "and", "or":
		return kwAndOr
	case "union", "intersect", "except", "join":
		return kwNesting
	case "is", "isnull", "notnull", "like", "ilike", "similar", "between", "in",
		"overlaps", "collate", "escape", "operator", "array", "row", "exists", "any", "all", "some":
		return 1
	case "not", "at", "select", "values", "lateral", "cast", "treat":
		return 2 // NOT, AT TIME ZONE and subqueries cost more stack per level
	}
	return kwNone
}

// List keywords: the words that start the lists the pre-scan counts.
const (
	listNone = iota
	listStart
	listGroup
	listBy
)

// listKeyword classifies the reserved words that start a SELECT, RETURNING or GROUP BY list.
// The count never ends at a later clause: the words that end a list can also appear inside
// one (IS DISTINCT FROM, AS from, t.limit), so every comma of the frame after the list's start
// counts. That over-counts only the short lists that follow (FROM, ORDER BY, WINDOW).
func listKeyword(w string) int {
	var buf [9]byte
	switch string(lowerWord(&buf, w)) {
	case "select", "returning":
		return listStart
	case "group":
		return listGroup
	case "by":
		return listBy
	}
	return listNone
}

// lowerWord is w in lower case, in buf, when it is as long as a keyword the
// pre-scan knows (2 to 9 bytes); nil otherwise. Callers switch on
// string(lowerWord(…)), which the compiler does without allocating.
func lowerWord(buf *[9]byte, w string) []byte {
	if len(w) < 2 || len(w) > len(buf) {
		return nil
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(w)]
}

func isOpChar(c byte) bool {
	switch c {
	case '~', '!', '@', '#', '^', '&', '|', '`', '?', '+', '-', '*', '/', '%', '<', '>', '=':
		return true
	}
	return false
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentChar(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

// skipComment returns the position after the /* */ comment whose body starts at i; comments
// nest. An unterminated comment runs to the end, as the parser refuses it.
func skipComment(s string, i int) int {
	depth := 1
	for i < len(s) {
		switch {
		case s[i] == '/' && i+1 < len(s) && s[i+1] == '*':
			depth++
			i += 2
		case s[i] == '*' && i+1 < len(s) && s[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// skipQuoted returns the position after the string or quoted identifier whose body starts at
// i: a doubled quote stands for one, and with backslash escapes (E'…') a backslash escapes the
// next byte.
func skipQuoted(s string, i int, quote byte, backslash bool) int {
	for i < len(s) {
		switch c := s[i]; {
		case backslash && c == '\\':
			i += 2
		case c == quote:
			if i+1 < len(s) && s[i+1] == quote {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(s)
}

// skipDollar returns the position after a $tag$…$tag$ string starting at i, or after the $
// of a parameter ($1) or a lone $.
func skipDollar(s string, i int) int {
	j := i + 1
	if j < len(s) && s[j] >= '0' && s[j] <= '9' {
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		return j
	}
	if j < len(s) && isIdentStart(s[j]) {
		for j < len(s) && (isIdentStart(s[j]) || s[j] >= '0' && s[j] <= '9') {
			j++
		}
	}
	if j >= len(s) || s[j] != '$' {
		return i + 1
	}
	delim := s[i : j+1]
	k := strings.Index(s[j+1:], delim)
	if k < 0 {
		return len(s)
	}
	return j + 1 + k + len(delim)
}
