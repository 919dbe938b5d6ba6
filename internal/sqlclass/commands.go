package sqlclass

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// classifyStmt classifies one parsed statement (without its text).
func classifyStmt(n *pg_query.Node) Statement {
	w := newWalker()
	var st Statement
	w.stmt(n, &st)
	w.sweep(n)
	w.finish(&st)
	return st
}

func (w *walker) finish(st *Statement) {
	st.Reads = sortedKeys(w.reads)
	st.Writes = sortedKeys(w.writes)
	st.Functions = sortedKeys(w.funcs)
	st.Flags = sortedKeys(w.flags)
	st.Settings = sortedKeys(w.settings)
	st.Columns = w.columns()
	st.ReadOnly = w.readOnly && len(st.Writes) == 0
}

// objectNames are the command-tag spellings of object types that differ from the enum name.
var objectNames = map[pg_query.ObjectType]string{
	pg_query.ObjectType_OBJECT_ACCESS_METHOD:         "ACCESS METHOD",
	pg_query.ObjectType_OBJECT_AMOP:                  "OPERATOR FAMILY",
	pg_query.ObjectType_OBJECT_AMPROC:                "OPERATOR FAMILY",
	pg_query.ObjectType_OBJECT_ATTRIBUTE:             "TYPE",
	pg_query.ObjectType_OBJECT_COLUMN:                "TABLE",
	pg_query.ObjectType_OBJECT_DEFAULT:               "TABLE",
	pg_query.ObjectType_OBJECT_DEFACL:                "DEFAULT PRIVILEGES",
	pg_query.ObjectType_OBJECT_DOMCONSTRAINT:         "DOMAIN",
	pg_query.ObjectType_OBJECT_EVENT_TRIGGER:         "EVENT TRIGGER",
	pg_query.ObjectType_OBJECT_FDW:                   "FOREIGN DATA WRAPPER",
	pg_query.ObjectType_OBJECT_FOREIGN_SERVER:        "SERVER",
	pg_query.ObjectType_OBJECT_FOREIGN_TABLE:         "FOREIGN TABLE",
	pg_query.ObjectType_OBJECT_LARGEOBJECT:           "LARGE OBJECT",
	pg_query.ObjectType_OBJECT_MATVIEW:               "MATERIALIZED VIEW",
	pg_query.ObjectType_OBJECT_OPCLASS:               "OPERATOR CLASS",
	pg_query.ObjectType_OBJECT_OPFAMILY:              "OPERATOR FAMILY",
	pg_query.ObjectType_OBJECT_PARAMETER_ACL:         "PARAMETER",
	pg_query.ObjectType_OBJECT_PUBLICATION_NAMESPACE: "PUBLICATION",
	pg_query.ObjectType_OBJECT_PUBLICATION_REL:       "PUBLICATION",
	pg_query.ObjectType_OBJECT_STATISTIC_EXT:         "STATISTICS",
	pg_query.ObjectType_OBJECT_TABCONSTRAINT:         "TABLE",
	pg_query.ObjectType_OBJECT_TSCONFIGURATION:       "TEXT SEARCH CONFIGURATION",
	pg_query.ObjectType_OBJECT_TSDICTIONARY:          "TEXT SEARCH DICTIONARY",
	pg_query.ObjectType_OBJECT_TSPARSER:              "TEXT SEARCH PARSER",
	pg_query.ObjectType_OBJECT_TSTEMPLATE:            "TEXT SEARCH TEMPLATE",
	pg_query.ObjectType_OBJECT_USER_MAPPING:          "USER MAPPING",
	pg_query.ObjectType_OBJECT_TYPE_UNDEFINED:        "OBJECT",
}

func objectName(t pg_query.ObjectType) string {
	if s, ok := objectNames[t]; ok && s != "" {
		return s
	}
	return strings.ReplaceAll(strings.TrimPrefix(t.String(), "OBJECT_"), "_", " ")
}

// tableLike are the object kinds whose data lives in a table: DDL on them counts as a write.
func tableLike(t pg_query.ObjectType) bool {
	switch t {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_FOREIGN_TABLE, pg_query.ObjectType_OBJECT_MATVIEW:
		return true
	}
	return false
}

