package tests

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/sqlclass"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// smugglePrefixSQL finds, on the server, a UTF-8 character whose last byte
// starts a multibyte character of enc that swallows a following backslash:
// the bytes are valid UTF-8 to custos, and convert from enc on the server
// with the backslash gone.
const smugglePrefixSQL = `CREATE OR REPLACE FUNCTION enc_smuggle_prefix(enc name) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE cp int; b bytea; s text;
BEGIN
  FOR cp IN 128..4095 LOOP
    b := convert_to(chr(cp), 'UTF8') || '\x5c'::bytea;
    BEGIN
      s := convert_from(b, enc);
    EXCEPTION WHEN OTHERS THEN
      CONTINUE;
    END;
    IF strpos(s, E'\\') = 0 THEN
      RETURN convert_to(chr(cp), 'UTF8');
    END IF;
  END LOOP;
  RETURN NULL;
END $$`

// TestEncodingSmuggling sends the smuggling attack through custos with
// each client-only encoding, from a raw protocol client, psql and pgx: the
// payload is proven to run a hidden INSERT on the server directly, custos
// alone would see a harmless SELECT, and through custos the table does not
// change.
func TestEncodingSmuggling(t *testing.T) {
	t.Parallel()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t)})
	superExec(t, env, fmt.Sprintf(`CREATE TABLE enc_victim (x int);
		CREATE TABLE enc_proof (enc text);
		GRANT ALL ON enc_victim, enc_proof TO %s;
		%s`, env.Resource.User, smugglePrefixSQL))
	ctx := testCtx(t)
	dc, err := pgx.Connect(ctx, env.Cluster.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	count := func(table string) int {
		var n int
		if err := dc.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	classifier := sqlclass.New(0)
	psql := newPsql(t, env, "alice")

	// The encodings whose characters can swallow a backslash in
	// PostgreSQL's conversions; UHC and JOHAB are refused as client-only
	// encodings even though their trail bytes exclude it.
	exploitable := map[string]bool{"SJIS": true, "BIG5": true, "GBK": true, "GB18030": true, "SHIFT_JIS_2004": true}
	for _, enc := range []string{"SJIS", "BIG5", "GBK", "GB18030", "SHIFT_JIS_2004", "UHC", "JOHAB"} {
		t.Run(enc, func(t *testing.T) {
			var prefix []byte
			if err := dc.QueryRow(ctx, "SELECT enc_smuggle_prefix($1)", enc).Scan(&prefix); err != nil {
				t.Fatal(err)
			}
			if prefix == nil {
				if exploitable[enc] {
					t.Fatalf("no smuggling character found for %s", enc)
				}
				prefix = []byte("\u00c1") // still sent: the encoding is refused first
			}
			payload := func(table, value string) string {
				return "SELECT E'" + string(prefix) + `\'; INSERT INTO ` + table + " VALUES (" + value + "); -- '"
			}

			// custos alone would see one harmless SELECT.
			res, err := classifier.Classify(payload("enc_victim", "1"))
			if err != nil || len(res.Statements) != 1 || res.Statements[0].Command != "SELECT" || len(res.Statements[0].Writes) != 0 {
				t.Fatalf("custos' view of the payload: %+v %v", res, err)
			}
			if exploitable[enc] {
				// The server runs the hidden INSERT.
				cfg, err := pgconn.ParseConfig(env.Cluster.DSN(pgfiltertest.Database))
				if err != nil {
					t.Fatal(err)
				}
				cfg.RuntimeParams["client_encoding"] = enc
				direct, err := pgconn.ConnectConfig(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				before := count("enc_proof")
				_, err = direct.Exec(ctx, payload("enc_proof", "'"+enc+"'")).ReadAll()
				_ = direct.Close(ctx)
				if err != nil || count("enc_proof") != before+1 {
					t.Fatalf("the payload did not smuggle its INSERT on the server directly: %v", err)
				}
			}

			// Through custos: raw protocol client.
			t.Run("raw", func(t *testing.T) {
				c, err := net.DialTimeout("tcp", env.Addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				fe := pgproto3.NewFrontend(c, c)
				fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{
					"user": "alice", "database": pgfiltertest.Database, "client_encoding": enc}})
				if err := fe.Flush(); err != nil {
					t.Fatal(err)
				}
				msg, err := fe.Receive()
				er, ok := msg.(*pgproto3.ErrorResponse)
				if err != nil || !ok || er.Severity != "FATAL" || er.Code != "22023" || !strings.Contains(er.Message, enc) {
					t.Fatalf("startup with client_encoding %s: %T %+v %v", enc, msg, msg, err)
				}
				// Whatever follows is never read as a statement.
				fe.Send(&pgproto3.PasswordMessage{Password: env.Token(t, "alice", "agents")})
				fe.Send(&pgproto3.Query{String: payload("enc_victim", "1")})
				_ = fe.Flush()
				if msg, err := fe.Receive(); err == nil {
					t.Fatalf("the connection answered after the refusal: %T", msg)
				}
			})
			t.Run("psql", func(t *testing.T) {
				r := run(t, clientEnviron("PGPASSWORD="+psql.token, "PGCLIENTENCODING="+enc), nil, psql.bin,
					"-X", "--no-password", "-d", psql.conn, "-v", "ON_ERROR_STOP=1", "-c", payload("enc_victim", "2"))
				if r.code == 0 || !strings.Contains(r.stderr, "unsafe client encoding") {
					t.Fatalf("psql with PGCLIENTENCODING=%s: %s", enc, r)
				}
			})
			t.Run("pgx", func(t *testing.T) {
				cfg, err := pgx.ParseConfig(env.ConnString("alice", env.Token(t, "alice", "agents")))
				if err != nil {
					t.Fatal(err)
				}
				cfg.RuntimeParams["client_encoding"] = enc
				c, err := pgx.ConnectConfig(ctx, cfg)
				if err == nil {
					_, err = c.PgConn().Exec(ctx, payload("enc_victim", "3")).ReadAll()
					_ = c.Close(ctx)
					t.Fatalf("pgx connected with client_encoding %s (payload: %v)", enc, err)
				}
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "22023" {
					t.Fatalf("pgx: %v", err)
				}
			})
			if n := count("enc_victim"); n != 0 {
				t.Fatalf("enc_victim has %d rows after the attack through custos", n)
			}
		})
	}

	// The same bytes in a UTF8 session are one SELECT to custos and to the
	// server alike.
	c := connect(t, env, "alice")
	prefix := "\u00c1"
	if _, err := c.Exec(ctx, "SELECT E'"+prefix+`\'; INSERT INTO enc_victim VALUES (4); -- '`); err != nil {
		t.Fatalf("the payload in UTF8: %v", err)
	}
	if n := count("enc_victim"); n != 0 {
		t.Fatalf("enc_victim has %d rows", n)
	}
}
