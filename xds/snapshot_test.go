package xds_test

import (
	"bytes"
	"errors"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	postgresv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/postgres_proxy/v3alpha"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	netextauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/envoyctx"
	"github.com/custos-dev/custos/xds"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const exampleConfig = "../custos.example.yaml"

func loadExample(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// minimalYAML is a config with one Postgres resource served to one node.
const minimalYAML = `
listeners:
  postgres: {address: 0.0.0.0:6543}
  grpc: {address: 127.0.0.1:9901, insecure_no_client_auth: true}
oidc:
  issuers: [{url: "https://issuer.example.com", audiences: [custos]}]
resources:
  - name: payments-db
    address: 127.0.0.1:5432
    database: payments
    user: custos_gateway
    password: {env: PW}
xds:
  node_ids: [custos-dev]
  postgres_ports: {payments-db: 16543}
`

func parse(t *testing.T, y string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustSnapshot(t *testing.T, cfg *config.Config) *cachev3.Snapshot {
	t.Helper()
	snap, err := xds.Snapshot(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestSnapshotGolden pins the Envoy configuration of the example config
// (testdata/example.yaml) and of a minimal one (testdata/minimal.yaml).
func TestSnapshotGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		golden string
		cfg    func(*testing.T) *config.Config
	}{
		{"example.yaml", loadExample},
		{"minimal.yaml", func(t *testing.T) *config.Config { return parse(t, minimalYAML) }},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg(t)
			var buf bytes.Buffer
			if err := xds.WriteYAML(&buf, cfg.XDS.NodeIDs, mustSnapshot(t, cfg)); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./xds -update writes it)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("snapshot differs from %s (check the change, then go test ./xds -update):\n%s",
					golden, lineDiff(string(want), buf.String()))
			}
		})
	}
}

// lineDiff shows the first line that differs.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n- " + wl + "\n+ " + gl
		}
	}
	return ""
}

// variants are configs covering every branch of the snapshot: host names
// and IPs, each upstream TLS mode, each processing mode, TLS on the HTTP
// listener, HTTP services without Postgres listeners being served.
func variants(t *testing.T) map[string]*config.Config {
	t.Helper()
	out := map[string]*config.Config{"example": loadExample(t), "minimal": parse(t, minimalYAML)}
	// custos' gRPC listener by host name, over mutual TLS.
	byName := loadExample(t)
	byName.XDS.GRPCAddress = "custos.internal:9901"
	out["grpc by name"] = byName
	serverOnly := loadExample(t)
	serverOnly.Listeners.GRPC.InsecureNoClientAuth = true
	serverOnly.Listeners.GRPC.TLS.ClientCAFile, serverOnly.Listeners.GRPC.TLS.AllowedClients = "", nil
	serverOnly.XDS.GRPCTLS = config.EnvoyClientTLS{CAFile: "/etc/ca.pem", ServerName: "custos.internal"}
	if err := serverOnly.Validate(); err != nil {
		t.Fatal(err)
	}
	out["grpc server tls only"] = serverOnly
	for _, mode := range []string{"disable", "require", "verify-ca", "verify-full"} {
		for _, addr := range []string{"api.internal:443", "10.1.2.3:8443", "[2001:db8::1]:443"} {
			for _, body := range []string{"none", "streamed", "buffered", "buffered_partial"} {
				cfg := parse(t, minimalYAML)
				cfg.HTTPServices = []config.HTTPService{{
					Name: "api", Domains: []string{"api.example.com", "*.api.example.com"}, Address: addr,
					TLS:    config.UpstreamTLS{Mode: mode, CAFile: "/etc/ca.pem"},
					Labels: map[string]string{"pci": "cde"},
					Processing: config.Processing{
						RequestHeaders: "send", ResponseHeaders: "send", RequestBody: body, ResponseBody: body,
					},
				}}
				cfg.XDS.HTTPTLS = config.TLSFiles{CertFile: "/etc/edge.crt", KeyFile: "/etc/edge.key"}
				cfg.ApplyDefaults()
				if err := cfg.Validate(); err != nil {
					t.Fatal(err)
				}
				out[mode+" "+addr+" "+body] = cfg
			}
		}
	}
	return out
}

// TestSnapshotValidAndConsistent checks every resource with its proto
// validation (typed configs included) and every snapshot with Consistent.
func TestSnapshotValidAndConsistent(t *testing.T) {
	t.Parallel()
	for name, cfg := range variants(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			snap := mustSnapshot(t, cfg)
			if err := snap.Consistent(); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, typ := range xds.TypeOrder {
				for rn, r := range snap.GetResources(typ) {
					n++
					if err := xds.Validate(r); err != nil {
						t.Errorf("%s %s: %v", typ, rn, err)
					}
				}
			}
			if n == 0 {
				t.Fatal("no resources")
			}
		})
	}
}

