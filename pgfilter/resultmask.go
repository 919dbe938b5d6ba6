package pgfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/sqlclass"
)

// resultMasker is the built-in hook that keeps full card numbers and
// sensitive authentication data from reaching the client: it follows the
// protocol to know each DataRow's column types and formats, and masks every
// server message that can carry client-visible data (rows, COPY data,
// errors and notices, notifications, parameter status, function results,
// column names).
//
// Column formats are known from the message flow: a simple query's
// RowDescription carries the real formats; in the extended protocol a
// Describe of a statement reports types only (formats come from Bind's
// result format codes) and a Describe of a portal reports both. A portal
// executed without either is described by custos itself first (the reply is
// swallowed), so no row is ever relayed without its types (fail closed).
type resultMasker struct {
	m   *mask.Masker
	cat *catalog
	ses *Session

	tbuf []byte // a text column's masked value, until it is copied into the row

	mu sync.Mutex
	// pending are the client's messages the server has yet to answer.
	pending syncQueue[pendingOp]
	// stmts holds described statements (an empty, non-nil slice for one
	// that returns no rows), in the server's order; describing lists the
	// statements the client has described since their last Parse.
	stmts      map[string][]field
	describing map[string]bool
	portals    map[string]*portal
	simple     []field // current simple-query result set

	// next holds the rules the policy decision gave the message being
	// relayed (set by the policy hook, which runs first).
	next *maskRules
	// rules are the current op's rules while its rows are masked.
	rules *maskRules

	// cls classifies COPY statements (their table and options); cp is the
	// COPY TO STDOUT being relayed; copyStmts are the COPY statements
	// prepared by name; tableColumns looks a table's columns up (the
	// catalog's).
	cls          *sqlclass.Classifier
	cp           *copyStream
	copyStmts    map[string]*copyQueue
	tableColumns func(ctx context.Context, schema, table string) ([]attr, error)
	out          []byte
	counts       mask.Counts
}

type field struct {
	oid    uint32
	format int16
	sad    bool
	name   string // the column's name as the client sees it
	col    string // the real column name, when it is a table column
	// attrs are a composite (row) type's attributes; attrSAD marks those
	// that hold sensitive authentication data.
	attrs   []attr
	attrSAD []bool
}

type portal struct {
	stmt      string
	formats   []int16
	fields    []field // from a Describe of the portal: real formats
	described bool    // a Describe of the portal is on its way
	// stmtFields are the statement's fields as custos knew them when the
	// server bound the portal (the name may be redefined later), and
	// copies its COPY TO STDOUT, if it is one.
	stmtFields []field
	copies     []*sqlclass.Copy
}

type opKind uint8

const (
	opSimple opKind = iota + 1
	opFunc
	opSync
	opDescribeStmt
	opDescribePortal
	opDescribeInternal
	opExecute
	opParse // ParseComplete drops what was known of the statement
	opBind  // BindComplete makes the portal known
	opClose // CloseComplete drops a statement or portal
)

type pendingOp struct {
	kind  opKind
	name  string
	p     *portal    // the portal as it was bound when the op was sent
	rules *maskRules // the decision's rules for the rows this op returns
	// copies are the COPY TO STDOUT statements the op runs (a Parse: the
	// statement's).
	copies *copyQueue
	// closeStmt: an opClose of a statement (else of a portal).
	closeStmt bool
}

// batchRole implements batchEntry.
func (op pendingOp) batchRole() batchRole {
	switch op.kind {
	case opSync:
		return roleSync
	case opSimple, opFunc:
		return roleOwn
	}
	return roleExtended
}

// maskRules are a policy decision's masking rules for one statement.
type maskRules struct {
	// columns maps a column name (the real one, not an alias) to its
	// strategy.
	columns map[string]mask.Strategy
	// noDetect turns content detection off (a decision's detect_pan
	// false); column rules still apply.
	noDetect bool
	// reveal is the strategy for detected PANs (bin_last4 where granted).
	reveal mask.Strategy
}

// newResultMasker returns the masking hook of one session; cls (nil: one
// of its own) classifies COPY statements.
func newResultMasker(m *mask.Masker, cat *catalog, s *Session, cls *sqlclass.Classifier) *resultMasker {
	if cls == nil {
		cls = sqlclass.New(64)
	}
	rm := &resultMasker{m: m, cat: cat, ses: s, cls: cls, stmts: map[string][]field{}, describing: map[string]bool{},
		portals: map[string]*portal{}, copyStmts: map[string]*copyQueue{}}
	if cat != nil {
		rm.tableColumns = cat.tableColumns
	}
	return rm
}

// Wants implements Hook.
func (rm *resultMasker) Wants(d Direction, typ byte) bool {
	if d == ClientToServer {
		switch typ {
		case 'Q', 'F', 'S', 'P', 'B', 'D', 'E', 'C':
			return true
		}
		return false
	}
	switch typ {
	case 'T', 'n', 'D', 'C', 'I', 's', 'E', 'N', 'Z', 'H', 'd', 'c', 'A', 'S', 'V', '1', '2', '3':
		return true
	}
	return false
}

// Close implements Hook.
func (rm *resultMasker) Close(error) {}

// Handle implements Hook.
func (rm *resultMasker) Handle(ctx context.Context, d Direction, m *Message, c Conn) (Verdict, error) {
	if d == ClientToServer {
		return Forward, rm.client(m, c)
	}
	return rm.server(ctx, m)
}

func (rm *resultMasker) push(op pendingOp) { rm.pending.push(op) }

func (rm *resultMasker) front() (pendingOp, bool) { return rm.pending.head() }

func (rm *resultMasker) pop() { rm.pending.pop() }

