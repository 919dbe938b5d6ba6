package pgfilter_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// reply is what the client received for one message, copied out of
// pgproto3's buffers: the message type and, for errors, the code and
// message, for completions the tag, for rows the first value.
type reply struct {
	typ  string
	code string
	text string
}

func (r reply) String() string { return r.typ + "(" + r.code + " " + r.text + ")" }

// rawSession is a session through custos driven frame by frame.
type rawSession struct {
	t  *testing.T
	pc *pgconn.PgConn
	fe *pgproto3.Frontend
}

func newRawSession(t *testing.T, connString string) *rawSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = pc.Close(context.Background()) })
	return &rawSession{t: t, pc: pc, fe: pc.Frontend()}
}

// send writes msgs at once and reads the replies until as many
// ReadyForQuery as there are Sync and Query messages among them (or,
// with none, until the server has answered want messages).
func (s *rawSession) send(msgs ...pgproto3.FrontendMessage) []reply {
	s.t.Helper()
	waits := 0
	for _, m := range msgs {
		switch m.(type) {
		case *pgproto3.Sync, *pgproto3.Query:
			waits++
		}
		s.fe.Send(m)
	}
	if err := s.fe.Flush(); err != nil {
		s.t.Fatalf("send: %v", err)
	}
	return s.read(waits, 0)
}

// read collects replies until n ReadyForQuery, or until count replies
// when n is 0.
func (s *rawSession) read(n, count int) []reply {
	s.t.Helper()
	conn := s.pc.Conn()
	_ = conn.SetReadDeadline(time.Now().Add(40 * time.Second))
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	var out []reply
	for {
		if n == 0 && len(out) >= count {
			return out
		}
		msg, err := s.fe.Receive()
		if err != nil {
			s.t.Fatalf("receive after %v: %v", out, err)
		}
		var r reply
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			r = reply{typ: "Error", code: m.Code, text: m.Message}
		case *pgproto3.CommandComplete:
			r = reply{typ: "Complete", text: string(m.CommandTag)}
		case *pgproto3.DataRow:
			r = reply{typ: "Row"}
			if len(m.Values) > 0 {
				r.text = string(m.Values[0])
			}
		case *pgproto3.ReadyForQuery:
			r = reply{typ: "Ready", text: string(m.TxStatus)}
		case *pgproto3.NoticeResponse:
			r = reply{typ: "Notice", code: m.Code, text: m.Message}
		default:
			r = reply{typ: strings.TrimPrefix(fmt.Sprintf("%T", msg), "*pgproto3.")}
		}
		out = append(out, r)
		if r.typ == "Ready" {
			n--
			if n == 0 {
				return out
			}
		}
	}
}

func errorsOf(rs []reply) []reply {
	var out []reply
	for _, r := range rs {
		if r.typ == "Error" {
			out = append(out, r)
		}
	}
	return out
}

// wantError checks that rs hold exactly one error, custos' own (with a
// decision id), with code and a message containing part.
func wantError(t *testing.T, what string, rs []reply, code, part string) {
	t.Helper()
	errs := errorsOf(rs)
	if len(errs) != 1 || errs[0].code != code || !strings.Contains(errs[0].text, "custos") ||
		!strings.Contains(errs[0].text, "decision dec_") || !strings.Contains(errs[0].text, part) {
		t.Errorf("%s: replies %v, want one custos error %s containing %q", what, rs, code, part)
	}
	for _, r := range rs {
		if r.typ == "Complete" && strings.HasPrefix(r.text, "INSERT") {
			t.Errorf("%s: the write ran: %v", what, rs)
		}
	}
}

func wantNoError(t *testing.T, what string, rs []reply) {
	t.Helper()
	if errs := errorsOf(rs); len(errs) > 0 {
		t.Errorf("%s: %v", what, rs)
	}
}

func parse(name, sql string) *pgproto3.Parse { return &pgproto3.Parse{Name: name, Query: sql} }

