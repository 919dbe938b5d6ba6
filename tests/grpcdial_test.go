package tests

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// dialEnvoy connects to custos dev's gRPC listener as Envoy does: over
// TLS, verifying custos' certificate with CUSTOS_GRPC_CA_FILE and
// presenting Envoy's client certificate (CUSTOS_ENVOY_CERT_FILE,
// CUSTOS_ENVOY_KEY_FILE) from dev.env. withCert false presents none.
func dialEnvoy(t *testing.T, vars map[string]string, withCert bool) *grpc.ClientConn {
	t.Helper()
	ca, err := os.ReadFile(vars["CUSTOS_GRPC_CA_FILE"])
	if err != nil {
		t.Fatalf("CUSTOS_GRPC_CA_FILE: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatalf("CUSTOS_GRPC_CA_FILE %s holds no certificate", vars["CUSTOS_GRPC_CA_FILE"])
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(vars["CUSTOS_ENVOY_CERT_FILE"], vars["CUSTOS_ENVOY_KEY_FILE"])
		if err != nil {
			t.Fatalf("Envoy's client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	cc, err := grpc.NewClient(vars["CUSTOS_GRPC_ADDR"], grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}
