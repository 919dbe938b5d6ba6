// Package discover finds cardholder data where it is: it samples the text,
// JSON, XML, array and wide numeric columns of a database's tables and
// reports the columns where card numbers (or magnetic-stripe track data)
// appear, whatever the schema calls them. custos treats the columns it finds
// as cardholder-data columns in the policy (the column rules then mask them
// and refuse them in predicates, functions and orderings for agents), so a
// PAN kept in a free-text note cannot be read back through reverse(),
// translate() or substring() where the literal detector would not see it.
//
// A pass runs in one read-only transaction per table with a statement
// timeout, samples at most Options.Rows rows of each table (TABLESAMPLE
// BERNOULLI on large analysed tables, the first rows otherwise), and never
// keeps a value: a report holds table and column names and counts only.
package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/mask"
)

// Defaults of Options.
const (
	DefaultRows         = 500
	DefaultTableTimeout = 10 * time.Second
	DefaultMaxTables    = 10000
)

// ErrScan: the pass could not list the database's columns at all.
var ErrScan = errors.New("discovery failed")

// Options bound one pass.
type Options struct {
	// Rows is the number of rows sampled per table (DefaultRows when 0).
	Rows int
	// TableTimeout bounds the sampling of one table (DefaultTableTimeout
	// when 0); a table that times out is reported in Report.Errors.
	TableTimeout time.Duration
	// MaxTables bounds the tables sampled (DefaultMaxTables when 0).
	MaxTables int
	// Declared are the columns the policy already calls cardholder data,
	// keyed by schema-qualified table then column; found columns among them
	// are reported with Declared set.
	Declared map[string]map[string]string
	Logger   *slog.Logger
}

// Column is one column where the pass found cardholder data.
type Column struct {
	Table  string `json:"table"` // schema-qualified, as sqlclass names tables
	Column string `json:"column"`
	Type   string `json:"type"`
	// Sampled is the number of non-null values inspected, Hits the number
	// holding a card number or track data.
	Sampled  int  `json:"sampled"`
	Hits     int  `json:"hits"`
	Declared bool `json:"declared"` // already a cardholder-data column in the policy
}

