package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// wantPgError fails t unless err is a server error with code.
func wantPgError(t testing.TB, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("err = %v, want a server error %s", err, code)
	}
	if pgErr.Code != code {
		t.Fatalf("error %s %q, want %s", pgErr.Code, pgErr.Message, code)
	}
}

// traced records the protocol messages of a connection by name, "F Parse",
// "B RowDescription"...
type traced struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (tr *traced) Write(p []byte) (int, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.Write(p)
}

// take returns the messages seen since the last take.
func (tr *traced) take() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var msgs []string
	for line := range strings.SplitSeq(strings.TrimSpace(tr.buf.String()), "\n") {
		if f := strings.SplitN(line, "\t", 3); len(f) >= 2 {
			msgs = append(msgs, f[0]+" "+f[1])
		}
	}
	tr.buf.Reset()
	return msgs
}

func TestPgxStatementCache(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := connect(t, env, "alice")
	ctx := testCtx(t)
	tr := &traced{}
	c.PgConn().Frontend().Trace(tr, pgproto3.TracerOptions{SuppressTimestamps: true})

	const q = "SELECT id, holder, pan, exp FROM cards WHERE id = $1"
	want := map[int32][2]string{1: {"Ada Lovelace", "4242424242424242"}, 2: {"Alan Turing", "5555555555554444"}, 8: {"Ken Thompson", "2223003122003222"}}
	for round, id := range []int32{1, 2, 8} {
		var gotID int32
		var holder, pan, exp string
		if err := c.QueryRow(ctx, q, id).Scan(&gotID, &holder, &pan, &exp); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if gotID != id || holder != want[id][0] || pan != want[id][1] {
			t.Errorf("round %d: got %d %q %q", round, gotID, holder, pan)
		}
		msgs := tr.take()
		has := func(m string) bool { return slices.Contains(msgs, m) }
		if round == 0 {
			// Prepare: Parse + Describe + Sync, then Bind + Execute + Sync.
			for _, m := range []string{"F Parse", "F Describe", "B ParseComplete", "B ParameterDescription", "B RowDescription", "F Bind", "F Execute", "B DataRow"} {
				if !has(m) {
					t.Errorf("first round lacks %s: %v", m, msgs)
				}
			}
			continue
		}
		// Cached: Bind + Execute only, and no RowDescription comes back.
		for _, m := range []string{"F Parse", "F Describe", "B RowDescription", "B ParameterDescription"} {
			if has(m) {
				t.Errorf("round %d has %s: %v", round, m, msgs)
			}
		}
		for _, m := range []string{"F Bind", "F Execute", "F Sync", "B BindComplete", "B DataRow", "B CommandComplete", "B ReadyForQuery"} {
			if !has(m) {
				t.Errorf("round %d lacks %s: %v", round, m, msgs)
			}
		}
	}
	var prepared int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'stmtcache_%' AND statement = $1", q).Scan(&prepared); err != nil {
		t.Fatal(err)
	}
	if prepared != 1 {
		t.Errorf("upstream has %d prepared statements for the query, want 1", prepared)
	}
}

// TestPgxQueryExecModes runs the same queries in every pgx execution mode:
// named prepared statements, unnamed statements with and without a
// Describe round trip, and the simple protocol with client-side binding.
func TestPgxQueryExecModes(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			cfg, err := pgx.ParseConfig(env.ConnString("alice", env.Token(t, "alice")))
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			c := connectConfig(t, cfg)
			ctx := testCtx(t)
			for range 3 {
				rows, err := c.Query(ctx, "SELECT holder FROM cards WHERE id = $1 OR pan = $2 ORDER BY id", 2, "378282246310005")
				if err != nil {
					t.Fatal(err)
				}
				holders, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(holders, []string{"Alan Turing", "Grace Hopper"}) {
					t.Errorf("holders = %q", holders)
				}
				var sum int64
				var s string
				if err := c.QueryRow(ctx, "SELECT $1::int8 + $2, $3::text || '''s'", int64(1)<<40, 2, "O'Brien").Scan(&sum, &s); err != nil {
					t.Fatal(err)
				}
				if sum != 1<<40+2 || s != "O'Brien's" {
					t.Errorf("got %d %q", sum, s)
				}
				tag, err := c.Exec(ctx, "UPDATE cards SET exp = exp WHERE id = $1", 3)
				if err != nil || tag.String() != "UPDATE 1" {
					t.Errorf("update: %v %v", tag, err)
				}
			}
		})
	}
}

