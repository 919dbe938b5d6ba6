package extproc_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/policies"
)

// env is custos' extproc behind the Envoy stand-in, with a real OIDC
// issuer, the policy engine, an approval service on SQLite and an upstream.
type env struct {
	*envoy
	issuer    *devissuer.Issuer
	issuerURL string
	issuerDir string
	approvals *approval.Service
	up        *upstream
	reg       *prometheus.Registry
	// grantKey is the key custos seals grants with.
	grantKey []byte
	// jwksFetches counts the issuer's JWKS requests.
	jwksFetches atomic.Int64
	// minted are the tokens token() made: no upstream may ever see one.
	mintedMu sync.Mutex
	minted   []string
}

type envOptions struct {
	// policyDir is the policy directory ("" for the embedded default).
	policyDir string
	// upstream answers the requests (default: 200 with a JSON body).
	upstream http.Handler
	// maxMessageTimeout is extproc.Options.MaxMessageTimeout.
	maxMessageTimeout time.Duration
	// noApprovals runs without an approval service.
	noApprovals bool
	// audit records events (nil: no audit).
	audit extproc.Recorder
	// authFailures records refused tokens (nil: through audit).
	authFailures extproc.AuthFailureRecorder
	// tracer records spans (nil: none).
	tracer trace.Tracer
	// now is custos' clock for grant seals (nil: time.Now).
	now func() time.Time
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	dir := t.TempDir()
	iss, err := devissuer.Open(filepath.Join(dir, "issuer"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{issuer: iss, issuerDir: filepath.Join(dir, "issuer"), reg: prometheus.NewRegistry(),
		grantKey: []byte(newID() + newID() + newID() + newID())}
	mux := http.NewServeMux()
	issuerHandler := http.StripPrefix("/dev-oidc", iss.Handler())
	mux.Handle("/dev-oidc/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, devissuer.JWKSPath) {
			e.jwksFetches.Add(1)
		}
		issuerHandler.ServeHTTP(w, r)
	}))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	issuerURL := ts.URL + "/dev-oidc"
	e.issuerURL = issuerURL
	if err := iss.SetURL(issuerURL); err != nil {
		t.Fatal(err)
	}
	verifier, err := authn.NewVerifier(context.Background(), []authn.Issuer{{
		URL: issuerURL, Audiences: []string{devissuer.DefaultAudience},
	}}, authn.WithClockSkew(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(context.Background(), policy.Options{Dir: opts.policyDir})
	if err != nil {
		t.Fatal(err)
	}
	masker, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !opts.noApprovals {
		store, err := approval.OpenSQLite(filepath.Join(dir, "approvals.db"))
		if err != nil {
			t.Fatal(err)
		}
		svc, err := approval.NewService(context.Background(), store, approval.Options{Replica: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = svc.Close()
			_ = store.Close()
		})
		e.approvals = svc
	}
	h := opts.upstream
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"ok":true}`))
		})
	}
	e.up = newUpstream(t, h)
	o := extproc.Options{
		GrantKey:          e.grantKey,
		Now:               opts.now,
		Verifier:          verifier,
		Policy:            eng,
		Masker:            masker,
		ApprovalURL:       "http://admin.example",
		MaxMessageTimeout: opts.maxMessageTimeout,
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        e.reg,
		Audit:             opts.audit,
		AuthFailures:      opts.authFailures,
		Tracer:            opts.tracer,
	}
	if e.approvals != nil {
		o.Approvals = e.approvals
	}
	conn := dialGRPC(t, func(s *grpc.Server) {
		if _, err := extproc.Register(s, o); err != nil {
			t.Fatal(err)
		}
	})
	e.envoy = newEnvoy(t, conn, e.up.URL)
	t.Cleanup(func() { e.upstreamNeverSawATokenOrCredential(t) })
	return e
}

// upstreamNeverSawATokenOrCredential fails the test when the upstream
// received a credential header, or any token this env minted anywhere in
// a request (line, headers, body). Every test checks it on cleanup.
func (e *env) upstreamNeverSawATokenOrCredential(t testing.TB) {
	t.Helper()
	e.mintedMu.Lock()
	minted := slices.Clone(e.minted)
	e.mintedMu.Unlock()
	reqs := e.up.requests()
	for i, raw := range e.up.raws() {
		for _, h := range []string{"authorization", "proxy-authorization"} {
			if reqs[i].Header.Get(h) != "" {
				t.Errorf("upstream request %d carries %s", i, h)
			}
		}
		for _, tok := range minted {
			if bytes.Contains(raw, []byte(tok)) {
				t.Errorf("upstream request %d carries a bearer token:\n%s", i, raw)
			}
		}
	}
}

// token mints a one-hour token.
func (e *env) token(t testing.TB, sub string, groups ...string) string {
	t.Helper()
	tok, err := e.issuer.Mint(devissuer.MintRequest{Subject: sub, Groups: groups, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.mintedMu.Lock()
	e.minted = append(e.minted, tok)
	e.mintedMu.Unlock()
	return tok
}

// signed signs claims with the issuer's own key, for tokens Mint refuses
// to make (expired ones).
func (e *env) signed(t testing.TB, claims map[string]any) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.issuerDir, devissuer.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.(*ecdsa.PrivateKey), KeyID: e.issuer.KeyID()}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tampered changes the subject of a valid token without signing it again.
func tampered(t testing.TB, tok string) string {
	t.Helper()
	return tamperedAs(t, tok, "root")
}

// tamperedAs sets the subject of a valid token to sub without signing it
// again.
func tamperedAs(t testing.TB, tok, sub string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	claims["sub"] = sub
	payload, _ = json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// pending waits for the one pending approval request and returns it.
func (e *env) pending(t testing.TB) *approval.Request {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		rs, err := e.approvals.List(context.Background(), approval.Filter{State: approval.StatePending})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) > 0 {
			return &rs[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no approval request was parked")
	return nil
}

// approver is a dba other than the requesters of the tests.
func (e *env) approver() approval.Principal {
	return approval.Principal{Sub: "bob", Iss: e.issuerURL, Groups: []string{"dba"}}
}

// policyCopy writes the embedded default policy into a directory with the
// approval TTL replaced, for tests that need approvals to expire.
func policyCopy(t testing.TB, ttl string) string {
	t.Helper()
	dir := t.TempDir()
	err := fs.WalkDir(policies.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(policies.FS, p)
		if err != nil {
			return err
		}
		if p == "data.json" {
			var data map[string]any
			if err := json.Unmarshal(b, &data); err != nil {
				return err
			}
			data["custos"].(map[string]any)["config"].(map[string]any)["approval"].(map[string]any)["ttl"] = ttl
			if b, err = json.Marshal(data); err != nil {
				return err
			}
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
