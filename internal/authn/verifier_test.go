package authn_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/internal/authn"
)

func newVerifier(t testing.TB, c *clock, issuers []authn.Issuer, opts ...authn.Option) *authn.Verifier {
	t.Helper()
	opts = append([]authn.Option{authn.WithNow(c.Now)}, opts...)
	v, err := authn.NewVerifier(t.Context(), issuers, opts...)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func TestNewVerifierConfig(t *testing.T) {
	t.Parallel()
	// Nothing listens here: construction must not need the issuer.
	const down = "http://127.0.0.1:1/issuer"
	ok := authn.Issuer{URL: down, Audiences: []string{"custos"}}
	with := func(f func(*authn.Issuer)) []authn.Issuer {
		is := ok
		f(&is)
		return []authn.Issuer{is}
	}
	tests := []struct {
		name    string
		issuers []authn.Issuer
		opts    []authn.Option
		wantErr string
	}{
		{name: "minimal, issuer down", issuers: []authn.Issuer{ok}},
		{name: "explicit algorithms", issuers: with(func(i *authn.Issuer) { i.Algorithms = []string{"PS256", "ES384"} })},
		{name: "no issuers", wantErr: "no issuers"},
		{name: "no audiences", issuers: with(func(i *authn.Issuer) { i.Audiences = nil }), wantErr: "audiences are required"},
		{name: "empty audience", issuers: with(func(i *authn.Issuer) { i.Audiences = []string{""} }), wantErr: "empty"},
		{name: "empty url", issuers: with(func(i *authn.Issuer) { i.URL = "" }), wantErr: "url is empty"},
		{name: "relative url", issuers: with(func(i *authn.Issuer) { i.URL = "issuer.example" }), wantErr: "scheme"},
		{name: "url with query", issuers: with(func(i *authn.Issuer) { i.URL = "https://issuer.example/?x=1" }), wantErr: "query"},
		{name: "HS256", issuers: with(func(i *authn.Issuer) { i.Algorithms = []string{"RS256", "HS256"} }), wantErr: `"HS256" is not allowed`},
		{name: "hs512 lower case", issuers: with(func(i *authn.Issuer) { i.Algorithms = []string{"hs512"} }), wantErr: "not allowed"},
		{name: "none", issuers: with(func(i *authn.Issuer) { i.Algorithms = []string{"none"} }), wantErr: `"none" is not allowed`},
		{name: "unknown algorithm", issuers: with(func(i *authn.Issuer) { i.Algorithms = []string{"ES256K"} }), wantErr: "not supported"},
		{name: "duplicate issuer", issuers: []authn.Issuer{ok, ok}, wantErr: "configured twice"},
		{name: "negative skew", issuers: []authn.Issuer{ok}, opts: []authn.Option{authn.WithClockSkew(-time.Second)}, wantErr: "negative"},
		{name: "zero key refresh", issuers: []authn.Issuer{ok}, opts: []authn.Option{authn.WithKeyRefresh(0)}, wantErr: "not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := authn.NewVerifier(t.Context(), tt.issuers, tt.opts...)
			if tt.wantErr == "" {
				if err != nil || v == nil {
					t.Fatalf("NewVerifier: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewVerifier error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	rsaKey := newKey(t, jose.RS256, "rsa-1")
	ecKey := newKey(t, jose.ES256, "ec-1")
	edKey := newKey(t, jose.EdDSA, "ed-1")
	rs384Key := signingKey{kid: "rs384-1", alg: jose.RS384, priv: newKey(t, jose.RS256, "").priv}
	ti := newTestIssuer(t, rsaKey, ecKey, edKey, rs384Key)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos", "custos-admin"}}})

	// attacker holds a key of the same type with the same kid as a real one.
	attacker := signingKey{kid: "rsa-1", alg: jose.RS256, priv: newKey(t, jose.RS256, "").priv}
	valid := sign(t, rsaKey, ti.claims(now))
	other := sign(t, rsaKey, ti.claims(now, set("sub", "mallory")))
	hmacKey, err := json.Marshal(rsaKey.public())
	if err != nil {
		t.Fatal(err)
	}
	hsSigner, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: hmacKey}, nil)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		token   string
		wantErr error
		wantMsg string
		check   func(t *testing.T, p *authn.Principal)
	}{
		{
			name:  "valid RS256",
			token: valid,
			check: func(t *testing.T, p *authn.Principal) {
				if p.Subject != "alice" || p.User != "alice" || p.Issuer != ti.url {
					t.Errorf("principal = %+v", p)
				}
				if p.Groups == nil || len(p.Groups) != 0 {
					t.Errorf("groups = %#v, want empty non-nil", p.Groups)
				}
				if p.Act != nil || p.Email != "" {
					t.Errorf("act = %v, email = %q", p.Act, p.Email)
				}
				if !p.Expiry.Equal(now.Add(time.Hour)) || !p.IssuedAt.Equal(now) {
					t.Errorf("expiry = %v, issued at = %v", p.Expiry, p.IssuedAt)
				}
				if p.Claims["aud"] != "custos" {
					t.Errorf("claims = %v", p.Claims)
				}
			},
		},
		{name: "valid ES256", token: sign(t, ecKey, ti.claims(now))},
		{name: "valid EdDSA", token: sign(t, edKey, ti.claims(now))},
		{name: "audience list with second audience", token: sign(t, ecKey, ti.claims(now, set("aud", []string{"other", "custos-admin"})))},
		{name: "expired", token: sign(t, rsaKey, ti.claims(now, set("exp", now.Add(-time.Minute).Unix()))), wantErr: authn.ErrExpired, wantMsg: "token expired at 2030-01-02T03:03:05Z"},
		{name: "expired within skew", token: sign(t, rsaKey, ti.claims(now, set("exp", now.Add(-10*time.Second).Unix())))},
		{name: "expires exactly at skew", token: sign(t, rsaKey, ti.claims(now, set("exp", now.Add(-30*time.Second).Unix()))), wantErr: authn.ErrExpired},
		{name: "no exp", token: sign(t, rsaKey, ti.claims(now, del("exp"))), wantErr: authn.ErrMissingClaim, wantMsg: `"exp"`},
		{name: "exp as string", token: sign(t, rsaKey, ti.claims(now, set("exp", "2100000000"))), wantErr: authn.ErrMalformed},
		{name: "exp fractional", token: sign(t, rsaKey, ti.claims(now, set("exp", float64(now.Unix())+3600.5)))},
		{name: "exp huge", token: sign(t, rsaKey, ti.claims(now, set("exp", 1e300))), wantErr: authn.ErrMalformed},
		{name: "nbf in future", token: sign(t, rsaKey, ti.claims(now, set("nbf", now.Add(2*time.Minute).Unix()))), wantErr: authn.ErrNotYetValid, wantMsg: "not valid before 2030-01-02T03:06:05Z"},
		{name: "nbf within skew", token: sign(t, rsaKey, ti.claims(now, set("nbf", now.Add(10*time.Second).Unix())))},
		{name: "wrong audience", token: sign(t, rsaKey, ti.claims(now, set("aud", "billing"))), wantErr: authn.ErrAudience, wantMsg: `token audience ["billing"] does not include any of ["custos" "custos-admin"]`},
		{name: "no audience", token: sign(t, rsaKey, ti.claims(now, del("aud"))), wantErr: authn.ErrAudience},
		{name: "empty audience list", token: sign(t, rsaKey, ti.claims(now, set("aud", []string{}))), wantErr: authn.ErrAudience},
		{name: "audience wrong type", token: sign(t, rsaKey, ti.claims(now, set("aud", 7))), wantErr: authn.ErrMalformed},
		{name: "unknown issuer", token: sign(t, rsaKey, ti.claims(now, set("iss", "https://evil.example"))), wantErr: authn.ErrUnknownIssuer, wantMsg: `issuer "https://evil.example" is not trusted`},
		{name: "issuer with trailing slash", token: sign(t, rsaKey, ti.claims(now, set("iss", ti.url+"/"))), wantErr: authn.ErrUnknownIssuer},
		{name: "no issuer", token: sign(t, rsaKey, ti.claims(now, del("iss"))), wantErr: authn.ErrMissingClaim},
		{name: "bad signature, same kid other key", token: sign(t, attacker, ti.claims(now)), wantErr: authn.ErrSignature, wantMsg: "bad signature"},
		{name: "bad signature, unknown kid", token: sign(t, signingKey{kid: "nope", alg: jose.ES256, priv: newKey(t, jose.ES256, "").priv}, ti.claims(now)), wantErr: authn.ErrSignature},
		{name: "payload swapped", token: spliceToken(valid, other), wantErr: authn.ErrSignature},
		{name: "alg none", token: rawToken(t, map[string]any{"alg": "none", "typ": "JWT"}, ti.claims(now), nil), wantErr: authn.ErrAlgorithm, wantMsg: `algorithm "none" is not allowed`},
		{name: "alg none with signature", token: rawToken(t, map[string]any{"alg": "none"}, ti.claims(now), []byte("x")), wantErr: authn.ErrAlgorithm},
		{name: "HS256 with public key as secret", token: signPayload(t, hsSigner, ti.claims(now)), wantErr: authn.ErrAlgorithm, wantMsg: `"HS256"`},
		{name: "RS384 not in allow-list", token: sign(t, rs384Key, ti.claims(now)), wantErr: authn.ErrAlgorithm},
		{name: "alg header says ES256, RSA signature", token: resign(t, valid, "ES256"), wantErr: authn.ErrSignature},
		{name: "unsigned RS256", token: rawToken(t, map[string]any{"alg": "RS256", "kid": "rsa-1"}, ti.claims(now), nil), wantErr: authn.ErrMalformed},
		{name: "no sub", token: sign(t, rsaKey, ti.claims(now, del("sub"))), wantErr: authn.ErrMissingClaim, wantMsg: `token has no "sub" claim`},
		{name: "empty sub", token: sign(t, rsaKey, ti.claims(now, set("sub", ""))), wantErr: authn.ErrMissingClaim},
		{name: "sub not a string", token: sign(t, rsaKey, ti.claims(now, set("sub", 42))), wantErr: authn.ErrMalformed},
		{
			name:  "groups as string",
			token: sign(t, rsaKey, ti.claims(now, set("groups", "dba"))),
			check: wantGroups([]string{"dba"}),
		},
		{
			name:  "groups as list",
			token: sign(t, rsaKey, ti.claims(now, set("groups", []string{"dba", "", "payments"}))),
			check: wantGroups([]string{"dba", "payments"}),
		},
		{name: "groups as number", token: sign(t, rsaKey, ti.claims(now, set("groups", 3))), wantErr: authn.ErrMalformed},
		{name: "groups with a number", token: sign(t, rsaKey, ti.claims(now, set("groups", []any{"dba", 3}))), wantErr: authn.ErrMalformed},
		{
			name:  "act claim and email",
			token: sign(t, ecKey, ti.claims(now, set("sub", "agent-7"), set("act", map[string]any{"sub": "bob", "act": map[string]any{"sub": "ci"}}), set("email", "agent@example.com"))),
			check: func(t *testing.T, p *authn.Principal) {
				if p.Subject != "agent-7" || p.Act == nil || p.Act.Subject != "bob" || p.Email != "agent@example.com" {
					t.Errorf("principal = %+v act = %+v", p, p.Act)
				}
				if _, ok := p.Claims["act"].(map[string]any)["act"]; !ok {
					t.Errorf("nested act not kept in claims: %v", p.Claims["act"])
				}
			},
		},
		{name: "act without sub", token: sign(t, rsaKey, ti.claims(now, set("act", map[string]any{"iss": "x"}))), wantErr: authn.ErrMissingClaim},
		{name: "act as string", token: sign(t, rsaKey, ti.claims(now, set("act", "bob"))), wantErr: authn.ErrMalformed},
		{name: "email as number", token: sign(t, rsaKey, ti.claims(now, set("email", 1))), wantErr: authn.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := v.Verify(t.Context(), tt.token)
			checkResult(t, p, err, tt.wantErr, tt.wantMsg)
			if err == nil && tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

// checkResult asserts that err wraps wantErr (nil: success), that its message
// contains wantMsg, and that exactly one of p and err is set.
func checkResult(t *testing.T, p *authn.Principal, err, wantErr error, wantMsg string) {
	t.Helper()
	if wantErr == nil {
		if err != nil || p == nil {
			t.Fatalf("Verify: %v", err)
		}
		return
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, wantErr) {
		t.Fatalf("Verify error = %v, want %v", err, wantErr)
	}
	if p != nil {
		t.Errorf("Verify returned a principal with an error: %+v", p)
	}
	if !strings.Contains(err.Error(), wantMsg) {
		t.Errorf("Verify error = %q, want it to contain %q", err, wantMsg)
	}
	if r := authn.Reason(err); r == "internal" || r == "" {
		t.Errorf("Reason(%v) = %q", err, r)
	}
}

func wantGroups(want []string) func(*testing.T, *authn.Principal) {
	return func(t *testing.T, p *authn.Principal) {
		t.Helper()
		if !slices.Equal(p.Groups, want) {
			t.Errorf("groups = %q, want %q", p.Groups, want)
		}
	}
}

// spliceToken returns a's header and signature around b's payload.
func spliceToken(a, b string) string {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	return pa[0] + "." + pb[1] + "." + pa[2]
}

// resign keeps tok's payload and signature but rewrites the header's alg.
func resign(t *testing.T, tok, alg string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	return encodeHeader(t, map[string]any{"alg": alg, "kid": "ec-1"}) + "." + parts[1] + "." + parts[2]
}

func encodeHeader(t *testing.T, h map[string]any) string {
	t.Helper()
	tok := rawToken(t, h, map[string]any{}, nil)
	return strings.Split(tok, ".")[0]
}

func TestVerifyMalformed(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	valid := sign(t, k, ti.claims(c.Now()))
	parts := strings.Split(valid, ".")

	tests := []struct {
		name  string
		token string
	}{
		{"empty", ""},
		{"word", "hello"},
		{"two parts", parts[0] + "." + parts[1]},
		{"four parts", valid + ".x"},
		{"five parts (JWE)", "a.b.c.d.e"},
		{"dots only", ".."},
		{"bearer prefix", "Bearer " + valid},
		{"trailing newline", valid + "\n"},
		{"inner space", parts[0] + ". " + parts[1] + "." + parts[2]},
		{"padded base64", parts[0] + "==." + parts[1] + "." + parts[2]},
		{"std base64 alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(valid) + "+/"},
		{"header not JSON", "bm90IGpzb24." + parts[1] + "." + parts[2]},
		{"header JSON array", encodeB64("[1,2]") + "." + parts[1] + "." + parts[2]},
		{"header null", encodeB64("null") + "." + parts[1] + "." + parts[2]},
		{"header without alg", encodeB64(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2]},
		{"header alg not a string", encodeB64(`{"alg":7}`) + "." + parts[1] + "." + parts[2]},
		{"header trailing data", encodeB64(`{"alg":"ES256"}{}`) + "." + parts[1] + "." + parts[2]},
		{"payload not JSON", parts[0] + ".bm90IGpzb24." + parts[2]},
		{"payload string", parts[0] + "." + encodeB64(`"x"`) + "." + parts[2]},
		{"signature not base64", parts[0] + "." + parts[1] + ".!!!"},
		{"non-canonical signature bits", parts[0] + "." + parts[1] + "." + flipLastBits(parts[2])},
		{"JWS JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`},
		{"oversized", parts[0] + "." + strings.Repeat("A", 70<<10) + "." + parts[2]},
		{"binary", "\x00\xff.\x00.\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := v.Verify(t.Context(), tt.token)
			checkResult(t, p, err, authn.ErrMalformed, "")
		})
	}
	if _, err := v.Verify(t.Context(), valid); err != nil {
		t.Fatalf("valid token: %v", err)
	}
}

func encodeB64(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// flipLastBits changes the unused low bits of the last base64url character,
// which a lenient decoder ignores.
func flipLastBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[last^1])
}

func TestUserClaim(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{
		URL: ti.url, Audiences: []string{"custos"},
		UserClaim: "preferred_username", GroupsClaim: "roles",
	}})
	now := c.Now()
	tests := []struct {
		name     string
		claims   map[string]any
		wantErr  error
		wantUser string
	}{
		{name: "user claim present", claims: ti.claims(now, set("preferred_username", "alice.smith"), set("roles", []string{"dba"}), set("groups", "ignored")), wantUser: "alice.smith"},
		{name: "user claim missing", claims: ti.claims(now), wantErr: authn.ErrMissingClaim},
		{name: "user claim not a string", claims: ti.claims(now, set("preferred_username", []string{"a"})), wantErr: authn.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := v.Verify(t.Context(), sign(t, k, tt.claims))
			checkResult(t, p, err, tt.wantErr, "")
			if err != nil {
				return
			}
			if p.User != tt.wantUser || p.Subject != "alice" || !slices.Equal(p.Groups, []string{"dba"}) {
				t.Errorf("principal = %+v", p)
			}
		})
	}
}

func TestTwoIssuers(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	ka, kb := newKey(t, jose.ES256, "a-1"), newKey(t, jose.EdDSA, "b-1")
	a, b := newTestIssuer(t, ka), newTestIssuer(t, kb)
	v := newVerifier(t, c, []authn.Issuer{
		{URL: a.url, Audiences: []string{"custos"}},
		{URL: b.url, Audiences: []string{"custos-b"}, Algorithms: []string{"EdDSA"}},
	})
	tests := []struct {
		name    string
		token   string
		wantErr error
		wantIss string
	}{
		{name: "issuer a", token: sign(t, ka, a.claims(now)), wantIss: a.url},
		{name: "issuer b", token: sign(t, kb, b.claims(now, set("aud", "custos-b"))), wantIss: b.url},
		{name: "a's claims signed by b's key", token: sign(t, kb, a.claims(now)), wantErr: authn.ErrSignature},
		{name: "b's claims signed by a's key", token: sign(t, ka, b.claims(now, set("aud", "custos-b"))), wantErr: authn.ErrAlgorithm},
		{name: "a's claims, b's key of a's type and kid", token: sign(t, signingKey{kid: "a-1", alg: jose.ES256, priv: newKey(t, jose.ES256, "").priv}, a.claims(now)), wantErr: authn.ErrSignature},
		{name: "b's audience is not a's", token: sign(t, ka, a.claims(now, set("aud", "custos-b"))), wantErr: authn.ErrAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := v.Verify(t.Context(), tt.token)
			checkResult(t, p, err, tt.wantErr, "")
			if err == nil && p.Issuer != tt.wantIss {
				t.Errorf("issuer = %q, want %q", p.Issuer, tt.wantIss)
			}
		})
	}
}

func TestIssuerDownThenUp(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	ti.discoveryDown.Store(true)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	tok := sign(t, k, ti.claims(c.Now(), set("exp", c.Now().Add(24*time.Hour).Unix())))

	p, err := v.Verify(t.Context(), tok)
	checkResult(t, p, err, authn.ErrIssuerUnavailable, ti.url)
	if strings.Contains(err.Error(), "maintenance") {
		t.Errorf("error leaks the issuer's response body: %v", err)
	}
	if got := ti.discoveryHits.Load(); got != 1 {
		t.Fatalf("discovery requests = %d, want 1", got)
	}

	// Back up, but within the retry interval: no new request yet.
	ti.discoveryDown.Store(false)
	_, err = v.Verify(t.Context(), tok)
	checkResult(t, nil, err, authn.ErrIssuerUnavailable, "")
	if got := ti.discoveryHits.Load(); got != 1 {
		t.Fatalf("discovery requests = %d, want 1 (retry interval)", got)
	}

	// After the interval, concurrent tokens share one discovery.
	c.Advance(6 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := v.Verify(t.Context(), tok)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Verify after issuer came back: %v", err)
		}
	}
	if got := ti.discoveryHits.Load(); got != 2 {
		t.Errorf("discovery requests = %d, want 2", got)
	}

	// Once discovered, the issuer going down again does not matter while
	// its keys are cached.
	ti.discoveryDown.Store(true)
	ti.jwksDown.Store(true)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify with cached keys: %v", err)
	}
}

