package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/custos-dev/custos/internal/config"
)

// Names of the resources custos serves. Per protected resource the names
// are derived from its configured name.
const (
	// ClusterGRPC is custos' gRPC listener (ext_authz, ext_proc), HTTP/2.
	ClusterGRPC = "custos-grpc"
	// ClusterPgfilter is custos' Postgres listener.
	ClusterPgfilter = "custos-pgfilter"
	// ListenerHTTP is Envoy's listener for every HTTP service.
	ListenerHTTP = "http"
	// RouteConfigHTTP is the route configuration of ListenerHTTP (RDS).
	RouteConfigHTTP = "http"
	// PostgresListenerPrefix + resource name is a Postgres resource's listener.
	PostgresListenerPrefix = "postgres-"
	// ServiceClusterPrefix + service name is an HTTP service's upstream cluster.
	ServiceClusterPrefix = "service-"
)

// Sentinel errors.
var (
	// ErrInvalid wraps every reason a config cannot become a snapshot.
	ErrInvalid = errors.New("xds: config cannot be served to Envoy")
	// ErrUnknownType is a typed config whose type is not registered.
	ErrUnknownType = errors.New("unknown typed config type")
)

// TypeOrder lists the resource types custos serves in the order Envoy
// applies them (clusters and their endpoints before the listeners and
// routes that use them).
var TypeOrder = []resourcev3.Type{
	resourcev3.ClusterType,
	resourcev3.EndpointType,
	resourcev3.ListenerType,
	resourcev3.RouteType,
}

// Snapshot builds the Envoy configuration of cfg: a pure function of the
// config. Every resource passes its proto validation (typed configs
// included) and the snapshot is consistent; each type's version is a hash
// of its resources, so the same config always gives the same versions.
// cfg is a valid config with its defaults applied, as config.Load returns
// it; what would make Envoy reject the result is still caught here.
func Snapshot(cfg *config.Config) (*cachev3.Snapshot, error) {
	b := builder{cfg: cfg}
	res, err := b.build()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var snap cachev3.Snapshot
	for _, typ := range TypeOrder {
		items := res[typ]
		for _, r := range items {
			if err := Validate(r); err != nil {
				return nil, fmt.Errorf("%w: %s %s: %w", ErrInvalid, shortType(typ), cachev3.GetResourceName(r), err)
			}
		}
		version, err := hashResources(items)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(version, items)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &snap, nil
}

// hashResources is the version of one type's resources: a hash of their
// deterministic encoding in name order.
func hashResources(items []types.Resource) (string, error) {
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b types.Resource) int {
		return compareStrings(cachev3.GetResourceName(a), cachev3.GetResourceName(b))
	})
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, r := range sorted {
		b, err := opts.Marshal(r)
		if err != nil {
			return "", fmt.Errorf("encoding %s: %w", cachev3.GetResourceName(r), err)
		}
		name := cachev3.GetResourceName(r)
		h.Write([]byte(strconv.Itoa(len(name))))
		h.Write([]byte(name))
		h.Write([]byte(strconv.Itoa(len(b))))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// shortType names a resource type for messages: listener, cluster, ...
func shortType(t resourcev3.Type) string {
	switch t {
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route configuration"
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "endpoints"
	}
	return t
}

// builder turns one config into resources.
type builder struct {
	cfg *config.Config
}

func (b *builder) build() (map[resourcev3.Type][]types.Resource, error) {
	out := map[resourcev3.Type][]types.Resource{}
	addCluster := func(c *clusterv3.Cluster, eds *endpointv3.ClusterLoadAssignment) {
		out[resourcev3.ClusterType] = append(out[resourcev3.ClusterType], c)
		if eds != nil {
			out[resourcev3.EndpointType] = append(out[resourcev3.EndpointType], eds)
		}
	}
	x := b.cfg.XDS

	c, eds, err := b.grpcCluster(x.GRPCAddress)
	if err != nil {
		return nil, fmt.Errorf("xds.grpc_address: %w", err)
	}
	addCluster(c, eds)
	c, eds, err = b.pgfilterCluster(x.PgfilterAddress)
	if err != nil {
		return nil, fmt.Errorf("xds.pgfilter_address: %w", err)
	}
	addCluster(c, eds)

	for _, r := range b.cfg.Resources {
		if r.Type != "postgres" {
			continue
		}
		l, err := b.postgresListener(r)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", r.Name, err)
		}
		out[resourcev3.ListenerType] = append(out[resourcev3.ListenerType], l)
	}

	if len(b.cfg.HTTPServices) > 0 {
		l, err := b.httpListener()
		if err != nil {
			return nil, fmt.Errorf("http listener: %w", err)
		}
		out[resourcev3.ListenerType] = append(out[resourcev3.ListenerType], l)
		rc := &routev3.RouteConfiguration{Name: RouteConfigHTTP}
		for _, s := range b.cfg.HTTPServices {
			vh, err := b.virtualHost(s)
			if err != nil {
				return nil, fmt.Errorf("http service %s: %w", s.Name, err)
			}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
			c, eds, err := b.serviceCluster(s)
			if err != nil {
				return nil, fmt.Errorf("http service %s: %w", s.Name, err)
			}
			addCluster(c, eds)
		}
		out[resourcev3.RouteType] = append(out[resourcev3.RouteType], rc)
	}
	return out, nil
}

// hostPort splits host:port into a host and a numeric port.
func hostPort(addr string) (string, uint32, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: port must be 1 to 65535", addr)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q: a host is required", addr)
	}
	return host, uint32(port), nil
}
