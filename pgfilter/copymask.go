package pgfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/sqlclass"
)

// COPY TO STDOUT has no RowDescription: the masker learns what it copies
// from the statement (internal/sqlclass: table, column list, format
// options) and the catalog (the table's columns, in order, with their
// types), and parses every row by the format's real rules — text: the
// delimiter and backslash escapes; csv: quotes, the escape character, quoted
// newlines; binary: the tuple layout — with the options the client chose.
// Values are unescaped before they are inspected, so QUOTE, DELIMITER,
// ESCAPE or NULL cannot wrap or split a card number past detection. Columns
// holding sensitive authentication data are emptied (text: the NULL marker,
// csv: an empty unquoted field, binary: length -1), columns with a
// decision's rule are masked by it, everything else by detection. A row may
// span CopyData messages: partial rows are carried over, up to
// copyRowLimit. What cannot be parsed is never passed: the rest of the
// stream is withheld and the statement's completion becomes an error.

// copyRowLimit bounds one COPY row that custos holds while it waits for the
// rest of it.
const copyRowLimit = 64 << 20

// COPY formats.
const (
	copyText byte = iota + 1
	copyCSV
	copyBinary
)

// binarySignature starts a binary COPY stream.
var binarySignature = []byte("PGCOPY\n\xff\r\n\x00")

// copyQueue holds the COPY TO STDOUT statements one request runs, in order;
// each CopyOutResponse takes the next.
type copyQueue struct {
	copies []*sqlclass.Copy
	next   int
}

func (q *copyQueue) take() *sqlclass.Copy {
	if q == nil || q.next >= len(q.copies) {
		return nil
	}
	c := q.copies[q.next]
	q.next++
	return c
}

// copyStream is one COPY TO STDOUT being relayed.
type copyStream struct {
	format               byte
	delim, quote, escape byte
	null                 []byte
	header               bool // the header line is still to come
	fileHeader           bool // binary: the file header is still to come
	trailer              bool // binary: the trailer was seen
	// fields are the columns by position: the table's (named, typed) for
	// COPY table, unnamed ones for COPY (query), named by its header line
	// when it has one.
	fields []field
	table  bool // fields are the table's columns
	buf    []byte
	failed string // why the rest is withheld; "" while inspecting

	// scratch, reused from row to row
	raw    [][]byte
	off    []int // where each field starts in the row (its opening quote included)
	quoted []bool
}

// copyStatements returns the COPY ... TO STDOUT statements of a query text.
func (rm *resultMasker) copyStatements(q string) *copyQueue {
	if rm.cls == nil || !containsFold(q, "copy") {
		return nil
	}
	res, err := rm.cls.Classify(q)
	if err != nil {
		return nil
	}
	var cq *copyQueue
	for _, st := range res.Statements {
		if c := st.Copy; c != nil && c.Direction == sqlclass.CopyTo && c.Target == sqlclass.CopyClient {
			if cq == nil {
				cq = &copyQueue{}
			}
			cq.copies = append(cq.copies, c)
		}
	}
	return cq
}

// containsFold reports whether s contains the lower-case ASCII word w in
// any case.
func containsFold(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i]|0x20 == w[0] && strings.EqualFold(s[i:i+len(w)], w) {
			return true
		}
	}
	return false
}

// startCopy reads a CopyOutResponse and prepares the stream's parser.
func (rm *resultMasker) startCopy(ctx context.Context, m *Message, op pendingOp) {
	cp := &copyStream{}
	rm.cp = cp
	b := m.Body
	if len(b) < 3 {
		cp.failed = "malformed CopyOutResponse"
		return
	}
	overall := b[0]
	n := int(binary.BigEndian.Uint16(b[1:]))
	if len(b) < 3+2*n {
		cp.failed = "malformed CopyOutResponse"
		return
	}
	var info *sqlclass.Copy
	if op.kind == opExecute {
		// One statement: one COPY, whatever the portal ran before.
		if op.p != nil && len(op.p.copies) == 1 {
			info = op.p.copies[0]
		}
	} else {
		info = op.copies.take()
	}
	if info == nil {
		cp.failed = "custos could not tell which COPY statement this output belongs to"
		return
	}
	if reason := cp.configure(info, overall); reason != "" {
		cp.failed = reason
		return
	}
	cp.fields = make([]field, n)
	for i := range cp.fields {
		cp.fields[i].format = int16(binary.BigEndian.Uint16(b[3+2*i:]))
	}
	if info.Query || info.Table == "" {
		return
	}
	cols, reason := rm.copyColumns(ctx, info)
	if reason != "" {
		cp.failed = reason
		return
	}
	if len(cols) != n {
		cp.failed = "the COPY output's columns do not match the table's"
		return
	}
	for i, c := range cols {
		cp.fields[i].oid = c.typ
		cp.fields[i].name = c.name
		cp.fields[i].col = c.name
		cp.fields[i].sad = mask.IsSADColumn(c.name)
	}
	cp.table = true
}

