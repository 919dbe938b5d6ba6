package sqlclass

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// DefaultCacheEntries is the cache size New uses for 0.
const DefaultCacheEntries = 4096

// Texts longer than largeQueryBytes are parsed at most LargeQuerySlots at a time per
// Classifier.
const (
	largeQueryBytes = 64 << 10
)

// LargeQuerySlots is how many texts over 64 KiB one Classifier parses at once: half the
// CPUs, so that however many sessions send them, parsing them leaves CPUs for everyone else.
var LargeQuerySlots = max(1, runtime.NumCPU()/2)

// maxCachedQueryBytes keeps very long texts (bulk INSERTs, generated SQL) out of the cache,
// which bounds its memory by entries × this size. Such texts are rarely repeated anyway.
const maxCachedQueryBytes = 16 << 10

// A text long enough for a slot is never cached (Classify relies on it).
const _ = uint(largeQueryBytes - maxCachedQueryBytes)

// Classifier classifies query strings and caches the results by exact text. It is safe for
// concurrent use.
type Classifier struct {
	max      int // 0: no cache
	maxDepth int
	maxBytes int
	// large holds a slot per text over largeQueryBytes being parsed: such texts cost the
	// parser's C code up to about 120 bytes of memory per byte of text (a 1 MB multi-row
	// INSERT: 127 MB, 1.5 s), so however many sessions send them, only LargeQuerySlots are
	// parsed at once and the others wait.
	large chan struct{}

	mu      sync.RWMutex
	byQuery map[string]*cacheEntry
	entries []*cacheEntry // for random eviction
	clock   atomic.Uint64
}

type cacheEntry struct {
	query string
	res   *Result
	err   error
	idx   int           // position in Classifier.entries
	used  atomic.Uint64 // Classifier.clock at the last hit
}

// New returns a Classifier whose cache holds up to cacheEntries query texts (0 means
// DefaultCacheEntries, a negative number disables the cache). When full, the less recently
// used of two random entries is evicted, which approximates LRU without a lock on hits.
//
// Options set the limits on what reaches the parser (WithMaxDepth, WithMaxBytes).
func New(cacheEntries int, opts ...Option) *Classifier {
	switch {
	case cacheEntries == 0:
		cacheEntries = DefaultCacheEntries
	case cacheEntries < 0:
		cacheEntries = 0
	}
	c := &Classifier{max: cacheEntries, maxDepth: DefaultMaxDepth, maxBytes: DefaultMaxBytes, byQuery: make(map[string]*cacheEntry),
		large: make(chan struct{}, LargeQuerySlots)}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Classify classifies every statement of query. A text that does not parse yields an error
// wrapping ErrSyntax (a *SyntaxError); an empty text (or only comments and semicolons) yields
// a Result without statements, as PostgreSQL answers it with EmptyQueryResponse. A text over
// the size or depth limit yields an error wrapping ErrTooComplex (a *LimitError) without being
// parsed. The Result is
// shared: callers must not modify it.
func (c *Classifier) Classify(query string) (*Result, error) {
	if len(query) > largeQueryBytes {
		// Checked first, and once: a text refused by the limits takes no
		// slot.
		if err := checkLimits(query, c.maxBytes, c.maxDepth); err != nil {
			return nil, err
		}
		c.large <- struct{}{}
		defer func() { <-c.large }()
		return parseAndClassify(query) // longer than what is cached
	}
	if c.max == 0 || len(query) > maxCachedQueryBytes {
		return classify(query, c.maxBytes, c.maxDepth)
	}
	c.mu.RLock()
	e := c.byQuery[query]
	c.mu.RUnlock()
	if e != nil {
		e.used.Store(c.clock.Add(1))
		return e.res, e.err
	}
	res, err := classify(query, c.maxBytes, c.maxDepth)
	c.store(query, res, err)
	return res, err
}

// CheckLimits reports whether query would be refused by the limits on what reaches the
// parser (the error Classify would return), without parsing it.
func (c *Classifier) CheckLimits(query string) error {
	return checkLimits(query, c.maxBytes, c.maxDepth)
}

// Len reports how many query texts the cache holds.
func (c *Classifier) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

func (c *Classifier) store(query string, res *Result, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byQuery[query]; ok {
		return // stored meanwhile by a concurrent miss
	}
	for len(c.entries) >= c.max {
		c.evictLocked()
	}
	e := &cacheEntry{query: query, res: res, err: err, idx: len(c.entries)}
	e.used.Store(c.clock.Add(1))
	c.entries = append(c.entries, e)
	c.byQuery[query] = e
}

func (c *Classifier) evictLocked() {
	n := len(c.entries)
	victim := c.entries[rand.IntN(n)]
	if other := c.entries[rand.IntN(n)]; other.used.Load() < victim.used.Load() {
		victim = other
	}
	last := c.entries[n-1]
	c.entries[victim.idx] = last
	last.idx = victim.idx
	c.entries[n-1] = nil
	c.entries = c.entries[:n-1]
	delete(c.byQuery, victim.query)
}