// ddl marks a schema or catalog change: nothing it does is read-only.
func (w *walker) ddl(st *Statement, command string) {
	st.Command = command
	st.DDL = true
	w.readOnly = false
}

// stmt classifies statement n into st (command, name, nested statements) and w (tables,
// columns, functions, flags, settings).
func (w *walker) stmt(n *pg_query.Node, st *Statement) {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		st.Command = "SELECT"
		sh := w.selectStmt(x.SelectStmt, nil)
		if into := x.SelectStmt.IntoClause; into != nil {
			w.flag(FlagSelectInto)
			w.write(qualify(into.Rel))
			w.apply(sh, uCopy, false)
		} else {
			w.output(sh)
		}
	case *pg_query.Node_InsertStmt:
		st.Command = "INSERT"
		w.insert(x.InsertStmt, nil)
	case *pg_query.Node_UpdateStmt:
		st.Command = "UPDATE"
		w.update(x.UpdateStmt, nil)
	case *pg_query.Node_DeleteStmt:
		st.Command = "DELETE"
		w.delete(x.DeleteStmt, nil)
	case *pg_query.Node_MergeStmt:
		st.Command = "MERGE"
		w.merge(x.MergeStmt, nil)
	case *pg_query.Node_CopyStmt:
		st.Command = "COPY"
		st.Copy = w.copyStmt(x.CopyStmt)
	case *pg_query.Node_TruncateStmt:
		st.Command = "TRUNCATE"
		for _, r := range x.TruncateStmt.Relations {
			if rv := r.GetRangeVar(); rv != nil {
				w.write(qualify(rv))
			}
		}
	case *pg_query.Node_ExplainStmt:
		st.Command = "EXPLAIN"
		inner := classifyStmt(x.ExplainStmt.Query)
		st.Explains = &inner
		analyze := false
		for _, o := range x.ExplainStmt.Options {
			if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, "analyze") {
				analyze = defBool(d, true)
			}
		}
		if analyze {
			// EXPLAIN ANALYZE runs the statement: it is what it explains.
			w.flag(FlagExplainAnalyze)
			var tmp Statement
			w.stmt(x.ExplainStmt.Query, &tmp)
		}
	case *pg_query.Node_PrepareStmt:
		st.Command = "PREPARE"
		st.Name = x.PrepareStmt.Name
		inner := classifyStmt(x.PrepareStmt.Query)
		st.Prepared = &inner
	case *pg_query.Node_ExecuteStmt:
		st.Command = "EXECUTE"
		st.Name = x.ExecuteStmt.Name
		w.opaque()
		for _, p := range x.ExecuteStmt.Params {
			w.walkExpr(nil, p, exprCtx{inExpr: true})
		}
	case *pg_query.Node_DeallocateStmt:
		st.Command = "DEALLOCATE"
		st.Name = x.DeallocateStmt.Name
		if x.DeallocateStmt.Isall || st.Name == "" {
			st.Name = "*"
		}
	case *pg_query.Node_DoStmt:
		st.Command = "DO"
		w.opaque()
	case *pg_query.Node_CallStmt:
		st.Command = "CALL"
		w.opaque()
		if fc := x.CallStmt.Funccall; fc != nil {
			w.funcCall(nil, fc, exprCtx{})
		}
	case *pg_query.Node_VariableSetStmt:
		w.variableSet(x.VariableSetStmt, st)
	case *pg_query.Node_VariableShowStmt:
		st.Command = "SHOW"
	case *pg_query.Node_TransactionStmt:
		w.transaction(x.TransactionStmt, st)
	case *pg_query.Node_DeclareCursorStmt:
		st.Command = "DECLARE"
		st.Name = x.DeclareCursorStmt.Portalname
		// The rows reach the client through FETCH: they are this statement's output.
		sh := w.query(x.DeclareCursorStmt.Query, nil)
		w.output(sh)
	case *pg_query.Node_FetchStmt:
		st.Command = "FETCH"
		if x.FetchStmt.Ismove {
			st.Command = "MOVE"
		}
		st.Name = x.FetchStmt.Portalname
	case *pg_query.Node_ClosePortalStmt:
		st.Command = "CLOSE"
		st.Name = x.ClosePortalStmt.Portalname
		if st.Name == "" {
			st.Name = "*"
		}
	case *pg_query.Node_ListenStmt:
		st.Command = "LISTEN"
		st.Name = x.ListenStmt.Conditionname
	case *pg_query.Node_UnlistenStmt:
		st.Command = "UNLISTEN"
		st.Name = x.UnlistenStmt.Conditionname
		if st.Name == "" {
			st.Name = "*"
		}
	case *pg_query.Node_NotifyStmt:
		st.Command = "NOTIFY"
		st.Name = x.NotifyStmt.Conditionname
		w.readOnly = false // other sessions see it
	case *pg_query.Node_DiscardStmt:
		st.Command = "DISCARD"
	case *pg_query.Node_ConstraintsSetStmt:
		st.Command = "SET CONSTRAINTS"
	case *pg_query.Node_LockStmt:
		st.Command = "LOCK"
		w.readOnly = false // blocks other sessions
		for _, r := range x.LockStmt.Relations {
			if rv := r.GetRangeVar(); rv != nil {
				w.read(qualify(rv))
			}
		}
	case *pg_query.Node_VacuumStmt:
		st.Command = "ANALYZE"
		if x.VacuumStmt.IsVacuumcmd {
			st.Command = "VACUUM"
		}
		w.readOnly = false
	case *pg_query.Node_CheckPointStmt:
		st.Command = "CHECKPOINT"
		w.readOnly = false
	case *pg_query.Node_ClusterStmt:
		st.Command = "CLUSTER"
		w.readOnly = false
	case *pg_query.Node_ReindexStmt:
		st.Command = "REINDEX"
		w.readOnly = false
	case *pg_query.Node_LoadStmt:
		st.Command = "LOAD"
		w.readOnly = false
		w.flag(FlagDangerousFunction) // loads a shared library into the server
	case *pg_query.Node_RefreshMatViewStmt:
		st.Command = "REFRESH MATERIALIZED VIEW"
		w.write(qualify(x.RefreshMatViewStmt.Relation))
	default:
		w.utility(n, st)
	}
}

