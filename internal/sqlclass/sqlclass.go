package sqlclass

import (
	"errors"
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
)

// ErrSyntax is wrapped by the error Classify returns for text PostgreSQL would not parse
// (SQLSTATE 42601). The wrapping error is a *SyntaxError with the parser's message and position.
var ErrSyntax = errors.New("syntax error")

// SyntaxError is a parse failure: the parser's message and the 1-based character position of
// the error in the query (0 when unknown), as PostgreSQL reports them in ErrorResponse.
type SyntaxError struct {
	Message  string
	Position int
}

func (e *SyntaxError) Error() string {
	if e.Position > 0 {
		return fmt.Sprintf("%s: %s (at character %d)", ErrSyntax, e.Message, e.Position)
	}
	return fmt.Sprintf("%s: %s", ErrSyntax, e.Message)
}

// Unwrap makes errors.Is(err, ErrSyntax) hold.
func (e *SyntaxError) Unwrap() error { return ErrSyntax }

// Result is the classification of one query string. A Result returned by Classify is shared
// through the cache: callers must not modify it.
type Result struct {
	// Normalized is the whole text with constants replaced by $n and comments removed; it
	// never holds a literal of the input.
	Normalized string `json:"normalized"`
	// Fingerprint is pg_query's fingerprint of the text (hex): equal for statements that
	// differ only in constants, comments and whitespace.
	Fingerprint string      `json:"fingerprint"`
	Statements  []Statement `json:"statements"`
}

// Statement is the classification of one statement. It is marshalled as is into the policy
// input (sql.statements): the JSON names are part of the policy contract. Slices are never nil,
// so they marshal as [] rather than null.
type Statement struct {
	// Command is the upper-case command tag: SELECT, INSERT, UPDATE, DELETE, MERGE, COPY,
	// TRUNCATE, "CREATE TABLE", "DROP FUNCTION", GRANT, "SET ROLE", BEGIN, ... (see commands.go).
	Command string `json:"command"`
	// DDL is true for schema and catalog changes (CREATE/ALTER/DROP/COMMENT/GRANT/...).
	DDL bool `json:"ddl"`
	// ReadOnly is true only when nothing the statement can run writes or has side effects.
	ReadOnly bool `json:"read_only"`
	// Reads are the schema-qualified tables read, deduplicated and sorted.
	Reads []string `json:"reads"`
	// Writes are the schema-qualified tables written (or created, altered, dropped), sorted.
	Writes []string `json:"writes"`
	// Functions are the functions called, lower case, schema-qualified only when written so.
	Functions []string `json:"functions"`
	// Flags are sorted and deduplicated; see the Flag* constants.
	Flags []string `json:"flags"`
	// Columns say which columns of which tables are used where, sorted by table and column.
	Columns []ColumnUse `json:"columns"`
	// Settings are the lower-case names of the run-time parameters a SET, RESET or set_config
	// changes.
	Settings []string `json:"settings"`
	// Explains is, for EXPLAIN, the statement explained.
	Explains *Statement `json:"explains,omitempty"`
	// Prepared is, for PREPARE name AS ..., the statement prepared.
	Prepared *Statement `json:"prepared,omitempty"`
	// Copy is, for COPY, what is copied where and with which format options.
	Copy *Copy `json:"copy,omitempty"`
	// Name is the prepared statement name (PREPARE, EXECUTE, DEALLOCATE; DEALLOCATE ALL is
	// "*"), the cursor name (DECLARE, FETCH, MOVE, CLOSE; CLOSE ALL is "*") or the channel
	// (LISTEN, NOTIFY, UNLISTEN; UNLISTEN * is "*").
	Name string `json:"name,omitempty"`
	// Normalized is this statement's own normalized text (empty for the inner statement of
	// EXPLAIN and PREPARE, whose text is the outer statement's).
	Normalized string `json:"normalized"`
	// Text is this statement's original text. It may hold clear values: never put it in
	// policy input or logs.
	Text string `json:"-"`
}

// ColumnUse is one column of one table and the ways a statement uses it.
type ColumnUse struct {
	// Table is the schema-qualified table, or "" when the column cannot be attributed to one
	// table (an unqualified name with several tables in scope).
	Table string `json:"table"`
	// Column is the column name (lower case unless quoted); "*" stands for every column
	// (SELECT *, t.*, a whole-row reference, a renamed column, NATURAL JOIN).
	Column string `json:"column"`
	// Usage is a sorted subset of the Use* constants.
	Usage []string `json:"usage"`
}