// client records what the client asked for, in order.
func (rm *resultMasker) client(m *Message, c Conn) error {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	b := m.Body
	switch m.Type {
	case 'Q':
		q, _, _ := cstring(b)
		rm.push(pendingOp{kind: opSimple, rules: rm.takeRules(), copies: rm.copyStatements(q)})
	case 'F':
		rm.push(pendingOp{kind: opFunc})
	case 'S':
		rm.push(pendingOp{kind: opSync})
	case 'P':
		name, _, ok := cstring(b)
		if !ok {
			return nil // the server will refuse it
		}
		// What is known of a statement changes in the server's order
		// (at its ParseComplete); what the client has asked for so far,
		// now.
		var copies *copyQueue
		if q, _, ok := cstring(b[len(name)+1:]); ok {
			copies = rm.copyStatements(q)
		}
		rm.push(pendingOp{kind: opParse, name: name, copies: copies})
		delete(rm.describing, name)
	case 'B':
		// The portal is known once the server confirms it (a Bind of a
		// name that exists fails, and the old portal stays).
		p, name, ok := parseBind(b)
		if ok {
			rm.push(pendingOp{kind: opBind, name: name, p: p})
		}
	case 'D':
		if len(b) < 2 {
			return nil
		}
		name, _, _ := cstring(b[1:])
		if b[0] == 'S' {
			rm.describing[name] = true
			rm.push(pendingOp{kind: opDescribeStmt, name: name})
		} else {
			p := rm.portalFor(name)
			p.described = true
			rm.push(pendingOp{kind: opDescribePortal, name: name, p: p})
		}
	case 'E':
		name, _, ok := cstring(b)
		if !ok {
			return nil
		}
		p := rm.portalFor(name)
		if !p.described && !rm.describing[p.stmt] {
			// Nothing says what this portal returns: ask the server
			// first, so its rows can be inspected.
			p.described = true
			rm.push(pendingOp{kind: opDescribeInternal, name: name, p: p})
			if err := c.SendToServer(&pgproto3.Describe{ObjectType: 'P', Name: name}); err != nil {
				return err
			}
		}
		// The COPY it runs, if any, is the portal's statement's as the
		// server bound it (known at BindComplete, before the output).
		rm.push(pendingOp{kind: opExecute, name: name, p: p, rules: rm.takeRules()})
	case 'C':
		if len(b) < 2 {
			return nil
		}
		name, _, _ := cstring(b[1:])
		if b[0] == 'S' {
			delete(rm.describing, name)
		}
		// Forgotten at CloseComplete, in the server's order: a Bind sent
		// before the Close binds the statement as it was.
		rm.push(pendingOp{kind: opClose, name: name, closeStmt: b[0] == 'S'})
	}
	return nil
}

// portalFor returns the portal an Execute or Describe of name will reach:
// one bound earlier in the same batch, else the one the server confirmed.
// When a Bind of the name in an earlier batch is still unanswered, or
// custos knows no such portal, it returns a new portal nothing is known
// of, so that its rows are described by the server first.
func (rm *resultMasker) portalFor(name string) *portal {
	boundary := false
	for i := len(rm.pending) - 1; i >= 0; i-- {
		op := rm.pending[i]
		switch {
		case op.batchRole() != roleExtended:
			boundary = true
		case op.kind == opBind:
			if op.name == name {
				if boundary {
					return &portal{} // it may or may not succeed
				}
				return op.p
			}
		}
	}
	if p := rm.portals[name]; p != nil {
		return p
	}
	return &portal{}
}

func (rm *resultMasker) takeRules() *maskRules {
	r := rm.next
	rm.next = nil
	return r
}

// setRules hands the next simple query or Execute the decision's rules.
func (rm *resultMasker) setRules(r *maskRules) {
	rm.mu.Lock()
	rm.next = r
	rm.mu.Unlock()
}

// parseBind reads a Bind's portal, statement and result format codes.
// What follows the result format codes is not read: the server refuses
// the Bind if it is malformed there.
func parseBind(b []byte) (*portal, string, bool) {
	var m bindMsg
	if _, err := m.decodeThrough(b, bindResultFormats); err != nil {
		return nil, "", false
	}
	return &portal{stmt: string(m.Statement), formats: m.ResultFormats.int16s()}, string(m.Portal), true
}

// server masks one server message and advances the request queue.
func (rm *resultMasker) server(ctx context.Context, m *Message) (Verdict, error) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	op, _ := rm.front()
	rm.rules = op.rules
	switch m.Type {
	case 'T':
		fields, err := rm.rowDescription(ctx, m)
		if err != nil {
			return Forward, err
		}
		switch op.kind {
		case opDescribeStmt:
			rm.stmts[op.name] = fields
			rm.pop()
		case opDescribePortal, opDescribeInternal:
			op.p.fields = fields
			rm.pop()
			if op.kind == opDescribeInternal {
				return Drop, nil
			}
		default:
			rm.simple = fields
		}
	case 'n':
		switch op.kind {
		case opDescribeStmt:
			rm.stmts[op.name] = []field{}
		case opDescribePortal, opDescribeInternal:
			op.p.fields = []field{}
		}
		if op.kind == opDescribeStmt || op.kind == opDescribePortal || op.kind == opDescribeInternal {
			rm.pop()
			if op.kind == opDescribeInternal {
				return Drop, nil
			}
		}
	case 'D':
		fields, formats := rm.rowShape(op)
		if err := rm.dataRow(m, fields, formats); err != nil {
			return Forward, err
		}
	case '1':
		if op.kind == opParse {
			delete(rm.stmts, op.name)
			if op.copies != nil {
				rm.copyStmts[op.name] = op.copies
			} else {
				delete(rm.copyStmts, op.name)
			}
			rm.pop()
		}
	case '2':
		if op.kind == opBind {
			op.p.stmtFields = rm.stmts[op.p.stmt]
			if cq := rm.copyStmts[op.p.stmt]; cq != nil {
				op.p.copies = cq.copies
			}
			rm.portals[op.name] = op.p
			rm.pop()
		}
	case '3':
		if op.kind == opClose {
			if op.closeStmt {
				delete(rm.stmts, op.name)
				delete(rm.copyStmts, op.name)
			} else {
				delete(rm.portals, op.name)
			}
			rm.pop()
		}
	case 'C', 'I', 's':
		if m.Type == 'C' {
			rm.forget(m.Body)
		}
		switch op.kind {
		case opExecute:
			rm.pop()
		case opSimple:
			rm.simple = nil
		}
		if m.Type == 'C' {
			if err := rm.copyComplete(m); err != nil {
				return Forward, err
			}
		}
		rm.cp = nil
	case 'E':
		rm.cp = nil
		rm.maskFields(m)
		// In the extended protocol the server skips to the next Sync.
		rm.pending.fail(nil)
	case 'N':
		rm.maskFields(m)
	case 'Z':
		if len(m.Body) > 0 && m.Body[0] == 'I' {
			clear(rm.portals) // they end with the transaction
		}
		rm.pending.endBatch(nil)
		rm.simple = nil
	case 'H':
		rm.startCopy(ctx, m, op)
	case 'd':
		return rm.copyData(m), nil
	case 'c':
		return rm.copyDone(), nil
	case 'A':
		// pid, channel, payload
		if len(m.Body) > 4 {
			rm.maskCStrings(m, 4)
		}
	case 'S':
		rm.maskCStrings(m, 0)
	case 'V':
		rm.functionResult(m)
	}
	return Forward, nil
}

