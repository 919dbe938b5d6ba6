package tests

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/discover"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// TestDiscoveryProtectsUndeclaredColumns stores card numbers in a free-text
// column no configuration calls cardholder data. Before a discovery pass an
// agent recovers them through functions the literal detector cannot see
// through (reverse, translate, split substrings); after it, the column is a
// cardholder-data column: selecting it masks it, and every function of it
// is refused with a decision id.
func TestDiscoveryProtectsUndeclaredColumns(t *testing.T) {
	t.Parallel()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng := pgfiltertest.DefaultPolicy(t)
	env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: eng})
	const table = "discovery_tickets"
	superExec(t, env, fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s;
		CREATE TABLE %[1]s (id int PRIMARY KEY, note text);
		INSERT INTO %[1]s VALUES (1, 'printer jam'), (2, 'customer card 4242424242424242 declined');
		GRANT SELECT ON %[1]s TO %[2]s`, table, env.Resource.User))
	p := newPsql(t, env, "alice")

	leaks := []string{
		"SELECT reverse(note) FROM " + table + " WHERE id = 2",
		"SELECT translate(note, '0123456789', 'abcdefghij') FROM " + table + " WHERE id = 2",
		"SELECT substring(note from 15 for 8) || ' ' || substring(note from 23 for 8) FROM " + table + " WHERE id = 2",
	}
	// The leak is real before discovery: the digits come back disguised.
	if out := p.ok("-c", leaks[0]); !strings.Contains(out, "2424242424242424") {
		t.Fatalf("before discovery the reversed PAN should come back (the test would prove nothing): %q", out)
	}

	var mu sync.Mutex
	var reports []*discover.Report
	r := discover.NewRunner(discover.RunnerOptions{
		Config:    config.Discovery{Rows: 100},
		Resources: []config.Resource{env.Resource},
		Connect: func(ctx context.Context, res *config.Resource) (*pgconn.PgConn, error) {
			pc, err := pgfilter.UpstreamConfig(res)
			if err != nil {
				return nil, err
			}
			return pgconn.ConnectConfig(ctx, pc)
		},
		Policy: eng,
		Record: func(_ *config.Resource, rep *discover.Report, err error) {
			if err != nil {
				t.Errorf("pass: %v", err)
				return
			}
			mu.Lock()
			reports = append(reports, rep)
			mu.Unlock()
		},
	})
	if r == nil {
		t.Fatal("no runner for a cardholder-data resource")
	}
	before := eng.Version()
	if err := r.Pass(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if eng.Version() == before {
		t.Fatal("the policy version did not change with the discovered columns")
	}
	var found []string
	for _, c := range reports[0].Found {
		found = append(found, c.Table+"."+c.Column)
	}
	if !slices.Contains(found, "public."+table+".note") || slices.Contains(found, "public."+table+".id") {
		t.Fatalf("found %v", found)
	}

	for _, q := range leaks {
		res := p.run(nil, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", q)
		if res.code == 0 || !strings.Contains(res.stderr, "decision dec_") || !strings.Contains(res.stderr, "may only be selected") {
			t.Errorf("after discovery %q: want a refusal with a decision id: %s", q, res)
		}
		for _, leak := range []string{"2424242424242424", "ecececececececec", "42424242 42424242"} {
			if strings.Contains(res.stdout, leak) {
				t.Errorf("%q leaked %s: %s", q, leak, res.stdout)
			}
		}
	}
	out := p.ok("-c", "SELECT note FROM "+table+" WHERE id = 2")
	if strings.Contains(out, "4242424242424242") || !strings.Contains(out, "4242") {
		t.Fatalf("the discovered column is not masked: %q", out)
	}
	// A second pass (e.g. after SIGHUP) keeps the columns.
	if err := r.Pass(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if res := p.run(nil, "-c", leaks[0]); res.code == 0 {
		t.Fatalf("after a second pass the leak runs again: %s", res)
	}
}