// opaque marks a statement whose effect cannot be seen here.
func (w *walker) opaque() {
	w.flag(FlagOpaque)
	w.readOnly = false
}

func (w *walker) copyStmt(c *pg_query.CopyStmt) *Copy {
	cp := copyOf(c)
	toClient := cp.Target == CopyClient
	if c.IsProgram {
		w.flag(FlagCopyProgram)
		w.readOnly = false
	} else if c.Filename != "" {
		w.flag(FlagCopyFile)
		w.readOnly = false
	}
	cols := stringsOf(c.Attlist)
	if c.IsFrom {
		w.flag(FlagCopyFrom)
		if c.Relation == nil {
			return cp
		}
		t := qualify(c.Relation)
		w.write(t)
		if len(cols) == 0 {
			cols = []string{"*"}
		}
		for _, col := range cols {
			w.record([]origin{{t, col}}, uWrite)
		}
		sc := &scope{entries: []*entry{{name: c.Relation.Relname, table: t}}}
		w.walkExpr(sc, c.WhereClause, exprCtx{use: uFilter, pred: true})
		return cp
	}
	w.flag(FlagCopyTo)
	use, plainOnly := uCopy, false
	if toClient {
		use, plainOnly = uOutput, true
	}
	if c.Query != nil {
		if isDML(c.Query) {
			w.flag(FlagDataModifyingCTE)
		}
		w.apply(w.query(c.Query, nil), use, plainOnly)
		return cp
	}
	if c.Relation == nil {
		return cp
	}
	t := qualify(c.Relation)
	w.read(t)
	if len(cols) == 0 {
		cols = []string{"*"}
	}
	for _, col := range cols {
		w.record([]origin{{t, col}}, use)
	}
	return cp
}