func resource[T proto.Message](t *testing.T, snap *cachev3.Snapshot, typ resourcev3.Type, name string) T {
	t.Helper()
	r, ok := snap.GetResources(typ)[name]
	if !ok {
		t.Fatalf("no %s %q among %v", typ, name, slices.Sorted(maps.Keys(snap.GetResources(typ))))
	}
	return r.(T)
}

func unpack[T proto.Message](t *testing.T, a *anypb.Any) T {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.(T)
	if !ok {
		t.Fatalf("typed config is %T", m)
	}
	return v
}

// TestSnapshotPostgresListener: network ext_authz naming the resource,
// postgres_proxy, tcp_proxy to pgfilter, in this order.
func TestSnapshotPostgresListener(t *testing.T) {
	t.Parallel()
	snap := mustSnapshot(t, loadExample(t))
	l := resource[*listenerv3.Listener](t, snap, resourcev3.ListenerType, xds.PostgresListenerPrefix+"payments-db")
	if p := l.GetAddress().GetSocketAddress().GetPortValue(); p != 5432 {
		t.Errorf("port = %d", p)
	}
	fs := l.GetFilterChains()[0].GetFilters()
	var names []string
	for _, f := range fs {
		names = append(names, f.GetName())
	}
	want := []string{"envoy.filters.network.ext_authz", "envoy.filters.network.postgres_proxy", "envoy.filters.network.tcp_proxy"}
	if !slices.Equal(names, want) {
		t.Fatalf("filters = %v, want %v", names, want)
	}
	authz := unpack[*netextauthzv3.ExtAuthz](t, fs[0].GetTypedConfig())
	if authz.GetGrpcService().GetEnvoyGrpc().GetClusterName() != xds.ClusterGRPC || authz.GetFailureModeAllow() {
		t.Errorf("ext_authz = %v", authz)
	}
	md := map[string]string{}
	for _, h := range authz.GetGrpcService().GetInitialMetadata() {
		md[h.GetKey()] = h.GetValue()
	}
	if md[envoyctx.HeaderResource] != "payments-db" || md[envoyctx.HeaderResourceType] != envoyctx.TypePostgres {
		t.Errorf("ext_authz metadata = %v", md)
	}
	// The client's SSLRequest and TLS pass through to custos.
	pg := unpack[*postgresv3alpha.PostgresProxy](t, fs[1].GetTypedConfig())
	if pg.GetDownstreamSsl() != postgresv3alpha.PostgresProxy_DISABLE || pg.GetUpstreamSsl() != postgresv3alpha.PostgresProxy_DISABLE ||
		pg.GetTerminateSsl() || l.GetFilterChains()[0].GetTransportSocket() != nil { //nolint:staticcheck // deprecated, and still terminates TLS when set
		t.Errorf("postgres_proxy touches TLS: %v, filter chain transport socket %v", pg, l.GetFilterChains()[0].GetTransportSocket())
	}
	tcp := unpack[*tcpproxyv3.TcpProxy](t, fs[2].GetTypedConfig())
	if tcp.GetCluster() != xds.ClusterPgfilter {
		t.Errorf("tcp_proxy cluster = %q", tcp.GetCluster())
	}
	if got := l.GetMetadata().GetFilterMetadata()[envoyctx.MetadataNamespace].AsMap(); got["resource"] != "payments-db" {
		t.Errorf("listener metadata = %v", got)
	}
}

