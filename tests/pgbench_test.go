package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// TestPgbench runs pgbench's TPC-B-like transactions through the proxy with
// each query mode, plus a pipelined custom script. The tables are loaded
// directly into the upstream as the superuser (pgbench -i uses COPY FROM
// STDIN) and granted to the gateway role.
func TestPgbench(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	bin := pgProgram(t, env, "pgbench")

	r := run(t, clientEnviron(), nil, bin, "-i", "-s", "1", "-q", env.Cluster.DSN(pgfiltertest.Database))
	if r.code != 0 {
		t.Fatalf("pgbench -i against the upstream: %s", r)
	}
	superExec(t, env, "GRANT SELECT, INSERT, UPDATE ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO "+env.Resource.User)

	const clients, perClient = 2, 400
	pipelined := filepath.Join(t.TempDir(), "pipeline.sql")
	if err := os.WriteFile(pipelined, []byte(`\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
\startpipeline
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
\endpipeline
SELECT :aid AS checked \gset
`), 0o644); err != nil {
		t.Fatal(err)
	}
	token := env.Token(t, "bench", "agents")
	conn := proxyConnInfo(env, "bench", "application_name=custos-e2e-pgbench")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"simple", []string{"-M", "simple"}},
		{"extended", []string{"-M", "extended"}},
		{"prepared", []string{"-M", "prepared"}},
		{"select-only prepared", []string{"-M", "prepared", "-S"}},
		{"pipeline", []string{"-M", "prepared", "-f", pipelined}},
		// A new connection (token check, upstream login) per transaction.
		{"connect per transaction", []string{"-M", "extended", "-S", "-C"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// -n: the gateway role does not own the tables, so no vacuum.
			n := perClient
			if slices.Contains(tc.args, "-C") {
				n = 50
			}
			args := append([]string{"-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(clients), "-t", strconv.Itoa(n)}, tc.args...)
			r := run(t, clientEnviron("PGPASSWORD="+token), nil, bin, append(args, conn)...)
			if r.code != 0 {
				t.Fatalf("pgbench %v: %s", tc.args, r)
			}
			want := clients * n
			m := regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)/(\d+)$`).FindStringSubmatch(r.stdout)
			if m == nil || m[1] != strconv.Itoa(want) || m[2] != strconv.Itoa(want) {
				t.Errorf("want %d/%d transactions processed: %s", want, want, r)
			}
			if !regexp.MustCompile(`(?m)^number of failed transactions: 0 \(0\.000%\)$`).MatchString(r.stdout) {
				t.Errorf("want 0 failed transactions: %s", r)
			}
			if m := regexp.MustCompile(`(?m)^query mode: (\w+)$`).FindStringSubmatch(r.stdout); m == nil || m[1] != tc.args[1] {
				t.Errorf("query mode: %v", m)
			}
		})
	}
	// The TPC-B transactions did what they say: one history row each.
	var history int
	if err := connect(t, env, "alice").QueryRow(testCtx(t), "SELECT count(*) FROM pgbench_history").Scan(&history); err != nil {
		t.Fatal(err)
	}
	if want := 3 * clients * perClient; history != want {
		t.Errorf("pgbench_history has %d rows, want %d", history, want)
	}
}
