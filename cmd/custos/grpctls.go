package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/custos-dev/custos/internal/config"
)

// errClientNotAllowed refuses a client certificate whose identities are
// not in listeners.grpc.tls.allowed_clients.
var errClientNotAllowed = errors.New("client certificate names no identity in listeners.grpc.tls.allowed_clients")

// grpcServerTLS is the TLS of the gRPC listener: nil for plaintext (only
// with insecure_no_client_auth), else custos' certificate and, unless
// insecure_no_client_auth, a client certificate required, verified
// against client_ca_file and checked against allowed_clients.
func grpcServerTLS(g config.GRPCListener) (*tls.Config, error) {
	t := g.TLS
	if t.CertFile == "" {
		if g.MutualTLS() {
			return nil, errors.New("listeners.grpc.tls: a certificate is required for mutual TLS")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("listeners.grpc.tls: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if !g.MutualTLS() {
		return cfg, nil
	}
	pem, err := os.ReadFile(t.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("listeners.grpc.tls.client_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("listeners.grpc.tls.client_ca_file: no certificate in %s", t.ClientCAFile)
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = pool
	if allowed := slices.Clone(t.AllowedClients); len(allowed) > 0 {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errClientNotAllowed
			}
			for _, id := range certIdentities(cs.PeerCertificates[0]) {
				if slices.Contains(allowed, id) {
					return nil
				}
			}
			return errClientNotAllowed
		}
	}
	return cfg, nil
}

// certIdentities are the names a client certificate can be allowed by:
// its URI SANs, DNS SANs and subject common name, as Envoy names a peer.
func certIdentities(c *x509.Certificate) []string {
	ids := make([]string, 0, len(c.URIs)+len(c.DNSNames)+1)
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	ids = append(ids, c.DNSNames...)
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	return ids
}

// grpcCredentials are the gRPC server's transport credentials (none for
// a plaintext listener); a refused handshake is logged with the peer's
// address.
func grpcCredentials(g config.GRPCListener, log *slog.Logger) ([]grpc.ServerOption, error) {
	cfg, err := grpcServerTLS(g)
	if err != nil || cfg == nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(loggedCreds{TransportCredentials: credentials.NewTLS(cfg), log: log})}, nil
}

// loggedCreds logs the handshakes it refuses.
type loggedCreds struct {
	credentials.TransportCredentials
	log *slog.Logger
}

func (c loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ServerHandshake(conn)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		// A port probe, or a client that gave up.
		c.log.Debug("grpc connection closed during the TLS handshake", slog.String("peer_address", conn.RemoteAddr().String()))
	default:
		c.log.Warn("grpc client refused: TLS handshake failed",
			slog.String("peer_address", conn.RemoteAddr().String()), slog.Any("error", err))
	}
	return nc, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{TransportCredentials: c.TransportCredentials.Clone(), log: c.log}
}
