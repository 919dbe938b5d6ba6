// Package selfsigned creates and loads self-signed TLS certificates.
//
// It exists for local and test setups where no real PKI is available: the
// throwaway PostgreSQL cluster (internal/pgcluster), a development gateway
// listener, and tests that need a server certificate a client can pin.
//
// A certificate from Generate is its own trust anchor: it is marked as a
// CA so that clients (Go's crypto/tls, libpq with sslmode=verify-full)
// accept it when it is configured as the root certificate, and it carries
// the given host names and IP addresses as subject alternative names so
// hostname verification succeeds.
//
// For mutual TLS (custos' gRPC listener and the Envoy that calls it), CA
// issues server and client certificates from one in-memory CA, and
// LoadOrCreateMutualTLS keeps such a set in a directory: the CA
// certificate, a server pair and a client pair; the CA's key is never
// written, so a missing file means a new CA and a new set.
package selfsigned
