package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/custos-dev/custos/internal/devenv"
	"github.com/custos-dev/custos/internal/pgcluster"
)

// Generous bounds: they catch hangs, they do not measure speed.
const (
	devStartTimeout = 2 * time.Minute
	devStopTimeout  = 45 * time.Second
)

// buildCustos builds the custos binary into dir.
func buildCustos(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, statErr := os.Stat(goBin); os.Getenv("GOROOT") == "" || statErr != nil {
			t.Fatalf("the go command is not in PATH (%v) and GOROOT does not name it", err)
		}
	}
	bin := filepath.Join(dir, "custos")
	// A cold build cache makes this the slowest step of the package.
	r := runTimeout(t, 10*time.Minute, os.Environ(), nil, goBin, "build", "-C", "..", "-o", bin, "./cmd/custos")
	if r.code != 0 {
		t.Fatalf("go build ./cmd/custos: %s", r)
	}
	return bin
}

// lockedBuffer collects a process's output for failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail is the last n lines of the output, where a failure says why.
func (b *lockedBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// devProcess is a running `custos dev` (or another process of the tests).
type devProcess struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // cmd.Wait's result, valid once done is closed
}

// startDev starts `custos dev` on free loopback ports with the client
// environment plus env (KEY=value); it is stopped in t.Cleanup.
func startDev(t *testing.T, bin, dataDir string, env ...string) *devProcess {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--data-dir", dataDir,
		"--pg-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
	cmd.Env = clientEnviron(env...)
	return startProcess(t, "custos dev", cmd, devStopTimeout)
}

