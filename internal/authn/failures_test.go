package authn_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/internal/authn"
)

// remembered verifies tok twice and reports whether the second refusal
// came from memory: the very same error value (a verification builds a
// new one every time), and no JWKS request.
func remembered(t *testing.T, v *authn.Verifier, ti *testIssuer, tok string, wantErr error) bool {
	t.Helper()
	_, first := v.Verify(t.Context(), tok)
	if !errors.Is(first, wantErr) {
		t.Fatalf("first Verify error = %v, want %v", first, wantErr)
	}
	hits := ti.jwksHits.Load()
	_, again := v.Verify(t.Context(), tok)
	if !errors.Is(again, wantErr) || again.Error() != first.Error() {
		t.Fatalf("second Verify error = %v, want the first one, %v", again, first)
	}
	if sameError(again, first) && ti.jwksHits.Load() != hits {
		t.Errorf("a refusal from memory fetched the JWKS")
	}
	return sameError(again, first)
}

// sameError reports whether a and b are one error value: a refusal from
// memory is the remembered value itself.
func sameError(a, b error) bool {
	return a == b //nolint:errorlint // identity, not the error's class
}

func TestFailureMemoryClasses(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	k := newKey(t, jose.ES256, "ec-1")
	other := newKey(t, jose.ES256, "ec-1") // same kid, not the issuer's key
	rsa := newKey(t, jose.RS256, "rsa-1")
	ti := newTestIssuer(t, k, rsa)
	down := newTestIssuer(t, k)
	down.discoveryDown.Store(true)
	v := newVerifier(t, c, []authn.Issuer{
		{URL: ti.url, Audiences: []string{"custos"}, Algorithms: []string{"ES256"}},
		{URL: down.url, Audiences: []string{"custos"}},
	})
	good := sign(t, k, ti.claims(now))
	if _, err := v.Verify(t.Context(), good); err != nil { // discovery; kid ec-1 verifies
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		token   string
		wantErr error
		want    bool
	}{
		{"malformed", "hello", authn.ErrMalformed, true},
		{"untrusted issuer", sign(t, k, ti.claims(now, set("iss", "https://elsewhere.example"))), authn.ErrUnknownIssuer, true},
		{"algorithm", sign(t, rsa, ti.claims(now)), authn.ErrAlgorithm, true},
		{"bad signature, known key", sign(t, other, ti.claims(now)), authn.ErrSignature, true},
		{"expired", sign(t, k, ti.claims(now, set("exp", now.Add(-time.Hour).Unix()))), authn.ErrExpired, true},
		{"audience", sign(t, k, ti.claims(now, set("aud", "someone-else"))), authn.ErrAudience, true},
		{"missing claim", sign(t, k, ti.claims(now, del("sub"))), authn.ErrMissingClaim, true},
		{"not yet valid", sign(t, k, ti.claims(now, set("nbf", now.Add(time.Hour).Unix()))), authn.ErrNotYetValid, false},
		{"issuer unavailable", sign(t, k, down.claims(now)), authn.ErrIssuerUnavailable, false},
	}
	// Sequential: the JWKS counter is shared.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := remembered(t, v, ti, tt.token, tt.wantErr); got != tt.want {
				t.Errorf("refusal remembered = %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := v.Verify(t.Context(), good); err != nil {
		t.Fatalf("good token after the refusals: %v", err)
	}
}

func TestFailureMemoryTTL(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	expired := sign(t, k, ti.claims(c.Now(), set("exp", c.Now().Add(-time.Hour).Unix())))
	_, first := v.Verify(t.Context(), expired)
	c.Advance(authn.DefaultFailureTTL - time.Second)
	if _, err := v.Verify(t.Context(), expired); !sameError(err, first) {
		t.Fatalf("within the TTL: %v, want the remembered %v", err, first)
	}
	c.Advance(2 * time.Second)
	_, err := v.Verify(t.Context(), expired)
	if sameError(err, first) || !errors.Is(err, authn.ErrExpired) {
		t.Fatalf("past the TTL: %v, want a new verification's ErrExpired", err)
	}
}

// TestFailureMemoryKeyRotation: a token signed by a key the issuer has
// not published yet is refused, remembered only briefly, and forgotten
// at once when a token with that key verifies.
func TestFailureMemoryKeyRotation(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	k1, k2 := newKey(t, jose.ES256, "2030-01"), newKey(t, jose.ES256, "2030-02")
	ti := newTestIssuer(t, k1)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	early := sign(t, k2, ti.claims(now, set("sub", "early")))
	later := sign(t, k2, ti.claims(now, set("sub", "later")))
	if !remembered(t, v, ti, early, authn.ErrSignature) {
		t.Fatal("a bad signature by an unknown key is not remembered at all")
	}
	ti.setKeys(k1, k2)
	if _, err := v.Verify(t.Context(), early); !errors.Is(err, authn.ErrSignature) {
		t.Fatalf("within the brief TTL the refusal stands: %v", err)
	}
	// Another client's token with the new key verifies (and fetches the
	// new JWKS): the key is known, and the early refusal is void.
	if _, err := v.Verify(t.Context(), later); err != nil {
		t.Fatalf("token with the published key: %v", err)
	}
	if _, err := v.Verify(t.Context(), early); err != nil {
		t.Fatalf("token refused before its key was published, after it verified a token: %v", err)
	}

	// Without another token, the brief TTL alone ends the refusal.
	k3 := newKey(t, jose.ES256, "2030-03")
	next := sign(t, k3, ti.claims(now))
	if !remembered(t, v, ti, next, authn.ErrSignature) {
		t.Fatal("a bad signature by an unknown key is not remembered at all")
	}
	ti.setKeys(k1, k2, k3)
	c.Advance(4 * time.Second)
	if _, err := v.Verify(t.Context(), next); !errors.Is(err, authn.ErrSignature) {
		t.Fatalf("within the brief TTL the refusal stands: %v", err)
	}
	c.Advance(2 * time.Second)
	if _, err := v.Verify(t.Context(), next); err != nil {
		t.Fatalf("past the brief TTL: %v", err)
	}
}

