package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	// DefaultAudience is the aud of minted tokens when the request names none.
	DefaultAudience = "custos"
	// DefaultTTL is the lifetime of minted tokens when the request sets none.
	DefaultTTL = time.Hour

	// KeyFile and StateFile are the names of the issuer's files in the data
	// directory.
	KeyFile   = "dev-issuer-key.pem"
	StateFile = "dev-issuer.json"

	// DiscoveryPath and JWKSPath are served below the issuer URL's path.
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/jwks"

	algorithm = jose.ES256
)

// ErrNoURL is returned by Mint before an issuer URL was recorded with SetURL
// (by this process or, through the data directory, by a running `custos dev`).
var ErrNoURL = errors.New("devissuer: issuer URL not set (is custos dev running?)")

// Issuer is a development OIDC issuer backed by a data directory. It is safe
// for concurrent use.
type Issuer struct {
	dir  string
	key  *ecdsa.PrivateKey
	kid  string
	jwks []byte
	now  func() time.Time

	mu  sync.RWMutex
	url string
}

// state is the content of StateFile.
type state struct {
	Issuer string `json:"issuer"`
}

// Open loads the issuer from dataDir, creating the directory (mode 0700) and
// the signing key (mode 0600) on first use. A key file readable by others is
// refused. The issuer URL recorded by an earlier SetURL, if any, is loaded.
func Open(dataDir string) (*Issuer, error) {
	if dataDir == "" {
		return nil, errors.New("devissuer: data directory is empty")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	key, err := loadOrCreateKey(filepath.Join(dataDir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(algorithm), Use: "sig"}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("devissuer: key thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	if err != nil {
		return nil, fmt.Errorf("devissuer: encode JWKS: %w", err)
	}
	i := &Issuer{dir: dataDir, key: key, kid: pub.KeyID, jwks: jwks, now: time.Now}
	b, err := os.ReadFile(filepath.Join(dataDir, StateFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("devissuer: %w", err)
	default:
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, fmt.Errorf("devissuer: %s: %w", StateFile, err)
		}
		if st.Issuer != "" {
			if i.url, err = canonicalURL(st.Issuer); err != nil {
				return nil, fmt.Errorf("devissuer: %s: %w", StateFile, err)
			}
		}
	}
	return i, nil
}

// loadOrCreateKey reads the PEM key at path, or generates and stores one.
// Creation is atomic (write to a temporary file, then link it into place),
// so concurrent first starts agree on one key.
func loadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	key, err := loadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tmp, err := writeTemp(filepath.Dir(path), pemBytes)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created the key first: use it.
			return loadKey(path)
		}
		return nil, fmt.Errorf("store key: %w", err)
	}
	return key, nil
}

// loadKey reads and parses a P-256 PKCS#8 PEM key, refusing a file that
// other users can access.
func loadKey(path string) (*ecdsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("key file %s has mode %04o; it must not be accessible by others (chmod 600)", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("key file %s: no PEM PRIVATE KEY block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key file %s: not an ECDSA P-256 key", path)
	}
	return key, nil
}

// writeTemp writes b to a new file (mode 0600) in dir and returns its name.
func writeTemp(dir string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, ".dev-issuer-*.tmp")
	if err != nil {
		return "", err
	}
	name := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// canonicalURL validates an issuer URL and removes trailing slashes.
func canonicalURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", fmt.Errorf("issuer URL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("issuer URL %q: scheme must be http or https", raw)
	case u.Host == "":
		return "", fmt.Errorf("issuer URL %q has no host", raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", fmt.Errorf("issuer URL %q must not have user info, a query or a fragment", raw)
	}
	return strings.TrimRight(raw, "/"), nil
}

