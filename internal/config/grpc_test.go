package config

import (
	"strings"
	"testing"
)

// TestGRPCListenerNeedsMutualTLS: a gRPC listener without client
// certificates is refused unless the insecure opt-out says so; what Envoy
// is served must match what the listener asks for.
func TestGRPCListenerNeedsMutualTLS(t *testing.T) {
	t.Parallel()
	const listener = "  grpc:\n    address: 0.0.0.0:9901\n" + grpcTLSYAML
	const envoyTLS = "  grpc_tls: {ca_file: /etc/envoy/custos-ca.crt, cert_file: /etc/envoy/envoy.crt, key_file: /etc/envoy/envoy.key}\n"
	tests := []struct {
		name, old, new, want string
	}{
		{"no tls", listener, "  grpc:\n    address: 0.0.0.0:9901\n", "listeners.grpc.tls: cert_file, key_file and client_ca_file are required"},
		{"no client ca", "client_ca_file: /etc/custos/envoy-ca.crt", "", "listeners.grpc.tls.client_ca_file: is required"},
		{"no cert", "cert_file: /etc/custos/grpc.crt, key_file: /etc/custos/grpc.key, ", "", "listeners.grpc.tls.cert_file: is required"},
		{"half a pair", "key_file: /etc/custos/grpc.key, ", "", "listeners.grpc.tls: cert_file and key_file go together"},
		{"empty allowed client", "client_ca_file: /etc/custos/envoy-ca.crt", "client_ca_file: /etc/custos/envoy-ca.crt, allowed_clients: ['']", "listeners.grpc.tls.allowed_clients[0]: must not be empty"},
		{"insecure with a client ca", listener, listener + "    insecure_no_client_auth: true\n", "listeners.grpc.tls.client_ca_file: is not used with insecure_no_client_auth"},
		{"insecure with allowed clients", listener, "  grpc:\n    address: 0.0.0.0:9901\n    insecure_no_client_auth: true\n    tls: {allowed_clients: [envoy]}\n", "listeners.grpc.tls.allowed_clients: is not used"},
		{"envoy without ca", "ca_file: /etc/envoy/custos-ca.crt, ", "", "xds.grpc_tls.ca_file: is required"},
		{"envoy without client cert", "cert_file: /etc/envoy/envoy.crt, key_file: /etc/envoy/envoy.key", "", "xds.grpc_tls.cert_file: is required"},
		{"envoy half a pair", "key_file: /etc/envoy/envoy.key", "", "xds.grpc_tls: cert_file and key_file go together"},
		{"envoy tls to plaintext", listener, "  grpc:\n    address: 0.0.0.0:9901\n    insecure_no_client_auth: true\n", "xds.grpc_tls: is set but listeners.grpc serves no TLS"},
		{"no envoy tls", envoyTLS, "", "xds.grpc_tls.ca_file: is required"},
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
	ok := []struct {
		name   string
		edits  [][2]string
		mutual bool
	}{
		{"mutual tls", nil, true},
		{"allowed clients", [][2]string{{"client_ca_file: /etc/custos/envoy-ca.crt", "client_ca_file: /etc/custos/envoy-ca.crt, allowed_clients: [spiffe://custos/envoy, envoy]"}}, true},
		{"insecure plaintext", [][2]string{{listener, "  grpc:\n    address: 0.0.0.0:9901\n    insecure_no_client_auth: true\n"}, {envoyTLS, ""}}, false},
		{"insecure server tls", [][2]string{
			{", client_ca_file: /etc/custos/envoy-ca.crt}", "}\n    insecure_no_client_auth: true"},
			{", cert_file: /etc/envoy/envoy.crt, key_file: /etc/envoy/envoy.key", ""},
		}, false},
	}
	for _, tt := range ok {
		y := xdsYAML
		for _, e := range tt.edits {
			if !strings.Contains(y, e[0]) {
				t.Fatalf("%s: %q is not in the config", tt.name, e[0])
			}
			y = strings.Replace(y, e[0], e[1], 1)
		}
		c, err := Parse(strings.NewReader(y))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got := c.Listeners.GRPC.MutualTLS(); got != tt.mutual {
			t.Errorf("%s: MutualTLS() = %v", tt.name, got)
		}
	}
	// No gRPC listener, no TLS needed.
	if _, err := Parse(strings.NewReader(validYAML)); err != nil {
		t.Fatal(err)
	}
}

func TestPprofListener(t *testing.T) {
	t.Parallel()
	base := strings.Replace(validYAML, "    address: 127.0.0.1:6543\n", "    address: 127.0.0.1:6543\n  admin:\n    address: 127.0.0.1:9902\n", 1)
	tests := []struct {
		pprof, want string
	}{
		{"{address: 127.0.0.1:9904}", ""},
		{"{address: 'localhost:9904'}", ""},
		{"{address: '[::1]:9904'}", ""},
		{"{address: ''}", ""},
		{"{address: 0.0.0.0:9904}", "listeners.pprof.address: \"0.0.0.0:9904\" is not a loopback address"},
		{"{address: ':9904'}", "is not a loopback address"},
		{"{address: 10.0.0.5:9904}", "is not a loopback address"},
		{"{address: 0.0.0.0:9904, insecure_allow_remote: true}", ""},
		{"{address: 127.0.0.1:9902}", "must differ from listeners.admin.address"},
		{"{address: nope}", "listeners.pprof.address: \"nope\" is not host:port"},
	}
	for _, tt := range tests {
		y := strings.Replace(base, "  admin:\n", "  pprof: "+tt.pprof+"\n  admin:\n", 1)
		_, err := Parse(strings.NewReader(y))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.pprof, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: err = %v, want %q", tt.pprof, err, tt.want)
		}
	}
}
