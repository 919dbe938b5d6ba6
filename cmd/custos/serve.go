package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/approvalapi"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/discover"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/internal/sqlclass"
	"github.com/custos-dev/custos/pgfilter"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("custos serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "custos.yaml", "config file")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	lns, err := listen(cfg)
	if err != nil {
		return err
	}
	gw, err := newGateway(ctx, cfg, lns, log, gatewayOptions{configPath: *cfgPath})
	if err != nil {
		lns.close()
		return err
	}
	return gw.serve(ctx)
}

// listeners are bound before anything else so that ":0" addresses are
// known to whoever needs them (the dev issuer's URL, dev.env).
type listeners struct {
	pg, grpc, admin, pprof net.Listener
	// pgEnvoy (dev only) is a second Postgres listener that only the
	// local Envoy reaches: PROXY protocol required from loopback.
	pgEnvoy net.Listener
}

func listen(cfg *config.Config) (*listeners, error) {
	var lns listeners
	var err error
	if lns.pg, err = net.Listen("tcp", cfg.Listeners.Postgres.Address); err != nil {
		return nil, fmt.Errorf("listeners.postgres.address: %w", err)
	}
	if a := cfg.Listeners.GRPC.Address; a != "" {
		if lns.grpc, err = net.Listen("tcp", a); err != nil {
			lns.close()
			return nil, fmt.Errorf("listeners.grpc.address: %w", err)
		}
	}
	if a := cfg.Listeners.Admin.Address; a != "" {
		if lns.admin, err = net.Listen("tcp", a); err != nil {
			lns.close()
			return nil, fmt.Errorf("listeners.admin.address: %w", err)
		}
	}
	if a := cfg.Listeners.Pprof.Address; a != "" {
		if lns.pprof, err = net.Listen("tcp", a); err != nil {
			lns.close()
			return nil, fmt.Errorf("listeners.pprof.address: %w", err)
		}
	}
	return &lns, nil
}

