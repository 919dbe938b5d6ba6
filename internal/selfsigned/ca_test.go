package selfsigned

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestCAIssue(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	caCert := parseCert(t, ca.CertPEM)
	if !caCert.IsCA || caCert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v, key usage %v", caCert.IsCA, caCert.KeyUsage)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	tests := []struct {
		name    string
		leaf    Leaf
		usage   x509.ExtKeyUsage
		dnsName string
		cn      string
	}{
		{"server", Leaf{Hosts: []string{"localhost", "127.0.0.1"}, Server: true}, x509.ExtKeyUsageServerAuth, "localhost", "localhost"},
		{"client", Leaf{CommonName: "envoy", URIs: []string{"spiffe://custos/envoy"}, Client: true}, x509.ExtKeyUsageClientAuth, "", "envoy"},
	}
	for _, tt := range tests {
		certPEM, keyPEM, err := ca.Issue(tt.leaf)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		c := parseCert(t, certPEM)
		if c.IsCA || c.Subject.CommonName != tt.cn {
			t.Errorf("%s: IsCA %v, CN %q", tt.name, c.IsCA, c.Subject.CommonName)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tt.dnsName, KeyUsages: []x509.ExtKeyUsage{tt.usage}}); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		other := x509.ExtKeyUsageClientAuth
		if tt.usage == other {
			other = x509.ExtKeyUsageServerAuth
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{other}}); err == nil {
			t.Errorf("%s: valid for %v too", tt.name, other)
		}
	}
	if _, _, err := ca.Issue(Leaf{Client: true}); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("no identity: %v", err)
	}
	if _, _, err := ca.Issue(Leaf{CommonName: "x", URIs: []string{"not a uri"}}); err == nil {
		t.Error("a relative URI SAN was accepted")
	}
}

// TestMutualTLSHandshake: the files make a working mutual TLS pair, and a
// server trusting them refuses a client of another CA and one without a
// certificate.
func TestMutualTLSHandshake(t *testing.T) {
	t.Parallel()
	files, err := LoadOrCreateMutualTLS(filepath.Join(t.TempDir(), "grpc"), []string{"localhost", "127.0.0.1"}, "envoy", "spiffe://custos-dev/envoy")
	if err != nil {
		t.Fatal(err)
	}
	other, err := LoadOrCreateMutualTLS(filepath.Join(t.TempDir(), "other"), []string{"localhost"}, "envoy", "")
	if err != nil {
		t.Fatal(err)
	}
	pool := func(f string) *x509.CertPool {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(b) {
			t.Fatalf("%s holds no certificate", f)
		}
		return p
	}
	pair := func(cert, key string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	srv := &tls.Config{
		Certificates: []tls.Certificate{pair(files.ServerCertFile, files.ServerKeyFile)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool(files.CAFile),
		MinVersion:   tls.VersionTLS12,
	}
	tests := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"right client", []tls.Certificate{pair(files.ClientCertFile, files.ClientKeyFile)}, true},
		{"no certificate", nil, false},
		{"another CA", []tls.Certificate{pair(other.ClientCertFile, other.ClientKeyFile)}, false},
		{"the server's own certificate", []tls.Certificate{pair(files.ServerCertFile, files.ServerKeyFile)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c1, c2 := net.Pipe()
			defer c1.Close()
			defer c2.Close()
			srvErr := make(chan error, 1)
			var peer []*x509.Certificate
			go func() {
				s := tls.Server(c1, srv)
				err := s.Handshake()
				peer = s.ConnectionState().PeerCertificates
				if err == nil {
					_, err = s.Write([]byte("x"))
				}
				srvErr <- err
				_ = c1.Close()
			}()
			cli := tls.Client(c2, &tls.Config{RootCAs: pool(files.CAFile), ServerName: "localhost", Certificates: tt.certs, MinVersion: tls.VersionTLS12})
			err := cli.Handshake()
			if err == nil {
				_, err = cli.Read(make([]byte, 1)) // TLS 1.3: the refusal comes after the handshake
			}
			sErr := <-srvErr
			if got := err == nil && sErr == nil; got != tt.ok {
				t.Fatalf("client %v, server %v, want success %v", err, sErr, tt.ok)
			}
			if tt.ok && (len(peer) == 0 || !slices.ContainsFunc(peer[0].URIs, func(u *url.URL) bool { return u.String() == "spiffe://custos-dev/envoy" })) {
				t.Errorf("peer certificate lacks its URI SAN")
			}
		})
	}
}

func TestLoadOrCreateMutualTLS(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "grpc")
	files, err := LoadOrCreateMutualTLS(dir, []string{"localhost"}, "envoy", "")
	if err != nil {
		t.Fatal(err)
	}
	if files != MutualTLSFiles(dir, "envoy") {
		t.Errorf("files = %+v", files)
	}
	for f, mode := range map[string]os.FileMode{
		files.CAFile: 0o644, files.ServerCertFile: 0o644, files.ServerKeyFile: 0o600,
		files.ClientCertFile: 0o644, files.ClientKeyFile: 0o600, dir: 0o700,
	} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v (%v)", f, fi.Mode().Perm(), mode, err)
		}
	}
	read := func(f string) []byte {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ca, key := read(files.CAFile), read(files.ServerKeyFile)
	// A second call keeps everything.
	if _, err := LoadOrCreateMutualTLS(dir, []string{"localhost"}, "envoy", ""); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, read(files.CAFile)) || !bytes.Equal(key, read(files.ServerKeyFile)) {
		t.Error("a second call changed the files")
	}
	// One file missing: a new CA issues everything again.
	if err := os.Remove(files.ClientKeyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateMutualTLS(dir, []string{"localhost"}, "envoy", ""); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ca, read(files.CAFile)) || bytes.Equal(key, read(files.ServerKeyFile)) {
		t.Error("a missing key did not reissue the set")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(read(files.CAFile))
	if _, err := parseCert(t, read(files.ClientCertFile)).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("reissued client certificate: %v", err)
	}
	if _, err := LoadOrCreateMutualTLS(filepath.Join(t.TempDir(), "x"), nil, "envoy", ""); !errors.Is(err, ErrNoHosts) {
		t.Errorf("no hosts: %v", err)
	}
}