func TestPgxBinaryFormats(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := connect(t, env, "alice")
	ctx := testCtx(t)

	ts := time.Date(2024, 2, 29, 23, 59, 59, 123456000, time.UTC)
	num := "-12345678901234567890.000000001"
	blob := []byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x0a}
	u1 := [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	u2 := [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	var numParam pgtype.Numeric
	if err := numParam.Scan(num); err != nil {
		t.Fatal(err)
	}
	uuids := []pgtype.UUID{{Bytes: u1, Valid: true}, {}, {Bytes: u2, Valid: true}}

	// Each value once from a literal (server encodes) and once from a
	// parameter (pgx encodes, binary), compared on the server too.
	const q = `SELECT 9223372036854775807::int8, $1::int8,
  '-12345678901234567890.000000001'::numeric, $2::numeric,
  '2024-02-29 23:59:59.123456+00'::timestamptz, $3::timestamptz,
  '\xdeadbeef00ff0a'::bytea, $4::bytea,
  ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL, 'ffffffff-ffff-ffff-ffff-ffffffffffff']::uuid[], $5::uuid[],
  $1::int8 = 9223372036854775807 AND $2::numeric = '-12345678901234567890.000000001'
    AND $3::timestamptz = '2024-02-29 23:59:59.123456+00' AND $4::bytea = '\xdeadbeef00ff0a'
    AND $5::uuid[] IS NOT DISTINCT FROM ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', NULL, 'ffffffff-ffff-ffff-ffff-ffffffffffff']::uuid[]`
	rows, err := c.Query(ctx, q, int64(9223372036854775807), numParam, ts, blob, uuids)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("no row: %v", rows.Err())
	}
	for i, fd := range rows.FieldDescriptions() {
		if fd.Format != pgx.BinaryFormatCode {
			t.Errorf("column %d (%s, oid %d) came in format %d, want binary", i+1, fd.Name, fd.DataTypeOID, fd.Format)
		}
	}
	var (
		i8      [2]int64
		nums    [2]pgtype.Numeric
		tss     [2]time.Time
		blobs   [2][]byte
		uuidArr [2][]pgtype.UUID
		same    bool
	)
	if err := rows.Scan(&i8[0], &i8[1], &nums[0], &nums[1], &tss[0], &tss[1], &blobs[0], &blobs[1], &uuidArr[0], &uuidArr[1], &same); err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Fatal("more than one row")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !same {
		t.Error("the server decoded the binary parameters to different values")
	}
	for k := range 2 {
		if i8[k] != 9223372036854775807 {
			t.Errorf("int8[%d] = %d", k, i8[k])
		}
		if v, err := nums[k].Value(); err != nil || v != num {
			t.Errorf("numeric[%d] = %v (%v), want %s", k, v, err, num)
		}
		if !tss[k].Equal(ts) {
			t.Errorf("timestamptz[%d] = %v, want %v", k, tss[k], ts)
		}
		if !bytes.Equal(blobs[k], blob) {
			t.Errorf("bytea[%d] = %x", k, blobs[k])
		}
		if len(uuidArr[k]) != 3 || uuidArr[k][0] != uuids[0] || uuidArr[k][1].Valid || uuidArr[k][2] != uuids[2] {
			t.Errorf("uuid[][%d] = %v", k, uuidArr[k])
		}
	}

	t.Run("many rows", func(t *testing.T) {
		// 20000 binary DataRows with computed values checked one by one.
		rows, err := c.Query(ctx, `SELECT g::int8 * 1000003, (g::numeric / 7)::numeric(20,6),
  timestamptz '2000-01-01 00:00:00+00' + g * interval '1 second', sha256(g::text::bytea)
FROM generate_series(1, 20000) g ORDER BY g`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
			var i8 int64
			var numv pgtype.Numeric
			var at time.Time
			var digest []byte
			if err := rows.Scan(&i8, &numv, &at, &digest); err != nil {
				t.Fatal(err)
			}
			wantNum := new(big.Rat).SetFrac64(int64(n), 7).FloatString(6)
			gotNum, _ := numv.Value()
			wantDigest := sha256.Sum256(fmt.Appendf(nil, "%d", n))
			if i8 != int64(n)*1000003 || gotNum != wantNum || !at.Equal(time.Date(2000, 1, 1, 0, 0, n, 0, time.UTC)) || !bytes.Equal(digest, wantDigest[:]) {
				t.Fatalf("row %d: %d %v %v %x", n, i8, gotNum, at, digest)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if n != 20000 {
			t.Errorf("%d rows", n)
		}
	})

	t.Run("binary cursor over simple protocol", func(t *testing.T) {
		// DECLARE ... BINARY CURSOR returns binary rows from a simple Query.
		results, err := c.PgConn().Exec(ctx, "BEGIN; DECLARE bc BINARY CURSOR FOR SELECT 42::int4, 'x'::text; FETCH ALL FROM bc; COMMIT").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(results) != 4 || len(results[2].Rows) != 1 {
			t.Fatalf("results: %+v", results)
		}
		if row := results[2].Rows[0]; !bytes.Equal(row[0], []byte{0, 0, 0, 42}) || string(row[1]) != "x" {
			t.Errorf("binary cursor row = %x", row)
		}
	})
}

func TestPgxCopyFrom(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := connect(t, env, "alice")
	ctx := testCtx(t)
	if _, err := c.Exec(ctx, `DROP TABLE IF EXISTS pgx_copy;
CREATE TABLE pgx_copy (id int8 PRIMARY KEY, name text, amount numeric(14,2), at timestamptz, payload bytea, tag uuid, attrs jsonb, flags bool[])`); err != nil {
		t.Fatal(err)
	}
	const n = 25000
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	row := func(i int) []any {
		var u pgtype.UUID
		u.Valid = true
		copy(u.Bytes[:], fmt.Appendf(nil, "%016d", i))
		var name any = fmt.Sprintf("name-%d-%s", i, strings.Repeat("é", i%17))
		if i%1000 == 0 {
			name = nil
		}
		return []any{int64(i), name, fmt.Sprintf("%d.%02d", i, i%100), base.Add(time.Duration(i) * time.Millisecond),
			bytes.Repeat([]byte{byte(i)}, i%300), u, map[string]any{"i": i, "odd": i%2 == 1}, []bool{i%2 == 0, i%3 == 0}}
	}
	cols := []string{"id", "name", "amount", "at", "payload", "tag", "attrs", "flags"}
	rows := make([][]any, 0, n)
	for i := 1; i <= n; i++ {
		rows = append(rows, row(i))
	}
	copied, err := c.CopyFrom(ctx, pgx.Identifier{"pgx_copy"}, cols, pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatal(err)
	}
	if copied != n {
		t.Fatalf("copied %d rows, want %d", copied, n)
	}

	got, err := c.Query(ctx, "SELECT id, name, amount::text, at, payload, tag, attrs, flags FROM pgx_copy ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for got.Next() {
		i++
		var (
			id      int64
			name    *string
			amount  string
			at      time.Time
			payload []byte
			tag     pgtype.UUID
			attrs   map[string]any
			flags   []bool
		)
		if err := got.Scan(&id, &name, &amount, &at, &payload, &tag, &attrs, &flags); err != nil {
			t.Fatal(err)
		}
		w := row(i)
		ok := id == w[0].(int64) && amount == w[2].(string) && at.Equal(w[3].(time.Time)) &&
			bytes.Equal(payload, w[4].([]byte)) && tag == w[5].(pgtype.UUID) &&
			attrs["i"] == float64(i) && attrs["odd"] == (i%2 == 1) && slices.Equal(flags, w[7].([]bool))
		if w[1] == nil {
			ok = ok && name == nil
		} else {
			ok = ok && name != nil && *name == w[1].(string)
		}
		if !ok {
			t.Fatalf("row %d read back differs: %v %v %v %v %x %v %v %v", i, id, name, amount, at, payload, tag, attrs, flags)
		}
	}
	if err := got.Err(); err != nil {
		t.Fatal(err)
	}
	if i != n {
		t.Fatalf("read back %d rows", i)
	}

	t.Run("failing copy", func(t *testing.T) {
		// A duplicate key fails the whole COPY; the session goes on.
		dup := [][]any{row(n + 1), row(n + 2), row(7)}
		_, err := c.CopyFrom(ctx, pgx.Identifier{"pgx_copy"}, cols, pgx.CopyFromRows(dup))
		wantPgError(t, err, "23505")
		var count int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM pgx_copy").Scan(&count); err != nil {
			t.Fatal(err)
		}
		if count != n {
			t.Errorf("%d rows after the failed COPY, want %d", count, n)
		}
	})
	t.Run("copy to", func(t *testing.T) {
		var out bytes.Buffer
		tag, err := c.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, name FROM pgx_copy WHERE id <= 3 ORDER BY id) TO STDOUT")
		if err != nil || tag.RowsAffected() != 3 {
			t.Fatalf("copy to: %v %v", tag, err)
		}
		if want := "1\tname-1-é\n2\tname-2-éé\n3\tname-3-ééé\n"; out.String() != want {
			t.Errorf("COPY TO STDOUT = %q, want %q", out.String(), want)
		}
	})
}