// forget drops what a CommandComplete may have made stale: portals after
// transaction ends and cursor commands, statements after SQL-level
// PREPARE, DEALLOCATE and DISCARD ALL (custos does not follow their names
// here; the next Execute is described by the server again).
func (rm *resultMasker) forget(body []byte) {
	tag, _, _ := cstring(body)
	if portalTags[tag] {
		clear(rm.portals)
	}
	switch tag {
	case "PREPARE", "DEALLOCATE", "DEALLOCATE ALL", "DISCARD ALL":
		clear(rm.stmts)
		clear(rm.describing)
	}
}

// rowDescription reads a RowDescription, resolving which columns hold
// sensitive authentication data by their real (table, column) names, and
// masks card numbers in column names.
func (rm *resultMasker) rowDescription(ctx context.Context, m *Message) ([]field, error) {
	var rd pgproto3.RowDescription
	if err := rd.Decode(m.Body); err != nil {
		return nil, fmt.Errorf("custos: malformed RowDescription from the server: %w", err)
	}
	fields := make([]field, len(rd.Fields))
	renamed := false
	for i, f := range rd.Fields {
		fields[i] = field{oid: f.DataTypeOID, format: f.Format}
		name := string(f.Name)
		if f.TableOID != 0 && f.TableAttributeNumber > 0 && rm.cat != nil {
			col, ok, err := rm.cat.lookup(ctx, f.TableOID, int16(f.TableAttributeNumber))
			if err != nil {
				// Without the column's name custos cannot tell whether it
				// is sensitive authentication data: fail closed.
				return nil, ClientError(&pgproto3.ErrorResponse{
					Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "XX000",
					Message: "custos could not inspect the result's columns; the session is closed and the incident logged",
				})
			}
			if ok {
				name = col.name
				fields[i].col = col.name
			}
		}
		fields[i].sad = mask.IsSADColumn(name) || mask.IsSADColumn(string(f.Name))
		if f.DataTypeOID >= firstUserOID && rm.cat != nil {
			attrs, err := rm.cat.compositeAttrs(ctx, f.DataTypeOID)
			if err != nil {
				return nil, ClientError(&pgproto3.ErrorResponse{
					Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "XX000",
					Message: "custos could not inspect the result's columns; the session is closed and the incident logged",
				})
			}
			if attrs != nil {
				fields[i].attrs = attrs
				fields[i].attrSAD = make([]bool, len(attrs))
				for j, a := range attrs {
					fields[i].attrSAD[j] = mask.IsSADColumn(a.name)
				}
			}
		}
		if out, c := rm.m.Text(nil, f.Name, ""); c.PANs > 0 || c.SAD > 0 {
			rd.Fields[i].Name = out
			rm.counts.Add(c)
			renamed = true
		}
	}
	for i := range fields {
		fields[i].name = string(rd.Fields[i].Name)
	}
	if renamed {
		enc, err := rd.Encode(nil)
		if err != nil {
			return nil, err
		}
		m.Body = enc[5:]
	}
	return fields, nil
}

// currentShape returns the fields and format codes of the rows being
// relayed now, for a statement's record.
func (rm *resultMasker) currentShape() ([]field, []int16) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	op, _ := rm.front()
	return rm.rowShape(op)
}

// rowShape returns the fields and format codes that apply to a DataRow
// answering op.
func (rm *resultMasker) rowShape(op pendingOp) ([]field, []int16) {
	if op.kind == opExecute {
		p := op.p
		if p.fields != nil {
			return p.fields, nil
		}
		if p.stmtFields != nil {
			return p.stmtFields, p.formats
		}
		return rm.stmts[p.stmt], p.formats
	}
	return rm.simple, nil
}

