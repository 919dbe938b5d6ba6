package policy

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// cacheKey identifies an SQL input for the decision cache.
type cacheKey [sha256.Size]byte

// makeCacheKey hashes every part of the input the default policy reads, and
// a little more: the version and kind, the principal (subject, issuer,
// sorted groups, actor), the resource (name, type, labels) and the SQL
// (normalized text, fingerprint and the statements' JSON: the fingerprint
// alone does not tell schemas, columns or flags apart), and for HTTP the
// method, path and query. Session fields, claims, email and HTTP headers
// are left out, unless the policy reads them (reads), so that one
// statement or request repeated by many sessions of a principal is decided
// once.
func makeCacheKey(in *Input, reads *inputReads) (cacheKey, error) {
	var stmts []byte
	if in.SQL != nil {
		var err error
		if stmts, err = statementsJSON(in.SQL.Statements); err != nil {
			return cacheKey{}, fmt.Errorf("statements: %w", err)
		}
	}
	p := in.Principal
	size := 256 + len(stmts)
	if in.HTTP != nil {
		size += len(in.HTTP.Method) + len(in.HTTP.Path)
	}
	if in.SQL != nil {
		size += len(in.SQL.Normalized) + len(in.SQL.Fingerprint)
	}
	b := make([]byte, 0, size)
	b = appendInt(b, int64(in.Version))
	b = appendStr(b, in.Kind)
	b = appendStr(b, p.Sub)
	b = appendStr(b, p.Iss)
	groups := slices.Clone(p.Groups)
	slices.Sort(groups)
	b = appendInt(b, int64(len(groups)))
	for _, g := range groups {
		b = appendStr(b, g)
	}
	if p.Act != nil {
		b = appendInt(b, 1)
		b = appendStr(b, p.Act.Sub)
	} else {
		b = appendInt(b, 0)
	}
	b = appendStr(b, in.Resource.Name)
	b = appendStr(b, in.Resource.Type)
	b = appendInt(b, int64(len(in.Resource.Labels)))
	for _, k := range slices.Sorted(maps.Keys(in.Resource.Labels)) {
		b = appendStr(b, k)
		b = appendStr(b, in.Resource.Labels[k])
	}
	if in.HTTP == nil {
		b = appendInt(b, 0)
	} else {
		h := in.HTTP
		b = appendInt(b, 1)
		b = appendStr(b, h.Method)
		b = appendStr(b, h.Path)
		b = appendInt(b, int64(len(h.Query)))
		for _, k := range slices.Sorted(maps.Keys(h.Query)) {
			b = appendStr(b, k)
			b = appendInt(b, int64(len(h.Query[k])))
			for _, v := range h.Query[k] {
				b = appendStr(b, v)
			}
		}
	}
	if in.SQL == nil {
		b = appendInt(b, 0)
	} else {
		b = appendInt(b, 1)
		b = appendStr(b, in.SQL.Normalized)
		b = appendStr(b, in.SQL.Fingerprint)
		b = appendInt(b, int64(len(stmts)))
		b = append(b, stmts...)
	}
	b, err := appendReads(b, in, reads)
	if err != nil {
		return cacheKey{}, err
	}
	return sha256.Sum256(b), nil
}

// appendReads appends the parts of the input outside the fixed key that
// the policy reads.
func appendReads(b []byte, in *Input, reads *inputReads) ([]byte, error) {
	if reads == nil {
		return b, nil
	}
	s := in.Session
	for _, f := range []struct{ name, v string }{
		{"id", s.ID}, {"client_address", s.ClientAddress}, {"application_name", s.ApplicationName}, {"database", s.Database},
	} {
		if reads.session["*"] || reads.session[f.name] {
			b = appendStr(appendStr(b, f.name), f.v)
		}
	}
	if reads.email {
		b = appendStr(appendStr(b, "email"), in.Principal.Email)
	}
	if reads.claims {
		// encoding/json writes a map's keys sorted: one key per content.
		claims, err := json.Marshal(in.Principal.Claims)
		if err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		b = appendStr(appendStr(b, "claims"), string(claims))
	}
	if reads.headers && in.HTTP != nil {
		h := in.HTTP.Headers
		b = appendStr(b, "headers")
		b = appendInt(b, int64(len(h)))
		for _, k := range slices.Sorted(maps.Keys(h)) {
			b = appendStr(appendStr(b, k), h[k])
		}
	}
	return b, nil
}

// statementsJSON is the JSON of SQL.Statements. A json.RawMessage is taken
// as it is: it was evaluated, and so parsed, before a decision for it could
// be cached.
func statementsJSON(v any) ([]byte, error) {
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	return json.Marshal(v)
}

func appendInt(b []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

func appendStr(b []byte, s string) []byte {
	return append(appendInt(b, int64(len(s))), s...)
}

// decisionCache is a bounded LRU of decisions (without id).
type decisionCache struct {
	mu      sync.Mutex
	max     int
	order   *list.List // of *cacheEntry, most recent first
	entries map[cacheKey]*list.Element
}

type cacheEntry struct {
	key cacheKey
	d   *Decision
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, order: list.New(), entries: make(map[cacheKey]*list.Element)}
}

// get returns a copy of the cached decision.
func (c *decisionCache) get(k cacheKey) (*Decision, bool) {
	c.mu.Lock()
	el, ok := c.entries[k]
	var d *Decision
	if ok {
		c.order.MoveToFront(el)
		d = el.Value.(*cacheEntry).d
	}
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	return d.clone(), true
}

// put keeps d, which the caller must not change afterwards.
func (c *decisionCache) put(k cacheKey, d *Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		el.Value.(*cacheEntry).d = d
		c.order.MoveToFront(el)
		return
	}
	c.entries[k] = c.order.PushFront(&cacheEntry{key: k, d: d})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*cacheEntry).key)
	}
}

func (c *decisionCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
