package extproc

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
)

// Defaults of Options.
const (
	// DefaultMaxMessageTimeout is the longest override_message_timeout
	// custos asks for; it must not exceed the ext_proc filter's
	// max_message_timeout, or Envoy ignores the override and times the
	// request out.
	DefaultMaxMessageTimeout = 15 * time.Minute
	// DefaultMaxBodyBytes bounds a body custos holds to mask it, after
	// decompression.
	DefaultMaxBodyBytes = 64 << 20
)

// Service names, as grpc.health.v1 reports them.
const (
	AuthorizationService     = "envoy.service.auth.v3.Authorization"
	ExternalProcessorService = "envoy.service.ext_proc.v3.ExternalProcessor"
)

// Options are what the Envoy callouts need.
type Options struct {
	// GrantKey keys the seal (HMAC-SHA256) of the decision ext_authz hands
	// ext_proc through Envoy's dynamic metadata; required, at least
	// MinGrantKeyBytes bytes. Every replica Envoy may call must have the
	// same key: Check on one replica and ext_proc on another must agree.
	GrantKey []byte
	// Now is the clock of grant seals (default time.Now).
	Now func() time.Time
	// Verifier checks bearer tokens; required.
	Verifier *authn.Verifier
	// Policy decides requests and connections; required.
	Policy *policy.Engine
	// Masker masks response bodies; required.
	Masker *mask.Masker
	// Approvals parks requests that need approval; nil refuses them (403)
	// with a reason saying so.
	Approvals *approval.Service
	// ApprovalURL is the admin listener's base URL; refusals and parked
	// requests name ApprovalURL/approvals/<id>.
	ApprovalURL string
	// MaxMessageTimeout is the ext_proc filter's max_message_timeout: the
	// longest custos holds a parked request (default
	// DefaultMaxMessageTimeout). A request still undecided then is refused
	// and its approval request withdrawn.
	MaxMessageTimeout time.Duration
	// MaxBodyBytes bounds a response body held for masking, decompressed
	// (default DefaultMaxBodyBytes). A larger body is refused (502): it
	// cannot be inspected.
	MaxBodyBytes int
	// TokenCacheTTL is how long a verified bearer token is accepted
	// without checking it again, never past its exp (default
	// DefaultTokenCacheTTL; negative turns the cache off).
	TokenCacheTTL time.Duration
	// Audit, when set, records each HTTP request (ext_proc, once its
	// response is settled, before the client gets the end of it), each
	// refusal (401, 403 from Check, refusals of ext_proc) and each refused
	// connection. A request whose record cannot be written is refused
	// (fail closed). *audit.Journal is a Recorder.
	Audit Recorder
	// AuthFailures, when set, records the refused tokens instead of Audit:
	// the first failure of a source, reason and token at once, repeats
	// aggregated with their counts and sources (*audit.AuthFailures), so
	// that a flood of bad tokens does not cost an fsynced record each.
	AuthFailures AuthFailureRecorder
	// Health, when set, is told that both services serve.
	Health *health.Server
	// Logger receives one line per refusal and parked request; nil
	// discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Tracer, when set, records a span per HTTP request Check decides and
	// per ext_proc stream, continuing the trace Envoy forwards in its
	// traceparent header; nil records none.
	Tracer trace.Tracer
	// Propagator reads that header (default: W3C trace context).
	Propagator propagation.TextMapPropagator
}

