package devissuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/authn"
)

func open(t *testing.T, dir string) *Issuer {
	t.Helper()
	i, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return i
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestOpenCreatesAndReusesKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	first := open(t, dir)
	if first.URL() != "" {
		t.Errorf("URL() = %q before SetURL", first.URL())
	}
	if runtime.GOOS != "windows" {
		if m := fileMode(t, filepath.Join(dir, KeyFile)); m != 0o600 {
			t.Errorf("key file mode = %04o, want 0600", m)
		}
		if m := fileMode(t, dir); m != 0o700 {
			t.Errorf("data dir mode = %04o, want 0700", m)
		}
	}
	if err := first.SetURL("http://127.0.0.1:9999/dev-oidc/"); err != nil {
		t.Fatal(err)
	}
	if got, want := first.URL(), "http://127.0.0.1:9999/dev-oidc"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
	second := open(t, dir)
	if second.KeyID() != first.KeyID() || !second.key.Equal(first.key) {
		t.Errorf("reopened issuer has another key: kid %q, want %q", second.KeyID(), first.KeyID())
	}
	if second.URL() != first.URL() {
		t.Errorf("reopened URL() = %q, want %q", second.URL(), first.URL())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{KeyFile, StateFile}; !slices.Equal(names, want) {
		t.Errorf("data dir holds %q, want %q (no temporary files left)", names, want)
	}
}

func TestOpenConcurrentFirstStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 8
	kids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			i, err := Open(dir)
			errs[k] = err
			if err == nil {
				kids[k] = i.KeyID()
			}
		})
	}
	wg.Wait()
	for k := range n {
		if errs[k] != nil {
			t.Fatalf("Open %d: %v", k, errs[k])
		}
		if kids[k] != kids[0] {
			t.Fatalf("concurrent Opens disagree on the key: %q vs %q", kids[k], kids[0])
		}
	}
}

func TestOpenRefusesBadKeyFile(t *testing.T) {
	t.Parallel()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	p384PEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		wantErr string
	}{
		{name: "not PEM", content: []byte("hello"), mode: 0o600, wantErr: "no PEM"},
		{name: "bad DER", content: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), mode: 0o600, wantErr: "key file"},
		{name: "P-384 key", content: p384PEM, mode: 0o600, wantErr: "P-256"},
		{name: "readable by others", content: p384PEM, mode: 0o644, wantErr: "chmod 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.mode != 0o600 && runtime.GOOS == "windows" {
				t.Skip("no Unix permissions")
			}
			dir := t.TempDir()
			path := filepath.Join(dir, KeyFile)
			if err := os.WriteFile(path, tt.content, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
	if _, err := Open(""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
}

func TestSetURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url, want string
		wantErr   bool
	}{
		{url: "http://127.0.0.1:8080/dev-oidc", want: "http://127.0.0.1:8080/dev-oidc"},
		{url: "https://custos.local/", want: "https://custos.local"},
		{url: "", wantErr: true},
		{url: "127.0.0.1:8080", wantErr: true},
		{url: "ftp://host/x", wantErr: true},
		{url: "http:///path", wantErr: true},
		{url: "http://host/x?y=1", wantErr: true},
		{url: "http://host/x#f", wantErr: true},
		{url: "http://user:pw@host/x", wantErr: true},
	}
	i := open(t, t.TempDir())
	for _, tt := range tests {
		err := i.SetURL(tt.url)
		if tt.wantErr {
			if err == nil {
				t.Errorf("SetURL(%q) succeeded", tt.url)
			}
			continue
		}
		if err != nil || i.URL() != tt.want {
			t.Errorf("SetURL(%q): URL() = %q, err = %v; want %q", tt.url, i.URL(), err, tt.want)
		}
	}
}