func TestIssuerUnreachable(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	srv := httptest.NewServer(ti)
	url := srv.URL
	srv.Close() // nothing listens at url any more
	ti.url = url
	v := newVerifier(t, c, []authn.Issuer{{URL: url, Audiences: []string{"custos"}}})
	p, err := v.Verify(t.Context(), sign(t, k, ti.claims(c.Now())))
	checkResult(t, p, err, authn.ErrIssuerUnavailable, url)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c.Advance(time.Minute)
	_, err = v.Verify(ctx, sign(t, k, ti.claims(c.Now())))
	if !errors.Is(err, authn.ErrIssuerUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with canceled context = %v, want issuer unavailable and canceled", err)
	}
}

func TestSlowDiscoveryOutlivesCaller(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	ti.discoveryDelay.Store(int64(300 * time.Millisecond))
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	tok := sign(t, k, ti.claims(c.Now()))

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := v.Verify(ctx, tok)
	if !errors.Is(err, authn.ErrIssuerUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify with a short deadline = %v, want issuer unavailable and deadline exceeded", err)
	}
	// The discovery the first caller started goes on and is shared.
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := ti.discoveryHits.Load(); got != 1 {
		t.Errorf("discovery requests = %d, want 1", got)
	}
}

func TestJWKSDown(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.RS256, "rsa-1")
	ti := newTestIssuer(t, k)
	ti.jwksDown.Store(true)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	tok := sign(t, k, ti.claims(c.Now()))

	p, err := v.Verify(t.Context(), tok)
	checkResult(t, p, err, authn.ErrIssuerUnavailable, "keys of issuer")
	ti.jwksDown.Store(false)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify after JWKS came back: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	k1, k2 := newKey(t, jose.RS256, "2030-01"), newKey(t, jose.ES256, "2030-02")
	ti := newTestIssuer(t, k1)
	// The key set's own behaviour, every token verified: how remembered
	// refusals meet rotation is TestFailureMemoryKeyRotation.
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}}, authn.WithFailureMemory(0, 0))
	old, next := sign(t, k1, ti.claims(now)), sign(t, k2, ti.claims(now))

	steps := []struct {
		name     string
		advance  time.Duration
		rotate   []signingKey // when set, publish these keys first
		jwksDown bool
		token    string
		wantErr  error
		wantJWKS int32
	}{
		{name: "first token fetches the JWKS", token: old, wantJWKS: 1},
		{name: "known kid uses the cache", token: old, wantJWKS: 1},
		{name: "new kid before it is published", token: next, wantErr: authn.ErrSignature, wantJWKS: 2},
		{name: "new kid after rotation", rotate: []signingKey{k1, k2}, token: next, wantJWKS: 3},
		{name: "old kid still published", token: old, wantJWKS: 3},
		{name: "new kid cached", token: next, wantJWKS: 3},
		// go-oidc never refetches while a cached key verifies the token.
		{name: "old kid retired, still cached", rotate: []signingKey{k2}, token: old, wantJWKS: 3},
		{name: "old kid after the key refresh interval", advance: 11 * time.Minute, token: old, wantErr: authn.ErrSignature, wantJWKS: 4},
		{name: "new kid after old is retired", token: next, wantJWKS: 4},
		{name: "refresh while JWKS is down keeps cached keys", advance: 11 * time.Minute, jwksDown: true, token: next, wantJWKS: 5},
		{name: "refresh not retried within the retry interval", jwksDown: true, token: next, wantJWKS: 5},
		{name: "refresh retried after the retry interval", advance: 6 * time.Second, token: next, wantJWKS: 6},
		{name: "refreshed keys cached", token: next, wantJWKS: 6},
	}
	// Steps depend on each other: sequential on purpose.
	for _, s := range steps {
		c.Advance(s.advance)
		if s.rotate != nil {
			ti.setKeys(s.rotate...)
		}
		ti.jwksDown.Store(s.jwksDown)
		p, err := v.Verify(t.Context(), s.token)
		t.Run(s.name, func(t *testing.T) {
			checkResult(t, p, err, s.wantErr, "")
			if got := ti.jwksHits.Load(); got != s.wantJWKS {
				t.Errorf("JWKS requests = %d, want %d", got, s.wantJWKS)
			}
		})
	}
}