// TestSnapshotRoutes: a virtual host per service, a route per prefix,
// each telling ext_authz and ext_proc which resource it is.
func TestSnapshotRoutes(t *testing.T) {
	t.Parallel()
	snap := mustSnapshot(t, loadExample(t))
	rc := resource[*routev3.RouteConfiguration](t, snap, resourcev3.RouteType, xds.RouteConfigHTTP)
	if len(rc.GetVirtualHosts()) != 2 {
		t.Fatalf("virtual hosts = %d", len(rc.GetVirtualHosts()))
	}
	vh := rc.GetVirtualHosts()[0]
	if vh.GetName() != "payments-api" || !slices.Equal(vh.GetDomains(), []string{"payments-api.example.com"}) {
		t.Fatalf("virtual host = %s %v", vh.GetName(), vh.GetDomains())
	}
	if len(vh.GetRoutes()) != 2 || vh.GetRoutes()[0].GetMatch().GetPathSeparatedPrefix() != "/v1" {
		t.Fatalf("routes = %v", vh.GetRoutes())
	}
	r := vh.GetRoutes()[0]
	if c := r.GetRoute().GetCluster(); c != xds.ServiceClusterPrefix+"payments-api" {
		t.Errorf("cluster = %q", c)
	}
	authz := unpack[*extauthzv3.ExtAuthzPerRoute](t, r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"])
	ext := authz.GetCheckSettings().GetContextExtensions()
	want := map[string]string{
		envoyctx.ContextResource: "payments-api", envoyctx.ContextResourceType: envoyctx.TypeHTTP,
		envoyctx.ContextLabelPrefix + "pci": "cde",
	}
	if !maps.Equal(ext, want) {
		t.Errorf("context_extensions = %v, want %v", ext, want)
	}
	proc := unpack[*extprocv3.ExtProcPerRoute](t, r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"])
	mode := proc.GetOverrides().GetProcessingMode()
	if mode.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED || mode.GetResponseBodyMode() != extprocv3.ProcessingMode_BUFFERED ||
		mode.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND {
		t.Errorf("processing mode = %v", mode)
	}
	md := map[string]string{}
	for _, h := range proc.GetOverrides().GetGrpcInitialMetadata() {
		md[h.GetKey()] = h.GetValue()
	}
	if md[envoyctx.HeaderResource] != "payments-api" {
		t.Errorf("ext_proc metadata = %v", md)
	}
	// No upstream gets the client's credential, on any virtual host.
	for _, vh := range rc.GetVirtualHosts() {
		if got := vh.GetRequestHeadersToRemove(); !slices.Equal(got, []string{"authorization", "proxy-authorization"}) {
			t.Errorf("virtual host %s request_headers_to_remove = %v", vh.GetName(), got)
		}
	}
	// card-vault: the default prefix and processing mode.
	vh = rc.GetVirtualHosts()[1]
	if len(vh.GetRoutes()) != 1 || vh.GetRoutes()[0].GetMatch().GetPrefix() != "/" {
		t.Fatalf("card-vault routes = %v", vh.GetRoutes())
	}
	proc = unpack[*extprocv3.ExtProcPerRoute](t, vh.GetRoutes()[0].GetTypedPerFilterConfig()["envoy.filters.http.ext_proc"])
	if m := proc.GetOverrides().GetProcessingMode(); m.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || m.GetResponseBodyMode() != extprocv3.ProcessingMode_BUFFERED {
		t.Errorf("default processing mode = %v", m)
	}
}

// TestSnapshotClusters: IP addresses over EDS, host names as STRICT_DNS,
// custos' gRPC over HTTP/2, upstream TLS per the service's mode.
func TestSnapshotClusters(t *testing.T) {
	t.Parallel()
	snap := mustSnapshot(t, loadExample(t))
	tests := []struct {
		name string
		typ  clusterv3.Cluster_DiscoveryType
		tls  bool
	}{
		{xds.ClusterGRPC, clusterv3.Cluster_EDS, true},
		{xds.ClusterPgfilter, clusterv3.Cluster_EDS, true}, // the PROXY protocol socket (TestSnapshotPgfilterProxyProtocol)
		{xds.ServiceClusterPrefix + "payments-api", clusterv3.Cluster_STRICT_DNS, true},
		{xds.ServiceClusterPrefix + "card-vault", clusterv3.Cluster_EDS, false},
	}
	for _, tt := range tests {
		c := resource[*clusterv3.Cluster](t, snap, resourcev3.ClusterType, tt.name)
		if c.GetType() != tt.typ {
			t.Errorf("%s: type %v, want %v", tt.name, c.GetType(), tt.typ)
		}
		if (c.GetTransportSocket() != nil) != tt.tls {
			t.Errorf("%s: transport socket %v", tt.name, c.GetTransportSocket())
		}
		_, hasEDS := snap.GetResources(resourcev3.EndpointType)[tt.name]
		if hasEDS != (tt.typ == clusterv3.Cluster_EDS) {
			t.Errorf("%s: endpoints served = %v", tt.name, hasEDS)
		}
	}
	grpcC := resource[*clusterv3.Cluster](t, snap, resourcev3.ClusterType, xds.ClusterGRPC)
	if grpcC.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] == nil {
		t.Error("custos-grpc has no HTTP/2 options")
	}
	// Without mutual TLS on the listener (the minimal config), plaintext.
	if ts := resource[*clusterv3.Cluster](t, mustSnapshot(t, parse(t, minimalYAML)), resourcev3.ClusterType, xds.ClusterGRPC).GetTransportSocket(); ts != nil {
		t.Errorf("custos-grpc to a plaintext listener: transport socket %v", ts)
	}
	if n := len(snap.GetResources(resourcev3.EndpointType)); n != 3 {
		t.Errorf("endpoints = %d, want 3", n)
	}
}

// TestSnapshotPgfilterProxyProtocol: Envoy tells custos who the client is
// with a PROXY protocol v2 header, then relays the bytes as they are.
func TestSnapshotPgfilterProxyProtocol(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]*config.Config{"example": loadExample(t), "minimal": parse(t, minimalYAML)} {
		c := resource[*clusterv3.Cluster](t, mustSnapshot(t, cfg), resourcev3.ClusterType, xds.ClusterPgfilter)
		ts := c.GetTransportSocket()
		if ts.GetName() != "envoy.transport_sockets.upstream_proxy_protocol" {
			t.Fatalf("%s: transport socket %q", name, ts.GetName())
		}
		pp := unpack[*proxyprotocolv3.ProxyProtocolUpstreamTransport](t, ts.GetTypedConfig())
		if pp.GetConfig().GetVersion() != corev3.ProxyProtocolConfig_V2 || pp.GetConfig().GetPassThroughTlvs() != nil || len(pp.GetConfig().GetAddedTlvs()) != 0 {
			t.Errorf("%s: PROXY protocol config %v, want V2 without TLVs", name, pp.GetConfig())
		}
		inner := pp.GetTransportSocket()
		if inner.GetName() != wellknown.TransportSocketRawBuffer {
			t.Errorf("%s: wrapped transport socket %q, want raw_buffer (the client's TLS passes through)", name, inner.GetName())
		}
		unpack[*rawbufferv3.RawBuffer](t, inner.GetTypedConfig())
	}
}

