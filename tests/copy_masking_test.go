package tests

// End-to-end tests of COPY TO STDOUT through custos with the default
// policy and the demo cards: pgx's CopyTo and psql (COPY and \copy), text,
// csv and binary, with and without HEADER, the options the policy refuses
// for agents and those a dba may use. Every assertion is on what the client
// received: no full card number and no CVV in any byte.

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func copyPolicyEnv(t *testing.T, tls bool) *pgfiltertest.Env {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t), NoTLS: !tls})
}

// recordedAs connects through the proxy as user in groups, recording every
// byte the client reads; the record is checked for card numbers at the end.
func recordedAs(t *testing.T, env *pgfiltertest.Env, user string, groups ...string) (*pgx.Conn, *wireLog) {
	t.Helper()
	cfg, err := pgx.ParseConfig(env.ConnString(user, env.Token(t, user, groups...)))
	if err != nil {
		t.Fatal(err)
	}
	log := &wireLog{}
	var d net.Dialer
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return recordingConn{c, log}, nil
	}
	t.Cleanup(func() { noPAN(t, "everything "+user+"'s connection received", log.bytes()) })
	return connectConfig(t, cfg), log
}

// copyFields splits COPY output into its fields by the format's rules, as a
// client would read them.
func copyFields(t *testing.T, format string, delim byte, b []byte) [][]string {
	t.Helper()
	var rows [][]string
	switch format {
	case "binary":
		for _, tup := range binaryCopyTuples(t, b) {
			var row []string
			for _, v := range tup {
				row = append(row, string(v))
			}
			rows = append(rows, row)
		}
	case "csv":
		r := csv.NewReader(bytes.NewReader(b))
		r.Comma = rune(delim)
		r.FieldsPerRecord = -1
		all, err := r.ReadAll()
		if err != nil {
			t.Fatalf("csv output does not parse: %v\n%s", err, b)
		}
		rows = all
	default:
		for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			rows = append(rows, strings.Split(line, string(delim)))
		}
	}
	return rows
}

// noCVV fails when a field of the output is a demo CVV or holds one as a
// digit run of its own.
func noCVVInCopyRows(t *testing.T, where string, rows [][]string) {
	t.Helper()
	for _, row := range rows {
		for _, f := range row {
			for _, cvv := range demoCVVs {
				if f == cvv || strings.Contains(f, `"`+cvv+`"`) {
					t.Errorf("%s: CVV %s in the output: %q", where, cvv, row)
				}
			}
		}
	}
}

// TestCopyMaskedPgx copies the demo cards with pgx's CopyTo as an agent:
// every format, with and without HEADER, the whole table and a column list.
func TestCopyMaskedPgx(t *testing.T) {
	t.Parallel()
	env := copyPolicyEnv(t, false)
	c, log := recordedAs(t, env, "alice", "agents")
	ctx := testCtx(t)
	for _, tc := range []struct {
		sql, format string
		header      bool
	}{
		{"COPY cards TO STDOUT", "text", false},
		{"COPY cards TO STDOUT (HEADER)", "text", true},
		{"COPY cards TO STDOUT (FORMAT csv)", "csv", false},
		{"COPY cards TO STDOUT WITH CSV HEADER", "csv", true},
		{"COPY cards TO STDOUT (FORMAT binary)", "binary", false},
		{"COPY public.cards (cvv, pan, holder) TO STDOUT (FORMAT csv, HEADER true)", "csv", true},
		{"COPY cards (pan) TO STDOUT BINARY", "binary", false},
		{"COPY (SELECT id, holder, pan FROM cards ORDER BY id) TO STDOUT (FORMAT csv)", "csv", false},
	} {
		var buf bytes.Buffer
		tag, err := c.PgConn().CopyTo(ctx, &buf, tc.sql)
		if err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		out := buf.Bytes()
		noPAN(t, tc.sql, out)
		delim := byte('\t')
		if tc.format == "csv" {
			delim = ','
		}
		rows := copyFields(t, tc.format, delim, out)
		noCVVInCopyRows(t, tc.sql, rows)
		data := rows
		if tc.header {
			data = rows[1:]
		}
		if int64(len(data)) != tag.RowsAffected() || len(data) < 8 {
			t.Errorf("%s: %d rows, tag %s", tc.sql, len(data), tag)
		}
		if !bytes.Contains(out, []byte("************4242")) {
			t.Errorf("%s: no masked card in\n%s", tc.sql, out)
		}
		if tc.header && tc.format != "binary" && !strings.Contains(strings.Join(rows[0], ","), "pan") {
			t.Errorf("%s: header %q", tc.sql, rows[0])
		}
	}
	for _, cvv := range demoCVVs[2:3] { // 7890 is unlike anything else on the wire
		if bytes.Contains(log.bytes(), []byte(cvv)) {
			t.Errorf("CVV %s on the wire", cvv)
		}
	}
}