// configure sets the parser up by the statement's options; it returns why
// the output cannot be inspected, or "".
func (cp *copyStream) configure(info *sqlclass.Copy, overall byte) string {
	switch info.Format {
	case "text":
		cp.format, cp.delim, cp.null = copyText, '\t', []byte(`\N`)
	case "csv":
		cp.format, cp.delim, cp.quote, cp.null = copyCSV, ',', '"', nil
	case "binary":
		cp.format, cp.fileHeader = copyBinary, true
	default:
		return "unknown COPY format"
	}
	if (overall == 1) != (cp.format == copyBinary) {
		return "the COPY output is not in the statement's format"
	}
	if cp.format == copyBinary {
		return ""
	}
	one := func(p *string, dst *byte) bool {
		if p == nil {
			return true
		}
		if len(*p) != 1 || (*p)[0] == '\n' || (*p)[0] == '\r' {
			return false
		}
		*dst = (*p)[0]
		return true
	}
	if !one(info.Delimiter, &cp.delim) || !one(info.Quote, &cp.quote) {
		return "unsupported COPY delimiter or quote"
	}
	cp.escape = cp.quote
	if !one(info.Escape, &cp.escape) {
		return "unsupported COPY escape"
	}
	if info.Null != nil {
		cp.null = []byte(*info.Null)
	}
	if hasDigits(cp.null, minPANDigits) || bytes.ContainsAny(cp.null, "\n\r") {
		// A NULL marker that could be a card number would pass one
		// unmasked as "NULL".
		return "unsupported COPY NULL marker"
	}
	if info.Encoding != nil && !asciiSafeEncoding(*info.Encoding) {
		return "COPY ENCODING " + *info.Encoding + " cannot be inspected"
	}
	cp.header = info.Header
	return ""
}

