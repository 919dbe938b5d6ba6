package extproc

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/custos-dev/custos/internal/authn"
)

// Defaults of the verified-token cache.
const (
	// DefaultTokenCacheTTL is how long a verified token is taken without
	// checking its signature again (never past its exp).
	DefaultTokenCacheTTL = 30 * time.Second
	// tokenCacheEntries bounds the cache.
	tokenCacheEntries = 10_000
)

// tokenCache remembers tokens the verifier accepted, keyed by their
// SHA-256: an agent sends the same token with every request, and checking
// its signature is the larger part of a Check. Only accepted tokens are
// kept, never refusals, each until its exp or the cache's TTL, whichever
// comes first; so a key the issuer withdraws stops working within the TTL
// plus the verifier's own key refresh.
type tokenCache struct {
	verifier *authn.Verifier
	ttl      time.Duration // <= 0: no cache
	now      func() time.Time

	mu sync.Mutex
	m  map[[sha256.Size]byte]tokenEntry
}

type tokenEntry struct {
	p     *authn.Principal
	until time.Time
}

func newTokenCache(v *authn.Verifier, ttl time.Duration) *tokenCache {
	return &tokenCache{verifier: v, ttl: ttl, now: time.Now, m: make(map[[sha256.Size]byte]tokenEntry)}
}

// verify returns the principal of a valid token. The principal is shared
// between callers: read it, never change it.
func (c *tokenCache) verify(ctx context.Context, token string) (*authn.Principal, error) {
	if c.ttl <= 0 {
		return c.verifier.Verify(ctx, token)
	}
	key := sha256.Sum256([]byte(token))
	now := c.now()
	c.mu.Lock()
	e, ok := c.m[key]
	if ok && !now.Before(e.until) {
		delete(c.m, key)
		ok = false
	}
	c.mu.Unlock()
	if ok {
		return e.p, nil
	}
	p, err := c.verifier.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	until := now.Add(c.ttl)
	if !p.Expiry.IsZero() && p.Expiry.Before(until) {
		until = p.Expiry
	}
	c.mu.Lock()
	if len(c.m) >= tokenCacheEntries {
		c.evict(now)
	}
	c.m[key] = tokenEntry{p: p, until: until}
	c.mu.Unlock()
	return p, nil
}

// evict drops expired entries, and a tenth of the others when that is not
// enough (map order is random). c.mu is held.
func (c *tokenCache) evict(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.until) {
			delete(c.m, k)
		}
	}
	drop := len(c.m) - tokenCacheEntries*9/10
	for k := range c.m {
		if drop <= 0 {
			break
		}
		delete(c.m, k)
		drop--
	}
}
