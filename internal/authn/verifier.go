package authn

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Default claim names of an [Issuer].
const (
	DefaultGroupsClaim = "groups"
	DefaultUserClaim   = "sub"
)

// defaultAlgorithms is the allow-list used when Issuer.Algorithms is empty.
var defaultAlgorithms = []string{oidc.RS256, oidc.ES256, oidc.EdDSA}

// supportedAlgorithms are the asymmetric algorithms go-oidc verifies.
var supportedAlgorithms = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.EdDSA,
}

// Issuer is one trusted token issuer.
type Issuer struct {
	// URL is the issuer identifier. A token's iss must equal it exactly, and
	// discovery reads URL + "/.well-known/openid-configuration".
	URL string
	// Audiences is required: a token's aud must contain at least one of them.
	Audiences []string
	// GroupsClaim names the claim holding the groups, a string or a list of
	// strings (default "groups").
	GroupsClaim string
	// UserClaim names the claim the Postgres startup user must equal
	// (default "sub"). A token without it is rejected.
	UserClaim string
	// Algorithms is the allow-list of signature algorithms (default RS256,
	// ES256, EdDSA). "none" and HS* are refused by NewVerifier.
	Algorithms []string
}

// Actor is the identity named by an RFC 8693 "act" (actor) claim.
type Actor struct {
	Subject string `json:"sub"`
}

// Principal is the identity carried by a verified token. All of it comes from
// the verified payload.
type Principal struct {
	Subject string `json:"sub"`
	Issuer  string `json:"iss"`
	// User is the value of the issuer's UserClaim (equal to Subject by
	// default): what the Postgres startup user must match.
	User   string   `json:"-"`
	Groups []string `json:"groups"`
	Email  string   `json:"email,omitempty"`
	// Act is the token's RFC 8693 act claim, when present: the other party
	// of a delegation between an agent and the human it works for. RFC 8693
	// defines it as the current actor, acting on behalf of Subject; issuers
	// differ in which of the two they put in sub, so both are audited and
	// policy decides. Nested act claims (earlier actors) stay in Claims.
	Act *Actor `json:"act,omitempty"`
	// Claims holds every claim of the payload; numbers are json.Number.
	Claims   map[string]any `json:"claims"`
	Expiry   time.Time      `json:"-"`
	IssuedAt time.Time      `json:"-"`
}

// Verifier verifies tokens of a fixed set of issuers. It is safe for
// concurrent use.
type Verifier struct {
	issuers map[string]*issuer
	opts    options
	// keySetCtx carries the HTTP client (and the values of the context given
	// to NewVerifier) to go-oidc's background JWKS fetches.
	keySetCtx context.Context
	// failures remembers recent refusals; nil when off.
	failures *failureMemory
}

// issuer is the runtime state of one configured Issuer.
type issuer struct {
	cfg  Issuer
	algs map[string]bool
	// verifier is set once discovery succeeded, with its key set.
	verifier atomic.Pointer[oidc.IDTokenVerifier]
	keys     atomic.Pointer[keySet]

	mu sync.Mutex
	// inflight is closed when the running discovery ends; nil when none runs.
	inflight chan struct{}
	// failedAt is when the last discovery failed (zero after a success).
	failedAt time.Time
}

// NewVerifier checks the issuer configuration and returns a Verifier. It does
// no network I/O: each issuer is discovered when its first token arrives, so
// the Verifier can be built while issuers are down. The values (not the
// cancellation) of ctx are kept for background JWKS requests.
func NewVerifier(ctx context.Context, issuers []Issuer, opts ...Option) (*Verifier, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.skew < 0 {
		return nil, fmt.Errorf("authn: clock skew %s is negative", o.skew)
	}
	if o.keyRefresh <= 0 {
		return nil, fmt.Errorf("authn: key refresh interval %s is not positive", o.keyRefresh)
	}
	if o.failureEntries < 0 || o.failureTTL < 0 {
		return nil, fmt.Errorf("authn: failure memory of %d entries for %s is negative", o.failureEntries, o.failureTTL)
	}
	if len(issuers) == 0 {
		return nil, errors.New("authn: no issuers configured")
	}
	v := &Verifier{
		issuers:   make(map[string]*issuer, len(issuers)),
		opts:      o,
		keySetCtx: oidc.ClientContext(context.WithoutCancel(ctx), o.client),
	}
	if o.failureTTL > 0 {
		v.failures = newFailureMemory(o.failureEntries)
	}
	for i, cfg := range issuers {
		cfg, err := normalizeIssuer(cfg)
		if err != nil {
			return nil, fmt.Errorf("authn: issuer %d (%q): %w", i, issuers[i].URL, err)
		}
		if _, dup := v.issuers[cfg.URL]; dup {
			return nil, fmt.Errorf("authn: issuer %q is configured twice", cfg.URL)
		}
		is := &issuer{
			cfg:  cfg,
			algs: make(map[string]bool, len(cfg.Algorithms)),
		}
		for _, a := range cfg.Algorithms {
			is.algs[a] = true
		}
		v.issuers[cfg.URL] = is
	}
	return v, nil
}