// asciiSafeEncoding reports whether an encoding's multibyte characters
// never contain ASCII bytes, so that COPY's delimiters, quotes and
// backslashes can be found byte by byte (not so in SJIS, BIG5, GBK,
// GB18030, UHC, JOHAB).
func asciiSafeEncoding(name string) bool {
	var b strings.Builder
	for _, c := range strings.ToLower(name) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	n := b.String()
	switch n {
	case "utf8", "unicode", "sqlascii", "eucjp", "euccn", "euckr", "euctw", "eucjis2004",
		"muleinternal", "koi8", "koi8r", "koi8u", "alt", "win", "win866", "win874", "cp866", "tcvn", "tcvn5712", "vscii", "abc":
		return true
	}
	for _, p := range []string{"latin", "iso8859", "win125", "windows125", "cp125"} {
		if rest, ok := strings.CutPrefix(n, p); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// copyColumns returns the columns a COPY table TO copies, in order.
func (rm *resultMasker) copyColumns(ctx context.Context, info *sqlclass.Copy) ([]attr, string) {
	schema, name, ok := strings.Cut(info.Table, ".")
	if !ok || rm.tableColumns == nil {
		return nil, "custos could not look up the copied table's columns"
	}
	all, err := rm.tableColumns(ctx, schema, name)
	if err != nil || len(all) == 0 {
		return nil, "custos could not look up the copied table's columns"
	}
	if len(info.Columns) == 0 {
		return all, ""
	}
	out := make([]attr, 0, len(info.Columns))
	for _, c := range info.Columns {
		found := false
		for _, a := range all {
			if a.name == c {
				out = append(out, a)
				found = true
				break
			}
		}
		if !found {
			return nil, "a copied column is not in the table"
		}
	}
	return out, ""
}

// copyData masks one CopyData message of the current COPY.
func (rm *resultMasker) copyData(m *Message) Verdict {
	cp := rm.cp
	if cp == nil {
		// Data with no CopyOutResponse before it: inspected as text.
		if nv := rm.maskText(m.Body); !sameBytes(nv, m.Body) {
			m.Body = nv
		}
		return Forward
	}
	if cp.failed != "" {
		return Drop
	}
	fromBody := len(cp.buf) == 0
	data := m.Body
	if !fromBody {
		cp.buf = append(cp.buf, data...)
		data = cp.buf
	}
	out, pos, changed, reason := rm.copyRows(cp, data, rm.out[:0])
	if reason != "" {
		cp.failed, cp.buf = reason, nil
		return Drop
	}
	rest := data[pos:]
	if len(rest) > copyRowLimit {
		cp.failed, cp.buf = "a COPY row is larger than custos inspects", nil
		return Drop
	}
	cp.buf = append(cp.buf[:0], rest...)
	if fromBody && !changed && len(rest) == 0 {
		return Forward
	}
	if len(out) == 0 {
		return Drop
	}
	rm.out = out
	m.Body = out
	return Forward
}

// copyDone checks that the stream ended on a row boundary.
func (rm *resultMasker) copyDone() Verdict {
	cp := rm.cp
	if cp == nil {
		return Forward
	}
	if cp.failed == "" && (len(cp.buf) > 0 || (cp.format == copyBinary && !cp.trailer && !cp.fileHeader)) {
		cp.failed = "the COPY output ends inside a row"
	}
	if cp.failed != "" {
		return Drop
	}
	return Forward
}

// copyComplete ends the current COPY; when its output was withheld, the
// CommandComplete becomes an error saying so.
func (rm *resultMasker) copyComplete(m *Message) error {
	cp := rm.cp
	rm.cp = nil
	if cp == nil || cp.failed == "" {
		return nil
	}
	rm.counts.PANs++ // withheld: counted as masked
	enc, err := (&pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "XX000",
		Message: "custos withheld the COPY output: " + cp.failed,
		Hint:    "COPY with FORMAT text, csv or binary and HEADER, or use SELECT.",
	}).Encode(nil)
	if err != nil {
		return err
	}
	m.Type, m.Body = 'E', enc[5:]
	return nil
}

// copyRows masks the complete rows at the start of data, appending them to
// out; pos is where the incomplete rest starts, changed whether out differs
// from data[:pos].
func (rm *resultMasker) copyRows(cp *copyStream, data, out []byte) (_ []byte, pos int, changed bool, reason string) {
	for pos < len(data) {
		var n int
		var row []byte
		if cp.format == copyBinary {
			row, n, reason = rm.copyBinaryRow(cp, data[pos:])
		} else {
			row, n, reason = rm.copyTextRow(cp, data[pos:])
		}
		if reason != "" {
			return out, pos, changed, reason
		}
		if n == 0 {
			break
		}
		if row == nil {
			out = append(out, data[pos:pos+n]...)
		} else {
			out = append(out, row...)
			changed = true
		}
		pos += n
	}
	return out, pos, changed, ""
}

// copyTextRow masks the first row of data (text or csv): n is its length
// (0: incomplete), row its masked form (nil: unchanged).
func (rm *resultMasker) copyTextRow(cp *copyStream, data []byte) (row []byte, n int, reason string) {
	var complete bool
	if cp.format == copyText {
		n, complete, reason = cp.splitText(data)
	} else {
		n, complete, reason = cp.splitCSV(data)
	}
	if reason != "" || !complete {
		return nil, 0, reason
	}
	if len(cp.raw) != len(cp.fields) {
		return nil, 0, "a COPY row does not have the statement's columns"
	}
	header := cp.header
	cp.header = false
	var outRow []byte
	changed := false
	for i, raw := range cp.raw {
		quoted := cp.format == copyCSV && cp.quoted[i]
		isNull := !quoted && bytes.Equal(raw, cp.null)
		var val []byte
		if !isNull || header {
			var ok bool
			if val, ok = cp.unescape(raw, quoted); !ok {
				return nil, 0, "malformed COPY text"
			}
		}
		nv, null, same := rm.copyTextField(cp, i, val, isNull, header)
		if header && reasonHeader(cp, i, val) {
			return nil, 0, "the COPY header does not match the table's columns"
		}
		if !same && !changed {
			changed = true
			outRow = append(outRow, cp.fieldsBefore(data, i)...)
		}
		if changed {
			if i > 0 {
				outRow = append(outRow, cp.delim)
			}
			switch {
			case same:
				outRow = cp.appendRaw(outRow, raw, quoted)
			case null:
				outRow = append(outRow, cp.null...)
			default:
				outRow = cp.appendValue(outRow, nv)
			}
		}
	}
	if !changed {
		return nil, n, ""
	}
	return append(outRow, '\n'), n, ""
}

// reasonHeader checks a header field against the table's column name.
func reasonHeader(cp *copyStream, i int, val []byte) bool {
	return cp.table && string(val) != cp.fields[i].name
}

// fieldsBefore returns the bytes of the row's fields before field i,
// without the delimiter that follows them.
func (cp *copyStream) fieldsBefore(data []byte, i int) []byte {
	if i == 0 {
		return nil
	}
	return data[:cp.off[i]-1]
}

// copyTextField masks one text or csv field: nv is its new value, null
// asks for the NULL marker, same keeps the raw field.
func (rm *resultMasker) copyTextField(cp *copyStream, i int, val []byte, isNull, header bool) (nv []byte, null, same bool) {
	f := &cp.fields[i]
	if header {
		if !cp.table && mask.IsSADColumn(string(val)) {
			f.sad = true
		}
		out := rm.maskText(val)
		return out, false, sameBytes(out, val)
	}
	if isNull {
		return nil, true, true
	}
	if s, ok := rm.columnRule(*f); ok {
		nv, null = rm.applyRule(val, f.oid, false, s)
		return nv, null, false
	}
	if f.sad {
		rm.counts.SAD++
		return nil, true, false
	}
	if f.oid == 0 {
		nv, null = rm.maskUntyped(val)
	} else {
		nv, null = rm.maskValue(val, f.oid, false, 0)
	}
	if null {
		return nil, true, false
	}
	return nv, false, sameBytes(nv, val) || bytes.Equal(nv, val)
}

// splitText splits the first text-format row of data into cp.raw (escaped
// fields); complete is false when the row's end is not in data yet.
func (cp *copyStream) splitText(data []byte) (n int, complete bool, reason string) {
	cp.raw, cp.off = cp.raw[:0], cp.off[:0]
	start := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++ // the escaped byte, whatever it is
		case cp.delim:
			cp.raw, cp.off = append(cp.raw, data[start:i:i]), append(cp.off, start)
			start = i + 1
		case '\n':
			cp.raw, cp.off = append(cp.raw, data[start:i:i]), append(cp.off, start)
			return i + 1, true, ""
		}
	}
	return 0, false, ""
}

