package envoy_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	postgresv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/postgres_proxy/v3alpha"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	netextauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/custos-dev/custos/envoy"
	"github.com/custos-dev/custos/internal/envoyctx"
	"github.com/custos-dev/custos/xds"
)

// TestStaticBootstrap checks that envoy.yaml calls custos the way custos'
// callouts expect, with the names xds serves: the filter chains, the
// clusters over HTTP/2, the keys of context_extensions and gRPC metadata,
// the processing modes and the timeouts a parked approval needs.
func TestStaticBootstrap(t *testing.T) {
	t.Parallel()
	b, err := envoy.LoadBootstrapFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b.GetAdmin().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" {
		t.Errorf("admin is not on a local address: %v", b.GetAdmin().GetAddress())
	}
	if b.GetDynamicResources() != nil {
		t.Errorf("the static bootstrap has dynamic resources")
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	t.Run("clusters", func(t *testing.T) { checkClusters(t, clusters) })

	listeners := map[string]*listenerv3.Listener{}
	for _, l := range b.GetStaticResources().GetListeners() {
		listeners[l.GetName()] = l
	}
	t.Run("http", func(t *testing.T) {
		l := listeners[xds.ListenerHTTP]
		if l == nil {
			t.Fatalf("no listener %q", xds.ListenerHTTP)
		}
		checkHTTP(t, b, l, clusters)
	})
	t.Run("postgres", func(t *testing.T) {
		l := listeners[xds.PostgresListenerPrefix+"payments-db"]
		if l == nil {
			t.Fatalf("no listener %q", xds.PostgresListenerPrefix+"payments-db")
		}
		checkPostgres(t, l)
	})
}

func checkClusters(t *testing.T, clusters map[string]*clusterv3.Cluster) {
	want := map[string]string{
		xds.ClusterGRPC:                           "custos:9901",
		xds.ClusterPgfilter:                       "custos:6543",
		xds.ServiceClusterPrefix + "upstream-api": "upstream-api:8080",
		"otel-collector":                          "otel-collector:4317",
	}
	for name, addr := range want {
		c := clusters[name]
		if c == nil {
			t.Errorf("no cluster %s", name)
			continue
		}
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if got := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()); got != addr {
			t.Errorf("cluster %s: address %s, want %s (the compose service)", name, got, addr)
		}
	}
	if c := clusters[xds.ClusterPgfilter]; c != nil {
		checkPgfilterProxyProtocol(t, c)
	}
	// gRPC needs HTTP/2, said explicitly.
	for _, name := range []string{xds.ClusterGRPC, "otel-collector"} {
		var opts upstreamhttpv3.HttpProtocolOptions
		unpack(t, clusters[name].GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], &opts)
		if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
			t.Errorf("cluster %s: not explicitly HTTP/2", name)
		}
	}
}

