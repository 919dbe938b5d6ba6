package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/pgcluster"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
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
	dataDir := devDataDir(t, "custos-e2e-approvals-")
	p := startDev(t, bin, dataDir)
	vars := p.waitEnv(t, dataDir)

	mint := func(t *testing.T, sub string, groups string) string { return mintToken(t, bin, dataDir, sub, groups) }
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

// TestTwoCustosProcessesShareApprovals runs two `custos serve` processes
// on one PostgreSQL approval store: a write parked on the first is
// released by an approval sent to the second's admin API.
func TestTwoCustosProcessesShareApprovals(t *testing.T) {
	t.Parallel()
	bin := buildCustos(t, t.TempDir())
	cl, res := pgfiltertest.Upstream(t)
	ctx := testCtx(t)
	if err := cl.Exec(ctx, "postgres", "CREATE DATABASE custos_approvals_e2e"); err != nil {
		t.Fatal(err)
	}
	table := "replicas_e2e"
	if err := cl.Exec(ctx, pgfiltertest.Database, fmt.Sprintf(
		`CREATE TABLE %[1]s (id int PRIMARY KEY, v text); INSERT INTO %[1]s VALUES (1, 'before');
		GRANT ALL ON %[1]s TO %[2]s`, table, res.User)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	iss, err := devissuer.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/oidc/", http.StripPrefix("/oidc", iss.Handler()))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	if err := iss.SetURL(ts.URL + "/oidc"); err != nil {
		t.Fatal(err)
	}
	mint := func(sub string, groups ...string) string {
		tok, err := iss.Mint(devissuer.MintRequest{Subject: sub, Groups: groups})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	// Both replicas notify one webhook of the transitions they commit.
	var hookMu sync.Mutex
	hookEvents := map[string]string{} // event type -> approval id
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Event string `json:"event"`
			ID    string `json:"id"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Event != r.Header.Get("X-Custos-Event") {
			http.Error(w, "bad notification", http.StatusBadRequest)
			return
		}
		hookMu.Lock()
		hookEvents[body.Event] = body.ID
		hookMu.Unlock()
	}))
	t.Cleanup(hook.Close)

	type replica struct{ pgAddr, adminURL string }
	start := func(name string) replica {
		pgAddr, adminAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
		cfg := fmt.Sprintf(`
data_dir: %q
listeners:
  postgres: {address: %q}
  admin: {address: %q}
oidc:
  issuers:
    - url: %q
      audiences: [custos]
      algorithms: [ES256]
sessions:
  shutdown_grace: 2s
approvals:
  store: postgres
  postgres_dsn: {env: CUSTOS_APPROVALS_DSN}
  replica: %s
  webhooks: [{url: %q}]
resources:
  - name: %s
    address: %q
    database: %s
    user: %s
    password: {file: %q}
    tls: {mode: verify-full, ca_file: %q}
`, filepath.Join(dir, name), pgAddr, adminAddr, iss.URL(), name, hook.URL, res.Name, res.Address, res.Database, res.User, res.Password.File, res.TLS.CAFile)
		cfgFile := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", "--config", cfgFile)
		cmd.Env = clientEnviron("CUSTOS_APPROVALS_DSN=" + cl.DSN("custos_approvals_e2e"))
		proc := startProcess(t, "custos serve "+name, cmd, devStopTimeout)
		deadline := time.Now().Add(devStartTimeout)
		for {
			if resp, err := http.Get("http://" + adminAddr + "/readyz"); err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-proc.done:
				t.Fatalf("custos serve %s exited:\n%s", name, proc.out.tail(20))
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("custos serve %s not ready:\n%s", name, proc.out.tail(20))
			}
			time.Sleep(100 * time.Millisecond)
		}
		return replica{pgAddr: pgAddr, adminURL: "http://" + adminAddr}
	}
	a, b := start("replica-a"), start("replica-b")

	host, port, _ := net.SplitHostPort(a.pgAddr)
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=alice password=%s dbname=%s sslmode=disable",
		host, port, mint("alice", "agents"), res.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "UPDATE "+table+" SET v = 'approved through b' WHERE id = 1")
		done <- err
	}()

	bob := mint("bob", "dba")
	cli := func(args ...string) result {
		return run(t, clientEnviron("CUSTOS_ADMIN_URL="+b.adminURL, "CUSTOS_TOKEN="+bob), nil, bin, append([]string{"approvals"}, args...)...)
	}
	var id string
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		r := cli("list", "--json")
		var reqs []struct {
			ID     string `json:"id"`
			Holder string `json:"holder"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &reqs) != nil {
			t.Fatalf("approvals list on b: %s", r)
		}
		for _, q := range reqs {
			if q.Holder == "replica-a" {
				id = q.ID
			}
		}
		if id == "" && time.Now().After(deadline) {
			t.Fatalf("replica b never listed the request parked on a: %s", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := cli("approve", id); r.code != 0 {
		t.Fatalf("approve on b: %s", r)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("update parked on a: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the approval on b never released the statement parked on a")
	}
	up, err := pgx.Connect(ctx, cl.DSN(pgfiltertest.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close(context.Background())
	var v string
	if err := up.QueryRow(ctx, "SELECT v FROM "+table+" WHERE id = 1").Scan(&v); err != nil || v != "approved through b" {
		t.Fatalf("v = %q, %v", v, err)
	}
	// requested and consumed come from a, decided from b.
	deadline = time.Now().Add(30 * time.Second)
	for {
		hookMu.Lock()
		got := maps.Clone(hookEvents)
		hookMu.Unlock()
		if got["requested"] == id && got["decided"] == id && got["consumed"] == id {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook events: %v, want requested, decided and consumed for %s", got, id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
