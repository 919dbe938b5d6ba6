package pgcluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/internal/selfsigned"
)

const (
	// Host is the only address the server listens on.
	Host = "127.0.0.1"
	// SuperUser is the bootstrap superuser initdb creates.
	SuperUser = "postgres"

	readyTimeout   = 30 * time.Second
	connectTimeout = 5 * time.Second
	stopTimeout    = 30 * time.Second
	killWait       = 10 * time.Second
	pipeWait       = 5 * time.Second
	startAttempts  = 3 // with an automatic port, retry when another process took it
	maxSocketPath  = 107
)

// tlsHosts are the names the server certificate is valid for.
var tlsHosts = []string{"127.0.0.1", "localhost", "::1"}

// Errors callers may test for with errors.Is.
var (
	ErrNoDir          = errors.New("pgcluster: Options.Dir is required")
	ErrAlreadyRunning = errors.New("pgcluster: a server is already running on this data directory")
	ErrNoPassword     = errors.New("pgcluster: existing cluster has no saved superuser password")
)

// Options configure Start.
type Options struct {
	// Dir is the data directory. initdb runs when it holds no PG_VERSION;
	// otherwise the existing cluster is reused.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one and keeps it in
	// Dir so a later Start of the same Dir reuses it while it is free.
	Port int
	// TLS turns ssl on with a self-signed certificate for 127.0.0.1 and
	// localhost (Cluster.CACertPEM); DSN then asks for verify-full.
	TLS bool
	// Logger receives the server's output, one record per line. Nil
	// discards it (it still goes to custos-server.log in Dir).
	Logger *slog.Logger
	// Settings are extra postgresql.conf settings; they override
	// pgcluster's own. Pass fsync=off for throwaway clusters (it also makes
	// initdb skip syncing the new cluster to disk).
	Settings map[string]string
	// BinDir overrides the discovery of the server binaries (FindBinDir).
	BinDir string
}

// Cluster is a running PostgreSQL server started by Start.
type Cluster struct {
	// Dir is the absolute data directory.
	Dir string
	// Host is the address the server listens on (127.0.0.1).
	Host string
	// Port is the TCP port.
	Port int
	// SuperUser is the superuser's name ("postgres").
	SuperUser string
	// SuperPassword is the superuser's password.
	SuperPassword string
	// CACertPEM is the server's self-signed certificate when TLS is on,
	// for clients to trust; nil otherwise.
	CACertPEM []byte
	// CACertFile is the path of CACertPEM (in Dir) when TLS is on.
	CACertFile string
	// SocketDir holds the server's unix socket.
	SocketDir string
	// LogFile is where the server's output is appended.
	LogFile string

	binDir       string
	logger       *slog.Logger
	acct         *account
	ownSocketDir bool
	cmd          *exec.Cmd
	output       *serverLog
	done         chan struct{} // closed when the server process has exited
	waitErr      error         // the process's exit, valid after done
	stopMu       sync.Mutex
	stopped      bool
}

// Start starts the cluster in opts.Dir, creating it first when needed, and
// returns once the server accepts connections. ctx bounds the start only;
// the server runs until Stop (or until the calling process dies, on Linux).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := platformSupported(); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, ErrNoDir
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("pgcluster: port %d out of range", opts.Port)
	}
	if err := validateSettings(opts.Settings); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: absolute path of %s: %w", opts.Dir, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else if !hasServerBinaries(binDir) {
		return nil, fmt.Errorf("%w in Options.BinDir %s", ErrNoBinaries, binDir)
	}
	acct, err := serverAccount()
	if err != nil {
		return nil, err
	}

	c := &Cluster{
		Dir:       dir,
		Host:      Host,
		SuperUser: SuperUser,
		LogFile:   filepath.Join(dir, logFile),
		binDir:    binDir,
		logger:    logger.With("pg_data_dir", dir),
		acct:      acct,
	}
	defer func() {
		if err != nil {
			c.removeSocketDir()
		}
	}()

	initialised, err := c.prepareDir()
	if err != nil {
		return nil, err
	}
	if !initialised {
		if err := c.initdb(ctx, opts.Settings["fsync"] == "off"); err != nil {
			return nil, err
		}
	} else if err := c.readPassword(); err != nil {
		return nil, err
	}
	if err := c.ensureInclude(); err != nil {
		return nil, err
	}
	if err := c.writeFile(hbaFile, renderHBA(), 0o600); err != nil {
		return nil, err
	}
	if opts.TLS {
		if err := c.prepareTLS(); err != nil {
			return nil, err
		}
	}
	if err := c.prepareSocketDir(); err != nil {
		return nil, err
	}

	avoid := map[int]bool{}
	for attempt := 1; ; attempt++ {
		port, auto, err := c.choosePort(opts.Port, avoid)
		if err != nil {
			return nil, err
		}
		c.Port = port
		conf := renderConf(confSettings{
			port:       port,
			socketDir:  c.SocketDir,
			tls:        opts.TLS,
			extra:      opts.Settings,
			maxConns:   maxConnections,
			listenAddr: Host,
		})
		if err := c.writeFile(confFile, conf, 0o600); err != nil {
			return nil, err
		}
		err = c.run(ctx)
		if err == nil {
			break
		}
		if auto && attempt < startAttempts && c.portTaken() {
			c.logger.Warn("postgres port taken, retrying with another", "port", port)
			avoid[port] = true
			continue
		}
		return nil, err
	}

	if err := c.writeFile(portFile, []byte(strconv.Itoa(c.Port)+"\n"), 0o600); err != nil {
		_ = c.Stop()
		return nil, err
	}
	c.logger.Info("postgres started", "addr", c.Addr(), "tls", opts.TLS, "pid", c.cmd.Process.Pid)
	return c, nil
}

