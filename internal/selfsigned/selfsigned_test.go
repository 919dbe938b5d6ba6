package selfsigned

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("certificate PEM: no CERTIFICATE block in %q", certPEM)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("certificate PEM: trailing data %q", rest)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return cert
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	certPEM, keyPEM, err := generate([]string{"localhost", "127.0.0.1", "::1", " db.internal "}, now)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	cert := parseCert(t, certPEM)

	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key = %T, want ECDSA P-256", cert.PublicKey)
	}
	if got, want := cert.NotAfter.Sub(now), Validity; got != want {
		t.Errorf("NotAfter - now = %v, want %v", got, want)
	}
	if cert.NotBefore.After(now) {
		t.Errorf("NotBefore %v is after now %v", cert.NotBefore, now)
	}
	if cert.Subject.CommonName != "localhost" {
		t.Errorf("CommonName = %q, want localhost", cert.Subject.CommonName)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ExtKeyUsage = %v, want [ServerAuth]", cert.ExtKeyUsage)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("certificate is not self-signed: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "db.internal"} {
		_, err := cert.Verify(x509.VerifyOptions{
			DNSName:     host,
			Roots:       pool,
			CurrentTime: now,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Errorf("verify for %q: %v", host, err)
		}
	}
	if err := cert.VerifyHostname("example.com"); err == nil {
		t.Errorf("certificate verifies for example.com, want failure")
	}

	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("X509KeyPair: %v", err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key PEM: want a PKCS #8 PRIVATE KEY block, got %q", keyPEM)
	}
}

func TestGenerateUniqueSerialAndKey(t *testing.T) {
	t.Parallel()
	c1, k1, err := Generate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	c2, k2, err := Generate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k1, k2) {
		t.Error("two calls returned the same key")
	}
	if parseCert(t, c1).SerialNumber.Cmp(parseCert(t, c2).SerialNumber) == 0 {
		t.Error("two calls returned the same serial number")
	}
}

func TestGenerateNoHosts(t *testing.T) {
	t.Parallel()
	for _, hosts := range [][]string{nil, {}, {"", "  "}} {
		if _, _, err := Generate(hosts); !errors.Is(err, ErrNoHosts) {
			t.Errorf("Generate(%q) error = %v, want ErrNoHosts", hosts, err)
		}
	}
}

// TestGenerateTLSHandshake checks the certificate works end to end with
// crypto/tls when the client pins it as its root.
func TestGenerateTLSHandshake(t *testing.T) {
	t.Parallel()
	certPEM, keyPEM, err := Generate([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("AppendCertsFromPEM failed")
	}

	for _, name := range []string{"localhost", "127.0.0.1"} {
		serverConn, clientConn := net.Pipe()
		server := tls.Server(serverConn, &tls.Config{Certificates: []tls.Certificate{pair}})
		client := tls.Client(clientConn, &tls.Config{RootCAs: pool, ServerName: name})
		errc := make(chan error, 1)
		go func() {
			err := server.Handshake()
			if err == nil {
				_, err = io.Copy(io.Discard, server)
			}
			errc <- err
		}()
		if err := client.Handshake(); err != nil {
			t.Errorf("client handshake for %s: %v", name, err)
		}
		client.Close()
		if err := <-errc; err != nil && !errors.Is(err, io.EOF) {
			t.Errorf("server side for %s: %v", name, err)
		}
		server.Close()
	}
}

func TestLoadOrCreate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nested", "tls")
	certPath := filepath.Join(dir, "server.crt")
	keyPath := filepath.Join(dir, "server.key")

	first, err := LoadOrCreate(certPath, keyPath, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if first.Leaf == nil {
		t.Fatal("Leaf not populated")
	}
	if err := first.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname: %v", err)
	}
	for path, want := range map[string]os.FileMode{keyPath: 0o600, certPath: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %v, want %v", filepath.Base(path), got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("directory holds %d entries, want 2 (no temporary files left)", len(entries))
	}

	second, err := LoadOrCreate(certPath, keyPath, []string{"other.example"})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Error("second call did not load the existing certificate")
	}
}

func TestLoadOrCreatePartialPair(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath := filepath.Join(dir, "server.crt")
	keyPath := filepath.Join(dir, "server.key")
	if err := os.WriteFile(keyPath, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(certPath, keyPath, []string{"localhost"}); !errors.Is(err, ErrPartialPair) {
		t.Fatalf("error = %v, want ErrPartialPair", err)
	}
	got, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "keep me" {
		t.Errorf("existing key was overwritten")
	}
	if _, err := os.Stat(certPath); err == nil {
		t.Errorf("certificate was created next to a lone key")
	}
}

func TestLoadOrCreateInvalidPair(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certPath := filepath.Join(dir, "server.crt")
	keyPath := filepath.Join(dir, "server.key")
	certPEM, _, err := Generate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := Generate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(certPath, keyPath, []string{"localhost"}); err == nil {
		t.Fatal("mismatched key pair loaded without error")
	}
}

func TestLoadOrCreateNoHosts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := LoadOrCreate(filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), nil)
	if !errors.Is(err, ErrNoHosts) {
		t.Fatalf("error = %v, want ErrNoHosts", err)
	}
}
