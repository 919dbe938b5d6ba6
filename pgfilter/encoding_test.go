package pgfilter_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// serverEncoding is one encoding PostgreSQL supports, as the test cluster
// describes it.
type serverEncoding struct {
	id   int
	name string
	// server reports whether it is a server encoding (CREATE DATABASE
	// accepts it); the others are client-only.
	server bool
}

// serverEncodings asks the test cluster for every encoding it supports
// (pg_encoding_to_char over the encoding ids) and which are server
// encodings: CREATE DATABASE checks the encoding (42704 for a client-only
// one) before the locale, which a bogus name makes it refuse (42809), so
// no database is created.
func serverEncodings(t *testing.T, env *pgfiltertest.Env) []serverEncoding {
	t.Helper()
	ctx := context.Background()
	dc, err := pgx.Connect(ctx, env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	rows, err := dc.Query(ctx, "SELECT i, pg_encoding_to_char(i) FROM generate_series(0, 127) i WHERE pg_encoding_to_char(i) <> '' ORDER BY i")
	if err != nil {
		t.Fatal(err)
	}
	var encs []serverEncoding
	for rows.Next() {
		var e serverEncoding
		if err := rows.Scan(&e.id, &e.name); err != nil {
			t.Fatal(err)
		}
		encs = append(encs, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i := range encs {
		_, err := dc.Exec(ctx, fmt.Sprintf("CREATE DATABASE custos_encoding_probe ENCODING '%s' LOCALE 'custos_no_such_locale' TEMPLATE template0", encs[i].name))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "42704" && pgErr.Code != "42809") {
			t.Fatalf("probing %s: %v", encs[i].name, err)
		}
		encs[i].server = pgErr.Code == "42809"
	}
	if len(encs) < 40 {
		t.Fatalf("the server lists %d encodings", len(encs))
	}
	return encs
}

// encodingNameVariants are spellings the server's name rules accept or
// refuse, beyond each alias and canonical name.
var encodingNameVariants = []string{
	"utf-8", "UTF_8", "Utf8", " utf8 ", "u.t.f.8", "UNICODE", "unicode", "utf9", "utf", "auto", "default", "",
	"Shift_JIS", "SHIFT-JIS", "sjis", "S-JIS", "MS_Kanji", "mskanji", "WIN932", "Windows-932", "windows_932", "CP932",
	"WIN936", "Windows936", "CP936", "WIN949", "windows-949", "WIN950", "Windows-950", "big-5", "Big5", "GB-18030",
	"gbk", "uhc", "johab", "Shift_JIS_2004", "shift-jis-2004", "SHIFTJIS2004", "EUC-JIS-2004", "euc_jp", "EUC-KR",
	"ISO-8859-1", "iso_8859_1", "ISO8859-15", "iso-8859-5", "latin-9", "KOI8-R", "koi8", "koi8_u", "win", "alt",
	"abc", "tcvn", "TCVN-5712", "vscii", "sql_ascii", "SQL-ASCII", "mule-internal", "MULE_INTERNAL",
	strings.Repeat("-", 59) + "sjis", strings.Repeat("_", 59) + "utf8",
}

// TestEncodingNamesAgainstServer checks custos' encoding name rules and
// its safe set against the real server: every name resolves to what the
// server resolves it to, and the safe set is exactly the server encodings.
func TestEncodingNamesAgainstServer(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	encs := serverEncodings(t, env)
	safe := map[string]bool{}
	for _, e := range pgfilter.SafeEncodings {
		safe[e] = true
	}
	var serverSet []string
	for _, e := range encs {
		if got, ok := pgfilter.CanonicalEncoding(e.name); !ok || got != e.name {
			t.Errorf("encoding %d %s: custos resolves it to %q %v", e.id, e.name, got, ok)
		}
		if safe[e.name] != e.server {
			t.Errorf("encoding %s: custos safe %v, server encoding %v", e.name, safe[e.name], e.server)
		}
		if e.server {
			serverSet = append(serverSet, e.name)
		}
	}
	if len(serverSet) != len(pgfilter.SafeEncodings) {
		t.Errorf("server encodings %v, custos allows %v", serverSet, pgfilter.SafeEncodings)
	}

	names := append([]string(nil), encodingNameVariants...)
	for alias, canon := range pgfilter.EncodingAliases {
		names = append(names, alias, canon, strings.ToUpper(alias))
	}
	sort.Strings(names)
	ctx := context.Background()
	dc, err := pgx.Connect(ctx, env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	for _, name := range names {
		// pg_char_to_encoding is the function the startup packet's
		// client_encoding goes through (names here are under NAMEDATALEN,
		// so the name type does not truncate them).
		var server string
		if err := dc.QueryRow(ctx, "SELECT pg_encoding_to_char(pg_char_to_encoding($1))", name).Scan(&server); err != nil {
			t.Fatal(err)
		}
		got, _ := pgfilter.CanonicalEncoding(name)
		if got != server {
			t.Errorf("name %q: custos %q, server %q", name, got, server)
		}
	}
	// And the startup packet itself, for the names of client-only
	// encodings: the server takes each and reports its canonical name.
	for _, name := range []string{"Shift_JIS", "mskanji", "Windows-932", "WIN936", "windows950", "win949", "gb-18030", "JOHAB", "shift_jis-2004", "UNICODE", "latin-1"} {
		cfg, err := pgconn.ParseConfig(env.Cluster.DSN(pgfiltertest.Database))
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["client_encoding"] = name
		pc, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("direct connection with client_encoding %q: %v", name, err)
		}
		reported := pc.ParameterStatus("client_encoding")
		_ = pc.Close(ctx)
		got, _ := pgfilter.CanonicalEncoding(name)
		if want, _ := pgfilter.CanonicalEncoding(reported); got != want {
			t.Errorf("startup client_encoding %q: server reports %q, custos resolves %q", name, reported, got)
		}
	}
}

// proxyConfig is a pgconn configuration for the proxy as alice, with
// client_encoding set when enc is not empty.
func proxyConfig(t *testing.T, env *pgfiltertest.Env, tok, enc string) *pgconn.Config {
	t.Helper()
	cfg, err := pgconn.ParseConfig(env.ConnString("alice", tok))
	if err != nil {
		t.Fatal(err)
	}
	if enc != "" {
		cfg.RuntimeParams["client_encoding"] = enc
	}
	return cfg
}

func showClientEncoding(ctx context.Context, pc *pgconn.PgConn) (string, error) {
	res, err := pc.Exec(ctx, "SHOW client_encoding").ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		return "", fmt.Errorf("SHOW returned %d results", len(res))
	}
	return string(res[0].Rows[0][0]), nil
}

// TestClientEncodingAtStartup connects through the proxy with every
// encoding the server supports and the aliases of the client-only ones:
// safe ones connect exactly as they would directly, unsafe ones are
// refused with a FATAL naming the allowed encodings.
func TestClientEncodingAtStartup(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{OnSessionEvent: se.add})
	tok := env.Token(t, "alice", "agents")
	ctx := context.Background()
	type tcase struct{ name, canon string }
	var cases []tcase
	for _, e := range serverEncodings(t, env) {
		cases = append(cases, tcase{e.name, e.name}, tcase{strings.ToLower(e.name), e.name})
	}
	for _, a := range []string{"Shift_JIS", "mskanji", "WIN932", "Windows-932", "WIN936", "windows936", "WIN950", "Windows950", "WIN949", "windows949", "gb-18030", "Shift-JIS-2004", "latin-1", "utf-8", "unicode", "ISO-8859-5"} {
		canon, _ := pgfilter.CanonicalEncoding(a)
		cases = append(cases, tcase{a, canon})
	}
	safe := map[string]bool{}
	for _, e := range pgfilter.SafeEncodings {
		safe[e] = true
	}
	refused := 0
	for _, tc := range cases {
		pc, err := pgconn.ConnectConfig(ctx, proxyConfig(t, env, tok, tc.name))
		if !safe[tc.canon] {
			var pgErr *pgconn.PgError
			if pc != nil {
				_ = pc.Close(ctx)
			}
			if !errors.As(err, &pgErr) || pgErr.Code != "22023" || pgErr.Severity != "FATAL" ||
				!strings.Contains(pgErr.Message, tc.canon) || !strings.Contains(pgErr.Hint, "UTF8") || !strings.Contains(pgErr.Hint, "EUC_JP") {
				t.Errorf("client_encoding %q (%s): want a FATAL 22023 naming the allowed encodings, got %v", tc.name, tc.canon, err)
			}
			refused++
			continue
		}
		// A safe encoding: the result is the server's own. (A conversion
		// the server lacks is its refusal, relayed.)
		dcfg, _ := pgconn.ParseConfig(env.Cluster.DSN(pgfiltertest.Database))
		dcfg.RuntimeParams["client_encoding"] = tc.name
		direct, derr := pgconn.ConnectConfig(ctx, dcfg)
		if derr != nil {
			var pgErr *pgconn.PgError
			if err == nil || !errors.As(err, &pgErr) || !errors.As(derr, new(*pgconn.PgError)) {
				t.Errorf("client_encoding %q: direct %v, through custos %v", tc.name, derr, err)
			}
			if pc != nil {
				_ = pc.Close(ctx)
			}
			continue
		}
		_ = direct.Close(ctx)
		if err != nil {
			t.Errorf("client_encoding %q: %v", tc.name, err)
			continue
		}
		got, err := showClientEncoding(ctx, pc)
		if err != nil || got != tc.canon || pc.ParameterStatus("client_encoding") != tc.canon {
			t.Errorf("client_encoding %q: SHOW %q %v, reported %q, want %s", tc.name, got, err, pc.ParameterStatus("client_encoding"), tc.canon)
		}
		_ = pc.Close(ctx)
	}
	if refused < 7 {
		t.Errorf("%d encodings refused, want at least the 7 client-only ones", refused)
	}
	// Refused before authentication: no session was opened for them.
	time.Sleep(100 * time.Millisecond)
	opened := 0
	for _, ev := range se.list() {
		if ev.Kind == pgfilter.SessionOpened {
			opened++
		}
	}
	if opened > len(cases)-refused {
		t.Errorf("%d sessions opened for %d safe cases", opened, len(cases)-refused)
	}
}

