package pgfilter_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func connectErr(t *testing.T, connString string) *pgconn.PgError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, connString)
	if err == nil {
		_ = c.Close(ctx)
		t.Fatalf("connect succeeded, want an error")
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("connect: %v, want a server error", err)
	}
	return pgErr
}

func TestReadThroughProxy(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents")))
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM cards WHERE pan = $1", "4242424242424242").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("count = %d", n)
	}
	// The client sees custos' key, not the upstream backend's.
	var pid uint32
	if err := c.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if pid == c.PgConn().PID() {
		t.Errorf("client holds the upstream backend pid %d", pid)
	}
	// The upstream session runs as the gateway role, never as the client.
	var user string
	if err := c.QueryRow(context.Background(), "SELECT current_user").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if user != env.Resource.User {
		t.Errorf("current_user = %q", user)
	}
}

func TestAuthenticationFailures(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	other := pgfiltertest.Start(t, pgfiltertest.Options{}) // a second, untrusted issuer
	expired := env.Mint(t, devissuer.MintRequest{Subject: "alice", TTL: time.Second})
	time.Sleep(2100 * time.Millisecond)
	tests := []struct {
		name, user, token, code, msg string
	}{
		{"expired", "alice", expired, "28P01", "expired"},
		{"wrong audience", "alice", env.Mint(t, devissuer.MintRequest{Subject: "alice", Audience: "someone-else"}), "28P01", "audience"},
		{"unknown issuer", "alice", other.Token(t, "alice"), "28P01", "not trusted"},
		{"bad signature", "alice", tamper(env.Token(t, "alice")), "28P01", "signature"},
		{"not a jwt", "alice", "hunter2", "28P01", "not a JWT"},
		{"alg none", "alice", algNone(env.Token(t, "alice")), "28P01", "algorithm"},
		{"user mismatch", "mallory", env.Token(t, "alice"), "28000", `does not match the token's identity "alice"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := connectErr(t, env.ConnString(tt.user, tt.token))
			if e.Code != tt.code || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("got %s %q, want %s containing %q", e.Code, e.Message, tt.code, tt.msg)
			}
		})
	}
}

// tamper flips a character of the signature.
func tamper(tok string) string {
	b := []byte(tok)
	i := len(b) - 5
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// algNone rewrites the header to alg "none" and drops the signature.
func algNone(tok string) string {
	parts := strings.Split(tok, ".")
	return "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + "."
}

func TestStartupParametersRefused(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	tok := env.Token(t, "alice")
	tests := []struct {
		name, extra, msg string
	}{
		{"options switch", "options='-B 100'", "only -c name=value and --name=value settings"},
		{"options setting not allowed", "options='-c role=postgres'", `startup parameter "role" is not allowed`},
		{"options setting without value", "options='-c search_path'", "only -c name=value"},
		{"replication", "replication=database", "replication connections are not allowed"},
		{"unknown parameter", "role=postgres", `startup parameter "role" is not allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := connectErr(t, env.ConnString("alice", tok, tt.extra))
			if !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("got %q, want %q", e.Message, tt.msg)
			}
		})
	}
	// Allowed parameters reach the upstream session.
	c := connect(t, env.ConnString("alice", tok, "application_name=agent-7", "timezone=Europe/Paris"))
	var app, tz string
	if err := c.QueryRow(context.Background(), "SELECT current_setting('application_name'), current_setting('TimeZone')").Scan(&app, &tz); err != nil {
		t.Fatal(err)
	}
	if app != "agent-7" || tz != "Europe/Paris" {
		t.Errorf("application_name=%q TimeZone=%q", app, tz)
	}
}

func TestUnknownDatabase(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	cs := strings.Replace(env.ConnString("alice", env.Token(t, "alice")), "dbname="+pgfiltertest.Database, "dbname=postgres", 1)
	if e := connectErr(t, cs); e.Code != "3D000" {
		t.Fatalf("got %s %s", e.Code, e.Message)
	}
	// The resource name also selects the resource.
	cs = strings.Replace(env.ConnString("alice", env.Token(t, "alice")), "dbname="+pgfiltertest.Database, "dbname="+env.Resource.Name, 1)
	connect(t, cs)
}

