package discover

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/pgcluster"
)

// schema holds card numbers where a schema would not say so: a free-text
// note, a JSON document, an array, a bigint, a partitioned table and a
// materialised view; and columns that hold digits that are not card numbers.
const schema = `
CREATE TABLE cards (id int PRIMARY KEY, holder text, pan text, cvv text);
INSERT INTO cards VALUES (1, 'Ada', '4242424242424242', '123'), (2, 'Bob', '5555555555554444', '456');
CREATE TABLE support_tickets (id int, note text, phone text, amount numeric(12,2));
INSERT INTO support_tickets SELECT g, CASE WHEN g % 50 = 0 THEN 'customer read out 4242 4242 4242 4242 on the phone' ELSE 'printer jam #' || g END,
       '+1 555 0100 ' || g, g * 1.5 FROM generate_series(1, 1000) g;
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema".events (payload jsonb, tags text[], n bigint, plain int);
INSERT INTO "Odd Schema".events VALUES ('{"card": {"number": "378282246310005"}}', '{a,6011111111111117}', 6200000000000005, 7);
CREATE TABLE payments (id int, ref text) PARTITION BY RANGE (id);
CREATE TABLE payments_1 PARTITION OF payments FOR VALUES FROM (0) TO (100);
INSERT INTO payments VALUES (1, 'track ;4242424242424242=2512101?');
CREATE MATERIALIZED VIEW card_report AS SELECT holder || ' ' || pan AS line FROM cards;
CREATE TABLE clean (id bigint, body text);
INSERT INTO clean SELECT g, 'order ' || (4242424242424240 + g % 2) FROM generate_series(1, 10) g;
CREATE TABLE big (id int, body text);
INSERT INTO big SELECT g, 'x' FROM generate_series(1, 200000) g;
ANALYZE big;
CREATE ROLE scanner LOGIN PASSWORD 'scanner-pw';
GRANT SELECT ON cards, support_tickets, payments, payments_1, card_report, clean, big TO scanner;
GRANT USAGE ON SCHEMA "Odd Schema" TO scanner;
`

func TestScanFindsCardholderColumns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cl := pgcluster.StartForTest(t, pgcluster.Options{})
	if err := cl.CreateDatabase(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if err := cl.Exec(ctx, "shop", schema); err != nil {
		t.Fatal(err)
	}

	t.Run("superuser", func(t *testing.T) {
		conn := connect(t, cl.DSN("shop"))
		rep, err := Scan(ctx, conn, Options{
			Rows:     300,
			Declared: map[string]map[string]string{"public.cards": {"pan": "last4", "cvv": "drop"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		got := found(rep)
		want := []string{
			`Odd Schema.events.n`, `Odd Schema.events.payload`, `Odd Schema.events.tags`,
			"public.card_report.line", "public.cards.pan (declared)", "public.payments_1.ref",
			"public.support_tickets.note",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if len(rep.Errors) != 0 {
			t.Fatalf("errors: %v", rep.Errors)
		}
		for _, c := range rep.Found {
			if c.Table == "public.support_tickets" && (c.Hits != 6 || c.Sampled != 300) {
				// rows 50, 100, ... 300 of the first 300 (the table is never analysed).
				t.Errorf("note: %d hits of %d sampled, want 6 of 300", c.Hits, c.Sampled)
			}
		}
		if n := len(rep.Undeclared()); n != 6 {
			t.Errorf("undeclared: %d, want 6", n)
		}
		// The report holds names and counts, never a value.
		b, _ := json.Marshal(rep)
		for _, pan := range []string{"4242424242424242", "4242", "378282246310005", "6011111111111117"} {
			if strings.Contains(string(b), pan) {
				t.Fatalf("report holds %s: %s", pan, b)
			}
		}
		pd := rep.PolicyData("last4")
		if pd["public.support_tickets"].(map[string]any)["note"] != "last4" {
			t.Fatalf("policy data: %v", pd)
		}
		if !conn.IsClosed() && conn.TxStatus() != 'I' {
			t.Fatalf("connection left in transaction state %c", conn.TxStatus())
		}
	})

	t.Run("a role that cannot read everything", func(t *testing.T) {
		dsn := fmt.Sprintf("host=%s port=%d dbname=shop user=scanner password=scanner-pw sslmode=disable", cl.Host, cl.Port)
		conn := connect(t, dsn)
		rep, err := Scan(ctx, conn, Options{Rows: 50})
		if err != nil {
			t.Fatal(err)
		}
		// events is listed but not readable: named in Errors, the pass goes on.
		if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], `Odd Schema.events`) || !strings.Contains(rep.Errors[0], "permission denied") {
			t.Fatalf("errors: %q", rep.Errors)
		}
		if got := strings.Join(found(rep), ","); !strings.Contains(got, "public.cards.pan") || !strings.Contains(got, "public.payments_1.ref") {
			t.Fatalf("found %s", got)
		}
	})

	t.Run("a cancelled pass fails", func(t *testing.T) {
		conn := connect(t, cl.DSN("shop"))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := Scan(cctx, conn, Options{}); err == nil {
			t.Fatal("a cancelled pass succeeded")
		}
	})
}

func TestSampleQuery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		t    table
		want string
	}{
		{table{schema: "public", name: "t", tuples: -1, cols: []candidate{{name: "a"}}},
			`SELECT "a"::pg_catalog.text FROM "public"."t" LIMIT 10`},
		{table{schema: `x"y`, name: "T", tuples: 40, cols: []candidate{{name: "a"}, {name: `b"c`}}},
			`SELECT "a"::pg_catalog.text, "b""c"::pg_catalog.text FROM "x""y"."T" LIMIT 10`},
		{table{schema: "public", name: "big", tuples: 1_000_000, cols: []candidate{{name: "a"}}},
			`SELECT "a"::pg_catalog.text FROM "public"."big" TABLESAMPLE BERNOULLI (0.003000) LIMIT 10`},
	} {
		if got := sampleQuery(&tc.t, 10); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

func found(rep *Report) []string {
	var out []string
	for _, c := range rep.Found {
		s := c.Table + "." + c.Column
		if c.Declared {
			s += " (declared)"
		}
		out = append(out, s)
	}
	return out
}

func connect(t *testing.T, dsn string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