func TestClockSkew(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	strict := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}}, authn.WithClockSkew(0))
	lenient := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}}, authn.WithClockSkew(5*time.Minute))
	tests := []struct {
		name     string
		v        *authn.Verifier
		claims   map[string]any
		wantErr  error
		wantSkew bool
	}{
		{name: "no skew, expired a second ago", v: strict, claims: ti.claims(now, set("exp", now.Add(-time.Second).Unix())), wantErr: authn.ErrExpired},
		{name: "no skew, nbf in a second", v: strict, claims: ti.claims(now, set("nbf", now.Add(time.Second).Unix())), wantErr: authn.ErrNotYetValid},
		{name: "5m skew, expired 4m ago", v: lenient, claims: ti.claims(now, set("exp", now.Add(-4*time.Minute).Unix()))},
		{name: "5m skew, expired 6m ago", v: lenient, claims: ti.claims(now, set("exp", now.Add(-6*time.Minute).Unix())), wantErr: authn.ErrExpired},
		{name: "5m skew, nbf in 6m", v: lenient, claims: ti.claims(now, set("nbf", now.Add(6*time.Minute).Unix())), wantErr: authn.ErrNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := tt.v.Verify(t.Context(), sign(t, k, tt.claims))
			checkResult(t, p, err, tt.wantErr, "")
		})
	}
}

