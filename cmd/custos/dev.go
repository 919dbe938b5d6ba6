package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/devenv"
	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/selfsigned"
)

const defaultDataDir = "./.custos"

// Dev mode defaults: loopback only.
const (
	defaultDevPGListen = "127.0.0.1:6543"
	// The listener Envoy's tcp_proxy reaches, with a PROXY header.
	defaultDevEnvoyPGListen = "127.0.0.1:0"
	defaultDevGRPCListen    = "127.0.0.1:9901"
	defaultDevAdminListen   = "127.0.0.1:9902"
	devIssuerPath           = "/dev-oidc"
	// devEnvoyClient names Envoy's client certificate for the gRPC
	// listener (common name and file names); its URI SAN is the one
	// client identity dev mode's gRPC listener allows.
	devEnvoyClient    = "envoy"
	devEnvoyClientURI = "spiffe://custos-dev/envoy"
)

// devGRPCHosts are the names of dev mode's gRPC certificate: loopback,
// and the host --grpc-listen binds when it is a particular one.
func devGRPCHosts(listen string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h := hostOf(listen); h != "" && h != "0.0.0.0" && h != "::" && !slices.Contains(hosts, h) {
		hosts = append(hosts, h)
	}
	return hosts
}

// runDev runs custos on embedded defaults: an in-process OIDC issuer, a
// throwaway PostgreSQL with demo card data, and the pgfilter listener.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("custos dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir, "where keys, certificates and the demo database live (reused by a second run)")
	pgListen := fs.String("pg-listen", defaultDevPGListen, "Postgres listener for clients")
	envoyPGListen := fs.String("envoy-pg-listen", defaultDevEnvoyPGListen, "Postgres listener for the local Envoy only (PROXY protocol required from loopback; empty: none)")
	grpcListen := fs.String("grpc-listen", defaultDevGRPCListen, "gRPC listener (health; Envoy services)")
	adminListen := fs.String("admin-listen", defaultDevAdminListen, "admin HTTP listener (/healthz, /readyz, /metrics, dev issuer)")
	pprofListen := fs.String("pprof-listen", "", "listener for Go's profiles (/debug/pprof/), loopback only; empty: not served")
	upstreamPort := fs.Int("upstream-port", 0, "port of the demo PostgreSQL (0 picks a free one)")
	policyDir := fs.String("policy-dir", "", "Rego policy directory (default: the embedded PCI policy)")
	noPolicy := fs.Bool("no-policy", false, "relay statements without policy (benchmark baseline only)")
	noAudit := fs.Bool("no-audit", false, "keep no audit journal (benchmark baseline only)")
	auditSync := fs.Duration("audit-sync-interval", config.DefaultAuditSyncInterval, "audit.sync_interval: a plain read's record is written before the client sees it complete and fsynced at most this much later (every other record is fsynced first); 0 fsyncs every record first")
	commitDelay := fs.Duration("audit-commit-delay", config.DefaultAuditCommitDelay, "audit.commit_delay: how long a group commit waits for more records while sessions record concurrently (0: none)")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	if *adminListen == "" {
		return fmt.Errorf("--admin-listen is required: the dev issuer is served there")
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	// 0711: the demo PostgreSQL may run as the postgres user (custos
	// started as root) and must reach its cluster inside; everything
	// secret in here is a 0600 file.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o711); err != nil {
			return err
		}
	}
	iss, err := devissuer.Open(dir)
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(dir, "tls", "server.crt"), filepath.Join(dir, "tls", "server.key")
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return err
	}
	if _, err := selfsigned.LoadOrCreate(certFile, keyFile, []string{"localhost", "127.0.0.1", "::1"}); err != nil {
		return err
	}
	// Mutual TLS between Envoy and the gRPC listener.
	grpcTLS, err := selfsigned.LoadOrCreateMutualTLS(filepath.Join(dir, "tls", "grpc"),
		devGRPCHosts(*grpcListen), devEnvoyClient, devEnvoyClientURI)
	if err != nil {
		return err
	}

	cfg := &config.Config{
		DataDir: dir,
		Listeners: config.Listeners{
			Postgres: config.PostgresListener{
				Address: *pgListen,
				TLS:     config.TLSFiles{CertFile: certFile, KeyFile: keyFile},
			},
			GRPC: config.GRPCListener{Address: *grpcListen, TLS: config.GRPCTLS{
				CertFile: grpcTLS.ServerCertFile, KeyFile: grpcTLS.ServerKeyFile,
				ClientCAFile: grpcTLS.CAFile, AllowedClients: []string{devEnvoyClientURI},
			}},
			Admin: config.Listener{Address: *adminListen},
			Pprof: config.PprofListener{Address: *pprofListen},
		},
	}
	lns, err := listen(cfg)
	if err != nil {
		return err
	}
	defer lns.close()
	if *envoyPGListen != "" {
		if lns.pgEnvoy, err = net.Listen("tcp", *envoyPGListen); err != nil {
			return fmt.Errorf("--envoy-pg-listen: %w", err)
		}
	}

	env, err := devenv.Prepare(ctx, devenv.Options{DataDir: dir, Port: *upstreamPort, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Cluster.Stop(); err != nil {
			log.Error("stopping the demo database", "error", err)
		}
	}()

	issuerURL := "http://" + lns.admin.Addr().String() + devIssuerPath
	if err := iss.SetURL(issuerURL); err != nil {
		return err
	}
	cfg.OIDC.Issuers = []config.Issuer{{URL: issuerURL, Audiences: []string{devissuer.DefaultAudience}}}
	cfg.Resources = []config.Resource{env.Resource}
	cfg.Policy.Dir = *policyDir
	adminURL := "http://" + lns.admin.Addr().String()
	cfg.Approvals.PublicURL = adminURL
	devXDS(cfg, lns, config.EnvoyClientTLS{CAFile: grpcTLS.CAFile, CertFile: grpcTLS.ClientCertFile, KeyFile: grpcTLS.ClientKeyFile})
	cfg.Audit.SyncInterval = auditSync
	cfg.Audit.CommitDelay = commitDelay
	if *noAudit {
		cfg.Audit.Enabled, cfg.Audit.FailClosed = new(false), new(false)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	gw, err := newGateway(ctx, cfg, lns, log, gatewayOptions{
		extraAdmin: func(mux *http.ServeMux) {
			mux.Handle(devIssuerPath+"/", http.StripPrefix(devIssuerPath, iss.Handler()))
		},
		noPolicy: *noPolicy,
	})
	if err != nil {
		return err
	}

	pgAddr := lns.pg.Addr().String()
	vars := [][2]string{
		{"CUSTOS_PG_ADDR", pgAddr},
		{"CUSTOS_PG_HOST", hostOf(pgAddr)},
		{"CUSTOS_PG_PORT", portOf(pgAddr)},
		{"CUSTOS_GRPC_ADDR", lns.grpc.Addr().String()},
		// What Envoy (envoy/bootstrap-ads.yaml) presents to the gRPC
		// listener, and the CA that verifies custos there.
		{"CUSTOS_GRPC_CA_FILE", grpcTLS.CAFile},
		{"CUSTOS_ENVOY_CERT_FILE", grpcTLS.ClientCertFile},
		{"CUSTOS_ENVOY_KEY_FILE", grpcTLS.ClientKeyFile},
		{"CUSTOS_ADMIN_URL", adminURL},
		{"CUSTOS_ISSUER", issuerURL},
		{"CUSTOS_DATABASE", devenv.Database},
		{"CUSTOS_CA_FILE", certFile},
		{"CUSTOS_UPSTREAM_DSN", env.Cluster.DSN(devenv.Database)},
	}
	envFile := filepath.Join(dir, "dev.env")
	if err := writeEnvFile(envFile, vars); err != nil {
		return err
	}
	printQuickstart(stdout, dir, envFile, pgAddr, certFile, adminURL)
	return gw.serve(ctx)
}

// writeEnvFile writes KEY='value' lines a POSIX shell can source.
func writeEnvFile(path string, vars [][2]string) error {
	var b strings.Builder
	b.WriteString("# written by custos dev; source it: . " + path + "\n")
	for _, kv := range vars {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func printQuickstart(w io.Writer, dir, envFile, pgAddr, certFile, adminURL string) {
	self := "custos"
	if exe, err := os.Executable(); err == nil {
		self = exe
	}
	fmt.Fprintf(w, `
custos dev is running (data dir %[1]s; settings in %[2]s).

Connect as an agent with a token as the password:

  export PGPASSWORD="$(%[3]s token --data-dir %[8]s --sub alice --groups agents --act alice@example.com)"
  psql "host=%[4]s port=%[5]s dbname=%[6]s user=alice sslmode=verify-full sslrootcert=%[7]s" -c 'SELECT id, holder, pan FROM cards'

A write waits for a dba's approval. Approve it from another shell:

  . %[2]s
  export CUSTOS_TOKEN="$(%[3]s token --data-dir %[8]s --sub bob --groups dba)"
  %[3]s approvals list
  %[3]s approvals approve APPROVAL_ID

or sign in with that token at %[9]s/approvals

Ctrl-C stops custos and the demo database.
`, dir, envFile, self, hostOf(pgAddr), portOf(pgAddr), devenv.Database, shellQuote(certFile), shellQuote(dir), adminURL)
}
