// Package pgfiltertest runs a real custos Postgres proxy for tests: a
// throwaway PostgreSQL cluster (shared by a test package) seeded with the
// demo database, an OIDC issuer on loopback, and a pgfilter server with a
// self-signed certificate. Nothing in it is a stand-in: clients talk to
// the real proxy, which talks to the real database.
package pgfiltertest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/devenv"
	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/pgcluster"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/internal/selfsigned"
	"github.com/custos-dev/custos/internal/sqlclass"
	"github.com/custos-dev/custos/pgfilter"
)

// Database is the seeded demo database every Env serves.
const Database = devenv.Database

var shared struct {
	once sync.Once
	base string
	cl   *pgcluster.Cluster
	env  *devenv.Env
	err  error
}

// Main runs a test package's tests and stops the shared cluster after.
func Main(m *testing.M) {
	code := m.Run()
	if shared.cl != nil {
		_ = shared.cl.Stop()
	}
	if shared.base != "" {
		_ = os.RemoveAll(shared.base)
	}
	os.Exit(code)
}

// Upstream returns the package's shared cluster, started on first use with
// TLS on and the demo database seeded, and the resource custos uses for it.
func Upstream(t testing.TB) (*pgcluster.Cluster, config.Resource) {
	t.Helper()
	shared.once.Do(func() {
		shared.base, shared.err = os.MkdirTemp("", "custos-pgfiltertest-")
		if shared.err != nil {
			return
		}
		// The server may run as the postgres user (when tests run as root).
		if shared.err = os.Chmod(shared.base, 0o711); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.cl, shared.err = pgcluster.Start(ctx, pgcluster.Options{
			Dir: filepath.Join(shared.base, "data"),
			TLS: true,
			Settings: map[string]string{
				"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
			},
		})
		if shared.err != nil {
			return
		}
		shared.env, shared.err = devenv.Seed(ctx, shared.cl, shared.base)
	})
	if shared.err != nil {
		t.Fatalf("pgfiltertest: upstream: %v", shared.err)
	}
	// Every session logs in as the gateway unless a test asks for the
	// group logins (Options.GroupLogins): most tests are about custos'
	// own controls, judged with a database that refuses nothing.
	res := shared.env.Resource
	res.Logins = nil
	return shared.cl, res
}

// GroupLogins are the demo database's group logins (devenv): agents as
// devenv.AgentRole (SELECT only, devenv.AgentWriteRole for approved
// statements), dba as devenv.DBARole.
func GroupLogins(t testing.TB) []config.UpstreamLogin {
	t.Helper()
	Upstream(t)
	return slices.Clone(shared.env.Resource.Logins)
}

// Options shape one proxy.
type Options struct {
	// Listener settings (the address is ignored: a loopback port is picked).
	Listener config.PostgresListener
	// Sessions settings.
	Sessions config.Sessions
	// Hooks for every session.
	Hooks []pgfilter.HookFactory
	// Masker turns on masking of every server-to-client path.
	Masker *mask.Masker
	// Policy decides every statement (nil: no statement policy). Use
	// DefaultPolicy for the embedded PCI policy.
	Policy *policy.Engine
	// Approvals parks what the policy sends for approval (nil: refused).
	Approvals *approval.Service
	// NoTLS runs the proxy without a certificate.
	NoTLS bool
	// Logger for the proxy; nil discards.
	Logger *slog.Logger
	// OnSessionEvent is told of authentications and session starts and ends.
	OnSessionEvent func(pgfilter.SessionEvent) error
	// Tracer records a span per session (nil: none).
	Tracer trace.Tracer
	// Statements records every statement (nil: none); ResultRows is how
	// many result rows each record keeps.
	Statements pgfilter.StatementRecorder
	ResultRows int
	// GroupLogins logs sessions in as their group's login (see
	// GroupLogins) instead of the gateway's; Logins, when set, are the
	// group logins instead of those.
	GroupLogins bool
	Logins      []config.UpstreamLogin
}

// Env is a running proxy in front of the shared cluster.
type Env struct {
	Cluster   *pgcluster.Cluster
	Resource  config.Resource
	Issuer    *devissuer.Issuer
	IssuerURL string
	Server    *pgfilter.Server
	Registry  *prometheus.Registry
	// Addr is the proxy's host:port; Host and Port split it.
	Addr, Host, Port string
	// CertFile is the proxy's certificate, for sslrootcert.
	CertFile string
	dir      string
}

