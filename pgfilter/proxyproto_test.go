package pgfilter_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// The proxy (Envoy) connects from 127.0.0.2 in these tests; anything else
// on loopback is not a trusted proxy.
const (
	proxyIP      = "127.0.0.2"
	untrustedIP  = "127.0.0.1"
	remoteClient = "203.0.113.7:41000"
)

// proxiedListener is a Postgres listener behind a proxy at proxyIP.
func proxiedListener() config.PostgresListener {
	return config.PostgresListener{ProxyProtocol: config.ProxyProtocolRequired, TrustedProxies: []string{proxyIP + "/32"}}
}

// addressPolicy allows a statement only from remoteClient's host, and
// says in its reasons which client address it saw.
const addressPolicy = `package custos

decision := {"allow": true, "reasons": [sprintf("allowed from %s", [input.session.client_address])]} if {
	startswith(input.session.client_address, "203.0.113.7:")
}

decision := {"allow": false, "reasons": [sprintf("refused from %s", [input.session.client_address])]} if {
	not startswith(input.session.client_address, "203.0.113.7:")
}
`

func addressPolicyEngine(t *testing.T) *policy.Engine {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "address.rego"), []byte(addressPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	// The decision cache leaves session fields out of its key.
	eng, err := policy.New(context.Background(), policy.Options{Dir: dir, CacheEntries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// TestProxyProtocolClientAddress: the address a trusted proxy's header
// carries is the session's client address in session events, in the
// policy input and in the session the hooks see.
func TestProxyProtocolClientAddress(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{
		Listener: proxiedListener(), Policy: addressPolicyEngine(t), OnSessionEvent: se.add,
	})
	remote := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{
		Target: env.Addr, LocalIP: proxyIP, Source: netip.MustParseAddrPort(remoteClient),
	})
	other := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{
		Target: env.Addr, LocalIP: proxyIP, Source: netip.MustParseAddrPort("198.51.100.9:50000"),
	})
	ctx := context.Background()

	c := connect(t, env.ConnStringVia(remote.Addr, "alice", env.Token(t, "alice", "agents")))
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 from %s: %v", remoteClient, err)
	}
	_ = c.Close(ctx)

	c2 := connect(t, env.ConnStringVia(other.Addr, "alice", env.Token(t, "alice", "agents")))
	_, err := c2.Exec(ctx, "SELECT 1")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, "refused from 198.51.100.9:50000") {
		t.Fatalf("SELECT 1 from 198.51.100.9: %v, want the policy's refusal naming that address", err)
	}
	_ = c2.Close(ctx)

	waitFor(t, func() bool { return countKind(se.list(), pgfilter.SessionClosed) == 2 })
	var seen int
	for _, ev := range se.list() {
		if ev.User != "alice" {
			continue
		}
		seen++
		want := remoteClient
		if seen > 3 {
			want = "198.51.100.9:50000"
		}
		if ev.ClientAddr != want {
			t.Errorf("%s event: client address %q, want %q", ev.Kind, ev.ClientAddr, want)
		}
		if ev.Session != nil && ev.Session.ClientAddr != want {
			t.Errorf("%s event: session client address %q, want %q", ev.Kind, ev.Session.ClientAddr, want)
		}
		if !ev.TLS {
			t.Errorf("%s event: not TLS", ev.Kind)
		}
	}
	if seen != 6 {
		t.Fatalf("%d events, want 6 (succeeded, opened, closed twice): %+v", seen, se.list())
	}
}

func countKind(evs []pgfilter.SessionEvent, k pgfilter.SessionEventKind) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == k {
			n++
		}
	}
	return n
}