// prepareDir creates Dir when missing (0700; parents 0711 when the server
// runs as another user), checks the server account can reach it, and
// reports whether it already holds a cluster.
func (c *Cluster) prepareDir() (initialised bool, err error) {
	fi, err := os.Stat(c.Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parentMode := os.FileMode(0o700)
		if c.acct != nil {
			parentMode = 0o711
		}
		if err := os.MkdirAll(filepath.Dir(c.Dir), parentMode); err != nil {
			return false, fmt.Errorf("pgcluster: create parent of data directory %s: %w", c.Dir, err)
		}
		if err := os.Mkdir(c.Dir, 0o700); err != nil {
			return false, fmt.Errorf("pgcluster: create data directory %s: %w", c.Dir, err)
		}
		if fi, err = os.Stat(c.Dir); err != nil {
			return false, fmt.Errorf("pgcluster: stat data directory: %w", err)
		}
	case err != nil:
		return false, fmt.Errorf("pgcluster: stat data directory: %w", err)
	case !fi.IsDir():
		return false, fmt.Errorf("pgcluster: data directory %s is not a directory", c.Dir)
	}

	if err := c.acct.checkTraversable(filepath.Dir(c.Dir)); err != nil {
		return false, err
	}
	_, err = os.Stat(filepath.Join(c.Dir, versionFile))
	switch {
	case err == nil:
		initialised = true
	case errors.Is(err, fs.ErrNotExist):
	default:
		return false, fmt.Errorf("pgcluster: stat %s: %w", versionFile, err)
	}

	if c.acct != nil {
		if uid, _, ok := fileOwner(fi); ok && uid != c.acct.uid {
			if initialised {
				return false, fmt.Errorf("pgcluster: %w: %s is owned by uid %d, the server runs as %s (uid %d)",
					errNotOwned, c.Dir, uid, c.acct.name, c.acct.uid)
			}
			if err := c.acct.chown(c.Dir); err != nil {
				return false, err
			}
		}
	}
	return initialised, nil
}

// initdb creates the cluster with a fresh random superuser password.
func (c *Cluster) initdb(ctx context.Context, noSync bool) error {
	password, err := randomPassword()
	if err != nil {
		return err
	}
	// The password file must be outside Dir (initdb wants it empty) and
	// readable by the server account.
	pw, err := os.CreateTemp("", "custos-pgpw-")
	if err != nil {
		return fmt.Errorf("pgcluster: create initdb password file: %w", err)
	}
	defer os.Remove(pw.Name())
	_, werr := pw.WriteString(password + "\n")
	cerr := pw.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("pgcluster: write initdb password file: %w", err)
	}
	if err := c.acct.chown(pw.Name()); err != nil {
		return err
	}

	args := []string{
		"-D", c.Dir,
		"-U", SuperUser,
		"--pwfile=" + pw.Name(),
		"--auth=scram-sha-256",
		"-E", "UTF8",
		"--locale=C",
	}
	if noSync {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"), args...)
	cmd.Dir = "/"
	cmd.Env = serverEnv()
	cmd.SysProcAttr = sysProcAttr(c.acct)
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = pipeWait
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: initdb %s: %w\n%s", c.Dir, err, lastLines(out.String(), tailLines))
	}
	c.logger.Info("postgres cluster initialised", "duration", time.Since(start).Round(time.Millisecond))

	c.SuperPassword = password
	return c.writeFile(passwordFile, []byte(password+"\n"), 0o600)
}