// TestCopyRefusedForAgents: options that could wrap or split a card number,
// and a COPY (query) carrying a CVV, are refused with a decision; the
// session goes on.
func TestCopyRefusedForAgents(t *testing.T) {
	t.Parallel()
	env := copyPolicyEnv(t, false)
	c, _ := recordedAs(t, env, "alice", "agents")
	ctx := testCtx(t)
	for _, tc := range []struct{ sql, reason string }{
		{"COPY cards TO STDOUT (FORMAT csv, QUOTE '9')", "COPY option QUOTE"},
		{"COPY cards TO STDOUT (DELIMITER '|')", "COPY option DELIMITER"},
		{"COPY cards TO STDOUT (NULL 'x')", "COPY option NULL"},
		{"COPY cards TO STDOUT (FORMAT csv, ESCAPE '!')", "COPY option ESCAPE"},
		{"COPY cards TO STDOUT (FORMAT csv, FORCE_QUOTE *)", "COPY option FORCE_QUOTE"},
		{"COPY cards TO STDOUT (ENCODING 'LATIN1')", "COPY option ENCODING"},
		{"COPY (SELECT pan FROM cards) TO STDOUT (FORMAT csv, QUOTE '4')", "COPY option QUOTE"},
		{"COPY (SELECT * FROM cards) TO STDOUT", "sensitive authentication data"},
		{"COPY (SELECT id, cvv FROM cards) TO STDOUT (FORMAT csv)", "public.cards.cvv"},
		{"COPY (SELECT c.pan, (SELECT cvv FROM cards WHERE id = c.id) FROM cards c) TO STDOUT", "public.cards.cvv"},
	} {
		var buf bytes.Buffer
		_, err := c.PgConn().CopyTo(ctx, &buf, tc.sql)
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a refusal", tc.sql, err)
			continue
		}
		if !strings.Contains(pe.Message+pe.Detail, tc.reason) || !strings.Contains(pe.Message+pe.Detail+pe.Hint, "dec_") {
			t.Errorf("%s: %s / %s / %s, want %q and a decision id", tc.sql, pe.Message, pe.Detail, pe.Hint, tc.reason)
		}
		if buf.Len() > 0 {
			t.Errorf("%s: data sent: %q", tc.sql, buf.Bytes())
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
			t.Fatalf("the session did not survive %s: %v", tc.sql, err)
		}
	}
}