// Server implements Envoy's external authorization (HTTP and network) and
// external processing services.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	extprocv3.UnimplementedExternalProcessorServer

	opts    Options
	log     *slog.Logger
	metrics *metrics
	tokens  *tokenCache
	sealer  *sealer
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	var missing []error
	if opts.Verifier == nil {
		missing = append(missing, errors.New("extproc: Options.Verifier is required"))
	}
	if opts.Policy == nil {
		missing = append(missing, errors.New("extproc: Options.Policy is required"))
	}
	if opts.Masker == nil {
		missing = append(missing, errors.New("extproc: Options.Masker is required"))
	}
	sl, err := newSealer(opts.GrantKey, opts.Now)
	if err != nil {
		missing = append(missing, fmt.Errorf("extproc: Options.GrantKey: %w", err))
	}
	if err := errors.Join(missing...); err != nil {
		return nil, err
	}
	if opts.MaxMessageTimeout <= 0 {
		opts.MaxMessageTimeout = DefaultMaxMessageTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.TokenCacheTTL == 0 {
		opts.TokenCacheTTL = DefaultTokenCacheTTL
	}
	return &Server{
		opts: opts, log: log, metrics: newMetrics(opts.Registerer),
		tokens: newTokenCache(opts.Verifier, opts.TokenCacheTTL),
		sealer: sl,
	}, nil
}

// Register builds a Server from opts and registers its Authorization and
// ExternalProcessor services on s.
func Register(s *grpc.Server, opts Options) (*Server, error) {
	srv, err := New(opts)
	if err != nil {
		return nil, err
	}
	authv3.RegisterAuthorizationServer(s, srv)
	extprocv3.RegisterExternalProcessorServer(s, srv)
	if h := opts.Health; h != nil {
		h.SetServingStatus(AuthorizationService, healthpb.HealthCheckResponse_SERVING)
		h.SetServingStatus(ExternalProcessorService, healthpb.HealthCheckResponse_SERVING)
	}
	return srv, nil
}

// messageOverhead is room for the rest of an ext_proc message around a
// body.
const messageOverhead = 1 << 20

// ServerOptions are the options the gRPC server that serves these
// services needs: messages as large as the largest body custos masks
// (maxBodyBytes, 0 for DefaultMaxBodyBytes) in both directions (gRPC's
// default of 4 MiB would fail larger buffered bodies), and long-lived
// stream workers, enough for Envoy's concurrent calls: policy evaluation
// recurses deeply, and on a fresh goroutine per call its stack growth
// costs a fifth of a Check.
func ServerOptions(maxBodyBytes int) []grpc.ServerOption {
	if maxBodyBytes <= 0 {
		maxBodyBytes = DefaultMaxBodyBytes
	}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxBodyBytes + messageOverhead),
		grpc.MaxSendMsgSize(maxBodyBytes + messageOverhead),
		grpc.NumStreamWorkers(uint32(16 * max(runtime.GOMAXPROCS(0), 2))),
	}
}

type metrics struct {
	checks       *prometheus.CounterVec
	checkSeconds prometheus.Histogram
	bodies       *prometheus.CounterVec
	masked       *prometheus.CounterVec
	parked       *prometheus.CounterVec
	grants       *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "extproc", Name: "checks_total",
			Help: "ext_authz checks by kind (http, connection) and result (allow, approve, deny, unauthenticated, error).",
		}, []string{"kind", "result"}),
		checkSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "custos", Subsystem: "extproc", Name: "check_seconds",
			Help:    "Time to answer an ext_authz check.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		bodies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "extproc", Name: "response_bodies_total",
			Help: "Response bodies by result (unchanged, masked, refused).",
		}, []string{"result"}),
		masked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "extproc", Name: "masked_total",
			Help: "Values masked in HTTP responses: pan (PANs and values masked by rule), sad (sensitive authentication data removed).",
		}, []string{"what"}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "extproc", Name: "parked_total",
			Help: "HTTP requests parked for approval, by result (requested, approved, denied, expired, withdrawn, cancelled, timeout, failed).",
		}, []string{"result"}),
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "custos", Subsystem: "extproc", Name: "grants_refused_total",
			Help: "ext_proc streams refused because their authorization decision did not verify, by reason (grant_missing, grant_malformed, grant_unsealed, grant_unbound, grant_request_mismatch, grant_forged, grant_expired, grant_replayed).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.checks, m.checkSeconds, m.bodies, m.masked, m.parked, m.grants)
	}
	return m
}