func (c *Cluster) readPassword() error {
	b, err := os.ReadFile(filepath.Join(c.Dir, passwordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s is missing in %s", ErrNoPassword, passwordFile, c.Dir)
	}
	if err != nil {
		return fmt.Errorf("pgcluster: read superuser password: %w", err)
	}
	c.SuperPassword = strings.TrimSpace(string(b))
	if c.SuperPassword == "" {
		return fmt.Errorf("%w: %s is empty", ErrNoPassword, passwordFile)
	}
	return nil
}

// ensureInclude appends the include of custos.conf to postgresql.conf once.
func (c *Cluster) ensureInclude() error {
	path := filepath.Join(c.Dir, mainConfFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pgcluster: read %s: %w", mainConfFile, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == includeLine {
			return nil
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: open %s: %w", mainConfFile, err)
	}
	_, werr := fmt.Fprintf(f, "\n# Settings managed by custos pgcluster.\n%s\n", includeLine)
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("pgcluster: append to %s: %w", mainConfFile, err)
	}
	return nil
}

// prepareTLS creates (or loads) the server certificate and key in Dir,
// replacing them when they expire within a day or do not cover 127.0.0.1.
func (c *Cluster) prepareTLS() error {
	certPath, keyPath := filepath.Join(c.Dir, certFile), filepath.Join(c.Dir, keyFile)
	cert, err := selfsigned.LoadOrCreate(certPath, keyPath, tlsHosts)
	if err != nil {
		return fmt.Errorf("pgcluster: server certificate: %w", err)
	}
	if leaf := cert.Leaf; leaf == nil || time.Until(leaf.NotAfter) < 24*time.Hour || leaf.VerifyHostname(Host) != nil {
		c.logger.Info("replacing postgres server certificate", "path", certPath)
		if err := errors.Join(os.Remove(certPath), os.Remove(keyPath)); err != nil {
			return fmt.Errorf("pgcluster: remove old server certificate: %w", err)
		}
		if _, err := selfsigned.LoadOrCreate(certPath, keyPath, tlsHosts); err != nil {
			return fmt.Errorf("pgcluster: server certificate: %w", err)
		}
	}
	// The server reads the key as its own user and wants it 0600.
	for _, p := range []string{certPath, keyPath} {
		if err := c.acct.chown(p); err != nil {
			return err
		}
	}
	if err := os.Chmod(keyPath, 0o600); err != nil {
		return fmt.Errorf("pgcluster: chmod server key: %w", err)
	}
	pemBytes, err := os.ReadFile(certPath)
	if err != nil {
		return fmt.Errorf("pgcluster: read server certificate: %w", err)
	}
	c.CACertPEM = pemBytes
	c.CACertFile = certPath
	return nil
}

// prepareSocketDir uses Dir for the unix socket unless the socket path
// would exceed the kernel's limit; then it makes a short one under /tmp.
func (c *Cluster) prepareSocketDir() error {
	if len(c.Dir)+len("/.s.PGSQL.65535") <= maxSocketPath {
		c.SocketDir = c.Dir
		return nil
	}
	base := "/tmp"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = os.TempDir()
	}
	d, err := os.MkdirTemp(base, "custos-pgsock-")
	if err != nil {
		return fmt.Errorf("pgcluster: create socket directory: %w", err)
	}
	c.SocketDir, c.ownSocketDir = d, true
	if len(d)+len("/.s.PGSQL.65535") > maxSocketPath {
		return fmt.Errorf("pgcluster: socket directory %s is too long for a unix socket path", d)
	}
	return c.acct.chown(d)
}

func (c *Cluster) removeSocketDir() {
	if c.ownSocketDir {
		_ = os.RemoveAll(c.SocketDir)
		c.ownSocketDir = false
	}
}

// choosePort returns the requested port, else the one kept in Dir when it
// is free, else a free one picked by the kernel. auto tells whether the
// caller left the choice to pgcluster.
func (c *Cluster) choosePort(requested int, avoid map[int]bool) (port int, auto bool, err error) {
	if requested > 0 {
		return requested, false, nil
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir, portFile)); err == nil {
		if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p > 0 && p < 65536 && !avoid[p] && portFree(p) {
			return p, true, nil
		}
	}
	for range 10 {
		l, err := net.Listen("tcp4", net.JoinHostPort(Host, "0"))
		if err != nil {
			return 0, true, fmt.Errorf("pgcluster: pick a free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !avoid[p] {
			return p, true, nil
		}
	}
	return 0, true, errors.New("pgcluster: pick a free port: the kernel kept returning ports already tried")
}