// Report is the outcome of one pass over one database.
type Report struct {
	Resource string    `json:"resource"`
	Database string    `json:"database"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Tables and Columns are the numbers of tables and candidate columns
	// sampled.
	Tables  int `json:"tables"`
	Columns int `json:"columns"`
	// Found are the columns holding cardholder data, sorted by table and
	// column.
	Found []Column `json:"found"`
	// Errors name the tables that could not be sampled, and why.
	Errors []string `json:"errors"`
}

// Undeclared are the found columns the policy does not declare yet.
func (r *Report) Undeclared() []Column {
	var out []Column
	for _, c := range r.Found {
		if !c.Declared {
			out = append(out, c)
		}
	}
	return out
}

// PolicyData is the report as policy data: schema-qualified table -> column
// -> masking strategy ("last4"), for every found column. Merged with other
// reports by the caller.
func (r *Report) PolicyData(strategy string) map[string]any {
	out := map[string]any{}
	for _, c := range r.Found {
		cols, ok := out[c.Table].(map[string]any)
		if !ok {
			cols = map[string]any{}
			out[c.Table] = cols
		}
		cols[c.Column] = strategy
	}
	return out
}

// candidatesQuery lists the columns that can hold a card number as text:
// string, JSON/XML and array types, user types shown as text, and the
// numeric types wide enough for 12 digits, of ordinary, partitioned and
// materialised tables outside the system schemas. reltuples is the
// planner's row estimate (-1 or 0 when never analysed).
const candidatesQuery = `SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       c.reltuples::bigint, c.relkind
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE c.relkind IN ('r', 'p', 'm')
   AND a.attnum > 0 AND NOT a.attisdropped
   AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
   AND (t.typcategory IN ('S', 'A', 'U')
        OR t.oid IN ('pg_catalog.int8'::regtype, 'pg_catalog.numeric'::regtype, 'pg_catalog.float8'::regtype,
                     'pg_catalog.json'::regtype, 'pg_catalog.jsonb'::regtype, 'pg_catalog.xml'::regtype,
                     'pg_catalog.bytea'::regtype))
 ORDER BY n.nspname, c.relname, a.attnum`

type table struct {
	schema, name string
	tuples       int64
	partitioned  bool
	cols         []candidate
}

type candidate struct{ name, typ string }

// Scan runs one pass over the database conn is connected to. conn must not
// be in a transaction; Scan leaves it idle. It fails only when the columns
// cannot be listed; a table that cannot be sampled is named in
// Report.Errors and the pass goes on.
func Scan(ctx context.Context, conn *pgconn.PgConn, opts Options) (*Report, error) {
	if opts.Rows <= 0 {
		opts.Rows = DefaultRows
	}
	if opts.TableTimeout <= 0 {
		opts.TableTimeout = DefaultTableTimeout
	}
	if opts.MaxTables <= 0 {
		opts.MaxTables = DefaultMaxTables
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rep := &Report{Started: time.Now().UTC(), Database: conn.ParameterStatus("database"), Found: []Column{}, Errors: []string{}}
	tables, err := listTables(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("%w: listing columns: %w", ErrScan, err)
	}
	if len(tables) > opts.MaxTables {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d tables have candidate columns; only the first %d were sampled", len(tables), opts.MaxTables))
		tables = tables[:opts.MaxTables]
	}
	for _, t := range tables {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrScan, err)
		}
		if t.partitioned {
			// Its partitions are listed (and sampled) on their own.
			continue
		}
		found, err := sampleTable(ctx, conn, t, opts)
		qualified := t.schema + "." + t.name
		if err != nil {
			log.Warn("discovery could not sample a table", "table", qualified, "error", err)
			rep.Errors = append(rep.Errors, qualified+": "+err.Error())
			if conn.IsClosed() {
				return nil, fmt.Errorf("%w: %w", ErrScan, err)
			}
			continue
		}
		rep.Tables++
		rep.Columns += len(t.cols)
		for _, c := range found {
			c.Declared = declared(opts.Declared, c.Table, c.Column)
			rep.Found = append(rep.Found, c)
		}
	}
	slices.SortFunc(rep.Found, func(a, b Column) int {
		if c := strings.Compare(a.Table, b.Table); c != 0 {
			return c
		}
		return strings.Compare(a.Column, b.Column)
	})
	rep.Finished = time.Now().UTC()
	return rep, nil
}

func declared(d map[string]map[string]string, table, column string) bool {
	_, ok := d[table][column]
	return ok
}

func listTables(ctx context.Context, conn *pgconn.PgConn) ([]*table, error) {
	res := conn.ExecParams(ctx, candidatesQuery, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, res.Err
	}
	var out []*table
	for _, row := range res.Rows {
		if len(row) != 6 {
			return nil, fmt.Errorf("unexpected row of %d columns", len(row))
		}
		schema, name := string(row[0]), string(row[1])
		tuples, _ := strconv.ParseInt(string(row[4]), 10, 64)
		if n := len(out); n == 0 || out[n-1].schema != schema || out[n-1].name != name {
			out = append(out, &table{schema: schema, name: name, tuples: tuples, partitioned: string(row[5]) == "p"})
		}
		t := out[len(out)-1]
		t.cols = append(t.cols, candidate{name: string(row[2]), typ: string(row[3])})
	}
	return out, nil
}

// quoteIdent quotes an identifier as PostgreSQL's quote_ident does when a
// quote is needed (always quoting is equally valid).
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// sampleQuery selects the candidate columns as text from up to rows rows.
func sampleQuery(t *table, rows int) string {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range t.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c.name))
		b.WriteString("::pg_catalog.text")
	}
	b.WriteString(" FROM ")
	b.WriteString(quoteIdent(t.schema) + "." + quoteIdent(t.name))
	// A sample spread over a large table's pages rather than its first
	// rows; three times the share needed, cut by LIMIT.
	if t.tuples > int64(rows)*4 {
		pct := float64(rows) * 300 / float64(t.tuples)
		b.WriteString(" TABLESAMPLE BERNOULLI (" + strconv.FormatFloat(pct, 'f', 6, 64) + ")")
	}
	b.WriteString(" LIMIT " + strconv.Itoa(rows))
	return b.String()
}

// sampleTable samples one table in a read-only transaction and returns the
// candidate columns where a value held cardholder data.
func sampleTable(ctx context.Context, conn *pgconn.PgConn, t *table, opts Options) ([]Column, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.TableTimeout+5*time.Second)
	defer cancel()
	timeout := strconv.FormatInt(opts.TableTimeout.Milliseconds(), 10)
	sql := "BEGIN READ ONLY; SET LOCAL statement_timeout = " + timeout + "; " + sampleQuery(t, opts.Rows) + "; COMMIT"
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		// BEGIN opened a transaction block the error left aborted.
		if !conn.IsClosed() && conn.TxStatus() != 'I' {
			if _, rerr := conn.Exec(ctx, "ROLLBACK").ReadAll(); rerr != nil {
				return nil, errors.Join(err, rerr)
			}
		}
		return nil, err
	}
	var rows [][][]byte
	for _, r := range results {
		if len(r.FieldDescriptions) == len(t.cols) && len(r.FieldDescriptions) > 0 {
			rows = r.Rows
		}
	}
	sampled := make([]int, len(t.cols))
	hits := make([]int, len(t.cols))
	for _, row := range rows {
		for i, v := range row {
			if v == nil || i >= len(t.cols) {
				continue
			}
			sampled[i]++
			if mask.Contains(v) {
				hits[i]++
			}
		}
	}
	var out []Column
	for i, c := range t.cols {
		if hits[i] > 0 {
			out = append(out, Column{
				Table: t.schema + "." + t.name, Column: c.name, Type: c.typ,
				Sampled: sampled[i], Hits: hits[i],
			})
		}
	}
	return out, nil
}
