package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/stats"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/xds"
)

// gatewayGRPCOptions are the gRPC server's options: xDS' keepalive and
// stream limits, message sizes that fit the bodies ext_proc masks, and,
// when tracing is on, a span per RPC (health checks left out).
func gatewayGRPCOptions(tr *tracing) []grpc.ServerOption {
	opts := append(grpcServerOptions(), extproc.ServerOptions(0)...)
	if tr != nil && tr.t.Enabled() {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tr.t.TracerProvider()),
			otelgrpc.WithPropagators(tr.t.Propagator()),
			otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
				return !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.Health/")
			}),
		)))
	}
	return opts
}

// extprocDeps is what Envoy's callouts need from the gateway.
type extprocDeps struct {
	verifier  *authn.Verifier
	policy    *policy.Engine
	masker    *mask.Masker
	approvals *approval.Service // nil: writes that need approval are refused
	audit     extproc.Recorder  // nil: no audit journal
	// authFailures records refused tokens (nil: through audit, one
	// record each).
	authFailures extproc.AuthFailureRecorder
	health       *health.Server
	tracing      *tracing // nil: no spans
}

// serveExtproc registers Envoy's external authorization (HTTP and network
// Check) and external processing services on g. Without a policy engine
// (dev mode's benchmark baseline) nothing is registered: Envoy's filters
// then fail closed.
func serveExtproc(g *grpc.Server, cfg *config.Config, d extprocDeps, log *slog.Logger, reg prometheus.Registerer) error {
	if d.policy == nil {
		return nil
	}
	key, err := grantKey(cfg)
	if err != nil {
		return err
	}
	if cfg.ExtProc.GrantKey == nil && cfg.Approvals.Store == config.StorePostgres {
		log.Warn("extproc.grant_key is not set: this replica seals decisions with its own key, which replicas sharing one Envoy must share",
			"grant_key_file", extproc.GrantKeyFile(cfg.DataDir))
	}
	_, err = extproc.Register(g, extproc.Options{
		GrantKey:          key,
		Verifier:          d.verifier,
		Policy:            d.policy,
		Masker:            d.masker,
		Approvals:         d.approvals,
		ApprovalURL:       cfg.Approvals.PublicURL,
		MaxMessageTimeout: xds.MaxApprovalWait,
		Audit:             d.audit,
		AuthFailures:      d.authFailures,
		Health:            d.health,
		Logger:            log.With("component", "extproc"),
		Registerer:        reg,
		Tracer:            d.tracing.tracer(),
		Propagator:        d.tracing.propagator(),
	})
	return err
}

// grantKey is the key that seals the decisions ext_authz hands ext_proc:
// extproc.grant_key, else DATA_DIR/extproc/grant.key (generated when
// missing, which suits a single custos).
func grantKey(cfg *config.Config) ([]byte, error) {
	if k := cfg.ExtProc.GrantKey; k != nil {
		v, err := k.Read()
		if err != nil {
			return nil, fmt.Errorf("extproc.grant_key: %w", err)
		}
		if len(v) < extproc.MinGrantKeyBytes {
			return nil, fmt.Errorf("extproc.grant_key: %d bytes, at least %d are required", len(v), extproc.MinGrantKeyBytes)
		}
		return []byte(v), nil
	}
	key, err := extproc.LoadOrCreateGrantKey(extproc.GrantKeyFile(cfg.DataDir))
	if err != nil {
		return nil, fmt.Errorf("extproc: %w", err)
	}
	return key, nil
}