func checkHTTP(t *testing.T, b *bootstrapv3.Bootstrap, l *listenerv3.Listener, clusters map[string]*clusterv3.Cluster) {
	var hcm hcmv3.HttpConnectionManager
	unpack(t, onlyFilter(t, l, wellknown.HTTPConnectionManager), &hcm)
	var names []string
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	if want := []string{wellknown.HTTPExternalAuthorization, "envoy.filters.http.ext_proc", wellknown.Router}; !slices.Equal(names, want) {
		t.Fatalf("http filters %v, want %v", names, want)
	}

	var authz extauthzv3.ExtAuthz
	unpack(t, hcm.GetHttpFilters()[0].GetTypedConfig(), &authz)
	if c := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != xds.ClusterGRPC {
		t.Errorf("ext_authz calls %q", c)
	}
	if authz.GetTransportApiVersion() != corev3.ApiVersion_V3 || authz.GetFailureModeAllow() {
		t.Errorf("ext_authz: transport %v, failure_mode_allow %v", authz.GetTransportApiVersion(), authz.GetFailureModeAllow())
	}
	if wb := authz.GetWithRequestBody(); wb.GetMaxRequestBytes() == 0 || !wb.GetAllowPartialMessage() {
		t.Errorf("ext_authz: with_request_body %v", wb)
	}

	var proc extprocv3.ExternalProcessor
	unpack(t, hcm.GetHttpFilters()[1].GetTypedConfig(), &proc)
	if c := proc.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != xds.ClusterGRPC {
		t.Errorf("ext_proc calls %q", c)
	}
	if proc.GetFailureModeAllow() {
		t.Errorf("ext_proc fails open")
	}
	checkMode(t, "ext_proc", proc.GetProcessingMode())
	if got := proc.GetMessageTimeout().AsDuration(); got != 200*time.Millisecond {
		t.Errorf("message_timeout %v, want 200ms", got)
	}
	if got := proc.GetMaxMessageTimeout().AsDuration(); got < xds.MaxApprovalWait {
		t.Errorf("max_message_timeout %v is below the longest approval wait %v", got, xds.MaxApprovalWait)
	}
	if got := hcm.GetStreamIdleTimeout().AsDuration(); got <= xds.MaxApprovalWait {
		t.Errorf("stream_idle_timeout %v does not outlive an approval wait of %v", got, xds.MaxApprovalWait)
	}
	if ns := proc.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(); !slices.Contains(ns, envoyctx.ExtAuthzNamespace) {
		t.Errorf("ext_proc does not receive ext_authz's metadata: forwarding namespaces %v", ns)
	}

	var removed []string
	for _, e := range hcm.GetEarlyHeaderMutationExtensions() {
		var hm headermutationv3.HeaderMutation
		unpack(t, e.GetTypedConfig(), &hm)
		for _, m := range hm.GetMutations() {
			removed = append(removed, m.GetRemove())
		}
	}
	for _, h := range []string{envoyctx.HeaderPrincipal, envoyctx.HeaderDecisionID} {
		if !slices.Contains(removed, h) {
			t.Errorf("a client's %s is not removed before the filters run", h)
		}
	}

	var tr tracev3.OpenTelemetryConfig
	unpack(t, hcm.GetTracing().GetProvider().GetTypedConfig(), &tr)
	if c := tr.GetGrpcService().GetEnvoyGrpc().GetClusterName(); clusters[c] == nil {
		t.Errorf("traces go to cluster %q, which does not exist", c)
	}

	routes := hcm.GetRouteConfig().GetVirtualHosts()
	if len(routes) == 0 || len(routes[0].GetRoutes()) == 0 {
		t.Fatal("no routes")
	}
	for _, vh := range routes {
		// The client's credential never reaches the upstream.
		if got := vh.GetRequestHeadersToRemove(); !slices.Equal(got, envoyctx.CredentialHeaders) {
			t.Errorf("virtual host %s: request_headers_to_remove %v, want %v", vh.GetName(), got, envoyctx.CredentialHeaders)
		}
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); clusters[c] == nil {
				t.Errorf("route %s: cluster %q does not exist", r.GetName(), c)
			}
			var pr extauthzv3.ExtAuthzPerRoute
			unpack(t, r.GetTypedPerFilterConfig()[wellknown.HTTPExternalAuthorization], &pr)
			ext := pr.GetCheckSettings().GetContextExtensions()
			if ext[envoyctx.ContextResource] == "" || ext[envoyctx.ContextResourceType] != envoyctx.TypeHTTP {
				t.Errorf("route %s: context_extensions %v name no http resource", r.GetName(), ext)
			}
			var pp extprocv3.ExtProcPerRoute
			unpack(t, r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"], &pp)
			checkMode(t, "route "+r.GetName(), pp.GetOverrides().GetProcessingMode())
			md := map[string]string{}
			for _, h := range pp.GetOverrides().GetGrpcInitialMetadata() {
				md[h.GetKey()] = h.GetValue()
			}
			if md[envoyctx.HeaderResource] != ext[envoyctx.ContextResource] || md[envoyctx.HeaderResourceType] != envoyctx.TypeHTTP {
				t.Errorf("route %s: ext_proc metadata %v does not name the resource of its context_extensions %v", r.GetName(), md, ext)
			}
		}
	}
}