// dataRow masks a DataRow's values, rebuilding the message only when one
// changes.
func (rm *resultMasker) dataRow(m *Message, fields []field, formats []int16) error {
	b := m.Body
	if len(b) < 2 {
		return fmt.Errorf("%w: DataRow from the server", ErrMalformed)
	}
	n := int(binary.BigEndian.Uint16(b))
	pos := 2
	changed := false
	out := rm.out[:0]
	for i := range n {
		if len(b) < pos+4 {
			return fmt.Errorf("%w: DataRow from the server", ErrMalformed)
		}
		start := pos
		l := int(int32(binary.BigEndian.Uint32(b[pos:])))
		pos += 4
		if l < 0 {
			if changed {
				out = binary.BigEndian.AppendUint32(out, math.MaxUint32)
			}
			continue
		}
		if len(b) < pos+l {
			return fmt.Errorf("%w: DataRow from the server", ErrMalformed)
		}
		v := b[pos : pos+l]
		pos += l
		var f field
		known := i < len(fields)
		if known {
			f = fields[i]
		}
		format := f.format
		if formats != nil || !known {
			format = formatAt(formats, i)
		}
		var nv []byte
		null := false
		strategy, ruled := rm.columnRule(f)
		switch {
		case ruled:
			nv, null = rm.applyRule(v, f.oid, format == 1, strategy)
		case f.sad:
			null = true
			rm.counts.SAD++
		case !known && format == 1:
			// A binary value of unknown type cannot be inspected: it is
			// never passed (fail closed).
			null = true
			rm.counts.PANs++
		case f.attrs != nil:
			nv, null = rm.maskComposite(v, f, format == 1)
		case format == 0 && (f.oid == oidText || f.oid == oidVarchar || f.oid == oidBPChar):
			// The common case of a text column: masked into a buffer the
			// row reuses (nv is copied into out below, before the next
			// value).
			nv = rm.maskTextTo(rm.tbuf[:0], v)
			if !sameBytes(nv, v) {
				rm.tbuf = nv[:0] // keep the buffer, grown if it had to
			}
		default:
			nv, null = rm.maskValue(v, f.oid, format == 1, 0)
		}
		if !changed && (null || !sameBytes(nv, v)) {
			changed = true
			out = append(out, b[:start]...)
		}
		if changed {
			out = appendWireValue(out, nv, null)
		}
	}
	if changed {
		rm.out = out
		m.Body = out
	}
	return nil
}

// appendWireValue appends a value as DataRow and binary COPY frame it: a
// length (-1 for NULL) and the bytes.
func appendWireValue(out, v []byte, null bool) []byte {
	if null {
		return binary.BigEndian.AppendUint32(out, math.MaxUint32)
	}
	out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
	return append(out, v...)
}

// firstUserOID is where user-defined types (and tables' row types) start.
const firstUserOID = 16384

func formatAt(formats []int16, i int) int16 {
	switch len(formats) {
	case 0:
		return 0
	case 1:
		return formats[0]
	}
	if i < len(formats) {
		return formats[i]
	}
	return 0
}

func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// columnRule returns the decision's strategy for a column, if any.
func (rm *resultMasker) columnRule(f field) (mask.Strategy, bool) {
	if rm.rules == nil || f.col == "" || rm.rules.columns == nil {
		return "", false
	}
	s, ok := rm.rules.columns[f.col]
	return s, ok
}

// applyRule masks a value a decision's column rule names, by its shape,
// whether or not it passes the PAN checks.
func (rm *resultMasker) applyRule(v []byte, oid uint32, bin bool, s mask.Strategy) ([]byte, bool) {
	if s == mask.Null || s == mask.Drop {
		rm.counts.PANs++
		return nil, true
	}
	if bin {
		switch oid {
		case oidText, oidVarchar, oidBPChar, oidName, oidUnknown:
		default:
			// A binary value of another type under a rule: not shown.
			rm.counts.PANs++
			return nil, true
		}
	}
	var out []byte
	var c mask.Counts
	switch oid {
	case oidInt8, oidNumeric, oidFloat8:
		out, c = rm.m.Number(v, s, true)
	default:
		out, c = rm.m.Value(v, s)
	}
	rm.counts.Add(c)
	return out, out == nil
}

// minPANDigits is the length of the shortest PAN.
const minPANDigits = 12

// hasDigits reports whether v holds at least n ASCII digits.
func hasDigits(v []byte, n int) bool {
	if len(v) < n {
		return false
	}
	for i, c := range v {
		if c-'0' <= 9 {
			if n--; n == 0 {
				return true
			}
		}
		if len(v)-i-1 < n {
			return false
		}
	}
	return false
}

// maskText masks free text; the result may alias v.
func (rm *resultMasker) maskText(v []byte) []byte { return rm.maskTextTo(nil, v) }

// maskTextTo is maskText appending a masked copy to dst (v itself comes
// back when nothing in it is masked).
func (rm *resultMasker) maskTextTo(dst, v []byte) []byte {
	if !hasDigits(v, minPANDigits) {
		return v
	}
	if rm.rules != nil && rm.rules.noDetect {
		return v
	}
	s := mask.Strategy("")
	if rm.rules != nil {
		s = rm.rules.reveal
	}
	v = rm.maskNumberTokens(v, s)
	v = rm.unescapeDigits(v)
	out, c := rm.m.Text(dst, v, s)
	rm.counts.Add(c)
	return out
}

// maskNumberTokens masks, type-preservingly, numbers in free text that
// Text leaves alone: a decimal ("4242424242424242.00") or exponent
// ("4.242424242424242e+15") form whose integer value is a PAN, as COPY
// rows, composite values and casts of numeric columns show them.
func (rm *resultMasker) maskNumberTokens(v []byte, s mask.Strategy) []byte {
	if bytes.IndexByte(v, '.') < 0 && bytes.IndexByte(v, 'e') < 0 && bytes.IndexByte(v, 'E') < 0 {
		return v
	}
	var out []byte
	copied := 0
	for i := 0; i < len(v); {
		c := v[i]
		if !isDigitByte(c) || (i > 0 && (isAlnumByte(v[i-1]) || v[i-1] == '.' || v[i-1] == '_')) {
			i++
			continue
		}
		j := i
		for j < len(v) && isDigitByte(v[j]) {
			j++
		}
		special := false
		if j+1 < len(v) && v[j] == '.' && isDigitByte(v[j+1]) {
			special = true
			j++
			for j < len(v) && isDigitByte(v[j]) {
				j++
			}
		}
		if j+1 < len(v) && (v[j] == 'e' || v[j] == 'E') {
			k := j + 1
			if k < len(v) && (v[k] == '+' || v[k] == '-') {
				k++
			}
			if k < len(v) && isDigitByte(v[k]) {
				special = true
				for k < len(v) && isDigitByte(v[k]) {
					k++
				}
				j = k
			}
		}
		if !special || (j < len(v) && (isAlnumByte(v[j]) || v[j] == '.')) {
			i = j
			continue
		}
		start := i
		if start > 0 && v[start-1] == '-' {
			start--
		}
		nt, cnt := rm.m.Number(v[start:j], s, false)
		if cnt.PANs > 0 {
			if nt == nil {
				nt = []byte("0")
			}
			out = append(out, v[copied:start]...)
			out = append(out, nt...)
			copied = j
			rm.counts.Add(cnt)
		}
		i = j
	}
	if out == nil {
		return v
	}
	return append(out, v[copied:]...)
}