func (l *listeners) close() {
	for _, ln := range []net.Listener{l.pg, l.grpc, l.admin, l.pprof, l.pgEnvoy} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// gateway is custos assembled from its config.
type gateway struct {
	cfg    *config.Config
	log    *slog.Logger
	lns    *listeners
	pg     *pgfilter.Server
	grpc   *grpc.Server
	health *health.Server
	admin  *http.Server
	// pprof serves Go's profiles on a listener of its own (nil: off).
	pprof  *http.Server
	policy *policy.Engine
	// approvals parks statements the policy sends for approval (nil
	// without policy).
	approvals *approvals
	audit     *auditor
	tracing   *tracing
	// discovery finds card numbers in undeclared columns (nil when off).
	discovery *discover.Runner
	ready     atomic.Bool
}

// newGateway builds every part; extraAdmin may mount more handlers on the
// admin listener (the dev issuer).
// gatewayOptions are what dev mode adds to a config.
type gatewayOptions struct {
	// extraAdmin mounts more handlers on the admin listener (the dev issuer).
	extraAdmin func(*http.ServeMux)
	// noPolicy runs without statement policy (dev mode's benchmark
	// baseline only; never from a config file).
	noPolicy bool
	// configPath is the config file, reloaded for xDS (serve only).
	configPath string
}

func newGateway(ctx context.Context, cfg *config.Config, lns *listeners, log *slog.Logger, gopts gatewayOptions) (*gateway, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	aud, err := openAuditor(ctx, cfg, log.With("component", "audit"), reg, os.Getenv)
	if err != nil {
		return nil, err
	}
	built := false
	defer func() {
		if !built {
			aud.close()
		}
	}()
	tr, err := openTracing(ctx, log.With("component", "telemetry"), os.Getenv)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !built {
			tr.shutdown()
		}
	}()

	httpClient, err := issuerHTTPClient(cfg.OIDC.Issuers)
	if err != nil {
		return nil, err
	}
	issuers := make([]authn.Issuer, 0, len(cfg.OIDC.Issuers))
	for _, is := range cfg.OIDC.Issuers {
		issuers = append(issuers, authn.Issuer{
			URL: is.URL, Audiences: is.Audiences, GroupsClaim: is.GroupsClaim,
			UserClaim: is.UserClaim, Algorithms: is.Algorithms,
		})
	}
	verifier, err := authn.NewVerifier(ctx, issuers, authn.WithHTTPClient(httpClient), authn.WithClockSkew(cfg.OIDC.ClockSkew))
	if err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	var tlsCfg *tls.Config
	if tf := cfg.Listeners.Postgres.TLS; tf.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(tf.CertFile, tf.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("listeners.postgres.tls: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	masker, err := newMasker(cfg.Masking)
	if err != nil {
		return nil, err
	}
	var eng *policy.Engine
	var cls *sqlclass.Classifier
	if !gopts.noPolicy {
		eng, err = policy.New(ctx, policy.Options{
			Dir: cfg.Policy.Dir, Logger: log.With("component", "policy"), Timeout: cfg.Policy.Timeout,
			CacheEntries: cfg.Policy.CacheEntries, Registerer: reg, OnReload: aud.policyReload,
		})
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
	}
	if eng != nil || aud.enabled() {
		// Statement records carry the normalized text even without policy.
		cls = sqlclass.New(cfg.Policy.ClassifierCacheEntries)
	}
	var apr *approvals
	var aprSvc *approval.Service
	if eng != nil {
		apr, err = openApprovals(ctx, cfg, log.With("component", "approval"), aud.approvalEvent)
		if err != nil {
			return nil, err
		}
		aprSvc = apr.svc
	}
	pgOpts := pgfilter.Options{
		Listener:    cfg.Listeners.Postgres,
		Sessions:    cfg.Sessions,
		Resources:   cfg.Resources,
		TLSConfig:   tlsCfg,
		Verifier:    verifier,
		Masker:      masker,
		Policy:      eng,
		Classifier:  cls,
		Approvals:   aprSvc,
		ApprovalURL: cfg.Approvals.PublicURL,
		Logger:      log.With("component", "pgfilter"),
		Registerer:  reg,

		ResultRows: max(cfg.Audit.ReplayRows, 0),
		Tracer:     tr.tracer(),
	}
	aud.pgfilterAudit(&pgOpts)
	pg, err := pgfilter.New(pgOpts)
	if err != nil {
		if apr != nil {
			apr.close()
		}
		return nil, err
	}
	gw := &gateway{cfg: cfg, log: log, lns: lns, pg: pg, policy: eng, approvals: apr, audit: aud, tracing: tr}
	gw.discovery = newDiscoverer(cfg, eng, log.With("component", "discovery"), aud.discoveryEvent)
	if lns.grpc != nil {
		creds, err := grpcCredentials(cfg.Listeners.GRPC, log.With("component", "grpc"))
		if err != nil {
			if apr != nil {
				apr.close()
			}
			return nil, err
		}
		if !cfg.Listeners.GRPC.MutualTLS() {
			log.Warn("grpc listener asks for no client certificate: whoever reaches it gets decisions and the xds configuration",
				"address", lns.grpc.Addr().String(), "tls", cfg.Listeners.GRPC.ServesTLS())
		}
		gw.grpc = grpc.NewServer(append(gatewayGRPCOptions(tr), creds...)...)
		gw.health = health.NewServer()
		healthpb.RegisterHealthServer(gw.grpc, gw.health)
		if err := serveXDS(ctx, gw.grpc, cfg, gopts.configPath, log, reg, aud.xdsEvent); err != nil {
			if apr != nil {
				apr.close()
			}
			return nil, err
		}
		deps := extprocDeps{verifier: verifier, policy: eng, masker: masker, approvals: aprSvc, health: gw.health, tracing: tr}
		if aud.enabled() {
			deps.audit, deps.authFailures = aud.j, aud.authFailures
		}
		if err := serveExtproc(gw.grpc, cfg, deps, log, reg); err != nil {
			if apr != nil {
				apr.close()
			}
			return nil, err
		}
	}
	if lns.admin != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok\n")
		})
		mux.HandleFunc("GET /readyz", gw.readyz)
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if apr != nil {
			h := approvalapi.NewHandler(apr.svc, verifier, approvalapi.Options{
				Logger: log.With("component", "approvalapi"), BaseURL: cfg.Approvals.PublicURL,
			})
			for _, p := range approvalapi.Patterns {
				mux.Handle(p, h)
			}
		}
		if gopts.extraAdmin != nil {
			gopts.extraAdmin(mux)
		}
		gw.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	if lns.pprof != nil {
		gw.pprof = newPprofServer()
	}
	built = true
	return gw, nil
}