func TestPgxBatch(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	setup := connect(t, env, "alice")
	if _, err := setup.Exec(testCtx(t), "DROP TABLE IF EXISTS pgx_batch; CREATE TABLE pgx_batch (id serial PRIMARY KEY, mode text, v text)"); err != nil {
		t.Fatal(err)
	}
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			cfg, err := pgx.ParseConfig(env.ConnString("alice", env.Token(t, "alice")))
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			c := connectConfig(t, cfg)
			ctx := testCtx(t)
			m := mode.String()

			b := &pgx.Batch{}
			b.Queue("INSERT INTO pgx_batch (mode, v) VALUES ($1, $2) RETURNING id", m, "a")
			b.Queue("INSERT INTO pgx_batch (mode, v) VALUES ($1, $2) RETURNING id", m, "b")
			b.Queue("SELECT count(*) FROM pgx_batch WHERE mode = $1", m)
			b.Queue("UPDATE pgx_batch SET v = v || '!' WHERE mode = $1 AND v = $2", m, "a")
			b.Queue("SELECT string_agg(v, ',' ORDER BY id) FROM pgx_batch WHERE mode = $1", m)
			br := c.SendBatch(ctx, b)
			var id1, id2, count int64
			var agg string
			if err := br.QueryRow().Scan(&id1); err != nil {
				t.Fatal(err)
			}
			if err := br.QueryRow().Scan(&id2); err != nil {
				t.Fatal(err)
			}
			if err := br.QueryRow().Scan(&count); err != nil {
				t.Fatal(err)
			}
			if tag, err := br.Exec(); err != nil || tag.RowsAffected() != 1 {
				t.Fatalf("update: %v %v", tag, err)
			}
			if err := br.QueryRow().Scan(&agg); err != nil {
				t.Fatal(err)
			}
			if err := br.Close(); err != nil {
				t.Fatal(err)
			}
			if id2 != id1+1 || count != 2 || agg != "a!,b" {
				t.Errorf("batch results: ids %d %d, count %d, agg %q", id1, id2, count, agg)
			}

			// An error in the middle: earlier results arrive, the rest is
			// skipped, and the batch's implicit transaction rolls back.
			b = &pgx.Batch{}
			b.Queue("INSERT INTO pgx_batch (mode, v) VALUES ($1, $2)", m, "c")
			b.Queue("SELECT 10 / $1::int", 0)
			b.Queue("INSERT INTO pgx_batch (mode, v) VALUES ($1, $2)", m, "d")
			br = c.SendBatch(ctx, b)
			if _, err := br.Exec(); err != nil && mode != pgx.QueryExecModeSimpleProtocol {
				t.Fatalf("first statement: %v", err)
			}
			var x int
			if mode == pgx.QueryExecModeSimpleProtocol {
				// One multi-statement Query: the error ends it.
				_ = br.QueryRow().Scan(&x)
			} else {
				wantPgError(t, br.QueryRow().Scan(&x), "22012")
			}
			if _, err := br.Exec(); err == nil {
				t.Error("the statement after the error ran")
			}
			if err := br.Close(); err == nil {
				t.Error("batch close: no error")
			}
			if err := c.QueryRow(ctx, "SELECT count(*) FROM pgx_batch WHERE mode = $1", m).Scan(&count); err != nil {
				t.Fatal(err)
			}
			if count != 2 {
				t.Errorf("%d rows after the failed batch, want 2 (its insert rolled back)", count)
			}
		})
	}
}