// normalizeIssuer validates cfg and returns a copy with defaults applied.
func normalizeIssuer(cfg Issuer) (Issuer, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return cfg, errors.New("url is empty")
	case err != nil:
		return cfg, fmt.Errorf("url: %w", err)
	case u.Scheme != "https" && u.Scheme != "http":
		return cfg, fmt.Errorf("url scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		return cfg, errors.New("url has no host")
	case u.RawQuery != "" || u.Fragment != "":
		return cfg, errors.New("url must not have a query or fragment")
	}
	if len(cfg.Audiences) == 0 {
		return cfg, errors.New("audiences are required")
	}
	if slices.Contains(cfg.Audiences, "") {
		return cfg, errors.New("audiences must not be empty strings")
	}
	cfg.Audiences = slices.Clone(cfg.Audiences)
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = DefaultGroupsClaim
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = DefaultUserClaim
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = defaultAlgorithms
	}
	cfg.Algorithms = slices.Clone(cfg.Algorithms)
	for _, a := range cfg.Algorithms {
		switch {
		case strings.EqualFold(a, "none"), strings.HasPrefix(strings.ToUpper(a), "HS"):
			return cfg, fmt.Errorf("algorithm %q is not allowed for a public issuer", a)
		case !slices.Contains(supportedAlgorithms, a):
			return cfg, fmt.Errorf("algorithm %q is not supported (supported: %s)", a, strings.Join(supportedAlgorithms, ", "))
		}
	}
	return cfg, nil
}

// Verify verifies rawToken and returns its principal. Every error wraps one of
// the package's sentinel errors; see [Reason].
//
// A token refused recently is refused again from memory, with the same
// error, without being verified again (see [WithFailureMemory]): a client
// or a flood presenting the same bad token costs neither a signature check
// nor a JWKS fetch. Accepted tokens are verified every time.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (*Principal, error) {
	if v.failures == nil {
		p, _, err := v.verify(ctx, rawToken)
		return p, err
	}
	key := sha256.Sum256([]byte(rawToken))
	now := v.opts.now()
	if err := v.failures.lookup(key, now); err != nil {
		return nil, err
	}
	p, sig, err := v.verify(ctx, rawToken)
	if err != nil {
		var known bool
		if sig.is != nil {
			known = sig.is.keyVerified(sig.kid)
		}
		if ttl := failureTTL(err, known, v.opts.failureTTL); ttl > 0 {
			is := sig.is
			if known || !errors.Is(err, ErrSignature) {
				is = nil
			}
			v.failures.remember(key, err, now.Add(ttl), is, sig.kid)
		}
	}
	return p, err
}

// verified says, for a refusal, which issuer's key (by kid) the token
// named when its signature was checked; is is nil when it was not.
type verified struct {
	is  *issuer
	kid string
}

func (v *Verifier) verify(ctx context.Context, rawToken string) (*Principal, verified, error) {
	tok, err := parseToken(rawToken)
	if err != nil {
		return nil, verified{}, err
	}
	p, err := v.verifyParsed(ctx, rawToken, tok)
	return p, verified{is: tok.checkedBy, kid: tok.kid}, err
}

func (v *Verifier) verifyParsed(ctx context.Context, rawToken string, tok *unverifiedToken) (*Principal, error) {
	iss, err := tok.issuer()
	if err != nil {
		return nil, err
	}
	is, ok := v.issuers[iss]
	if !ok {
		return nil, fmt.Errorf("%w: issuer %.200q is not trusted", ErrUnknownIssuer, iss)
	}
	if !is.algs[tok.alg] {
		return nil, fmt.Errorf("%w: algorithm %.40q is not allowed for issuer %q", ErrAlgorithm, tok.alg, iss)
	}
	if len(tok.signature) == 0 {
		return nil, fmt.Errorf("%w: token is unsigned", ErrMalformed)
	}
	idv, err := v.discover(ctx, is)
	if err != nil {
		return nil, err
	}
	sig := &signatureCheck{}
	idt, err := idv.Verify(context.WithValue(ctx, signatureCheckKey{}, sig), rawToken)
	if sig.ran {
		tok.checkedBy = is
	}
	if err != nil {
		return nil, classifyOIDCError(err, sig, is.cfg.URL)
	}
	is.keyVerifiedToken(tok.kid)
	var payload json.RawMessage
	if err := idt.Claims(&payload); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return v.principal(is, payload)
}

