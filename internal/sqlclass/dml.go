package sqlclass

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// targetEntry is the entry of an INSERT/UPDATE/DELETE/MERGE target table; the table is
// written.
func (w *walker) targetEntry(rv *pg_query.RangeVar) *entry {
	if rv == nil {
		return &entry{}
	}
	t := qualify(rv)
	w.write(t)
	e := &entry{name: rv.Relname, schema: rv.Schemaname, table: t}
	if rv.Alias != nil {
		e.name, e.schema = rv.Alias.Aliasname, ""
	}
	return e
}

// assign records the columns a SET list or INSERT column list writes; values copied into
// them are walked as copy usage.
func (w *walker) assign(sc *scope, table string, list []*pg_query.Node) {
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		w.record([]origin{{table, rt.Name}}, uWrite)
		if rt.Val == nil {
			continue
		}
		if ma := rt.Val.GetMultiAssignRef(); ma != nil {
			if ma.Colno == 1 {
				w.walkExpr(sc, ma.Source, exprCtx{use: uCopy})
			}
			continue
		}
		w.walkExpr(sc, rt.Val, exprCtx{use: uCopy})
	}
}

// returning walks a RETURNING list: its columns are returned to the client (returning usage)
// and exposed to a query reading the statement (a data-modifying CTE).
func (w *walker) returning(sc *scope, target *entry, list []*pg_query.Node) *shape {
	if len(list) == 0 {
		return &shape{}
	}
	if target.table != "" {
		w.read(target.table)
	}
	sh := w.targetList(sc, list)
	w.apply(sh, uReturning, false)
	return sh
}

func (w *walker) insert(s *pg_query.InsertStmt, parent *scope) *shape {
	sc := &scope{parent: parent}
	w.with(sc, s.WithClause)
	target := w.targetEntry(s.Relation)
	if len(s.Cols) == 0 {
		w.record([]origin{{target.table, "*"}}, uWrite)
	}
	for _, c := range s.Cols {
		if rt := c.GetResTarget(); rt != nil {
			w.record([]origin{{target.table, rt.Name}}, uWrite)
		}
	}
	if s.SelectStmt != nil {
		w.apply(w.query(s.SelectStmt, sc), uCopy, false)
	}
	if oc := s.OnConflictClause; oc != nil {
		tsc := &scope{parent: sc, entries: []*entry{target, {name: "excluded", table: target.table}}}
		if inf := oc.Infer; inf != nil {
			for _, ie := range inf.IndexElems {
				if el := ie.GetIndexElem(); el != nil {
					if el.Name != "" {
						w.record([]origin{{target.table, el.Name}}, uFilter)
					}
					w.walkExpr(tsc, el.Expr, exprCtx{use: uFilter})
				}
			}
			w.walkExpr(tsc, inf.WhereClause, exprCtx{use: uFilter, pred: true})
		}
		w.assign(tsc, target.table, oc.TargetList)
		w.walkExpr(tsc, oc.WhereClause, exprCtx{use: uFilter, pred: true})
	}
	rsc := &scope{parent: sc, entries: []*entry{target}}
	return w.returning(rsc, target, s.ReturningList)
}

func (w *walker) update(s *pg_query.UpdateStmt, parent *scope) *shape {
	sc := &scope{parent: parent}
	w.with(sc, s.WithClause)
	target := w.targetEntry(s.Relation)
	sc.entries = append(sc.entries, target)
	for _, f := range s.FromClause {
		w.fromItem(sc, f)
	}
	w.assign(sc, target.table, s.TargetList)
	w.walkExpr(sc, s.WhereClause, exprCtx{use: uFilter, pred: true})
	return w.returning(sc, target, s.ReturningList)
}

func (w *walker) delete(s *pg_query.DeleteStmt, parent *scope) *shape {
	sc := &scope{parent: parent}
	w.with(sc, s.WithClause)
	target := w.targetEntry(s.Relation)
	sc.entries = append(sc.entries, target)
	for _, f := range s.UsingClause {
		w.fromItem(sc, f)
	}
	w.walkExpr(sc, s.WhereClause, exprCtx{use: uFilter, pred: true})
	return w.returning(sc, target, s.ReturningList)
}

func (w *walker) merge(s *pg_query.MergeStmt, parent *scope) *shape {
	sc := &scope{parent: parent}
	w.with(sc, s.WithClause)
	target := w.targetEntry(s.Relation)
	sc.entries = append(sc.entries, target)
	w.fromItem(sc, s.SourceRelation)
	w.walkExpr(sc, s.JoinCondition, exprCtx{use: uFilter, pred: true})
	for _, n := range s.MergeWhenClauses {
		mw := n.GetMergeWhenClause()
		if mw == nil {
			continue
		}
		w.walkExpr(sc, mw.Condition, exprCtx{use: uFilter, pred: true})
		switch mw.CommandType {
		case pg_query.CmdType_CMD_UPDATE:
			w.assign(sc, target.table, mw.TargetList)
		case pg_query.CmdType_CMD_INSERT:
			if len(mw.TargetList) == 0 {
				w.record([]origin{{target.table, "*"}}, uWrite)
			}
			w.assign(sc, target.table, mw.TargetList)
			for _, v := range mw.Values {
				w.walkExpr(sc, v, exprCtx{use: uCopy})
			}
		}
	}
	return w.returning(sc, target, s.ReturningList)
}
