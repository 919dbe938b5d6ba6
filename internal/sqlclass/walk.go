package sqlclass

import (
	"slices"
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// usage is a set of column usages, one bit each, in the alphabetical order of their names.
type usage uint16

const (
	uAggregate usage = 1 << iota
	uCopy
	uDerived
	uFilter
	uFilterEqParam
	uFunction
	uGroup
	uOrder
	uOutput
	uReturning
	uSetop
	uWrite
)

var usageNames = [...]string{
	UseAggregate, UseCopy, UseDerived, UseFilter, UseFilterEqParam, UseFunction, UseGroup,
	UseOrder, UseOutput, UseReturning, UseSetop, UseWrite,
}

func (u usage) names() []string {
	out := make([]string, 0, 3)
	for i, n := range usageNames {
		if u&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// origin is a column of a base table; table "" when it cannot be attributed, column "*" for
// every column.
type origin struct{ table, column string }

// outCol is one output column of a query: its name and the base columns its value comes from.
// plain is true when the value is one of them unchanged (a column reference, possibly through
// aliases, subqueries, CTEs, set operations, VALUES). reported is true when, besides,
// PostgreSQL reports that base column as the column's origin in RowDescription (what the
// masker's column rules key on): a column reference that reaches a table through subqueries
// in FROM, non-recursive CTEs and joins, and nothing else (parse_target.c
// markTargetListOrigin).
type outCol struct {
	name     string
	origins  []origin
	plain    bool
	reported bool
}

// star is a base table all of whose columns a shape exposes (SELECT *); reported as for outCol.
type star struct {
	table    string
	reported bool
}

// shape is what a query, subquery, CTE or RETURNING list exposes to whoever reads it.
type shape struct {
	cols       []outCol
	starTables []star
	open       bool // may expose further columns of unknown names (functions in FROM, ...)
}

// val is what an expression's value is, for the result column it may become.
type val uint8

const (
	valComputed val = iota // a new value (function, operator, constant, ...)
	valPassed              // a column's value unchanged, but PostgreSQL reports no origin for it
	valColumn              // a column reference PostgreSQL reports as the result column's origin
)

func (v val) plain() bool { return v != valComputed }

// entry is a FROM item visible in a scope.
type entry struct {
	name     string   // alias, or relation name when unaliased
	schema   string   // schema as written, for schema.table.column (unaliased base tables only)
	table    string   // schema-qualified base table; "" for derived entries
	renamed  []string // base table: column aliases hiding the real names (FROM t AS a(x, y))
	shape    *shape   // derived entries: subquery, CTE, function, VALUES, ...
	children []*entry // join with an alias: the entries it groups
	joinOnly bool     // join alias: only for qualified references and t.* (its children are in scope too)
	merged   joinMerge
}

// joinMerge are the columns joins merge (USING, NATURAL): a reference to a merged column may be
// a COALESCE of both sides, which PostgreSQL reports no origin for.
type joinMerge struct {
	names   map[string]bool // JOIN ... USING columns
	natural bool            // a NATURAL JOIN: any common column
}

func (m *joinMerge) add(o joinMerge) {
	for n := range o.names {
		m.addName(n)
	}
	m.natural = m.natural || o.natural
}

func (m *joinMerge) addName(n string) {
	if m.names == nil {
		m.names = map[string]bool{}
	}
	m.names[n] = true
}

func (m joinMerge) has(name string) bool { return m.natural || m.names[name] }

// scope is one query level: its FROM entries and WITH queries, and the enclosing level.
type scope struct {
	parent  *scope
	entries []*entry
	ctes    map[string]*shape
	merged  joinMerge // the columns the joins at this level merge
}

func (sc *scope) cte(name string) *shape {
	for s := sc; s != nil; s = s.parent {
		if sh, ok := s.ctes[name]; ok {
			return sh
		}
	}
	return nil
}

// exprCtx is how the expression being walked is used.
type exprCtx struct {
	use     usage     // clause usage: filter, order, group, copy, ... (0 in a target list)
	pred    bool      // at the predicate level of a WHERE/ON/HAVING: comparisons add no function usage
	inExpr  bool      // inside a function, operator, cast, ...: add function usage
	inAgg   bool      // inside an aggregate's arguments: add aggregate usage
	collect *[]origin // where to gather the origins of the value (target lists)
}

func (c exprCtx) bits() usage {
	b := c.use
	if c.inExpr {
		b |= uFunction
	}
	if c.inAgg {
		b |= uAggregate
	}
	return b
}

func (c exprCtx) nested() exprCtx {
	c.pred = false
	c.inExpr = true
	return c
}

// walker gathers the classification of one statement.
type walker struct {
	reads, writes, funcs, flags, settings map[string]struct{}
	cols                                  map[origin]usage
	readOnly                              bool // cleared by anything that writes or has side effects
	// seen are the column references the walk resolved; sweep gives the others (in clauses
	// the walk does not know) function usage.
	seen map[*pg_query.ColumnRef]struct{}
}

func newWalker() *walker {
	return &walker{
		reads:    map[string]struct{}{},
		writes:   map[string]struct{}{},
		funcs:    map[string]struct{}{},
		flags:    map[string]struct{}{},
		settings: map[string]struct{}{},
		cols:     map[origin]usage{},
		readOnly: true,
		seen:     map[*pg_query.ColumnRef]struct{}{},
	}
}

func (w *walker) flag(f string)    { w.flags[f] = struct{}{} }
func (w *walker) read(t string)    { w.reads[t] = struct{}{} }
func (w *walker) write(t string)   { w.writes[t] = struct{}{}; w.readOnly = false }
func (w *walker) setting(s string) { w.settings[strings.ToLower(s)] = struct{}{} }

func (w *walker) record(os []origin, u usage) {
	if u == 0 {
		return
	}
	for _, o := range os {
		w.cols[o] |= u
	}
}

// apply gives the columns of sh usage u; with plainOnly, only the columns passed on unchanged.
func (w *walker) apply(sh *shape, u usage, plainOnly bool) {
	if sh == nil {
		return
	}
	for _, c := range sh.cols {
		if plainOnly && !c.plain {
			continue
		}
		w.record(c.origins, u)
	}
	for _, t := range sh.starTables {
		w.record([]origin{{t.table, "*"}}, u)
	}
}

// output gives the columns of a result that reaches the client their usage: output for a
// column PostgreSQL reports with its origin (the masker's column rules apply to it), derived
// for every other value that comes from a column (computed values also got function or
// aggregate usage while they were walked).
func (w *walker) output(sh *shape) {
	for _, c := range sh.cols {
		if c.plain && c.reported {
			w.record(c.origins, uOutput)
		} else {
			w.record(c.origins, uDerived)
		}
	}
	for _, t := range sh.starTables {
		if t.reported {
			w.record([]origin{{t.table, "*"}}, uOutput)
		} else {
			w.record([]origin{{t.table, "*"}}, uDerived)
		}
	}
}

// qualify names a relation schema-qualified, public by default.
func qualify(rv *pg_query.RangeVar) string {
	schema := rv.Schemaname
	if schema == "" {
		schema = "public"
	}
	return schema + "." + rv.Relname
}

// qualifyNames names a relation given as a list of String nodes (DROP TABLE a.b).
func qualifyNames(list []*pg_query.Node) string {
	parts := stringsOf(list)
	switch len(parts) {
	case 0:
		return ""
	case 1:
		return "public." + parts[0]
	default:
		return parts[len(parts)-2] + "." + parts[len(parts)-1]
	}
}

func stringsOf(list []*pg_query.Node) []string {
	out := make([]string, 0, len(list))
	for _, n := range list {
		switch x := n.GetNode().(type) {
		case *pg_query.Node_String_:
			out = append(out, x.String_.Sval)
		case *pg_query.Node_AStar:
			out = append(out, "*")
		}
	}
	return out
}

// ---- statements that produce rows ----

// query walks any statement that can stand where a query is read (a subquery, a CTE, COPY's
// query, EXPLAIN's and PREPARE's statement) and returns what it exposes.
func (w *walker) query(n *pg_query.Node, parent *scope) *shape {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		return w.selectStmt(x.SelectStmt, parent)
	case *pg_query.Node_InsertStmt:
		return w.insert(x.InsertStmt, parent)
	case *pg_query.Node_UpdateStmt:
		return w.update(x.UpdateStmt, parent)
	case *pg_query.Node_DeleteStmt:
		return w.delete(x.DeleteStmt, parent)
	case *pg_query.Node_MergeStmt:
		return w.merge(x.MergeStmt, parent)
	case *pg_query.Node_ExecuteStmt:
		// CREATE TABLE ... AS EXECUTE p: runs a prepared statement unseen.
		w.opaque()
		for _, p := range x.ExecuteStmt.Params {
			w.walkExpr(parent, p, exprCtx{inExpr: true})
		}
		return &shape{open: true}
	case nil:
		return &shape{}
	default:
		w.walkExpr(parent, n, exprCtx{inExpr: true})
		return &shape{open: true}
	}
}

func isDML(n *pg_query.Node) bool {
	switch n.GetNode().(type) {
	case *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
		return true
	}
	return false
}

func (w *walker) with(sc *scope, wc *pg_query.WithClause) {
	if wc == nil {
		return
	}
	if sc.ctes == nil {
		sc.ctes = map[string]*shape{}
	}
	for _, n := range wc.Ctes {
		cte := n.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		names := stringsOf(cte.Aliascolnames)
		ph := &shape{open: true}
		if wc.Recursive {
			// The recursive term refers to the CTE itself before its shape is known.
			for _, nm := range names {
				ph.cols = append(ph.cols, outCol{name: nm, plain: true})
			}
			sc.ctes[cte.Ctename] = ph
		}
		if isDML(cte.Ctequery) {
			w.flag(FlagDataModifyingCTE)
		}
		sh := w.query(cte.Ctequery, sc)
		renameCols(sh, names)
		w.searchCycle(sc, cte, sh)
		*ph = *sh
		sc.ctes[cte.Ctename] = ph
	}
}

// searchCycle walks a recursive CTE's SEARCH and CYCLE clauses. SEARCH sorts the rows by its
// columns and CYCLE compares them; the sequence and path columns they add hold those
// columns' values (in rows and arrays of rows), so both are function usage too.
func (w *walker) searchCycle(sc *scope, cte *pg_query.CommonTableExpr, sh *shape) {
	if s := cte.SearchClause; s != nil {
		var os []origin
		for _, name := range stringsOf(s.SearchColList) {
			os = append(os, shapeCol(sh, name)...)
		}
		w.record(os, uOrder|uFunction)
		sh.cols = append(sh.cols, outCol{name: s.SearchSeqColumn, origins: os})
	}
	if c := cte.CycleClause; c != nil {
		var os []origin
		for _, name := range stringsOf(c.CycleColList) {
			os = append(os, shapeCol(sh, name)...)
		}
		w.record(os, uFilter|uFunction)
		w.walkExpr(sc, c.CycleMarkValue, exprCtx{inExpr: true})
		w.walkExpr(sc, c.CycleMarkDefault, exprCtx{inExpr: true})
		sh.cols = append(sh.cols, outCol{name: c.CycleMarkColumn}, outCol{name: c.CyclePathColumn, origins: os})
	}
}

// shapeCol returns the origins of the column name of sh: those of the columns of that name, or
// of that column of its star tables, or an unattributed name.
func shapeCol(sh *shape, name string) []origin {
	var os []origin
	found := false
	for _, c := range sh.cols {
		if c.name == name {
			os = append(os, c.origins...)
			found = true
		}
	}
	if !found {
		for _, t := range sh.starTables {
			os = append(os, origin{t.table, name})
			found = true
		}
	}
	if !found {
		os = append(os, origin{"", name})
	}
	return os
}

// renameCols applies column aliases (AS x(a, b)) to the first columns of sh.
func renameCols(sh *shape, names []string) {
	for i, nm := range names {
		if i < len(sh.cols) {
			sh.cols[i].name = nm
		} else {
			sh.cols = append(sh.cols, outCol{name: nm, plain: true})
		}
	}
}

func (w *walker) selectStmt(s *pg_query.SelectStmt, parent *scope) *shape {
	if s == nil {
		return &shape{}
	}
	sc := &scope{parent: parent}
	w.with(sc, s.WithClause)
	if len(s.LockingClause) > 0 {
		w.flag(FlagForUpdate)
		w.readOnly = false
	}
	if s.Op != pg_query.SetOperation_SETOP_NONE && s.Op != pg_query.SetOperation_SET_OPERATION_UNDEFINED {
		l := w.selectStmt(s.Larg, sc)
		r := w.selectStmt(s.Rarg, sc)
		// UNION, INTERSECT and EXCEPT compare their rows (an INTERSECT probe tells whether a
		// value is there without returning it), and their result has no origin.
		w.apply(l, uSetop, false)
		w.apply(r, uSetop, false)
		sh := mergeShapes(l, r)
		w.sortClause(sc, s.SortClause, sh)
		w.walkExpr(sc, s.LimitCount, exprCtx{inExpr: true})
		w.walkExpr(sc, s.LimitOffset, exprCtx{inExpr: true})
		return sh
	}
	if len(s.ValuesLists) > 0 {
		return w.values(sc, s.ValuesLists)
	}
	for _, f := range s.FromClause {
		w.fromItem(sc, f)
	}
	w.walkExpr(sc, s.WhereClause, exprCtx{use: uFilter, pred: true})
	sh := w.targetList(sc, s.TargetList)
	for _, g := range s.GroupClause {
		w.byItem(sc, g, uGroup, sh)
	}
	w.walkExpr(sc, s.HavingClause, exprCtx{use: uFilter, pred: true})
	for _, wd := range s.WindowClause {
		w.windowDef(sc, wd.GetWindowDef())
	}
	if len(s.DistinctClause) > 0 && s.DistinctClause[0].GetNode() != nil {
		for _, d := range s.DistinctClause {
			w.byItem(sc, d, uGroup, sh)
		}
	} else if len(s.DistinctClause) > 0 {
		// SELECT DISTINCT compares every output column.
		w.apply(sh, uGroup, false)
	}
	w.sortClause(sc, s.SortClause, sh)
	w.walkExpr(sc, s.LimitCount, exprCtx{inExpr: true})
	w.walkExpr(sc, s.LimitOffset, exprCtx{inExpr: true})
	return sh
}

// mergeShapes is the shape of a set operation: its columns carry both sides' origins, and
// PostgreSQL reports none for them.
func mergeShapes(l, r *shape) *shape {
	sh := &shape{open: l.open || r.open}
	for _, t := range append(append([]star(nil), l.starTables...), r.starTables...) {
		sh.starTables = append(sh.starTables, star{table: t.table})
	}
	for i, c := range l.cols {
		oc := outCol{name: c.name, plain: c.plain, origins: append([]origin(nil), c.origins...)}
		if i < len(r.cols) {
			oc.origins = append(oc.origins, r.cols[i].origins...)
			oc.plain = oc.plain && r.cols[i].plain
		}
		sh.cols = append(sh.cols, oc)
	}
	// Columns past the left side's (a star on the left) still carry the right side's origins.
	for i := len(l.cols); i < len(r.cols); i++ {
		c := r.cols[i]
		c.reported = false
		sh.cols = append(sh.cols, c)
	}
	return sh
}

func (w *walker) values(sc *scope, rows []*pg_query.Node) *shape {
	sh := &shape{}
	for _, row := range rows {
		items := row.GetList().GetItems()
		for i, it := range items {
			var os []origin
			v := w.walkExpr(sc, it, exprCtx{collect: &os})
			if i >= len(sh.cols) {
				// VALUES columns have no origin.
				sh.cols = append(sh.cols, outCol{name: "column" + itoa(i+1), plain: true})
			}
			sh.cols[i].origins = append(sh.cols[i].origins, os...)
			sh.cols[i].plain = sh.cols[i].plain && (v.plain() || len(os) == 0)
		}
	}
	return sh
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// targetList walks a SELECT list or RETURNING list and returns the shape it produces. Usage
// of its columns is applied by the consumer (output for a result, copy for INSERT ... SELECT,
// ...); inside expressions the columns already get function or aggregate usage here.
func (w *walker) targetList(sc *scope, list []*pg_query.Node) *shape {
	sh := &shape{}
	for _, t := range list {
		rt := t.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil {
			fields := stringsOf(cr.Fields)
			if len(fields) > 0 && fields[len(fields)-1] == "*" {
				w.seen[cr] = struct{}{}
				w.star(sc, fields[:len(fields)-1], sh)
				continue
			}
		}
		var os []origin
		v := w.walkExpr(sc, rt.Val, exprCtx{collect: &os})
		name := rt.Name
		if name == "" {
			name = derivedName(rt.Val)
		}
		sh.cols = append(sh.cols, outCol{name: name, origins: os, plain: v.plain(), reported: v == valColumn})
	}
	return sh
}

// derivedName is the column name PostgreSQL gives an unaliased target expression.
func derivedName(n *pg_query.Node) string {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_ColumnRef:
		f := stringsOf(x.ColumnRef.Fields)
		if len(f) > 0 {
			return f[len(f)-1]
		}
	case *pg_query.Node_FuncCall:
		f := stringsOf(x.FuncCall.Funcname)
		if len(f) > 0 {
			return f[len(f)-1]
		}
	case *pg_query.Node_TypeCast:
		return derivedName(x.TypeCast.Arg)
	}
	return "?column?"
}

// star expands SELECT * (qualifier empty) or q.* into sh.
func (w *walker) star(sc *scope, qualifier []string, sh *shape) {
	if sc == nil {
		return
	}
	if len(qualifier) == 0 {
		for _, e := range sc.entries {
			if !e.joinOnly {
				addEntryStar(sh, e)
			}
		}
		return
	}
	if e := findEntry(sc, qualifier); e != nil {
		addEntryStar(sh, e)
		return
	}
	sh.open = true
}

func addEntryStar(sh *shape, e *entry) {
	switch {
	case e.table != "":
		sh.starTables = append(sh.starTables, star{table: e.table, reported: true})
	case e.shape != nil:
		sh.cols = append(sh.cols, e.shape.cols...)
		sh.starTables = append(sh.starTables, e.shape.starTables...)
		sh.open = sh.open || e.shape.open
	}
	for _, c := range e.children {
		addEntryStar(sh, c)
	}
}

// entryStarOrigins returns the origins of e.* and whether PostgreSQL reports an origin for
// each of its columns.
func entryStarOrigins(e *entry) ([]origin, bool) {
	sh := &shape{}
	addEntryStar(sh, e)
	var os []origin
	reported := !sh.open
	for _, c := range sh.cols {
		os = append(os, c.origins...)
		reported = reported && c.plain && c.reported
	}
	for _, t := range sh.starTables {
		os = append(os, origin{t.table, "*"})
		reported = reported && t.reported
	}
	return os, reported
}

// byItem walks a GROUP BY, DISTINCT ON or ORDER BY item: besides input columns it may name
// an output column or give its position. ORDER BY and DISTINCT ON prefer an output column of
// that name, GROUP BY an input column (then both are recorded).
func (w *walker) byItem(sc *scope, n *pg_query.Node, u usage, sh *shape) {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_SortBy:
		w.byItem(sc, x.SortBy.Node, u, sh)
		return
	case *pg_query.Node_AConst:
		if iv := x.AConst.GetIval(); iv != nil && sh != nil {
			if i := int(iv.Ival) - 1; i >= 0 && i < len(sh.cols) {
				w.record(sh.cols[i].origins, u)
			}
		}
		return
	case *pg_query.Node_ColumnRef:
		if f := stringsOf(x.ColumnRef.Fields); len(f) == 1 && f[0] != "*" && sh != nil {
			matched := false
			for _, c := range sh.cols {
				if c.name == f[0] {
					w.record(c.origins, u)
					matched = true
				}
			}
			if matched && u != uGroup {
				w.seen[x.ColumnRef] = struct{}{}
				return
			}
		}
	}
	w.walkExpr(sc, n, exprCtx{use: u})
}

func (w *walker) sortClause(sc *scope, list []*pg_query.Node, sh *shape) {
	for _, s := range list {
		w.byItem(sc, s, uOrder, sh)
	}
}

func (w *walker) windowDef(sc *scope, wd *pg_query.WindowDef) {
	if wd == nil {
		return
	}
	for _, p := range wd.PartitionClause {
		w.walkExpr(sc, p, exprCtx{use: uGroup})
	}
	for _, o := range wd.OrderClause {
		w.walkExpr(sc, o, exprCtx{use: uOrder})
	}
	w.walkExpr(sc, wd.StartOffset, exprCtx{inExpr: true})
	w.walkExpr(sc, wd.EndOffset, exprCtx{inExpr: true})
}

// ---- FROM ----

func (w *walker) fromItem(sc *scope, n *pg_query.Node) []*entry {
	var added []*entry
	add := func(e *entry) {
		sc.entries = append(sc.entries, e)
		added = append(added, e)
	}
	switch x := n.GetNode().(type) {
	case *pg_query.Node_RangeVar:
		add(w.rangeVar(sc, x.RangeVar))
	case *pg_query.Node_RangeSubselect:
		rs := x.RangeSubselect
		sh := w.query(rs.Subquery, sc)
		e := &entry{shape: sh}
		if rs.Alias != nil {
			e.name = rs.Alias.Aliasname
			renameCols(sh, stringsOf(rs.Alias.Colnames))
		}
		add(e)
	case *pg_query.Node_RangeFunction:
		add(w.rangeFunction(sc, x.RangeFunction))
	case *pg_query.Node_JoinExpr:
		j := x.JoinExpr
		left := w.fromItem(sc, j.Larg)
		right := w.fromItem(sc, j.Rarg)
		added = append(added, left...)
		added = append(added, right...)
		w.walkExpr(sc, j.Quals, exprCtx{use: uFilter, pred: true})
		var merged joinMerge
		for _, e := range append(append([]*entry(nil), left...), right...) {
			merged.add(e.merged) // a join alias inside: its merged columns stay merged
		}
		for _, name := range stringsOf(j.UsingClause) {
			w.record(lookupIn(left, name), uFilter)
			w.record(lookupIn(right, name), uFilter)
			merged.addName(name)
		}
		if j.IsNatural {
			merged.natural = true
			for _, e := range append(append([]*entry(nil), left...), right...) {
				if !e.joinOnly {
					os, _ := entryStarOrigins(e)
					w.record(os, uFilter)
				}
			}
		}
		sc.merged.add(merged)
		children := append(append([]*entry(nil), left...), right...)
		for _, a := range []*pg_query.Alias{j.Alias, j.JoinUsingAlias} {
			if a != nil {
				// Every column this level's joins merge, nested joins' included.
				var am joinMerge
				am.add(sc.merged)
				add(&entry{name: a.Aliasname, children: nonJoinOnly(children), joinOnly: true, merged: am})
			}
		}
	case *pg_query.Node_RangeTableSample:
		ts := x.RangeTableSample
		added = append(added, w.fromItem(sc, ts.Relation)...)
		for _, a := range ts.Args {
			w.walkExpr(sc, a, exprCtx{inExpr: true})
		}
		w.walkExpr(sc, ts.Repeatable, exprCtx{inExpr: true})
	case *pg_query.Node_RangeTableFunc:
		tf := x.RangeTableFunc
		w.walkExpr(sc, tf.Docexpr, exprCtx{inExpr: true})
		w.walkExpr(sc, tf.Rowexpr, exprCtx{inExpr: true})
		for _, ns := range tf.Namespaces {
			w.walkExpr(sc, ns, exprCtx{inExpr: true})
		}
		sh := &shape{}
		for _, c := range tf.Columns {
			if col := c.GetRangeTableFuncCol(); col != nil {
				sh.cols = append(sh.cols, outCol{name: col.Colname})
				w.walkExpr(sc, col.Colexpr, exprCtx{inExpr: true})
				w.walkExpr(sc, col.Coldefexpr, exprCtx{inExpr: true})
			}
		}
		e := &entry{shape: sh}
		if tf.Alias != nil {
			e.name = tf.Alias.Aliasname
			renameCols(sh, stringsOf(tf.Alias.Colnames))
		}
		add(e)
	case *pg_query.Node_JsonTable:
		jt := x.JsonTable
		w.walkChildren(sc, jt.ProtoReflect(), exprCtx{inExpr: true})
		e := &entry{shape: &shape{open: true}}
		if jt.Alias != nil {
			e.name = jt.Alias.Aliasname
		}
		add(e)
	case nil:
	default:
		w.walkExpr(sc, n, exprCtx{inExpr: true})
	}
	return added
}

func nonJoinOnly(es []*entry) []*entry {
	var out []*entry
	for _, e := range es {
		if !e.joinOnly {
			out = append(out, e)
		}
	}
	return out
}

func (w *walker) rangeVar(sc *scope, rv *pg_query.RangeVar) *entry {
	e := &entry{name: rv.Relname}
	if rv.Schemaname == "" && rv.Catalogname == "" {
		if sh := sc.cte(rv.Relname); sh != nil {
			e.shape = sh
			if rv.Alias != nil {
				e.name = rv.Alias.Aliasname
				if cn := stringsOf(rv.Alias.Colnames); len(cn) > 0 {
					c := *sh
					c.cols = append([]outCol(nil), sh.cols...)
					renameCols(&c, cn)
					e.shape = &c
				}
			}
			return e
		}
	}
	e.table = qualify(rv)
	e.schema = rv.Schemaname
	w.read(e.table)
	if rv.Alias != nil {
		e.name = rv.Alias.Aliasname
		e.schema = ""
		e.renamed = stringsOf(rv.Alias.Colnames)
	}
	return e
}

func (w *walker) rangeFunction(sc *scope, rf *pg_query.RangeFunction) *entry {
	sh := &shape{open: true}
	for _, f := range rf.Functions {
		items := f.GetList().GetItems()
		if len(items) > 0 {
			w.walkExpr(sc, items[0], exprCtx{inExpr: true})
		}
		if len(items) > 1 {
			for _, cd := range items[1].GetList().GetItems() {
				if c := cd.GetColumnDef(); c != nil {
					sh.cols = append(sh.cols, outCol{name: c.Colname})
				}
			}
		}
	}
	for _, cd := range rf.Coldeflist {
		if c := cd.GetColumnDef(); c != nil {
			sh.cols = append(sh.cols, outCol{name: c.Colname})
		}
	}
	e := &entry{shape: sh}
	if rf.Alias != nil {
		e.name = rf.Alias.Aliasname
		renameCols(sh, stringsOf(rf.Alias.Colnames))
	}
	return e
}

// ---- column resolution ----

// findEntry finds the entry a qualifier (t, s.t or db.s.t) names, innermost level first.
func findEntry(sc *scope, q []string) *entry {
	for s := sc; s != nil; s = s.parent {
		for i := len(s.entries) - 1; i >= 0; i-- {
			e := s.entries[i]
			if e.name != q[len(q)-1] {
				continue
			}
			if len(q) >= 2 && !schemaMatches(e, q[len(q)-2]) {
				continue
			}
			return e
		}
	}
	return nil
}

// schemaMatches reports whether schema.name can name entry e: a base table written with that
// schema, or written without one and living in public; derived entries match by name alone.
func schemaMatches(e *entry, schema string) bool {
	if e.table == "" || e.schema == schema {
		return true
	}
	return e.schema == "" && schema == "public" && e.table == "public."+e.name
}

// lookupCol resolves column name in one entry. definite: the entry surely has the column;
// found: it may have it; reported: PostgreSQL reports the base column as the origin of a
// result column that is this reference.
func lookupCol(e *entry, name string) (os []origin, plain, reported, definite, found bool) {
	switch {
	case e.table != "":
		for _, r := range e.renamed {
			if r == name {
				// A renamed column's real name is unknown here: it may be any column.
				return []origin{{e.table, "*"}}, true, true, true, true
			}
		}
		return []origin{{e.table, name}}, true, true, false, true
	case e.shape != nil:
		for _, c := range e.shape.cols {
			if c.name == name {
				return c.origins, c.plain, c.plain && c.reported, true, true
			}
		}
		if len(e.shape.starTables) > 0 {
			reported = true
			for _, t := range e.shape.starTables {
				os = append(os, origin{t.table, name})
				reported = reported && t.reported
			}
			return os, true, reported, false, true
		}
		return nil, true, false, false, e.shape.open
	}
	plain, reported = true, !e.merged.has(name)
	for _, c := range e.children {
		cos, cplain, crep, cdef, cfound := lookupCol(c, name)
		if cfound {
			os = append(os, cos...)
			plain = plain && cplain
			reported = reported && crep
			definite = definite || cdef
			found = true
		}
	}
	return os, plain, reported, definite, found
}

// lookupIn resolves name among a set of entries (one side of JOIN ... USING).
func lookupIn(es []*entry, name string) []origin {
	var os []origin
	n := 0
	for _, e := range es {
		if e.joinOnly {
			continue
		}
		if cos, _, _, _, found := lookupCol(e, name); found {
			os = append(os, cos...)
			n++
		}
	}
	if n == 0 {
		return []origin{{"", name}}
	}
	return os
}

// resolve finds where a column reference comes from. An unqualified name is attributed to a
// table only when exactly one FROM item (at the innermost level that surely has it, and any
// level before) can have it; otherwise its table is "" and policy matches it by name. reported
// says whether PostgreSQL reports the base column as the origin of a result column that is
// this reference: not for whole rows, fields of composite values, merged join columns, and
// columns of set operations, VALUES, functions and recursive CTEs.
func (w *walker) resolve(sc *scope, fields []string) (os []origin, plain, reported bool) {
	if len(fields) == 0 {
		return nil, false, false
	}
	name := fields[len(fields)-1]
	if len(fields) >= 2 {
		q := fields[:len(fields)-1]
		if e := findEntry(sc, q); e != nil {
			if name == "*" {
				os, rep := entryStarOrigins(e)
				return os, true, rep
			}
			os, plain, rep, _, found := lookupCol(e, name)
			if !found {
				return []origin{{e.table, name}}, true, e.table != ""
			}
			return os, plain, rep
		}
		// Not a table: a composite column's field (c.f), or an error PostgreSQL will report.
		os, _, _ := w.resolve(sc, fields[:1])
		return append(os, origin{"", name}), false, false
	}
	if name == "*" {
		reported = true
		if sc != nil {
			for _, e := range sc.entries {
				if !e.joinOnly {
					eos, rep := entryStarOrigins(e)
					os = append(os, eos...)
					reported = reported && rep
				}
			}
		}
		return os, true, reported
	}
	type cand struct {
		os       []origin
		plain    bool
		reported bool
		base     bool
	}
	var cands []cand
	var whole []origin // the name is also a FROM item: a whole-row reference
	merged := false
	for s := sc; s != nil; s = s.parent {
		var definite []cand
		for _, e := range s.entries {
			if e.name == name && whole == nil {
				whole, _ = entryStarOrigins(e)
			}
			if e.joinOnly {
				continue
			}
			os, plain, rep, def, found := lookupCol(e, name)
			if !found {
				continue
			}
			merged = merged || s.merged.has(name)
			c := cand{os: os, plain: plain, reported: rep, base: e.table != "" && !def}
			if def {
				definite = append(definite, c)
			} else {
				cands = append(cands, c)
			}
		}
		if len(definite) > 0 {
			cands = append(cands, definite...)
			break
		}
	}
	plain, reported = true, !merged
	switch len(cands) {
	case 0:
		os = []origin{{"", name}}
		reported = false
	case 1:
		os, plain = cands[0].os, cands[0].plain
		reported = reported && cands[0].reported
	default:
		base := false
		for _, c := range cands {
			reported = reported && c.reported
			if c.base {
				base = true
				continue
			}
			os = append(os, c.os...)
			plain = plain && c.plain
		}
		if base {
			os = append(os, origin{"", name})
		}
	}
	if whole != nil {
		// A whole row is a value of the row type: no column origin.
		os = append(os, whole...)
		reported = false
	}
	return os, plain, reported
}

// ---- expressions ----

// refVal is what a resolved column reference is as a value in ctx.
func refVal(plain, reported bool, ctx exprCtx) val {
	switch {
	case !plain || ctx.inExpr || ctx.inAgg:
		return valComputed
	case reported:
		return valColumn
	}
	return valPassed
}

// walkExpr walks an expression, records column usages and function calls, gathers the
// value's origins into ctx.collect, and reports what the value is.
func (w *walker) walkExpr(sc *scope, n *pg_query.Node, ctx exprCtx) val {
	if n == nil {
		return valComputed
	}
	switch x := n.Node.(type) {
	case nil:
		return valComputed
	case *pg_query.Node_ColumnRef:
		w.seen[x.ColumnRef] = struct{}{}
		os, plain, reported := w.resolve(sc, stringsOf(x.ColumnRef.Fields))
		w.record(os, ctx.bits())
		if ctx.collect != nil {
			*ctx.collect = append(*ctx.collect, os...)
		}
		return refVal(plain, reported, ctx)
	case *pg_query.Node_AConst, *pg_query.Node_ParamRef, *pg_query.Node_SetToDefault,
		*pg_query.Node_SqlvalueFunction, *pg_query.Node_TypeName:
		return valComputed
	case *pg_query.Node_AIndirection:
		ind := x.AIndirection
		if cr := ind.Arg.GetColumnRef(); cr != nil {
			fields := stringsOf(cr.Fields)
			ok := true
			for _, i := range ind.Indirection {
				switch f := i.GetNode().(type) {
				case *pg_query.Node_String_:
					fields = append(fields, f.String_.Sval)
				case *pg_query.Node_AStar:
					fields = append(fields, "*") // (c).*
				default:
					ok = false
				}
				if !ok {
					break
				}
			}
			if ok {
				w.seen[cr] = struct{}{}
				os, plain, reported := w.resolve(sc, fields)
				w.record(os, ctx.bits())
				if ctx.collect != nil {
					*ctx.collect = append(*ctx.collect, os...)
				}
				return refVal(plain, reported, ctx)
			}
		}
		w.walkExpr(sc, ind.Arg, ctx.nested())
		for _, i := range ind.Indirection {
			w.walkExpr(sc, i, ctx.nested())
		}
		return valComputed
	case *pg_query.Node_AExpr:
		c := ctx.nested()
		if ctx.pred && predicateKind(x.AExpr) {
			c = ctx
			if ctx.use == uFilter && eqParam(x.AExpr) {
				c.use = uFilterEqParam
			}
		}
		w.walkExpr(sc, x.AExpr.Lexpr, c)
		w.walkExpr(sc, x.AExpr.Rexpr, c)
		return valComputed
	case *pg_query.Node_BoolExpr:
		c := ctx
		if !ctx.pred {
			c = ctx.nested()
		}
		for _, a := range x.BoolExpr.Args {
			w.walkExpr(sc, a, c)
		}
		return valComputed
	case *pg_query.Node_NullTest:
		c := ctx
		if !ctx.pred {
			c = ctx.nested()
		}
		w.walkExpr(sc, x.NullTest.Arg, c)
		return valComputed
	case *pg_query.Node_BooleanTest:
		c := ctx
		if !ctx.pred {
			c = ctx.nested()
		}
		w.walkExpr(sc, x.BooleanTest.Arg, c)
		return valComputed
	case *pg_query.Node_List:
		for _, it := range x.List.Items {
			w.walkExpr(sc, it, ctx)
		}
		return valComputed
	case *pg_query.Node_RowExpr:
		c := ctx
		if !ctx.pred {
			c = ctx.nested()
		}
		for _, a := range x.RowExpr.Args {
			w.walkExpr(sc, a, c)
		}
		return valComputed
	case *pg_query.Node_FuncCall:
		w.funcCall(sc, x.FuncCall, ctx)
		return valComputed
	case *pg_query.Node_SubLink:
		return w.subLink(sc, x.SubLink, ctx)
	case *pg_query.Node_SortBy:
		c := ctx
		c.use |= uOrder
		c.pred = false
		w.walkExpr(sc, x.SortBy.Node, c)
		return valComputed
	case *pg_query.Node_GroupingSet:
		for _, it := range x.GroupingSet.Content {
			w.walkExpr(sc, it, ctx)
		}
		return valComputed
	case *pg_query.Node_NamedArgExpr:
		return w.walkExpr(sc, x.NamedArgExpr.Arg, ctx)
	case *pg_query.Node_ResTarget:
		return w.walkExpr(sc, x.ResTarget.Val, ctx)
	case *pg_query.Node_SelectStmt, *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt,
		*pg_query.Node_DeleteStmt, *pg_query.Node_MergeStmt:
		// Only reached through generic walks (view, rule and function bodies).
		sh := w.query(n, sc)
		w.apply(sh, ctx.bits(), false)
		return valComputed
	default:
		w.walkChildren(sc, innerMessage(n), ctx.nested())
		return valComputed
	}
}

// eqParam reports whether e is column = $n: an equality of a column reference with a bound
// parameter (possibly cast to a scalar type), which reveals only whether the one value sent
// matches.
func eqParam(e *pg_query.A_Expr) bool {
	if e.Kind != pg_query.A_Expr_Kind_AEXPR_OP {
		return false
	}
	name := stringsOf(e.Name)
	if !slices.Equal(name, []string{"="}) && !slices.Equal(name, []string{"pg_catalog", "="}) {
		return false
	}
	col := func(n *pg_query.Node) bool { return n.GetColumnRef() != nil }
	return (col(e.Lexpr) && scalarParam(e.Rexpr)) || (col(e.Rexpr) && scalarParam(e.Lexpr))
}

// scalarParam reports a bound parameter, bare or cast to a type that is not an array.
func scalarParam(n *pg_query.Node) bool {
	if n.GetParamRef() != nil {
		return true
	}
	if tc := n.GetTypeCast(); tc != nil && tc.Arg.GetParamRef() != nil {
		tn := tc.TypeName
		return tn != nil && len(tn.ArrayBounds) == 0 && !tn.Setof
	}
	return false
}

// predicateKind reports operators that only compare at the predicate level of a WHERE or ON:
// the column is then used as a filter, not passed through a function.
func predicateKind(e *pg_query.A_Expr) bool {
	switch e.Kind {
	case pg_query.A_Expr_Kind_AEXPR_OP:
		name := stringsOf(e.Name)
		if len(name) == 0 {
			return false
		}
		switch name[len(name)-1] {
		case "=", "<>", "!=", "<", ">", "<=", ">=", "~~", "!~~", "~~*", "!~~*", "~", "!~", "~*", "!~*", "^@":
			return true
		}
		return false
	case pg_query.A_Expr_Kind_AEXPR_OP_ANY, pg_query.A_Expr_Kind_AEXPR_OP_ALL,
		pg_query.A_Expr_Kind_AEXPR_DISTINCT, pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT,
		pg_query.A_Expr_Kind_AEXPR_IN, pg_query.A_Expr_Kind_AEXPR_LIKE, pg_query.A_Expr_Kind_AEXPR_ILIKE,
		pg_query.A_Expr_Kind_AEXPR_SIMILAR, pg_query.A_Expr_Kind_AEXPR_BETWEEN,
		pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM,
		pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		return true
	}
	return false
}

// subLink walks a subquery expression. A scalar subquery's value may be its column unchanged,
// but PostgreSQL reports no origin for it.
func (w *walker) subLink(sc *scope, sl *pg_query.SubLink, ctx exprCtx) val {
	tc := ctx
	if !ctx.pred {
		tc = ctx.nested()
	}
	w.walkExpr(sc, sl.Testexpr, tc)
	sh := w.query(sl.Subselect, sc)
	if sl.SubLinkType == pg_query.SubLinkType_EXISTS_SUBLINK {
		// EXISTS reads no value of its target list (set operations in it got setop usage,
		// expressions in it function usage).
		return valComputed
	}
	plain := false
	if sl.SubLinkType == pg_query.SubLinkType_EXPR_SUBLINK && len(sh.cols) == 1 && len(sh.starTables) == 0 {
		plain = sh.cols[0].plain && !ctx.inExpr && !ctx.inAgg
	}
	// A plain scalar subquery in a target list gets its usage from the consumer (output,
	// copy, ...); ARRAY(...) and row comparisons make a new value: function usage.
	bits := ctx.bits()
	if !plain && bits == 0 {
		bits = uFunction
	}
	w.apply(sh, bits, false)
	if ctx.collect != nil {
		for _, c := range sh.cols {
			*ctx.collect = append(*ctx.collect, c.origins...)
		}
		for _, t := range sh.starTables {
			*ctx.collect = append(*ctx.collect, origin{t.table, "*"})
		}
	}
	if plain {
		return valPassed
	}
	return valComputed
}

func (w *walker) funcCall(sc *scope, fc *pg_query.FuncCall, ctx exprCtx) {
	schema, name := w.function(fc)
	agg := fc.AggStar || fc.AggDistinct || len(fc.AggOrder) > 0 || fc.AggFilter != nil ||
		fc.AggWithinGroup || isAggregate(schema, name)
	ac := ctx
	ac.pred = false
	if agg {
		ac.inAgg = true
	} else {
		ac.inExpr = true
	}
	for _, a := range fc.Args {
		w.walkExpr(sc, a, ac)
	}
	for _, o := range fc.AggOrder {
		c := ac
		c.use |= uOrder
		w.walkExpr(sc, o, c)
	}
	w.walkExpr(sc, fc.AggFilter, exprCtx{use: uFilter, pred: true})
	if fc.Over != nil {
		w.windowDef(sc, fc.Over)
	}
	if name == "set_config" && (schema == "" || schema == "pg_catalog") {
		w.setConfig(fc)
	}
}

// function records a function call and its flags; it returns the schema (as written, or "")
// and the lower-case name.
func (w *walker) function(fc *pg_query.FuncCall) (string, string) {
	parts := stringsOf(fc.Funcname)
	if len(parts) == 0 {
		return "", ""
	}
	if fc.Funcformat == pg_query.CoercionForm_COERCE_SQL_SYNTAX && len(parts) == 2 && parts[0] == "pg_catalog" {
		parts = parts[1:] // SQL syntax (EXTRACT, SUBSTRING ... FROM, ...): not written so
	}
	for i := range parts {
		parts[i] = strings.ToLower(parts[i])
	}
	name := parts[len(parts)-1]
	schema := ""
	if len(parts) >= 2 {
		schema = parts[len(parts)-2]
	}
	w.funcs[strings.Join(parts, ".")] = struct{}{}
	switch classifyFunction(schema, name) {
	case funcDangerous:
		w.flag(FlagDangerousFunction)
		w.readOnly = false
	case funcSideEffect:
		w.flag(FlagSideEffectFunction)
		w.readOnly = false
	case funcUnknown:
		w.flag(FlagUnknownFunction)
		w.readOnly = false
	}
	return schema, name
}

// setConfig records the setting set_config changes. A name that is not a constant could be
// any setting, role included: that is dangerous, and recorded as the setting "*".
func (w *walker) setConfig(fc *pg_query.FuncCall) {
	if len(fc.Args) == 0 {
		return
	}
	c := fc.Args[0].GetAConst()
	if c == nil || c.GetSval() == nil {
		w.setting("*")
		w.flag(FlagDangerousFunction)
		w.flag(FlagSetRole)
		w.flag(FlagSetsReadOnly)
		return
	}
	name := strings.ToLower(strings.TrimSpace(c.GetSval().Sval))
	w.setting(name)
	w.settingFlags(name)
	switch name {
	case "role", "session_authorization", "transaction_read_only":
		w.flag(FlagDangerousFunction)
	}
}

// settingFlags flags changes of the settings that guard roles and read-only transactions.
func (w *walker) settingFlags(name string) {
	switch strings.ToLower(name) {
	case "role", "session_authorization":
		w.flag(FlagSetRole)
		w.readOnly = false
	case "transaction_read_only", "default_transaction_read_only":
		w.flag(FlagSetsReadOnly)
		w.readOnly = false
	}
}

// innerMessage returns the concrete message a Node wraps.
func innerMessage(n *pg_query.Node) protoreflect.Message {
	m := n.ProtoReflect()
	od := m.Descriptor().Oneofs().Get(0)
	fd := m.WhichOneof(od)
	if fd == nil {
		return nil
	}
	return m.Get(fd).Message()
}

// walkChildren walks every node below m that no specific case handles, so that no function
// call or subquery is missed wherever the grammar puts it.
func (w *walker) walkChildren(sc *scope, m protoreflect.Message, ctx exprCtx) {
	if m == nil {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				w.walkMsg(sc, l.Get(i).Message().Interface(), ctx)
			}
			return true
		}
		w.walkMsg(sc, v.Message().Interface(), ctx)
		return true
	})
}

