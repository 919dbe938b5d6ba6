package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoIdentity is returned when a leaf certificate is requested without
// any name.
var ErrNoIdentity = errors.New("selfsigned: a leaf certificate needs a common name, a host or a URI")

// CA is a certificate authority held in memory, for issuing the server and
// client certificates of a mutual TLS setup. Its key is never written.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertPEM is the CA certificate, the trust root of both sides.
	CertPEM []byte
}

// Leaf describes a certificate a CA issues.
type Leaf struct {
	// CommonName is the subject's common name (default: the first host).
	CommonName string
	// Hosts are DNS names and IP addresses (subject alternative names).
	Hosts []string
	// URIs are URI subject alternative names (e.g. SPIFFE ids).
	URIs []string
	// Server and Client set the extended key usages.
	Server, Client bool
}

// NewCA creates a CA (ECDSA P-256, valid for Validity) named commonName.
func NewCA(commonName string) (*CA, error) {
	return newCA(commonName, time.Now())
}

func newCA(commonName string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"custos self-signed"}, CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: parse CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue returns a certificate for l signed by the CA, and its private key
// (ECDSA P-256, PKCS #8), both PEM.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	tmpl := &x509.Certificate{
		NotBefore: ca.cert.NotBefore,
		NotAfter:  ca.cert.NotAfter,
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
	for _, h := range l.Hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
		if l.CommonName == "" {
			l.CommonName = h
		}
	}
	for _, s := range l.URIs {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return nil, nil, fmt.Errorf("selfsigned: URI SAN %q is not an absolute URI", s)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	if l.CommonName == "" && len(tmpl.URIs) == 0 {
		return nil, nil, ErrNoIdentity
	}
	tmpl.Subject = pkix.Name{Organization: []string{"custos self-signed"}, CommonName: l.CommonName}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: generate ECDSA key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("selfsigned: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("selfsigned: generate serial number: %w", err)
	}
	return n, nil
}

// MutualTLS names the files of a mutual TLS setup: one CA, a server
// certificate and a client certificate it issued.
type MutualTLS struct {
	CAFile                        string
	ServerCertFile, ServerKeyFile string
	ClientCertFile, ClientKeyFile string
}

// MutualTLSFiles are the file names LoadOrCreateMutualTLS uses in dir.
func MutualTLSFiles(dir, client string) MutualTLS {
	return MutualTLS{
		CAFile:         filepath.Join(dir, "ca.crt"),
		ServerCertFile: filepath.Join(dir, "server.crt"),
		ServerKeyFile:  filepath.Join(dir, "server.key"),
		ClientCertFile: filepath.Join(dir, client+".crt"),
		ClientKeyFile:  filepath.Join(dir, client+".key"),
	}
}

// LoadOrCreateMutualTLS keeps a CA, a server certificate for serverHosts
// and a client certificate for client (common name client, URI SAN
// clientURI when not empty) in dir (MutualTLSFiles). When every file is
// there they are kept as they are; when any is missing all are issued
// anew by a new CA, whose key is not kept. Keys are mode 0600, the rest
// 0644, dir 0700.
func LoadOrCreateMutualTLS(dir string, serverHosts []string, client, clientURI string) (MutualTLS, error) {
	files := MutualTLSFiles(dir, client)
	all := true
	for _, f := range []string{files.CAFile, files.ServerCertFile, files.ServerKeyFile, files.ClientCertFile, files.ClientKeyFile} {
		ok, err := exists(f)
		if err != nil {
			return MutualTLS{}, err
		}
		all = all && ok
	}
	if all {
		return files, nil
	}
	if len(serverHosts) == 0 {
		return MutualTLS{}, ErrNoHosts
	}
	ca, err := NewCA("custos " + filepath.Base(dir) + " CA")
	if err != nil {
		return MutualTLS{}, err
	}
	srvCert, srvKey, err := ca.Issue(Leaf{Hosts: serverHosts, Server: true})
	if err != nil {
		return MutualTLS{}, err
	}
	leaf := Leaf{CommonName: client, Client: true}
	if clientURI != "" {
		leaf.URIs = []string{clientURI}
	}
	cliCert, cliKey, err := ca.Issue(leaf)
	if err != nil {
		return MutualTLS{}, err
	}
	// The CA last: a crash half way leaves it missing, so the next call
	// issues everything again.
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{files.ServerKeyFile, srvKey, 0o600}, {files.ServerCertFile, srvCert, 0o644},
		{files.ClientKeyFile, cliKey, 0o600}, {files.ClientCertFile, cliCert, 0o644},
		{files.CAFile, ca.CertPEM, 0o644},
	} {
		if err := writeFile(w.path, w.data, w.mode); err != nil {
			return MutualTLS{}, err
		}
	}
	return files, nil
}
