package authn_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/custos-dev/custos/internal/authn"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the FuzzVerify seed corpus in testdata/fuzz")

const fuzzIssuerURL = "https://issuer.fuzz.test"

// fuzzEnv is a verifier for an in-memory issuer with a fixed Ed25519 key and
// a fixed clock, so that signed seeds stay valid and reproducible.
type fuzzEnv struct {
	v     *authn.Verifier
	seeds map[string]string // file name -> token
	valid map[string]bool   // tokens that must verify
}

func newFuzzEnv(t testing.TB) *fuzzEnv {
	t.Helper()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	seed := sha256.Sum256([]byte("custos authn fuzz key"))
	key := signingKey{kid: "fuzz-1", alg: jose.EdDSA, priv: ed25519.NewKeyFromSeed(seed[:])}
	ti := &testIssuer{url: fuzzIssuerURL}
	ti.setKeys(key)
	v, err := authn.NewVerifier(t.Context(),
		[]authn.Issuer{{URL: fuzzIssuerURL, Audiences: []string{"custos"}, Algorithms: []string{"EdDSA"}}},
		authn.WithHTTPClient(&http.Client{Transport: roundTripper{ti}}),
		authn.WithNow(func() time.Time { return now }),
	)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	valid := map[string]string{
		"valid":        sign(t, key, ti.claims(now)),
		"valid-groups": sign(t, key, ti.claims(now, set("groups", []string{"dba", "payments"}), set("act", map[string]any{"sub": "bob"}))),
	}
	seeds := map[string]string{
		"expired":        sign(t, key, ti.claims(now, set("exp", now.Add(-time.Hour).Unix()))),
		"wrong-audience": sign(t, key, ti.claims(now, set("aud", "other"))),
		"no-sub":         sign(t, key, ti.claims(now, del("sub"))),
		"unknown-kid":    sign(t, signingKey{kid: "other", alg: jose.EdDSA, priv: ed25519.NewKeyFromSeed(make([]byte, 32))}, ti.claims(now)),
		"unknown-issuer": sign(t, key, ti.claims(now, set("iss", "https://evil.test"))),
		"alg-none":       rawToken(t, map[string]any{"alg": "none"}, ti.claims(now), nil),
		"alg-hs256":      signPayload(t, hs, ti.claims(now)),
		"empty":          "",
		"dots":           "..",
		"empty-objects":  "e30.e30.e30",
		"not-jwt":        "not a token",
		"jwe":            "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aaaa.bbbb.cccc",
	}
	for name, tok := range valid {
		seeds[name] = tok
	}
	env := &fuzzEnv{v: v, seeds: seeds, valid: map[string]bool{}}
	for _, tok := range valid {
		env.valid[tok] = true
	}
	return env
}

// check verifies raw and fails unless exactly the known-valid tokens succeed
// and every failure is classified.
func (e *fuzzEnv) check(t *testing.T, raw string) {
	p, err := e.v.Verify(t.Context(), raw)
	switch {
	case err == nil && !e.valid[raw]:
		t.Fatalf("Verify accepted %q: %+v", raw, p)
	case err == nil && p == nil:
		t.Fatalf("Verify(%q) returned neither a principal nor an error", raw)
	case err != nil && e.valid[raw]:
		t.Fatalf("Verify rejected a valid token: %v", err)
	case err != nil && p != nil:
		t.Fatalf("Verify(%q) returned a principal with error %v", raw, err)
	case err != nil && (authn.Reason(err) == "internal" || authn.Reason(err) == "issuer_unavailable"):
		t.Fatalf("Verify(%q): unexpected error class %q: %v", raw, authn.Reason(err), err)
	}
}

func FuzzVerify(f *testing.F) {
	env := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, raw string) {
		env.check(t, raw)
	})
}

// TestFuzzSeeds keeps testdata/fuzz/FuzzVerify/seed-* in sync with the seeds
// built by newFuzzEnv (run with -update-fuzz-seeds to rewrite them) and checks
// each of them like the fuzz target does.
func TestFuzzSeeds(t *testing.T) {
	t.Parallel()
	env := newFuzzEnv(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	names := make([]string, 0, len(env.seeds))
	for name := range env.seeds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tok := env.seeds[name]
		path := filepath.Join(dir, "seed-"+name)
		want := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", tok)
		if *updateFuzzSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestFuzzSeeds -update-fuzz-seeds)", err)
		}
		if string(got) != want {
			t.Errorf("%s is out of date (run go test -run TestFuzzSeeds -update-fuzz-seeds)", path)
		}
		t.Run(name, func(t *testing.T) { env.check(t, tok) })
	}
}
