package pgfilter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/internal/sqlclass"
)

// The classifier knows functions by name: an unqualified call of a
// read-only built-in's name is read-only to it. The server resolves the
// name along the session's search_path and by argument types, so a
// function of the same name in a schema on the path (before pg_catalog, or
// an overload pg_catalog lacks) runs instead, a view runs what its body
// calls, and a table with row security what its policies call. Before a statement is decided, custos asks its catalog connection
// what such names and relations can reach: a call is read-only only when every
// function of that name the server could pick is a pg_catalog built-in
// (oid below FirstNormalObjectId, 16384) on the classifier's read-only
// list; anything else, or anything the catalog cannot answer, marks the
// statement unknown_function and not read-only, so it is decided as a
// function custos cannot prove read-only (approval, in the default
// policy). This looks at every candidate rather than at argument types: a
// same-named user function on the path costs an approval even where the
// server would still pick the built-in, never the other way round.

// routineCacheMax bounds the catalog's cache of resolutions; it is cleared
// when full.
const routineCacheMax = 4096

// routineEntry is one cached resolution: the functions found that custos
// cannot prove read-only (empty: none), or the lookup's error.
type routineEntry struct {
	loaded time.Time
	unsafe []string
}

// searchPath is what custos knows of a session's search_path: the schemas
// an unqualified name is looked up in, or unknown (any schema).
type searchPath struct {
	known   bool
	schemas []string
	key     string
}

func anySchema() searchPath { return searchPath{key: "*"} }

func knownPath(schemas []string) searchPath {
	return searchPath{known: true, schemas: schemas, key: strings.Join(schemas, "\x00")}
}

// splitSearchPath reads a search_path value as the server does
// (SplitIdentifierString): comma-separated, blanks around names ignored,
// double-quoted names kept as written ("" is a quote), others folded to
// lower case. "$user" is the session's role (user). ok is false for a value
// the server would refuse too.
func splitSearchPath(v, user string) (schemas []string, ok bool) {
	i := 0
	skip := func() {
		for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r' || v[i] == '\f' || v[i] == '\v') {
			i++
		}
	}
	skip()
	if i == len(v) {
		return nil, true
	}
	for {
		var name string
		if i < len(v) && v[i] == '"' {
			var b strings.Builder
			i++
			for {
				if i >= len(v) {
					return nil, false
				}
				if v[i] == '"' {
					if i+1 < len(v) && v[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					break
				}
				b.WriteByte(v[i])
				i++
			}
			name = b.String()
			if name == "" {
				return nil, false
			}
		} else {
			start := i
			for i < len(v) && v[i] != ',' && v[i] != ' ' && v[i] != '\t' && v[i] != '\n' && v[i] != '\r' && v[i] != '\f' && v[i] != '\v' {
				i++
			}
			if start == i {
				return nil, false
			}
			name = strings.ToLower(v[start:i])
		}
		if name == "$user" {
			name = user
		}
		schemas = append(schemas, name)
		skip()
		if i == len(v) {
			return schemas, true
		}
		if v[i] != ',' {
			return nil, false
		}
		i++
		skip()
	}
}

// textArray encodes names as a PostgreSQL text[] literal.
func textArray(names []string) []byte {
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(n))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return []byte(b.String())
}

// param is the query parameter for a path: NULL (any schema) when
// unknown.
func (p searchPath) param() []byte {
	if !p.known {
		return nil
	}
	return textArray(p.schemas)
}

// functionQuery lists the functions named $1 an unqualified call can reach
// ($2: the path's schemas, NULL for any; pg_catalog is always searched)
// that are not built-ins: any is a function custos knows nothing of.
const functionQuery = `SELECT n.nspname, p.proname
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = $1
  AND ($2::text[] IS NULL OR n.nspname = 'pg_catalog' OR n.nspname = ANY($2::text[]))
  AND NOT (n.nspname = 'pg_catalog' AND p.oid < 16384)
LIMIT 8`

