package xds_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/xds"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// versionRecorder sees every DiscoveryResponse the clients receive, since
// the ADS client's Response carries only the resources.
type versionRecorder struct {
	mu   sync.Mutex
	last map[string]*discoverygrpc.DiscoveryResponse
}

func (v *versionRecorder) interceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &recordingStream{ClientStream: cs, v: v}, nil
}

func (v *versionRecorder) version(typeURL string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last[typeURL].GetVersionInfo()
}

type recordingStream struct {
	grpc.ClientStream
	v *versionRecorder
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if r, ok := m.(*discoverygrpc.DiscoveryResponse); ok && err == nil {
		s.v.mu.Lock()
		s.v.last[r.GetTypeUrl()] = r
		s.v.mu.Unlock()
	}
	return err
}

// envoyStream is one ADS subscription of a fake Envoy node: a goroutine
// fetches, hands each response over, and acks or nacks as told (the
// client allows one call at a time).
type envoyStream struct {
	typeURL string
	resp    chan fetched
	reply   chan string // "" acks, anything else nacks with it
}

type fetched struct {
	names []string
	err   error
}

func subscribe(t *testing.T, ctx context.Context, conn *grpc.ClientConn, node, typeURL string) *envoyStream {
	t.Helper()
	c := sotw.NewADSClient(ctx, &corev3.Node{Id: node}, typeURL)
	if err := c.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	s := &envoyStream{typeURL: typeURL, resp: make(chan fetched, 1), reply: make(chan string)}
	go func() {
		for {
			r, err := c.Fetch()
			var f fetched
			f.err = err
			if r != nil {
				for _, a := range r.Resources {
					m, uerr := a.UnmarshalNew()
					if uerr != nil {
						f.err = uerr
						break
					}
					f.names = append(f.names, cachev3.GetResourceName(m.(types.Resource)))
				}
				slices.Sort(f.names)
			}
			select {
			case s.resp <- f:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			select {
			case msg := <-s.reply:
				if msg == "" {
					err = c.Ack()
				} else {
					err = c.Nack(msg)
				}
				if err != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

// next waits for the next response.
func (s *envoyStream) next(t *testing.T) []string {
	t.Helper()
	select {
	case f := <-s.resp:
		if f.err != nil {
			t.Fatalf("%s: %v", s.typeURL, f.err)
		}
		return f.names
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no response", s.typeURL)
	}
	return nil
}

// none checks that nothing arrives for a while.
func (s *envoyStream) none(t *testing.T) {
	t.Helper()
	select {
	case f := <-s.resp:
		t.Fatalf("%s: unexpected response %v %v", s.typeURL, f.names, f.err)
	case <-time.After(300 * time.Millisecond):
	}
}

func (s *envoyStream) ack()            { s.reply <- "" }
func (s *envoyStream) nack(msg string) { s.reply <- msg }

// TestServerADS subscribes as an Envoy node over a real gRPC connection
// and follows the configuration through updates, a NACK and a refused
// config.
func TestServerADS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var logs syncBuffer
	reg := prometheus.NewRegistry()
	var evMu sync.Mutex
	var events []xds.Event
	cfg := loadExample(t)
	srv, err := xds.New(ctx, cfg, xds.Options{
		Logger:     slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: reg,
		OnEvent: func(e xds.Event) {
			evMu.Lock()
			events = append(events, e)
			evMu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(xds.ServerOptions()...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()

	rec := &versionRecorder{last: map[string]*discoverygrpc.DiscoveryResponse{}}
	conn, err := grpc.NewClient(ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(rec.interceptor))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	node := cfg.XDS.NodeIDs[0]
	cds := subscribe(t, ctx, conn, node, resourcev3.ClusterType)
	eds := subscribe(t, ctx, conn, node, resourcev3.EndpointType)
	lds := subscribe(t, ctx, conn, node, resourcev3.ListenerType)
	rds := subscribe(t, ctx, conn, node, resourcev3.RouteType)
	all := []*envoyStream{cds, eds, lds, rds}

	// First responses: the example's resources, each acknowledged.
	want := map[*envoyStream][]string{
		cds: {"custos-grpc", "custos-pgfilter", "service-card-vault", "service-payments-api"},
		eds: {"custos-grpc", "custos-pgfilter", "service-card-vault"},
		lds: {"http", "postgres-payments-db"},
		rds: {"http"},
	}
	snap := srv.Snapshot()
	for _, s := range all {
		if got := s.next(t); !slices.Equal(got, want[s]) {
			t.Errorf("%s: %v, want %v", s.typeURL, got, want[s])
		}
		if v := rec.version(s.typeURL); v != snap.GetVersion(s.typeURL) {
			t.Errorf("%s: version %q, want %q", s.typeURL, v, snap.GetVersion(s.typeURL))
		}
		s.ack()
	}
	waitFor(t, "4 ACKs", func() bool { return sumCounter(t, reg, "custos_xds_acks_total") == 4 })
	if !strings.Contains(logs.String(), `"msg":"envoy applied xds config"`) {
		t.Errorf("ACK not logged:\n%s", logs.String())
	}

	// The same config again: nothing is pushed.
	if err := srv.Update(ctx, loadExample(t)); err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		s.none(t)
	}

	// A new route prefix: only RDS gets a new version.
	cfg2 := loadExample(t)
	cfg2.HTTPServices[1].PathPrefixes = []string{"/keys"}
	oldRDS := rec.version(resourcev3.RouteType)
	if err := srv.Update(ctx, cfg2); err != nil {
		t.Fatal(err)
	}
	rds.next(t)
	newRDS := rec.version(resourcev3.RouteType)
	if newRDS == oldRDS || newRDS != srv.Snapshot().GetVersion(resourcev3.RouteType) {
		t.Errorf("RDS version %q -> %q, snapshot has %q", oldRDS, newRDS, srv.Snapshot().GetVersion(resourcev3.RouteType))
	}
	for _, s := range []*envoyStream{cds, eds, lds} {
		s.none(t)
	}

	// Envoy refuses it: logged, counted, emitted, and not sent again.
	rds.nack("route: unknown cluster")
	waitFor(t, "the NACK", func() bool { return sumCounter(t, reg, "custos_xds_nacks_total") == 1 })
	rds.none(t)
	if !strings.Contains(logs.String(), `"msg":"envoy refused xds config, it keeps its previous one"`) ||
		!strings.Contains(logs.String(), `"reason":"route: unknown cluster"`) {
		t.Errorf("NACK not logged:\n%s", logs.String())
	}
	evMu.Lock()
	var nack *xds.Event
	for i := range events {
		if events[i].Kind == xds.EventEnvoyRejected {
			nack = &events[i]
		}
	}
	evMu.Unlock()
	if nack == nil || nack.Version != newRDS || nack.TypeURL != resourcev3.RouteType || !slices.Equal(nack.NodeIDs, []string{node}) {
		t.Errorf("NACK event = %+v, want version %s", nack, newRDS)
	}

	// An invalid config is refused; the snapshot served stays.
	before := srv.Snapshot()
	bad := loadExample(t)
	delete(bad.XDS.PostgresPorts, "payments-db")
	if err := srv.Update(ctx, bad); !errors.Is(err, xds.ErrInvalid) {
		t.Fatalf("invalid config: err = %v", err)
	}
	if srv.Snapshot() != before {
		t.Error("the snapshot changed on an invalid config")
	}
	for _, s := range all {
		s.none(t)
	}
	if !strings.Contains(logs.String(), `"msg":"xds config refused, Envoy keeps the previous configuration"`) {
		t.Errorf("refusal not logged:\n%s", logs.String())
	}
	if n := counter(t, reg, "custos_xds_config_updates_total", "rejected"); n != 1 {
		t.Errorf("rejected updates = %v", n)
	}

	// A fixed config reaches Envoy after the NACK.
	cfg3 := loadExample(t)
	cfg3.HTTPServices[1].PathPrefixes = []string{"/keys", "/v2"}
	if err := srv.Update(ctx, cfg3); err != nil {
		t.Fatal(err)
	}
	rds.next(t)
	if v := rec.version(resourcev3.RouteType); v == newRDS || v != srv.Snapshot().GetVersion(resourcev3.RouteType) {
		t.Errorf("RDS version after the fix = %q", v)
	}
	rds.ack()

	evMu.Lock()
	var kinds []xds.EventKind
	for _, e := range events {
		kinds = append(kinds, e.Kind)
	}
	evMu.Unlock()
	wantKinds := []xds.EventKind{xds.EventConfigServed, xds.EventConfigServed, xds.EventEnvoyRejected, xds.EventConfigRejected, xds.EventConfigServed}
	if !slices.Equal(kinds, wantKinds) {
		t.Errorf("events = %v, want %v", kinds, wantKinds)
	}
}

// TestServerUnknownNode: a node not in xds.node_ids is refused on every
// way in (ADS with the real xDS client, a delta stream, a unary fetch)
// with PERMISSION_DENIED, logged with its node id and the peer's address,
// while a served node on the same connection still gets its
// configuration.
func TestServerUnknownNode(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	var evMu sync.Mutex
	var events []xds.Event
	srv, err := xds.New(ctx, loadExample(t), xds.Options{
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Registerer: reg,
		OnEvent: func(e xds.Event) {
			evMu.Lock()
			events = append(events, e)
			evMu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(xds.ServerOptions()...)
	srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	refused := func(t *testing.T, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("err = %v, want PermissionDenied", err)
		}
	}
	t.Run("ads", func(t *testing.T) {
		for _, node := range []string{"stranger", ""} {
			c := sotw.NewADSClient(ctx, &corev3.Node{Id: node}, resourcev3.ClusterType)
			if err := c.InitConnect(conn); err != nil {
				t.Fatal(err)
			}
			r, err := c.Fetch()
			if r != nil {
				t.Errorf("node %q got %d resources", node, len(r.Resources))
			}
			refused(t, err)
		}
	})
	t.Run("per-type stream", func(t *testing.T) {
		st, err := clusterservice.NewClusterDiscoveryServiceClient(conn).StreamClusters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "stranger"}, TypeUrl: resourcev3.ClusterType}); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		refused(t, err)
	})
	t.Run("delta", func(t *testing.T) {
		st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "stranger"}, TypeUrl: resourcev3.ClusterType}); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		refused(t, err)
	})
	t.Run("fetch", func(t *testing.T) {
		_, err := clusterservice.NewClusterDiscoveryServiceClient(conn).FetchClusters(ctx,
			&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "stranger"}, TypeUrl: resourcev3.ClusterType})
		refused(t, err)
	})
	t.Run("served node", func(t *testing.T) {
		s := subscribe(t, ctx, conn, loadExample(t).XDS.NodeIDs[0], resourcev3.ClusterType)
		if got := s.next(t); len(got) == 0 {
			t.Fatal("the served node got no clusters")
		}
		s.ack()
	})

	if n := sumCounter(t, reg, "custos_xds_refused_requests_total"); n != 5 {
		t.Errorf("refused = %v, want 5", n)
	}
	if !strings.Contains(logs.String(), `"msg":"xds request refused: node id not served","node_id":"stranger","peer_address":"127.0.0.1:`) {
		t.Errorf("refusal not logged with node id and peer address:\n%s", logs.String())
	}
	evMu.Lock()
	defer evMu.Unlock()
	var n int
	for _, e := range events {
		if e.Kind == xds.EventNodeRefused {
			n++
			if !strings.HasPrefix(e.Peer, "127.0.0.1:") || len(e.NodeIDs) != 1 {
				t.Errorf("event = %+v", e)
			}
		}
	}
	if n != 5 {
		t.Errorf("%d refusal events, want 5", n)
	}
}

// TestServerNodeChanges: nodes removed from xds.node_ids stop being
// served; a config with no node ids is served to nobody.
func TestServerNodeChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := loadExample(t)
	cfg.XDS.NodeIDs = []string{"a", "b"}
	srv, err := xds.New(ctx, cfg, xds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.NodeIDs(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("nodes = %v", got)
	}
	cfg2 := loadExample(t)
	cfg2.XDS.NodeIDs = []string{"b"}
	if err := srv.Update(ctx, cfg2); err != nil {
		t.Fatal(err)
	}
	if got := srv.NodeIDs(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("nodes = %v", got)
	}
	// No node ids: nothing to build or serve, even without usable
	// addresses for Envoy.
	none := loadExample(t)
	none.XDS = config.XDS{ListenHost: "0.0.0.0", HTTPPort: 8080}
	if err := srv.Update(ctx, none); err != nil {
		t.Fatal(err)
	}
	if srv.Snapshot() != nil || len(srv.NodeIDs()) != 0 {
		t.Fatalf("served %v to %v", srv.Snapshot(), srv.NodeIDs())
	}
	if _, err := xds.New(ctx, none, xds.Options{}); err != nil {
		t.Fatalf("New without node ids: %v", err)
	}
	if err := srv.Update(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if srv.Snapshot() == nil || !slices.Equal(srv.NodeIDs(), []string{"a", "b"}) {
		t.Fatalf("nodes = %v", srv.NodeIDs())
	}
}

// TestServerInvalidAtStart: New refuses a config it cannot serve.
func TestServerInvalidAtStart(t *testing.T) {
	t.Parallel()
	cfg := loadExample(t)
	cfg.XDS.PostgresPorts = nil
	if _, err := xds.New(context.Background(), cfg, xds.Options{}); !errors.Is(err, xds.ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
}

// TestServerReloadFile: a file that does not load is refused like an
// invalid config.
func TestServerReloadFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	srv, err := xds.New(ctx, loadExample(t), xds.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ReloadFile(ctx, exampleConfig); err != nil {
		t.Fatal(err)
	}
	if err := srv.ReloadFile(ctx, "testdata/does-not-exist.yaml"); !errors.Is(err, xds.ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	if n := counter(t, reg, "custos_xds_config_updates_total", "unchanged"); n != 1 {
		t.Errorf("unchanged = %v", n)
	}
	if n := counter(t, reg, "custos_xds_config_updates_total", "rejected"); n != 1 {
		t.Errorf("rejected = %v", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sumCounter adds up every series of a counter.
func sumCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// counter is the value of a counter's series with one label value.
func counter(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