// TestSnapshotVersions: versions are a hash of the content, per type.
func TestSnapshotVersions(t *testing.T) {
	t.Parallel()
	versions := func(cfg *config.Config) map[string]string {
		snap := mustSnapshot(t, cfg)
		v := map[string]string{}
		for _, typ := range xds.TypeOrder {
			v[typ] = snap.GetVersion(typ)
		}
		return v
	}
	base := versions(loadExample(t))
	if again := versions(loadExample(t)); !maps.Equal(base, again) {
		t.Fatalf("same config, new versions: %v vs %v", base, again)
	}
	tests := []struct {
		name    string
		edit    func(*config.Config)
		changed []string
	}{
		{"route prefix", func(c *config.Config) { c.HTTPServices[1].PathPrefixes = []string{"/keys"} },
			[]string{resourcev3.RouteType}},
		{"postgres port", func(c *config.Config) { c.XDS.PostgresPorts["payments-db"] = 5433 },
			[]string{resourcev3.ListenerType}},
		{"upstream IP", func(c *config.Config) { c.HTTPServices[1].Address = "10.0.3.8:8080" },
			[]string{resourcev3.EndpointType}},
		{"label", func(c *config.Config) { c.HTTPServices[1].Labels["tier"] = "gold" },
			[]string{resourcev3.RouteType, resourcev3.ClusterType}},
		{"node ids only", func(c *config.Config) { c.XDS.NodeIDs = []string{"other"} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := loadExample(t)
			tt.edit(cfg)
			got := versions(cfg)
			for _, typ := range xds.TypeOrder {
				if changed := got[typ] != base[typ]; changed != slices.Contains(tt.changed, typ) {
					t.Errorf("%s: version changed = %v", typ, changed)
				}
			}
		})
	}
}