// refusal reads what the proxy sends a connection it refuses: one FATAL
// ErrorResponse, then the end of the connection.
func refusal(t *testing.T, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	fe := pgproto3.NewFrontend(c, c)
	msg, err := fe.Receive()
	er, ok := msg.(*pgproto3.ErrorResponse)
	if err != nil || !ok || er.Severity != "FATAL" {
		t.Fatalf("got %T %+v %v, want a FATAL ErrorResponse", msg, msg, err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the connection stayed open after the refusal")
	}
	return er
}

func dialFrom(t *testing.T, ip, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// TestProxyProtocolRefusals: on a listener behind a proxy, a peer that is
// not a trusted proxy is refused before it says anything, and a trusted
// one is refused without a valid header: no fallback to the peer's
// address.
func TestProxyProtocolRefusals(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{Listener: proxiedListener(), OnSessionEvent: se.add})
	ssl, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	src, dst := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:5432")
	good := pgfiltertest.ProxyV2Header(src, dst)
	badVersion := append([]byte{}, good...)
	badVersion[12] = 0x11

	t.Run("untrusted peer says nothing", func(t *testing.T) {
		t.Parallel()
		// Nothing is written: the refusal comes before any read.
		if e := refusal(t, dialFrom(t, untrustedIP, env.Addr)); e.Code != "08004" {
			t.Fatalf("code %s: %s", e.Code, e.Message)
		}
	})
	tests := []struct {
		name  string
		from  string
		send  []byte
		close bool // half-close after sending
		code  string
	}{
		{"untrusted peer with a valid header", untrustedIP, append(append([]byte{}, good...), ssl...), false, "08004"},
		{"missing header", proxyIP, ssl, false, "08P01"},
		{"v1 line instead of startup", proxyIP, []byte("PROXY TCP4 127.0.0.1 127.0.0.1 40000\r\n"), false, "08P01"},
		{"bad version", proxyIP, append(badVersion, ssl...), false, "08P01"},
		{"truncated", proxyIP, good[:20], true, "08P01"},
		{"udp family", proxyIP, append(append(append([]byte{}, good[:13]...), 0x12), good[14:]...), false, "08P01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := dialFrom(t, tt.from, env.Addr)
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.close {
				_ = c.CloseWrite()
			}
			if e := refusal(t, c); e.Code != tt.code {
				t.Fatalf("code %s (%s), want %s", e.Code, e.Message, tt.code)
			}
		})
	}
	// A header that stops halfway is not waited for past its deadline.
	t.Run("stalled", func(t *testing.T) {
		t.Parallel()
		c := dialFrom(t, proxyIP, env.Addr)
		if _, err := c.Write(good[:20]); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if e := refusal(t, c); e.Code != "08P01" {
			t.Fatalf("code %s (%s)", e.Code, e.Message)
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Fatalf("refused after %v", d)
		}
	})
	// Real clients: straight to the listener, and through a proxy that
	// sends no header.
	t.Run("clients", func(t *testing.T) {
		t.Parallel()
		tok := env.Token(t, "alice", "agents")
		none := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{
			Target: env.Addr, LocalIP: proxyIP, Header: func(_, _ netip.AddrPort) []byte { return nil },
		})
		for _, c := range []struct{ name, conn, code string }{
			{"direct", env.ConnString("alice", tok, "sslmode=disable"), "08004"},
			{"no header", env.ConnStringVia(none.Addr, "alice", tok, "sslmode=disable"), "08P01"},
		} {
			if e := connectErr(t, c.conn); e.Code != c.code {
				t.Fatalf("%s: %s %s", c.name, e.Code, e.Message)
			}
			// With TLS asked for, pgx sees the refusal of its SSLRequest.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if conn, err := pgx.Connect(ctx, strings.Replace(c.conn, "sslmode=disable", "sslmode=require", 1)); err == nil {
				_ = conn.Close(ctx)
				t.Fatalf("%s: connected with TLS", c.name)
			}
			cancel()
		}
	})
	t.Cleanup(func() {
		if evs := se.list(); len(evs) != 0 {
			t.Errorf("refused connections reported sessions: %+v", evs)
		}
	})
}

// TestProxyProtocolCleartextRefused: behind a proxy a token sent without
// TLS is refused whatever password_transport says, even when the carried
// client address is loopback (a client next to Envoy sent it in the
// clear); with TLS from the client it is accepted.
func TestProxyProtocolCleartextRefused(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{config.TransportTLSOrLoopback, config.TransportAny} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			var se sessionEvents
			l := proxiedListener()
			l.PasswordTransport = transport
			env := pgfiltertest.Start(t, pgfiltertest.Options{Listener: l, OnSessionEvent: se.add})
			// The header carries the client's own loopback address.
			fwd := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{Target: env.Addr, LocalIP: proxyIP})
			tok := env.Token(t, "alice", "agents")
			e := connectErr(t, env.ConnStringVia(fwd.Addr, "alice", tok, "sslmode=disable"))
			if e.Code != "28000" || !strings.Contains(e.Message, "requires TLS") {
				t.Fatalf("cleartext token: %s %s", e.Code, e.Message)
			}
			evs := se.list()
			if len(evs) != 1 || evs[0].Kind != pgfilter.SessionAuthFailed || evs[0].Reason != "insecure_transport" ||
				!strings.HasPrefix(evs[0].ClientAddr, "127.0.0.1:") {
				t.Fatalf("events %+v, want one insecure_transport failure from the carried loopback address", evs)
			}
			c := connect(t, env.ConnStringVia(fwd.Addr, "alice", tok, "sslmode=require"))
			if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDirectListenerRefusesProxyHeader: a listener that takes clients
// directly does not take a PROXY header's word for the client's address:
// it refuses the connection.
func TestDirectListenerRefusesProxyHeader(t *testing.T) {
	t.Parallel()
	env := pgfiltertest.Start(t, pgfiltertest.Options{Listener: config.PostgresListener{PasswordTransport: config.TransportTLSOrLoopback}})
	for _, h := range [][]byte{
		pgfiltertest.ProxyV2Header(netip.MustParseAddrPort("127.0.0.1:1234"), netip.MustParseAddrPort("127.0.0.1:5432")),
		pgfiltertest.ProxyV1Header(netip.MustParseAddrPort("127.0.0.1:1234"), netip.MustParseAddrPort("127.0.0.1:5432")),
	} {
		c := rawConn(t, env.Addr)
		if _, err := c.Write(h); err != nil {
			t.Fatal(err)
		}
		if e := refusal(t, c); e.Code != "08P01" || !strings.Contains(e.Message, "PROXY") {
			t.Fatalf("%s %s", e.Code, e.Message)
		}
	}
}

