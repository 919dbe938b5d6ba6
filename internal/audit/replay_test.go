package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/mask"
)

// replayT0 is when the sessions of replayJournal start.
var replayT0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// replayStmt is a statement record of replayJournal's sessions.
func replayStmt(session string, ms int, ord int64, proto string, ev Event, extra ...Attr) Event {
	ev.Name, ev.SessionID, ev.Time = EventStatement, session, replayT0.Add(time.Duration(ms)*time.Millisecond)
	ev.DBSystem, ev.Resource, ev.ResourceType = DBSystemPostgreSQL, "payments-db", "postgres"
	ev.Attrs = append([]Attr{
		Int(replayAttrStatementSeq, ord),
		String(replayAttrProtocol, proto),
		Int(replayAttrDurationUS, ev.Duration.Microseconds()),
	}, extra...)
	return ev
}

// replayJournal writes a journal holding two interleaved sessions: s-1
// (agent-7 for alice: a read with masked results, an update that waits
// for approval, a denied delete, a read whose result was cut) and s-2.
// The update's record comes after its approval events in the journal, as
// it does when the statement completes after its wait.
func replayJournal(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	j, err := Open(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	at := func(ms int) time.Time { return replayT0.Add(time.Duration(ms) * time.Millisecond) }
	who := func(ev Event, session, user string) Event {
		ev.SessionID, ev.UserID, ev.ClientAddress = session, user, "10.0.0.7"
		ev.Resource, ev.ResourceType, ev.DBSystem, ev.DBNamespace = "payments-db", "postgres", DBSystemPostgreSQL, "payments"
		if session == "s-1" {
			ev.EndUserID = "alice@example.com"
		}
		return ev
	}
	approval := func(name, state string, ms int, outcome Outcome, user string, extra ...Attr) Event {
		return Event{Name: name, Time: at(ms), SessionID: "s-1", ApprovalID: "apr-1", UserID: user, Outcome: outcome,
			Resource: "payments-db", DBQueryText: "UPDATE cards SET note = $1 WHERE id = $2",
			Attrs: append([]Attr{String(AttrApprovalState, state)}, extra...)}
	}
	events := []Event{
		who(Event{Name: EventAuthSucceeded, Time: at(0), Outcome: OutcomeSuccess, Issuer: "https://issuer.example"}, "s-1", "agent-7"),
		who(Event{Name: EventConnectionOpened, Time: at(1), Outcome: OutcomeSuccess}, "s-1", "agent-7"),
		who(Event{Name: EventConnectionOpened, Time: at(2), Outcome: OutcomeSuccess}, "s-2", "bob"),
		replayStmt("s-1", 12, 1, "simple", Event{
			UserID: "agent-7", Outcome: OutcomeSuccess, DBOperation: "SELECT",
			DBQueryText: "SELECT id, pan, note FROM cards WHERE id < $1", DBCollections: []string{"cards"},
			Decision: "allow", DecisionID: "d-1", Rows: 2, Masked: 2, Duration: 1234 * time.Microsecond,
			TraceID: [16]byte{1, 2, 3}, SpanID: [8]byte{4, 5, 6},
		}, Strings(replayAttrResultColumns, []string{"id", "pan", "note"}),
			Strings(replayAttrResultRows, []string{`["1","************1111",null]`, `["2","************4242","vip"]`}),
			Bool(replayAttrResultTruncated, false)),
		replayStmt("s-2", 20, 1, "simple", Event{
			UserID: "bob", Outcome: OutcomeSuccess, DBOperation: "SELECT", DBQueryText: "SELECT $1",
			Decision: "allow", DecisionID: "d-9", Rows: 1, Duration: 300 * time.Microsecond,
		}, Strings(replayAttrResultColumns, []string{"?column?"}), Strings(replayAttrResultRows, []string{`["1"]`})),
		approval(EventApprovalRequested, "pending", 50, OutcomePending, "agent-7"),
		approval(EventApprovalDecided, "approved", 1050, OutcomeSuccess, "carol", Strings(AttrApprovers, []string{"carol"}),
			String(replayAttrApprovalReason, "ticket CHG-12")),
		approval(EventApprovalConsumed, "consumed", 1060, OutcomeSuccess, ""),
		replayStmt("s-1", 40, 2, "extended", Event{
			UserID: "agent-7", Outcome: OutcomeSuccess, DBOperation: "UPDATE",
			DBQueryText: "UPDATE cards SET note = $1 WHERE id = $2", DBCollections: []string{"cards"},
			Decision: "approval_required", DecisionID: "d-2", ApprovalID: "apr-1", Rows: 1,
			Duration: 1021500 * time.Microsecond,
		}, Int(replayAttrApprovalWait, 1020)),
		replayStmt("s-1", 1500, 3, "simple", Event{
			UserID: "agent-7", Outcome: OutcomeDenied, DBOperation: "DELETE", DBQueryText: "DELETE FROM cards",
			DBCollections: []string{"cards"}, Decision: "deny", DecisionID: "d-3", Reasons: []string{"deletes need a change ticket"},
			DBStatusCode: "42501", Error: "custos: denied by policy: deletes need a change ticket",
		}),
		replayStmt("s-1", 2000, 4, "simple", Event{
			UserID: "agent-7", Outcome: OutcomeSuccess, DBOperation: "SELECT", DBQueryText: "SELECT pan\nFROM cards",
			DBCollections: []string{"cards"}, Decision: "allow", DecisionID: "d-4", Rows: 250, Masked: 250,
			Duration: 15 * time.Millisecond,
		}, Strings(replayAttrResultColumns, []string{"pan"}),
			Strings(replayAttrResultRows, []string{`["************1111"]`, `["************4242"]`, `["************0005"]`}),
			Bool(replayAttrResultTruncated, true)),
		who(Event{Name: EventConnectionClosed, Time: at(2100), Outcome: OutcomeSuccess,
			Attrs: []Attr{String(replayAttrCloseReason, "client_terminated")}}, "s-2", "bob"),
		who(Event{Name: EventConnectionClosed, Time: at(2500), Outcome: OutcomeSuccess, Duration: 2499 * time.Millisecond,
			Masked: 252, Attrs: []Attr{String(replayAttrCloseReason, "client_terminated")}}, "s-1", "agent-7"),
	}
	for _, ev := range events {
		if _, err := j.Append(context.Background(), ev); err != nil {
			t.Fatalf("%s: %v", ev.Name, err)
		}
	}
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// replayText plays s-1 back with opts and returns the output.
func replayText(t *testing.T, dir string, opts ReplayOptions) string {
	t.Helper()
	s, err := FindSession(context.Background(), dir, "s-1")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteReplay(context.Background(), &out, s, opts); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

const replayWant = `session   s-1
user      agent-7
enduser   alice@example.com
client    10.0.0.7
resource  payments-db
database  payments
opened    2026-03-01T10:00:00.001Z
closed    2026-03-01T10:00:02.500Z (reason client_terminated, after 2.499s, 252 masked)
records   10 (4 statements); offsets from 2026-03-01T10:00:00.000Z

+0.000s  authenticated  user agent-7  enduser alice@example.com  issuer https://issuer.example
+0.001s  connection opened
+0.012s  statement 1  SELECT  (simple)
         query     SELECT id, pan, note FROM cards WHERE id < $1
         tables    cards
         decision  allow  id d-1
         outcome   success  rows 2  masked 2  duration 1.234ms
         id | pan              | note
         ---+------------------+-----
         1  | ************1111 | NULL
         2  | ************4242 | vip
         (2 rows)
+0.040s  statement 2  UPDATE  (extended)
         query     UPDATE cards SET note = $1 WHERE id = $2
         tables    cards
         decision  approval_required  id d-2
         approval  apr-1  waited 1.02s
         outcome   success  rows 1  masked 0  duration 1.0215s
+0.050s  approval requested  apr-1  state pending  by agent-7
+1.050s  approval decided  apr-1  state approved  approvers carol  by carol  reason ticket CHG-12
+1.060s  approval consumed  apr-1  state consumed
+1.500s  statement 3  DELETE  (simple)
         query     DELETE FROM cards
         tables    cards
         decision  deny  id d-3  reasons deletes need a change ticket
         outcome   denied  sqlstate 42501  rows 0  masked 0  duration 0s
         error     custos: denied by policy: deletes need a change ticket
+2.000s  statement 4  SELECT  (simple)
         query     SELECT pan
                   FROM cards
         tables    cards
         decision  allow  id d-4
         outcome   success  rows 250  masked 250  duration 15ms
         pan
         ----------------
         ************1111
         ************4242
         ************0005
         (247 more rows not recorded)
+2.500s  connection closed  reason client_terminated  after 2.499s  masked 252
`

func TestReplayText(t *testing.T) {
	t.Parallel()
	dir := replayJournal(t)
	got := replayText(t, dir, ReplayOptions{Rows: -1})
	if got != replayWant {
		t.Fatalf("replay:\n%s\nwant:\n%s", got, replayWant)
	}
	if strings.Contains(got, "bob") || strings.Contains(got, "d-9") {
		t.Fatal("replay shows another session's records")
	}
}

func TestReplayRowsLimit(t *testing.T) {
	t.Parallel()
	dir := replayJournal(t)
	got := replayText(t, dir, ReplayOptions{Rows: 1})
	for _, want := range []string{
		"         1  | ************1111 | NULL\n         (1 more recorded row not shown)\n         (2 rows)\n",
		"         ************1111\n         (2 more recorded rows not shown)\n         (247 more rows not recorded)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("--rows 1: missing\n%s\nin\n%s", want, got)
		}
	}
	if strings.Contains(got, "************4242") {
		t.Error("--rows 1 printed a second row")
	}
	got = replayText(t, dir, ReplayOptions{Rows: 0})
	if !strings.Contains(got, "         id | pan | note\n         ---+-----+-----\n         (2 more recorded rows not shown)\n") {
		t.Errorf("--rows 0:\n%s", got)
	}
}

func TestReplayJSON(t *testing.T) {
	t.Parallel()
	dir := replayJournal(t)
	got := replayText(t, dir, ReplayOptions{Format: FormatJSON, Rows: 2})
	id, err := ReadJournalID(dir)
	if err != nil {
		t.Fatal(err)
	}
	type line struct {
		Seq        uint64         `json:"seq"`
		UID        string         `json:"uid"`
		Time       time.Time      `json:"time"`
		OffsetUS   int64          `json:"offset_us"`
		Event      string         `json:"event"`
		TraceID    string         `json:"trace_id"`
		SpanID     string         `json:"span_id"`
		Attributes map[string]any `json:"attributes"`
	}
	var lines []line
	sc := bufio.NewScanner(strings.NewReader(got))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		lines = append(lines, l)
	}
	wantEvents := []string{
		EventAuthSucceeded, EventConnectionOpened, EventStatement, EventStatement,
		EventApprovalRequested, EventApprovalDecided, EventApprovalConsumed,
		EventStatement, EventStatement, EventConnectionClosed,
	}
	if len(lines) != len(wantEvents) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(wantEvents), got)
	}
	for i, l := range lines {
		if l.Event != wantEvents[i] || l.Attributes[AttrSessionID] != "s-1" || l.UID != UID(id, l.Seq) {
			t.Errorf("line %d: %+v", i, l)
		}
		if want := l.Time.Sub(replayT0).Microseconds(); l.OffsetUS != want {
			t.Errorf("line %d: offset_us %d, want %d", i, l.OffsetUS, want)
		}
	}
	first := lines[2]
	if first.TraceID != "01020300000000000000000000000000" || first.SpanID != "0405060000000000" ||
		first.Attributes[AttrDecisionID] != "d-1" || first.Attributes[replayAttrStatementSeq] != float64(1) {
		t.Errorf("statement 1: %+v", first)
	}
	// The update's record came after its approval events in the journal.
	if upd := lines[3]; upd.Attributes[AttrApprovalID] != "apr-1" || upd.Seq < lines[6].Seq {
		t.Errorf("statement 2: %+v", upd)
	}
	if rows := lines[8].Attributes[replayAttrResultRows].([]any); len(rows) != 2 || lines[8].Attributes[replayAttrResultTruncated] != true {
		t.Errorf("--rows 2 in json: %v", lines[8].Attributes)
	}
}

