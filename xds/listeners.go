package xds

import (
	"fmt"
	"slices"
	"time"

	postgresv3alpha "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/postgres_proxy/v3alpha"
	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	netextauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/envoyctx"
)

// Filter names (they are also the dynamic metadata namespaces the filters
// write under, so ext_proc finds ext_authz's metadata by this name).
const (
	filterPostgresProxy = "envoy.filters.network.postgres_proxy"
	filterExtProc       = "envoy.filters.http.ext_proc"
	earlyHeaderMutation = "envoy.http.early_header_mutation.header_mutation"
)

// Timeouts of the callouts and streams custos configures.
const (
	// authzTimeout bounds one ext_authz Check (token verification and
	// policy; a cold JWKS fetch included).
	authzTimeout = 2 * time.Second
	// extProcMessageTimeout bounds custos' answer to one ext_proc message
	// (masking a buffered body included).
	extProcMessageTimeout = 2 * time.Second
	// MaxApprovalWait is the longest custos may hold an HTTP request for
	// an approval (ext_proc override_message_timeout is capped at it).
	MaxApprovalWait = 15 * time.Minute
	// streamIdleTimeout lets a request parked for approval outlive
	// MaxApprovalWait without a byte moving.
	streamIdleTimeout = MaxApprovalWait + time.Minute
	// requestHeadersTimeout bounds how long a client may take to send its
	// request headers.
	requestHeadersTimeout = 10 * time.Second
	// sessionIdleMargin keeps Envoy's TCP idle timeout above custos' own,
	// so custos ends (and records) idle Postgres sessions.
	sessionIdleMargin = time.Minute
)

