package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/custos-dev/custos/internal/mask"
)

// Attributes of session records that replay reads beyond the Attr*
// constants.
const (
	replayAttrCloseReason     = "custos.connection.close_reason" // connection closed: why
	replayAttrStatementSeq    = "custos.statement.seq"           // 1-based ordinal of a statement in its session
	replayAttrProtocol        = "custos.pg.protocol"             // simple, extended, function_call
	replayAttrDurationUS      = "custos.duration_us"             // statement duration in microseconds
	replayAttrApprovalWait    = "custos.approval.wait_ms"        // time a statement waited for its approval
	replayAttrApprovalReason  = "custos.approval.reason"         // the approver's reason
	replayAttrResultColumns   = "custos.result.columns"          // captured result: column names
	replayAttrResultRows      = "custos.result.rows"             // captured result: rows, each a JSON array of strings or null
	replayAttrResultTruncated = "custos.result.truncated"        // the statement returned more rows than were captured
)

// ErrNoSession: the journal holds no record of the session asked for.
var ErrNoSession = errors.New("no records for session")

// ReplaySession is a session found in the journal: what its records say
// about it as a whole, and where they are. [FindSession] returns it;
// [ReplaySession.Replay] reads its records again, in time order.
type ReplaySession struct {
	ID            string
	UserID        string // user.id
	EndUserID     string // enduser.id: the human the agent acts for
	ClientAddress string // client.address
	Resource      string // custos.resource
	Database      string // db.namespace

	Opened      time.Time     // time of custos.connection.opened; zero without one
	Closed      time.Time     // time of custos.connection.closed; zero without one
	CloseReason string        // custos.connection.close_reason
	Duration    time.Duration // custos.duration_ms of the closed record
	Masked      int64         // custos.masked of the closed record

	// Start and End are the times of the session's first and last
	// records: replay offsets count from Start.
	Start, End time.Time
	// Records counts the session's records, Statements its
	// custos.db.statement records.
	Records, Statements int

	dataDir string
	order   []replayKey // the records in time order, ties in seq order
}

// replayKey places one record of a session.
type replayKey struct {
	t   time.Time
	seq uint64
}

