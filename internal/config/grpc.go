package config

import (
	"fmt"
	"net"
)

// validateGRPCListener checks the gRPC listener's TLS: mutual TLS unless
// insecure_no_client_auth says otherwise.
func (c *Config) validateGRPCListener() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	g := c.Listeners.GRPC
	if g.Address == "" {
		return nil
	}
	t := g.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		add("listeners.grpc.tls", "cert_file and key_file go together")
	}
	if g.InsecureNoClientAuth {
		if t.ClientCAFile != "" {
			add("listeners.grpc.tls.client_ca_file", "is not used with insecure_no_client_auth: true (client certificates are not asked for)")
		}
		if len(t.AllowedClients) > 0 {
			add("listeners.grpc.tls.allowed_clients", "is not used with insecure_no_client_auth: true (client certificates are not asked for)")
		}
		return errs
	}
	if t.CertFile == "" && t.KeyFile == "" && t.ClientCAFile == "" {
		add("listeners.grpc.tls", "cert_file, key_file and client_ca_file are required: the gRPC listener (ext_authz, ext_proc, xDS) answers only clients with a certificate from client_ca_file; insecure_no_client_auth: true answers anyone who reaches it")
	} else if t.ClientCAFile == "" {
		add("listeners.grpc.tls.client_ca_file", "is required: the gRPC listener answers only clients with a certificate from it (insecure_no_client_auth: true answers anyone)")
	} else if t.CertFile == "" {
		add("listeners.grpc.tls.cert_file", "is required with client_ca_file")
	}
	for i, id := range t.AllowedClients {
		if id == "" {
			add(fmt.Sprintf("listeners.grpc.tls.allowed_clients[%d]", i), "must not be empty")
		}
	}
	return errs
}

// validatePprof keeps profiles off the network unless asked for, and off
// the admin listener always.
func (c *Config) validatePprof() []error {
	p := c.Listeners.Pprof
	if p.Address == "" {
		return nil
	}
	fail := func(format string, args ...any) []error {
		return []error{&FieldError{Field: "listeners.pprof.address", Msg: fmt.Sprintf(format, args...)}}
	}
	host, port, err := net.SplitHostPort(p.Address)
	switch {
	case err != nil || !validPort(port):
		return fail("%q is not host:port", p.Address)
	case p.Address == c.Listeners.Admin.Address:
		return fail("must differ from listeners.admin.address: profiles are never served on the admin listener")
	case !p.InsecureAllowRemote && !loopbackHost(host):
		return fail("%q is not a loopback address: profiles (goroutine dumps, heap) answer anyone who reaches them; bind 127.0.0.1 or set insecure_allow_remote: true", p.Address)
	}
	return nil
}

// loopbackHost reports whether host names only this machine.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateXDSGRPCTLS checks that what Envoy is told to present to custos'
// gRPC listener matches what the listener asks for.
func (c *Config) validateXDSGRPCTLS() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	g, e := c.Listeners.GRPC, c.XDS.GRPCTLS
	if (e.CertFile == "") != (e.KeyFile == "") {
		add("xds.grpc_tls", "cert_file and key_file go together")
	}
	if !c.XDS.Enabled() {
		return errs
	}
	if !g.ServesTLS() {
		if !e.IsZero() {
			add("xds.grpc_tls", "is set but listeners.grpc serves no TLS: Envoy would speak TLS to a plaintext listener")
		}
		return errs
	}
	if e.CAFile == "" {
		add("xds.grpc_tls.ca_file", "is required: Envoy verifies custos' gRPC certificate (listeners.grpc.tls) with it")
	}
	if g.MutualTLS() && e.CertFile == "" {
		add("xds.grpc_tls.cert_file", "is required: listeners.grpc requires a client certificate from Envoy")
	}
	return errs
}