func TestPrincipalJSON(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	p, err := v.Verify(t.Context(), sign(t, k, ti.claims(c.Now(), set("big", json.Number("12345678901234567890")))))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if g, ok := got["groups"].([]any); !ok || len(g) != 0 {
		t.Errorf("groups = %#v, want []", got["groups"])
	}
	if _, ok := got["act"]; ok {
		t.Errorf("act present without an act claim: %s", b)
	}
	if !strings.Contains(string(b), `"big":12345678901234567890`) {
		t.Errorf("large number not kept exactly: %s", b)
	}
}

func TestReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{authn.ErrMalformed, "malformed"},
		{authn.ErrUnknownIssuer, "unknown_issuer"},
		{authn.ErrIssuerUnavailable, "issuer_unavailable"},
		{authn.ErrAlgorithm, "algorithm"},
		{authn.ErrSignature, "signature"},
		{authn.ErrExpired, "expired"},
		{authn.ErrNotYetValid, "not_yet_valid"},
		{authn.ErrAudience, "audience"},
		{authn.ErrMissingClaim, "missing_claim"},
		{errors.New("boom"), "internal"},
		{context.Canceled, "internal"},
	}
	for _, tt := range tests {
		for _, err := range []error{tt.err, wrap(tt.err)} {
			if got := authn.Reason(err); got != tt.want {
				t.Errorf("Reason(%v) = %q, want %q", err, got, tt.want)
			}
		}
	}
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return errors.Join(errors.New("outer"), err)
}
