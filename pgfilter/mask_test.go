package pgfilter_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func maskedEnv(t *testing.T) *pgfiltertest.Env {
	t.Helper()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return pgfiltertest.Start(t, pgfiltertest.Options{Masker: m})
}

func TestMaskingBasics(t *testing.T) {
	t.Parallel()
	env := maskedEnv(t)
	c := connect(t, env.ConnString("alice", env.Token(t, "alice")))
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
		var pan, cvv *string
		var alias string
		if err := c.QueryRow(ctx, "SELECT pan, cvv, pan AS x FROM cards WHERE id = 1", mode).Scan(&pan, &cvv, &alias); err != nil {
			t.Fatalf("mode %v: %v", mode, err)
		}
		if pan == nil || *pan != "************4242" || alias != "************4242" {
			t.Errorf("mode %v: pan = %v, alias %q", mode, pan, alias)
		}
		if cvv != nil {
			t.Errorf("mode %v: cvv = %q, want NULL", mode, *cvv)
		}
		var n int64
		if err := c.QueryRow(ctx, "SELECT pan::int8 FROM cards WHERE id = 1", mode).Scan(&n); err != nil {
			t.Fatalf("mode %v: int8: %v", mode, err)
		}
		if n == 4242424242424242 || n%10000 != 4242 {
			t.Errorf("mode %v: int8 pan = %d", mode, n)
		}
	}
	_, err := c.Exec(ctx, "SELECT 'x'::int + 0 FROM (SELECT '4242 4242 4242 4242'::int) s")
	if err == nil || strings.Contains(err.Error(), "4242 4242 4242 4242") || !strings.Contains(err.Error(), "**** **** **** 4242") {
		t.Fatalf("error = %v", err)
	}
}

func TestMaskingCompositeSAD(t *testing.T) {
	t.Parallel()
	env := maskedEnv(t)
	c := connect(t, env.ConnString("alice", env.Token(t, "alice")))
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		rows, err := c.Query(ctx, "SELECT c FROM cards c WHERE id = 1", mode)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			raw := rows.RawValues()
			if strings.Contains(string(raw[0]), "123") || strings.Contains(string(raw[0]), "4242424242424242") {
				t.Errorf("mode %v: row value %q shows SAD or a PAN", mode, raw[0])
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMaskingNewTableRowType(t *testing.T) {
	t.Parallel()
	env := maskedEnv(t)
	ctx := context.Background()
	if err := env.Cluster.Exec(ctx, pgfiltertest.Database, `CREATE TABLE mask_rowtype (id int8, pan text, cvv text, pin_block text, doc jsonb);
		INSERT INTO mask_rowtype VALUES (1, '4242424242424242', '731', '0412AC89FFFFFFFF', '{"a": "x \"y\""}');
		GRANT ALL ON mask_rowtype TO `+env.Resource.User); err != nil {
		t.Fatal(err)
	}
	c := connect(t, env.ConnString("alice", env.Token(t, "alice")))
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		rows, err := c.Query(ctx, "SELECT t FROM mask_rowtype t", mode)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			raw := string(rows.RawValues()[0])
			if strings.Contains(raw, "731") || strings.Contains(raw, "0412AC89") || strings.Contains(raw, "4242424242424242") {
				t.Errorf("mode %v: row value %q shows SAD or a PAN", mode, raw)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
}