// TestPgconnPipeline drives the extended protocol by hand: a Parse and
// Describe answered on Flush alone (no Sync), then two sync points, the
// first with an error that makes the server skip to it.
func TestPgconnPipeline(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	pc := connect(t, env, "alice").PgConn()
	ctx := testCtx(t)
	pl := pc.StartPipeline(ctx)
	defer pl.Close()

	pl.SendPrepare("add_one", "SELECT $1::int8 + 1", nil)
	pl.SendFlushRequest()
	if err := pl.Flush(); err != nil {
		t.Fatal(err)
	}
	res, err := pl.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	sd, ok := res.(*pgconn.StatementDescription)
	if !ok || len(sd.ParamOIDs) != 1 || sd.ParamOIDs[0] != pgtype.Int8OID || len(sd.Fields) != 1 {
		t.Fatalf("prepare without Sync: %#v", res)
	}

	pl.SendQueryPrepared("add_one", [][]byte{[]byte("41")}, nil, nil)
	pl.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
	pl.SendQueryPrepared("add_one", [][]byte{[]byte("99")}, nil, nil) // skipped
	pl.SendPipelineSync()
	pl.SendQueryPrepared("add_one", [][]byte{[]byte("1000")}, nil, nil)
	pl.SendQueryParams("SELECT $1::text || '!'", [][]byte{[]byte("after")}, nil, nil, nil)
	pl.SendPipelineSync()
	if err := pl.Flush(); err != nil {
		t.Fatal(err)
	}

	var got []string
	for {
		res, err := pl.GetResults()
		if err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatal(err)
			}
			got = append(got, "error "+pgErr.Code)
			continue
		}
		if res == nil {
			break
		}
		switch r := res.(type) {
		case *pgconn.ResultReader:
			rr := r.Read()
			if rr.Err != nil {
				t.Fatal(rr.Err)
			}
			for _, row := range rr.Rows {
				got = append(got, string(row[0]))
			}
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		default:
			t.Fatalf("unexpected result %T", res)
		}
	}
	if want := []string{"42", "error 22012", "sync", "1001", "after!", "sync"}; !slices.Equal(got, want) {
		t.Errorf("pipeline results %q, want %q", got, want)
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if pc.TxStatus() != 'I' {
		t.Errorf("tx status %c after the pipeline", pc.TxStatus())
	}
}

