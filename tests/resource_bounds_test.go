package tests

// End-to-end tests of the bounds on what one principal can take from
// custos: sessions (per principal, per group, the approvers' reserve) and
// the classifier's work per statement (lists, size), with psql and pgx.

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/sqlclass"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func TestSessionCapsWithRealClients(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{Policy: pgfiltertest.DefaultPolicy(t), Sessions: config.Sessions{
		MaxPerPrincipal: 3, MaxPerGroup: map[string]int{"agents": 4}, MaxTotal: 6,
		Reserve: config.SessionReserve{Groups: []string{"dba"}, Sessions: 2},
	}})
	ctx := testCtx(t)
	// alice holds her three sessions: psql is refused, saying why.
	for range 3 {
		connect(t, env, "alice")
	}
	p := newPsql(t, env, "alice")
	r := p.run(nil, "-c", "SELECT 1")
	if r.code == 0 || !strings.Contains(r.stderr, "too many sessions for alice: 3 of 3") {
		t.Errorf("psql over alice's cap: %s", r)
	}
	// carol, another agent, gets the group's last session, then no more.
	connect(t, env, "carol")
	_, err := pgx.Connect(ctx, env.ConnString("carol", env.Token(t, "carol", "agents")))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "53300" || !strings.Contains(pe.Message, "group agents: 4 of 4") {
		t.Errorf("pgx over the agents' cap: %v", err)
	}
	// A principal outside both: the total's unreserved part is full.
	_, err = pgx.Connect(ctx, env.ConnString("erin", env.Token(t, "erin", "auditors")))
	if !errors.As(err, &pe) || pe.Code != "53300" || !strings.Contains(pe.Message, "reserved for dba") {
		t.Errorf("pgx into the reserve: %v", err)
	}
	// A dba still gets in, through the reserve, with psql.
	dba := newPsql(t, env, "bob")
	dba.token = env.Token(t, "bob", "dba")
	if out := dba.ok("-c", "SELECT 41 + 1"); strings.TrimSpace(out) != "42" {
		t.Errorf("dba through the reserve: %q", out)
	}
}

// TestSessionOpenRateWithRealClients: a principal that closes and reopens
// sessions in a loop is refused past its burst, with a hint, while others
// open theirs; and its refusals, like refused tokens, gate its address
// before TLS until the window passes.
func TestSessionOpenRateWithRealClients(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{Policy: pgfiltertest.DefaultPolicy(t), Sessions: config.Sessions{
		OpenRate: config.SessionOpenRate{PerSecond: 0.001, Burst: 3},
	}})
	ctx := testCtx(t)
	for range 3 {
		if err := connect(t, env, "alice").Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, err := pgx.Connect(ctx, env.ConnString("alice", env.Token(t, "alice", "agents")))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "53300" || !strings.Contains(pe.Message, "alice is opening sessions too fast: 0.001 a second are allowed, after 3 at once") ||
		!strings.Contains(pe.Hint, "Try again in") {
		t.Fatalf("pgx past alice's burst: %v", err)
	}
	r := newPsql(t, env, "alice").run(nil, "-c", "SELECT 1")
	if r.code == 0 || !strings.Contains(r.stderr, "opening sessions too fast") {
		t.Errorf("psql past alice's burst: %s", r)
	}
	// Another principal has a bucket of its own.
	dba := newPsql(t, env, "bob")
	dba.token = env.Token(t, "bob", "dba")
	if out := dba.ok("-c", "SELECT 41 + 1"); strings.TrimSpace(out) != "42" {
		t.Errorf("bob beside alice: %q", out)
	}
	// alice retrying in a loop: past the gate's burst her address is
	// refused before TLS, then let in again once the window has passed.
	gated := false
	for i := 0; i < 200 && !gated; i++ {
		_, err := pgx.Connect(ctx, env.ConnString("alice", env.Token(t, "alice", "agents")))
		switch {
		case err == nil:
			t.Fatalf("attempt %d: alice got past her rate", i)
		case strings.Contains(err.Error(), "refused TLS"), errors.As(err, &pe) && strings.Contains(pe.Message, "too many refused connections"):
			gated = true
		case !errors.As(err, &pe) || !strings.Contains(pe.Message, "opening sessions too fast"):
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if !gated {
		t.Fatal("200 refusals in a row, and the address is not gated")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := pgx.Connect(ctx, env.ConnString("bob", env.Token(t, "bob", "dba")))
		if err == nil {
			_ = c.Close(ctx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob still refused after the gate's window: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClassifierBoundsWithRealClients(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{Policy: pgfiltertest.DefaultPolicy(t)})
	ctx := testCtx(t)
	list := "SELECT " + strings.Repeat("1,", 100000) + "1"
	c := connect(t, env, "alice")
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeDescribeExec} {
		_, err := c.Exec(ctx, list, mode)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "54001" || !strings.Contains(pe.Message, "more than 1664 items") || !strings.Contains(pe.Message, "decision dec_") {
			t.Errorf("pgx %v: 200 KB SELECT list: %v", mode, err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
			t.Fatalf("pgx %v: the session did not survive: %v", mode, err)
		}
	}
	dir := t.TempDir()
	p := newPsql(t, env, "alice")
	for name, q := range map[string]string{
		"list": list + ";\nSELECT 'still here';\n",
		"size": "SELECT '" + strings.Repeat("x", sqlclass.DefaultMaxBytes+128<<10) + "';\n",
	} {
		f := filepath.Join(dir, name+".sql")
		if err := os.WriteFile(f, []byte(q), 0o600); err != nil {
			t.Fatal(err)
		}
		r := p.run(nil, "-f", f)
		if !strings.Contains(r.stderr, "54001") && !strings.Contains(r.stderr, "statement too complex") {
			t.Errorf("psql %s: %s", name, r)
		}
		if name == "list" && !strings.Contains(r.stdout, "still here") {
			t.Errorf("psql %s: the session did not go on: %s", name, r)
		}
	}
}