func TestPasswordTransport(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{Listener: config.PostgresListener{PasswordTransport: config.TransportTLS}})
	tok := env.Token(t, "alice")
	e := connectErr(t, env.ConnString("alice", tok, "sslmode=disable"))
	if e.Code != "28000" || !strings.Contains(e.Message, "requires TLS") {
		t.Fatalf("plaintext: got %s %q", e.Code, e.Message)
	}
	connect(t, env.ConnString("alice", tok))

	// Without a certificate, loopback clients may still authenticate.
	plain := pgfiltertest.Start(t, pgfiltertest.Options{NoTLS: true})
	connect(t, plain.ConnString("alice", plain.Token(t, "alice")))
}

func TestDirectTLS(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := connect(t, env.ConnString("alice", env.Token(t, "alice"), "sslnegotiation=direct"))
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// Direct TLS without ALPN "postgresql" is refused.
	conn, err := tls.Dial("tcp", env.Addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // testing the server's ALPN rule
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fe := pgproto3.NewFrontend(conn, conn)
		msg, rerr := fe.Receive()
		er, ok := msg.(*pgproto3.ErrorResponse)
		if rerr != nil || !ok || !strings.Contains(er.Message, "ALPN") {
			t.Fatalf("no-ALPN direct TLS: %T %v %v", msg, msg, rerr)
		}
		conn.Close()
	}
}

func TestOAuthBearer(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{Listener: config.PostgresListener{OAuthBearer: true}})
	tok := env.Token(t, "alice")
	cfg, err := pgx.ParseConfig(env.ConnString("alice", ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OAuthTokenProvider = func(context.Context) (string, error) { return tok, nil }
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var one int
	if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatal(one, err)
	}
	// A bad token fails the exchange.
	cfg.OAuthTokenProvider = func(context.Context) (string, error) { return tamper(tok), nil }
	if c, err := pgx.ConnectConfig(context.Background(), cfg); err == nil {
		c.Close(context.Background())
		t.Fatal("bad bearer token accepted")
	}
}

// rawStartup opens a plain TCP connection and returns it with a frontend.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSSLRequestWithInjectedBytes(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	c := rawConn(t, env.Addr)
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	startup, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "alice"}}).Encode(nil)
	if _, err := c.Write(append(ssl, startup...)); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	msg, err := fe.Receive()
	er, ok := msg.(*pgproto3.ErrorResponse)
	if err != nil || !ok || !strings.Contains(er.Message, "unencrypted data after SSL request") {
		t.Fatalf("got %T %+v %v", msg, msg, err)
	}
}