// Column usages. Only UseOutput lets a column's value reach the client where the masker's
// column rules apply (PostgreSQL reports the column as the result column's origin); every
// other usage reveals something of the value by another path.
const (
	UseAggregate     = "aggregate"       // inside an aggregate call
	UseCopy          = "copy"            // copied server-side: SELECT INTO, CREATE TABLE AS, INSERT ... SELECT, COPY to a file or program, assigned to another column
	UseDerived       = "derived"         // reaches the client in a result column PostgreSQL reports no table column for: through an expression, a set operation, a scalar subquery, VALUES, a function, a recursive CTE, a whole-row value, a merged JOIN USING column, SEARCH/CYCLE columns
	UseFilter        = "filter"          // WHERE, HAVING, JOIN ON/USING, MERGE ON, FILTER, conflict targets, CYCLE
	UseFilterEqParam = "filter_eq_param" // the whole comparison is column = $n (a bound parameter) in a WHERE, ON or HAVING
	UseFunction      = "function"        // argument of a function, operator, cast, CASE, ... outside a plain predicate; also any clause the classifier does not know
	UseGroup         = "group"           // GROUP BY (also GROUPING SETS, ROLLUP, CUBE), DISTINCT, DISTINCT ON, PARTITION BY
	UseOrder         = "order"           // ORDER BY (also inside aggregates and windows), SEARCH BY
	UseOutput        = "output"          // a plain column of the result that PostgreSQL reports as the result column's origin (possibly aliased, through subqueries in FROM and non-recursive CTEs)
	UseReturning     = "returning"       // RETURNING
	UseSetop         = "setop"           // a column of either side of UNION, INTERSECT or EXCEPT (compared, and without origin after)
	UseWrite         = "write"           // assigned by INSERT, UPDATE, MERGE, COPY FROM
)

// Flags.
const (
	FlagDataModifyingCTE   = "data_modifying_cte"
	FlagSelectInto         = "select_into"
	FlagForUpdate          = "for_update" // any locking clause: FOR UPDATE, FOR SHARE, ...
	FlagCopyFrom           = "copy_from"
	FlagCopyTo             = "copy_to"
	FlagCopyProgram        = "copy_program"
	FlagCopyFile           = "copy_file"
	FlagMultiStatement     = "multi_statement" // on every statement of a multi-statement string
	FlagExplainAnalyze     = "explain_analyze"
	FlagSideEffectFunction = "side_effect_function"
	FlagDangerousFunction  = "dangerous_function"
	FlagUnknownFunction    = "unknown_function" // a function that is not a known read-only built-in
	FlagSetsReadOnly       = "sets_read_only"   // changes transaction_read_only / default_transaction_read_only
	FlagSetRole            = "set_role"
	FlagOpaque             = "opaque" // DO, CALL, EXECUTE: what runs cannot be seen
)

// classify parses query and classifies every statement. It does not use the cache. A text
// over the limits never reaches the parser, whose C code would overflow its stack on it.
func classify(query string, maxBytes, maxDepth int) (*Result, error) {
	if err := checkLimits(query, maxBytes, maxDepth); err != nil {
		return nil, err
	}
	return parseAndClassify(query)
}

// parseAndClassify is classify for a text within the limits.
func parseAndClassify(query string) (*Result, error) {
	if i := strings.IndexByte(query, 0); i >= 0 {
		return nil, &SyntaxError{Message: "query string contains a zero byte", Position: i + 1}
	}
	tree, err := pg_query.Parse(query)
	if err != nil {
		return nil, syntaxError(err)
	}
	res := &Result{Statements: []Statement{}}
	if len(tree.Stmts) == 0 {
		return res, nil
	}
	res.Normalized = normalize(query)
	if fp, err := pg_query.Fingerprint(query); err == nil {
		res.Fingerprint = fp
	}
	multi := len(tree.Stmts) > 1
	for _, raw := range tree.Stmts {
		text := stmtText(query, raw)
		st := classifyStmt(raw.Stmt)
		st.Text = text
		if multi {
			st.Normalized = strings.TrimSpace(normalize(text))
			st.Flags = addSorted(st.Flags, FlagMultiStatement)
		} else {
			st.Normalized = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(res.Normalized), ";"))
		}
		res.Statements = append(res.Statements, st)
	}
	return res, nil
}

func syntaxError(err error) error {
	var pe *parser.Error
	if errors.As(err, &pe) {
		return &SyntaxError{Message: pe.Message, Position: pe.Cursorpos}
	}
	return &SyntaxError{Message: err.Error()}
}

// stmtText cuts one statement out of the query by its location and length (a length of 0
// means up to the end), without surrounding space.
func stmtText(query string, raw *pg_query.RawStmt) string {
	start := int(raw.StmtLocation)
	if start < 0 || start > len(query) {
		start = 0
	}
	end := len(query)
	if raw.StmtLen > 0 && start+int(raw.StmtLen) <= len(query) {
		end = start + int(raw.StmtLen)
	}
	return strings.TrimSpace(query[start:end])
}

// addSorted inserts s into the sorted slice xs unless present.
func addSorted(xs []string, s string) []string {
	for i, x := range xs {
		if x == s {
			return xs
		}
		if x > s {
			out := make([]string, 0, len(xs)+1)
			out = append(out, xs[:i]...)
			out = append(out, s)
			return append(out, xs[i:]...)
		}
	}
	return append(xs, s)
}