func bindTo(portal, stmt string) *pgproto3.Bind {
	return &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: stmt}
}

func execute(portal string) *pgproto3.Execute { return &pgproto3.Execute{Portal: portal} }

var syncMsg = &pgproto3.Sync{}

func query(sql string) *pgproto3.Query { return &pgproto3.Query{String: sql} }

// TestRedefinedStatementRunsWhatTheServerHas covers a Parse of a name that
// exists (42P05 at the server): custos must not decide a later Execute as
// the text the server refused.
func TestRedefinedStatementRunsWhatTheServerHas(t *testing.T) {
	t.Parallel()
	env, table := policyEnv(t)
	insert := "INSERT INTO " + table + " VALUES (100, 'x')"
	cases := []struct {
		name  string
		steps [][]pgproto3.FrontendMessage
	}{
		{"separate batches", [][]pgproto3.FrontendMessage{
			{parse("s1", insert), syncMsg},
			{parse("s1", "SELECT 1"), syncMsg},
			{bindTo("", "s1"), execute(""), syncMsg},
		}},
		{"one batch", [][]pgproto3.FrontendMessage{
			{parse("s1", insert), parse("s1", "SELECT 1"), bindTo("", "s1"), execute(""), syncMsg},
			{bindTo("", "s1"), execute(""), syncMsg},
		}},
		{"pipelined across Syncs", [][]pgproto3.FrontendMessage{
			{parse("s1", insert), syncMsg, parse("s1", "SELECT 1"), syncMsg, bindTo("", "s1"), execute(""), syncMsg},
		}},
		{"a Close the server skipped", [][]pgproto3.FrontendMessage{
			{parse("s1", insert), syncMsg},
			{parse("bad", "SELECT * FROM no_such_table"), &pgproto3.Close{ObjectType: 'S', Name: "s1"}, parse("s1", "SELECT 1"), syncMsg},
			{bindTo("", "s1"), execute(""), syncMsg},
		}},
		{"a portal keeps the statement it was bound to", [][]pgproto3.FrontendMessage{
			{parse("", insert), bindTo("", ""), parse("", "SELECT 1"), execute(""), syncMsg},
		}},
		{"a closed statement's portal", [][]pgproto3.FrontendMessage{
			{query("BEGIN")},
			{parse("s1", insert), bindTo("p", "s1"), &pgproto3.Close{ObjectType: 'S', Name: "s1"}, parse("s1", "SELECT 1"), syncMsg},
			{execute("p"), syncMsg},
			{query("ROLLBACK")},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newRawSession(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
			var all []reply
			for _, step := range tc.steps {
				all = append(all, s.send(step...)...)
			}
			last := s.send(bindTo("", "s1"), execute(""), syncMsg)
			for _, r := range append(all, last...) {
				if r.typ == "Complete" && strings.HasPrefix(r.text, "INSERT") {
					t.Fatalf("the write ran without approval: %v", all)
				}
			}
			// Every Execute of the write was refused as what it is.
			found := false
			for _, r := range all {
				if r.typ == "Error" && strings.Contains(r.text, "approval required") {
					found = true
				}
			}
			if !found {
				t.Errorf("no approval refusal among %v", all)
			}
			if rs := s.send(query("SELECT 1")); len(errorsOf(rs)) > 0 {
				t.Errorf("session after: %v", rs)
			}
		})
	}
	if n := rowCount(t, env, table); n != 2 {
		t.Fatalf("table has %d rows", n)
	}
}

// TestShadowingRefusedByCustos checks custos' own answer to a name that
// would be redefined, and that the session goes on.
func TestShadowingRefusedByCustos(t *testing.T) {
	t.Parallel()
	env, table := policyEnv(t)
	s := newRawSession(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	insert := "INSERT INTO " + table + " VALUES (100, 'x')"
	wantNoError(t, "parse", s.send(parse("s1", insert), syncMsg))
	wantError(t, "parse again", s.send(parse("s1", "SELECT 1"), syncMsg), "42P05", `prepared statement "s1" already exists`)
	wantError(t, "parse again, pending", s.send(parse("s2", "SELECT 1"), parse("s2", "SELECT 2"), syncMsg), "42P05", `"s2"`)
	// After a Close the name is free again.
	wantNoError(t, "close", s.send(&pgproto3.Close{ObjectType: 'S', Name: "s1"}, parse("s1", "SELECT 41 + 1"), bindTo("", "s1"), execute(""), syncMsg))
	rs := s.send(bindTo("", "s1"), execute(""), syncMsg)
	if len(rs) < 2 || rs[1].typ != "Row" || rs[1].text != "42" {
		t.Errorf("redefined after Close: %v", rs)
	}
	// The unnamed statement and portal are replaced freely.
	for i := range 3 {
		rs := s.send(parse("", fmt.Sprintf("SELECT %d", i)), bindTo("", ""), execute(""), syncMsg)
		if len(rs) < 3 || rs[2].text != fmt.Sprint(i) {
			t.Errorf("unnamed %d: %v", i, rs)
		}
	}
	// A named portal inside a transaction, bound again after a savepoint,
	// then the savepoint rolled back: the first binding is what runs.
	wantNoError(t, "begin", s.send(query("BEGIN")))
	wantNoError(t, "bind p", s.send(parse("ins", insert), parse("sel", "SELECT 1"), bindTo("p", "ins"), syncMsg))
	wantNoError(t, "savepoint", s.send(query("SAVEPOINT sp")))
	wantError(t, "bind p again", s.send(bindTo("p", "sel"), syncMsg), "42P03", `portal "p" already exists`)
	wantNoError(t, "rollback to", s.send(query("ROLLBACK TO SAVEPOINT sp")))
	// ROLLBACK TO destroys the portals made since the savepoint: custos
	// forgets them all, so p is refused as unknown, never run as SELECT.
	wantError(t, "execute p", s.send(execute("p"), syncMsg), "42501", "no record")
	wantNoError(t, "rollback", s.send(query("ROLLBACK")))
	// Portals end with their transaction.
	wantNoError(t, "bind q", s.send(bindTo("q", "sel"), syncMsg))
	wantError(t, "execute q after its transaction", s.send(execute("q"), syncMsg), "42501", "no record")
	if rs := s.send(query("SELECT 1")); len(errorsOf(rs)) > 0 {
		t.Errorf("session after: %v", rs)
	}
	if n := rowCount(t, env, table); n != 2 {
		t.Fatalf("table has %d rows", n)
	}
}

// TestSQLPrepareFollowsTheServer covers PREPARE, EXECUTE and DEALLOCATE
// in Query strings, alone and among other statements.
func TestSQLPrepareFollowsTheServer(t *testing.T) {
	t.Parallel()
	env, table := policyEnv(t)
	s := newRawSession(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	insert := "INSERT INTO " + table + " VALUES (100, 'x')"
	wantNoError(t, "prepare", s.send(query("PREPARE p AS "+insert)))
	wantError(t, "prepare again", s.send(query("PREPARE p AS SELECT 1")), "42P05", `prepared statement "p" already exists`)
	wantError(t, "execute", s.send(query("EXECUTE p")), "42501", "approval required")
	wantError(t, "in one string", s.send(query("PREPARE q AS "+insert+"; PREPARE q AS SELECT 1; EXECUTE q")), "42P05", `"q"`)
	wantError(t, "extended PREPARE of an existing name",
		s.send(parse("", "PREPARE p AS SELECT 1"), bindTo("", ""), execute(""), syncMsg), "42P05", `"p"`)
	// The protocol's statements and SQL's share one namespace.
	wantError(t, "Parse of a PREPAREd name", s.send(parse("p", "SELECT 1"), syncMsg), "42P05", `"p"`)
	wantError(t, "Bind of a PREPAREd write", s.send(bindTo("", "p"), execute(""), syncMsg), "42501", "approval required")
	wantNoError(t, "parse w", s.send(parse("w", insert), syncMsg))
	wantError(t, "SQL PREPARE of a Parsed name", s.send(query("PREPARE w AS SELECT 1")), "42P05", `"w"`)
	wantError(t, "EXECUTE of a Parsed write", s.send(query("EXECUTE w")), "42501", "approval required")
	// A DEALLOCATE took effect even though a later statement failed.
	rs := s.send(query("DEALLOCATE p; SELECT 1/0"))
	if errs := errorsOf(rs); len(errs) != 1 || errs[0].code != "22012" {
		t.Fatalf("deallocate then fail: %v", rs)
	}
	wantNoError(t, "prepare p anew", s.send(query("PREPARE p AS SELECT 7")))
	if rs := s.send(query("EXECUTE p")); len(rs) < 2 || rs[1].text != "7" {
		t.Errorf("execute p: %v", rs)
	}
	// A PREPARE that the server refused leaves nothing behind: the name
	// is still free, and nothing else changed.
	if rs := s.send(query("PREPARE bad AS SELECT * FROM no_such_table")); len(errorsOf(rs)) != 1 {
		t.Fatalf("bad prepare: %v", rs)
	}
	wantNoError(t, "prepare bad anew", s.send(query("PREPARE bad AS SELECT 8")))
	// A PREPARE in a string whose later statement fails still exists.
	if rs := s.send(query("PREPARE kept AS " + insert + "; SELECT 1/0")); len(errorsOf(rs)) != 1 {
		t.Fatalf("prepare then fail: %v", rs)
	}
	wantError(t, "prepare kept again", s.send(query("PREPARE kept AS SELECT 1")), "42P05", `"kept"`)
	wantError(t, "execute kept", s.send(query("EXECUTE kept")), "42501", "approval required")
	// DISCARD ALL forgets everything.
	wantNoError(t, "discard", s.send(query("DISCARD ALL")))
	wantNoError(t, "prepare kept after discard", s.send(query("PREPARE kept AS SELECT 9")))
	if rs := s.send(query("EXECUTE kept")); len(rs) < 2 || rs[1].text != "9" {
		t.Errorf("execute kept: %v", rs)
	}
	// A name custos knows no confirmed definition of is refused, not
	// sent for approval: nothing says what it would run.
	for _, q := range []string{"EXECUTE nosuch", "SELECT 1; EXECUTE nosuch", "DEALLOCATE p; EXECUTE p"} {
		wantError(t, q, s.send(query(q)), "26000", "not known to custos")
	}
	wantError(t, "extended EXECUTE of an unknown name",
		s.send(parse("", "EXECUTE nosuch"), bindTo("", ""), execute(""), syncMsg), "26000", "not known to custos")
	if rs := s.send(query("EXECUTE kept")); len(rs) < 2 || rs[1].text != "9" {
		t.Errorf("execute kept after the refusals: %v", rs)
	}
	if n := rowCount(t, env, table); n != 2 {
		t.Fatalf("table has %d rows", n)
	}
}

// TestFlushPipelineWithoutSync is postgres.js' way: Parse, Describe and
// Flush, the answer read, then Bind, Execute and Sync.
func TestFlushPipelineWithoutSync(t *testing.T) {
	t.Parallel()
	env, table := policyEnv(t)
	s := newRawSession(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	s.fe.Send(parse("pj1", "SELECT v FROM "+table+" WHERE id = $1"))
	s.fe.Send(&pgproto3.Describe{ObjectType: 'S', Name: "pj1"})
	s.fe.Send(&pgproto3.Flush{})
	if err := s.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	rs := s.read(0, 3)
	if rs[0].typ != "ParseComplete" || rs[2].typ != "RowDescription" {
		t.Fatalf("flush: %v", rs)
	}
	b := bindTo("", "pj1")
	b.Parameters = [][]byte{[]byte("1")}
	rs = s.send(b, execute(""), syncMsg)
	if len(rs) < 2 || rs[1].typ != "Row" || rs[1].text != "one" {
		t.Fatalf("bind after flush: %v", rs)
	}
	// An error before Sync: the server skips what follows, up to Sync.
	s.fe.Send(parse("pj2", "SELECT * FROM no_such_table"))
	s.fe.Send(&pgproto3.Flush{})
	if err := s.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if rs := s.read(0, 1); rs[0].typ != "Error" {
		t.Fatalf("bad parse: %v", rs)
	}
	rs = s.send(parse("pj2", "INSERT INTO "+table+" VALUES (100, 'x')"), bindTo("", "pj2"), execute(""), syncMsg)
	if len(errorsOf(rs)) != 0 {
		t.Fatalf("skipped messages were answered: %v", rs)
	}
	// pj2 was never defined: it can be defined now, and is decided as
	// what it is.
	wantError(t, "pj2", s.send(parse("pj2", "INSERT INTO "+table+" VALUES (100, 'x')"), bindTo("", "pj2"), execute(""), syncMsg),
		"42501", "approval required")
	if n := rowCount(t, env, table); n != 2 {
		t.Fatalf("table has %d rows", n)
	}
}

// TestMaskerKeepsTheBoundPortal: a Bind the server refused (42P03) must
// not change how the masker reads the old portal's rows (here the CVV,
// dropped by its column rule, would come through as the other
// statement's harmless column).
func TestMaskerKeepsTheBoundPortal(t *testing.T) {
	t.Parallel()
	env := maskedEnv(t)
	s := newRawSession(t, env.ConnString("alice", env.Token(t, "alice")))
	wantNoError(t, "begin", s.send(query("BEGIN")))
	wantNoError(t, "bind", s.send(parse("a", "SELECT cvv FROM cards WHERE id = 1"), parse("b", "SELECT 'x'::text AS note"),
		&pgproto3.Describe{ObjectType: 'S', Name: "a"}, &pgproto3.Describe{ObjectType: 'S', Name: "b"}, bindTo("p", "a"), syncMsg))
	wantNoError(t, "savepoint", s.send(query("SAVEPOINT sp")))
	if rs := s.send(bindTo("p", "b"), syncMsg); len(errorsOf(rs)) != 1 || errorsOf(rs)[0].code != "42P03" {
		t.Fatalf("second bind: %v", rs)
	}
	wantNoError(t, "rollback to", s.send(query("ROLLBACK TO SAVEPOINT sp")))
	rs := s.send(execute("p"), syncMsg)
	for _, r := range rs {
		if r.typ == "Row" && r.text != "" {
			t.Fatalf("the CVV came through: %v", rs)
		}
	}
	if len(errorsOf(rs)) > 0 {
		t.Fatalf("execute: %v", rs)
	}
}

// TestMaskerForgetsSQLRedefinitions: a statement described through the
// protocol, then deallocated and prepared again in SQL, is read with its
// new columns.
func TestMaskerForgetsSQLRedefinitions(t *testing.T) {
	t.Parallel()
	env := maskedEnv(t)
	s := newRawSession(t, env.ConnString("alice", env.Token(t, "alice")))
	wantNoError(t, "parse", s.send(parse("s", "SELECT 'x'::text AS note"), &pgproto3.Describe{ObjectType: 'S', Name: "s"}, syncMsg))
	wantNoError(t, "redefine", s.send(query("DEALLOCATE s; PREPARE s AS SELECT cvv FROM cards WHERE id = 1")))
	rs := s.send(bindTo("", "s"), execute(""), syncMsg)
	for _, r := range rs {
		if r.typ == "Row" && r.text != "" {
			t.Fatalf("the CVV came through: %v", rs)
		}
	}
	if len(errorsOf(rs)) > 0 {
		t.Fatalf("execute: %v", rs)
	}
}
