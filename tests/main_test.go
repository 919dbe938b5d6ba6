package tests

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func TestMain(m *testing.M) { pgfiltertest.Main(m) }

// cmdTimeout bounds one client program run; it is a hang detector, not a
// performance assertion.
const cmdTimeout = 2 * time.Minute

// result is what a client program did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// clientEnviron is the test process environment without the libpq
// variables a developer may have set (PGHOST, PGSSLMODE...), plus vars.
func clientEnviron(vars ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	// Never read the developer's ~/.pgpass, ~/.psqlrc or service file.
	env = append(env, "PGPASSFILE="+os.DevNull, "PGSERVICEFILE="+os.DevNull, "PSQLRC="+os.DevNull, "PGCONNECT_TIMEOUT=20")
	return append(env, vars...)
}

// run runs a program to completion and returns what it printed; only a
// failure to start it (or a hang) fails the test.
func run(t testing.TB, env []string, stdin []byte, name string, args ...string) result {
	t.Helper()
	return runTimeout(t, cmdTimeout, env, stdin, name, args...)
}

func runTimeout(t testing.TB, timeout time.Duration, env []string, stdin []byte, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: no exit within %v\n%s", name, strings.Join(args, " "), timeout, r)
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// pgProgram finds a PostgreSQL client program: next to the server binaries
// the cluster runs from, then in PATH.
func pgProgram(t testing.TB, env *pgfiltertest.Env, name string) string {
	t.Helper()
	return findPgProgram(t, env.Cluster.BinDir(), name)
}

func findPgProgram(t testing.TB, binDir, name string) string {
	t.Helper()
	if binDir != "" {
		p := filepath.Join(binDir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found next to the PostgreSQL server binaries (%q) nor in PATH: run `make deps`", name, binDir)
	}
	return p
}

// proxyConnInfo is a libpq connection string to the proxy as user, with
// the password left to PGPASSWORD and the proxy's certificate verified.
func proxyConnInfo(env *pgfiltertest.Env, user string, extra ...string) string {
	s := fmt.Sprintf("host=%s port=%s dbname=%s user=%s sslmode=verify-full sslrootcert=%s",
		env.Host, env.Port, pgfiltertest.Database, user, env.CertFile)
	for _, kv := range extra {
		s += " " + kv
	}
	return s
}

// psqlClient runs psql through one proxy as one principal.
type psqlClient struct {
	t     testing.TB
	bin   string
	conn  string
	token string
}

func newPsql(t testing.TB, env *pgfiltertest.Env, user string) *psqlClient {
	t.Helper()
	return &psqlClient{
		t:     t,
		bin:   pgProgram(t, env, "psql"),
		conn:  proxyConnInfo(env, user, "application_name=custos-e2e-psql"),
		token: env.Token(t, user, "agents"),
	}
}

// run runs psql without reading any rc file; args follow the connection.
func (p *psqlClient) run(stdin []byte, args ...string) result {
	p.t.Helper()
	full := append([]string{"-X", "--no-password", "-d", p.conn}, args...)
	return run(p.t, clientEnviron("PGPASSWORD="+p.token), stdin, p.bin, full...)
}

// ok runs psql with ON_ERROR_STOP, unaligned tuples-only output, and fails
// the test unless it exits 0; it returns stdout.
func (p *psqlClient) ok(args ...string) string {
	p.t.Helper()
	r := p.run(nil, append([]string{"-v", "ON_ERROR_STOP=1", "-A", "-t"}, args...)...)
	if r.code != 0 {
		p.t.Fatalf("psql %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// connect opens a pgx connection through the proxy.
func connect(t testing.TB, env *pgfiltertest.Env, user string, extra ...string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(env.ConnString(user, env.Token(t, user, "agents"), extra...))
	if err != nil {
		t.Fatal(err)
	}
	return connectConfig(t, cfg)
}

func connectConfig(t testing.TB, cfg *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect through the proxy: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// testCtx is a context bounded well beyond what the step needs.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// superExec runs SQL on the upstream as the superuser, past the proxy.
func superExec(t testing.TB, env *pgfiltertest.Env, sql string) {
	t.Helper()
	if err := env.Cluster.Exec(testCtx(t), pgfiltertest.Database, sql); err != nil {
		t.Fatalf("upstream (superuser): %v\n%s", err, sql)
	}
}

func md5Sum(b []byte) [md5.Size]byte { return md5.Sum(b) }

// md5Series is md5(string_agg(g::text, ',')) over generate_series(1, n).
func md5Series(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(i))
	}
	return fmt.Sprintf("%x", md5.Sum([]byte(b.String())))
}