func portFree(port int) bool {
	l, err := net.Listen("tcp4", net.JoinHostPort(Host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// portTaken reports whether the last start failed because the port was
// in use.
func (c *Cluster) portTaken() bool {
	if c.output == nil {
		return false
	}
	tail := c.output.Tail()
	return strings.Contains(tail, "Address already in use") || strings.Contains(tail, "could not create any TCP/IP sockets")
}

// run clears a stale lock file, starts postgres and waits until it accepts
// connections. On failure the process is gone when run returns.
func (c *Cluster) run(ctx context.Context) error {
	if err := c.clearStalePID(); err != nil {
		return err
	}
	f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pgcluster: open server log: %w", err)
	}
	if err := c.acct.chown(c.LogFile); err != nil {
		f.Close()
		return err
	}
	c.output = newServerLog(c.logger, f)

	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), "-D", c.Dir)
	cmd.Dir = c.Dir
	cmd.Env = serverEnv()
	cmd.Stdout = c.output
	cmd.Stderr = c.output
	cmd.SysProcAttr = sysProcAttr(c.acct)
	cmd.WaitDelay = pipeWait
	if err := cmd.Start(); err != nil {
		c.output.Close()
		return fmt.Errorf("pgcluster: start postgres: %w", err)
	}
	c.cmd = cmd
	c.done = make(chan struct{})
	go func(done chan struct{}) {
		c.waitErr = cmd.Wait()
		close(done)
	}(c.done)

	if err := c.waitReady(ctx); err != nil {
		c.kill()
		return fmt.Errorf("pgcluster: start postgres on port %d: %w\nserver log tail:\n%s", c.Port, err, c.output.Tail())
	}
	return nil
}

// waitReady waits until postmaster.pid says "ready" and the superuser can
// log in over TCP, or the server exits, or the deadline passes.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	pid := c.cmd.Process.Pid
	lastErr := errors.New("server not ready yet")
	delay := 10 * time.Millisecond
	for {
		if pidFileReady(filepath.Join(c.Dir, pidFile), pid) {
			attemptCtx, cancelAttempt := context.WithTimeout(ctx, connectTimeout)
			conn, err := c.connect(attemptCtx, "postgres")
			if err == nil {
				err = conn.Ping(attemptCtx)
				_ = conn.Close(attemptCtx)
			}
			cancelAttempt()
			if err == nil {
				return nil
			}
			lastErr = err
		}
		select {
		case <-c.done:
			return fmt.Errorf("server exited during startup: %w", c.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("server not accepting connections: %w (last attempt: %w)", ctx.Err(), lastErr)
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// pidFileReady reports whether the lock file belongs to pid and its status
// line (the 8th) says the postmaster accepts connections.
func pidFileReady(path string, pid int) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	return len(lines) >= 8 && strings.TrimSpace(lines[0]) == strconv.Itoa(pid) && strings.TrimSpace(lines[7]) == "ready"
}

// clearStalePID removes a postmaster.pid left by a server that is gone, or
// whose pid now belongs to an unrelated process (PostgreSQL itself would
// refuse to start then). A live server on this Dir is ErrAlreadyRunning.
func (c *Cluster) clearStalePID() error {
	path := filepath.Join(c.Dir, pidFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgcluster: read %s: %w", pidFile, err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		c.logger.Warn("removing unreadable postmaster.pid", "content", first)
		return removeFile(path)
	}
	alive, known := processAlive(pid)
	if !known {
		return nil // let the server decide
	}
	if alive {
		// The postmaster and its children run in the data directory.
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			return nil // cannot tell: let the server decide
		}
		if sameDir(cwd, c.Dir) {
			return fmt.Errorf("%w: %s (pid %d)", ErrAlreadyRunning, c.Dir, pid)
		}
	}
	c.logger.Warn("removing stale postmaster.pid", "pid", pid, "pid_alive", alive)
	return removeFile(path)
}

func sameDir(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pgcluster: remove %s: %w", path, err)
	}
	return nil
}

// kill ends the server at once (postmaster, its process group and its
// children) and waits for it.
func (c *Cluster) kill() {
	_ = killTree(c.cmd.Process.Pid)
	select {
	case <-c.done:
	case <-time.After(killWait):
		c.logger.Error("postgres did not exit after SIGKILL", "pid", c.cmd.Process.Pid)
	}
	_ = c.output.Close()
}

