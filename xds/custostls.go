package xds

import (
	"cmp"
	"net"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/custos-dev/custos/internal/config"
)

// custosTLS is the transport socket of a cluster that calls custos' gRPC
// listener at addr: TLS 1.2 or later with ALPN h2 (gRPC servers require
// it), custos' certificate verified against t.CAFile and its name, and
// Envoy's client certificate when t has one. Nil when t is empty (a
// plaintext listener).
func custosTLS(addr string, t config.EnvoyClientTLS) (*corev3.TransportSocket, error) {
	if t.IsZero() {
		return nil, nil
	}
	host, _, err := hostPort(addr)
	if err != nil {
		return nil, err
	}
	name := cmp.Or(t.ServerName, host)
	sanType := tlsv3.SubjectAltNameMatcher_DNS
	if net.ParseIP(name) != nil {
		sanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	common := &tlsv3.CommonTlsContext{
		TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		AlpnProtocols: []string{"h2"},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: fileSource(t.CAFile),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: sanType,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}},
			}},
		}},
	}
	if t.CertFile != "" {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.CertFile),
			PrivateKey:       fileSource(t.KeyFile),
		}}
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: common}
	if sanType == tlsv3.SubjectAltNameMatcher_DNS {
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

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}
