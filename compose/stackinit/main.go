// Command stackinit prepares the shared volumes of the compose stack
// (compose/compose.yaml) before the services start, and is the health
// probe of the containers that have no shell or HTTP client.
//
//	stackinit init  --secrets DIR --probe DIR --audit DIR
//	stackinit probe URL
//
// init is idempotent (a restart keeps what exists) and writes:
//
//	SECRETS/tls/ca.crt                    the stack's CA (its key is not kept)
//	SECRETS/custos/tls.crt, tls.key       custos' Postgres listener: custos, localhost, 127.0.0.1
//	SECRETS/custos/gateway-password       the upstream role's password, for custos
//	SECRETS/envoy/tls.crt, tls.key        Envoy's client certificate for custos' gRPC listener:
//	                                      CN envoy, URI SAN spiffe://custos.compose/envoy
//	SECRETS/postgres/tls.crt, tls.key     PostgreSQL's server certificate: postgres
//	SECRETS/postgres/gateway-password     the same password, for the init script
//	SECRETS/postgres/superuser-password   the postgres superuser's password
//	PROBE/stackinit                       this binary, for healthchecks
//
// Each service's directory is mode 0700 and owned by that service's user
// (--custos-uid, --postgres-uid, --envoy-uid), so no container reads
// another's key;
// AUDIT is made writable by the collector (--collector-uid).
//
// probe GETs URL and exits 0 on a 2xx answer, 1 otherwise.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "stackinit:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: stackinit init [flags] | stackinit probe URL")
	}
	switch args[0] {
	case "init":
		return runInit(args[1:], stdout)
	case "probe":
		if len(args) != 2 {
			return errors.New("usage: stackinit probe URL")
		}
		return probe(ctx, args[1])
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// probe is a healthcheck: GET url, a 2xx answer within 3s is healthy.
func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

type initFlags struct {
	secrets, probeDir, audit                    string
	custosUID, postgresUID, collector, envoyUID int
}

// envoyClientURI is the identity of Envoy's client certificate, the one
// compose/custos.yaml allows on custos' gRPC listener.
const envoyClientURI = "spiffe://custos.compose/envoy"

func runInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("stackinit init", flag.ContinueOnError)
	var f initFlags
	fs.StringVar(&f.secrets, "secrets", "/stack/secrets", "secrets volume")
	fs.StringVar(&f.probeDir, "probe", "/stack/probe", "probe volume (gets a copy of this binary)")
	fs.StringVar(&f.audit, "audit", "", "audit log volume, made writable by the collector")
	fs.IntVar(&f.custosUID, "custos-uid", 65532, "custos' user and group id")
	fs.IntVar(&f.postgresUID, "postgres-uid", 999, "PostgreSQL's user and group id")
	fs.IntVar(&f.collector, "collector-uid", 10001, "the OpenTelemetry collector's user and group id")
	fs.IntVar(&f.envoyUID, "envoy-uid", 101, "Envoy's user and group id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := initSecrets(f); err != nil {
		return err
	}
	if f.probeDir != "" {
		if err := installSelf(f.probeDir); err != nil {
			return err
		}
	}
	if f.audit != "" {
		if err := os.MkdirAll(f.audit, 0o750); err != nil {
			return err
		}
		if err := chown(f.audit, f.collector); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, "stackinit: volumes ready")
	return nil
}

func initSecrets(f initFlags) error {
	tlsDir := filepath.Join(f.secrets, "tls")
	custosDir := filepath.Join(f.secrets, "custos")
	pgDir := filepath.Join(f.secrets, "postgres")
	envoyDir := filepath.Join(f.secrets, "envoy")
	for _, d := range []struct {
		path string
		mode fs.FileMode
		uid  int
	}{{tlsDir, 0o755, 0}, {custosDir, 0o700, f.custosUID}, {pgDir, 0o700, f.postgresUID}, {envoyDir, 0o700, f.envoyUID}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return err
		}
		if d.uid != 0 {
			if err := chown(d.path, d.uid); err != nil {
				return err
			}
		}
	}
	caFile := filepath.Join(tlsDir, "ca.crt")
	leaves := []struct {
		dir    string
		uid    int
		hosts  []string
		client string // a client certificate's URI SAN
	}{
		{custosDir, f.custosUID, []string{"custos", "localhost", "127.0.0.1", "::1"}, ""},
		{pgDir, f.postgresUID, []string{"postgres", "localhost"}, ""},
		{envoyDir, f.envoyUID, []string{"envoy"}, envoyClientURI},
	}
	complete := exists(caFile)
	for _, leaf := range leaves {
		complete = complete && exists(filepath.Join(leaf.dir, "tls.crt")) && exists(filepath.Join(leaf.dir, "tls.key"))
	}
	if !complete {
		// A new CA reissues every certificate (a volume of an older stack
		// has no Envoy certificate); its key is never stored.
		ca, err := newCA()
		if err != nil {
			return err
		}
		for _, leaf := range leaves {
			certPEM, keyPEM, err := ca.issue(leaf.hosts, leaf.client)
			if err != nil {
				return err
			}
			if err := writeFile(filepath.Join(leaf.dir, "tls.crt"), certPEM, 0o644, leaf.uid); err != nil {
				return err
			}
			if err := writeFile(filepath.Join(leaf.dir, "tls.key"), keyPEM, 0o600, leaf.uid); err != nil {
				return err
			}
		}
		if err := writeFile(caFile, ca.certPEM, 0o644, 0); err != nil {
			return err
		}
	}
	gw, err := readOrCreateSecret(filepath.Join(pgDir, "gateway-password"), f.postgresUID)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(custosDir, "gateway-password"), gw, 0o600, f.custosUID); err != nil {
		return err
	}
	_, err = readOrCreateSecret(filepath.Join(pgDir, "superuser-password"), f.postgresUID)
	return err
}

func readOrCreateSecret(path string, uid int) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return b, nil
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	b := []byte(hex.EncodeToString(raw[:]))
	return b, writeFile(path, b, 0o600, uid)
}

// installSelf copies this binary into dir for the other containers'
// healthchecks.
func installSelf(dir string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "stackinit"), data, 0o755, 0)
}

// writeFile replaces path atomically with data, owned by uid (0 keeps the
// writer as owner).
func writeFile(path string, data []byte, mode fs.FileMode, uid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	if uid != 0 {
		if err := chown(tmp, uid); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}

// chown gives path to uid (and the group of the same number). Without the
// right to (not root), a file already owned by that user is fine.
func chown(path string, uid int) error {
	if err := os.Lchown(path, uid, uid); err != nil {
		if os.Geteuid() != 0 && os.Geteuid() == uid {
			return nil
		}
		return err
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

type certAuthority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// validity of the stack's certificates; a volume older than that is
// removed with `docker compose down -v`.
const validity = 2 * 365 * 24 * time.Hour

func newCA() (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "custos compose stack CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &certAuthority{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue returns a server certificate for hosts (DNS names or IPs), or
// with clientURI a client certificate named hosts[0] and clientURI, and
// its PKCS #8 key, both PEM.
func (ca *certAuthority) issue(hosts []string, clientURI string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if clientURI != "" {
		u, err := url.Parse(clientURI)
		if err != nil {
			return nil, nil, err
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{u}
		hosts = nil // a client is named by its URI and common name
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}