func TestPgxListenNotify(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	listener := connect(t, env, "alice")
	notifier := connect(t, env, "bob")
	ctx := testCtx(t)
	if _, err := listener.Exec(ctx, "LISTEN custos_e2e"); err != nil {
		t.Fatal(err)
	}
	var notifierPID, listenerPID uint32
	if err := notifier.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&notifierPID); err != nil {
		t.Fatal(err)
	}
	if err := listener.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&listenerPID); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("n", 7999) // the largest payload PostgreSQL takes
	if _, err := notifier.Exec(ctx, "SELECT pg_notify('custos_e2e', $1)", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := notifier.Exec(ctx, "NOTIFY custos_e2e, 'second'"); err != nil {
		t.Fatal(err)
	}
	if _, err := notifier.Exec(ctx, "SELECT pg_notify('custos_e2e', $1)", big); err != nil {
		t.Fatal(err)
	}
	wait := func() *pgconn.Notification {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		if err != nil {
			t.Fatalf("wait for notification: %v", err)
		}
		return n
	}
	for _, want := range []string{"first", "second", big} {
		n := wait()
		if n.Channel != "custos_e2e" || n.Payload != want || n.PID != notifierPID {
			t.Errorf("notification %q from pid %d, want %.20q from %d", n.Payload, n.PID, want, notifierPID)
		}
	}

	// A notification sent while the listener is (most likely) inside a
	// query reaches it between that query's messages or right after.
	done := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		_, err := notifier.Exec(ctx, "NOTIFY custos_e2e, 'during'")
		done <- err
	}()
	if _, err := listener.Exec(ctx, "SELECT pg_sleep(1)"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := wait(); n.Payload != "during" {
		t.Errorf("notification during a query: %q", n.Payload)
	}

	// Its own notification carries the process id custos gave the client,
	// so drivers that skip their own notifications by pid still can.
	if _, err := listener.Exec(ctx, "NOTIFY custos_e2e, 'self'"); err != nil {
		t.Fatal(err)
	}
	if n := wait(); n.Payload != "self" || n.PID != listener.PgConn().PID() || n.PID == listenerPID {
		t.Errorf("self notification %q from pid %d, want from %d (not the upstream %d)", n.Payload, n.PID, listener.PgConn().PID(), listenerPID)
	}
	if _, err := listener.Exec(ctx, "UNLISTEN *"); err != nil {
		t.Fatal(err)
	}
}