// FindSession reads the journal under dataDir for the records of session
// id (custos.session_id) and summarizes them. It returns an error wrapping
// ErrNoSession when there are none. It checks each record of the session
// against its own hash, not the chain (that is Verify's job).
func FindSession(ctx context.Context, dataDir, id string) (*ReplaySession, error) {
	s := &ReplaySession{ID: id, dataDir: dataDir}
	var first *Record // the first record, for identity when there is no opened record
	err := replayWalk(ctx, dataDir, id, 0, 0, func(r *Record) error {
		s.order = append(s.order, replayKey{t: r.Time, seq: r.Seq})
		s.Records++
		if s.Start.IsZero() || r.Time.Before(s.Start) {
			s.Start = r.Time
		}
		if r.Time.After(s.End) {
			s.End = r.Time
		}
		switch r.Name {
		case EventConnectionOpened:
			if s.Opened.IsZero() {
				s.Opened = r.Time
				s.identity(r, true)
			}
		case EventConnectionClosed:
			s.Closed = r.Time
			s.CloseReason = replayStr(r, replayAttrCloseReason)
			s.Duration = time.Duration(replayInt(r, AttrDurationMS)) * time.Millisecond
			s.Masked = replayInt(r, AttrMasked)
		case EventStatement:
			s.Statements++
		}
		if first == nil {
			c := *r
			first = &c
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.Records == 0 {
		return nil, fmt.Errorf("%w %q in %s", ErrNoSession, id, AuditDir(dataDir))
	}
	if s.Opened.IsZero() {
		s.identity(first, false)
	}
	slices.SortStableFunc(s.order, func(a, b replayKey) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	return s, nil
}

// identity fills who and where from r: all of them when override is set,
// otherwise only the ones still empty.
func (s *ReplaySession) identity(r *Record, override bool) {
	set := func(dst *string, key string) {
		if v := replayStr(r, key); v != "" && (override || *dst == "") {
			*dst = v
		}
	}
	set(&s.UserID, AttrUserID)
	set(&s.EndUserID, AttrEndUserID)
	set(&s.ClientAddress, AttrClientAddress)
	set(&s.Resource, AttrResource)
	set(&s.Database, AttrDBNamespace)
}

// Replay calls fn for each record of the session in time order (records
// with the same time in journal order): a statement's record, written when
// the statement completed, comes at the time custos received it, before
// the approval events of its wait. It reads the records FindSession found,
// not those appended since. fn must not keep the record after it returns.
func (s *ReplaySession) Replay(ctx context.Context, fn func(*Record) error) error {
	if len(s.order) == 0 {
		return nil
	}
	rank := make(map[uint64]int, len(s.order))
	lo, hi := s.order[0].seq, s.order[0].seq
	for i, k := range s.order {
		rank[k.seq] = i
		lo, hi = min(lo, k.seq), max(hi, k.seq)
	}
	// Records come in seq order; each waits here until those before it in
	// time order have been passed on. How many wait is bounded by how far
	// the journal order strays from the time order.
	held := make(map[int]*Record)
	next := 0
	err := replayWalk(ctx, s.dataDir, s.ID, lo, hi, func(r *Record) error {
		i, ok := rank[r.Seq]
		if !ok {
			return nil
		}
		c := *r
		held[i] = &c
		for {
			rec, ok := held[next]
			if !ok {
				return nil
			}
			delete(held, next)
			next++
			if err := fn(rec); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return err
	}
	if next < len(s.order) {
		return fmt.Errorf("audit replay: session %q: record seq %d is gone from the journal", s.ID, s.order[next].seq)
	}
	return nil
}

// errReplayStop ends a walk early without an error.
var errReplayStop = errors.New("stop")

// replayWalk calls fn, in journal order, for each record of session id
// whose seq is in [from, to] (to 0: no upper bound). Lines that do not
// name the session are skipped without being decoded.
func replayWalk(ctx context.Context, dataDir, id string, from, to uint64, fn func(*Record) error) error {
	root := AuditDir(dataDir)
	if _, err := os.Stat(root); err != nil {
		return fmt.Errorf("no audit journal in %s: %w", dataDir, err)
	}
	segs, err := listSegments(root)
	if err != nil {
		return fmt.Errorf("audit replay: %w", err)
	}
	// In the canonical encoding, quotes inside strings are escaped: this
	// can only be the session attribute's key and value.
	needle := appendString([]byte(`"`+AttrSessionID+`":`), id)
	for i, seg := range segs {
		if i+1 < len(segs) && segs[i+1].first <= from {
			continue
		}
		if to > 0 && seg.first > to {
			break
		}
		err := replayWalkSegment(ctx, seg, needle, id, from, to, fn)
		if errors.Is(err, errReplayStop) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// replayWalkSegment is replayWalk in one segment; errReplayStop past to.
func replayWalkSegment(ctx context.Context, seg segment, needle []byte, id string, from, to uint64, fn func(*Record) error) error {
	skip := func(line []byte) bool {
		if seq, ok := replayLineSeq(line); ok && (seq < from || (to > 0 && seq > to)) {
			return seq < from // past to: decoded, so that the walk stops below
		}
		return !bytes.Contains(line, needle)
	}
	return scanSegment(ctx, seg, from, skip, func(r *Record) error {
		if to > 0 && r.Seq > to {
			return errReplayStop
		}
		if replayStr(r, AttrSessionID) != id {
			return nil
		}
		return fn(r)
	})
}

// replayLineSeq reads the seq of a stored line without decoding it.
func replayLineSeq(line []byte) (uint64, bool) {
	const prefix = `{"v":1,"seq":`
	rest, ok := bytes.CutPrefix(line, []byte(prefix))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end <= 0 {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return seq, err == nil
}

// ReplayStatement is what a custos.db.statement record says about one
// statement and its result.
type ReplayStatement struct {
	Ordinal      int64    // custos.statement.seq: 1-based place in the session; 0 when not recorded
	Protocol     string   // simple, extended, function_call
	Operation    string   // db.operation.name
	Query        string   // db.query.text: normalized, literals replaced by $n
	Collections  []string // custos.db.collections
	Decision     string   // allow, deny, approval_required; empty when no policy ran
	DecisionID   string
	Reasons      []string
	ApprovalID   string
	ApprovalWait time.Duration // how long it waited for its approval
	Outcome      string        // success, failure, denied
	SQLState     string        // db.response.status_code
	Error        string
	Rows         int64 // rows returned or affected
	Masked       int64
	SADDropped   int64
	Duration     time.Duration

	// The captured result, already masked: column names, and at most the
	// configured number of rows, a nil cell being NULL. Truncated: the
	// statement returned more rows than were captured.
	Columns    []string
	ResultRows [][]*string
	Truncated  bool
	// ResultErr says why a captured row could not be read; the rows
	// before it are in ResultRows.
	ResultErr error
}

// ReplayStatementOf reads the statement record r.
func ReplayStatementOf(r *Record) ReplayStatement {
	st := ReplayStatement{
		Ordinal:     replayInt(r, replayAttrStatementSeq),
		Protocol:    replayStr(r, replayAttrProtocol),
		Operation:   replayStr(r, AttrDBOperationName),
		Query:       replayStr(r, AttrDBQueryText),
		Collections: replayList(r, AttrDBCollections),
		Decision:    replayStr(r, AttrDecision),
		DecisionID:  replayStr(r, AttrDecisionID),
		Reasons:     replayList(r, AttrReasons),
		ApprovalID:  replayStr(r, AttrApprovalID),
		Outcome:     replayStr(r, AttrOutcome),
		SQLState:    replayStr(r, AttrDBResponseStatus),
		Error:       replayStr(r, AttrError),
		Rows:        replayInt(r, AttrRows),
		Masked:      replayInt(r, AttrMasked),
		SADDropped:  replayInt(r, AttrSADDropped),
		Columns:     replayList(r, replayAttrResultColumns),
	}
	st.ApprovalWait = time.Duration(replayInt(r, replayAttrApprovalWait)) * time.Millisecond
	if v, ok := r.Attr(replayAttrDurationUS); ok && v.Kind() == KindInt {
		st.Duration = time.Duration(v.Int()) * time.Microsecond
	} else {
		st.Duration = time.Duration(replayInt(r, AttrDurationMS)) * time.Millisecond
	}
	if v, ok := r.Attr(replayAttrResultTruncated); ok && v.Kind() == KindBool {
		st.Truncated = v.Bool()
	}
	for i, raw := range replayList(r, replayAttrResultRows) {
		var row []*string
		if err := json.Unmarshal([]byte(raw), &row); err != nil {
			st.ResultErr = fmt.Errorf("row %d: %w", i+1, err)
			break
		}
		st.ResultRows = append(st.ResultRows, row)
	}
	return st
}

func replayStr(r *Record, key string) string {
	if v, ok := r.Attr(key); ok && v.Kind() == KindString {
		return v.Str()
	}
	return ""
}

func replayInt(r *Record, key string) int64 {
	if v, ok := r.Attr(key); ok && v.Kind() == KindInt {
		return v.Int()
	}
	return 0
}

func replayList(r *Record, key string) []string {
	if v, ok := r.Attr(key); ok && v.Kind() == KindStrings {
		return v.Strings()
	}
	return nil
}

// ReplayText is the human-readable replay format; FormatJSON is the other.
const ReplayText = "text"

// ReplayOptions say how WriteReplay plays a session back.
type ReplayOptions struct {
	// Format is ReplayText (also when empty) or FormatJSON: one JSON
	// object per line and record (seq, uid, time, offset_us, event,
	// severity_text, trace_id, span_id, attributes).
	Format string
	// Rows is how many captured rows of each statement are printed;
	// negative: all of them. In JSON it shortens custos.result.rows.
	Rows int
	// Speed plays the session back in time: before each record WriteReplay
	// waits for the time since the record before it divided by Speed (1:
	// real time, 10: ten times faster). Zero: no waiting.
	Speed float64
	// Sleep waits for d or until ctx ends, returning ctx's error then.
	// Nil: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger hears of PAN-like text the output guard masked; nil discards.
	Logger *slog.Logger
}

// WriteReplay plays session s back to w: in the text format a header (who,
// from where, which resource, opened and closed), then each record with
// its offset from the session's start: statements with their decision,
// approval, outcome and captured (masked) result as a table, approval
// transitions, the connection's end. Every line goes through a PAN check
// before it is written; anything PAN-like is masked (last four).
func WriteReplay(ctx context.Context, w io.Writer, s *ReplaySession, opts ReplayOptions) error {
	if opts.Speed < 0 {
		return fmt.Errorf("audit replay: speed %v is negative", opts.Speed)
	}
	p := &replayPlayer{
		s:    s,
		opts: opts,
		out:  bufio.NewWriter(w),
		log:  opts.Logger,
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.opts.Sleep == nil {
		p.opts.Sleep = replaySleep
	}
	m, err := mask.New(mask.Options{Default: mask.Last4})
	if err != nil {
		return fmt.Errorf("audit replay: %w", err)
	}
	p.mask = m
	switch strings.ToLower(opts.Format) {
	case "", ReplayText:
		p.indent = strings.Repeat(" ", max(len(replayOffset(s.End.Sub(s.Start))), len("+0.000s"))+2)
		p.header()
		p.emit = p.text
	case FormatJSON:
		if p.journalID, err = ReadJournalID(s.dataDir); err != nil {
			return fmt.Errorf("audit replay: %w", err)
		}
		p.emit = p.json
	default:
		return fmt.Errorf("audit replay: format %q is not text or json", opts.Format)
	}
	var prev time.Time
	err = s.Replay(ctx, func(r *Record) error {
		if opts.Speed > 0 && !prev.IsZero() {
			if d := time.Duration(float64(r.Time.Sub(prev)) / opts.Speed); d > 0 {
				if err := p.out.Flush(); err != nil {
					return err
				}
				if err := p.opts.Sleep(ctx, d); err != nil {
					return err
				}
			}
		}
		prev = r.Time
		p.emit(r)
		return p.err
	})
	if ferr := p.out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("audit replay: %w", err)
	}
	return nil
}

// replaySleep waits for d or until ctx ends.
func replaySleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// replayPlayer writes one replay.
type replayPlayer struct {
	s         *ReplaySession
	opts      ReplayOptions
	out       *bufio.Writer
	log       *slog.Logger
	mask      *mask.Masker
	emit      func(*Record)
	indent    string // of the lines under an event's first line
	journalID string
	seq       uint64 // of the record being written, for the log
	buf       []byte
	err       error
}

// line writes one line through the PAN guard.
func (p *replayPlayer) line(b []byte) {
	if p.err != nil {
		return
	}
	if mask.Contains(b) {
		masked, n := p.mask.Text(nil, b, mask.Last4)
		p.log.Warn("replay output held a pan-like value; masked", "session_id", p.s.ID, "seq", p.seq, "pans", n.PANs)
		b = masked
	}
	b = append(b, '\n')
	if _, err := p.out.Write(b); err != nil {
		p.err = err
	}
}

func (p *replayPlayer) linef(format string, args ...any) {
	p.buf = fmt.Appendf(p.buf[:0], format, args...)
	p.line(p.buf)
}

// replayTime formats a time of the header.
func replayTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// replayOffset formats an offset from the session's start: +1.234s.
func replayOffset(d time.Duration) string { return fmt.Sprintf("%+.3fs", d.Seconds()) }

// header writes the text format's header.
func (p *replayPlayer) header() {
	s := p.s
	field := func(name, v string) {
		if v == "" {
			v = "-"
		}
		p.linef("%-9s %s", name, replayClean(v))
	}
	field("session", s.ID)
	field("user", s.UserID)
	field("enduser", s.EndUserID)
	field("client", s.ClientAddress)
	field("resource", s.Resource)
	field("database", s.Database)
	if s.Opened.IsZero() {
		field("opened", "- (no connection opened record)")
	} else {
		field("opened", replayTime(s.Opened))
	}
	if s.Closed.IsZero() {
		field("closed", "- (no connection closed record: still open, or custos stopped first)")
	} else {
		v := replayTime(s.Closed)
		var notes []string
		if s.CloseReason != "" {
			notes = append(notes, "reason "+s.CloseReason)
		}
		if s.Duration > 0 {
			notes = append(notes, "after "+s.Duration.String())
		}
		if s.Masked > 0 {
			notes = append(notes, fmt.Sprintf("%d masked", s.Masked))
		}
		if len(notes) > 0 {
			v += " (" + strings.Join(notes, ", ") + ")"
		}
		field("closed", v)
	}
	field("records", fmt.Sprintf("%d (%d statements); offsets from %s", s.Records, s.Statements, replayTime(s.Start)))
	p.line(nil)
}

// text writes one record in the text format.
func (p *replayPlayer) text(r *Record) {
	p.seq = r.Seq
	off := replayOffset(r.Time.Sub(p.s.Start))
	first := func(format string, args ...any) {
		p.linef("%-*s%s", len(p.indent), off, fmt.Sprintf(format, args...))
	}
	sub := func(label, format string, args ...any) {
		p.linef("%s%-9s %s", p.indent, label, fmt.Sprintf(format, args...))
	}
	switch {
	case r.Name == EventStatement:
		p.statement(r, first, sub)
	case r.Name == EventConnectionOpened:
		var outcome string
		if o := replayStr(r, AttrOutcome); o != "" && o != string(OutcomeSuccess) {
			outcome = "  outcome " + replayClean(o)
		}
		first("connection opened%s%s", outcome, replayKV(r, "reason", AttrErrorType, "error", AttrError))
	case r.Name == EventConnectionClosed:
		var extra string
		if d := replayInt(r, AttrDurationMS); d > 0 {
			extra = "  after " + (time.Duration(d) * time.Millisecond).String()
		}
		first("connection closed%s%s%s", replayKV(r, "reason", replayAttrCloseReason), extra, replayKV(r, "masked", AttrMasked, "sad dropped", AttrSADDropped))
	case r.Name == EventAuthSucceeded:
		first("authenticated%s", replayKV(r, "user", AttrUserID, "enduser", AttrEndUserID, "issuer", AttrIssuer))
	case r.Name == EventAuthFailed:
		first("authentication failed%s", replayKV(r, "reason", AttrErrorType, "error", AttrError))
	case strings.HasPrefix(r.Name, "custos.approval."):
		first("approval %s  %s%s", strings.TrimPrefix(r.Name, "custos.approval."), replayClean(replayDash(replayStr(r, AttrApprovalID))),
			replayKV(r, "state", AttrApprovalState, "approvers", AttrApprovers, "by", AttrUserID, "reason", replayAttrApprovalReason))
	case r.Name == EventHTTPRequest:
		first("http request  %s %s%s", replayClean(replayStr(r, AttrHTTPMethod)), replayClean(replayStr(r, AttrURLPath)),
			replayKV(r, "status", AttrHTTPStatusCode, "decision", AttrDecision, "decision_id", AttrDecisionID,
				"approval", AttrApprovalID, "outcome", AttrOutcome, "masked", AttrMasked, "error", AttrError))
	default:
		first("%s%s", replayClean(r.Name), replayKV(r, "outcome", AttrOutcome, "error", AttrError))
	}
}

// statement writes a statement record and its captured result.
func (p *replayPlayer) statement(r *Record, first func(string, ...any), sub func(string, string, ...any)) {
	st := ReplayStatementOf(r)
	head := "statement"
	if st.Ordinal > 0 {
		head += " " + strconv.FormatInt(st.Ordinal, 10)
	}
	if st.Operation != "" {
		head += "  " + replayClean(st.Operation)
	}
	if st.Protocol != "" {
		head += "  (" + replayClean(st.Protocol) + ")"
	}
	first("%s", head)
	for i, l := range strings.Split(strings.ReplaceAll(st.Query, "\r\n", "\n"), "\n") {
		label := ""
		if i == 0 {
			label = "query"
		}
		sub(label, "%s", replayClean(strings.ReplaceAll(l, "\t", "    ")))
	}
	if len(st.Collections) > 0 {
		sub("tables", "%s", replayClean(strings.Join(st.Collections, ", ")))
	}
	if st.Decision == "" {
		sub("decision", "none (no policy ran)")
	} else {
		v := replayClean(st.Decision)
		if st.DecisionID != "" {
			v += "  id " + replayClean(st.DecisionID)
		}
		if len(st.Reasons) > 0 {
			v += "  reasons " + replayClean(strings.Join(st.Reasons, "; "))
		}
		sub("decision", "%s", v)
	}
	if st.ApprovalID != "" || st.ApprovalWait > 0 {
		v := replayClean(replayDash(st.ApprovalID))
		if st.ApprovalWait > 0 {
			v += "  waited " + st.ApprovalWait.String()
		}
		sub("approval", "%s", v)
	}
	v := replayClean(replayDash(st.Outcome))
	if st.SQLState != "" {
		v += "  sqlstate " + replayClean(st.SQLState)
	}
	v += fmt.Sprintf("  rows %d  masked %d", st.Rows, st.Masked)
	if st.SADDropped > 0 {
		v += fmt.Sprintf("  sad dropped %d", st.SADDropped)
	}
	v += "  duration " + st.Duration.String()
	sub("outcome", "%s", v)
	if st.Error != "" {
		sub("error", "%s", replayClean(st.Error))
	}
	p.result(&st)
}

// result writes a statement's captured rows as an aligned table.
func (p *replayPlayer) result(st *ReplayStatement) {
	if len(st.Columns) == 0 && len(st.ResultRows) == 0 {
		if st.Truncated {
			p.linef("%s(result not recorded)", p.indent)
		}
		return
	}
	captured := len(st.ResultRows)
	shown := captured
	if p.opts.Rows >= 0 {
		shown = min(shown, p.opts.Rows)
	}
	ncol := len(st.Columns)
	for _, row := range st.ResultRows[:shown] {
		ncol = max(ncol, len(row))
	}
	cells := make([][]string, 0, shown+1)
	head := make([]string, ncol)
	for i := range head {
		if i < len(st.Columns) {
			head[i] = replayClean(st.Columns[i])
		}
	}
	cells = append(cells, head)
	for _, row := range st.ResultRows[:shown] {
		c := make([]string, ncol)
		for i := range c {
			switch {
			case i >= len(row):
			case row[i] == nil:
				c[i] = "NULL"
			default:
				c[i] = replayClean(*row[i])
			}
		}
		cells = append(cells, c)
	}
	width := make([]int, ncol)
	for _, row := range cells {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	tableLine := func(row []string) {
		var b strings.Builder
		b.WriteString(p.indent)
		for i, c := range row {
			if i > 0 {
				b.WriteString(" | ")
			}
			b.WriteString(c)
			if i < len(row)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)))
			}
		}
		p.line([]byte(strings.TrimRight(b.String(), " ")))
	}
	if ncol > 0 {
		tableLine(cells[0])
		rule := make([]string, ncol)
		for i := range rule {
			rule[i] = strings.Repeat("-", width[i])
		}
		p.line([]byte(p.indent + strings.Join(rule, "-+-")))
		for _, row := range cells[1:] {
			tableLine(row)
		}
	}
	if st.ResultErr != nil {
		p.linef("%s(captured rows not readable: %s)", p.indent, replayClean(st.ResultErr.Error()))
	}
	if hidden := captured - shown; hidden > 0 {
		p.linef("%s(%d more recorded %s not shown)", p.indent, hidden, replayPlural(hidden, "row"))
	}
	switch {
	case st.Truncated && st.Rows > int64(captured):
		n := st.Rows - int64(captured)
		p.linef("%s(%d more %s not recorded)", p.indent, n, replayPlural(int(n), "row"))
	case st.Truncated:
		p.linef("%s(more rows not recorded)", p.indent)
	default:
		p.linef("%s(%d %s)", p.indent, captured, replayPlural(captured, "row"))
	}
}

// json writes one record as a JSON object on a line.
func (p *replayPlayer) json(r *Record) {
	p.seq = r.Seq
	attrs := r.Attrs
	if p.opts.Rows >= 0 {
		if rows := replayList(r, replayAttrResultRows); len(rows) > p.opts.Rows {
			attrs = slices.Clone(attrs)
			for i := range attrs {
				if attrs[i].Key == replayAttrResultRows {
					attrs[i] = Strings(replayAttrResultRows, rows[:p.opts.Rows])
				}
			}
		}
	}
	b := append(p.buf[:0], `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"uid":`...)
	b = appendString(b, UID(p.journalID, r.Seq))
	b = append(b, `,"time":`...)
	b = appendString(b, r.Time.Format(time.RFC3339Nano))
	b = append(b, `,"offset_us":`...)
	b = strconv.AppendInt(b, r.Time.Sub(p.s.Start).Microseconds(), 10)
	b = append(b, `,"event":`...)
	b = appendString(b, r.Name)
	b = append(b, `,"severity_text":`...)
	b = appendString(b, r.Severity.Text())
	if r.TraceID != "" {
		b = append(b, `,"trace_id":`...)
		b = appendString(b, r.TraceID)
	}
	if r.SpanID != "" {
		b = append(b, `,"span_id":`...)
		b = appendString(b, r.SpanID)
	}
	b = append(b, `,"attributes":`...)
	b = appendAttrsJSON(b, attrs)
	b = append(b, '}')
	p.buf = b
	p.line(b)
}

// replayKV formats the present attributes among label, key pairs as
// "  label value".
func replayKV(r *Record, pairs ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		v, ok := r.Attr(pairs[i+1])
		if !ok {
			continue
		}
		var s string
		switch v.Kind() {
		case KindStrings:
			s = strings.Join(v.Strings(), ", ")
		default:
			s = v.String()
		}
		if s == "" {
			continue
		}
		b.WriteString("  ")
		b.WriteString(pairs[i])
		b.WriteByte(' ')
		b.WriteString(replayClean(s))
	}
	return b.String()
}

func replayDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func replayPlural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// replayClean makes journal text safe to print on a terminal: control
// characters (escape sequences included) are written as Go escapes.
func replayClean(s string) string {
	ok := true
	for _, c := range s {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, c := range s {
		switch {
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c >= 0x80 && c < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}
