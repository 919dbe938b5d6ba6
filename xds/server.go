package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/custos-dev/custos/internal/config"
)

// Limits of the gRPC server xDS is served on (ServerOptions).
const (
	// MaxConcurrentStreams caps the streams of one client connection:
	// Envoy multiplexes its ADS stream, every ext_authz Check and every
	// ext_proc stream (parked requests included) over few connections.
	MaxConcurrentStreams = 10000
	// KeepaliveTime and KeepaliveTimeout: custos pings a connection idle
	// this long and drops it when the ping goes unanswered.
	KeepaliveTime    = 30 * time.Second
	KeepaliveTimeout = 10 * time.Second
	// KeepaliveMinTime is the shortest ping interval a client may use
	// (Envoy is configured to ping every 30s).
	KeepaliveMinTime = 10 * time.Second
)

// ServerOptions are the keepalive and stream limits for the gRPC server
// that serves xDS (and custos' other Envoy services).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveMinTime, PermitWithoutStream: true}),
	}
}

// EventKind says what happened to the configuration served to Envoy.
type EventKind string

// Event kinds.
const (
	// EventConfigServed: a new snapshot is served.
	EventConfigServed EventKind = "xds_config_served"
	// EventConfigRejected: a config could not become a snapshot; the
	// previous one is still served.
	EventConfigRejected EventKind = "xds_config_rejected"
	// EventEnvoyRejected: an Envoy refused what it was sent (a NACK) and
	// keeps its previous configuration.
	EventEnvoyRejected EventKind = "xds_envoy_rejected"
	// EventNodeRefused: an xDS request came from a node id not in
	// xds.node_ids and was refused.
	EventNodeRefused EventKind = "xds_node_refused"
)

// Event is one change or refusal of the configuration served to Envoy,
// for the audit record.
type Event struct {
	Kind EventKind
	Time time.Time
	// NodeIDs are the nodes served (EventConfigServed, EventConfigRejected);
	// for EventEnvoyRejected the one node that refused.
	NodeIDs []string
	// TypeURL and Version are the refused resource type and version
	// (EventEnvoyRejected).
	TypeURL string
	Version string
	// Versions are the versions served by type URL: the new ones
	// (EventConfigServed) or those kept (EventConfigRejected).
	Versions map[string]string
	// Reason is why a config, a version or a request was refused.
	Reason string
	// Peer is the address of the client refused (EventNodeRefused).
	Peer string
}

// Options configure a Server.
type Options struct {
	// Logger receives reloads, refusals and Envoy's ACKs and NACKs.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// OnEvent, when set, is called with every Event, outside the
	// server's locks; it must not block for long.
	OnEvent func(Event)
}

// Server serves custos' config to Envoy over ADS and the per-type
// discovery services. It keeps the last good snapshot: a config that
// cannot be served is refused and the previous snapshot stays.
type Server struct {
	log     *slog.Logger
	cache   cachev3.SnapshotCache
	xds     serverv3.Server
	metrics *metrics
	onEvent func(Event)

	mu     sync.Mutex // serializes updates
	snap   *cachev3.Snapshot
	nodes  []string
	served bool // a config was applied
	// servedNodes is nodes for the stream callbacks, which must not wait
	// for an update in progress.
	servedNodes atomic.Pointer[[]string]

	streamsMu    sync.Mutex
	streams      map[int64]*streamState
	deltaStreams map[int64]*streamState
}

// streamState is what the server remembers of one xDS stream: its node
// and, per type, the last response sent (to name what a NACK refuses).
type streamState struct {
	node string
	// peer is the client's address.
	peer string
	sent map[string]sentResponse
}

type sentResponse struct{ nonce, version string }

// New builds the first snapshot from cfg; an error means cfg cannot be
// served. The discovery streams end when ctx is done.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		log:     log,
		metrics: newMetrics(opts.Registerer),
		onEvent: opts.OnEvent,
		streams: map[int64]*streamState{},

		deltaStreams: map[int64]*streamState{},
	}
	lib := libLogger{log: log}
	s.cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, lib)
	s.xds = serverv3.NewServer(ctx, s.cache, s.callbacks())
	snap, err := snapshotOf(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.apply(ctx, cfg.XDS.NodeIDs, snap); err != nil {
		return nil, err
	}
	return s, nil
}

