package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/xds"
)

// TestXdsDump prints the example config's snapshot: the same YAML as the
// xds package's golden file.
func TestXdsDump(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"xds", "dump", "--config", "../../custos.example.yaml"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	want, err := os.ReadFile("../../xds/testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("dump differs from xds/testdata/example.yaml:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"xds", "dump", "--config", "../../custos.example.yaml", "--node", "edge-2"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "node: edge-2\n") || strings.Count(out.String(), "node: ") != 1 {
		t.Errorf("--node: %.200s", out.String())
	}
}

func TestXdsDumpErrors(t *testing.T) {
	t.Parallel()
	noNodes := filepath.Join(t.TempDir(), "custos.yaml")
	if err := os.WriteFile(noNodes, []byte(`
listeners: {postgres: {address: 127.0.0.1:6543}}
oidc: {issuers: [{url: "https://issuer.example.com", audiences: [custos]}]}
resources: [{name: db, address: "127.0.0.1:5432", database: db, user: u, password: {env: PW}}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"xds"}, "a command is required"},
		{[]string{"xds", "frob"}, `unknown command "frob"`},
		{[]string{"xds", "dump", "--config", "does-not-exist.yaml"}, "no such file"},
		{[]string{"xds", "dump", "--config", noNodes}, "xds.node_ids is empty"},
		{[]string{"xds", "dump", "--config", noNodes, "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestXdsDev: custos dev's Envoy node gets a listener for the demo
// database and custos' clusters at the addresses bound.
func TestXdsDev(t *testing.T) {
	t.Parallel()
	pg, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	g, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	cfg := &config.Config{
		Listeners: config.Listeners{Postgres: config.PostgresListener{Address: "127.0.0.1:0"}, GRPC: config.GRPCListener{Address: "127.0.0.1:0", TLS: config.GRPCTLS{
			CertFile: "/data/tls/grpc/server.crt", KeyFile: "/data/tls/grpc/server.key", ClientCAFile: "/data/tls/grpc/ca.crt",
		}}},
		OIDC:      config.OIDC{Issuers: []config.Issuer{{URL: "http://127.0.0.1/dev-oidc", Audiences: []string{"custos"}}}},
		Resources: []config.Resource{{Name: "payments", Address: "127.0.0.1:5432", Database: "payments", User: "u", Password: config.Secret{Env: "PW"}}},
	}
	pe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pe.Close()
	envoyTLS := config.EnvoyClientTLS{CAFile: "/data/tls/grpc/ca.crt", CertFile: "/data/tls/grpc/envoy.crt", KeyFile: "/data/tls/grpc/envoy.key"}
	devXDS(cfg, &listeners{pg: pg, grpc: g, pgEnvoy: pe}, envoyTLS)
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	snap, err := xds.Snapshot(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.XDS.NodeIDs, []string{"custos-dev"}) {
		t.Errorf("nodes = %v", cfg.XDS.NodeIDs)
	}
	l, ok := snap.GetResources(resourcev3.ListenerType)[xds.PostgresListenerPrefix+"payments"].(*listenerv3.Listener)
	if !ok || l.GetAddress().GetSocketAddress().GetPortValue() != devEnvoyPGPort {
		t.Errorf("listener = %v", l)
	}
	clusters := snap.GetResources(resourcev3.ClusterType)
	if clusters[xds.ClusterGRPC] == nil || clusters[xds.ClusterPgfilter] == nil {
		t.Fatalf("clusters = %v", clusters)
	}
	if ts := clusters[xds.ClusterGRPC].(*clusterv3.Cluster).GetTransportSocket(); !strings.Contains(ts.String(), "/data/tls/grpc/envoy.crt") {
		t.Errorf("custos-grpc does not present Envoy's client certificate: %v", ts)
	}
	// Envoy's PROXY header goes to the listener that requires it.
	if cfg.XDS.GRPCAddress != g.Addr().String() || cfg.XDS.PgfilterAddress != pe.Addr().String() {
		t.Errorf("addresses = %q %q", cfg.XDS.GRPCAddress, cfg.XDS.PgfilterAddress)
	}
}

// TestXdsServeReload runs `custos serve` with xDS on and follows its
// listeners as an Envoy would, while the config file changes.
func TestXdsServeReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	iss, err := devissuer.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/oidc/", http.StripPrefix("/oidc", iss.Handler()))
	ts := httptest.NewServer(mux)
	defer ts.Close()
	if err := iss.SetURL(ts.URL + "/oidc"); err != nil {
		t.Fatal(err)
	}
	pgAddr, grpcAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	mtls := newTestMTLS(t)
	cfgText := func(port int) string {
		return fmt.Sprintf(`
data_dir: %q
listeners:
  postgres: {address: %q}
  grpc: {address: %q, tls: %s}
  admin: {address: %q}
oidc:
  issuers: [{url: %q, audiences: [custos]}]
sessions: {shutdown_grace: 2s}
resources:
  - {name: payments-db, address: "127.0.0.1:5432", database: payments, user: u, password: {env: CUSTOS_XDS_TEST_PW}, tls: {mode: disable}}
xds:
  node_ids: [edge]
  postgres_ports: {payments-db: %d}
  grpc_tls: %s
`, filepath.Join(dir, "data"), pgAddr, grpcAddr, mtls.listenerYAML(), adminAddr, iss.URL(), port, mtls.envoyYAML())
	}
	cfgFile := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgText(15432)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	errOut := &xdsLogBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--config", cfgFile}, &out, errOut) }()
	waitHTTP(t, "http://"+adminAddr+"/healthz")

	conn := mtls.dial(t, grpcAddr, mtls.envoy)
	c := sotw.NewADSClient(ctx, &corev3.Node{Id: "edge"}, resourcev3.ListenerType)
	if err := c.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	port := func() uint32 {
		t.Helper()
		type res struct {
			r   *sotw.Response
			err error
		}
		ch := make(chan res, 1)
		go func() {
			r, err := c.Fetch()
			ch <- res{r, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil || len(r.r.Resources) != 1 {
				t.Fatalf("fetch: %v %v", r.r, r.err)
			}
			var l listenerv3.Listener
			if err := r.r.Resources[0].UnmarshalTo(&l); err != nil {
				t.Fatal(err)
			}
			if err := c.Ack(); err != nil {
				t.Fatal(err)
			}
			return l.GetAddress().GetSocketAddress().GetPortValue()
		case <-time.After(15 * time.Second):
			t.Fatalf("no listener update\n%s", errOut.String())
		}
		return 0
	}
	if p := port(); p != 15432 {
		t.Fatalf("port = %d", p)
	}
	// A broken file is refused; the next good one is served.
	if err := os.WriteFile(cfgFile, []byte(cfgText(0)), 0o600); err != nil {
		t.Fatal(err)
	}
	xdsWaitFor(t, func() bool { return strings.Contains(errOut.String(), "xds config refused") })
	if err := os.WriteFile(cfgFile, []byte(cfgText(15433)), 0o600); err != nil {
		t.Fatal(err)
	}
	if p := port(); p != 15433 {
		t.Fatalf("port after reload = %d", p)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func xdsWaitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// xdsLogBuffer collects a command's log output across goroutines.
type xdsLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *xdsLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *xdsLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
