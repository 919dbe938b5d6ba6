package pgfilter

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/internal/sqlclass"
)

// StatementRecorder keeps the audit record of every statement a session
// runs (Options.Statements).
//
// Admit is asked before a statement goes upstream: an error refuses it
// (SQLSTATE 58030) because it could not be recorded. Record is called once
// the statement completed, on the server-to-client goroutine, and must not
// wait for the record to be durable: the returned Durable is waited on
// before the client can see the completion, so that a statement the client
// saw complete has its record. Its Wait returns an error only when the
// client must not see the completion (the record could not be kept and
// the resource fails closed); the session then ends with FATAL 58030 and
// the results are withheld.
type StatementRecorder interface {
	Admit(s *Session) error
	Record(ev *StatementEvent) Durable
}

// Durable is a statement record on its way to durable storage.
type Durable interface {
	Wait(ctx context.Context) error
}

// StatementOutcome says how a statement ended.
type StatementOutcome string

// Statement outcomes.
const (
	// StatementSucceeded: the server ran it to completion.
	StatementSucceeded StatementOutcome = "success"
	// StatementFailed: the server reported an error, skipped it after an
	// earlier error, or custos could not let it run (audit unavailable).
	StatementFailed StatementOutcome = "failure"
	// StatementDenied: custos refused it (policy, approvers, syntax).
	StatementDenied StatementOutcome = "denied"
)

// Protocols a statement arrives in.
const (
	ProtocolSimple       = "simple"
	ProtocolExtended     = "extended"
	ProtocolFunctionCall = "function_call"
)

// StatementEvent is one statement as it completed: what it was, what
// custos decided, how the server answered and what was masked. Its
// fields are valid only during Record.
type StatementEvent struct {
	Session *Session
	// Seq numbers the session's statements from 1.
	Seq int64
	// Start is when custos received the statement; Duration runs to its
	// completion, ApprovalWait is the part spent parked.
	Start        time.Time
	Duration     time.Duration
	ApprovalWait time.Duration
	Protocol     string
	// Text is the normalized statement (literals replaced), Operation the
	// command (SELECT, INSERT, ... or "BATCH ..." for several), Fingerprint
	// pg_query's fingerprint, Collections the tables read or written.
	Text, Operation, Fingerprint string
	Collections                  []string
	// ReadOnly says the classifier found every statement of the text
	// read-only (false when it could not tell, or for a FunctionCall).
	ReadOnly bool
	// PANSources are raw texts that may hold card numbers (the statement
	// as sent, bound parameters): only their PANs' fingerprints may be
	// kept, never the texts.
	PANSources []string
	// Decision is the policy's decision; nil when no policy ran.
	Decision   *policy.Decision
	ApprovalID string
	Outcome    StatementOutcome
	// SQLState and Error are the first error the statement met.
	SQLState, Error string
	// Rows returned or affected; Masked PAN values and removed SAD values
	// in its results.
	Rows, Masked, SAD int64
	// Columns and ResultRows are the masked result as the client saw it,
	// up to Options.ResultRows rows, each row a JSON array of strings and
	// nulls; Truncated says more rows were returned.
	Columns    []string
	ResultRows []string
	Truncated  bool
	// SpanContext is the statement's pg.statement span, when traced.
	SpanContext trace.SpanContext
}

// NeedsSync reports whether the statement's record must be fsynced before
// the client sees its completion: it touched cardholder data or changed
// something (results masked, refused, parked for approval, not read-only),
// or the policy asked for it. Other records need only be written.
func (ev *StatementEvent) NeedsSync() bool {
	return ev.Masked > 0 || ev.SAD > 0 || ev.Outcome == StatementDenied || ev.ApprovalID != "" ||
		!ev.ReadOnly || (ev.Decision != nil && ev.Decision.Fsync)
}

// The span names of a statement.
const (
	SpanStatement = "pg.statement"
	SpanDecide    = "custos.policy.decide"
	SpanApproval  = "custos.approval.wait"
	SpanUpstream  = "pg.upstream"
	SpanMask      = "custos.mask"
)

// errUnrecorded ends a session whose statement record could not be kept
// on a resource that fails closed.
var errUnrecorded = fatalHint("58030",
	"custos could not record a statement in its audit journal; the session is closed and the statement's results withheld",
	"If the statement ran in a transaction it was rolled back; otherwise check whether it took effect before retrying. The incident is logged.")

