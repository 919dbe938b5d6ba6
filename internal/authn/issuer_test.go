package authn_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// signingKey is a private key with its JWK id and algorithm.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func (k signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// newKey generates a key for alg (RS*, PS*, ES256, EdDSA).
func newKey(t testing.TB, alg jose.SignatureAlgorithm, kid string) signingKey {
	t.Helper()
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case jose.RS256, jose.RS384, jose.PS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("newKey: unsupported alg %s", alg)
	}
	if err != nil {
		t.Fatalf("newKey: %v", err)
	}
	return signingKey{kid: kid, alg: alg, priv: priv}
}

// sign serializes claims as a compact JWS signed by k, with kid and typ JWT.
func sign(t testing.TB, k signingKey, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return signPayload(t, signer, claims)
}

func signPayload(t testing.TB, signer jose.Signer, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// rawToken assembles a compact token from arbitrary header, claims and
// signature bytes, for tokens a correct signer would not produce.
func rawToken(t testing.TB, header, claims map[string]any, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

// testIssuer is an OIDC issuer serving discovery and a JWKS over HTTP. Its
// endpoints can be switched off and its keys replaced while it runs.
type testIssuer struct {
	url string

	mu   sync.Mutex
	keys []jose.JSONWebKey

	discoveryDown  atomic.Bool
	discoveryDelay atomic.Int64 // nanoseconds
	jwksDown       atomic.Bool
	discoveryHits  atomic.Int32
	jwksHits       atomic.Int32
}

// newTestIssuer starts an httptest server for an issuer publishing keys.
func newTestIssuer(t testing.TB, keys ...signingKey) *testIssuer {
	t.Helper()
	ti := &testIssuer{}
	srv := httptest.NewServer(ti)
	t.Cleanup(srv.Close)
	ti.url = srv.URL
	ti.setKeys(keys...)
	return ti
}

// setKeys replaces the published key set (key rotation).
func (ti *testIssuer) setKeys(keys ...signingKey) {
	pub := make([]jose.JSONWebKey, 0, len(keys))
	for _, k := range keys {
		pub = append(pub, k.public())
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.keys = pub
}

func (ti *testIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		ti.discoveryHits.Add(1)
		time.Sleep(time.Duration(ti.discoveryDelay.Load()))
		if ti.discoveryDown.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, map[string]any{
			"issuer":                                ti.url,
			"jwks_uri":                              ti.url + "/jwks",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256", "EdDSA"},
		})
	case "/jwks":
		ti.jwksHits.Add(1)
		if ti.jwksDown.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		ti.mu.Lock()
		set := jose.JSONWebKeySet{Keys: ti.keys}
		ti.mu.Unlock()
		writeJSON(w, set)
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// claims returns a valid claim set for ti at now, modified by mods.
func (ti *testIssuer) claims(now time.Time, mods ...func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": ti.url,
		"sub": "alice",
		"aud": "custos",
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// set returns a claim modifier setting name to v.
func set(name string, v any) func(map[string]any) {
	return func(c map[string]any) { c[name] = v }
}

// del returns a claim modifier deleting name.
func del(name string) func(map[string]any) {
	return func(c map[string]any) { delete(c, name) }
}

// roundTripper serves requests with a handler, without a network.
type roundTripper struct{ h http.Handler }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	rt.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}