// viewQuery lists the functions (and operators' functions) reading the
// relations named $1 (in schema $2, on the path $3, NULL for any, or in a
// temporary schema, which comes first for relations) can run: what a
// view's body calls, through the relations it reads, and what the row
// security policies of a table with row security call, as pg_depend
// records them for each view's SELECT rule and each policy, with whether
// each is a built-in.
const viewQuery = `WITH RECURSIVE rel(oid, depth) AS (
  SELECT c.oid, 0 FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relname = $1 AND c.relkind IN ('v', 'r', 'p', 'f', 'm')
    AND (n.nspname = $2 OR $3::text[] IS NULL OR n.nspname = ANY($3::text[]) OR n.nspname LIKE 'pg\_temp\_%')
  UNION
  SELECT d.refobjid, rel.depth + 1 FROM rel
  JOIN pg_catalog.pg_rewrite r ON r.ev_class = rel.oid AND r.ev_type = '1'
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> rel.oid
  WHERE rel.depth < 32
), deps AS (
  SELECT d.refclassid, d.refobjid FROM rel
  JOIN pg_catalog.pg_rewrite r ON r.ev_class = rel.oid AND r.ev_type = '1'
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
  UNION
  SELECT d.refclassid, d.refobjid FROM rel
  JOIN pg_catalog.pg_class c ON c.oid = rel.oid AND c.relrowsecurity
  JOIN pg_catalog.pg_policy pol ON pol.polrelid = rel.oid
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objid = pol.oid
), procs AS (
  SELECT refobjid AS oid FROM deps WHERE refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
  UNION
  SELECT o.oprcode FROM deps JOIN pg_catalog.pg_operator o ON o.oid = deps.refobjid
  WHERE deps.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
)
SELECT n.nspname, p.proname, p.oid < 16384
FROM procs JOIN pg_catalog.pg_proc p ON p.oid = procs.oid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace`

// unsafeFunctions returns the functions a call of name (schema "" when
// unqualified, else pg_catalog) may reach that are not built-ins.
func (c *catalog) unsafeFunctions(ctx context.Context, path searchPath, schema, name string) ([]string, error) {
	if schema != "" {
		path = knownPath(nil) // pg_catalog only
	}
	return c.routines(ctx, "f\x00"+path.key+"\x00"+name, functionQuery,
		func() [][]byte { return [][]byte{[]byte(name), path.param()} }, func(v [][]byte) (string, bool) {
			return string(v[0]) + "." + string(v[1]), true
		})
}

// unsafeViewFunctions returns the functions reading the relation
// schema.name (or one of that name the path reaches) runs that custos
// cannot prove read-only: a view's body, row security policies; nil when
// there are none.
func (c *catalog) unsafeViewFunctions(ctx context.Context, path searchPath, schema, name string) ([]string, error) {
	return c.routines(ctx, "v\x00"+path.key+"\x00"+schema+"\x00"+name, viewQuery,
		func() [][]byte { return [][]byte{[]byte(name), []byte(schema), path.param()} }, func(v [][]byte) (string, bool) {
			ns, fn, builtin := string(v[0]), string(v[1]), string(v[2]) == "t"
			if ns == "pg_catalog" && builtin && sqlclass.BuiltinReadOnly(fn) {
				return "", false
			}
			return ns + "." + fn, true
		})
}