func TestGSSEncAndProtocolNegotiation(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{NoTLS: true})
	c := rawConn(t, env.Addr)
	gss, _ := (&pgproto3.GSSEncRequest{}).Encode(nil)
	if _, err := c.Write(gss); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'N' {
		t.Fatalf("GSSENCRequest answer %q %v", b[0], err)
	}
	// Protocol 3.2 with a _pq_ option: custos answers NegotiateProtocolVersion
	// and carries on at 3.0.
	var pkt []byte
	pkt = binary.BigEndian.AppendUint32(pkt, 0)
	pkt = binary.BigEndian.AppendUint32(pkt, 3<<16|2)
	for _, s := range []string{"user", "alice", "database", pgfiltertest.Database, "_pq_.test", "1", ""} {
		pkt = append(pkt, s...)
		pkt = append(pkt, 0)
	}
	binary.BigEndian.PutUint32(pkt, uint32(len(pkt)))
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	msg, err := fe.Receive()
	npv, ok := msg.(*pgproto3.NegotiateProtocolVersion)
	if err != nil || !ok || npv.NewestMinorProtocol != 0 || len(npv.UnrecognizedOptions) != 1 || npv.UnrecognizedOptions[0] != "_pq_.test" {
		t.Fatalf("got %T %+v %v", msg, msg, err)
	}
	msg, err = fe.Receive()
	if _, ok := msg.(*pgproto3.AuthenticationCleartextPassword); err != nil || !ok {
		t.Fatalf("got %T %v", msg, err)
	}
	fe.Send(&pgproto3.PasswordMessage{Password: env.Token(t, "alice")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if bkd, ok := msg.(*pgproto3.BackendKeyData); ok && len(bkd.SecretKey) != 4 {
			t.Fatalf("secret key of %d bytes at protocol 3.0", len(bkd.SecretKey))
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
}

func TestCancelRequest(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	cfg, err := pgx.ParseConfig(env.ConnString("alice", env.Token(t, "alice")))
	if err != nil {
		t.Fatal(err)
	}
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 10 * time.Second}
	}
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Exec(ctx, "SELECT pg_sleep(30)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("err = %v, want 57014 query_canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	// The session survives the cancel.
	var one int
	if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
}

func TestSessionLimits(t *testing.T) {
	t.Parallel()
	t.Run("per principal", func(t *testing.T) {
		t.Parallel()
		env := pgfiltertest.Start(t, pgfiltertest.Options{Sessions: config.Sessions{MaxPerPrincipal: 2}})
		tok := env.Token(t, "alice")
		connect(t, env.ConnString("alice", tok))
		c2 := connect(t, env.ConnString("alice", tok))
		if e := connectErr(t, env.ConnString("alice", tok)); e.Code != "53300" || !strings.Contains(e.Message, "too many sessions for alice") {
			t.Fatalf("third session: %s %q", e.Code, e.Message)
		}
		connect(t, env.ConnString("bob", env.Token(t, "bob"))) // others unaffected
		c2.Close(context.Background())
		waitFor(t, func() bool { return env.Server.ActiveSessions() == 2 })
		connect(t, env.ConnString("alice", tok))
	})
	t.Run("per group", func(t *testing.T) {
		t.Parallel()
		env := pgfiltertest.Start(t, pgfiltertest.Options{Sessions: config.Sessions{MaxPerGroup: map[string]int{"agents": 2}}})
		a1 := connect(t, env.ConnString("a1", env.Token(t, "a1", "agents")))
		connect(t, env.ConnString("a2", env.Token(t, "a2", "agents", "dba")))
		// A third agent, whoever it is, is refused: the group's cap.
		if e := connectErr(t, env.ConnString("a3", env.Token(t, "a3", "agents"))); e.Code != "53300" || !strings.Contains(e.Message, "too many sessions for group agents: 2 of 2") {
			t.Fatalf("third agent: %s %q", e.Code, e.Message)
		}
		connect(t, env.ConnString("d1", env.Token(t, "d1", "dba"))) // no cap on dba
		a1.Close(context.Background())
		waitFor(t, func() bool { return env.Server.ActiveSessions() == 2 })
		connect(t, env.ConnString("a3", env.Token(t, "a3", "agents")))
	})
	t.Run("reserve for approvers", func(t *testing.T) {
		t.Parallel()
		env := pgfiltertest.Start(t, pgfiltertest.Options{Sessions: config.Sessions{
			MaxTotal: 3, Reserve: config.SessionReserve{Groups: []string{"dba"}, Sessions: 1},
		}})
		connect(t, env.ConnString("a1", env.Token(t, "a1", "agents")))
		connect(t, env.ConnString("a2", env.Token(t, "a2", "agents")))
		// The last place is the approvers': an agent is refused, saying so.
		e := connectErr(t, env.ConnString("a3", env.Token(t, "a3", "agents")))
		if e.Code != "53300" || !strings.Contains(e.Message, "the last 1 are reserved for dba") {
			t.Fatalf("agent into the reserve: %s %q", e.Code, e.Message)
		}
		connect(t, env.ConnString("bob", env.Token(t, "bob", "dba")))
		// Full: the approvers too.
		if e := connectErr(t, env.ConnString("carol", env.Token(t, "carol", "dba"))); e.Code != "53300" || !strings.Contains(e.Message, "3 of 3 are open") {
			t.Fatalf("over the total: %s %q", e.Code, e.Message)
		}
	})
	t.Run("token expiry", func(t *testing.T) {
		t.Parallel()
		env := pgfiltertest.Start(t, pgfiltertest.Options{Sessions: config.Sessions{TokenGrace: 200 * time.Millisecond}})
		tok := env.Mint(t, devissuer.MintRequest{Subject: "alice", TTL: 1500 * time.Millisecond})
		c := connect(t, env.ConnString("alice", tok))
		err := waitErr(t, c)
		if !strings.Contains(err.Error(), "token for alice expired") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		env := pgfiltertest.Start(t, pgfiltertest.Options{Sessions: config.Sessions{IdleTimeout: 700 * time.Millisecond}})
		c := connect(t, env.ConnString("alice", env.Token(t, "alice")))
		// Activity keeps it alive.
		for range 4 {
			time.Sleep(300 * time.Millisecond)
			if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
				t.Fatalf("active session closed: %v", err)
			}
		}
		time.Sleep(1500 * time.Millisecond)
		_, err := c.Exec(context.Background(), "SELECT 1")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57P05" {
			t.Fatalf("err = %v", err)
		}
	})
}