// checkMode: custos sees request and response headers and masks whole
// response bodies.
func checkMode(t *testing.T, what string, m *extprocv3.ProcessingMode) {
	t.Helper()
	if m.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND ||
		m.GetResponseHeaderMode() != extprocv3.ProcessingMode_SEND ||
		m.GetResponseBodyMode() != extprocv3.ProcessingMode_BUFFERED {
		t.Errorf("%s: processing mode %v", what, m)
	}
}

func checkPostgres(t *testing.T, l *listenerv3.Listener) {
	fs := l.GetFilterChains()[0].GetFilters()
	var names []string
	for _, f := range fs {
		names = append(names, f.GetName())
	}
	if want := []string{wellknown.ExternalAuthorization, "envoy.filters.network.postgres_proxy", wellknown.TCPProxy}; !slices.Equal(names, want) {
		t.Fatalf("filters %v, want %v", names, want)
	}
	var authz netextauthzv3.ExtAuthz
	unpack(t, fs[0].GetTypedConfig(), &authz)
	if c := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != xds.ClusterGRPC {
		t.Errorf("network ext_authz calls %q", c)
	}
	if authz.GetFailureModeAllow() || authz.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("network ext_authz: failure_mode_allow %v, transport %v", authz.GetFailureModeAllow(), authz.GetTransportApiVersion())
	}
	md := map[string]string{}
	for _, h := range authz.GetGrpcService().GetInitialMetadata() {
		md[h.GetKey()] = h.GetValue()
	}
	if md[envoyctx.HeaderResource] != "payments-db" || md[envoyctx.HeaderResourceType] != envoyctx.TypePostgres {
		t.Errorf("network ext_authz metadata %v", md)
	}
	// The client's SSLRequest and TLS pass through to custos.
	var pg postgresv3alpha.PostgresProxy
	unpack(t, fs[1].GetTypedConfig(), &pg)
	if pg.GetDownstreamSsl() != postgresv3alpha.PostgresProxy_DISABLE || pg.GetUpstreamSsl() != postgresv3alpha.PostgresProxy_DISABLE ||
		pg.GetTerminateSsl() || l.GetFilterChains()[0].GetTransportSocket() != nil { //nolint:staticcheck // deprecated, and still terminates TLS when set
		t.Errorf("postgres_proxy touches TLS: %v", &pg)
	}
	var tcp tcpproxyv3.TcpProxy
	unpack(t, fs[2].GetTypedConfig(), &tcp)
	if tcp.GetCluster() != xds.ClusterPgfilter {
		t.Errorf("tcp_proxy to %q", tcp.GetCluster())
	}
}

// checkPgfilterProxyProtocol: Envoy names the client to custos with a
// PROXY protocol v2 header, as the cluster xds serves does, then relays
// bytes as they are.
func checkPgfilterProxyProtocol(t *testing.T, c *clusterv3.Cluster) {
	ts := c.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.upstream_proxy_protocol" {
		t.Fatalf("cluster %s: transport socket %q, want the upstream PROXY protocol", c.GetName(), ts.GetName())
	}
	var pp proxyprotocolv3.ProxyProtocolUpstreamTransport
	unpack(t, ts.GetTypedConfig(), &pp)
	if pp.GetConfig().GetVersion() != corev3.ProxyProtocolConfig_V2 {
		t.Errorf("PROXY protocol version %v, want V2", pp.GetConfig().GetVersion())
	}
	if inner := pp.GetTransportSocket(); inner.GetName() != wellknown.TransportSocketRawBuffer {
		t.Errorf("wrapped transport socket %q, want raw_buffer", inner.GetName())
	} else {
		unpack(t, inner.GetTypedConfig(), &rawbufferv3.RawBuffer{})
	}
}

func onlyFilter(t *testing.T, l *listenerv3.Listener, name string) *anypb.Any {
	t.Helper()
	fs := l.GetFilterChains()[0].GetFilters()
	if len(fs) != 1 || fs[0].GetName() != name {
		t.Fatalf("listener %s: filters %v, want only %s", l.GetName(), fs, name)
	}
	return fs[0].GetTypedConfig()
}

func unpack(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if a == nil {
		t.Fatalf("no %T", m)
	}
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("%T: %v", m, err)
	}
}
