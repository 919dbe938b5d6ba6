package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/selfsigned"
)

// testClientID is the one client identity the test listeners allow.
const testClientID = "spiffe://custos-test/envoy"

// testMTLS is a CA with custos' gRPC certificate, Envoy's client
// certificate, a client certificate of the same CA naming another
// identity, and a client certificate of another CA.
type testMTLS struct {
	dir                      string
	caFile                   string
	serverCert, serverKey    string
	envoyCert, envoyKey      string
	roots                    *x509.CertPool
	envoy, intruder, foreign *tls.Certificate
}

func newTestMTLS(t *testing.T) *testMTLS {
	t.Helper()
	m := &testMTLS{dir: t.TempDir()}
	ca, err := selfsigned.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := selfsigned.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(m.dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	issue := func(ca *selfsigned.CA, name string, l selfsigned.Leaf) (string, string, *tls.Certificate) {
		t.Helper()
		c, k, err := ca.Issue(l)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".crt", c), write(name+".key", k), &pair
	}
	m.caFile = write("ca.crt", ca.CertPEM)
	m.roots = x509.NewCertPool()
	m.roots.AppendCertsFromPEM(ca.CertPEM)
	m.serverCert, m.serverKey, _ = issue(ca, "server", selfsigned.Leaf{Hosts: []string{"localhost", "127.0.0.1"}, Server: true})
	m.envoyCert, m.envoyKey, m.envoy = issue(ca, "envoy", selfsigned.Leaf{CommonName: "envoy", URIs: []string{testClientID}, Client: true})
	_, _, m.intruder = issue(ca, "intruder", selfsigned.Leaf{CommonName: "intruder", Client: true})
	// Another CA's certificate naming the allowed identity.
	_, _, m.foreign = issue(other, "foreign", selfsigned.Leaf{CommonName: "envoy", URIs: []string{testClientID}, Client: true})
	return m
}

// listenerYAML is listeners.grpc.tls, allowing testClientID only.
func (m *testMTLS) listenerYAML() string {
	return fmt.Sprintf("{cert_file: %q, key_file: %q, client_ca_file: %q, allowed_clients: [%q]}", m.serverCert, m.serverKey, m.caFile, testClientID)
}

// anyClientYAML is listeners.grpc.tls accepting any certificate of the CA.
func (m *testMTLS) anyClientYAML() string {
	return fmt.Sprintf("{cert_file: %q, key_file: %q, client_ca_file: %q}", m.serverCert, m.serverKey, m.caFile)
}

// envoyYAML is xds.grpc_tls.
func (m *testMTLS) envoyYAML() string {
	return fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", m.caFile, m.envoyCert, m.envoyKey)
}

// dial connects to custos' gRPC listener over TLS, verifying custos'
// certificate, presenting cert (none when nil).
func (m *testMTLS) dial(t *testing.T, addr string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: m.roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// grpcServe runs `custos serve` with a gRPC listener configured by
// grpcYAML (the flow mapping of listeners.grpc without the address), more
// listeners (YAML lines under listeners) and the xds section as given, and
// returns the gRPC and admin listeners' addresses and the log.
func grpcServe(t *testing.T, grpcYAML, moreListeners, xdsYAML string) (grpcAddr, adminAddr string, log *xdsLogBuffer) {
	t.Helper()
	dir := t.TempDir()
	iss, err := devissuer.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/oidc/", http.StripPrefix("/oidc", iss.Handler()))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	if err := iss.SetURL(ts.URL + "/oidc"); err != nil {
		t.Fatal(err)
	}
	grpcAddr, adminAddr = freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`
data_dir: %q
listeners:
  postgres: {address: %q}
  grpc: {address: %q, %s}
  admin: {address: %q}
%s
oidc:
  issuers: [{url: %q, audiences: [custos]}]
sessions: {shutdown_grace: 2s}
resources:
  - {name: payments-db, address: "127.0.0.1:5432", database: payments, user: u, password: {env: CUSTOS_GRPC_TEST_PW}, tls: {mode: disable}}
%s`, filepath.Join(dir, "data"), freeAddr(t), grpcAddr, grpcYAML, adminAddr, moreListeners, iss.URL(), xdsYAML)
	cfgFile := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log = &xdsLogBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgFile}, &bytes.Buffer{}, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v\n%s", err, log.String())
			}
		case <-time.After(20 * time.Second):
			t.Error("serve did not stop")
		}
	})
	waitHTTP(t, "http://"+adminAddr+"/healthz")
	return grpcAddr, adminAddr, log
}