// splitCSV splits the first csv row of data into cp.raw (the fields'
// bytes, without their quotes) and cp.quoted.
func (cp *copyStream) splitCSV(data []byte) (n int, complete bool, reason string) {
	cp.raw, cp.quoted, cp.off = cp.raw[:0], cp.quoted[:0], cp.off[:0]
	i := 0
	for {
		cp.off = append(cp.off, i)
		if i < len(data) && data[i] == cp.quote {
			// Quoted: every quote and escape inside is escaped.
			j := i + 1
			for {
				if j >= len(data) {
					return 0, false, ""
				}
				c := data[j]
				if c == cp.escape && cp.escape != cp.quote {
					if j+1 >= len(data) {
						return 0, false, ""
					}
					if d := data[j+1]; d != cp.quote && d != cp.escape {
						return 0, false, "malformed COPY csv"
					}
					j += 2
					continue
				}
				if c == cp.quote {
					if j+1 >= len(data) {
						return 0, false, ""
					}
					if cp.escape == cp.quote && data[j+1] == cp.quote {
						j += 2
						continue
					}
					break
				}
				j++
			}
			cp.raw = append(cp.raw, data[i+1:j:j])
			cp.quoted = append(cp.quoted, true)
			i = j + 1
		} else {
			j := i
			for j < len(data) && data[j] != cp.delim && data[j] != '\n' {
				if data[j] == cp.quote || data[j] == '\r' {
					return 0, false, "malformed COPY csv"
				}
				j++
			}
			if j >= len(data) {
				return 0, false, ""
			}
			cp.raw = append(cp.raw, data[i:j:j])
			cp.quoted = append(cp.quoted, false)
			i = j
		}
		switch {
		case i >= len(data):
			return 0, false, ""
		case data[i] == '\n':
			return i + 1, true, ""
		case data[i] == cp.delim:
			i++
		default:
			return 0, false, "malformed COPY csv"
		}
	}
}

// unescape turns a field's bytes into its value.
func (cp *copyStream) unescape(raw []byte, quoted bool) ([]byte, bool) {
	if cp.format == copyCSV {
		if !quoted || bytes.IndexByte(raw, cp.escape) < 0 {
			return raw, true
		}
		out := make([]byte, 0, len(raw))
		for i := 0; i < len(raw); i++ {
			if raw[i] == cp.escape && i+1 < len(raw) {
				i++
			}
			out = append(out, raw[i])
		}
		return out, true
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw, true
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(raw) {
			return nil, false
		}
		i++
		switch e := raw[i]; e {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'v':
			out = append(out, '\v')
		case '\\':
			out = append(out, '\\')
		default:
			if e != cp.delim {
				// PostgreSQL writes no other escape.
				return nil, false
			}
			out = append(out, e)
		}
	}
	return out, true
}