// SetURL records the public issuer URL (trailing slashes removed): the iss of
// minted tokens and the base of the discovery document. It is persisted in
// the data directory for other processes (`custos token`).
func (i *Issuer) SetURL(raw string) error {
	u, err := canonicalURL(raw)
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	b, err := json.MarshalIndent(state{Issuer: u}, "", "  ")
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	tmp, err := writeTemp(i.dir, append(b, '\n'))
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(i.dir, StateFile)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("devissuer: %w", err)
	}
	i.url = u
	return nil
}

// URL returns the issuer URL, or "" before SetURL.
func (i *Issuer) URL() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.url
}

// KeyID returns the kid of the signing key (its RFC 7638 thumbprint).
func (i *Issuer) KeyID() string { return i.kid }

// Handler serves the discovery document at <issuer path>/.well-known/openid-configuration
// and the JWKS at <issuer path>/jwks. Mount it under the issuer URL's path,
// e.g. mux.Handle("/dev-oidc/", iss.Handler()) for http://host/dev-oidc; it
// also works behind http.StripPrefix. It answers 503 until SetURL is called.
func (i *Issuer) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := i.URL()
		if base == "" {
			http.Error(w, "issuer URL not set", http.StatusServiceUnavailable)
			return
		}
		u, err := url.Parse(base)
		if err != nil {
			http.Error(w, "bad issuer URL", http.StatusInternalServerError)
			return
		}
		var body []byte
		switch strings.TrimPrefix(r.URL.Path, u.Path) {
		case DiscoveryPath:
			body, err = json.Marshal(discovery(base))
		case JWKSPath:
			body = i.jwks
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, "encode discovery document", http.StatusInternalServerError)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	})
}

// discoveryDocument is the OIDC discovery metadata of the issuer. It has no
// authorization or token endpoint: tokens come from Mint.
type discoveryDocument struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

func discovery(base string) discoveryDocument {
	return discoveryDocument{
		Issuer:                           base,
		JWKSURI:                          base + JWKSPath,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{string(algorithm)},
		ClaimsSupported:                  []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "groups", "email", "act"},
	}
}

// MintRequest describes a token to mint.
type MintRequest struct {
	// Subject is the sub claim; required.
	Subject string
	// Groups is the groups claim; omitted when empty.
	Groups []string
	// Act, when set, adds the RFC 8693 act claim {"sub": Act}.
	Act string
	// Email is the email claim; omitted when empty.
	Email string
	// Audience is the aud claim (default DefaultAudience).
	Audience string
	// TTL is the lifetime from now (default DefaultTTL); negative is refused.
	TTL time.Duration
	// NotBefore is the nbf claim (default: now).
	NotBefore time.Time
}

// Mint signs a token for req with the issuer key (ES256, kid set):
// iss = URL(), aud, sub, exp = now + TTL, iat = now, nbf, a random jti, and
// groups, email and act when set.
func (i *Issuer) Mint(req MintRequest) (string, error) {
	iss := i.URL()
	if iss == "" {
		return "", ErrNoURL
	}
	if req.Subject == "" {
		return "", errors.New("devissuer: subject is required")
	}
	ttl := req.TTL
	switch {
	case ttl == 0:
		ttl = DefaultTTL
	case ttl < 0:
		return "", fmt.Errorf("devissuer: TTL %s is negative", ttl)
	}
	aud := req.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	now := i.now()
	nbf := now
	if !req.NotBefore.IsZero() {
		nbf = req.NotBefore
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	claims := map[string]any{
		"iss": iss,
		"sub": req.Subject,
		"aud": aud,
		"exp": now.Add(ttl).Unix(),
		"iat": now.Unix(),
		"nbf": nbf.Unix(),
		"jti": hex.EncodeToString(jti),
	}
	if len(req.Groups) > 0 {
		claims["groups"] = slices.Clone(req.Groups)
	}
	if req.Email != "" {
		claims["email"] = req.Email
	}
	if req.Act != "" {
		claims["act"] = map[string]string{"sub": req.Act}
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devissuer: encode claims: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: algorithm, Key: jose.JSONWebKey{Key: i.key, KeyID: i.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("devissuer: sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	return tok, nil
}