// Copy describes a COPY statement: where the data goes and the format options the client
// chose. PostgreSQL applies the options to the bytes it sends, so they decide how the output
// must be read: a proxy inspecting COPY data parses it by these, and a policy may refuse
// options it does not want.
type Copy struct {
	// Direction is "to" (COPY ... TO) or "from" (COPY ... FROM).
	Direction string `json:"direction"`
	// Target is where the data goes or comes from: "client" (STDOUT, STDIN), "file" or
	// "program".
	Target string `json:"target"`
	// Table is the schema-qualified table copied, as in reads and writes; "" for COPY (query).
	Table string `json:"table"`
	// Columns is the column list as written (lower case unless quoted), [] for all of the
	// table's columns in their order.
	Columns []string `json:"columns"`
	// Query is true for COPY (query) TO.
	Query bool `json:"query"`
	// Format is "text", "csv" or "binary" (old spellings BINARY and CSV included); "text" when
	// not given.
	Format string `json:"format"`
	// Options are the lower-case names of the options given (format, header, delimiter, null,
	// default, quote, escape, force_quote, force_not_null, force_null, encoding, freeze,
	// on_error, log_verbosity, ...), sorted, each once.
	Options []string `json:"options"`
	// Header is true when HEADER is on (true, on, 1, match or no value), as PostgreSQL reads
	// it.
	Header bool `json:"header"`
	// Delimiter, Null, Quote, Escape and Encoding are the values given, absent when not
	// given (PostgreSQL's defaults then apply).
	Delimiter *string `json:"delimiter,omitempty"`
	Null      *string `json:"null,omitempty"`
	Quote     *string `json:"quote,omitempty"`
	Escape    *string `json:"escape,omitempty"`
	Encoding  *string `json:"encoding,omitempty"`
	// ForceQuote is FORCE_QUOTE's column list, ["*"] for all columns.
	ForceQuote []string `json:"force_quote,omitempty"`
}

// COPY directions and targets.
const (
	CopyTo      = "to"
	CopyFrom    = "from"
	CopyClient  = "client"
	CopyFile    = "file"
	CopyProgram = "program"
)

// copyOf reads a COPY statement's target and options.
func copyOf(c *pg_query.CopyStmt) *Copy {
	cp := &Copy{Direction: CopyTo, Target: CopyClient, Columns: stringsOf(c.Attlist), Format: "text", Options: []string{}}
	if c.IsFrom {
		cp.Direction = CopyFrom
	}
	switch {
	case c.IsProgram:
		cp.Target = CopyProgram
	case c.Filename != "":
		cp.Target = CopyFile
	}
	if c.Relation != nil {
		cp.Table = qualify(c.Relation)
	}
	cp.Query = c.Query != nil
	for _, o := range c.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		name := strings.ToLower(d.Defname)
		cp.Options = addSorted(cp.Options, name)
		switch name {
		case "format":
			cp.Format = strings.ToLower(defString(d))
		case "header":
			cp.Header = copyHeader(d)
		case "delimiter":
			cp.Delimiter = ptr(defString(d))
		case "null":
			cp.Null = ptr(defString(d))
		case "quote":
			cp.Quote = ptr(defString(d))
		case "escape":
			cp.Escape = ptr(defString(d))
		case "encoding":
			cp.Encoding = ptr(defString(d))
		case "force_quote":
			if _, star := d.Arg.GetNode().(*pg_query.Node_AStar); star {
				cp.ForceQuote = []string{"*"}
			} else {
				cp.ForceQuote = stringsOf(d.Arg.GetList().GetItems())
			}
		}
	}
	return cp
}

func ptr(s string) *string { return &s }

// defString is an option's value as PostgreSQL's defGetString reads it ("" for none).
func defString(d *pg_query.DefElem) string {
	switch a := d.Arg.GetNode().(type) {
	case *pg_query.Node_String_:
		return a.String_.Sval
	case *pg_query.Node_Integer:
		return strconv.Itoa(int(a.Integer.Ival))
	case *pg_query.Node_Float:
		return a.Float.Fval
	case *pg_query.Node_Boolean:
		if a.Boolean.Boolval {
			return "true"
		}
		return "false"
	case *pg_query.Node_TypeName:
		return strings.Join(stringsOf(a.TypeName.Names), ".")
	}
	return ""
}

