package xds

import (
	"fmt"
	"net"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/envoyctx"
)

// Timeouts and keepalive of the clusters custos serves.
const (
	// custosConnectTimeout bounds a connection to custos itself (local or
	// next to Envoy).
	custosConnectTimeout = 2 * time.Second
	// serviceConnectTimeout bounds a connection to an HTTP service.
	serviceConnectTimeout = 5 * time.Second
	// grpcKeepaliveInterval and grpcKeepaliveTimeout are Envoy's HTTP/2
	// pings to custos; they respect ServerOptions' enforcement policy.
	grpcKeepaliveInterval = 30 * time.Second
	grpcKeepaliveTimeout  = 10 * time.Second
)

// httpProtocolOptionsKey is where a cluster's upstream HTTP options go.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// grpcCluster is custos' gRPC listener: HTTP/2 (gRPC needs it) with
// keepalive pings so a dead custos is noticed between calls, over mutual
// TLS when the listener asks for it (xds.grpc_tls).
func (b *builder) grpcCluster(addr string) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	c, eds, err := newCluster(ClusterGRPC, addr, custosConnectTimeout)
	if err != nil {
		return nil, nil, err
	}
	opts, err := toAny(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
						ConnectionKeepalive: &corev3.KeepaliveSettings{
							Interval: durationpb.New(grpcKeepaliveInterval),
							Timeout:  durationpb.New(grpcKeepaliveTimeout),
						},
					},
				},
			},
		},
	})
	if err != nil {
		return nil, nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: opts}
	if c.TransportSocket, err = custosTLS(addr, b.cfg.XDS.GRPCTLS); err != nil {
		return nil, nil, err
	}
	return c, eds, nil
}

// pgfilterCluster is custos' Postgres listener; tcp_proxy relays bytes to
// it unchanged (TLS included: custos terminates it), after a PROXY
// protocol v2 header naming the client: custos sees Envoy as the peer,
// and takes the client's address (for its sessions, audit records and
// policy) only from that header. The listener at xds.pgfilter_address
// must have proxy_protocol required, trusting Envoy's address.
func (b *builder) pgfilterCluster(addr string) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	c, eds, err := newCluster(ClusterPgfilter, addr, custosConnectTimeout)
	if err != nil {
		return nil, nil, err
	}
	if c.TransportSocket, err = proxyProtocolSocket(); err != nil {
		return nil, nil, err
	}
	return c, eds, nil
}

// transportSocketUpstreamProxyProtocol is Envoy's name for the transport
// socket that writes a PROXY protocol header before a connection's bytes.
const transportSocketUpstreamProxyProtocol = "envoy.transport_sockets.upstream_proxy_protocol"

// proxyProtocolSocket writes a PROXY protocol v2 header (no TLVs) and then
// relays bytes as they are (raw_buffer): the client's TLS passes through.
func proxyProtocolSocket() (*corev3.TransportSocket, error) {
	raw, err := toAny(&rawbufferv3.RawBuffer{})
	if err != nil {
		return nil, err
	}
	pp, err := toAny(&proxyprotocolv3.ProxyProtocolUpstreamTransport{
		Config: &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_V2},
		TransportSocket: &corev3.TransportSocket{
			Name:       wellknown.TransportSocketRawBuffer,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: raw},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{
		Name:       transportSocketUpstreamProxyProtocol,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: pp},
	}, nil
}

// serviceCluster is an HTTP service's upstream, with TLS per its config.
func (b *builder) serviceCluster(s config.HTTPService) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	c, eds, err := newCluster(ServiceClusterPrefix+s.Name, s.Address, serviceConnectTimeout)
	if err != nil {
		return nil, nil, fmt.Errorf("address: %w", err)
	}
	ts, err := upstreamTLS(s)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	c.TransportSocket = ts
	c.Metadata = resourceMetadata(s.Name, envoyctx.TypeHTTP, s.Labels)
	return c, eds, nil
}

// newCluster is a cluster of one endpoint. An IP address is served over
// EDS; a host name makes a STRICT_DNS cluster Envoy resolves itself (EDS
// endpoints must be IP addresses).
func newCluster(name, addr string, connectTimeout time.Duration) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	host, port, err := hostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(connectTimeout),
	}
	cla := &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
					Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)},
				},
			}},
		}},
	}
	if net.ParseIP(host) != nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
		return c, cla, nil
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	c.LoadAssignment = cla
	return c, nil, nil
}

// upstreamTLS is the transport socket of an HTTP service's cluster: none
// for disable, TLS without verification for require, and TLS verified
// against ca_file (and the name, for verify-full) otherwise.
func upstreamTLS(s config.HTTPService) (*corev3.TransportSocket, error) {
	if s.TLS.Mode == "disable" {
		return nil, nil
	}
	host, _, err := hostPort(s.Address)
	if err != nil {
		return nil, err
	}
	name := s.TLS.ServerName
	if name == "" {
		name = host
	}
	common := &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
	}
	switch s.TLS.Mode {
	case "require":
	case "verify-ca", "verify-full":
		vc := &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: s.TLS.CAFile}},
		}
		if s.TLS.Mode == "verify-full" {
			sanType := tlsv3.SubjectAltNameMatcher_DNS
			if net.ParseIP(name) != nil {
				sanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
			}
			vc.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
				SanType: sanType,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}},
			}}
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	default:
		return nil, fmt.Errorf("mode %q is not disable, require, verify-ca or verify-full", s.TLS.Mode)
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: common}
	if net.ParseIP(name) == nil {
		ctx.Sni = name
	}
	a, err := toAny(ctx)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a},
	}, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// adsSource is a config source on the ADS stream Envoy already has.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}