// unescapeDigits decodes JSON-style escapes of digits (\u0030–\u0039) when
// the text holds any, so a PAN spelled with them is seen (COPY shows json
// values as they were written).
func (rm *resultMasker) unescapeDigits(v []byte) []byte {
	if !bytes.Contains(v, []byte(`\u003`)) {
		return v
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+5 < len(v) && v[i+1] == 'u' && v[i+2] == '0' && v[i+3] == '0' && v[i+4] == '3' && isDigitByte(v[i+5]) {
			out = append(out, v[i+5])
			i += 5
			continue
		}
		out = append(out, v[i])
	}
	if !mask.Contains(out) {
		return v // nothing hidden behind escapes: keep the text as it was
	}
	return out
}

func isDigitByte(c byte) bool { return c >= '0' && c <= '9' }

func isAlnumByte(c byte) bool {
	return isDigitByte(c) || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

func (rm *resultMasker) maskNumberText(v []byte) ([]byte, bool) {
	if rm.rules != nil && rm.rules.noDetect {
		return v, false
	}
	s := mask.Strategy("")
	if rm.rules != nil {
		s = rm.rules.reveal
	}
	out, c := rm.m.Number(v, s, false)
	rm.counts.Add(c)
	return out, out == nil
}

// maskValue masks one column value of type oid; null asks for NULL.
func (rm *resultMasker) maskValue(v []byte, oid uint32, bin bool, depth int) (out []byte, null bool) {
	if !bin && !hasDigits(v, minPANDigits) {
		// A text form with fewer digits than the shortest PAN (escapes,
		// hex and exponent forms included, they only add digits) holds
		// none.
		return v, false
	}
	if noPANType(oid) {
		if bin {
			return v, false
		}
		// Text forms are checked all the same: cheap, and a mislabelled
		// value must not slip through.
		return rm.maskText(v), false
	}
	if depth > 8 {
		return nil, true
	}
	if !bin {
		switch oid {
		case oidInt8, oidNumeric, oidFloat8:
			return rm.maskNumberText(v)
		case oidJSON, oidJSONB:
			return rm.maskJSON(v)
		case oidBytea:
			return rm.maskByteaText(v)
		case oidRecord:
			out, ok := rm.maskCompositeText(v, field{})
			if !ok {
				return nil, true
			}
			return out, false
		}
		if elem, ok := arrayElem[oid]; ok && (elem == oidInt8 || elem == oidNumeric || elem == oidFloat8) {
			return rm.maskNumberList(v), false
		}
		if _, ok := rangeElem[oid]; ok {
			return rm.maskNumberList(v), false
		}
		if _, ok := multirangeElem[oid]; ok {
			return rm.maskNumberList(v), false
		}
		return rm.maskText(v), false
	}
	switch oid {
	case oidText, oidVarchar, oidBPChar, oidName, oidUnknown, oidXML, oidBytea:
		return rm.maskText(v), false
	case oidJSON:
		return rm.maskJSON(v)
	case oidJSONB:
		if len(v) == 0 || v[0] != 1 {
			return nil, true
		}
		j, null := rm.maskJSON(v[1:])
		if null || sameBytes(j, v[1:]) {
			return v, null
		}
		return append([]byte{1}, j...), false
	case oidInt8:
		if len(v) != 8 {
			return nil, true
		}
		n := int64(binary.BigEndian.Uint64(v))
		if n > -1e11 && n < 1e11 {
			return v, false // fewer than 12 digits: not a PAN
		}
		txt := strconv.FormatInt(n, 10)
		nt, null := rm.maskNumberText([]byte(txt))
		if null || string(nt) == txt {
			return v, null
		}
		n, err := strconv.ParseInt(string(nt), 10, 64)
		if err != nil {
			return nil, true
		}
		return binary.BigEndian.AppendUint64(nil, uint64(n)), false
	case oidFloat8:
		txt, ok := float8Integer(v)
		if !ok {
			return v, false
		}
		nt, null := rm.maskNumberText([]byte(txt))
		if null || string(nt) == txt {
			return v, null
		}
		f, err := strconv.ParseFloat(string(nt), 64)
		if err != nil {
			return nil, true
		}
		return binary.BigEndian.AppendUint64(nil, math.Float64bits(f)), false
	case oidNumeric:
		if len(v) >= 8 && int16(binary.BigEndian.Uint16(v[2:])) < 2 && binary.BigEndian.Uint16(v[4:]) < 0x8000 {
			// Weight below 2: under 10^12, not a PAN.
			if _, err := numericToText(v); err == nil {
				return v, false
			}
		}
		txt, err := numericToText(v)
		if err != nil {
			return nil, true
		}
		nt, null := rm.maskNumberText([]byte(txt))
		if null || string(nt) == txt {
			return v, null
		}
		enc, err := numericFromText(string(nt))
		if err != nil {
			return nil, true
		}
		return enc, false
	case oidRecord:
		return rm.maskRecord(v, depth, nil)
	}
	if _, ok := arrayElem[oid]; ok {
		return rm.maskArray(v, depth)
	}
	if elem, ok := rangeElem[oid]; ok {
		return rm.maskRange(v, elem, depth)
	}
	if rng, ok := multirangeElem[oid]; ok {
		return rm.maskMultirange(v, rng, depth)
	}
	if oid >= firstUserOID && isRecordShaped(v) {
		// A table's row type: the same layout as record.
		return rm.maskRecord(v, depth, nil)
	}
	if isArrayShaped(v) {
		return rm.maskArray(v, depth)
	}
	// A binary type custos does not decode: check what looks like text.
	return rm.maskText(v), false
}

func (rm *resultMasker) maskJSON(v []byte) ([]byte, bool) {
	out, c, err := rm.m.JSON(v, nil, true)
	if err != nil {
		// Not inspectable: never passed through.
		rm.counts.PANs++
		return nil, true
	}
	rm.counts.Add(c)
	return out, false
}

// maskByteaText handles bytea's hex text form, in which digits would not
// be recognised: decode, inspect, re-encode when something was masked.
func (rm *resultMasker) maskByteaText(v []byte) ([]byte, bool) {
	if !bytes.HasPrefix(v, []byte(`\x`)) {
		return rm.maskText(v), false
	}
	raw := make([]byte, hex.DecodedLen(len(v)-2))
	if _, err := hex.Decode(raw, v[2:]); err != nil {
		return nil, true
	}
	out := rm.maskText(raw)
	if sameBytes(out, raw) {
		return v, false
	}
	enc := make([]byte, 2+hex.EncodedLen(len(out)))
	copy(enc, `\x`)
	hex.Encode(enc[2:], out)
	return enc, false
}

// maskNumberList masks each number of a numeric array's text form
// ({1,2,3}), keeping every number a number.
func (rm *resultMasker) maskNumberList(v []byte) []byte {
	var out []byte
	changed := false
	i := 0
	for i < len(v) {
		j := i
		for j < len(v) && (v[j] == '-' || v[j] == '+' || v[j] == '.' || v[j] == 'e' || v[j] == 'E' || (v[j] >= '0' && v[j] <= '9')) {
			j++
		}
		if j == i {
			if changed {
				out = append(out, v[i])
			}
			i++
			continue
		}
		nt, null := rm.maskNumberText(v[i:j])
		if null {
			nt = []byte("NULL")
		}
		if !changed && !sameBytes(nt, v[i:j]) {
			changed = true
			out = append(out, v[:i]...)
		}
		if changed {
			out = append(out, nt...)
		}
		i = j
	}
	if !changed {
		return v
	}
	return out
}

// maskArray masks a binary array's elements.
func (rm *resultMasker) maskArray(v []byte, depth int) ([]byte, bool) {
	if len(v) < 12 {
		return nil, true
	}
	ndim := int(binary.BigEndian.Uint32(v))
	elem := binary.BigEndian.Uint32(v[8:])
	hdr := 12 + 8*ndim
	if ndim < 0 || ndim > 6 || len(v) < hdr {
		return nil, true
	}
	if noPANType(elem) {
		return v, false
	}
	pos := hdr
	var out []byte
	changed := false
	for pos < len(v) {
		if len(v) < pos+4 {
			return nil, true
		}
		start := pos
		l := int(int32(binary.BigEndian.Uint32(v[pos:])))
		pos += 4
		if l < 0 {
			if changed {
				out = binary.BigEndian.AppendUint32(out, math.MaxUint32)
			}
			continue
		}
		if len(v) < pos+l {
			return nil, true
		}
		e := v[pos : pos+l]
		pos += l
		ne, null := rm.maskValue(e, elem, true, depth+1)
		if !changed && (null || !sameBytes(ne, e)) {
			changed = true
			out = append(out, v[:start]...)
			// The has-null flag must be set if an element becomes NULL.
			binary.BigEndian.PutUint32(out[4:], 1)
		}
		if changed {
			if null {
				out = binary.BigEndian.AppendUint32(out, math.MaxUint32)
			} else {
				out = binary.BigEndian.AppendUint32(out, uint32(len(ne)))
				out = append(out, ne...)
			}
		}
	}
	if !changed {
		return v, false
	}
	return out, false
}

// maskRecord masks a binary record's fields (each carries its type);
// fields marked in sad become NULL.
func (rm *resultMasker) maskRecord(v []byte, depth int, sad []bool) ([]byte, bool) {
	if len(v) < 4 {
		return nil, true
	}
	n := int(binary.BigEndian.Uint32(v))
	pos := 4
	var out []byte
	changed := false
	for i := range n {
		if len(v) < pos+8 {
			return nil, true
		}
		start := pos
		oid := binary.BigEndian.Uint32(v[pos:])
		l := int(int32(binary.BigEndian.Uint32(v[pos+4:])))
		pos += 8
		if l < 0 {
			if changed {
				out = binary.BigEndian.AppendUint32(out, oid)
				out = binary.BigEndian.AppendUint32(out, math.MaxUint32)
			}
			continue
		}
		if len(v) < pos+l {
			return nil, true
		}
		e := v[pos : pos+l]
		pos += l
		var ne []byte
		var null bool
		if i < len(sad) && sad[i] {
			null = true
			rm.counts.SAD++
		} else {
			ne, null = rm.maskValue(e, oid, true, depth+1)
		}
		if !changed && (null || !sameBytes(ne, e)) {
			changed = true
			out = append(out, v[:start]...)
		}
		if changed {
			out = binary.BigEndian.AppendUint32(out, oid)
			if null {
				out = binary.BigEndian.AppendUint32(out, math.MaxUint32)
			} else {
				out = binary.BigEndian.AppendUint32(out, uint32(len(ne)))
				out = append(out, ne...)
			}
		}
	}
	if !changed {
		return v, false
	}
	return out, false
}

// maskFields masks every field of an ErrorResponse or NoticeResponse.
func (rm *resultMasker) maskFields(m *Message) {
	b := m.Body
	var out []byte
	changed := false
	pos := 0
	for pos < len(b) && b[pos] != 0 {
		start := pos
		val, _, ok := cstringBytes(b[pos+1:])
		if !ok {
			return // malformed: the client's driver will complain
		}
		pos += 1 + len(val) + 1
		nv := rm.maskText(val)
		if !changed && !sameBytes(nv, val) {
			changed = true
			out = append(out, b[:start]...)
		}
		if changed {
			out = append(out, b[start])
			out = append(out, nv...)
			out = append(out, 0)
		}
	}
	if changed {
		m.Body = append(out, 0)
	}
}

// maskCStrings masks each NUL-terminated string of the body from offset on
// (NotificationResponse channel and payload, ParameterStatus).
func (rm *resultMasker) maskCStrings(m *Message, offset int) {
	b := m.Body
	var out []byte
	changed := false
	pos := offset
	for pos < len(b) {
		s, _, ok := cstringBytes(b[pos:])
		if !ok {
			return
		}
		start := pos
		pos += len(s) + 1
		ns := rm.maskText(s)
		if !changed && !sameBytes(ns, s) {
			changed = true
			out = append(out, b[:start]...)
		}
		if changed {
			out = append(out, ns...)
			out = append(out, 0)
		}
	}
	if changed {
		m.Body = out
	}
}

// maskCopyField masks a binary COPY field, whose type the stream does not
// say: an 8-byte field is checked as an int8, a field shaped like a binary
// numeric as a numeric, anything else as text.
func (rm *resultMasker) maskCopyField(v []byte) []byte {
	if len(v) == 8 {
		if nv, null := rm.maskValue(v, oidInt8, true, 0); !null && !sameBytes(nv, v) {
			return nv
		}
		if nv, null := rm.maskValue(v, oidFloat8, true, 0); !null && !sameBytes(nv, v) {
			return nv
		}
	}
	if isArrayShaped(v) {
		if nv, null := rm.maskArray(v, 0); !null {
			return nv
		}
	}
	if isRecordShaped(v) {
		if nv, null := rm.maskRecord(v, 0, nil); !null {
			return nv
		}
	}
	if len(v) > 1 && len(v) < 64 && isRangeShaped(v) {
		if nv := rm.maskRangeGuess(v); !sameBytes(nv, v) {
			return nv
		}
	}
	if len(v) >= 8 && len(v) == 8+2*int(binary.BigEndian.Uint16(v)) {
		if _, err := numericToText(v); err == nil {
			if nv, null := rm.maskValue(v, oidNumeric, true, 0); !null && !sameBytes(nv, v) {
				return nv
			}
		}
	}
	return rm.maskText(v)
}

// functionResult masks a FunctionCallResponse (large object reads).
func (rm *resultMasker) functionResult(m *Message) {
	b := m.Body
	if len(b) < 4 {
		return
	}
	l := int(int32(binary.BigEndian.Uint32(b)))
	if l < 0 || len(b) < 4+l {
		return
	}
	v := b[4 : 4+l]
	nv := rm.maskText(v)
	if sameBytes(nv, v) {
		return
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(len(nv)))
	m.Body = append(out, nv...)
}

func cstringBytes(b []byte) ([]byte, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, b, false
	}
	return b[:i], b[i+1:], true
}