// auditRefusal answers a statement custos refuses to run because its
// record cannot be kept.
func auditRefusal() *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "58030",
		Message: "custos: the audit journal cannot be written; statements on this resource are refused until it can (the statement was not run)"}
}

type stmtKind uint8

const (
	kindQuery stmtKind = iota + 1
	kindExec
	kindFunc
	kindSync
)

// stmtEntry is a statement between its arrival and its completion (or a
// Sync, which ends an extended-protocol batch).
type stmtEntry struct {
	kind     stmtKind
	silent   bool // an empty query: nothing to record
	start    time.Time
	decided  time.Time // the policy's decision made
	sent     time.Time // let upstream, after any approval wait
	firstRow time.Time
	lastRow  time.Time

	text, op, fingerprint string
	collections           []string
	readOnly              bool
	panSources            []string
	dec                   *policy.Decision
	approvalID            string
	refused               bool // custos refused it
	failed                bool // refused for a failure (audit), not a denial

	rows     int64
	dataRows int64
	code     string
	errMsg   string
	skipped  bool
	cols     []string
	captured []string
	more     bool
	copyOut  bool
}

// batchRole implements batchEntry.
func (e *stmtEntry) batchRole() batchRole {
	switch e.kind {
	case kindExec:
		return roleExtended
	case kindSync:
		return roleSync
	}
	return roleOwn
}

// ledger queues a session's statements in the order the server answers
// them: pushed by the client-to-server goroutine, completed by the
// server-to-client one.
type ledger struct {
	mu sync.Mutex
	q  syncQueue[*stmtEntry]
	// ended are statements taken off q, in order, to be completed when
	// their batch ends (those the server skipped after an error).
	ended []*stmtEntry
	seq   int64
}

func (l *ledger) push(e *stmtEntry) {
	l.mu.Lock()
	l.q.push(e)
	l.mu.Unlock()
}

func (l *ledger) head() *stmtEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, _ := l.q.head()
	return e
}

func (l *ledger) pop() *stmtEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, _ := l.q.pop()
	return e
}

// fail applies an ErrorResponse: it returns the Execute that failed (nil
// when the error is not an Execute's) and keeps the statements the server
// skips after it, marked skipped, for endBatch.
func (l *ledger) fail() *stmtEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, _ := l.q.fail(l.skip)
	return e
}

func (l *ledger) skip(e *stmtEntry) {
	e.skipped = true
	l.ended = append(l.ended, e)
}

func (l *ledger) keep(e *stmtEntry) { l.ended = append(l.ended, e) }

// endBatch applies a ReadyForQuery: it appends to out the statements of
// the batch it ends, in order (those skipped after an error, then the
// rest through its Sync, Query or FunctionCall), and returns out.
func (l *ledger) endBatch(out []*stmtEntry) []*stmtEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.q.endBatch(l.keep)
	out = append(out, l.ended...)
	clear(l.ended)
	l.ended = l.ended[:0]
	return out
}

// describe fills e's description from a classification.
func (e *stmtEntry) describe(res *sqlclass.Result, stmts []sqlclass.Statement) {
	e.text, e.fingerprint = res.Normalized, res.Fingerprint
	e.readOnly = len(stmts) > 0
	for _, st := range stmts {
		e.readOnly = e.readOnly && st.ReadOnly
	}
	switch len(stmts) {
	case 0:
	case 1:
		e.op = stmts[0].Command
		e.collections = tablesOf(stmts[0])
	default:
		op := stmts[0].Command
		for _, st := range stmts[1:] {
			if st.Command != op {
				op = ""
				break
			}
		}
		e.op = strings.TrimSpace("BATCH " + op)
		for _, st := range stmts {
			for _, t := range tablesOf(st) {
				if !containsString(e.collections, t) {
					e.collections = append(e.collections, t)
				}
			}
		}
	}
}