// TestCopyOptionsForDBA: a dba may choose the options; the output is still
// masked by them, and what custos cannot inspect is withheld.
func TestCopyOptionsForDBA(t *testing.T) {
	t.Parallel()
	env := copyPolicyEnv(t, false)
	c, _ := recordedAs(t, env, "bob", "dba")
	ctx := testCtx(t)
	for _, tc := range []struct {
		sql, format string
		delim       byte
	}{
		{"COPY cards TO STDOUT (FORMAT csv, QUOTE '4')", "csv", ','},
		{"COPY cards TO STDOUT (FORMAT csv, QUOTE '5', DELIMITER '2', ESCAPE '4')", "csv", '2'},
		{"COPY cards TO STDOUT (FORMAT csv, DELIMITER '4', FORCE_QUOTE *, HEADER)", "csv", '4'},
		{"COPY cards TO STDOUT (FORMAT csv, NULL '42', ESCAPE '\\')", "csv", ','},
		{"COPY cards TO STDOUT (DELIMITER '*', NULL '4242')", "text", '*'},
		{"COPY cards TO STDOUT (ENCODING 'LATIN1', HEADER)", "text", '\t'},
	} {
		var buf bytes.Buffer
		if _, err := c.PgConn().CopyTo(ctx, &buf, tc.sql); err != nil {
			t.Fatalf("%s: %v", tc.sql, err)
		}
		noPAN(t, tc.sql, buf.Bytes())
		if !strings.Contains(tc.sql, "QUOTE") && !strings.Contains(tc.sql, "ESCAPE") {
			noCVVInCopyRows(t, tc.sql, copyFields(t, tc.format, tc.delim, buf.Bytes()))
		}
		for _, cvv := range []string{"7890"} {
			if bytes.Contains(buf.Bytes(), []byte(cvv)) {
				t.Errorf("%s: CVV %s in %q", tc.sql, cvv, buf.Bytes())
			}
		}
	}
	// An encoding whose characters can hold a delimiter byte: withheld.
	var buf bytes.Buffer
	_, err := c.PgConn().CopyTo(ctx, &buf, "COPY cards TO STDOUT (ENCODING 'SJIS')")
	if err == nil || !strings.Contains(err.Error(), "custos withheld the COPY output") || buf.Len() > 0 {
		t.Errorf("COPY ENCODING 'SJIS': %v, %q", err, buf.Bytes())
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("the session did not survive: %v", err)
	}
	// A COPY (query) carrying the CVV is refused for a dba too.
	if _, err := c.PgConn().CopyTo(ctx, &buf, "COPY (SELECT cvv FROM cards) TO STDOUT"); err == nil || !strings.Contains(err.Error(), "sensitive authentication data") {
		t.Errorf("COPY (SELECT cvv ...) for a dba: %v", err)
	}
}

// TestCopyMaskedPsql runs COPY and \copy in psql as an agent.
func TestCopyMaskedPsql(t *testing.T) {
	t.Parallel()
	env := copyPolicyEnv(t, true)
	p := newPsql(t, env, "alice")
	for _, tc := range []struct {
		cmd, format string
		header      bool
	}{
		{`\copy cards TO STDOUT`, "text", false},
		{`\copy cards TO STDOUT WITH (FORMAT csv, HEADER)`, "csv", true},
		{`\copy (SELECT id, holder, pan FROM cards) TO STDOUT WITH (FORMAT csv)`, "csv", false},
		{`COPY cards TO STDOUT (FORMAT text, HEADER)`, "text", true},
		{`COPY cards TO STDOUT (FORMAT csv)`, "csv", false},
	} {
		out := p.ok("-c", tc.cmd)
		noPANString(t, tc.cmd, out)
		delim := byte('\t')
		if tc.format == "csv" {
			delim = ','
		}
		noCVVInCopyRows(t, tc.cmd, copyFields(t, tc.format, delim, []byte(out)))
		if !strings.Contains(out, "************4242") {
			t.Errorf("%s: no masked card in\n%s", tc.cmd, out)
		}
	}
	for _, cmd := range []string{
		`\copy (SELECT * FROM cards) TO STDOUT`,
		`\copy (SELECT * FROM cards) TO STDOUT WITH (FORMAT csv)`,
		`\copy cards TO STDOUT WITH (FORMAT csv, QUOTE '9')`,
		`COPY cards TO STDOUT (DELIMITER '4', FORMAT csv)`,
	} {
		r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", cmd)
		if r.code == 0 || !strings.Contains(r.stderr, "dec_") {
			t.Errorf("%s: %s, want a refusal with a decision id", cmd, r)
		}
		noPANString(t, cmd, r.stdout+r.stderr)
		for _, cvv := range demoCVVs {
			if strings.Contains(r.stdout, "\t"+cvv+"\t") {
				t.Errorf("%s: CVV in %q", cmd, r.stdout)
			}
		}
	}
}

// copyExchange sends msgs, then reads until ReadyForQuery, returning the
// CopyData bytes and the other message types (errors as "Error <code> …").
func copyExchange(t *testing.T, c *pgconn.PgConn, msgs ...pgproto3.FrontendMessage) ([]byte, []string) {
	t.Helper()
	_, data, kinds := exchange(t, c, false, msgs...)
	return data, kinds
}

