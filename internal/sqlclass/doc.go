// Package sqlclass classifies SQL text with PostgreSQL's own parser (libpg_query through
// github.com/pganalyze/pg_query_go/v6, PostgreSQL 17 grammar) so that policy decides on what a
// statement really does rather than on keywords.
//
// For each statement of a query string it reports the command tag, whether the statement is
// read-only, the tables read and written (schema-qualified, default schema public), the
// functions called, flags for constructs that hide writes or side effects (data-modifying CTEs,
// SELECT INTO, locking clauses, COPY to or from a program or a server file, EXPLAIN ANALYZE,
// side-effecting and dangerous functions, opaque bodies), which columns of which tables are
// used where (output, filter, order, group, aggregate, function, write, copy, returning), the
// settings changed, and a normalized text in which every literal is replaced by $n and every
// comment is dropped, so that clear values never reach policy input or logs.
//
// This is the only package of the module that imports pg_query_go. Parsing costs about
// 100 µs; a Classifier caches results by exact query text, so a repeated statement costs a map
// lookup.
//
// What the parser cannot see is reported as such rather than guessed: DO bodies, CALL and
// SQL-level EXECUTE carry the opaque flag, and a call of a function that is not a known
// read-only built-in carries unknown_function, so read_only stays false for it. Without a
// catalog, an unqualified column with several tables in scope is reported with an empty table
// name; policy then matches it by column name.
package sqlclass