// maskComposite masks a value of a composite (row) type attribute by
// attribute, by each attribute's type; attributes that hold sensitive
// authentication data become NULL.
func (rm *resultMasker) maskComposite(v []byte, f field, bin bool) ([]byte, bool) {
	if bin {
		if !isRecordShaped(v) {
			return nil, true
		}
		return rm.maskRecord(v, 0, f.attrSAD)
	}
	out, ok := rm.maskCompositeText(v, f)
	if !ok {
		return nil, true // not inspectable: never passed
	}
	return out, false
}

// maskCompositeText rewrites a composite's text form `(a,"b c",,d)`,
// masking each attribute as a value of its type and leaving sensitive
// ones empty (NULL).
func (rm *resultMasker) maskCompositeText(v []byte, f field) ([]byte, bool) {
	if len(v) < 2 || v[0] != '(' || v[len(v)-1] != ')' {
		return nil, false
	}
	body := v[1 : len(v)-1]
	out := make([]byte, 0, len(v))
	out = append(out, '(')
	i, n := 0, 0
	changed := false
	var val []byte
	for {
		fieldStart := i
		val = val[:0]
		quoted, inQuote := false, false
		for i < len(body) {
			c := body[i]
			if inQuote {
				switch {
				case c == '\\' && i+1 < len(body):
					val = append(val, body[i+1])
					i += 2
					continue
				case c == '"' && i+1 < len(body) && body[i+1] == '"':
					val = append(val, '"')
					i += 2
					continue
				case c == '"':
					inQuote = false
					i++
					continue
				}
				val = append(val, c)
				i++
				continue
			}
			if c == ',' {
				break
			}
			switch {
			case c == '"':
				inQuote, quoted = true, true
			case c == '\\' && i+1 < len(body):
				val = append(val, body[i+1])
				i++
			default:
				val = append(val, c)
			}
			i++
		}
		if inQuote {
			return nil, false
		}
		null := !quoted && len(val) == 0
		if !null {
			switch {
			case n < len(f.attrSAD) && f.attrSAD[n]:
				rm.counts.SAD++
				changed = true
			default:
				var nv []byte
				var isNull bool
				if n < len(f.attrs) {
					nv, isNull = rm.maskValue(val, f.attrs[n].typ, false, 1)
				} else {
					nv, isNull = rm.maskUntyped(val)
				}
				switch {
				case isNull:
					changed = true
				case sameBytes(nv, val) || string(nv) == string(val):
					out = append(out, body[fieldStart:i]...)
				default:
					changed = true
					out = appendCompositeField(out, nv)
				}
			}
		}
		n++
		if i >= len(body) {
			break
		}
		out = append(out, ',')
		i++
	}
	if !changed {
		return v, true
	}
	return append(out, ')'), true
}