// discover returns the issuer's go-oidc verifier, starting discovery if it
// has not succeeded yet. Discovery runs in its own goroutine, bounded by
// discoveryTimeout rather than by the caller's context, so that a caller with
// a short deadline does not abort it for everyone; concurrent callers share
// it, and each stops waiting when its own context ends. After a failure, new
// attempts wait for the retry interval.
func (v *Verifier) discover(ctx context.Context, is *issuer) (*oidc.IDTokenVerifier, error) {
	if idv := is.verifier.Load(); idv != nil {
		return idv, nil
	}
	unavailable := fmt.Errorf("%w: issuer %q is unavailable (discovery has not succeeded; it is retried on a later token)", ErrIssuerUnavailable, is.cfg.URL)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", unavailable, err)
	}
	is.mu.Lock()
	if idv := is.verifier.Load(); idv != nil {
		is.mu.Unlock()
		return idv, nil
	}
	done := is.inflight
	if done == nil {
		if !is.failedAt.IsZero() && v.opts.now().Sub(is.failedAt) < v.opts.discoveryRetry {
			is.mu.Unlock()
			return nil, unavailable
		}
		done = make(chan struct{})
		is.inflight = done
		go v.runDiscovery(is, done)
	}
	is.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", unavailable, ctx.Err())
	}
	if idv := is.verifier.Load(); idv != nil {
		return idv, nil
	}
	return nil, unavailable
}

// runDiscovery fetches the issuer's discovery document, stores the resulting
// verifier or the failure time, and closes done.
func (v *Verifier) runDiscovery(is *issuer, done chan struct{}) {
	ctx, cancel := context.WithTimeout(v.keySetCtx, discoveryTimeout)
	defer cancel()
	idv, jwksURL, err := v.newIDTokenVerifier(ctx, is)
	is.mu.Lock()
	if err != nil {
		is.failedAt = v.opts.now()
	} else {
		is.verifier.Store(idv)
		is.failedAt = time.Time{}
	}
	is.inflight = nil
	is.mu.Unlock()
	close(done)
	if err != nil {
		v.opts.logger.WarnContext(ctx, "oidc discovery failed", "issuer", is.cfg.URL, "error", err)
		return
	}
	v.opts.logger.InfoContext(ctx, "oidc issuer discovered", "issuer", is.cfg.URL, "jwks_uri", jwksURL)
}