// copyHeader reads HEADER as PostgreSQL's defGetCopyHeaderChoice does: no value, 1, true,
// on and match turn it on (a value PostgreSQL refuses fails the statement there).
func copyHeader(d *pg_query.DefElem) bool {
	if d.Arg == nil {
		return true
	}
	if i, ok := d.Arg.GetNode().(*pg_query.Node_Integer); ok {
		return i.Integer.Ival == 1
	}
	switch strings.ToLower(defString(d)) {
	case "true", "on", "match":
		return true
	}
	return false
}

func (w *walker) variableSet(v *pg_query.VariableSetStmt, st *Statement) {
	name := strings.ToLower(v.Name)
	switch v.Kind {
	case pg_query.VariableSetKind_VAR_SET_MULTI:
		st.Command = "SET"
		prefix := "transaction_"
		switch name {
		case "session characteristics":
			prefix = "default_transaction_"
		case "transaction snapshot":
			w.setting("transaction_snapshot")
			return
		}
		w.transactionModes(v.Args, prefix)
		return
	case pg_query.VariableSetKind_VAR_RESET:
		st.Command = "RESET"
	case pg_query.VariableSetKind_VAR_RESET_ALL:
		st.Command = "RESET"
		w.setting("all")
		return
	default:
		st.Command = "SET"
	}
	switch name {
	case "role":
		st.Command += " ROLE"
	case "session_authorization":
		st.Command += " SESSION AUTHORIZATION"
	}
	w.setting(name)
	w.settingFlags(name)
}

// transactionModes handles BEGIN/START TRANSACTION/SET TRANSACTION options: only a switch to
// READ WRITE weakens a read-only transaction.
func (w *walker) transactionModes(opts []*pg_query.Node, prefix string) {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		name := strings.TrimPrefix(strings.ToLower(d.Defname), "transaction_")
		w.setting(prefix + name)
		if name == "read_only" && !defBool(d, true) {
			w.flag(FlagSetsReadOnly)
			w.readOnly = false
		}
	}
}

func (w *walker) transaction(t *pg_query.TransactionStmt, st *Statement) {
	switch t.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN:
		st.Command = "BEGIN"
		w.transactionModes(t.Options, "transaction_")
	case pg_query.TransactionStmtKind_TRANS_STMT_START:
		st.Command = "START TRANSACTION"
		w.transactionModes(t.Options, "transaction_")
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		st.Command = "COMMIT"
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		st.Command = "ROLLBACK"
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		st.Command = "SAVEPOINT"
		st.Name = t.SavepointName
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		st.Command = "RELEASE"
		st.Name = t.SavepointName
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		st.Command = "ROLLBACK TO"
		st.Name = t.SavepointName
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		st.Command = "PREPARE TRANSACTION"
		w.readOnly = false
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		st.Command = "COMMIT PREPARED"
		w.readOnly = false
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		st.Command = "ROLLBACK PREPARED"
		w.readOnly = false
	default:
		st.Command = "TRANSACTION"
	}
}

// defBool reads a boolean option as PostgreSQL's defGetBoolean does; def is the value of an
// option given without argument.
func defBool(d *pg_query.DefElem, def bool) bool {
	if d.Arg == nil {
		return def
	}
	switch a := d.Arg.GetNode().(type) {
	case *pg_query.Node_Integer:
		return a.Integer.Ival != 0
	case *pg_query.Node_Boolean:
		return a.Boolean.Boolval
	case *pg_query.Node_AConst:
		if iv := a.AConst.GetIval(); iv != nil {
			return iv.Ival != 0
		}
		if b := a.AConst.GetBoolval(); b != nil {
			return b.Boolval
		}
		if s := a.AConst.GetSval(); s != nil {
			return strBool(s.Sval, def)
		}
	case *pg_query.Node_String_:
		return strBool(a.String_.Sval, def)
	}
	return def
}