// TestServeGRPCMutualTLS: custos serve's gRPC listener answers ext_authz,
// health and ADS only to a client presenting a certificate of the
// configured CA that names an allowed identity; every other client is
// refused at the handshake, and the refusal is logged with its address.
func TestServeGRPCMutualTLS(t *testing.T) {
	t.Parallel()
	m := newTestMTLS(t)
	addr, _, log := grpcServe(t, "tls: "+m.listenerYAML(), "",
		"xds:\n  node_ids: [edge]\n  postgres_ports: {payments-db: 15432}\n  grpc_tls: "+m.envoyYAML()+"\n")

	health := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.GetStatus())
		}
		return err
	}
	t.Run("refused", func(t *testing.T) {
		plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		for name, conn := range map[string]*grpc.ClientConn{
			"plaintext":             plain,
			"no client certificate": m.dial(t, addr, nil),
			"another CA":            m.dial(t, addr, m.foreign),
			"identity not allowed":  m.dial(t, addr, m.intruder),
		} {
			if err := health(conn); status.Code(err) != codes.Unavailable {
				t.Errorf("%s: health = %v, want Unavailable", name, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})
			cancel()
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s: Check = %v, want Unavailable", name, err)
			}
			c := sotw.NewADSClient(context.Background(), &corev3.Node{Id: "edge"}, resourcev3.ClusterType)
			if err := c.InitConnect(conn); err == nil {
				if r, err := c.Fetch(); err == nil {
					t.Errorf("%s: ADS answered %d clusters", name, len(r.Resources))
				}
			}
		}
		if !strings.Contains(log.String(), "grpc client refused: TLS handshake failed") || !strings.Contains(log.String(), "peer_address=127.0.0.1:") {
			t.Errorf("refused handshakes not logged:\n%s", log.String())
		}
	})
	t.Run("envoy", func(t *testing.T) {
		conn := m.dial(t, addr, m.envoy)
		if err := health(conn); err != nil {
			t.Fatalf("health: %v", err)
		}
		// ext_authz answers: no token is a denial, not an RPC error.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/", Host: "api.example.com", Headers: map[string]string{":method": "GET", ":path": "/"},
			}},
		}})
		if err != nil || codes.Code(resp.GetStatus().GetCode()) == codes.OK {
			t.Fatalf("Check without a token: %v %v", resp, err)
		}
		c := sotw.NewADSClient(ctx, &corev3.Node{Id: "edge"}, resourcev3.ClusterType)
		if err := c.InitConnect(conn); err != nil {
			t.Fatal(err)
		}
		r, err := c.Fetch()
		if err != nil || len(r.Resources) == 0 {
			t.Fatalf("ADS: %v %v", r, err)
		}
		// A certified client is still held to the configured node ids.
		c2 := sotw.NewADSClient(ctx, &corev3.Node{Id: "stranger"}, resourcev3.ClusterType)
		if err := c2.InitConnect(conn); err != nil {
			t.Fatal(err)
		}
		if _, err := c2.Fetch(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("node stranger: %v, want PermissionDenied", err)
		}
	})
}

// TestServeGRPCAnyClientOfTheCA: without allowed_clients any certificate
// of the client CA is accepted, and still none other.
func TestServeGRPCAnyClientOfTheCA(t *testing.T) {
	t.Parallel()
	m := newTestMTLS(t)
	addr, _, _ := grpcServe(t, "tls: "+m.anyClientYAML(), "", "")
	for _, tt := range []struct {
		name string
		cert *tls.Certificate
		want codes.Code
	}{
		{"envoy", m.envoy, codes.OK},
		{"another identity of the CA", m.intruder, codes.OK},
		{"no client certificate", nil, codes.Unavailable},
		{"another CA", m.foreign, codes.Unavailable},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := healthpb.NewHealthClient(m.dial(t, addr, tt.cert)).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

// TestServeRefusesGRPCWithoutTLS: a gRPC listener without TLS material is
// refused unless insecure_no_client_auth says otherwise, and then it
// answers in plaintext with a warning.
func TestServeRefusesGRPCWithoutTLS(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "custos.yaml")
	if err := os.WriteFile(cfg, []byte(`
listeners: {postgres: {address: 127.0.0.1:0}, grpc: {address: 127.0.0.1:0}}
oidc: {issuers: [{url: "https://issuer.example.com", audiences: [custos]}]}
resources: [{name: db, address: "127.0.0.1:5432", database: db, user: u, password: {env: PW}}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--config", cfg}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "listeners.grpc.tls: cert_file, key_file and client_ca_file are required") {
		t.Fatalf("err = %v", err)
	}

	addr, _, log := grpcServe(t, "insecure_no_client_auth: true", "", "")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("plaintext health with the opt-out: %v", err)
	}
	if !strings.Contains(log.String(), "grpc listener asks for no client certificate") {
		t.Errorf("no warning:\n%s", log.String())
	}
}

// TestServePprof: the admin listener never serves Go's profiles; with
// listeners.pprof they are on a listener of their own.
func TestServePprof(t *testing.T) {
	t.Parallel()
	get := func(t *testing.T, url string) int {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	m := newTestMTLS(t)
	_, admin, _ := grpcServe(t, "tls: "+m.listenerYAML(), "", "")
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=2", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace"} {
		if code := get(t, "http://"+admin+p); code != http.StatusNotFound {
			t.Errorf("admin %s: %d, want 404", p, code)
		}
	}

	pprofAddr := freeAddr(t)
	_, admin2, log := grpcServe(t, "tls: "+m.listenerYAML(), fmt.Sprintf("  pprof: {address: %q}", pprofAddr), "")
	if code := get(t, "http://"+admin2+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("admin with pprof on: %d, want 404", code)
	}
	if code := get(t, "http://"+pprofAddr+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK {
		t.Errorf("pprof listener: %d, want 200", code)
	}
	if !strings.Contains(log.String(), "go profiles served without authentication") {
		t.Errorf("no warning:\n%s", log.String())
	}
}