// TestClientEncodingPinnedUpstream checks that custos always names the
// client encoding upstream: a database default (ALTER DATABASE ... SET
// client_encoding) changes a direct session but not one through custos.
// Not parallel: the database setting would reach other tests' direct
// connections.
func TestClientEncodingPinnedUpstream(t *testing.T) {
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	ctx := context.Background()
	if err := env.Cluster.Exec(ctx, pgfiltertest.Database, "ALTER DATABASE "+pgfiltertest.Database+" SET client_encoding = 'SJIS'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Cluster.Exec(context.Background(), pgfiltertest.Database, "ALTER DATABASE "+pgfiltertest.Database+" RESET client_encoding"); err != nil {
			t.Errorf("reset: %v", err)
		}
	})
	dcfg, err := pgconn.ParseConfig(env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	direct, err := pgconn.ConnectConfig(ctx, dcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if got := direct.ParameterStatus("client_encoding"); got != "SJIS" {
		t.Fatalf("direct session without client_encoding: %q, want the database default SJIS", got)
	}
	tok := env.Token(t, "alice", "agents")
	for _, enc := range []string{"", "LATIN1"} {
		pc, err := pgconn.ConnectConfig(ctx, proxyConfig(t, env, tok, enc))
		if err != nil {
			t.Fatalf("client_encoding %q through custos: %v", enc, err)
		}
		want := "UTF8"
		if enc != "" {
			want = enc
		}
		got, err := showClientEncoding(ctx, pc)
		if err != nil || got != want {
			t.Errorf("client_encoding %q: SHOW %q %v, want %s", enc, got, err, want)
		}
		res, err := pc.Exec(ctx, "SELECT source FROM pg_settings WHERE name = 'client_encoding'").ReadAll()
		if err != nil || len(res) != 1 || len(res[0].Rows) != 1 || string(res[0].Rows[0][0]) != "client" {
			t.Errorf("client_encoding %q: source %v %v, want client", enc, res, err)
		}
		_ = pc.Close(ctx)
	}
}

// TestEncodingChangeEndsSession runs without a policy, so a SET reaches
// the server: when the server reports an unsafe client encoding, the
// session ends at once with a FATAL, and the end is reported with its
// reason. A change to a safe encoding keeps the session.
func TestEncodingChangeEndsSession(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{OnSessionEvent: se.add})
	tok := env.Token(t, "alice", "agents")
	ctx := context.Background()
	tests := []struct {
		name, sql string
		ends      bool
	}{
		{"SET SJIS", "SET client_encoding = 'SJIS'", true},
		{"SET NAMES BIG5", "SET NAMES 'BIG5'", true},
		{"set_config GBK", "SELECT set_config('client_encoding', 'GBK', false)", true},
		{"pg_settings GB18030", "UPDATE pg_settings SET setting = 'GB18030' WHERE name = 'client_encoding'", true},
		{"function UHC", "SELECT count(*) FROM (SELECT set_config(n, 'UHC', false) FROM (VALUES ('client_' || 'encoding')) v(n)) s", true},
		{"SET LATIN1", "SET client_encoding = 'LATIN1'", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := pgconn.ConnectConfig(ctx, proxyConfig(t, env, tok, ""))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close(ctx)
			_, err = pc.Exec(ctx, tc.sql).ReadAll()
			if !tc.ends {
				if err != nil {
					t.Fatal(err)
				}
				if got, err := showClientEncoding(ctx, pc); err != nil || got != "LATIN1" {
					t.Fatalf("after a safe change: %q %v", got, err)
				}
				return
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Severity != "FATAL" || pgErr.Code != "22023" || !strings.Contains(pgErr.Message, "client encoding changed") {
				t.Fatalf("got %v, want the session ended with FATAL 22023", err)
			}
			if _, err := pc.Exec(ctx, "SELECT 1").ReadAll(); err == nil {
				t.Fatal("the session still answers")
			}
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		closed := 0
		for _, ev := range se.list() {
			if ev.Kind == pgfilter.SessionClosed && strings.Contains(ev.Reason, "client encoding changed") {
				closed++
			}
		}
		if closed == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions closed with the encoding reason, want 5", closed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClientEncodingSQLRefused: with a policy, every SQL way to change the
// client encoding is refused with a decision id whatever the principal's
// groups, and the session survives with its encoding unchanged.
func TestClientEncodingSQLRefused(t *testing.T) {
	t.Parallel()
	env, _ := policyEnv(t)
	ctx := context.Background()
	stmts := []struct{ sql, reason string }{
		{"SET client_encoding = 'SJIS'", "changing client_encoding"},
		{"SET client_encoding TO 'UTF8'", "changing client_encoding"},
		{"SET NAMES 'BIG5'", "changing client_encoding"},
		{"SET SESSION client_encoding = 'GBK'", "changing client_encoding"},
		{"RESET client_encoding", "changing client_encoding"},
		{"SELECT set_config('client_encoding', 'SJIS', false)", "changing client_encoding"},
		{"SELECT pg_catalog.set_config('Client_Encoding', 'SJIS', true)", "changing client_encoding"},
		{"SELECT set_config('client_' || 'encoding', 'SJIS', false)", "not a constant"},
		{"SELECT set_config(n, 'SJIS', false) FROM (VALUES ('client_encoding')) v(n)", "not a constant"},
		{"UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'", "pg_settings"},
		{"PREPARE enc AS SELECT set_config('client_encoding', 'SJIS', false)", "changing client_encoding"},
	}
	for _, groups := range [][]string{{"agents"}, {"dba"}} {
		c := connect(t, env.ConnString("alice", env.Token(t, "alice", groups...)))
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			for _, st := range stmts {
				_, err := c.Exec(ctx, st.sql, mode)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "decision dec_") || !strings.Contains(pgErr.Message, st.reason) {
					t.Errorf("groups %v, mode %v, %q: %v", groups, mode, st.sql, err)
				}
			}
			// A parameter for the setting name is refused in the extended
			// protocol too.
			if mode == pgx.QueryExecModeExec {
				_, err := c.Exec(ctx, "SELECT set_config($1, $2, false)", mode, "client_encoding", "SJIS")
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "not a constant") {
					t.Errorf("groups %v: set_config($1, $2): %v", groups, err)
				}
			}
			var enc, src string
			if err := c.QueryRow(ctx, "SELECT setting, source FROM pg_settings WHERE name = 'client_encoding'", mode).Scan(&enc, &src); err != nil || enc != "UTF8" || src != "client" {
				t.Fatalf("groups %v, mode %v: after the refusals client_encoding %q (%s) %v", groups, mode, enc, src, err)
			}
		}
	}
}