func TestReplaySpeed(t *testing.T) {
	t.Parallel()
	dir := replayJournal(t)
	var waits []time.Duration
	sleep := func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	}
	replayText(t, dir, ReplayOptions{Rows: -1, Speed: 10, Sleep: sleep})
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	want := []time.Duration{ms(0.1), ms(1.1), ms(2.8), ms(1), ms(100), ms(1), ms(44), ms(50), ms(50)}
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}

	// No speed: no waiting.
	waits = nil
	replayText(t, dir, ReplayOptions{Rows: -1, Sleep: sleep})
	if len(waits) != 0 {
		t.Fatalf("waits without --speed: %v", waits)
	}

	// The real sleeper ends with the context.
	s, err := FindSession(context.Background(), dir, "s-1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	start := time.Now()
	err = WriteReplay(ctx, &out, s, ReplayOptions{Rows: -1, Speed: 0.001, Sleep: func(ctx context.Context, d time.Duration) error {
		cancel()
		return replaySleep(ctx, d)
	}})
	if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("cancelled replay: %v after %v", err, time.Since(start))
	}
	if !strings.Contains(out.String(), "+0.000s  authenticated") || strings.Contains(out.String(), "connection opened") {
		t.Fatalf("cancelled replay wrote:\n%s", out.String())
	}
	if err := WriteReplay(context.Background(), &out, s, ReplayOptions{Speed: -1}); err == nil {
		t.Fatal("negative speed accepted")
	}
}

