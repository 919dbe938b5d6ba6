package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/internal/pgcluster"
)

// parkedPsql is a psql whose statement waits for approval.
type parkedPsql struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	err            error
}

func (p *parkedPsql) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatalf("psql never finished; stderr:\n%s", p.stderr)
	}
}

// TestApprovalsEndToEnd drives approvals the way people do: an agent's
// psql write waits for approval; a dba lists, shows and approves or denies
// it with the custos CLI; custos restarts with a request pending. Each
// outcome is checked in the database itself.
func TestApprovalsEndToEnd(t *testing.T) {
	t.Parallel()
	bin := buildCustos(t, t.TempDir())
	binDir, _ := pgcluster.FindBinDir()
	psqlBin := findPgProgram(t, binDir, "psql")
	base, err := os.MkdirTemp("", "custos-e2e-approvals-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(base, "data")
	p := startDev(t, bin, dataDir)
	vars := p.waitEnv(t, dataDir)

	mint := func(t *testing.T, sub string, groups string) string {
		t.Helper()
		r := run(t, clientEnviron(), nil, bin, "token", "--data-dir", dataDir, "--sub", sub, "--groups", groups)
		if r.code != 0 {
			t.Fatalf("custos token: %s", r)
		}
		return strings.TrimSpace(r.stdout)
	}
	cli := func(t *testing.T, token string, args ...string) result {
		t.Helper()
		return run(t, clientEnviron("CUSTOS_ADMIN_URL="+vars["CUSTOS_ADMIN_URL"], "CUSTOS_TOKEN="+token), nil,
			bin, append([]string{"approvals"}, args...)...)
	}
	startPsql := func(t *testing.T, sql string) *parkedPsql {
		t.Helper()
		conn := fmt.Sprintf("host=%s port=%s dbname=%s user=alice sslmode=verify-full sslrootcert=%s",
			vars["CUSTOS_PG_HOST"], vars["CUSTOS_PG_PORT"], vars["CUSTOS_DATABASE"], vars["CUSTOS_CA_FILE"])
		pp := &parkedPsql{stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
		pp.cmd = exec.Command(psqlBin, "-X", "--no-password", "-v", "ON_ERROR_STOP=1", "-d", conn, "-c", sql)
		pp.cmd.Env = clientEnviron("PGPASSWORD=" + mint(t, "alice", "agents"))
		pp.cmd.Stdout, pp.cmd.Stderr = pp.stdout, pp.stderr
		if err := pp.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			pp.err = pp.cmd.Wait()
			close(pp.done)
		}()
		t.Cleanup(func() {
			_ = pp.cmd.Process.Kill()
			<-pp.done
		})
		return pp
	}
	bob := mint(t, "bob", "dba")

	// pending waits for alice's request to be listed and returns its id.
	pending := func(t *testing.T, summaryHas string, pp *parkedPsql) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := cli(t, bob, "list", "--json")
			if r.code != 0 {
				t.Fatalf("approvals list: %s", r)
			}
			var reqs []struct {
				ID        string `json:"id"`
				Summary   string `json:"summary"`
				State     string `json:"state"`
				Requester struct {
					Sub string `json:"sub"`
				} `json:"requester"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &reqs); err != nil {
				t.Fatalf("approvals list --json: %v\n%s", err, r.stdout)
			}
			for _, q := range reqs {
				if q.Requester.Sub == "alice" && q.State == "pending" && strings.Contains(q.Summary, summaryHas) {
					return q.ID
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no pending request of alice's like %q: %s\npsql stderr: %s", summaryHas, r.stdout, pp.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	db := func(t *testing.T) *pgx.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, vars["CUSTOS_UPSTREAM_DSN"])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	holder := func(t *testing.T, id int) string {
		t.Helper()
		var h string
		err := db(t).QueryRow(context.Background(), "SELECT coalesce((SELECT holder FROM cards WHERE id = $1), '<none>')", id).Scan(&h)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	t.Run("approved", func(t *testing.T) {
		before := holder(t, 1)
		pp := startPsql(t, "UPDATE cards SET holder = 'Approved Holder' WHERE id = 1")
		id := pending(t, "UPDATE", pp)
		if got := holder(t, 1); got != before {
			t.Fatalf("holder changed to %q before approval", got)
		}
		r := cli(t, bob, "show", id)
		if r.code != 0 || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "UPDATE") || !strings.Contains(r.stdout, "alice") {
			t.Fatalf("approvals show: %s", r)
		}
		// alice may be a dba too: she still cannot approve her own request.
		if r := cli(t, mint(t, "alice", "dba"), "approve", id); r.code == 0 {
			t.Fatalf("self-approval succeeded: %s", r)
		}
		if r := cli(t, bob, "approve", id, "--reason", "change 7"); r.code != 0 {
			t.Fatalf("approvals approve: %s", r)
		}
		pp.wait(t)
		if pp.err != nil || !strings.Contains(pp.stdout.String(), "UPDATE 1") {
			t.Fatalf("approved psql: %v\nstdout: %s\nstderr: %s", pp.err, pp.stdout, pp.stderr)
		}
		if !strings.Contains(pp.stderr.String(), "NOTICE:  custos: approval "+id+" required from dba") {
			t.Errorf("psql did not show the approval notice: %s", pp.stderr)
		}
		if got := holder(t, 1); got != "Approved Holder" {
			t.Fatalf("holder = %q after the approved update", got)
		}
		if r := cli(t, bob, "list", "--state", "consumed", "--json"); r.code != 0 || !strings.Contains(r.stdout, id) {
			t.Fatalf("the approval is not listed as used: %s", r)
		}
	})

	t.Run("denied", func(t *testing.T) {
		pp := startPsql(t, "DELETE FROM cards WHERE id = 2")
		id := pending(t, "DELETE", pp)
		if r := cli(t, bob, "deny", id, "--reason", "not in the change window"); r.code != 0 {
			t.Fatalf("approvals deny: %s", r)
		}
		pp.wait(t)
		if pp.err == nil || !strings.Contains(pp.stderr.String(), "denied by bob: not in the change window") {
			t.Fatalf("denied psql: %v\nstderr: %s", pp.err, pp.stderr)
		}
		if got := holder(t, 2); got == "<none>" {
			t.Fatal("the denied delete ran")
		}
	})

	t.Run("restart with a pending request", func(t *testing.T) {
		pp := startPsql(t, "INSERT INTO customers (name, email) VALUES ('Parked Customer', 'parked@example.com')")
		id := pending(t, "INSERT", pp)
		p.stop(t)
		pp.wait(t)
		if err := os.Remove(filepath.Join(dataDir, "dev.env")); err != nil {
			t.Fatal(err)
		}
		if pp.err == nil {
			t.Fatalf("psql succeeded although custos stopped: %s", pp.stdout)
		}
		p = startDev(t, bin, dataDir)
		vars = p.waitEnv(t, dataDir)
		bob = mint(t, "bob", "dba") // the dev issuer moved with the admin port
		r := cli(t, bob, "show", id, "--json")
		var req struct {
			State string `json:"state"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &req) != nil || req.State != "withdrawn" {
			t.Fatalf("request after restart: %s", r)
		}
		if r := cli(t, bob, "approve", id); r.code == 0 {
			t.Fatalf("a withdrawn request was approved: %s", r)
		}
		var n int
		if err := db(t).QueryRow(context.Background(), "SELECT count(*) FROM customers WHERE name = 'Parked Customer'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("the parked insert ran: %d rows, %v", n, err)
		}
	})
}