// startProcess starts cmd with its output collected, and in t.Cleanup
// interrupts it (killing it after stopTimeout) unless it has exited.
func startProcess(t *testing.T, what string, cmd *exec.Cmd, stopTimeout time.Duration) *devProcess {
	t.Helper()
	p := &devProcess{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = devProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitEnv waits for dev.env in dataDir and returns its variables.
func (p *devProcess) waitEnv(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	path := filepath.Join(dataDir, "dev.env")
	deadline := time.Now().Add(devStartTimeout)
	for {
		select {
		case <-p.done:
			t.Fatalf("custos dev exited (%v) before writing %s; its output ends with:\n%s", p.err, path, p.out.tail(15))
		default:
		}
		if data, err := os.ReadFile(path); err == nil {
			vars, err := parseEnvFile(data)
			// The file may be caught half written: the last variable says it is whole.
			if err == nil && vars["CUSTOS_UPSTREAM_DSN"] != "" {
				return vars
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete %s within %v; custos dev output ends with:\n%s", path, devStartTimeout, p.out.tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGINT and waits for a clean exit.
func (p *devProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatalf("SIGINT: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(devStopTimeout):
		t.Fatalf("custos dev did not exit within %v of SIGINT; its output ends with:\n%s", devStopTimeout, p.out.tail(30))
	}
	if p.err != nil {
		t.Fatalf("custos dev exited with %v after SIGINT, want status 0; its output ends with:\n%s", p.err, p.out.tail(30))
	}
}

// devDataDir makes a data dir for `custos dev`, removed after the test.
// The demo PostgreSQL runs as the postgres user when the test runs as
// root: every directory above the data dir must be traversable by it.
func devDataDir(t *testing.T, prefix string) string {
	t.Helper()
	base, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(base, "data")
}

// mintToken mints a dev token for sub in groups with `custos token`.
func mintToken(t *testing.T, bin, dataDir, sub, groups string) string {
	t.Helper()
	r := run(t, clientEnviron(), nil, bin, "token", "--data-dir", dataDir, "--sub", sub, "--groups", groups)
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || strings.Count(tok, ".") != 2 {
		t.Fatalf("custos token: %s", r)
	}
	return tok
}

// parseEnvFile reads `export KEY='value'` lines as a POSIX shell would
// (single quotes, with '\” for a quote inside).
func parseEnvFile(data []byte) (map[string]string, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, raw, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("not KEY=value: %q", line)
		}
		var val strings.Builder
		for i := 0; i < len(raw); i++ {
			switch raw[i] {
			case '\'':
				end := strings.IndexByte(raw[i+1:], '\'')
				if end < 0 {
					return nil, fmt.Errorf("unterminated quote: %q", line)
				}
				val.WriteString(raw[i+1 : i+1+end])
				i += end + 1
			case '\\':
				if i+1 < len(raw) {
					i++
					val.WriteByte(raw[i])
				}
			default:
				val.WriteByte(raw[i])
			}
		}
		vars[key] = val.String()
	}
	return vars, sc.Err()
}

// httpGet returns the status and body of url.
func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp.StatusCode, string(body)
}

// refuses reports whether nothing accepts connections on addr any more.
func refuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

// TestCustosDev runs the binary the way the README tells a user to: start
// `custos dev`, source dev.env, mint a token, query with psql, stop it with
// Ctrl-C, start it again on the same data dir.
func TestCustosDev(t *testing.T) {
	t.Parallel()
	bin := buildCustos(t, t.TempDir())
	binDir, _ := pgcluster.FindBinDir()
	psqlBin := findPgProgram(t, binDir, "psql")

	dataDir := devDataDir(t, "custos-e2e-dev-")

	t.Run("token before dev", func(t *testing.T) {
		r := run(t, clientEnviron(), nil, bin, "token", "--data-dir", dataDir, "--sub", "alice")
		if r.code == 0 || !strings.Contains(r.stderr, "custos dev") {
			t.Errorf("token without a dev issuer: want a failure that says to run custos dev: %s", r)
		}
	})

	mint := func(t *testing.T, sub string) string { return mintToken(t, bin, dataDir, sub, "agents") }
	psql := func(t *testing.T, vars map[string]string, user, token string, args ...string) result {
		t.Helper()
		conn := fmt.Sprintf("host=%s port=%s dbname=%s user=%s sslmode=verify-full sslrootcert=%s",
			vars["CUSTOS_PG_HOST"], vars["CUSTOS_PG_PORT"], vars["CUSTOS_DATABASE"], user, vars["CUSTOS_CA_FILE"])
		full := append([]string{"-X", "--no-password", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-d", conn}, args...)
		return run(t, clientEnviron("PGPASSWORD="+token), nil, psqlBin, full...)
	}
	upstreamAddr := func(t *testing.T, vars map[string]string) string {
		t.Helper()
		u, err := url.Parse(vars["CUSTOS_UPSTREAM_DSN"])
		if err != nil || u.Host == "" {
			t.Fatalf("CUSTOS_UPSTREAM_DSN %q: %v", vars["CUSTOS_UPSTREAM_DSN"], err)
		}
		return u.Host
	}

	// First run: a fresh data dir.
	p := startDev(t, bin, dataDir)
	vars := p.waitEnv(t, dataDir)
	for _, k := range []string{"CUSTOS_PG_ADDR", "CUSTOS_PG_HOST", "CUSTOS_PG_PORT", "CUSTOS_GRPC_ADDR", "CUSTOS_ADMIN_URL", "CUSTOS_ISSUER", "CUSTOS_DATABASE", "CUSTOS_CA_FILE", "CUSTOS_UPSTREAM_DSN",
		"CUSTOS_GRPC_CA_FILE", "CUSTOS_ENVOY_CERT_FILE", "CUSTOS_ENVOY_KEY_FILE"} {
		if vars[k] == "" {
			t.Errorf("dev.env lacks %s", k)
		}
	}
	if vars["CUSTOS_PG_ADDR"] != net.JoinHostPort(vars["CUSTOS_PG_HOST"], vars["CUSTOS_PG_PORT"]) || vars["CUSTOS_DATABASE"] != "payments" {
		t.Errorf("dev.env: %v", vars)
	}
	admin := vars["CUSTOS_ADMIN_URL"]
	firstIssuer := vars["CUSTOS_ISSUER"]
	firstUpstream := upstreamAddr(t, vars)

	t.Run("admin endpoints", func(t *testing.T) {
		if code, body := httpGet(t, admin+"/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("/healthz: %d %q", code, body)
		}
		// Ready once serving; dev.env is written just before that.
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body := httpGet(t, admin+"/readyz")
			if code == http.StatusOK && body == "ready\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz: %d %q", code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
		code, body := httpGet(t, admin+"/metrics")
		if code != http.StatusOK || !strings.Contains(body, "custos_pg_sessions_active 0") || !strings.Contains(body, "go_goroutines") {
			t.Errorf("/metrics: %d\n%.2000s", code, body)
		}
		if code, body := httpGet(t, firstIssuer+"/.well-known/openid-configuration"); code != http.StatusOK || !strings.Contains(body, firstIssuer) {
			t.Errorf("dev issuer discovery: %d %q", code, body)
		}
	})
	t.Run("grpc health", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(dialEnvoy(t, vars, true)).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("grpc health: %v %v", resp, err)
		}
		// Without Envoy's client certificate, or in plaintext: refused.
		if _, err := healthpb.NewHealthClient(dialEnvoy(t, vars, false)).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("grpc health without a client certificate: %v", err)
		}
		cc, err := grpc.NewClient(vars["CUSTOS_GRPC_ADDR"], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("grpc health in plaintext: %v", err)
		}
	})
	t.Run("no pprof on admin", func(t *testing.T) {
		for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=2", "/debug/pprof/heap"} {
			if code, _ := httpGet(t, admin+p); code != http.StatusNotFound {
				t.Errorf("%s on the admin listener: %d, want 404", p, code)
			}
		}
	})

	firstToken := mint(t, "alice")
	t.Run("psql", func(t *testing.T) {
		r := psql(t, vars, "alice", firstToken, "-c", "SELECT pan FROM cards ORDER BY id")
		if r.code != 0 {
			t.Fatalf("psql through custos dev: %s", r)
		}
		// The demo's test PANs come back masked to their last four.
		if pans := strings.Fields(r.stdout); len(pans) != 8 || pans[0] != "************4242" || pans[1] != "************4444" {
			t.Errorf("cards: %q", r.stdout)
		}
		for _, pan := range []string{"4242424242424242", "5555555555554444", "378282246310005"} {
			if strings.Contains(r.stdout, pan) {
				t.Errorf("full PAN %s reached the client", pan)
			}
		}
		// The dev database gives agents their own login, SELECT only, and
		// the upstream session names the principal.
		r = psql(t, vars, "alice", firstToken, "-c", "SELECT current_user || ',' || current_setting('custos.principal')")
		if want := devenv.AgentRole + ",alice\n"; r.code != 0 || r.stdout != want {
			t.Errorf("upstream identity through custos dev: %s, want %q", r, want)
		}
		// The default policy refuses DDL to agents, and nothing is created.
		r = psql(t, vars, "alice", firstToken, "-c", "CREATE TABLE dev_e2e_persist (v text)")
		if r.code == 0 || !strings.Contains(r.stderr, "DDL (CREATE TABLE) is not allowed for agents") || !strings.Contains(r.stderr, "decision dec_") {
			t.Fatalf("DDL as an agent: %s", r)
		}
		// The operator writes past custos with the upstream DSN.
		r = run(t, clientEnviron(), nil, psqlBin, "-X", "-d", vars["CUSTOS_UPSTREAM_DSN"],
			"-c", "CREATE TABLE dev_e2e_persist (v text)",
			"-c", "INSERT INTO dev_e2e_persist VALUES ('written before restart')",
			"-c", "GRANT SELECT ON dev_e2e_persist TO custos_gateway")
		if r.code != 0 {
			t.Fatalf("write: %s", r)
		}
		// The token is alice's: another user name is refused.
		if r := psql(t, vars, "mallory", firstToken, "-c", "SELECT 1"); r.code == 0 || !strings.Contains(r.stderr, "FATAL") {
			t.Errorf("alice's token as mallory: %s", r)
		}
		// The upstream DSN in dev.env is the demo's superuser, past custos.
		r = run(t, clientEnviron(), nil, psqlBin, "-X", "-A", "-t", "-d", vars["CUSTOS_UPSTREAM_DSN"], "-c", "SELECT current_user, count(*) FROM cards GROUP BY 1")
		if r.code != 0 || r.stdout != "postgres|8\n" {
			t.Errorf("upstream DSN: %s", r)
		}
		code, body := httpGet(t, admin+"/metrics")
		if code != http.StatusOK || !strings.Contains(body, `custos_pg_connections_total{outcome="established"}`) || !strings.Contains(body, `custos_pg_messages_total{direction="client_to_server"}`) {
			t.Errorf("/metrics after sessions: %d\n%.3000s", code, body)
		}
	})

	t.Run("sigint", func(t *testing.T) {
		p.stop(t)
		for name, addr := range map[string]string{"demo postgres": firstUpstream, "postgres listener": vars["CUSTOS_PG_ADDR"]} {
			if !refuses(addr) {
				t.Errorf("%s (%s) still accepts connections after custos dev exited", name, addr)
			}
		}
		if _, err := os.Stat(filepath.Join(dataDir, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("postmaster.pid left behind (%v): the demo PostgreSQL did not shut down cleanly", err)
		}
	})
	if t.Failed() {
		return
	}

	// Second run on the same data dir: new ports, same data.
	if err := os.Remove(filepath.Join(dataDir, "dev.env")); err != nil {
		t.Fatal(err)
	}
	p = startDev(t, bin, dataDir)
	vars = p.waitEnv(t, dataDir)
	if got := upstreamAddr(t, vars); got != firstUpstream {
		t.Logf("the demo PostgreSQL moved from %s to %s (its port was taken)", firstUpstream, got)
	}
	t.Run("restart keeps data", func(t *testing.T) {
		r := psql(t, vars, "alice", firstToken, "-c", "SELECT 1")
		switch {
		case vars["CUSTOS_ISSUER"] == firstIssuer && r.code != 0:
			t.Errorf("issuer URL unchanged (%s) but the earlier token is refused: %s", firstIssuer, r)
		case vars["CUSTOS_ISSUER"] != firstIssuer && r.code == 0:
			t.Errorf("a token from issuer %s was accepted by custos with issuer %s", firstIssuer, vars["CUSTOS_ISSUER"])
		}
		tok := mint(t, "alice")
		r = psql(t, vars, "alice", tok, "-c", "SELECT v FROM dev_e2e_persist", "-c", "SELECT count(*) FROM cards")
		if r.code != 0 || r.stdout != "written before restart\n8\n" {
			t.Errorf("after restart: %s", r)
		}
	})
	t.Run("second sigint", func(t *testing.T) {
		p.stop(t)
		if addr := upstreamAddr(t, vars); !refuses(addr) {
			t.Errorf("demo postgres (%s) still accepts connections", addr)
		}
	})
}