// TestSnapshotRefuses: what would leave Envoy without a working config is
// an error, never a partial snapshot.
func TestSnapshotRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*config.Config)
		want string
	}{
		{"no postgres port", func(c *config.Config) { delete(c.XDS.PostgresPorts, "payments-db") }, "xds.postgres_ports has no port"},
		{"bad processing mode", func(c *config.Config) { c.HTTPServices[0].Processing.RequestBody = "sometimes" }, "request_body"},
		{"bad upstream", func(c *config.Config) { c.HTTPServices[0].Address = "nope" }, "address"},
		{"grpc port 0", func(c *config.Config) { c.XDS.GRPCAddress = "127.0.0.1:0" }, "xds.grpc_address"},
		{"bad tls mode", func(c *config.Config) { c.HTTPServices[0].TLS.Mode = "prefer" }, "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := loadExample(t)
			tt.edit(cfg)
			_, err := xds.Snapshot(cfg)
			if !errors.Is(err, xds.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

// TestValidateTypedConfigs: Validate looks inside typed configs, nested
// ones included, and refuses types it cannot resolve.
func TestValidateTypedConfigs(t *testing.T) {
	t.Parallel()
	pack := func(m proto.Message) *anypb.Any {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	listener := func(tc *anypb.Any) *listenerv3.Listener {
		snap := mustSnapshot(t, parse(t, minimalYAML))
		l := proto.Clone(resource[*listenerv3.Listener](t, snap, resourcev3.ListenerType, xds.PostgresListenerPrefix+"payments-db")).(*listenerv3.Listener)
		l.FilterChains[0].Filters[2].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: tc}
		return l
	}
	if err := xds.Validate(listener(pack(&tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}}))); err != nil {
		t.Fatalf("good listener: %v", err)
	}
	err := xds.Validate(listener(pack(&tcpproxyv3.TcpProxy{ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}})))
	if err == nil || !strings.Contains(err.Error(), "StatPrefix") {
		t.Errorf("tcp_proxy without stat_prefix: err = %v", err)
	}
	err = xds.Validate(listener(&anypb.Any{TypeUrl: "type.googleapis.com/custos.Nope"}))
	if !errors.Is(err, xds.ErrUnknownType) {
		t.Errorf("unknown type: err = %v", err)
	}
}

// TestSnapshotGRPCMutualTLS: the cluster Envoy calls custos' gRPC listener
// with presents Envoy's client certificate, verifies custos' certificate
// against the CA and its name, and offers h2 (gRPC servers refuse a TLS
// connection without it).
func TestSnapshotGRPCMutualTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, addr, serverName string
		sanType                tlsv3.SubjectAltNameMatcher_SanType
		wantSAN, wantSNI       string
	}{
		{"ip", "127.0.0.1:9901", "", tlsv3.SubjectAltNameMatcher_IP_ADDRESS, "127.0.0.1", ""},
		{"host name", "custos.internal:9901", "", tlsv3.SubjectAltNameMatcher_DNS, "custos.internal", "custos.internal"},
		{"server_name", "10.0.0.7:9901", "grpc.custos.internal", tlsv3.SubjectAltNameMatcher_DNS, "grpc.custos.internal", "grpc.custos.internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := loadExample(t)
			cfg.XDS.GRPCAddress = tt.addr
			cfg.XDS.GRPCTLS.ServerName = tt.serverName
			c := resource[*clusterv3.Cluster](t, mustSnapshot(t, cfg), resourcev3.ClusterType, xds.ClusterGRPC)
			ts := c.GetTransportSocket()
			if ts.GetName() != "envoy.transport_sockets.tls" {
				t.Fatalf("transport socket %v", ts)
			}
			up := unpack[*tlsv3.UpstreamTlsContext](t, ts.GetTypedConfig())
			common := up.GetCommonTlsContext()
			want := cfg.XDS.GRPCTLS
			if certs := common.GetTlsCertificates(); len(certs) != 1 ||
				certs[0].GetCertificateChain().GetFilename() != want.CertFile || certs[0].GetPrivateKey().GetFilename() != want.KeyFile {
				t.Errorf("client certificate = %v, want %s %s", certs, want.CertFile, want.KeyFile)
			}
			vc := common.GetValidationContext()
			if vc.GetTrustedCa().GetFilename() != want.CAFile {
				t.Errorf("trusted CA = %v, want %s", vc.GetTrustedCa(), want.CAFile)
			}
			if sans := vc.GetMatchTypedSubjectAltNames(); len(sans) != 1 || sans[0].GetSanType() != tt.sanType || sans[0].GetMatcher().GetExact() != tt.wantSAN {
				t.Errorf("SAN matchers = %v, want %v %s", sans, tt.sanType, tt.wantSAN)
			}
			if up.GetSni() != tt.wantSNI {
				t.Errorf("sni = %q, want %q", up.GetSni(), tt.wantSNI)
			}
			if !slices.Equal(common.GetAlpnProtocols(), []string{"h2"}) {
				t.Errorf("alpn = %v", common.GetAlpnProtocols())
			}
			if common.GetTlsParams().GetTlsMinimumProtocolVersion() != tlsv3.TlsParameters_TLSv1_2 {
				t.Errorf("tls params = %v", common.GetTlsParams())
			}
		})
	}
}
