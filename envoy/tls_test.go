package envoy_test

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/custos-dev/custos/envoy"
	"github.com/custos-dev/custos/xds"
)

// custosMTLS is what a cluster calling custos' gRPC listener must carry.
type custosMTLS struct {
	cert, key, ca string
	sanType       tlsv3.SubjectAltNameMatcher_SanType
	san, sni      string
}

// checkCustosMTLS: the cluster presents Envoy's client certificate,
// verifies custos' certificate against the CA and its name, and offers h2.
func checkCustosMTLS(t *testing.T, c *clusterv3.Cluster, want custosMTLS) {
	t.Helper()
	ts := c.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("cluster %s: transport socket %v, want TLS", c.GetName(), ts)
	}
	var up tlsv3.UpstreamTlsContext
	unpack(t, ts.GetTypedConfig(), &up)
	common := up.GetCommonTlsContext()
	if certs := common.GetTlsCertificates(); len(certs) != 1 ||
		certs[0].GetCertificateChain().GetFilename() != want.cert || certs[0].GetPrivateKey().GetFilename() != want.key {
		t.Errorf("cluster %s: client certificate %v, want %s %s", c.GetName(), certs, want.cert, want.key)
	}
	vc := common.GetValidationContext()
	if vc.GetTrustedCa().GetFilename() != want.ca {
		t.Errorf("cluster %s: trusted CA %v, want %s", c.GetName(), vc.GetTrustedCa(), want.ca)
	}
	if sans := vc.GetMatchTypedSubjectAltNames(); len(sans) != 1 || sans[0].GetSanType() != want.sanType || sans[0].GetMatcher().GetExact() != want.san {
		t.Errorf("cluster %s: SAN matchers %v, want %v %s", c.GetName(), sans, want.sanType, want.san)
	}
	if up.GetSni() != want.sni {
		t.Errorf("cluster %s: sni %q, want %q", c.GetName(), up.GetSni(), want.sni)
	}
	if !slices.Equal(common.GetAlpnProtocols(), []string{"h2"}) {
		t.Errorf("cluster %s: alpn %v, want [h2]", c.GetName(), common.GetAlpnProtocols())
	}
}

// TestCustosClustersMutualTLS: both bootstraps reach custos' gRPC listener
// over mutual TLS: bootstrap-ads.yaml with custos dev's files (relative
// to where custos dev runs), envoy.yaml with the compose stack's secrets.
func TestCustosClustersMutualTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, cluster string
		want          custosMTLS
	}{
		{"bootstrap-ads.yaml", "custos-xds", custosMTLS{
			cert: ".custos/tls/grpc/envoy.crt", key: ".custos/tls/grpc/envoy.key", ca: ".custos/tls/grpc/ca.crt",
			sanType: tlsv3.SubjectAltNameMatcher_IP_ADDRESS, san: "127.0.0.1",
		}},
		{"envoy.yaml", xds.ClusterGRPC, custosMTLS{
			cert: "/stack/secrets/envoy/tls.crt", key: "/stack/secrets/envoy/tls.key", ca: "/stack/secrets/tls/ca.crt",
			sanType: tlsv3.SubjectAltNameMatcher_DNS, san: "custos", sni: "custos",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			b, err := envoy.LoadBootstrapFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range b.GetStaticResources().GetClusters() {
				if c.GetName() == tt.cluster {
					checkCustosMTLS(t, c, tt.want)
					return
				}
			}
			t.Fatalf("no cluster %s", tt.cluster)
		})
	}
}
