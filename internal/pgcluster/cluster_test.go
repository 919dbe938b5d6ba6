package pgcluster

import (
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/custos-dev/custos/internal/selfsigned"
)

// testBaseDir returns a fresh directory the server account can traverse.
func testBaseDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "custos-pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	return base
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", redact(dsn), err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "<unparsable DSN>"
	}
	return u.Redacted()
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(t.Context(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// withUser returns dsn with other credentials and extra query parameters.
func withUser(t *testing.T, dsn, user, password string, params map[string]string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func TestStartPlain(t *testing.T) {
	t.Parallel()
	// md5 as the server default shows both that Settings apply and that
	// CreateRole still stores SCRAM.
	c := StartForTest(t, Options{Settings: map[string]string{"password_encryption": "md5"}})
	ctx := t.Context()

	if c.Host != "127.0.0.1" || c.Port == 0 || c.Addr() != "127.0.0.1:"+strconv.Itoa(c.Port) {
		t.Errorf("Host/Port/Addr = %q/%d/%q", c.Host, c.Port, c.Addr())
	}
	if !strings.Contains(c.DSN("postgres"), "sslmode=disable") {
		t.Errorf("DSN %s: want sslmode=disable without TLS", redact(c.DSN("postgres")))
	}
	if c.CACertPEM != nil || c.CACertFile != "" {
		t.Errorf("CACertPEM/CACertFile set without TLS")
	}
	if _, err := os.Stat(filepath.Join(c.BinDir(), "psql")); err != nil {
		t.Errorf("BinDir %s has no psql: %v", c.BinDir(), err)
	}

	conn := connect(t, c.DSN("postgres"))
	for setting, want := range map[string]string{
		"ssl":                     "off",
		"max_connections":         "200",
		"listen_addresses":        "127.0.0.1",
		"fsync":                   "off",
		"password_encryption":     "md5",
		"unix_socket_directories": c.SocketDir,
		"server_encoding":         "UTF8",
		"lc_collate":              "C",
		"data_directory":          c.Dir,
	} {
		if got := queryString(t, conn, "SHOW "+setting); got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}
	if got := queryString(t, conn, "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"); !strings.HasPrefix(got, "SCRAM-SHA-256$") {
		t.Errorf("superuser password is not stored as SCRAM: %.14s...", got)
	}

	// CreateRole stores SCRAM whatever the server default.
	if err := c.CreateRole(ctx, "Mixed Case", "pw", false); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, conn, "SELECT rolpassword FROM pg_authid WHERE rolname = 'Mixed Case'"); !strings.HasPrefix(got, "SCRAM-SHA-256$") {
		t.Errorf("CreateRole with password_encryption=md5 stored %.14s..., want SCRAM", got)
	}
	if got := queryString(t, connect(t, withUser(t, c.DSN("postgres"), "Mixed Case", "pw", nil)), "SELECT current_user"); got != "Mixed Case" {
		t.Errorf("current_user = %q", got)
	}

	if err := c.CreateDatabase(ctx, "app db"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "app db", "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2); INSERT INTO t VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	appConn := connect(t, c.DSN("app db"))
	if got := queryString(t, appConn, "SELECT count(*)::text FROM t"); got != "3" {
		t.Errorf("rows after multi-statement Exec = %s, want 3", got)
	}
	err := c.Exec(ctx, "app db", "SELECT 1; SELECT * FROM missing_table")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" || !strings.Contains(err.Error(), `"app db"`) {
		t.Errorf("Exec of a bad statement: error = %v, want a wrapped 42P01 naming the database", err)
	}

	// The unix socket works with the superuser password too.
	sockDSN := "host=" + c.SocketDir + " port=" + strconv.Itoa(c.Port) + " user=postgres dbname=postgres password=" + c.SuperPassword
	if got := queryString(t, connect(t, sockDSN), "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user over the unix socket = %q", got)
	}

	// Files pgcluster keeps in Dir.
	if fi, err := os.Stat(filepath.Join(c.Dir, passwordFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("password file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir, portFile)); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(c.Port) {
		t.Errorf("port file = %q, %v; want %d", b, err, c.Port)
	}
	if b, err := os.ReadFile(c.LogFile); err != nil || !strings.Contains(string(b), "database system is ready to accept connections") {
		t.Errorf("server log %s lacks the ready line (err %v)", c.LogFile, err)
	}

	// As root the server must not run as root.
	if os.Geteuid() == 0 {
		fi, err := os.Stat("/proc/" + strconv.Itoa(c.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if uid, _, _ := fileOwner(fi); uid == 0 {
			t.Errorf("postgres runs as root")
		}
	}
}

func TestStartTLS(t *testing.T) {
	t.Parallel()
	c := StartForTest(t, Options{TLS: true})
	ctx := t.Context()

	if len(c.CACertPEM) == 0 {
		t.Fatal("CACertPEM is empty with TLS")
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, c.CACertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	verifyFull := map[string]string{"sslmode": "verify-full", "sslrootcert": caFile}

	// The DSN itself asks for verify-full.
	if !strings.Contains(c.DSN("postgres"), "sslmode=verify-full") {
		t.Errorf("DSN %s: want sslmode=verify-full with TLS", redact(c.DSN("postgres")))
	}
	superDSN := withUser(t, c.DSN("postgres"), c.SuperUser, c.SuperPassword, verifyFull)
	conn := connect(t, superDSN)
	if got := queryString(t, conn, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "true" {
		t.Errorf("pg_stat_ssl.ssl = %s, want true", got)
	}

	// The certificate is valid for localhost too.
	u, _ := url.Parse(superDSN)
	u.Host = "localhost:" + strconv.Itoa(c.Port)
	connect(t, u.String())

	// A role created by CreateRole logs in with SCRAM over verify-full.
	const role, password = "app_user", `s3cr'et\pw`
	if err := c.CreateRole(ctx, role, password, false); err != nil {
		t.Fatal(err)
	}
	roleConn := connect(t, withUser(t, c.DSN("postgres"), role, password, verifyFull))
	if got := queryString(t, roleConn, "SELECT current_user"); got != role {
		t.Errorf("current_user = %q, want %q", got, role)
	}
	if got := queryString(t, roleConn, "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"); got != "false" {
		t.Errorf("rolsuper = %s, want false", got)
	}
	if got := queryString(t, conn, "SELECT rolpassword FROM pg_authid WHERE rolname = '"+role+"'"); !strings.HasPrefix(got, "SCRAM-SHA-256$") {
		t.Errorf("role password is not stored as SCRAM: %.14s...", got)
	}
	if err := c.CreateRole(ctx, "app_admin", "pw2", true); err != nil {
		t.Fatal(err)
	}
	adminConn := connect(t, withUser(t, c.DSN("postgres"), "app_admin", "pw2", verifyFull))
	if got := queryString(t, adminConn, "SELECT rolsuper::text FROM pg_roles WHERE rolname = current_user"); got != "true" {
		t.Errorf("rolsuper = %s, want true", got)
	}

	// A wrong password fails with invalid_password.
	_, err := pgx.Connect(ctx, withUser(t, c.DSN("postgres"), role, "wrong", verifyFull))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Errorf("login with a wrong password: error = %v, want 28P01", err)
	}

	// verify-full against another CA must fail.
	otherCA, _, err := selfsigned.Generate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(otherFile, otherCA, 0o600); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, withUser(t, c.DSN("postgres"), c.SuperUser, c.SuperPassword,
		map[string]string{"sslmode": "verify-full", "sslrootcert": otherFile})); err == nil {
		conn.Close(ctx)
		t.Error("verify-full against an unrelated CA succeeded")
	}

	// libpq (psql) accepts the certificate with verify-full as well.
	psql := exec.CommandContext(ctx, filepath.Join(c.BinDir(), "psql"), "-X", "-A", "-t", "-c",
		"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", superDSN)
	out, err := psql.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "t" {
		t.Errorf("psql with verify-full: %v: %s", err, out)
	}
}

func TestRestartReusesData(t *testing.T) {
	t.Parallel()
	c := StartForTest(t, Options{})
	ctx := t.Context()
	if err := c.Exec(ctx, "postgres", "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')"); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v, want nil", err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, pidFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid after Stop: %v, want it removed", err)
	}

	c2 := StartForTest(t, Options{Dir: c.Dir})
	if c2.Port != c.Port {
		t.Errorf("restart port = %d, want the kept %d", c2.Port, c.Port)
	}
	if c2.SuperPassword != c.SuperPassword {
		t.Errorf("restart changed the superuser password")
	}
	if got := queryString(t, connect(t, c2.DSN("postgres")), "SELECT v FROM kept"); got != "still here" {
		t.Errorf("data after restart = %q", got)
	}
	// A restart may switch TLS on.
	if err := c2.Stop(); err != nil {
		t.Fatal(err)
	}
	c3 := StartForTest(t, Options{Dir: c.Dir, TLS: true})
	if got := queryString(t, connect(t, c3.DSN("postgres")), "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "true" {
		t.Errorf("ssl after restart with TLS = %s", got)
	}
}

func TestRestartAfterKill(t *testing.T) {
	t.Parallel()
	// synchronous_commit on: the row must be in the WAL when the server dies.
	c := StartForTest(t, Options{Settings: map[string]string{"synchronous_commit": "on"}})
	if err := c.Exec(t.Context(), "postgres", "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}

	killHard := func(c *Cluster) {
		t.Helper()
		if err := killGroup(c.cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("postgres did not die after SIGKILL")
		}
		if _, err := os.Stat(filepath.Join(c.Dir, pidFile)); err != nil {
			t.Fatalf("postmaster.pid after SIGKILL: %v, want it left behind", err)
		}
		if err := c.Stop(); err == nil || !strings.Contains(err.Error(), "already exited") {
			t.Errorf("Stop after the server died: %v, want an 'already exited' error", err)
		}
	}

	// The lock file names a dead pid.
	killHard(c)
	c2 := StartForTest(t, Options{Dir: c.Dir})
	if got := queryString(t, connect(t, c2.DSN("postgres")), "SELECT v::text FROM kept"); got != "42" {
		t.Errorf("data after crash restart = %q", got)
	}

	// The lock file names a live process of the server's own user, as
	// after pid reuse: PostgreSQL alone would refuse to start.
	killHard(c2)
	sleep := exec.Command("sleep", "60")
	acct, err := serverAccount()
	if err != nil {
		t.Fatal(err)
	}
	sleep.SysProcAttr = sysProcAttr(acct)
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	path := filepath.Join(c.Dir, pidFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), "\n")
	if err := os.WriteFile(path, []byte(strconv.Itoa(sleep.Process.Pid)+"\n"+rest), 0o600); err != nil {
		t.Fatal(err)
	}
	c3 := StartForTest(t, Options{Dir: c.Dir})
	if got := queryString(t, connect(t, c3.DSN("postgres")), "SELECT v::text FROM kept"); got != "42" {
		t.Errorf("data after restart = %q", got)
	}

	// While it runs, a second Start on the same Dir is refused.
	_, err = Start(t.Context(), Options{Dir: c.Dir})
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("Start on a running Dir: %v, want ErrAlreadyRunning", err)
	}
}

// TestParallelClusters runs two clusters at the same time, started
// concurrently, so it does not depend on the -parallel limit.
func TestParallelClusters(t *testing.T) {
	t.Parallel()
	names := []string{"a", "b"}
	clusters := make([]*Cluster, len(names))
	errs := make([]error, len(names))
	dirs := []string{filepath.Join(testBaseDir(t), "data"), filepath.Join(testBaseDir(t), "data")}
	var wg sync.WaitGroup
	for i := range names {
		wg.Go(func() {
			clusters[i], errs[i] = Start(t.Context(), Options{Dir: dirs[i], Settings: testSettings()})
		})
	}
	wg.Wait()
	for i, c := range clusters {
		if c != nil {
			t.Cleanup(func() {
				if err := c.Stop(); err != nil {
					t.Errorf("stop cluster %s: %v", names[i], err)
				}
			})
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	if clusters[0].Port == clusters[1].Port {
		t.Errorf("both clusters on port %d", clusters[0].Port)
	}
	for i, c := range clusters {
		if err := c.Exec(t.Context(), "postgres", "CREATE TABLE mine (name text); INSERT INTO mine VALUES ('"+names[i]+"')"); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range clusters {
		if got := queryString(t, connect(t, c.DSN("postgres")), "SELECT name FROM mine"); got != names[i] {
			t.Errorf("cluster %s holds %q", names[i], got)
		}
	}
}

func TestStartFailureReportsServerLog(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testBaseDir(t), "data")
	_, err := Start(t.Context(), Options{Dir: dir, Settings: map[string]string{"fsync": "off", "shared_buffers": "lots"}})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), `"shared_buffers"`) || !strings.Contains(err.Error(), "server log tail") {
		t.Errorf("error does not carry the server's complaint:\n%v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, pidFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid left after a failed start: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	base := testBaseDir(t)
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noPassword := filepath.Join(base, "nopw")
	if err := os.Mkdir(noPassword, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(noPassword, versionFile), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	acct, err := serverAccount()
	if err != nil {
		t.Fatal(err)
	}
	if err := acct.chown(noPassword); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr error
		wantMsg string
	}{
		{"no dir", Options{}, ErrNoDir, ""},
		{"bad port", Options{Dir: base, Port: 70000}, nil, "out of range"},
		{"bad setting name", Options{Dir: base, Settings: map[string]string{"a\nb": "1"}}, ErrInvalidSetting, ""},
		{"bad bin dir", Options{Dir: base, BinDir: base}, ErrNoBinaries, ""},
		{"dir is a file", Options{Dir: file}, nil, "not a directory"},
		{"cluster without password", Options{Dir: noPassword}, ErrNoPassword, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(t.Context(), tc.opts)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error = %v, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
}

func TestFindBinDir(t *testing.T) {
	t.Parallel()
	dir, err := FindBinDir()
	if err != nil {
		t.Fatalf("FindBinDir: %v (the tests need a PostgreSQL server installation)", err)
	}
	if !hasServerBinaries(dir) {
		t.Errorf("FindBinDir = %s, which lacks initdb or postgres", dir)
	}
}

func TestLongDirUsesShortSocketDir(t *testing.T) {
	t.Parallel()
	base := testBaseDir(t)
	long := filepath.Join(base, strings.Repeat("d", 60), strings.Repeat("e", 60))
	c := StartForTest(t, Options{Dir: long})
	if c.SocketDir == c.Dir || !c.ownSocketDir {
		t.Fatalf("SocketDir = %s, want a short directory for a %d-byte Dir", c.SocketDir, len(c.Dir))
	}
	sock := filepath.Join(c.SocketDir, ".s.PGSQL."+strconv.Itoa(c.Port))
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("socket: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.SocketDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory left after Stop: %v", err)
	}
}