// readyz reports ready when custos accepts connections and every upstream
// answers on TCP.
func (g *gateway) readyz(w http.ResponseWriter, r *http.Request) {
	if !g.ready.Load() {
		http.Error(w, "not ready: starting or shutting down", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	for _, res := range g.cfg.Resources {
		c, err := d.DialContext(ctx, "tcp", res.Address)
		if err != nil {
			http.Error(w, fmt.Sprintf("not ready: resource %s unreachable", res.Name), http.StatusServiceUnavailable)
			return
		}
		_ = c.Close()
	}
	_, _ = io.WriteString(w, "ready\n")
}

// serve runs until ctx is done, then shuts down gracefully.
func (g *gateway) serve(ctx context.Context) error {
	// Cardholder data found in undeclared columns is protected before the
	// first session (up to discovery.start_wait).
	rediscover := make(chan struct{}, 1)
	if g.discovery != nil {
		g.discovery.Start(ctx, rediscover)
	}
	errc := make(chan error, 5)
	var wg sync.WaitGroup
	start := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	start("pgfilter", func() error {
		if err := g.pg.Serve(g.lns.pg); !errors.Is(err, pgfilter.ErrServerClosed) {
			return err
		}
		return nil
	})
	if g.lns.pgEnvoy != nil {
		start("pgfilter-envoy", func() error {
			if err := g.pg.ServeProxied(g.lns.pgEnvoy, devEnvoyProxies); !errors.Is(err, pgfilter.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if g.grpc != nil {
		start("grpc", func() error { return g.grpc.Serve(g.lns.grpc) })
		g.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	}
	if g.admin != nil {
		start("admin", func() error {
			if err := g.admin.Serve(g.lns.admin); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if g.pprof != nil {
		g.log.Warn("go profiles served without authentication", "address", g.lns.pprof.Addr().String())
		start("pprof", func() error {
			if err := g.pprof.Serve(g.lns.pprof); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if g.policy != nil {
		go g.policy.Watch(ctx)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					if err := g.policy.Reload(ctx); err == nil {
						g.log.Info("policy reloaded on SIGHUP", "version", g.policy.Version())
					}
					select {
					case rediscover <- struct{}{}:
					default: // a pass is due already
					}
				}
			}
		}()
	} else {
		g.log.Warn("statement policy is OFF: every statement is relayed undecided")
	}
	g.ready.Store(true)
	g.log.Info("custos started", "postgres", g.lns.pg.Addr().String(), "version", version)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		g.log.Error("listener failed", "error", runErr)
	}
	g.ready.Store(false)
	g.log.Info("custos shutting down", "grace", g.cfg.Sessions.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.Sessions.ShutdownGrace)
	defer cancel()
	if g.health != nil {
		g.health.Shutdown()
	}
	if err := g.pg.Shutdown(sctx); err != nil {
		g.log.Warn("sessions ended by shutdown deadline", "error", err)
	}
	if g.approvals != nil {
		g.approvals.close()
	}
	if g.grpc != nil {
		g.grpc.GracefulStop()
	}
	if g.admin != nil {
		_ = g.admin.Shutdown(sctx)
	}
	if g.pprof != nil {
		_ = g.pprof.Close()
	}
	wg.Wait()
	g.audit.close()      // last: it records the end of everything above
	g.tracing.shutdown() // the spans of the sessions and requests above
	g.log.Info("custos stopped")
	return runErr
}

// newMasker builds the masker from the masking section.
func newMasker(mc config.Masking) (*mask.Masker, error) {
	opts := mask.Options{Default: mask.Strategy(mc.DefaultStrategy)}
	if mc.HMACKey != nil {
		key, err := mc.HMACKey.Read()
		if err != nil {
			return nil, fmt.Errorf("masking.hmac_key: %w", err)
		}
		opts.HMACKey = []byte(key)
	}
	m, err := mask.New(opts)
	if err != nil {
		return nil, fmt.Errorf("masking: %w", err)
	}
	return m, nil
}

// issuerHTTPClient trusts the system roots plus every issuer's CA file.
func issuerHTTPClient(issuers []config.Issuer) (*http.Client, error) {
	var pool *x509.CertPool
	for i, is := range issuers {
		if is.CAFile == "" {
			continue
		}
		if pool == nil {
			var err error
			if pool, err = x509.SystemCertPool(); err != nil {
				pool = x509.NewCertPool()
			}
		}
		pem, err := os.ReadFile(is.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oidc.issuers[%d].ca_file: %w", i, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oidc.issuers[%d].ca_file: no certificate found", i)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, nil
}
