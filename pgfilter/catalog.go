package pgfilter

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// catalogTTL bounds how long a table's column names are trusted: a column
// renamed to a sensitive name is recognised within this time.
const catalogTTL = time.Minute

// column names a result column by its table and attribute, as
// RowDescription identifies it (so an alias does not hide it).
type column struct {
	schema, table, name string
}

// catalog resolves a RowDescription's (table OID, attribute number) to
// names, on a connection of its own with the gateway-held credential. One
// per upstream, shared by its sessions.
type catalog struct {
	srv *Server
	up  *upstream

	mu         sync.Mutex
	conn       *pgconn.PgConn
	tables     map[uint32]*catalogTable
	composites map[uint32]compositeEntry
	relations  map[string]compositeEntry // a table's columns by "schema.name"
	// routineCache holds function and view resolutions (routines.go) by
	// (kind, search path, schema, name); defaultPath the role's
	// search_path.
	routineCache map[string]routineEntry
	defaultPath  *pathEntry
}

type catalogTable struct {
	loaded time.Time
	cols   map[int16]column
}

func newCatalog(s *Server, up *upstream) *catalog {
	return &catalog{srv: s, up: up, tables: map[uint32]*catalogTable{}, composites: map[uint32]compositeEntry{}, relations: map[string]compositeEntry{},
		routineCache: map[string]routineEntry{}}
}

// lookup returns the column at (table, attnum); ok is false for a table or
// attribute that does not exist (a dropped table, a system column).
func (c *catalog) lookup(ctx context.Context, table uint32, attnum int16) (column, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tables[table]
	if t == nil || time.Since(t.loaded) > catalogTTL {
		var err error
		if t, err = c.load(ctx, table); err != nil {
			return column{}, false, err
		}
		c.tables[table] = t
	}
	col, ok := t.cols[attnum]
	return col, ok, nil
}

const catalogQuery = `SELECT a.attnum, a.attname, c.relname, n.nspname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`

func (c *catalog) load(ctx context.Context, table uint32) (*catalogTable, error) {
	var t *catalogTable
	err := c.query(ctx, catalogQuery, [][]byte{[]byte(strconv.FormatUint(uint64(table), 10))}, []uint32{26},
		func() { t = &catalogTable{loaded: time.Now(), cols: map[int16]column{}} },
		func(v [][]byte) {
			if n, err := strconv.ParseInt(string(v[0]), 10, 16); err == nil {
				t.cols[int16(n)] = column{schema: string(v[3]), table: string(v[2]), name: string(v[1])}
			}
		})
	if err != nil {
		return nil, fmt.Errorf("catalog lookup of table %d: %w", table, err)
	}
	return t, nil
}

// query runs a catalog query, reconnecting once when the connection went
// away: start is called before each attempt (to reset what row collects),
// row for each result row. c.mu is held.
func (c *catalog) query(ctx context.Context, sql string, params [][]byte, oids []uint32, start func(), row func([][]byte)) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if err := c.connect(ctx); err != nil {
			return err
		}
		start()
		rr := c.conn.ExecParams(ctx, sql, params, oids, nil, nil)
		for rr.NextRow() {
			row(rr.Values())
		}
		if _, err := rr.Close(); err != nil {
			if attempt == 0 && c.conn.IsClosed() {
				continue
			}
			return err
		}
		return nil
	}
}

// attr is one attribute of a composite type.
type attr struct {
	name string
	typ  uint32
}

// compositeAttrs returns the attributes of a composite (row) type, in
// order, or nil when typ is not a composite type.
func (c *catalog) compositeAttrs(ctx context.Context, typ uint32) ([]attr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.composites[typ]; ok && time.Since(e.loaded) < catalogTTL {
		return e.attrs, nil
	}
	attrs, err := c.queryAttrs(ctx, compositeQuery, [][]byte{[]byte(strconv.FormatUint(uint64(typ), 10))}, []uint32{26})
	if err != nil {
		return nil, fmt.Errorf("catalog lookup of type %d: %w", typ, err)
	}
	c.composites[typ] = compositeEntry{loaded: time.Now(), attrs: attrs}
	return attrs, nil
}

// queryAttrs runs a query answering (name, type oid) rows, reconnecting
// once when the catalog connection was lost; nil for no rows. c.mu is held.
func (c *catalog) queryAttrs(ctx context.Context, query string, params [][]byte, oids []uint32) ([]attr, error) {
	var attrs []attr
	err := c.query(ctx, query, params, oids, func() { attrs = attrs[:0] }, func(v [][]byte) {
		t, _ := strconv.ParseUint(string(v[1]), 10, 32)
		attrs = append(attrs, attr{name: string(v[0]), typ: uint32(t)})
	})
	if err != nil {
		return nil, err
	}
	if len(attrs) == 0 {
		return nil, nil
	}
	return attrs, nil
}

const compositeQuery = `SELECT a.attname, a.atttypid
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
WHERE t.oid = $1 AND t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`

// tableColumns returns the columns COPY table TO copies (all but dropped
// and generated ones), in order, with their types; nil when there is no
// such table.
func (c *catalog) tableColumns(ctx context.Context, schema, table string) ([]attr, error) {
	key := schema + "." + table
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.relations[key]; ok && time.Since(e.loaded) < catalogTTL {
		return e.attrs, nil
	}
	attrs, err := c.queryAttrs(ctx, relationQuery, [][]byte{[]byte(schema), []byte(table)}, nil)
	if err != nil {
		return nil, fmt.Errorf("catalog lookup of table %s: %w", key, err)
	}
	c.relations[key] = compositeEntry{loaded: time.Now(), attrs: attrs}
	return attrs, nil
}

const relationQuery = `SELECT a.attname, a.atttypid
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum`

type compositeEntry struct {
	loaded time.Time
	attrs  []attr
}

func (c *catalog) connect(ctx context.Context) error {
	if c.conn != nil && !c.conn.IsClosed() {
		return nil
	}
	password, err := c.up.res.Password.Read()
	if err != nil {
		return err
	}
	cfg := c.up.cfg.Copy()
	cfg.Password = password
	cfg.RuntimeParams["application_name"] = "custos catalog"
	// Names come back in this encoding whatever the role or database default says.
	cfg.RuntimeParams["client_encoding"] = "UTF8"
	if c.conn, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
		return fmt.Errorf("catalog connection: %w", err)
	}
	return nil
}

func (c *catalog) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = c.conn.Close(ctx)
		c.conn = nil
	}
}

// functionName returns a function's schema-qualified name by OID, for
// deciding FunctionCall messages.
func (c *catalog) functionName(ctx context.Context, oid uint32) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name := ""
	err := c.query(ctx, `SELECT p.proname, n.nspname FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = $1`,
		[][]byte{[]byte(strconv.FormatUint(uint64(oid), 10))}, []uint32{26},
		func() { name = "" },
		func(v [][]byte) {
			name = string(v[0])
			if s := string(v[1]); s != "pg_catalog" {
				name = s + "." + name
			}
		})
	if err != nil {
		return "", fmt.Errorf("catalog lookup of function %d: %w", oid, err)
	}
	return name, nil
}