// Stop shuts the server down (fast shutdown: SIGINT, clients are
// disconnected) and waits for it to exit, killing it and its children
// with SIGKILL after a timeout. It returns an error when the server had already died or had
// to be killed. Calls after the first return nil.
func (c *Cluster) Stop() error {
	c.stopMu.Lock()
	defer c.stopMu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	defer c.removeSocketDir()
	defer c.output.Close()

	pid := c.cmd.Process.Pid
	select {
	case <-c.done:
		return fmt.Errorf("pgcluster: postgres (pid %d) had already exited: %w\nserver log tail:\n%s", pid, c.waitErr, c.output.Tail())
	default:
	}
	if err := c.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgcluster: signal postgres (pid %d): %w", pid, err)
	}
	select {
	case <-c.done:
		if c.waitErr != nil {
			return fmt.Errorf("pgcluster: postgres (pid %d) shutdown: %w\nserver log tail:\n%s", pid, c.waitErr, c.output.Tail())
		}
		c.logger.Info("postgres stopped", "pid", pid)
		return nil
	case <-time.After(stopTimeout):
	}
	c.logger.Warn("postgres did not stop in time, killing it", "pid", pid, "timeout", stopTimeout)
	c.kill()
	return fmt.Errorf("pgcluster: postgres (pid %d) did not shut down within %v and was killed", pid, stopTimeout)
}

// Done is closed when the server process has exited, for whatever reason.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Addr returns "127.0.0.1:PORT".
func (c *Cluster) Addr() string {
	return net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
}

// BinDir returns the directory of the server binaries, where psql, pgbench
// and the other client programs of the same installation live too.
func (c *Cluster) BinDir() string { return c.binDir }

// DSN returns a superuser connection URL for database over TCP. With TLS
// it asks for sslmode=verify-full against CACertFile; without, sslmode is
// disable.
func (c *Cluster) DSN(database string) string {
	q := url.Values{}
	if c.CACertFile != "" {
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", c.CACertFile)
	} else {
		q.Set("sslmode", "disable")
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(c.SuperUser, c.SuperPassword),
		Host:     c.Addr(),
		Path:     "/" + database,
		RawQuery: q.Encode(),
	}
	return u.String()
}

func (c *Cluster) connect(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.DSN(database))
	if err != nil {
		return nil, fmt.Errorf("parse DSN: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "custos-pgcluster"
	return pgx.ConnectConfig(ctx, cfg)
}

// Exec runs sql as the superuser in database over the simple query
// protocol, so it may hold several statements (run as one implicit
// transaction unless they manage transactions themselves).
func (c *Cluster) Exec(ctx context.Context, database, sql string) error {
	conn, err := c.connect(ctx, database)
	if err != nil {
		return fmt.Errorf("pgcluster: connect to database %q: %w", database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("pgcluster: exec in database %q: %w", database, err)
	}
	return nil
}

// CreateDatabase creates database name, owned by the superuser.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	if err := c.Exec(ctx, "postgres", "CREATE DATABASE "+quoteIdent(name)); err != nil {
		return fmt.Errorf("pgcluster: create database %q: %w", name, err)
	}
	return nil
}

// CreateRole creates a LOGIN role with password stored as a SCRAM-SHA-256
// verifier, and SUPERUSER when superuser is true.
func (c *Cluster) CreateRole(ctx context.Context, name, password string, superuser bool) error {
	if strings.ContainsRune(password, 0) {
		return fmt.Errorf("pgcluster: create role %q: password holds a NUL byte", name)
	}
	attrs := "LOGIN NOSUPERUSER"
	if superuser {
		attrs = "LOGIN SUPERUSER"
	}
	sql := "SET LOCAL password_encryption = 'scram-sha-256'; " +
		"CREATE ROLE " + quoteIdent(name) + " " + attrs + " PASSWORD " + quoteLiteral(password)
	if err := c.Exec(ctx, "postgres", sql); err != nil {
		return fmt.Errorf("pgcluster: create role %q: %w", name, err)
	}
	return nil
}

// writeFile writes name in Dir through a temporary file and gives it to
// the server account.
func (c *Cluster) writeFile(name string, data []byte, mode os.FileMode) error {
	path := filepath.Join(c.Dir, name)
	tmp, err := os.CreateTemp(c.Dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // no-op after rename
	_, werr := tmp.Write(data)
	err = errors.Join(werr, tmp.Chmod(mode), tmp.Close())
	if err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", name, err)
	}
	if err := c.acct.chown(tmp.Name()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", name, err)
	}
	return nil
}

// serverEnv is the caller's environment without PG* variables, which
// would otherwise leak into initdb and the server (PGPORT, PGDATA, ...).
func serverEnv() []string {
	env := os.Environ()
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PG") {
			out = append(out, kv)
		}
	}
	return out
}

func randomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pgcluster: generate superuser password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