func TestPgxLargeBytea(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := connect(t, env, "alice")
	ctx := testCtx(t)
	data := make([]byte, 50<<20)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)

	if _, err := c.Exec(ctx, "CREATE TEMP TABLE big (b bytea)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "INSERT INTO big VALUES ($1)", data); err != nil {
		t.Fatal(err)
	}
	var serverSum string
	var n int
	if err := c.QueryRow(ctx, "SELECT encode(sha256(b), 'hex'), length(b) FROM big").Scan(&serverSum, &n); err != nil {
		t.Fatal(err)
	}
	if serverSum != hex.EncodeToString(sum[:]) || n != len(data) {
		t.Fatalf("server holds %d bytes with sha256 %s, want %d bytes %x", n, serverSum, len(data), sum)
	}
	for _, format := range []int16{pgx.BinaryFormatCode, pgx.TextFormatCode} {
		// Text format: a 100 MB hex DataRow.
		var got []byte
		if err := c.QueryRow(ctx, "SELECT b FROM big", pgx.QueryResultFormats{format}).Scan(&got); err != nil {
			t.Fatalf("format %d: %v", format, err)
		}
		if g := sha256.Sum256(got); g != sum {
			t.Errorf("format %d: read back %d bytes with sha256 %x, want %x", format, len(got), g, sum)
		}
	}
}

