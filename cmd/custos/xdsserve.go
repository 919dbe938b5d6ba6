package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/xds"
)

// configPollInterval is how often the config file is checked for changes.
const configPollInterval = 2 * time.Second

// Dev mode's Envoy: the node id of envoy/bootstrap-ads.yaml and the port
// of the listener it gets for the demo database.
const (
	devNodeID      = "custos-dev"
	devEnvoyPGPort = 16543
)

// devEnvoyProxies are the addresses dev's Envoy listener trusts: the local
// Envoy only.
var devEnvoyProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// grpcServerOptions are the keepalive and stream limits of custos' gRPC
// server, which serves xDS next to custos' other Envoy services.
func grpcServerOptions() []grpc.ServerOption { return xds.ServerOptions() }

// serveXDS registers the xDS server on g, serving cfg; onEvent (may be
// nil) is told of each configuration served or refused. With a config
// path, the file is reloaded when it changes and on SIGHUP until ctx is
// done; a file that cannot be served keeps the previous configuration.
func serveXDS(ctx context.Context, g *grpc.Server, cfg *config.Config, cfgPath string, log *slog.Logger, reg prometheus.Registerer, onEvent func(xds.Event)) error {
	log = log.With("component", "xds")
	srv, err := xds.New(ctx, cfg, xds.Options{Logger: log, Registerer: reg, OnEvent: onEvent})
	if err != nil {
		return err
	}
	srv.Register(g)
	if cfgPath != "" {
		// The file as served now, hashed before anything is served: a
		// change made once clients see this configuration is a change.
		go watchConfig(ctx, srv, cfgPath, fileHash(cfgPath), log)
	}
	return nil
}

// watchConfig reloads the xDS configuration from path on SIGHUP and when
// the file's content changes from last (its hash). Only xDS follows the
// file: other settings take effect at the next start.
func watchConfig(ctx context.Context, srv *xds.Server, path string, last []byte, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(configPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("reloading xds config on SIGHUP", slog.String("config", path))
		case <-t.C:
			h := fileHash(path)
			if h == nil || bytes.Equal(h, last) {
				continue // unreadable for a moment (being replaced) or unchanged
			}
			log.Info("config file changed, reloading xds config", slog.String("config", path))
		}
		last = fileHash(path)
		// Refusals are logged and counted by the server.
		if err := srv.ReloadFile(ctx, path); err == nil {
			log.Info("xds config reloaded; other settings apply at the next start", slog.String("config", path))
		}
	}
}

func fileHash(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	h := sha256.Sum256(b)
	return h[:]
}

// devXDS has `custos dev` serve envoy/bootstrap-ads.yaml's node: a
// listener for the demo database in front of custos, and custos' own
// clusters, at the addresses its listeners are bound to. Envoy's
// Postgres cluster sends the PROXY protocol, so it goes to dev's second
// Postgres listener (--envoy-pg-listen), which requires it from loopback;
// clients connecting directly use the first, which takes none. envoyTLS is
// how Envoy reaches the gRPC listener.
func devXDS(cfg *config.Config, lns *listeners, envoyTLS config.EnvoyClientTLS) {
	if lns.grpc == nil || lns.pgEnvoy == nil || len(cfg.Resources) == 0 {
		return
	}
	cfg.XDS = config.XDS{
		NodeIDs:         []string{devNodeID},
		GRPCAddress:     lns.grpc.Addr().String(),
		PgfilterAddress: lns.pgEnvoy.Addr().String(),
		ListenHost:      "127.0.0.1",
		PostgresPorts:   map[string]int{cfg.Resources[0].Name: devEnvoyPGPort},
		GRPCTLS:         envoyTLS,
	}
}