// appendRaw writes a field as it came.
func (cp *copyStream) appendRaw(out, raw []byte, quoted bool) []byte {
	if !quoted {
		return append(out, raw...)
	}
	out = append(out, cp.quote)
	out = append(out, raw...)
	return append(out, cp.quote)
}

// appendValue writes a new value the way PostgreSQL would: text escaped,
// csv always quoted.
func (cp *copyStream) appendValue(out, v []byte) []byte {
	if cp.format == copyCSV {
		out = append(out, cp.quote)
		for _, c := range v {
			if c == cp.quote || c == cp.escape {
				out = append(out, cp.escape)
			}
			out = append(out, c)
		}
		return append(out, cp.quote)
	}
	for _, c := range v {
		switch c {
		case '\b':
			out = append(out, '\\', 'b')
		case '\f':
			out = append(out, '\\', 'f')
		case '\n':
			out = append(out, '\\', 'n')
		case '\r':
			out = append(out, '\\', 'r')
		case '\t':
			out = append(out, '\\', 't')
		case '\v':
			out = append(out, '\\', 'v')
		case '\\':
			out = append(out, '\\', '\\')
		default:
			if c == cp.delim {
				out = append(out, '\\')
			}
			out = append(out, c)
		}
	}
	return out
}

// copyBinaryRow masks the file header, a tuple or the trailer at the start
// of data.
func (rm *resultMasker) copyBinaryRow(cp *copyStream, data []byte) (row []byte, n int, reason string) {
	if cp.fileHeader {
		if len(data) < 19 {
			if !bytes.HasPrefix(binarySignature, data[:min(len(data), len(binarySignature))]) {
				return nil, 0, "malformed binary COPY header"
			}
			return nil, 0, ""
		}
		if !bytes.HasPrefix(data, binarySignature) {
			return nil, 0, "malformed binary COPY header"
		}
		ext := int64(binary.BigEndian.Uint32(data[15:]))
		if ext > copyRowLimit {
			return nil, 0, "malformed binary COPY header"
		}
		if int64(len(data)) < 19+ext {
			return nil, 0, ""
		}
		cp.fileHeader = false
		return nil, 19 + int(ext), ""
	}
	if cp.trailer {
		return nil, 0, "data after the binary COPY trailer"
	}
	if len(data) < 2 {
		return nil, 0, ""
	}
	count := int(int16(binary.BigEndian.Uint16(data)))
	if count == -1 {
		cp.trailer = true
		return nil, 2, ""
	}
	if count != len(cp.fields) {
		return nil, 0, "a COPY row does not have the statement's columns"
	}
	pos := 2
	var out []byte
	changed := false
	for i := range count {
		if len(data) < pos+4 {
			return nil, 0, ""
		}
		start := pos
		l := int(int32(binary.BigEndian.Uint32(data[pos:])))
		pos += 4
		if l < -1 {
			return nil, 0, "malformed binary COPY tuple"
		}
		if l == -1 {
			if changed {
				out = binary.BigEndian.AppendUint32(out, math.MaxUint32)
			}
			continue
		}
		if len(data)-pos < l {
			return nil, 0, ""
		}
		v := data[pos : pos+l]
		pos += l
		nv, null := rm.copyBinaryField(&cp.fields[i], v)
		if !changed && (null || !sameBytes(nv, v)) {
			changed = true
			out = append(out, data[:start]...)
		}
		if changed {
			out = appendWireValue(out, nv, null)
		}
	}
	if !changed {
		return nil, pos, ""
	}
	return out, pos, ""
}

// copyBinaryField masks one binary field by its column: dropped, ruled,
// by its type, or (a query's column, untyped) by what it looks like.
func (rm *resultMasker) copyBinaryField(f *field, v []byte) ([]byte, bool) {
	if s, ok := rm.columnRule(*f); ok {
		return rm.applyRule(v, f.oid, true, s)
	}
	if f.sad {
		rm.counts.SAD++
		return nil, true
	}
	if f.oid == 0 {
		return rm.maskCopyField(v), false
	}
	return rm.maskValue(v, f.oid, true, 0)
}