// waitErr polls the connection until it fails and returns the error.
func waitErr(t *testing.T, c *pgx.Conn) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
			return err
		}
	}
	t.Fatal("session still open")
	return nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	tok := env.Token(t, "alice")
	idle := connect(t, env.ConnString("alice", tok))
	busy := connect(t, env.ConnString("alice", tok))
	inTx := connect(t, env.ConnString("alice", tok))
	if _, err := inTx.Exec(context.Background(), "BEGIN"); err != nil {
		t.Fatal(err)
	}
	busyDone := make(chan error, 1)
	go func() {
		_, err := busy.Exec(context.Background(), "SELECT pg_sleep(0.5)")
		busyDone <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the sleep reach the server

	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- env.Server.Shutdown(ctx) }()
	time.Sleep(50 * time.Millisecond)
	if _, err := net.DialTimeout("tcp", env.Addr, time.Second); err == nil {
		t.Error("listener still accepting")
	}
	// The idle session is closed at once with a FATAL message.
	assertShutdownErr(t, idle)
	// The busy statement finishes, then its session is closed.
	if err := <-busyDone; err != nil {
		t.Fatalf("busy statement: %v", err)
	}
	assertShutdownErr(t, busy)
	// An open transaction holds its session until the deadline.
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	assertShutdownErr(t, inTx)
}

func assertShutdownErr(t *testing.T, c *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.Exec(context.Background(), "SELECT 1")
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "57P01" {
			return
		}
		if err == nil && time.Now().Before(deadline) {
			// Still open (in a transaction): wait for the deadline.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Fatalf("after shutdown: %v", err)
	}
}

// refuseHook drops a simple Query containing "forbidden" and answers it.
type refuseHook struct {
	mu   sync.Mutex
	seen []string
}

func (h *refuseHook) Wants(d pgfilter.Direction, typ byte) bool {
	return d == pgfilter.ClientToServer && typ == 'Q'
}

func (h *refuseHook) Handle(_ context.Context, _ pgfilter.Direction, m *pgfilter.Message, c pgfilter.Conn) (pgfilter.Verdict, error) {
	msg, err := m.DecodeClient()
	if err != nil {
		return pgfilter.Forward, err
	}
	q := msg.(*pgproto3.Query).String
	h.mu.Lock()
	h.seen = append(h.seen, q)
	h.mu.Unlock()
	if strings.Contains(q, "forbidden") {
		return pgfilter.Drop, c.SendToClient(
			&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501", Message: "refused by test hook"},
			&pgproto3.ReadyForQuery{TxStatus: 'I'},
		)
	}
	if strings.Contains(q, "rewrite me") {
		m.Body = append([]byte("SELECT 'rewritten'"), 0)
	}
	return pgfilter.Forward, nil
}

func (h *refuseHook) Close(error) {}