// postgresListener is a Postgres resource's TCP listener: network
// ext_authz when the connection starts, postgres_proxy for statistics
// (passing the client's SSLRequest and TLS through), and tcp_proxy to
// custos' pgfilter (with a PROXY protocol header), which terminates TLS
// and decides every statement.
func (b *builder) postgresListener(r config.Resource) (*listenerv3.Listener, error) {
	port, ok := b.cfg.XDS.PostgresPorts[r.Name]
	if !ok {
		return nil, fmt.Errorf("xds.postgres_ports has no port for it")
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("xds.postgres_ports: %d is not a port", port)
	}
	authz := &netextauthzv3.ExtAuthz{
		StatPrefix: r.Name,
		GrpcService: custosGRPC(authzTimeout,
			header(envoyctx.HeaderResource, r.Name),
			header(envoyctx.HeaderResourceType, envoyctx.TypePostgres)),
		TransportApiVersion:    corev3.ApiVersion_V3,
		IncludePeerCertificate: true,
	}
	// The client's TLS goes through to custos untouched: Envoy neither
	// terminates it (no starttls socket) nor starts its own upstream.
	pg := &postgresv3alpha.PostgresProxy{
		StatPrefix:    r.Name,
		DownstreamSsl: postgresv3alpha.PostgresProxy_DISABLE,
		UpstreamSsl:   postgresv3alpha.PostgresProxy_DISABLE,
	}
	tcp := &tcpproxyv3.TcpProxy{
		StatPrefix:       r.Name,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: ClusterPgfilter},
	}
	if idle := b.cfg.Sessions.IdleTimeout; idle > 0 {
		tcp.IdleTimeout = durationpb.New(idle + sessionIdleMargin)
	}
	var filters []*listenerv3.Filter
	for _, f := range []struct {
		name string
		msg  proto.Message
	}{
		{wellknown.ExternalAuthorization, authz},
		{filterPostgresProxy, pg},
		{wellknown.TCPProxy, tcp},
	} {
		a, err := toAny(f.msg)
		if err != nil {
			return nil, err
		}
		filters = append(filters, &listenerv3.Filter{Name: f.name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
	}
	return &listenerv3.Listener{
		Name:         PostgresListenerPrefix + r.Name,
		Address:      socketAddress(b.cfg.XDS.ListenHost, uint32(port)),
		StatPrefix:   PostgresListenerPrefix + r.Name,
		FilterChains: []*listenerv3.FilterChain{{Filters: filters}},
		Metadata:     resourceMetadata(r.Name, envoyctx.TypePostgres, r.Labels),
	}, nil
}

// httpListener is the one listener of every HTTP service: the HTTP
// connection manager with its routes from RDS and the filters
// ext_authz -> ext_proc -> router.
func (b *builder) httpListener() (*listenerv3.Listener, error) {
	x := b.cfg.XDS
	authz, err := toAny(&extauthzv3.ExtAuthz{
		Services:               &extauthzv3.ExtAuthz_GrpcService{GrpcService: custosGRPC(authzTimeout)},
		TransportApiVersion:    corev3.ApiVersion_V3,
		StatusOnError:          &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
		IncludePeerCertificate: true,
		// The route's resource metadata reaches custos too.
		RouteMetadataContextNamespaces: []string{envoyctx.MetadataNamespace},
	})
	if err != nil {
		return nil, err
	}
	proc, err := toAny(&extprocv3.ExternalProcessor{
		GrpcService: custosGRPC(0),
		// Routes override this with their service's mode; a request that
		// matched no route only has its headers seen.
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		MessageTimeout:    durationpb.New(extProcMessageTimeout),
		MaxMessageTimeout: durationpb.New(MaxApprovalWait),
		MetadataOptions: &extprocv3.MetadataOptions{
			ForwardingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{
				Untyped: []string{envoyctx.ExtAuthzNamespace},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	router, err := toAny(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	// Headers custos adds to allowed requests: a client's copy is removed
	// before any filter runs, so upstreams can trust them.
	strip := &headermutationv3.HeaderMutation{}
	for _, h := range []string{envoyctx.HeaderPrincipal, envoyctx.HeaderDecisionID} {
		strip.Mutations = append(strip.Mutations, &mutationv3.HeaderMutation{
			Action: &mutationv3.HeaderMutation_Remove{Remove: h},
		})
	}
	stripAny, err := toAny(strip)
	if err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: ListenerHTTP,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: RouteConfigHTTP,
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: wellknown.HTTPExternalAuthorization, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: authz}},
			{Name: filterExtProc, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: proc}},
			{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}},
		},
		EarlyHeaderMutationExtensions: []*corev3.TypedExtensionConfig{{Name: earlyHeaderMutation, TypedConfig: stripAny}},
		// Domains are matched without the port of the Host.
		StripPortMode:    &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
		UseRemoteAddress: wrapperspb.Bool(true),
		// Policy sees the path the upstream gets.
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST,
		},
		StreamIdleTimeout:     durationpb.New(streamIdleTimeout),
		RequestHeadersTimeout: durationpb.New(requestHeadersTimeout),
	}
	hcmAny, err := toAny(hcm)
	if err != nil {
		return nil, err
	}
	chain := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcmAny},
	}}}
	if x.HTTPTLS.CertFile != "" {
		ts, err := toAny(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: x.HTTPTLS.CertFile}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: x.HTTPTLS.KeyFile}},
			}},
			AlpnProtocols: []string{"h2", "http/1.1"},
		}})
		if err != nil {
			return nil, err
		}
		chain.TransportSocket = &corev3.TransportSocket{
			Name:       wellknown.TransportSocketTLS,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ts},
		}
	}
	return &listenerv3.Listener{
		Name:         ListenerHTTP,
		Address:      socketAddress(x.ListenHost, uint32(x.HTTPPort)),
		StatPrefix:   ListenerHTTP,
		FilterChains: []*listenerv3.FilterChain{chain},
	}, nil
}