// TestProxyProtocolClients: psql and pgx with sslmode=require through a
// forwarder sending what Envoy's upstream PROXY protocol transport sends
// (v2; v1 and LOCAL too) work end to end, cancel requests included.
func TestProxyProtocolClients(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{Listener: proxiedListener(), OnSessionEvent: se.add})
	v2 := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{Target: env.Addr, LocalIP: proxyIP, Source: netip.MustParseAddrPort(remoteClient)})
	v1 := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{Target: env.Addr, LocalIP: proxyIP, Source: netip.MustParseAddrPort("[2001:db8::7]:41001"), Header: pgfiltertest.ProxyV1Header})
	local := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{Target: env.Addr, LocalIP: proxyIP, Header: func(_, _ netip.AddrPort) []byte { return pgfiltertest.ProxyV2LocalHeader() }})
	tok := env.Token(t, "alice", "agents")
	ctx := context.Background()

	t.Run("pgx", func(t *testing.T) {
		for _, f := range []*pgfiltertest.Forwarder{v2, v1, local} {
			c := connect(t, env.ConnStringVia(f.Addr, "alice", tok, "sslmode=require"))
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM cards WHERE pan = $1", "4242424242424242").Scan(&n); err != nil || n != 1 {
				t.Fatalf("via %s: %d %v", f.Addr, n, err)
			}
			_ = c.Close(ctx)
		}
	})
	t.Run("pgx cancel", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(env.ConnStringVia(v2.Addr, "alice", tok, "sslmode=require"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 5 * time.Second}
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err = c.Exec(cctx, "SELECT pg_sleep(10)")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("cancelled statement: %v, want 57014", err)
		}
	})
	t.Run("psql", func(t *testing.T) {
		psql, err := exec.LookPath("psql")
		if err != nil {
			t.Skip("psql not installed")
		}
		conn := strings.Replace(env.ConnStringVia(v2.Addr, "alice", "", "sslmode=require"), " password=", "", 1)
		cmd := exec.Command(psql, "-X", "--no-password", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conn,
			"-c", "SELECT 40 + 2")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+tok, "PGSSLMODE=require")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "42") {
			t.Fatalf("psql: %v\n%s", err, out)
		}
	})

	waitFor(t, func() bool { return countKind(se.list(), pgfilter.SessionClosed) >= 5 })
	addrs := map[string]bool{}
	for _, ev := range se.list() {
		if ev.Kind == pgfilter.SessionOpened {
			addrs[ev.ClientAddr] = true
			if !ev.TLS {
				t.Errorf("session from %s without TLS", ev.ClientAddr)
			}
		}
	}
	// v2 and v1 carry the client; LOCAL keeps the proxy's own address.
	for _, want := range []string{remoteClient, "[2001:db8::7]:41001"} {
		if !addrs[want] {
			t.Errorf("no session from %s: %v", want, addrs)
		}
	}
	var proxyOwn bool
	for a := range addrs {
		proxyOwn = proxyOwn || strings.HasPrefix(a, proxyIP+":")
	}
	if !proxyOwn {
		t.Errorf("the LOCAL header's session does not have the proxy's address: %v", addrs)
	}
}

// TestServeProxied: one server, two listeners (as `custos dev` runs
// them): the direct one takes clients, the proxied one only connections
// from its trusted proxies with a PROXY header, carrying the client.
func TestServeProxied(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{OnSessionEvent: se.add})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- env.Server.ServeProxied(ln, []netip.Prefix{netip.MustParsePrefix(proxyIP + "/32")})
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		if err := <-served; err == nil {
			t.Error("ServeProxied returned nil")
		}
	})
	if err := env.Server.ServeProxied(ln, nil); err == nil {
		t.Error("ServeProxied without trusted proxies accepted")
	}
	tok := env.Token(t, "alice", "agents")
	fwd := pgfiltertest.StartForwarder(t, pgfiltertest.ForwarderOptions{Target: ln.Addr().String(), LocalIP: proxyIP, Source: netip.MustParseAddrPort(remoteClient)})
	c := connect(t, env.ConnStringVia(fwd.Addr, "alice", tok))
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	direct := connect(t, env.ConnString("alice", tok))
	if _, err := direct.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if e := connectErr(t, env.ConnStringVia(ln.Addr().String(), "alice", tok, "sslmode=disable")); e.Code != "08004" {
		t.Fatalf("direct client on the proxied listener: %s %s", e.Code, e.Message)
	}
	var fromRemote, fromLoopback bool
	for _, ev := range se.list() {
		if ev.Kind == pgfilter.SessionOpened {
			fromRemote = fromRemote || ev.ClientAddr == remoteClient
			fromLoopback = fromLoopback || strings.HasPrefix(ev.ClientAddr, "127.0.0.1:")
		}
	}
	if !fromRemote || !fromLoopback {
		t.Fatalf("sessions: %+v", se.list())
	}
}