// newIDTokenVerifier runs OIDC discovery for is and builds its verifier.
func (v *Verifier) newIDTokenVerifier(ctx context.Context, is *issuer) (*oidc.IDTokenVerifier, string, error) {
	// NewProvider also checks that the document's issuer equals cfg.URL.
	provider, err := oidc.NewProvider(ctx, is.cfg.URL)
	if err != nil {
		return nil, "", err
	}
	var meta struct {
		JWKSURL string `json:"jwks_uri"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, "", err
	}
	if meta.JWKSURL == "" {
		return nil, "", errors.New("discovery document has no jwks_uri")
	}
	keys := newKeySet(v.keySetCtx, meta.JWKSURL, v.opts)
	is.keys.Store(keys)
	idv := oidc.NewVerifier(is.cfg.URL, keys, &oidc.Config{
		SupportedSigningAlgs: is.cfg.Algorithms,
		// Audiences are checked in principal (go-oidc takes only one).
		SkipClientIDCheck: true,
		// go-oidc checks exp without skew and nbf with a fixed 5 minute
		// leeway; principal checks both with the configured skew.
		SkipExpiryCheck: true,
		Now:             v.opts.now,
	})
	return idv, meta.JWKSURL, nil
}

// keySet wraps go-oidc's remote key set for one issuer. It adds three
// things:
//
//   - it records, for the Verify call in progress, whether the signature check
//     ran and why it failed (go-oidc flattens the key set's error into a
//     string, losing whether the JWKS was unreachable);
//   - it bounds how long fetched keys are trusted. RemoteKeySet refetches the
//     JWKS only when no cached key verifies a token, so a key the issuer has
//     retired or revoked would keep verifying for as long as the process
//     runs. After keyRefresh the next token is verified against a freshly
//     fetched set; if the JWKS cannot be fetched then, the cached keys stay
//     in use and the refresh is retried after retry;
//   - a bad signature by a published key costs no JWKS fetch (remoteKeys).
type keySet struct {
	jwksURL    string
	ctx        context.Context // for RemoteKeySet's background fetches
	client     *http.Client
	now        func() time.Time
	keyRefresh time.Duration
	retry      time.Duration

	mu        sync.Mutex
	cur       *remoteKeys
	createdAt time.Time // of cur
	triedAt   time.Time // last refresh attempt
	// verifiedKids are the key ids that verified a token of cur: keys the
	// issuer publishes. Only verified tokens add to it, so it stays as
	// small as the issuer's key set.
	verifiedKids map[string]bool
}

// maxVerifiedKids bounds keySet.verifiedKids (an issuer publishes a few
// keys at a time).
const maxVerifiedKids = 64

// keyVerifiedToken notes that the key kid verified a token.
func (is *issuer) keyVerifiedToken(kid string) {
	k := is.keys.Load()
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.verifiedKids == nil || len(k.verifiedKids) >= maxVerifiedKids {
		k.verifiedKids = make(map[string]bool)
	}
	k.verifiedKids[kid] = true
}

// keyVerified reports whether the key kid verified a token of the
// current key set.
func (is *issuer) keyVerified(kid string) bool {
	k := is.keys.Load()
	if k == nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.verifiedKids[kid]
}

func newKeySet(ctx context.Context, jwksURL string, o options) *keySet {
	return &keySet{
		jwksURL:    jwksURL,
		ctx:        ctx,
		client:     o.client,
		now:        o.now,
		keyRefresh: o.keyRefresh,
		retry:      o.discoveryRetry,
		cur:        newRemoteKeys(ctx, o.client, jwksURL),
		createdAt:  o.now(),
	}
}

type signatureCheckKey struct{}

type signatureCheck struct {
	ran bool
	err error
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.verify(ctx, jwt)
	if sc, ok := ctx.Value(signatureCheckKey{}).(*signatureCheck); ok {
		sc.ran, sc.err = true, err
	}
	return payload, err
}

func (k *keySet) verify(ctx context.Context, jwt string) ([]byte, error) {
	cur, refresh := k.current()
	if refresh {
		fresh := newRemoteKeys(k.ctx, k.client, k.jwksURL)
		payload, err := fresh.verify(ctx, jwt)
		if err == nil || !keyFetchFailed(err) {
			k.replace(fresh)
			return payload, err
		}
		// The JWKS is unreachable: fall back to the cached keys.
	}
	return cur.verify(ctx, jwt)
}

// current returns the key set in use and whether this caller should try to
// replace it with a fresh one (at most one caller per retry interval).
func (k *keySet) current() (*remoteKeys, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if now.Sub(k.createdAt) < k.keyRefresh || now.Sub(k.triedAt) < k.retry {
		return k.cur, false
	}
	k.triedAt = now
	return k.cur, true
}

func (k *keySet) replace(fresh *remoteKeys) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cur, k.createdAt = fresh, k.now()
	// The fresh set may lack keys the old one had.
	k.verifiedKids = nil
}

// classifyOIDCError maps an error of go-oidc's IDTokenVerifier.Verify to a
// sentinel. The token was already parsed and its issuer and algorithm checked,
// so a failure before the signature check is a format go-jose refuses.
func classifyOIDCError(err error, sig *signatureCheck, iss string) error {
	switch {
	case !sig.ran:
		return fmt.Errorf("%w: token is not a valid JWS", ErrMalformed)
	case sig.err != nil && keyFetchFailed(sig.err):
		return fmt.Errorf("%w: keys of issuer %q could not be fetched", ErrIssuerUnavailable, iss)
	case sig.err != nil:
		return fmt.Errorf("%w: no key of issuer %q verifies the token", ErrSignature, iss)
	default:
		// Signature verified, but go-oidc could not decode the standard
		// claims (e.g. aud or exp of the wrong JSON type).
		return fmt.Errorf("%w: token claims have the wrong types", ErrMalformed)
	}
}

// keyFetchFailed reports whether a RemoteKeySet error is a failure to fetch
// the JWKS rather than a signature no key verifies. RemoteKeySet returns
// "fetching keys %w" for the former and unwrapped errors otherwise.
func keyFetchFailed(err error) bool {
	return errors.Unwrap(err) != nil ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		strings.HasPrefix(err.Error(), "fetching keys")
}