func strBool(s string, def bool) bool {
	switch strings.ToLower(s) {
	case "true", "on", "1", "yes", "t", "y":
		return true
	case "false", "off", "0", "no", "f", "n":
		return false
	}
	return def
}

// utility classifies DDL and the remaining utility statements. Expressions and queries
// inside them (defaults, index predicates, view and rule bodies) are walked generically so
// that their tables and functions are reported.
func (w *walker) utility(n *pg_query.Node, st *Statement) {
	switch x := n.GetNode().(type) {
	case *pg_query.Node_CreateStmt:
		w.ddl(st, "CREATE TABLE")
		if x.CreateStmt.Relation != nil {
			w.write(qualify(x.CreateStmt.Relation))
		}
	case *pg_query.Node_CreateForeignTableStmt:
		w.ddl(st, "CREATE FOREIGN TABLE")
		if b := x.CreateForeignTableStmt.BaseStmt; b != nil && b.Relation != nil {
			w.write(qualify(b.Relation))
		}
	case *pg_query.Node_CreateTableAsStmt:
		c := x.CreateTableAsStmt
		cmd := "CREATE TABLE AS"
		if c.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
			cmd = "CREATE MATERIALIZED VIEW"
		}
		w.ddl(st, cmd)
		if c.Into != nil && c.Into.Rel != nil {
			w.write(qualify(c.Into.Rel))
		}
		if isDML(c.Query) {
			w.flag(FlagDataModifyingCTE)
		}
		w.apply(w.query(c.Query, nil), uCopy, false)
		return
	case *pg_query.Node_ViewStmt:
		w.ddl(st, "CREATE VIEW")
	case *pg_query.Node_IndexStmt:
		w.ddl(st, "CREATE INDEX")
	case *pg_query.Node_AlterTableStmt:
		a := x.AlterTableStmt
		w.ddl(st, "ALTER "+objectName(a.Objtype))
		if a.Relation != nil && tableLike(a.Objtype) {
			w.write(qualify(a.Relation))
		}
	case *pg_query.Node_DropStmt:
		d := x.DropStmt
		w.ddl(st, "DROP "+objectName(d.RemoveType))
		if tableLike(d.RemoveType) {
			for _, o := range d.Objects {
				if t := qualifyNames(o.GetList().GetItems()); t != "" {
					w.write(t)
				}
			}
		}
		return
	case *pg_query.Node_RenameStmt:
		r := x.RenameStmt
		t := r.RenameType
		switch t {
		case pg_query.ObjectType_OBJECT_COLUMN, pg_query.ObjectType_OBJECT_TABCONSTRAINT,
			pg_query.ObjectType_OBJECT_TRIGGER, pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_POLICY:
			if r.Relation != nil && t != pg_query.ObjectType_OBJECT_TRIGGER && t != pg_query.ObjectType_OBJECT_RULE &&
				t != pg_query.ObjectType_OBJECT_POLICY {
				t = r.RelationType
			}
		}
		w.ddl(st, "ALTER "+objectName(t))
		if r.Relation != nil && tableLike(t) {
			w.write(qualify(r.Relation))
		}
	case *pg_query.Node_AlterObjectSchemaStmt:
		w.ddl(st, "ALTER "+objectName(x.AlterObjectSchemaStmt.ObjectType))
	case *pg_query.Node_AlterOwnerStmt:
		w.ddl(st, "ALTER "+objectName(x.AlterOwnerStmt.ObjectType))
	case *pg_query.Node_AlterObjectDependsStmt:
		w.ddl(st, "ALTER "+objectName(x.AlterObjectDependsStmt.ObjectType))
	case *pg_query.Node_CommentStmt:
		w.ddl(st, "COMMENT")
	case *pg_query.Node_SecLabelStmt:
		w.ddl(st, "SECURITY LABEL")
	case *pg_query.Node_GrantStmt:
		if x.GrantStmt.IsGrant {
			w.ddl(st, "GRANT")
		} else {
			w.ddl(st, "REVOKE")
		}
	case *pg_query.Node_GrantRoleStmt:
		if x.GrantRoleStmt.IsGrant {
			w.ddl(st, "GRANT")
		} else {
			w.ddl(st, "REVOKE")
		}
	case *pg_query.Node_AlterDefaultPrivilegesStmt:
		w.ddl(st, "ALTER DEFAULT PRIVILEGES")
	case *pg_query.Node_CreateSchemaStmt:
		w.ddl(st, "CREATE SCHEMA")
	case *pg_query.Node_CreateSeqStmt:
		w.ddl(st, "CREATE SEQUENCE")
	case *pg_query.Node_AlterSeqStmt:
		w.ddl(st, "ALTER SEQUENCE")
	case *pg_query.Node_CreateFunctionStmt:
		if x.CreateFunctionStmt.IsProcedure {
			w.ddl(st, "CREATE PROCEDURE")
		} else {
			w.ddl(st, "CREATE FUNCTION")
		}
	case *pg_query.Node_AlterFunctionStmt:
		w.ddl(st, "ALTER "+objectName(x.AlterFunctionStmt.Objtype))
	case *pg_query.Node_CreateTrigStmt:
		w.ddl(st, "CREATE TRIGGER")
	case *pg_query.Node_CreateEventTrigStmt:
		w.ddl(st, "CREATE EVENT TRIGGER")
	case *pg_query.Node_AlterEventTrigStmt:
		w.ddl(st, "ALTER EVENT TRIGGER")
	case *pg_query.Node_RuleStmt:
		w.ddl(st, "CREATE RULE")
	case *pg_query.Node_CreatePolicyStmt:
		w.ddl(st, "CREATE POLICY")
	case *pg_query.Node_AlterPolicyStmt:
		w.ddl(st, "ALTER POLICY")
	case *pg_query.Node_DefineStmt:
		w.ddl(st, "CREATE "+objectName(x.DefineStmt.Kind))
	case *pg_query.Node_CreateDomainStmt:
		w.ddl(st, "CREATE DOMAIN")
	case *pg_query.Node_AlterDomainStmt:
		w.ddl(st, "ALTER DOMAIN")
	case *pg_query.Node_CompositeTypeStmt, *pg_query.Node_CreateEnumStmt, *pg_query.Node_CreateRangeStmt:
		w.ddl(st, "CREATE TYPE")
	case *pg_query.Node_AlterEnumStmt, *pg_query.Node_AlterTypeStmt:
		w.ddl(st, "ALTER TYPE")
	case *pg_query.Node_CreateCastStmt:
		w.ddl(st, "CREATE CAST")
	case *pg_query.Node_CreateConversionStmt:
		w.ddl(st, "CREATE CONVERSION")
	case *pg_query.Node_CreateTransformStmt:
		w.ddl(st, "CREATE TRANSFORM")
	case *pg_query.Node_CreateOpClassStmt:
		w.ddl(st, "CREATE OPERATOR CLASS")
	case *pg_query.Node_CreateOpFamilyStmt:
		w.ddl(st, "CREATE OPERATOR FAMILY")
	case *pg_query.Node_AlterOpFamilyStmt:
		w.ddl(st, "ALTER OPERATOR FAMILY")
	case *pg_query.Node_AlterOperatorStmt:
		w.ddl(st, "ALTER OPERATOR")
	case *pg_query.Node_CreatePlangStmt:
		w.ddl(st, "CREATE LANGUAGE")
	case *pg_query.Node_CreateExtensionStmt:
		w.ddl(st, "CREATE EXTENSION")
	case *pg_query.Node_AlterExtensionStmt, *pg_query.Node_AlterExtensionContentsStmt:
		w.ddl(st, "ALTER EXTENSION")
	case *pg_query.Node_CreateRoleStmt:
		w.ddl(st, "CREATE ROLE")
	case *pg_query.Node_AlterRoleStmt, *pg_query.Node_AlterRoleSetStmt:
		w.ddl(st, "ALTER ROLE")
	case *pg_query.Node_DropRoleStmt:
		w.ddl(st, "DROP ROLE")
	case *pg_query.Node_DropOwnedStmt:
		w.ddl(st, "DROP OWNED")
	case *pg_query.Node_ReassignOwnedStmt:
		w.ddl(st, "REASSIGN OWNED")
	case *pg_query.Node_CreatedbStmt:
		w.ddl(st, "CREATE DATABASE")
	case *pg_query.Node_DropdbStmt:
		w.ddl(st, "DROP DATABASE")
	case *pg_query.Node_AlterDatabaseStmt, *pg_query.Node_AlterDatabaseSetStmt, *pg_query.Node_AlterDatabaseRefreshCollStmt:
		w.ddl(st, "ALTER DATABASE")
	case *pg_query.Node_AlterSystemStmt:
		w.ddl(st, "ALTER SYSTEM")
		if s := x.AlterSystemStmt.Setstmt; s != nil {
			w.setting(s.Name)
			w.settingFlags(s.Name)
		}
	case *pg_query.Node_CreateTableSpaceStmt:
		w.ddl(st, "CREATE TABLESPACE")
	case *pg_query.Node_DropTableSpaceStmt:
		w.ddl(st, "DROP TABLESPACE")
	case *pg_query.Node_AlterTableSpaceOptionsStmt:
		w.ddl(st, "ALTER TABLESPACE")
	case *pg_query.Node_AlterTableMoveAllStmt:
		w.ddl(st, "ALTER "+objectName(x.AlterTableMoveAllStmt.Objtype))
	case *pg_query.Node_CreateFdwStmt:
		w.ddl(st, "CREATE FOREIGN DATA WRAPPER")
	case *pg_query.Node_AlterFdwStmt:
		w.ddl(st, "ALTER FOREIGN DATA WRAPPER")
	case *pg_query.Node_CreateForeignServerStmt:
		w.ddl(st, "CREATE SERVER")
	case *pg_query.Node_AlterForeignServerStmt:
		w.ddl(st, "ALTER SERVER")
	case *pg_query.Node_CreateUserMappingStmt:
		w.ddl(st, "CREATE USER MAPPING")
	case *pg_query.Node_AlterUserMappingStmt:
		w.ddl(st, "ALTER USER MAPPING")
	case *pg_query.Node_DropUserMappingStmt:
		w.ddl(st, "DROP USER MAPPING")
	case *pg_query.Node_ImportForeignSchemaStmt:
		w.ddl(st, "IMPORT FOREIGN SCHEMA")
	case *pg_query.Node_CreateAmStmt:
		w.ddl(st, "CREATE ACCESS METHOD")
	case *pg_query.Node_CreateStatsStmt:
		w.ddl(st, "CREATE STATISTICS")
	case *pg_query.Node_AlterStatsStmt:
		w.ddl(st, "ALTER STATISTICS")
	case *pg_query.Node_AlterCollationStmt:
		w.ddl(st, "ALTER COLLATION")
	case *pg_query.Node_CreatePublicationStmt:
		w.ddl(st, "CREATE PUBLICATION")
	case *pg_query.Node_AlterPublicationStmt:
		w.ddl(st, "ALTER PUBLICATION")
	case *pg_query.Node_CreateSubscriptionStmt:
		w.ddl(st, "CREATE SUBSCRIPTION")
	case *pg_query.Node_AlterSubscriptionStmt:
		w.ddl(st, "ALTER SUBSCRIPTION")
	case *pg_query.Node_DropSubscriptionStmt:
		w.ddl(st, "DROP SUBSCRIPTION")
	case *pg_query.Node_AlterTsdictionaryStmt:
		w.ddl(st, "ALTER TEXT SEARCH DICTIONARY")
	case *pg_query.Node_AlterTsconfigurationStmt:
		w.ddl(st, "ALTER TEXT SEARCH CONFIGURATION")
	default:
		// A statement this version does not know: assume the worst.
		st.Command = "UNKNOWN"
		w.opaque()
	}
	if m := innerMessage(n); m != nil {
		w.walkChildren(nil, m, exprCtx{})
	}
}