func TestFailureMemoryBound(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}}, authn.WithFailureMemory(3, time.Minute))
	errs := make([]error, 5)
	for i := range errs {
		_, errs[i] = v.Verify(t.Context(), "bad-"+strings.Repeat("x", i))
	}
	if n := authn.FailureMemoryLen(v); n != 3 {
		t.Fatalf("%d refusals remembered, want the bound, 3", n)
	}
	if _, err := v.Verify(t.Context(), "bad-"+strings.Repeat("x", 4)); !sameError(err, errs[4]) {
		t.Errorf("the most recent refusal is not remembered")
	}
	if _, err := v.Verify(t.Context(), "bad-"); sameError(err, errs[0]) {
		t.Errorf("the least recent refusal was kept past the bound")
	}
}

func TestFailureMemoryOff(t *testing.T) {
	t.Parallel()
	c := newClock()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}}, authn.WithFailureMemory(0, 0))
	if remembered(t, v, ti, "hello", authn.ErrMalformed) {
		t.Error("refusal remembered with the memory off")
	}
	if _, err := authn.NewVerifier(t.Context(), []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}},
		authn.WithFailureMemory(-1, time.Minute)); err == nil {
		t.Error("negative failure memory accepted")
	}
}

// TestFailureMemoryNeverRefusesAGoodToken: good tokens interleaved with
// refused ones, near misses of them, and a refused token that later
// becomes valid all verify.
func TestFailureMemoryNeverRefusesAGoodToken(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}})
	good := sign(t, k, ti.claims(now))
	early := sign(t, k, ti.claims(now, set("nbf", now.Add(time.Minute).Unix())))
	forged := sign(t, newKey(t, jose.ES256, "ec-1"), ti.claims(now))
	for i := range 20 {
		if _, err := v.Verify(t.Context(), good[:len(good)-1]); err == nil {
			t.Fatal("truncated token accepted")
		}
		if _, err := v.Verify(t.Context(), forged); !errors.Is(err, authn.ErrSignature) {
			t.Fatalf("forged token: %v", err)
		}
		if _, err := v.Verify(t.Context(), early); !errors.Is(err, authn.ErrNotYetValid) {
			t.Fatalf("early token: %v", err)
		}
		if _, err := v.Verify(t.Context(), good); err != nil {
			t.Fatalf("good token, round %d: %v", i, err)
		}
	}
	c.Advance(time.Minute)
	if _, err := v.Verify(t.Context(), early); err != nil {
		t.Fatalf("token refused as not yet valid, once valid: %v", err)
	}
}

// TestForgedSignatureFetchesNoJWKS: tokens signed by someone else under
// the issuer's published key id (a new one each time: the memory does
// not help) are refused without fetching the JWKS again; a token naming
// an unpublished key id still makes custos fetch it.
func TestForgedSignatureFetchesNoJWKS(t *testing.T) {
	t.Parallel()
	c := newClock()
	now := c.Now()
	k := newKey(t, jose.ES256, "ec-1")
	ti := newTestIssuer(t, k)
	v := newVerifier(t, c, []authn.Issuer{{URL: ti.url, Audiences: []string{"custos"}}}, authn.WithFailureMemory(0, 0))
	good := sign(t, k, ti.claims(now))
	if _, err := v.Verify(t.Context(), good); err != nil {
		t.Fatal(err)
	}
	forger := newKey(t, jose.ES256, "ec-1")
	hits := ti.jwksHits.Load()
	for i := range 5 {
		_, err := v.Verify(t.Context(), sign(t, forger, ti.claims(now, set("sub", "root"+strconv.Itoa(i)))))
		if !errors.Is(err, authn.ErrSignature) {
			t.Fatalf("forged token: %v", err)
		}
	}
	if got := ti.jwksHits.Load(); got != hits {
		t.Errorf("forged tokens under a published key id fetched the JWKS %d times", got-hits)
	}
	if _, err := v.Verify(t.Context(), good); err != nil {
		t.Fatalf("good token after the forgeries: %v", err)
	}
	unknown := newKey(t, jose.ES256, "ec-2")
	if _, err := v.Verify(t.Context(), sign(t, unknown, ti.claims(now))); !errors.Is(err, authn.ErrSignature) {
		t.Fatalf("token of an unpublished key: %v", err)
	}
	if got := ti.jwksHits.Load(); got != hits+1 {
		t.Errorf("a token of an unknown key id fetched the JWKS %d times, want once", got-hits)
	}
}