func TestReplaySessions(t *testing.T) {
	t.Parallel()
	dir := replayJournal(t)
	ctx := context.Background()
	s, err := FindSession(ctx, dir, "s-2")
	if err != nil {
		t.Fatal(err)
	}
	if s.UserID != "bob" || s.EndUserID != "" || s.Records != 3 || s.Statements != 1 || s.CloseReason != "client_terminated" ||
		!s.Opened.Equal(replayT0.Add(2*time.Millisecond)) || !s.Closed.Equal(replayT0.Add(2100*time.Millisecond)) {
		t.Fatalf("s-2: %+v", s)
	}
	var names []string
	if err := s.Replay(ctx, func(r *Record) error {
		if r.Name == EventStatement {
			st := ReplayStatementOf(r)
			if st.Ordinal != 1 || st.Duration != 300*time.Microsecond || len(st.ResultRows) != 1 || *st.ResultRows[0][0] != "1" {
				t.Errorf("s-2 statement: %+v", st)
			}
		}
		names = append(names, r.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, " ") != "custos.connection.opened custos.db.statement custos.connection.closed" {
		t.Fatalf("s-2 records: %v", names)
	}

	for _, id := range []string{"nope", "s-", `s-1"`, ""} {
		_, err = FindSession(ctx, dir, id)
		if !errors.Is(err, ErrNoSession) || !strings.Contains(err.Error(), "no records for session") {
			t.Errorf("session %q: %v", id, err)
		}
	}
	if _, err := FindSession(ctx, t.TempDir(), "s-1"); err == nil || errors.Is(err, ErrNoSession) {
		t.Errorf("no journal: %v", err)
	}
	if err := WriteReplay(ctx, &bytes.Buffer{}, s, ReplayOptions{Format: "yaml"}); err == nil {
		t.Error("format yaml accepted")
	}
}

func TestReplayGuardsAgainstPANs(t *testing.T) {
	t.Parallel()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out, logs bytes.Buffer
	p := &replayPlayer{s: &ReplaySession{ID: "s-1"}, out: bufio.NewWriter(&out), mask: m,
		log: slog.New(slog.NewTextHandler(&logs, nil))}
	p.line([]byte("1  | 4242424242424242 | NULL"))
	p.line([]byte("1  | ************4242 | NULL"))
	if err := p.out.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "1  | ************4242 | NULL\n1  | ************4242 | NULL\n" {
		t.Fatalf("guard: %q", got)
	}
	if !strings.Contains(logs.String(), "pans=1") || strings.Count(logs.String(), "\n") != 1 {
		t.Fatalf("guard log: %s", logs.String())
	}
}

func TestReplayClean(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain":            "plain",
		"a\x1b[31mred":     `a\x1b[31mred`,
		"tab\tnl\ncr\r":    `tab\tnl\ncr\r`,
		"c1\u009bx":        `c1\u009bx`,
		"ünïcödé ok":       "ünïcödé ok",
		"del\x7f":          `del\x7f`,
		"****-****-1111 x": "****-****-1111 x",
	} {
		if got := replayClean(in); got != want {
			t.Errorf("replayClean(%q) = %q, want %q", in, got, want)
		}
	}
}