func TestPgxSessionState(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := connect(t, env, "alice", "application_name=e2e-start", "timezone=UTC")
	pc := c.PgConn()
	ctx := testCtx(t)

	t.Run("parameter status", func(t *testing.T) {
		for k, want := range map[string]string{
			"application_name": "e2e-start", "TimeZone": "UTC", "server_encoding": "UTF8",
			"client_encoding": "UTF8", "integer_datetimes": "on", "standard_conforming_strings": "on",
		} {
			if got := pc.ParameterStatus(k); got != want {
				t.Errorf("after startup %s = %q, want %q", k, got, want)
			}
		}
		if pc.ParameterStatus("server_version") == "" {
			t.Error("no server_version")
		}
		steps := []struct {
			sql  string
			args []any
			key  string
			want string
		}{
			{"SET application_name = 'e2e-set'", nil, "application_name", "e2e-set"},
			{"SELECT set_config('application_name', $1, false)", []any{"e2e-func"}, "application_name", "e2e-func"},
			{"SET TimeZone = 'Asia/Tokyo'", nil, "TimeZone", "Asia/Tokyo"},
			{"RESET application_name", nil, "application_name", "e2e-start"}, // back to the startup value
		}
		for _, s := range steps {
			if _, err := c.Exec(ctx, s.sql, s.args...); err != nil {
				t.Fatalf("%s: %v", s.sql, err)
			}
			if got := pc.ParameterStatus(s.key); got != s.want {
				t.Errorf("after %s: %s = %q, want %q", s.sql, s.key, got, s.want)
			}
		}
		var at time.Time
		if err := c.QueryRow(ctx, "SELECT '2025-06-01 09:00:00'::timestamptz").Scan(&at); err != nil {
			t.Fatal(err)
		}
		if !at.Equal(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("timestamptz in the session's time zone: %v", at)
		}
	})

	t.Run("transaction status", func(t *testing.T) {
		steps := []struct {
			sql     string
			errCode string
			status  byte
		}{
			{"SELECT 1", "", 'I'},
			{"BEGIN", "", 'T'},
			{"SELECT count(*) FROM cards", "", 'T'},
			{"SAVEPOINT sp", "", 'T'},
			{"SELECT 1/0", "22012", 'E'},
			{"SELECT 1", "25P02", 'E'},
			{"ROLLBACK TO SAVEPOINT sp", "", 'T'},
			{"SELECT no_such_column FROM cards", "42703", 'E'},
			{"ROLLBACK", "", 'I'},
		}
		for _, simple := range []bool{true, false} {
			if pc.TxStatus() != 'I' {
				t.Fatalf("tx status %c before", pc.TxStatus())
			}
			for _, s := range steps {
				var err error
				if simple {
					_, err = pc.Exec(ctx, s.sql).ReadAll()
				} else {
					err = pc.ExecParams(ctx, s.sql, nil, nil, nil, nil).Read().Err
				}
				if s.errCode == "" && err != nil {
					t.Fatalf("simple=%v %s: %v", simple, s.sql, err)
				}
				if s.errCode != "" {
					wantPgError(t, err, s.errCode)
				}
				if got := pc.TxStatus(); got != s.status {
					t.Errorf("simple=%v after %s: tx status %c, want %c", simple, s.sql, got, s.status)
				}
			}
		}
		// pgx's own transactions, with a savepoint as a nested one.
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "CREATE TEMP TABLE tx_state (v int)"); err != nil {
			t.Fatal(err)
		}
		nested, err := tx.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nested.Exec(ctx, "INSERT INTO tx_state VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		if err := nested.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO tx_state VALUES (2)"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		var sum int
		if err := c.QueryRow(ctx, "SELECT sum(v) FROM tx_state").Scan(&sum); err != nil || sum != 2 {
			t.Errorf("after commit sum = %d (%v), want 2", sum, err)
		}
	})

	t.Run("error mid result", func(t *testing.T) {
		// Rows before the error arrive, then the error: g=1 and g=2 give
		// 0 and -1, g=3 divides by zero.
		const q = "SELECT 1/(g-3) FROM generate_series(1,5) g"
		collect := func(rr *pgconn.ResultReader) ([]string, error) {
			var vals []string
			for rr.NextRow() {
				vals = append(vals, string(rr.Values()[0]))
			}
			_, err := rr.Close()
			return vals, err
		}
		mrr := pc.Exec(ctx, q)
		if !mrr.NextResult() {
			t.Fatalf("simple: no result: %v", mrr.Close())
		}
		vals, err := collect(mrr.ResultReader())
		wantPgError(t, err, "22012")
		if !slices.Equal(vals, []string{"0", "-1"}) {
			t.Errorf("simple: rows before the error %q", vals)
		}
		_ = mrr.Close()

		vals, err = collect(pc.ExecParams(ctx, q, nil, nil, nil, nil))
		wantPgError(t, err, "22012")
		if !slices.Equal(vals, []string{"0", "-1"}) {
			t.Errorf("extended: rows before the error %q", vals)
		}

		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var got []int32
		for rows.Next() {
			var v int32
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			got = append(got, v)
		}
		wantPgError(t, rows.Err(), "22012")
		if !slices.Equal(got, []int32{0, -1}) {
			t.Errorf("pgx: rows before the error %v", got)
		}
		var one int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 || pc.TxStatus() != 'I' {
			t.Errorf("session after the error: %d %v %c", one, err, pc.TxStatus())
		}
	})
}

// TestPgxConcurrentSessions runs many sessions at once through one proxy,
// each checking that it gets its own answers.
func TestPgxConcurrentSessions(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	const sessions, queries = 16, 40
	conns := make([]*pgx.Conn, sessions)
	for i := range conns {
		conns[i] = connect(t, env, fmt.Sprintf("agent%d", i))
	}
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i, c := range conns {
		wg.Go(func() {
			for q := range queries {
				want := fmt.Sprintf("s%d-q%d", i, q)
				var got string
				var n int
				if err := c.QueryRow(ctx, "SELECT $1::text, count(*) FROM generate_series(1, $2::int)", want, 100*(q+1)).Scan(&got, &n); err != nil {
					errs <- err
					return
				}
				if got != want || n != 100*(q+1) {
					errs <- fmt.Errorf("session %d query %d: got %q %d", i, q, got, n)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