// Start runs a proxy for t (its verifier tolerates one second of clock
// skew, so a token minted with a one-second TTL is expired two seconds
// later); it is shut down in t.Cleanup.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	cl, res := Upstream(t)
	switch {
	case opts.Logins != nil:
		res.Logins = opts.Logins
	case opts.GroupLogins:
		res.Logins = GroupLogins(t)
	}
	dir := t.TempDir()
	iss, err := devissuer.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dev-oidc/", http.StripPrefix("/dev-oidc", iss.Handler()))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	issuerURL := ts.URL + "/dev-oidc"
	if err := iss.SetURL(issuerURL); err != nil {
		t.Fatal(err)
	}
	verifier, err := authn.NewVerifier(context.Background(), []authn.Issuer{{
		URL: issuerURL, Audiences: []string{devissuer.DefaultAudience},
	}}, authn.WithClockSkew(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Cluster: cl, Resource: res, Issuer: iss, IssuerURL: issuerURL, dir: dir, Registry: prometheus.NewRegistry()}
	var tlsCfg *tls.Config
	if !opts.NoTLS {
		certPEM, keyPEM, err := selfsigned.Generate([]string{"localhost", "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		e.CertFile = filepath.Join(dir, "server.crt")
		if err := os.WriteFile(e.CertFile, certPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv, err := pgfilter.New(pgfilter.Options{
		Listener:   opts.Listener,
		Sessions:   opts.Sessions,
		Resources:  []config.Resource{res},
		TLSConfig:  tlsCfg,
		Verifier:   verifier,
		Hooks:      opts.Hooks,
		Masker:     opts.Masker,
		Policy:     opts.Policy,
		Approvals:  opts.Approvals,
		Classifier: classifier(opts.Policy != nil || opts.Statements != nil),
		Logger:     logger,
		Registerer: e.Registry,

		OnSessionEvent: opts.OnSessionEvent,
		Tracer:         opts.Tracer,
		Statements:     opts.Statements,
		ResultRows:     opts.ResultRows,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.Server = srv
	e.Addr = ln.Addr().String()
	e.Host, e.Port, _ = net.SplitHostPort(e.Addr)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; err != nil && !errors.Is(err, pgfilter.ErrServerClosed) {
			t.Errorf("pgfilter serve: %v", err)
		}
	})
	return e
}

func classifier(needed bool) *sqlclass.Classifier {
	if !needed {
		return nil
	}
	return sqlclass.New(0)
}

// DefaultPolicy returns an engine with the embedded default policy.
func DefaultPolicy(t testing.TB) *policy.Engine {
	t.Helper()
	eng, err := policy.New(context.Background(), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// Mint returns a token from the Env's issuer.
func (e *Env) Mint(t testing.TB, req devissuer.MintRequest) string {
	t.Helper()
	if req.TTL == 0 {
		req.TTL = time.Hour
	}
	tok, err := e.Issuer.Mint(req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Token returns a one-hour token for sub in groups.
func (e *Env) Token(t testing.TB, sub string, groups ...string) string {
	t.Helper()
	return e.Mint(t, devissuer.MintRequest{Subject: sub, Groups: groups})
}

// ConnString is a libpq keyword/value connection string to the proxy as
// user with password, verifying the proxy's certificate (sslmode
// verify-full) unless extra overrides it. extra entries are "key=value".
func (e *Env) ConnString(user, password string, extra ...string) string {
	s := fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s", e.Host, e.Port, Database, user, password)
	if e.CertFile != "" {
		s += " sslmode=verify-full sslrootcert=" + e.CertFile
	} else {
		s += " sslmode=disable"
	}
	for _, kv := range extra {
		s += " " + kv
	}
	return s
}

// URL is the same as a postgres:// URL (for clients that take only URLs).
func (e *Env) URL(user, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: e.Addr, Path: "/" + Database}
	q := url.Values{}
	if e.CertFile != "" {
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", e.CertFile)
	} else {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Dir is a scratch directory that lives as long as the test.
func (e *Env) Dir() string { return e.dir }