// virtualHost routes an HTTP service's domains and path prefixes to its
// cluster. Every route tells ext_authz (context_extensions) and ext_proc
// (initial metadata, processing mode) which resource a request is for.
func (b *builder) virtualHost(s config.HTTPService) (*routev3.VirtualHost, error) {
	ext := map[string]string{
		envoyctx.ContextResource:     s.Name,
		envoyctx.ContextResourceType: envoyctx.TypeHTTP,
	}
	for k, v := range s.Labels {
		ext[envoyctx.ContextLabelPrefix+k] = v
	}
	authz, err := toAny(&extauthzv3.ExtAuthzPerRoute{
		Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{
			CheckSettings: &extauthzv3.CheckSettings{ContextExtensions: ext},
		},
	})
	if err != nil {
		return nil, err
	}
	mode, err := processingMode(s.Processing)
	if err != nil {
		return nil, fmt.Errorf("processing: %w", err)
	}
	proc, err := toAny(&extprocv3.ExtProcPerRoute{
		Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
			ProcessingMode: mode,
			GrpcInitialMetadata: []*corev3.HeaderValue{
				header(envoyctx.HeaderResource, s.Name),
				header(envoyctx.HeaderResourceType, envoyctx.TypeHTTP),
			},
		}},
	})
	if err != nil {
		return nil, err
	}
	vh := &routev3.VirtualHost{
		Name: s.Name, Domains: slices.Clone(s.Domains),
		// The client's credential never reaches the upstream, even if
		// ext_authz's removal (headers_to_remove) did not happen.
		RequestHeadersToRemove: slices.Clone(envoyctx.CredentialHeaders),
	}
	for _, prefix := range s.PathPrefixes {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name:  s.Name + " " + prefix,
			Match: pathMatch(prefix),
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ServiceClusterPrefix + s.Name},
			}},
			TypedPerFilterConfig: map[string]*anypb.Any{
				wellknown.HTTPExternalAuthorization: authz,
				filterExtProc:                       proc,
			},
			Metadata: resourceMetadata(s.Name, envoyctx.TypeHTTP, s.Labels),
		})
	}
	return vh, nil
}

// pathMatch matches a path prefix on segment boundaries: /api matches
// /api and /api/cards, not /apix. "/" and prefixes ending in "/" match as
// plain prefixes.
func pathMatch(prefix string) *routev3.RouteMatch {
	if prefix == "/" || prefix[len(prefix)-1] == '/' {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
	}
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: prefix}}
}

// processingMode maps a service's processing config onto ext_proc's.
func processingMode(p config.Processing) (*extprocv3.ProcessingMode, error) {
	headerMode := func(field, v string) (extprocv3.ProcessingMode_HeaderSendMode, error) {
		switch v {
		case config.ProcessSend:
			return extprocv3.ProcessingMode_SEND, nil
		case config.ProcessSkip:
			return extprocv3.ProcessingMode_SKIP, nil
		}
		return 0, fmt.Errorf("%s: %q is not send or skip", field, v)
	}
	bodyMode := func(field, v string) (extprocv3.ProcessingMode_BodySendMode, error) {
		switch v {
		case config.ProcessNone:
			return extprocv3.ProcessingMode_NONE, nil
		case config.ProcessStreamed:
			return extprocv3.ProcessingMode_STREAMED, nil
		case config.ProcessBuffered:
			return extprocv3.ProcessingMode_BUFFERED, nil
		case config.ProcessBufferedPartial:
			return extprocv3.ProcessingMode_BUFFERED_PARTIAL, nil
		}
		return 0, fmt.Errorf("%s: %q is not none, streamed, buffered or buffered_partial", field, v)
	}
	m := &extprocv3.ProcessingMode{
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
	var err error
	if m.RequestHeaderMode, err = headerMode("request_headers", p.RequestHeaders); err != nil {
		return nil, err
	}
	if m.ResponseHeaderMode, err = headerMode("response_headers", p.ResponseHeaders); err != nil {
		return nil, err
	}
	if m.RequestBodyMode, err = bodyMode("request_body", p.RequestBody); err != nil {
		return nil, err
	}
	if m.ResponseBodyMode, err = bodyMode("response_body", p.ResponseBody); err != nil {
		return nil, err
	}
	return m, nil
}

// custosGRPC is a call to custos' gRPC listener through ClusterGRPC, with
// extra request metadata.
func custosGRPC(timeout time.Duration, metadata ...*corev3.HeaderValue) *corev3.GrpcService {
	g := &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterGRPC}},
		InitialMetadata: metadata,
	}
	if timeout > 0 {
		g.Timeout = durationpb.New(timeout)
	}
	return g
}

func header(key, value string) *corev3.HeaderValue {
	return &corev3.HeaderValue{Key: key, Value: value}
}