// TestCopyMaskedExtendedProtocol runs COPY TO STDOUT through Parse, Bind
// and Execute, as a raw-protocol client may: unnamed and named statements,
// with and without a Describe, a statement prepared in an earlier batch,
// and a named statement redefined. Each COPY is masked by its own columns.
func TestCopyMaskedExtendedProtocol(t *testing.T) {
	t.Parallel()
	env := copyPolicyEnv(t, false)
	for _, who := range []struct{ user, group string }{{"alice", "agents"}, {"bob", "dba"}} {
		c, _ := recordedAs(t, env, who.user, who.group)
		pc := c.PgConn()
		check := func(where string, data []byte, kinds []string, want string) {
			t.Helper()
			where = who.group + ": " + where
			noPAN(t, where, data)
			for _, k := range kinds {
				if strings.HasPrefix(k, "Error") {
					t.Errorf("%s: %s", where, k)
				}
			}
			rows := copyFields(t, "text", '\t', data)
			noCVVInCopyRows(t, where, rows)
			if len(rows) != len(demoCVVs) {
				t.Errorf("%s: %d rows, want %d: %q", where, len(rows), len(demoCVVs), data)
			}
			if !strings.Contains(string(data), want) {
				t.Errorf("%s: %q in %q", where, want, data)
			}
		}
		q := "COPY cards (pan, cvv) TO STDOUT"
		data, kinds := copyExchange(t, pc,
			&pgproto3.Parse{Query: q}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		check("unnamed", data, kinds, "************4242\t\\N\n")

		data, kinds = copyExchange(t, pc,
			&pgproto3.Parse{Query: "COPY cards (cvv, holder) TO STDOUT"}, &pgproto3.Bind{},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
		check("described", data, kinds, "\\N\t")

		// Prepared in one batch, run in the next.
		_, kinds = copyExchange(t, pc, &pgproto3.Parse{Name: "cp1", Query: q}, &pgproto3.Sync{})
		if len(kinds) != 1 || kinds[0] != "ParseComplete" {
			t.Fatalf("%s: Parse: %v", who.group, kinds)
		}
		for i := range 2 {
			data, kinds = copyExchange(t, pc,
				&pgproto3.Bind{PreparedStatement: "cp1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
			check(fmt.Sprintf("named, run %d", i+1), data, kinds, "************4242\t\\N\n")
		}
		// A redefinition of the name the server refuses changes nothing:
		// the COPY is still the one masked.
		_, kinds = copyExchange(t, pc, &pgproto3.Parse{Name: "cp1", Query: "SELECT 1"}, &pgproto3.Sync{})
		if len(kinds) == 0 || !strings.HasPrefix(kinds[0], "Error 42P05") {
			t.Errorf("%s: redefining cp1: %v", who.group, kinds)
		}
		data, kinds = copyExchange(t, pc,
			&pgproto3.Bind{PreparedStatement: "cp1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		check("named, after a refused redefinition", data, kinds, "************4242\t\\N\n")

		// Closed and prepared again as a COPY of other columns.
		_, _ = copyExchange(t, pc, &pgproto3.Close{ObjectType: 'S', Name: "cp1"}, &pgproto3.Sync{})
		data, kinds = copyExchange(t, pc,
			&pgproto3.Parse{Name: "cp1", Query: "COPY cards (cvv, pan) TO STDOUT"},
			&pgproto3.Bind{PreparedStatement: "cp1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		check("named, redefined", data, kinds, "\\N\t************4242\n")
		// The statement closed after the Bind: the portal still runs it.
		data, kinds = copyExchange(t, pc,
			&pgproto3.Bind{PreparedStatement: "cp1"}, &pgproto3.Close{ObjectType: 'S', Name: "cp1"},
			&pgproto3.Execute{}, &pgproto3.Sync{})
		check("named, closed after its Bind", data, kinds, "\\N\t************4242\n")

		var n int
		if err := c.QueryRow(testCtx(t), "SELECT 1").Scan(&n); err != nil || n != 1 {
			t.Fatalf("%s: the session did not survive: %v", who.group, err)
		}
	}
}