func TestHookPoint(t *testing.T) {
	t.Parallel()
	h := &refuseHook{}
	env := pgfiltertest.Start(t, pgfiltertest.Options{Hooks: []pgfilter.HookFactory{
		func(*pgfilter.Session) (pgfilter.Hook, error) { return h, nil },
	}})
	c := connect(t, env.ConnString("alice", env.Token(t, "alice")))
	_, err := c.Exec(context.Background(), "SELECT 'forbidden'")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("err = %v", err)
	}
	var s string
	if err := c.QueryRow(context.Background(), "SELECT 'rewrite me'", pgx.QueryExecModeSimpleProtocol).Scan(&s); err != nil || s != "rewritten" {
		t.Fatalf("rewrite: %q %v", s, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) < 2 {
		t.Fatalf("hook saw %v", h.seen)
	}
}

// TestSplitMessages sends a client message stream cut at every byte
// boundary through the proxy to the real server.
func TestSplitMessages(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{NoTLS: true})
	c := connect(t, env.ConnString("alice", env.Token(t, "alice")))
	pc := c.PgConn()
	if err := pc.SyncConn(context.Background()); err != nil {
		t.Fatal(err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	conn := hj.Conn
	defer conn.Close()
	var stream []byte
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Query{String: "SELECT 1 AS a; SELECT 'two'"},
		&pgproto3.Parse{Query: "SELECT $1::int + 1"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("41")}},
		&pgproto3.Describe{ObjectType: 'P'},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
	} {
		stream, _ = m.Encode(stream)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	read := func() string {
		var out bytes.Buffer
		rfq := 0
		for rfq < 2 {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := msg.(type) {
			case *pgproto3.DataRow:
				fmt.Fprintf(&out, "%s;", m.Values[0])
			case *pgproto3.ErrorResponse:
				t.Fatalf("error: %s", m.Message)
			case *pgproto3.ReadyForQuery:
				rfq++
			}
		}
		return out.String()
	}
	for split := 0; split <= len(stream); split++ {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(stream[:split]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		if _, err := conn.Write(stream[split:]); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != "1;two;42;" {
			t.Fatalf("split %d: got %q", split, got)
		}
	}
}

func TestMessageTooLarge(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{Listener: config.PostgresListener{MaxMessageBytes: 1 << 20}})
	c := connect(t, env.ConnString("alice", env.Token(t, "alice")))
	_, err := c.Exec(context.Background(), "SELECT '"+strings.Repeat("x", 2<<20)+"'")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08P01" || !strings.Contains(pgErr.Message, "exceeds the limit") {
		t.Fatalf("err = %v", err)
	}
}

// TestRefusedTokenFloodGated: past a burst of refused tokens from one
// address, its connections are refused at once, before TLS (the client
// sees its TLS request answered by an error) until the window passes; a
// good token then gets in again.
func TestRefusedTokenFloodGated(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{})
	refused, gated := 0, 0
	for i := 0; i < 200 && gated < 5; i++ {
		c, err := pgx.Connect(context.Background(), env.ConnString("alice", fmt.Sprintf("not-a-token-%d", i)))
		var pe *pgconn.PgError
		switch {
		case err == nil:
			_ = c.Close(context.Background())
			t.Fatalf("attempt %d: a garbage token got in", i)
		case errors.As(err, &pe) && pe.Code == "28P01":
			refused++
		case strings.Contains(err.Error(), "refused TLS"), errors.As(err, &pe) && pe.Code == "53300":
			gated++
		default:
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if refused < 20 || gated == 0 {
		t.Fatalf("%d refused, %d gated", refused, gated)
	}
	// Without TLS the refusal is the FATAL itself (or, if the window has
	// passed meanwhile, the token's refusal).
	if e := connectErr(t, env.ConnString("alice", "x", "sslmode=disable")); e.Code == "53300" &&
		!strings.Contains(e.Message, "too many refused connections from 127.0.0.1") {
		t.Errorf("gated, no TLS: %s %q", e.Code, e.Message)
	}
	waitFor(t, func() bool {
		c, err := pgx.Connect(context.Background(), env.ConnString("alice", env.Token(t, "alice")))
		if err == nil {
			_ = c.Close(context.Background())
		}
		return err == nil
	})
}
