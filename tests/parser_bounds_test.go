package tests

// custos parses every statement in-process, with PostgreSQL's parser in C.
// These tests send `custos dev` the statements built to crash or exhaust
// it — about 200 KB of nesting of each kind PostgreSQL's grammar has, and
// lists far past what the classifier bounds — from an agent, over the
// simple and the extended protocol, while another principal works in
// another session; custos must refuse each with 54001 and a decision id,
// keep the same process and the same session, and record each refusal. A
// token with no groups gets no session at all (no group has a login).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/audit"
)

// hostileStatements are the worst inputs, each about 200 KB or more.
func hostileStatements() map[string]string {
	const n = 100000
	rep := strings.Repeat
	return map[string]string{
		"parentheses":        "SELECT " + rep("(", n) + "1" + rep(")", n),
		"binary operators":   "SELECT " + rep("1+", n) + "1",
		"unary minus":        "SELECT " + rep("- ", n) + "1",
		"not":                "SELECT " + rep("NOT ", n/2) + "true",
		"subqueries":         rep("SELECT * FROM (", n/15) + "SELECT 1" + rep(") s", n/15),
		"scalar subqueries":  rep("SELECT (", n/8) + "SELECT 1" + rep(")", n/8),
		"json paths":         "SELECT '{}'::jsonb" + rep("->'b'", n/5),
		"json path operator": "SELECT '{}'::jsonb" + rep("#>'{b}'", n/7),
		"arrays":             "SELECT ARRAY" + rep("[", n) + "1" + rep("]", n),
		"case":               "SELECT " + rep("CASE WHEN true THEN ", n/20) + "1" + rep(" END", n/20),
		"casts":              "SELECT 1" + rep("::int", n/5),
		"function calls":     "SELECT " + rep("lower(", n/6) + "'x'" + rep(")", n/6),
		"unions":             "SELECT 1" + rep(" UNION SELECT 1", n/15),
		"select list":        "SELECT " + rep("1,", n) + "1",
		"tokens":             "SELECT 1 WHERE 1 IN (" + rep("1,", 600000) + "1)",
	}
}

func TestParserBoundsKeepCustosUp(t *testing.T) {
	t.Parallel()
	bin := buildCustos(t, t.TempDir())
	dataDir := devDataDir(t, "custos-e2e-bounds-")
	p := startDev(t, bin, dataDir)
	vars := p.waitEnv(t, dataDir)
	pid := p.cmd.Process.Pid
	connect := func(t *testing.T, user, groups string) (*pgx.Conn, error) {
		t.Helper()
		token := mintToken(t, bin, dataDir, user, groups)
		return pgx.Connect(testCtx(t), fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s sslmode=verify-full sslrootcert=%s",
			vars["CUSTOS_PG_HOST"], vars["CUSTOS_PG_PORT"], vars["CUSTOS_DATABASE"], user, token, vars["CUSTOS_CA_FILE"]))
	}
	conn := func(t *testing.T, user, groups string) *pgx.Conn {
		t.Helper()
		c, err := connect(t, user, groups)
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}

	// Another principal's work, all along.
	other := conn(t, "bob", "dba")
	stop := make(chan struct{})
	var otherDone sync.WaitGroup
	var otherOK, otherFailed atomic.Int64
	var otherErr atomic.Value
	otherDone.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			if err := other.QueryRow(context.Background(), "SELECT count(*) FROM cards").Scan(&n); err != nil {
				otherFailed.Add(1)
				otherErr.Store(err.Error())
				return
			}
			otherOK.Add(1)
		}
	})

	var pe *pgconn.PgError
	if _, err := connect(t, "nobody", ""); !errors.As(err, &pe) || pe.Code != "28000" {
		t.Errorf("a token with no groups: %v, want no session (28000)", err)
	}
	refusals := 0
	for _, who := range []struct{ user, groups string }{{"alice", "agents"}, {"carol", "agents"}} {
		c := conn(t, who.user, who.groups)
		for name, q := range hostileStatements() {
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeDescribeExec} {
				_, err := c.Exec(testCtx(t), q, mode)
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "54001" || !strings.Contains(pe.Message, "statement too complex") ||
					!strings.Contains(pe.Message, "decision dec_") {
					t.Errorf("%s, %s, %v: %v, want 54001 with a decision id", who.user, name, mode, err)
					continue
				}
				refusals++
				if p.cmd.ProcessState != nil || p.cmd.Process.Pid != pid {
					t.Fatalf("custos is gone after %s: %s", name, p.out.tail(20))
				}
			}
		}
		// The same session goes on.
		var v int
		if err := c.QueryRow(testCtx(t), "SELECT 1").Scan(&v); err != nil || v != 1 {
			t.Errorf("%s's session after the refusals: %v", who.user, err)
		}
	}
	close(stop)
	otherDone.Wait()
	if otherFailed.Load() > 0 || otherOK.Load() == 0 {
		t.Errorf("the other session: %d statements ran, %d failed (%v)", otherOK.Load(), otherFailed.Load(), otherErr.Load())
	}
	select {
	case <-p.done:
		t.Fatalf("custos exited: %v\n%s", p.err, p.out.tail(20))
	default:
	}
	resp, err := http.Get(vars["CUSTOS_ADMIN_URL"] + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	_ = resp.Body.Close()

	// Each refusal is recorded, with its decision id.
	p.stop(t)
	recorded := 0
	for _, r := range journalRecords(t, dataDir) {
		if r.Name == audit.EventStatement && attrString(&r, audit.AttrOutcome) == string(audit.OutcomeDenied) &&
			attrString(&r, audit.AttrErrorType) == "54001" && strings.HasPrefix(attrString(&r, audit.AttrDecisionID), "dec_") &&
			attrString(&r, audit.AttrDBQueryText) != "" {
			recorded++
		}
	}
	if recorded < refusals {
		t.Errorf("%d refusals, %d recorded", refusals, recorded)
	}
	t.Logf("%d hostile statements refused (%d recorded); the other session ran %d statements meanwhile", refusals, recorded, otherOK.Load())
}