func tablesOf(st sqlclass.Statement) []string {
	if len(st.Writes) == 0 {
		return st.Reads
	}
	if len(st.Reads) == 0 {
		return st.Writes
	}
	out := append([]string(nil), st.Reads...)
	for _, t := range st.Writes {
		if !containsString(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// auditHook completes the statements of a session as the server answers
// them, records each and holds its completion back until the record is
// durable. It runs after the masker, so that it sees what the client sees.
type auditHook struct {
	ss   *session
	led  *ledger
	rec  StatementRecorder
	cap  int
	last mask.Counts
	// simpleCols are the columns of the simple query's current result set
	// when no masker tracks them.
	simpleCols []string
	types      *pgtype.Map
	// cur is the ledger's head as last read: only this hook pops, so it
	// stays the head until the hook pops it, and rows need no lock.
	cur *stmtEntry
	// batch holds the statements a ReadyForQuery ends while they are
	// completed.
	batch []*stmtEntry
}

// head returns the statement the server is answering, or nil.
func (a *auditHook) head() *stmtEntry {
	if a.cur == nil {
		a.cur = a.led.head()
	}
	return a.cur
}

// pop takes the head off the ledger.
func (a *auditHook) pop() *stmtEntry {
	a.cur = nil
	return a.led.pop()
}

// Wants implements Hook.
func (a *auditHook) Wants(d Direction, typ byte) bool {
	if d == ClientToServer {
		return false
	}
	switch typ {
	case 'T', 'D', 'C', 'E', 'I', 's', 'Z', 'H', 'd':
		return true
	}
	return false
}

// Close implements Hook.
func (a *auditHook) Close(error) {}

// Handle implements Hook.
func (a *auditHook) Handle(_ context.Context, _ Direction, m *Message, _ Conn) (Verdict, error) {
	e := a.head()
	switch m.Type {
	case 'T':
		if a.cap > 0 && e != nil && e.kind == kindQuery && a.ss.masker == nil {
			a.simpleCols = rowDescriptionNames(m.Body)
		}
	case 'D':
		if e == nil || (e.kind != kindQuery && e.kind != kindExec) {
			break
		}
		e.dataRows++
		if a.ss.span != nil {
			now := time.Now()
			if e.firstRow.IsZero() {
				e.firstRow = now
			}
			e.lastRow = now
		}
		if a.cap <= 0 {
			break
		}
		if len(e.captured) >= a.cap {
			e.more = true
			break
		}
		a.capture(e, m.Body)
	case 'H':
		if e != nil && a.cap > 0 {
			e.copyOut = len(m.Body) > 0 && m.Body[0] == 0
			if e.copyOut && e.cols == nil {
				e.cols = []string{"copy"}
			}
		}
	case 'd':
		if e == nil || !e.copyOut {
			break
		}
		e.dataRows++
		if len(e.captured) >= a.cap {
			e.more = true
			break
		}
		line := strings.TrimSuffix(string(m.Body), "\n")
		e.captured = append(e.captured, jsonRow([]*string{&line}))
	case 'C':
		if e == nil {
			break
		}
		n := commandRows(m.Body)
		switch e.kind {
		case kindExec:
			e.rows = n
			return Forward, a.complete(a.pop())
		case kindQuery:
			e.rows += n
			e.copyOut = false
			a.simpleCols = nil
		}
	case 'I', 's':
		if e != nil && e.kind == kindExec {
			if m.Type == 's' {
				e.rows = e.dataRows
			}
			return Forward, a.complete(a.pop())
		}
	case 'E':
		if e == nil || e.kind == kindSync {
			break // a Parse, Bind or Describe failed, or a FATAL
		}
		if e.code == "" {
			e.code, e.errMsg = errorFields(m.Body)
		}
		// An Execute's error: the server skips to the next Sync. A
		// Query's or FunctionCall's ends at its ReadyForQuery.
		if failed := a.led.fail(); failed != nil {
			a.cur = nil
			return Forward, a.complete(failed)
		}
	case 'Z':
		a.simpleCols = nil
		a.cur = nil
		a.batch = a.led.endBatch(a.batch[:0])
		var err error
		for i, e := range a.batch {
			a.batch[i] = nil
			if e.kind == kindExec {
				e.skipped = true // never answered before its batch ended
			}
			if e.kind != kindSync && err == nil {
				err = a.complete(e)
			}
		}
		if err != nil {
			return Forward, err
		}
	}
	return Forward, nil
}

// capture keeps a masked DataRow for the record.
func (a *auditHook) capture(e *stmtEntry, body []byte) {
	var fields []field
	var formats []int16
	if a.ss.masker != nil {
		fields, formats = a.ss.masker.currentShape()
	}
	if e.cols == nil {
		switch {
		case fields != nil:
			e.cols = make([]string, len(fields))
			for i, f := range fields {
				e.cols[i] = f.name
			}
		case a.simpleCols != nil:
			e.cols = a.simpleCols
		}
	}
	if len(body) < 2 {
		return
	}
	n := int(binary.BigEndian.Uint16(body))
	vals := make([]*string, 0, n)
	pos := 2
	for i := range n {
		if len(body) < pos+4 {
			return
		}
		l := int(int32(binary.BigEndian.Uint32(body[pos:])))
		pos += 4
		if l < 0 {
			vals = append(vals, nil)
			continue
		}
		if len(body) < pos+l {
			return
		}
		v := body[pos : pos+l]
		pos += l
		var oid uint32
		format := formatAt(formats, i)
		if i < len(fields) {
			oid = fields[i].oid
			if formats == nil {
				format = fields[i].format
			}
		}
		s := a.render(v, oid, format)
		vals = append(vals, &s)
	}
	if e.cols == nil {
		e.cols = make([]string, n)
		for i := range e.cols {
			e.cols[i] = "column" + strconv.Itoa(i+1)
		}
	}
	e.captured = append(e.captured, jsonRow(vals))
}

// render turns a (masked) value into text as psql would show it: text
// format as is, binary format decoded by type, else hex.
func (a *auditHook) render(v []byte, oid uint32, format int16) string {
	if format == 0 {
		if utf8.Valid(v) {
			return string(v)
		}
		return `\x` + hex.EncodeToString(v)
	}
	if oid != 0 {
		if a.types == nil {
			a.types = pgtype.NewMap()
		}
		if t, ok := a.types.TypeForOID(oid); ok {
			if val, err := t.Codec.DecodeValue(a.types, oid, pgtype.BinaryFormatCode, v); err == nil {
				if s, ok := val.(string); ok {
					return s
				}
				if b, err := json.Marshal(val); err == nil {
					return strings.Trim(string(b), `"`)
				}
			}
		}
	}
	return `\x` + hex.EncodeToString(v)
}

func jsonRow(vals []*string) string {
	b, err := json.Marshal(vals)
	if err != nil {
		return "[]"
	}
	return string(b)
}

// rowDescriptionNames reads the column names of a RowDescription.
func rowDescriptionNames(b []byte) []string {
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	names := make([]string, 0, n)
	rest := b[2:]
	for range n {
		name, tail, ok := cstring(rest)
		if !ok || len(tail) < 18 {
			return names
		}
		names = append(names, name)
		rest = tail[18:]
	}
	return names
}

// commandRows is the row count at the end of a CommandComplete tag
// (SELECT 3, INSERT 0 1, UPDATE 2, COPY 5), or 0.
func commandRows(b []byte) int64 {
	tag, _, _ := cstring(b)
	i := strings.LastIndexByte(tag, ' ')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseInt(tag[i+1:], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// errorFields reads the SQLSTATE and message of an ErrorResponse.
func errorFields(b []byte) (code, msg string) {
	for len(b) > 0 && b[0] != 0 {
		t := b[0]
		v, rest, ok := cstring(b[1:])
		if !ok {
			break
		}
		switch t {
		case 'C':
			code = v
		case 'M':
			msg = v
		}
		b = rest
	}
	return code, msg
}

// complete records a finished statement and queues its durability for the
// client writer's barrier.
func (a *auditHook) complete(e *stmtEntry) error {
	if e == nil || e.silent {
		return nil
	}
	ss := a.ss
	end := time.Now()
	a.led.seq++
	ev := StatementEvent{
		Session: &ss.Session, Seq: a.led.seq, Start: e.start, Duration: end.Sub(e.start),
		Text: e.text, Operation: e.op, Fingerprint: e.fingerprint, Collections: e.collections, ReadOnly: e.readOnly,
		PANSources: e.panSources, Decision: e.dec, ApprovalID: e.approvalID,
		SQLState: e.code, Error: e.errMsg, Rows: e.rows,
		Columns: e.cols, ResultRows: e.captured, Truncated: e.more,
	}
	if !e.sent.IsZero() && !e.decided.IsZero() && e.approvalID != "" {
		ev.ApprovalWait = e.sent.Sub(e.decided)
	}
	switch e.kind {
	case kindQuery:
		ev.Protocol = ProtocolSimple
	case kindExec:
		ev.Protocol = ProtocolExtended
	case kindFunc:
		ev.Protocol = ProtocolFunctionCall
	}
	if ss.masker != nil {
		c := ss.masker.counts
		ev.Masked, ev.SAD = int64(c.PANs-a.last.PANs), int64(c.SAD-a.last.SAD)
		a.last = c
	}
	switch {
	case e.refused && !e.failed:
		ev.Outcome = StatementDenied
	case e.refused, e.code != "":
		ev.Outcome = StatementFailed
	case e.skipped:
		ev.Outcome = StatementFailed
		ev.Error = "not run: the server skipped it after an earlier error in the same batch"
	default:
		ev.Outcome = StatementSucceeded
	}
	if ss.span != nil {
		ev.SpanContext = a.spans(e, &ev, end)
	}
	d := a.rec.Record(&ev)
	if d != nil {
		ss.holdFor(d)
	}
	return nil
}

// spans records the statement's span and its parts, after the fact, with
// their times.
func (a *auditHook) spans(e *stmtEntry, ev *StatementEvent, end time.Time) trace.SpanContext {
	ss := a.ss
	tr := ss.srv.opts.Tracer
	parent := trace.ContextWithSpan(context.Background(), ss.span)
	attrs := []attribute.KeyValue{
		attribute.String("db.system.name", "postgresql"),
		attribute.String("db.namespace", ss.Resource.Database),
		attribute.String("db.query.text", ev.Text),
		attribute.String("custos.session_id", ss.ID),
		attribute.Int64("custos.statement.seq", ev.Seq),
		attribute.String("custos.pg.protocol", ev.Protocol),
		attribute.String("custos.outcome", string(ev.Outcome)),
		attribute.Int64("custos.rows", ev.Rows),
		attribute.Int64("custos.masked", ev.Masked),
	}
	if ev.Operation != "" {
		attrs = append(attrs, attribute.String("db.operation.name", ev.Operation))
	}
	if len(ev.Collections) == 1 {
		attrs = append(attrs, attribute.String("db.collection.name", ev.Collections[0]))
	}
	if ev.SQLState != "" {
		attrs = append(attrs, attribute.String("db.response.status_code", ev.SQLState))
	}
	if ev.Decision != nil {
		attrs = append(attrs, attribute.String("custos.decision", ev.Decision.Label()),
			attribute.String("custos.decision_id", ev.Decision.ID))
	}
	if ev.ApprovalID != "" {
		attrs = append(attrs, attribute.String("custos.approval_id", ev.ApprovalID))
	}
	ctx, sp := tr.Start(parent, SpanStatement, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithTimestamp(e.start), trace.WithAttributes(attrs...))
	if ev.Outcome != StatementSucceeded {
		msg := ev.Error
		if msg == "" {
			msg = string(ev.Outcome)
		}
		sp.SetStatus(codes.Error, msg)
	}
	part := func(name string, from, to time.Time, kv ...attribute.KeyValue) {
		if from.IsZero() || to.Before(from) {
			return
		}
		_, p := tr.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(kv...))
		p.End(trace.WithTimestamp(to))
	}
	if e.dec != nil {
		part(SpanDecide, e.start, e.decided, attribute.Bool("custos.decision.cached", e.dec.Cached))
	}
	if e.approvalID != "" {
		part(SpanApproval, e.decided, e.sent, attribute.String("custos.approval_id", e.approvalID))
	}
	if !e.refused {
		part(SpanUpstream, e.sent, end)
	}
	if ss.masker != nil && !e.firstRow.IsZero() {
		part(SpanMask, e.firstRow, e.lastRow, attribute.Int64("custos.masked", ev.Masked),
			attribute.Int64("custos.sad_dropped", ev.SAD), attribute.Int64("custos.rows", e.dataRows))
	}
	sp.End(trace.WithTimestamp(end))
	return sp.SpanContext()
}

// holdFor makes the client writer wait for d before any byte after the
// completion just relayed can reach the client.
func (ss *session) holdFor(d Durable) {
	ss.durMu.Lock()
	ss.durable = append(ss.durable, d)
	ss.durN.Add(1)
	ss.durMu.Unlock()
}

// recordWait bounds the wait for statement records: a journal that hangs
// longer fails the session rather than the client waiting forever.
const recordWait = 10 * time.Second

// awaitRecords is the client writer's barrier: it waits until the records
// of the completions in the buffer are durable.
func (ss *session) awaitRecords() error {
	if ss.durN.Load() == 0 {
		return nil
	}
	ss.durMu.Lock()
	list := ss.durable
	ss.durable = ss.durSpare[:0]
	ss.durN.Store(0)
	ss.durMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), recordWait)
	defer cancel()
	var failed error
	for i, d := range list {
		if err := d.Wait(ctx); err != nil && failed == nil {
			failed = err
		}
		list[i] = nil
	}
	ss.durMu.Lock()
	ss.durSpare = list[:0]
	ss.durMu.Unlock()
	if failed != nil {
		ss.log.Error("statement record not kept; ending the session", "error", failed)
		return errors.Join(errUnrecorded, failed)
	}
	return nil
}
