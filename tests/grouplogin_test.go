package tests

import (
	"strings"
	"testing"

	"github.com/custos-dev/custos/internal/devenv"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// psql through a proxy whose sessions log in as their group's login: the
// upstream session names its role and principal, and psql cannot change
// either.
func TestPsqlGroupLogin(t *testing.T) {
	t.Parallel()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := pgfiltertest.Start(t, pgfiltertest.Options{Masker: m, Policy: pgfiltertest.DefaultPolicy(t), GroupLogins: true})
	p := newPsql(t, env, "alice")

	got := p.ok("-F", ",", "-c", "SELECT current_user, session_user, current_setting('custos.principal'), current_setting('custos.issuer')")
	if want := devenv.AgentRole + "," + devenv.AgentRole + ",alice," + env.IssuerURL + "\n"; got != want {
		t.Errorf("upstream identity: got %q, want %q", got, want)
	}
	for _, sql := range []string{
		"SET custos.principal = 'mallory'",
		"RESET custos.principal",
		"SELECT set_config('custos.principal', 'mallory', false)",
		"SET ROLE " + devenv.AgentWriteRole,
	} {
		r := p.run(nil, "-v", "ON_ERROR_STOP=1", "-c", sql, "-c", "SELECT 'after'")
		if r.code == 0 || !strings.Contains(r.stderr, "decision id: ") || strings.Contains(r.stdout, "after") {
			t.Errorf("psql %q: want a refusal with a decision id that stops the script: %s", sql, r)
		}
	}
	// In one session the refusal keeps the session, and nothing changed.
	r := p.run(nil, "-A", "-t", "-c", "SET custos.principal = 'mallory'",
		"-c", "SELECT current_setting('custos.principal') || ' ' || current_user")
	if r.stdout != "alice "+devenv.AgentRole+"\n" || !strings.Contains(r.stderr, "decision id: ") {
		t.Errorf("after a refused SET: %s", r)
	}
}