// maskUntyped masks a value whose type is unknown (an attribute of an
// anonymous record): JSON by its members, anything else as text.
func (rm *resultMasker) maskUntyped(v []byte) ([]byte, bool) {
	if len(v) > 1 && (v[0] == '{' || v[0] == '[') && json.Valid(v) {
		return rm.maskJSON(v)
	}
	return rm.maskText(v), false
}

// appendCompositeField writes one attribute of a composite's text form,
// always quoted.
func appendCompositeField(out, v []byte) []byte {
	out = append(out, '"')
	for _, c := range v {
		switch c {
		case '"':
			out = append(out, '"', '"')
		case '\\':
			out = append(out, '\\', '\\')
		default:
			out = append(out, c)
		}
	}
	return append(out, '"')
}

// maskRange masks a binary range's bounds (after its flags byte).
func (rm *resultMasker) maskRange(v []byte, elem uint32, depth int) ([]byte, bool) {
	if len(v) < 1 {
		return nil, true
	}
	out := []byte{v[0]}
	pos := 1
	changed := false
	for pos < len(v) {
		if len(v) < pos+4 {
			return nil, true
		}
		l := int(int32(binary.BigEndian.Uint32(v[pos:])))
		if l < 0 || len(v) < pos+4+l {
			return nil, true
		}
		e := v[pos+4 : pos+4+l]
		pos += 4 + l
		ne, null := rm.maskValue(e, elem, true, depth+1)
		if null {
			return nil, true
		}
		if !sameBytes(ne, e) {
			changed = true
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(ne)))
		out = append(out, ne...)
	}
	if !changed {
		return v, false
	}
	return out, false
}