func TestMintErrors(t *testing.T) {
	t.Parallel()
	i := open(t, t.TempDir())
	if _, err := i.Mint(MintRequest{Subject: "alice"}); !errors.Is(err, ErrNoURL) {
		t.Fatalf("Mint before SetURL = %v, want ErrNoURL", err)
	}
	if err := i.SetURL("http://127.0.0.1:1/dev-oidc"); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Mint(MintRequest{}); err == nil {
		t.Error("Mint without subject succeeded")
	}
	if _, err := i.Mint(MintRequest{Subject: "alice", TTL: -time.Minute}); err == nil {
		t.Error("Mint with negative TTL succeeded")
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	i := open(t, t.TempDir())
	mux := http.NewServeMux()
	mux.Handle("/dev-oidc/", i.Handler())
	mux.Handle("/stripped/", http.StripPrefix("/stripped", i.Handler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	get := func(method, path string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, _ := get(http.MethodGet, "/dev-oidc"+DiscoveryPath); code != http.StatusServiceUnavailable {
		t.Fatalf("discovery before SetURL: status %d, want 503", code)
	}
	if err := i.SetURL(srv.URL + "/dev-oidc"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		wantCode     int
		wantBody     string
	}{
		{http.MethodGet, "/dev-oidc" + DiscoveryPath, http.StatusOK, `"issuer":"` + srv.URL + `/dev-oidc"`},
		{http.MethodGet, "/dev-oidc" + DiscoveryPath, http.StatusOK, `"jwks_uri":"` + srv.URL + `/dev-oidc/jwks"`},
		{http.MethodGet, "/dev-oidc" + DiscoveryPath, http.StatusOK, `"id_token_signing_alg_values_supported":["ES256"]`},
		{http.MethodGet, "/dev-oidc" + JWKSPath, http.StatusOK, `"kid":"` + i.KeyID() + `"`},
		{http.MethodGet, "/dev-oidc" + JWKSPath, http.StatusOK, `"crv":"P-256"`},
		{http.MethodGet, "/stripped" + DiscoveryPath, http.StatusOK, `"issuer":"` + srv.URL + `/dev-oidc"`},
		{http.MethodHead, "/dev-oidc" + JWKSPath, http.StatusOK, ""},
		{http.MethodPost, "/dev-oidc" + JWKSPath, http.StatusMethodNotAllowed, ""},
		{http.MethodGet, "/dev-oidc/other", http.StatusNotFound, ""},
		{http.MethodGet, "/dev-oidc/", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		code, body := get(tt.method, tt.path)
		if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
			t.Errorf("%s %s: %d %s; want %d containing %s", tt.method, tt.path, code, body, tt.wantCode, tt.wantBody)
		}
	}
	_, body := get(http.MethodGet, "/dev-oidc"+JWKSPath)
	if strings.Contains(body, `"d"`) {
		t.Errorf("JWKS leaks the private key: %s", body)
	}
}

// TestEndToEnd mints tokens and verifies them with internal/authn against
// the issuer served over HTTP, as `custos dev` wires it.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	iss := open(t, dir)
	mux := http.NewServeMux()
	mux.Handle("/dev-oidc/", iss.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if err := iss.SetURL(srv.URL + "/dev-oidc"); err != nil {
		t.Fatal(err)
	}
	v, err := authn.NewVerifier(t.Context(),
		[]authn.Issuer{{URL: iss.URL(), Audiences: []string{DefaultAudience}, Algorithms: []string{"ES256"}}},
		authn.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	// A second Open of the same directory (what `custos token` does) mints
	// tokens with the same key and issuer URL.
	reopened := open(t, dir)

	tests := []struct {
		name    string
		issuer  *Issuer
		req     MintRequest
		wantErr error
		check   func(*testing.T, *authn.Principal)
	}{
		{
			name: "minimal", issuer: iss, req: MintRequest{Subject: "alice"},
			check: func(t *testing.T, p *authn.Principal) {
				if p.Subject != "alice" || p.User != "alice" || p.Issuer != iss.URL() || len(p.Groups) != 0 || p.Act != nil {
					t.Errorf("principal = %+v", p)
				}
				if d := time.Until(p.Expiry); d < 59*time.Minute || d > 61*time.Minute {
					t.Errorf("expiry in %s, want about %s", d, DefaultTTL)
				}
				if _, ok := p.Claims["jti"].(string); !ok {
					t.Errorf("no jti: %v", p.Claims)
				}
			},
		},
		{
			name: "agent acting for a human", issuer: iss,
			req: MintRequest{Subject: "agent-7", Act: "bob", Groups: []string{"dba", "payments"}, Email: "bob@example.com", TTL: 5 * time.Minute},
			check: func(t *testing.T, p *authn.Principal) {
				if p.Subject != "agent-7" || p.Act == nil || p.Act.Subject != "bob" || p.Email != "bob@example.com" ||
					!slices.Equal(p.Groups, []string{"dba", "payments"}) {
					t.Errorf("principal = %+v act = %+v", p, p.Act)
				}
			},
		},
		{name: "reopened issuer", issuer: reopened, req: MintRequest{Subject: "carol"}},
		{name: "other audience", issuer: iss, req: MintRequest{Subject: "alice", Audience: "billing"}, wantErr: authn.ErrAudience},
		{name: "not yet valid", issuer: iss, req: MintRequest{Subject: "alice", NotBefore: time.Now().Add(time.Hour)}, wantErr: authn.ErrNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := tt.issuer.Mint(tt.req)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			p, err := v.Verify(t.Context(), tok)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestMintedHeader(t *testing.T) {
	t.Parallel()
	i := open(t, t.TempDir())
	if err := i.SetURL("http://127.0.0.1:1/dev-oidc"); err != nil {
		t.Fatal(err)
	}
	tok, err := i.Mint(MintRequest{Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	header, err := decodePart(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	if header["alg"] != "ES256" || header["kid"] != i.KeyID() || header["typ"] != "JWT" {
		t.Errorf("header = %v", header)
	}
}

func decodePart(s string) (map[string]any, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}
