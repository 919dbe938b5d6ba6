package authn

import (
	"container/list"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// Defaults of the memory of refused tokens (see [WithFailureMemory]).
const (
	// DefaultFailureEntries bounds how many refused tokens are remembered.
	DefaultFailureEntries = 10_000
	// DefaultFailureTTL is how long a refusal that cannot turn into an
	// acceptance is remembered: a little above the default clock skew, so
	// that nothing a skewed clock or a key refresh could change is
	// remembered much past the moment it stops mattering.
	DefaultFailureTTL = time.Minute
	// unknownKeyFailureTTL is how long a signature no key verifies is
	// remembered when the token names a key custos has not seen verify a
	// token: the issuer may publish that key a moment later (tokens minted
	// before the JWKS is updated). It is the discovery retry interval: as
	// long as custos already waits before asking an issuer again.
	unknownKeyFailureTTL = defaultDiscoveryRetry
)

// failureTTL is how long err, a refusal of a token naming a key known (or
// not) to verify tokens, may be remembered; 0 for a refusal that must be
// checked again every time.
//
// Remembered are refusals that depend only on the token's bytes and the
// configuration, or on time moving forward: malformed tokens, untrusted
// issuers, refused algorithms, and the claims of a token whose signature
// verified (expired, audience, missing claim). A bad signature is
// remembered for the full TTL only when its key is one that verified a
// token of the current key set (so the key is published and the
// signature really is wrong); otherwise briefly, and that memory is
// dropped as soon as a token with that key verifies. Never remembered:
// an issuer or JWKS that could not be reached (the next attempt may
// reach it), a token not yet valid (it becomes valid), anything else.
func failureTTL(err error, knownKey bool, ttl time.Duration) time.Duration {
	switch {
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrUnknownIssuer), errors.Is(err, ErrAlgorithm),
		errors.Is(err, ErrExpired), errors.Is(err, ErrAudience), errors.Is(err, ErrMissingClaim):
		return ttl
	case errors.Is(err, ErrSignature) && knownKey:
		return ttl
	case errors.Is(err, ErrSignature):
		return min(ttl, unknownKeyFailureTTL)
	}
	return 0
}

// failureMemory is a fixed-size LRU of refused tokens, keyed by the
// SHA-256 of the raw token (the token itself is not kept). A token
// refused again within its entry's TTL gets the same error without being
// parsed or verified again: no signature check, no JWKS fetch.
type failureMemory struct {
	max int

	mu  sync.Mutex
	lru *list.List // of *failureEntry, most recently refused first
	m   map[[sha256.Size]byte]*list.Element
}

type failureEntry struct {
	key   [sha256.Size]byte
	err   error
	until time.Time
	// is and kid, for a bad signature with a key not known to verify
	// tokens: the entry is void once a token with that key verifies.
	is  *issuer
	kid string
}

func newFailureMemory(max int) *failureMemory {
	if max <= 0 {
		return nil
	}
	return &failureMemory{max: max, lru: list.New(), m: make(map[[sha256.Size]byte]*list.Element)}
}

// lookup returns the remembered refusal of the token hashed to key, or
// nil.
func (f *failureMemory) lookup(key [sha256.Size]byte, now time.Time) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	el, ok := f.m[key]
	if !ok {
		return nil
	}
	e := el.Value.(*failureEntry)
	if !now.Before(e.until) || e.is != nil && e.is.keyVerified(e.kid) {
		f.lru.Remove(el)
		delete(f.m, key)
		return nil
	}
	f.lru.MoveToFront(el)
	return e.err
}

// remember keeps the refusal err of the token hashed to key until until,
// evicting the least recently refused token when full.
func (f *failureMemory) remember(key [sha256.Size]byte, err error, until time.Time, is *issuer, kid string) {
	if f == nil {
		return
	}
	e := &failureEntry{key: key, err: err, until: until, is: is, kid: kid}
	f.mu.Lock()
	defer f.mu.Unlock()
	if el, ok := f.m[key]; ok {
		el.Value = e
		f.lru.MoveToFront(el)
		return
	}
	if f.lru.Len() >= f.max {
		oldest := f.lru.Back()
		f.lru.Remove(oldest)
		delete(f.m, oldest.Value.(*failureEntry).key)
	}
	f.m[key] = f.lru.PushFront(e)
}

// len is the number of remembered refusals (tests).
func (f *failureMemory) len() int {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lru.Len()
}

// fingerprintKey keys TokenFingerprint; made at process start, never
// stored.
var fingerprintKey = func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (it crashes the program instead)
	return k
}()

// TokenFingerprint names a raw token (valid or not) in audit records and
// in-memory keys without revealing it: HMAC-SHA256 under a key made at
// process start, 128 bits in hex. Equal tokens have equal fingerprints
// within one process; a fingerprint cannot be tested against guesses (a
// password typed where a token belongs stays secret) and does not match
// across restarts. The empty token has the empty fingerprint.
func TokenFingerprint(raw string) string {
	if raw == "" {
		return ""
	}
	m := hmac.New(sha256.New, fingerprintKey)
	m.Write([]byte(raw))
	return hex.EncodeToString(m.Sum(nil)[:16])
}
