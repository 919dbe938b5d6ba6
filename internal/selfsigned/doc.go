// Package selfsigned creates and loads self-signed TLS server certificates.
//
// It exists for local and test setups where no real PKI is available: the
// throwaway PostgreSQL cluster (internal/pgcluster), a development gateway
// listener, and tests that need a server certificate a client can pin.
//
// A generated certificate is its own trust anchor: it is marked as a CA so
// that clients (Go's crypto/tls, libpq with sslmode=verify-full) accept it
// when it is configured as the root certificate, and it carries the given
// host names and IP addresses as subject alternative names so hostname
// verification succeeds.
package selfsigned