func (w *walker) walkMsg(sc *scope, m proto.Message, ctx exprCtx) {
	switch x := m.(type) {
	case *pg_query.Node:
		w.walkExpr(sc, x, ctx)
	case *pg_query.FuncCall:
		w.funcCall(sc, x, ctx)
	case *pg_query.SelectStmt:
		w.apply(w.selectStmt(x, sc), ctx.bits(), false)
	case *pg_query.RangeVar, *pg_query.TypeName, *pg_query.Alias:
	case *pg_query.WindowDef:
		w.windowDef(sc, x)
	default:
		w.walkChildren(sc, m.ProtoReflect(), ctx)
	}
}

// ---- results ----

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (w *walker) columns() []ColumnUse {
	out := make([]ColumnUse, 0, len(w.cols))
	for o, u := range w.cols {
		if u == 0 || o.column == "" {
			continue
		}
		out = append(out, ColumnUse{Table: o.table, Column: o.column, Usage: u.names()})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Table != out[j].Table {
			return out[i].Table < out[j].Table
		}
		return out[i].Column < out[j].Column
	})
	return out
}

// ---- the sweep ----

// sweep gives function usage to every column reference under n that the walk did not
// resolve: one in a clause the walker does not know (a new grammar rule, a DDL expression)
// still counts as a use, of a column attributed to no table. The statements EXPLAIN and
// PREPARE wrap are classified on their own and are not swept here.
func (w *walker) sweep(n *pg_query.Node) {
	w.sweepMsg(n.ProtoReflect(), 0)
}

// maxSweepDepth bounds the sweep's recursion; the parser bounds its trees well below it.
const maxSweepDepth = 10000

func (w *walker) sweepMsg(m protoreflect.Message, depth int) {
	if m == nil || !m.IsValid() || depth > maxSweepDepth {
		return
	}
	switch x := m.Interface().(type) {
	case *pg_query.ColumnRef:
		if _, ok := w.seen[x]; !ok {
			w.seen[x] = struct{}{}
			if f := stringsOf(x.Fields); len(f) > 0 {
				w.record([]origin{{"", f[len(f)-1]}}, uFunction)
			}
		}
		return
	case *pg_query.ExplainStmt, *pg_query.PrepareStmt:
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				w.sweepMsg(l.Get(i).Message(), depth+1)
			}
			return true
		}
		w.sweepMsg(v.Message(), depth+1)
		return true
	})
}