// routines runs a resolution query, or answers it from the cache; row
// turns a result row into a function custos cannot prove read-only.
func (c *catalog) routines(ctx context.Context, key, query string, paramsOf func() [][]byte, row func([][]byte) (string, bool)) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.routineCache[key]; ok && time.Since(e.loaded) < catalogTTL {
		return e.unsafe, nil
	}
	var out []string
	err := c.query(ctx, query, paramsOf(), nil, func() { out = out[:0] }, func(v [][]byte) {
		if f, bad := row(v); bad && !slices.Contains(out, f) {
			out = append(out, f)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("catalog resolution: %w", err)
	}
	if len(c.routineCache) >= routineCacheMax {
		clear(c.routineCache)
	}
	c.routineCache[key] = routineEntry{loaded: time.Now(), unsafe: out}
	return out, nil
}

// defaultSearchPath is the search_path a session of the gateway's role
// starts with when the client sets none: the catalog connection's, which
// logs in as the same role to the same database.
func (c *catalog) defaultSearchPath(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.defaultPath != nil && time.Since(c.defaultPath.loaded) < catalogTTL {
		return c.defaultPath.value, nil
	}
	v := ""
	err := c.query(ctx, `SELECT pg_catalog.current_setting('search_path')`, nil, nil,
		func() { v = "" }, func(row [][]byte) { v = string(row[0]) })
	if err != nil {
		return "", fmt.Errorf("catalog search_path: %w", err)
	}
	c.defaultPath = &pathEntry{loaded: time.Now(), value: v}
	return v, nil
}

type pathEntry struct {
	loaded time.Time
	value  string
}

// forgetRoutines drops every cached resolution: a session through custos
// ran DDL, which may have created, replaced or dropped a function or view.
// DDL made elsewhere is seen within catalogTTL.
func (c *catalog) forgetRoutines() {
	c.mu.Lock()
	clear(c.routineCache)
	c.mu.Unlock()
}

// sessionPath is the search_path this session's statements are resolved
// with: the startup value custos passed (the policy decided it), else the
// role's default, until a statement sets it (then any schema: custos does
// not follow what SET, RESET, DISCARD or set_config made of it).
func (h *policyHook) sessionPath(ctx context.Context, cat *catalog) searchPath {
	if h.pathChanged {
		return anySchema()
	}
	// A session's path is fixed from its start until a statement changes
	// it (then pathChanged): worked out once.
	if h.path != nil {
		return *h.path
	}
	p, final := h.startPath(ctx, cat)
	if final {
		h.path = &p
	}
	return p
}

// startPath is the session's search_path at its start, and whether it is
// known for good (a failed catalog lookup is tried again next time).
func (h *policyHook) startPath(ctx context.Context, cat *catalog) (searchPath, bool) {
	v, ok := h.ses.Params["search_path"]
	if !ok {
		var err error
		if v, err = cat.defaultSearchPath(ctx); err != nil {
			return anySchema(), false
		}
	}
	// "$user" is the role the session logs in as (its group's login, or
	// the principal's own user).
	schemas, ok := splitSearchPath(v, h.ses.UpstreamUser())
	if !ok {
		return anySchema(), true
	}
	return knownPath(schemas), true
}

// resolveRoutines returns stmts with every statement whose function calls
// or views custos cannot prove read-only marked so (unknown_function, not
// read-only, the functions found added to functions). stmts itself is
// returned when nothing changes, so decisions stay shared.
func (h *policyHook) resolveRoutines(ctx context.Context, stmts []sqlclass.Statement) []sqlclass.Statement {
	up := h.srv.upstreams[h.ses.Resource.Name]
	if up == nil || up.catalog == nil {
		return stmts
	}
	var path *searchPath
	getPath := func() searchPath {
		if path == nil {
			p := h.sessionPath(ctx, up.catalog)
			path = &p
		}
		return *path
	}
	out := stmts
	for i := range stmts {
		if st := h.markRoutines(ctx, up.catalog, getPath, &stmts[i], 0); st != nil {
			if &out[0] == &stmts[0] {
				out = slices.Clone(stmts)
			}
			out[i] = *st
		}
	}
	for i := range out {
		noteSettings(h, &out[i], 0)
	}
	return out
}

// noteSettings notes a statement that may change search_path: from then
// on names are resolved in any schema.
func noteSettings(h *policyHook, st *sqlclass.Statement, depth int) {
	if st == nil || depth > 4 {
		return
	}
	for _, s := range st.Settings {
		if s == "search_path" || s == "*" || s == "all" {
			h.pathChanged = true
		}
	}
	if st.Command == "DISCARD" || st.Command == "DISCARD ALL" {
		h.pathChanged = true
	}
	noteSettings(h, st.Explains, depth+1)
	noteSettings(h, st.Prepared, depth+1)
}

// markRoutines returns a marked copy of st, or nil when st is as the
// classifier said.
func (h *policyHook) markRoutines(ctx context.Context, cat *catalog, path func() searchPath, st *sqlclass.Statement, depth int) *sqlclass.Statement {
	if st == nil || depth > 4 {
		return nil
	}
	var found []string
	failed := false
	for _, f := range st.Functions {
		schema, name := "", f
		if i := strings.LastIndexByte(f, '.'); i >= 0 {
			schema, name = f[:i], f[i+1:]
		}
		if (schema != "" && schema != "pg_catalog") || !sqlclass.BuiltinReadOnly(name) {
			continue // the classifier already holds it not read-only
		}
		bad, err := cat.unsafeFunctions(ctx, path(), schema, name)
		if err != nil {
			h.srv.log.Warn("function resolution failed", "session_id", h.ses.ID, "function", f, "error", err)
			failed = true
			found = append(found, f)
			continue
		}
		found = append(found, bad...)
	}
	for _, t := range st.Reads {
		schema, name := "public", t
		if i := strings.LastIndexByte(t, '.'); i >= 0 {
			schema, name = t[:i], t[i+1:]
		}
		bad, err := cat.unsafeViewFunctions(ctx, path(), schema, name)
		if err != nil {
			h.srv.log.Warn("view resolution failed", "session_id", h.ses.ID, "relation", t, "error", err)
			failed = true
			continue
		}
		found = append(found, bad...)
	}
	explains := h.markRoutines(ctx, cat, path, st.Explains, depth+1)
	prepared := h.markRoutines(ctx, cat, path, st.Prepared, depth+1)
	if len(found) == 0 && !failed && explains == nil && prepared == nil {
		return nil
	}
	c := *st
	if explains != nil {
		c.Explains = explains
	}
	if prepared != nil {
		c.Prepared = prepared
	}
	if len(found) > 0 || failed {
		c.ReadOnly = false
		if !slices.Contains(c.Flags, sqlclass.FlagUnknownFunction) {
			c.Flags = append(slices.Clone(c.Flags), sqlclass.FlagUnknownFunction)
			slices.Sort(c.Flags)
		}
		fns := slices.Clone(c.Functions)
		for _, f := range found {
			if !slices.Contains(fns, f) {
				fns = append(fns, f)
			}
		}
		slices.Sort(fns)
		c.Functions = fns
	}
	return &c
}