// snapshotOf is cfg's snapshot, or nil when cfg serves no Envoy node.
func snapshotOf(cfg *config.Config) (*cachev3.Snapshot, error) {
	if !cfg.XDS.Enabled() {
		return nil, nil
	}
	return Snapshot(cfg)
}

// Register adds ADS and the listener, route, cluster and endpoint
// discovery services to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
}

// Snapshot is the snapshot being served; nil when no node is served.
func (s *Server) Snapshot() *cachev3.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// NodeIDs are the Envoy node ids being served.
func (s *Server) NodeIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nodes)
}

// Update serves cfg from now on. A config that is invalid or cannot become
// a snapshot is refused: the previous snapshot stays, the reason is logged
// and counted, an EventConfigRejected is emitted, and the error (wrapping
// ErrInvalid) is returned. A config that changes nothing pushes nothing.
func (s *Server) Update(ctx context.Context, cfg *config.Config) error {
	if err := cfg.Validate(); err != nil {
		return s.reject(fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	snap, err := snapshotOf(cfg)
	if err != nil {
		return s.reject(err)
	}
	return s.apply(ctx, cfg.XDS.NodeIDs, snap)
}

// ReloadFile loads the config file at path and serves it (Update); a file
// that cannot be read or parsed is refused like an invalid config.
func (s *Server) ReloadFile(ctx context.Context, path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return s.reject(fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	return s.Update(ctx, cfg)
}

func (s *Server) reject(err error) error {
	s.mu.Lock()
	versions := versionsOf(s.snap)
	nodes := slices.Clone(s.nodes)
	s.mu.Unlock()
	s.metrics.updates.WithLabelValues("rejected").Inc()
	s.log.Error("xds config refused, Envoy keeps the previous configuration",
		slog.Any("error", err), slog.Any("versions", versions), slog.Any("node_ids", nodes))
	s.emit(Event{Kind: EventConfigRejected, NodeIDs: nodes, Versions: versions, Reason: err.Error()})
	return err
}

// apply serves snap to nodes, and stops serving nodes no longer listed.
func (s *Server) apply(ctx context.Context, nodes []string, snap *cachev3.Snapshot) error {
	s.mu.Lock()
	if s.served && slices.Equal(s.nodes, nodes) && maps.Equal(versionsOf(s.snap), versionsOf(snap)) {
		s.mu.Unlock()
		s.metrics.updates.WithLabelValues("unchanged").Inc()
		s.log.Debug("xds config unchanged, nothing pushed")
		return nil
	}
	for _, id := range s.nodes {
		if !slices.Contains(nodes, id) {
			s.cache.ClearSnapshot(id)
		}
	}
	for _, id := range nodes {
		if err := s.cache.SetSnapshot(ctx, id, snap); err != nil {
			s.mu.Unlock()
			return s.reject(fmt.Errorf("xds: serving node %s: %w", id, err))
		}
	}
	s.snap = snap
	s.nodes = slices.Clone(nodes)
	s.served = true
	served := slices.Clone(nodes)
	s.servedNodes.Store(&served)
	s.mu.Unlock()
	versions := versionsOf(snap)
	s.metrics.updates.WithLabelValues("served").Inc()
	if snap == nil {
		s.log.Info("xds serves no Envoy: xds.node_ids is empty")
	} else {
		s.log.Info("xds config served", slog.Any("node_ids", nodes), slog.Any("versions", versions))
	}
	s.emit(Event{Kind: EventConfigServed, NodeIDs: slices.Clone(nodes), Versions: versions})
	return nil
}

func (s *Server) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if s.onEvent != nil {
		s.onEvent(e)
	}
}

// versionsOf is the version of each type in TypeOrder.
func versionsOf(snap *cachev3.Snapshot) map[string]string {
	if snap == nil {
		return nil
	}
	v := make(map[string]string, len(TypeOrder))
	for _, t := range TypeOrder {
		v[t] = snap.GetVersion(t)
	}
	return v
}

// errNoNode is logged for a request whose node id is not served.
var errNoNode = errors.New("node id is not in xds.node_ids: nothing is served to it")