// maskMultirange masks each range of a binary multirange.
func (rm *resultMasker) maskMultirange(v []byte, rng uint32, depth int) ([]byte, bool) {
	if len(v) < 4 {
		return nil, true
	}
	n := int(binary.BigEndian.Uint32(v))
	out := append([]byte(nil), v[:4]...)
	pos := 4
	changed := false
	for range n {
		if len(v) < pos+4 {
			return nil, true
		}
		l := int(int32(binary.BigEndian.Uint32(v[pos:])))
		if l < 0 || len(v) < pos+4+l {
			return nil, true
		}
		e := v[pos+4 : pos+4+l]
		pos += 4 + l
		ne, null := rm.maskValue(e, rng, true, depth+1)
		if null {
			return nil, true
		}
		if !sameBytes(ne, e) {
			changed = true
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(ne)))
		out = append(out, ne...)
	}
	if !changed {
		return v, false
	}
	return out, false
}

// isRecordShaped reports whether v parses exactly as a binary record.
func isRecordShaped(v []byte) bool {
	if len(v) < 4 {
		return false
	}
	n := int(int32(binary.BigEndian.Uint32(v)))
	if n < 0 || n > 1600 {
		return false
	}
	pos := 4
	for range n {
		if len(v) < pos+8 {
			return false
		}
		l := int(int32(binary.BigEndian.Uint32(v[pos+4:])))
		pos += 8
		if l < -1 || (l > 0 && len(v) < pos+l) {
			return false
		}
		if l > 0 {
			pos += l
		}
	}
	return pos == len(v)
}

// isArrayShaped reports whether v parses exactly as a binary array.
func isArrayShaped(v []byte) bool {
	if len(v) < 12 {
		return false
	}
	ndim := int(int32(binary.BigEndian.Uint32(v)))
	flags := binary.BigEndian.Uint32(v[4:])
	if ndim < 0 || ndim > 6 || flags > 1 || len(v) < 12+8*ndim {
		return false
	}
	count := 0
	if ndim > 0 {
		count = 1
	}
	for d := range ndim {
		dim := int(int32(binary.BigEndian.Uint32(v[12+8*d:])))
		if dim < 0 || dim > 1<<20 {
			return false
		}
		count *= dim
		if count > 1<<20 {
			return false
		}
	}
	pos := 12 + 8*ndim
	for range count {
		if len(v) < pos+4 {
			return false
		}
		l := int(int32(binary.BigEndian.Uint32(v[pos:])))
		pos += 4
		if l < -1 || (l > 0 && len(v) < pos+l) {
			return false
		}
		if l > 0 {
			pos += l
		}
	}
	return pos == len(v)
}

// isRangeShaped reports whether v parses exactly as a binary range: a flags
// byte, then the bounds it says are present.
func isRangeShaped(v []byte) bool {
	if len(v) < 1 {
		return false
	}
	flags := v[0]
	if flags&^0x1f != 0 {
		return false
	}
	if flags&0x01 != 0 { // empty
		return len(v) == 1
	}
	pos := 1
	for _, inf := range []byte{0x08, 0x10} {
		if flags&inf != 0 {
			continue
		}
		if len(v) < pos+4 {
			return false
		}
		l := int(int32(binary.BigEndian.Uint32(v[pos:])))
		if l < 0 || len(v) < pos+4+l {
			return false
		}
		pos += 4 + l
	}
	return pos == len(v) && pos > 1
}

// maskRangeGuess masks a binary range of unknown element type: each bound
// is checked as an int8, a numeric or text.
func (rm *resultMasker) maskRangeGuess(v []byte) []byte {
	out := []byte{v[0]}
	pos := 1
	changed := false
	for pos < len(v) {
		l := int(int32(binary.BigEndian.Uint32(v[pos:])))
		e := v[pos+4 : pos+4+l]
		pos += 4 + l
		ne := rm.maskCopyField(e)
		if !sameBytes(ne, e) {
			changed = true
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(ne)))
		out = append(out, ne...)
	}
	if !changed {
		return v
	}
	return out
}
