package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validYAML = `
listeners:
  postgres:
    address: 127.0.0.1:6543
oidc:
  issuers:
    - url: https://issuer.example.com
      audiences: [custos]
resources:
  - name: payments-db
    address: 127.0.0.1:5432
    database: payments
    user: custos_gateway
    password: {env: PAYMENTS_DB_PASSWORD}
`

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.Postgres.PasswordTransport != TransportTLSOrLoopback {
		t.Errorf("password transport = %q", c.Listeners.Postgres.PasswordTransport)
	}
	if c.Sessions.IdleTimeout != DefaultIdleTimeout {
		t.Errorf("idle timeout = %v", c.Sessions.IdleTimeout)
	}
	if ss := c.Sessions; ss.MaxPerPrincipal != DefaultMaxPerPrincipal || ss.MaxTotal != DefaultMaxTotal ||
		ss.MaxPerGroup["agents"] != 48 || ss.Reserve.Sessions != DefaultReserveSessions || len(ss.Reserve.Groups) != 1 || ss.Reserve.Groups[0] != "dba" {
		t.Errorf("session caps = %+v", ss)
	}
	if r := c.Sessions.OpenRate; r.PerSecond != DefaultOpenRate || r.Burst != DefaultOpenBurst {
		t.Errorf("session open rate = %+v", r)
	}
	is := c.OIDC.Issuers[0]
	if is.GroupsClaim != "groups" || is.UserClaim != "sub" || len(is.Algorithms) == 0 {
		t.Errorf("issuer defaults = %+v", is)
	}
	if c.Resources[0].TLS.Mode != "verify-full" || c.Resources[0].Type != "postgres" {
		t.Errorf("resource defaults = %+v", c.Resources[0])
	}
}

func TestValidateNamesFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, edit, old, want string
	}{
		{"missing pg address", "address: 127.0.0.1:6543", "address: ''", "listeners.postgres.address: is required"},
		{"bad pg address", "address: 127.0.0.1:6543", "address: nope", "listeners.postgres.address: \"nope\" is not host:port"},
		{"no audience", "audiences: [custos]", "audiences: []", "oidc.issuers[0].audiences"},
		{"alg none", "audiences: [custos]", "audiences: [custos]\n      algorithms: [none]", "oidc.issuers[0].algorithms[0]: \"none\" is not allowed"},
		{"hs256", "audiences: [custos]", "audiences: [custos]\n      algorithms: [RS256, HS256]", "oidc.issuers[0].algorithms[1]"},
		{"issuer not url", "url: https://issuer.example.com", "url: issuer", "oidc.issuers[0].url"},
		{"no password source", "password: {env: PAYMENTS_DB_PASSWORD}", "password: {}", "resources[0].password: set exactly one of env or file"},
		{"bad tls mode", "user: custos_gateway", "user: custos_gateway\n    tls: {mode: prefer}", "resources[0].tls.mode"},
		{"transport tls without cert", "address: 127.0.0.1:6543", "address: 127.0.0.1:6543\n    password_transport: tls", "listeners.postgres.password_transport"},
		{"unknown field", "listeners:", "listenerz:", "field listenerz not found"},
		{"group cap zero", "resources:", "sessions:\n  max_per_group: {agents: 0}\nresources:", "sessions.max_per_group.agents: must be positive"},
		{"reserve too large", "resources:", "sessions:\n  max_total: 5\n  reserve: {groups: [dba], sessions: 5}\nresources:", "sessions.reserve.sessions: must be below sessions.max_total (5)"},
		{"reserve without groups", "resources:", "sessions:\n  reserve: {groups: [], sessions: 3}\nresources:", "sessions.reserve.groups: is required"},
		{"principal cap", "resources:", "sessions:\n  max_per_principal: -2\nresources:", "sessions.max_per_principal"},
		{"open rate", "resources:", "sessions:\n  open_rate: {per_second: -3}\nresources:", "sessions.open_rate.per_second: must be positive, or -1"},
		{"open burst", "resources:", "sessions:\n  open_rate: {burst: -1}\nresources:", "sessions.open_rate.burst: must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			y := strings.Replace(validYAML, tt.edit, tt.old, 1)
			_, err := Parse(strings.NewReader(y))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSecretRead(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := (Secret{File: f}).Read(); err != nil || v != "s3cret" {
		t.Errorf("file secret = %q, %v", v, err)
	}
	t.Setenv("CUSTOS_TEST_SECRET", "from-env")
	if v, err := (Secret{Env: "CUSTOS_TEST_SECRET"}).Read(); err != nil || v != "from-env" {
		t.Errorf("env secret = %q, %v", v, err)
	}
	if _, err := (Secret{Env: "CUSTOS_TEST_UNSET_SECRET"}).Read(); err == nil {
		t.Error("unset env secret read")
	}
	if s := (Secret{Env: "X"}).String(); s != "env:X" {
		t.Errorf("String = %q", s)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	t.Parallel()
	if _, err := Load("../../custos.example.yaml"); err != nil {
		t.Fatal(err)
	}
}

// xdsYAML is validYAML with a gRPC listener and an HTTP service, served to
// an Envoy over xDS.
var xdsYAML = strings.Replace(validYAML, "    address: 127.0.0.1:6543\n",
	"    address: 127.0.0.1:6543\n  grpc:\n    address: 0.0.0.0:9901\n"+grpcTLSYAML, 1) + `
http_services:
  - name: payments-api
    domains: [api.example.com]
    address: api.internal:8443
    tls: {ca_file: /etc/ca.pem}
    labels: {pci: cde}
xds:
  node_ids: [edge]
  postgres_ports: {payments-db: 5432}
  grpc_tls: {ca_file: /etc/envoy/custos-ca.crt, cert_file: /etc/envoy/envoy.crt, key_file: /etc/envoy/envoy.key}
`

// grpcTLSYAML is the gRPC listener's mutual TLS.
const grpcTLSYAML = "    tls: {cert_file: /etc/custos/grpc.crt, key_file: /etc/custos/grpc.key, client_ca_file: /etc/custos/envoy-ca.crt}\n"

func TestParseXDSDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(xdsYAML))
	if err != nil {
		t.Fatal(err)
	}
	s := c.HTTPServices[0]
	if len(s.PathPrefixes) != 1 || s.PathPrefixes[0] != "/" || s.TLS.Mode != "verify-full" {
		t.Errorf("service defaults = %+v", s)
	}
	want := Processing{RequestHeaders: ProcessSend, ResponseHeaders: ProcessSend, RequestBody: ProcessNone, ResponseBody: ProcessBuffered}
	if s.Processing != want {
		t.Errorf("processing = %+v, want %+v", s.Processing, want)
	}
	x := c.XDS
	if x.GRPCAddress != "127.0.0.1:9901" || x.PgfilterAddress != "127.0.0.1:6543" {
		t.Errorf("addresses = %q %q", x.GRPCAddress, x.PgfilterAddress)
	}
	if x.ListenHost != DefaultEnvoyListenHost || x.HTTPPort != DefaultEnvoyHTTPPort || !x.Enabled() {
		t.Errorf("xds defaults = %+v", x)
	}
	// A config without xds serves no Envoy and needs no ports.
	c, err = Parse(strings.NewReader(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.XDS.Enabled() || c.XDS.GRPCAddress != "" {
		t.Errorf("xds without config = %+v", c.XDS)
	}
}

func TestReachable(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"0.0.0.0:9901":  "127.0.0.1:9901",
		":9901":         "127.0.0.1:9901",
		"[::]:9901":     "[::1]:9901",
		"10.0.0.1:9901": "10.0.0.1:9901",
		"custos:9901":   "custos:9901",
		"":              "",
	} {
		if got := reachable(in); got != want {
			t.Errorf("reachable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidateXDSNamesFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, old, new, want string
	}{
		{"service without name", "  - name: payments-api\n", "  - name: ''\n", "http_services[0].name: is required"},
		{"service named like a resource", "  - name: payments-api\n", "  - name: payments-db\n", `http_services[0].name: "payments-db" is already the name`},
		{"no domains", "domains: [api.example.com]", "domains: []", "http_services[0].domains: at least one domain"},
		{"domain with a path", "domains: [api.example.com]", "domains: [api.example.com/v1]", "http_services[0].domains[0]"},
		{"domain with a port", "domains: [api.example.com]", "domains: ['api.example.com:443']", "leave the port out"},
		{"ipv6 domain with a port", "domains: [api.example.com]", "domains: ['[::1]:443']", "leave the port out"},
		{"domain twice", "domains: [api.example.com]", "domains: [api.example.com, API.example.com]", "http_services[0].domains[1]: \"API.example.com\" is already routed"},
		{"relative prefix", "domains: [api.example.com]", "domains: [api.example.com]\n    path_prefixes: [v1]", "http_services[0].path_prefixes[0]"},
		{"no address", "address: api.internal:8443", "address: ''", "http_services[0].address: is required"},
		{"bad address", "address: api.internal:8443", "address: api.internal", "http_services[0].address"},
		{"verify without ca", "tls: {ca_file: /etc/ca.pem}", "tls: {mode: verify-ca}", "http_services[0].tls.ca_file: is required by mode verify-ca"},
		{"bad tls mode", "tls: {ca_file: /etc/ca.pem}", "tls: {mode: prefer}", "http_services[0].tls.mode"},
		{"empty label name", "labels: {pci: cde}", "labels: {'': cde}", "http_services[0].labels"},
		{"bad header mode", "labels: {pci: cde}", "labels: {pci: cde}\n    processing: {request_headers: maybe}", "http_services[0].processing.request_headers"},
		{"request headers skipped", "labels: {pci: cde}", "labels: {pci: cde}\n    processing: {request_headers: skip}", "http_services[0].processing.request_headers: must be send: custos verifies the authorization decision"},
		{"bad body mode", "labels: {pci: cde}", "labels: {pci: cde}\n    processing: {request_body: all}", "http_services[0].processing.request_body"},
		{"body without headers", "labels: {pci: cde}", "labels: {pci: cde}\n    processing: {response_headers: skip}", "http_services[0].processing.response_headers: must be send"},
		{"empty node id", "node_ids: [edge]", "node_ids: ['']", "xds.node_ids[0]: must not be empty"},
		{"node id twice", "node_ids: [edge]", "node_ids: [edge, edge]", "xds.node_ids[1]: \"edge\" is listed twice"},
		{"no grpc listener", "  grpc:\n    address: 0.0.0.0:9901\n" + grpcTLSYAML, "", "need listeners.grpc.address"},
		{"grpc port 0", "address: 0.0.0.0:9901", "address: 127.0.0.1:0", "xds.grpc_address: \"127.0.0.1:0\": Envoy needs the port"},
		{"bad pgfilter address", "node_ids: [edge]", "node_ids: [edge]\n  pgfilter_address: pgfilter", "xds.pgfilter_address"},
		{"listen host not an IP", "node_ids: [edge]", "node_ids: [edge]\n  listen_host: localhost", "xds.listen_host"},
		{"http port out of range", "node_ids: [edge]", "node_ids: [edge]\n  http_port: 70000", "xds.http_port: 70000 is not a port"},
		{"half of http tls", "node_ids: [edge]", "node_ids: [edge]\n  http_tls: {cert_file: /etc/edge.crt}", "xds.http_tls: cert_file and key_file go together"},
		{"no postgres port", "postgres_ports: {payments-db: 5432}", "postgres_ports: {}", `xds.postgres_ports: resource "payments-db" has no port`},
		{"postgres port out of range", "{payments-db: 5432}", "{payments-db: 0}", "xds.postgres_ports.payments-db: 0 is not a port"},
		{"postgres port taken by http", "{payments-db: 5432}", "{payments-db: 8080}", "port 8080 is already used by xds.http_port"},
		{"port of no resource", "{payments-db: 5432}", "{payments-db: 5432, orders-db: 5433}", "xds.postgres_ports.orders-db: no postgres resource"},
		{"unknown xds field", "node_ids: [edge]", "node_id: [edge]", "field node_id not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			y := strings.Replace(xdsYAML, tt.old, tt.new, 1)
			if y == xdsYAML {
				t.Fatalf("%q is not in the config", tt.old)
			}
			_, err := Parse(strings.NewReader(y))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	// Without node ids the ports are not required.
	y := strings.Replace(xdsYAML, "node_ids: [edge]\n  postgres_ports: {payments-db: 5432}\n  grpc_tls: {ca_file: /etc/envoy/custos-ca.crt, cert_file: /etc/envoy/envoy.crt, key_file: /etc/envoy/envoy.key}", "http_port: 8081", 1)
	if _, err := Parse(strings.NewReader(y)); err != nil {
		t.Fatalf("xds without node ids: %v", err)
	}
}

// proxyYAML is validYAML behind a proxy: PROXY protocol required from the
// proxy's network, with a certificate for the clients' TLS.
var proxyYAML = strings.Replace(validYAML, "    address: 127.0.0.1:6543\n", `    address: 127.0.0.1:6543
    tls: {cert_file: /etc/custos/tls.crt, key_file: /etc/custos/tls.key}
    proxy_protocol: required
    trusted_proxies: [172.30.89.0/24, 10.0.0.7]
`, 1)

func TestProxyProtocolListener(t *testing.T) {
	t.Parallel()
	c, err := Parse(strings.NewReader(proxyYAML))
	if err != nil {
		t.Fatal(err)
	}
	pl := c.Listeners.Postgres
	// Behind a proxy the token may travel only over TLS: the default
	// follows.
	if pl.ProxyProtocol != ProxyProtocolRequired || pl.PasswordTransport != TransportTLS {
		t.Errorf("proxy_protocol %q, password_transport %q", pl.ProxyProtocol, pl.PasswordTransport)
	}
	got, err := pl.TrustedProxyPrefixes()
	if err != nil || len(got) != 2 || got[0].String() != "172.30.89.0/24" || got[1].String() != "10.0.0.7/32" {
		t.Errorf("trusted prefixes = %v, %v", got, err)
	}
	// Without the fields the listener takes clients directly; "off"
	// spelled out is a string, not YAML 1.1's false.
	for _, y := range []string{validYAML, strings.Replace(validYAML, "    address: 127.0.0.1:6543\n", "    address: 127.0.0.1:6543\n    proxy_protocol: off\n", 1)} {
		c, err := Parse(strings.NewReader(y))
		if err != nil {
			t.Fatal(err)
		}
		if pl := c.Listeners.Postgres; pl.ProxyProtocol != ProxyProtocolOff || pl.PasswordTransport != TransportTLSOrLoopback {
			t.Errorf("direct listener: proxy_protocol %q, password_transport %q", pl.ProxyProtocol, pl.PasswordTransport)
		}
	}

	tests := []struct {
		name, old, new, want string
	}{
		{"unknown mode", "proxy_protocol: required", "proxy_protocol: optional", `listeners.postgres.proxy_protocol: must be off or required, not "optional"`},
		{"no trusted proxies", "    trusted_proxies: [172.30.89.0/24, 10.0.0.7]\n", "", "listeners.postgres.trusted_proxies: at least one address is required"},
		{"cleartext allowed", "proxy_protocol: required", "proxy_protocol: required\n    password_transport: tls_or_loopback", `listeners.postgres.password_transport: must be tls with proxy_protocol required (not "tls_or_loopback")`},
		{"any allowed", "proxy_protocol: required", "proxy_protocol: required\n    password_transport: any", `listeners.postgres.password_transport: must be tls with proxy_protocol required (not "any")`},
		{"no certificate", "    tls: {cert_file: /etc/custos/tls.crt, key_file: /etc/custos/tls.key}\n", "", `listeners.postgres.password_transport: "tls" needs listeners.postgres.tls`},
		{"bad prefix", "10.0.0.7]", "10.0.0.7/33]", "listeners.postgres.trusted_proxies[1]"},
		{"not an address", "10.0.0.7]", "envoy]", "listeners.postgres.trusted_proxies[1]"},
		{"zone", "10.0.0.7]", "fe80::1%eth0]", "listeners.postgres.trusted_proxies[1]"},
		{"trusted without proxy protocol", "proxy_protocol: required", "proxy_protocol: off", "listeners.postgres.trusted_proxies: has no effect with proxy_protocol off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			y := strings.Replace(proxyYAML, tt.old, tt.new, 1)
			if y == proxyYAML {
				t.Fatalf("%q not in the config", tt.old)
			}
			_, err := Parse(strings.NewReader(y))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestResourceLogins(t *testing.T) {
	t.Parallel()
	const logins = `    logins:
      - {group: agents, user: custos_agent_ro, password: {env: AGENT_PW}, approved_role: custos_agent_write}
      - {group: dba, user: custos_dba, password: {file: /run/secrets/dba}}
`
	c, err := Parse(strings.NewReader(validYAML + logins))
	if err != nil {
		t.Fatal(err)
	}
	r := &c.Resources[0]
	for _, tc := range []struct {
		groups []string
		want   string
	}{
		{[]string{"dba", "agents"}, "custos_agent_ro"}, // list order, not the token's, decides
		{[]string{"dba"}, "custos_dba"},
		{[]string{"agents"}, "custos_agent_ro"},
		{[]string{"auditors"}, ""},
		{nil, ""},
	} {
		got := ""
		if l := r.LoginFor(tc.groups); l != nil {
			got = l.User
		}
		if got != tc.want {
			t.Errorf("LoginFor(%v) = %q, want %q", tc.groups, got, tc.want)
		}
	}
	if l := r.LoginFor([]string{"agents"}); l.ApprovedRole != "custos_agent_write" || l.Password.Env != "AGENT_PW" {
		t.Errorf("agents login = %+v", l)
	}

	for _, tc := range []struct{ name, logins, want string }{
		{"no group", "      - {user: u, password: {env: X}}\n", "resources[0].logins[0].group: is required"},
		{"no user", "      - {group: g, password: {env: X}}\n", "resources[0].logins[0].user: is required"},
		{"no password", "      - {group: g, user: u}\n", "resources[0].logins[0].password: set exactly one of env or file"},
		{"two passwords", "      - {group: g, user: u, password: {env: X, file: /x}}\n", "resources[0].logins[0].password"},
		{"group twice", "      - {group: g, user: u, password: {env: X}}\n      - {group: g, user: v, password: {env: Y}}\n", "resources[0].logins[1].group: \"g\" is listed twice"},
		{"approved role is the login", "      - {group: g, user: u, password: {env: X}, approved_role: u}\n", "resources[0].logins[0].approved_role"},
	} {
		_, err := Parse(strings.NewReader(validYAML + "    logins:\n" + tc.logins))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.want)
		}
	}
}
