package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Validity is how long a generated certificate is valid.
const Validity = 365 * 24 * time.Hour

// backdate is how far before "now" a generated certificate becomes valid,
// so that small clock differences between peers do not reject it.
const backdate = time.Hour

// ErrNoHosts is returned when a certificate is requested without any host.
var ErrNoHosts = errors.New("selfsigned: at least one host name or IP address is required")

// ErrPartialPair is returned by LoadOrCreate when only one of the certificate
// and key files exists; it refuses to overwrite the one that is present.
var ErrPartialPair = errors.New("selfsigned: only one of the certificate and key files exists")

// Generate returns a PEM certificate and a PEM private key (ECDSA P-256,
// PKCS #8) for hosts, which are DNS names or IP addresses. The certificate
// is self-signed, valid for one year and usable as a TLS server certificate;
// it is also a CA so it can serve as its own trust root.
func Generate(hosts []string) (certPEM, keyPEM []byte, err error) {
	return generate(hosts, time.Now())
}

func generate(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	var (
		dnsNames   []string
		ips        []net.IP
		commonName string
	)
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if commonName == "" {
			commonName = h
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		dnsNames = append(dnsNames, h)
	}
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, nil, ErrNoHosts
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: generate ECDSA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: generate serial number: %w", err)
	}

	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"custos self-signed"},
			CommonName:   commonName,
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: marshal private key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// LoadOrCreate returns the certificate in certPath and keyPath. When neither
// file exists it first creates both with Generate(hosts): the key with mode
// 0600, the certificate with mode 0644, and missing parent directories with
// mode 0700. When only one of the two exists it returns ErrPartialPair
// rather than overwrite it. An existing pair is loaded as is: hosts is not
// compared against it and an expired certificate is returned unchanged
// (tls.Certificate.Leaf tells the caller both).
//
// Creation is not safe against another process creating the same files at
// the same time.
func LoadOrCreate(certPath, keyPath string, hosts []string) (tls.Certificate, error) {
	certExists, err := exists(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	switch {
	case certExists && !keyExists:
		return tls.Certificate{}, fmt.Errorf("%w: %s exists, key %s is missing", ErrPartialPair, certPath, keyPath)
	case !certExists && keyExists:
		return tls.Certificate{}, fmt.Errorf("%w: key %s exists, certificate %s is missing", ErrPartialPair, keyPath, certPath)
	case !certExists && !keyExists:
		certPEM, keyPEM, err := Generate(hosts)
		if err != nil {
			return tls.Certificate{}, err
		}
		if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
			return tls.Certificate{}, err
		}
		if err := writeFile(certPath, certPEM, 0o644); err != nil {
			return tls.Certificate{}, err
		}
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("selfsigned: load key pair %s, %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("selfsigned: stat %s: %w", path, err)
	}
}

// writeFile writes data to path through a temporary file in the same
// directory, so a reader never sees a partial file.
func writeFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("selfsigned: create directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("selfsigned: create temporary file for %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op after a successful rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("selfsigned: chmod %s: %w", tmpName, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("selfsigned: write %s: %w", tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("selfsigned: sync %s: %w", tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("selfsigned: close %s: %w", tmpName, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("selfsigned: rename %s to %s: %w", tmpName, path, err)
	}
	return nil
}
