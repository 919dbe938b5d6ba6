package extproc

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// The grant ext_authz hands ext_proc travels through Envoy's dynamic
// metadata, and anyone who can open an ext_proc stream can write metadata.
// So Check seals each grant: an HMAC-SHA256, under a key every replica
// shares, of the grant's canonical encoding bound to the request (its
// x-request-id, method and path, as ext_proc sees them in the request
// headers) and to a short validity. ext_proc verifies the seal before it
// uses anything of the grant, and uses a seal once.
//
// x-request-id is the binding because both callouts see the same value:
// ext_authz in the Check's headers, ext_proc in the request headers. The
// Check's own attributes.request.http.id is Envoy's stream id, which
// ext_proc never sees. Envoy generates x-request-id for every request
// that has none and, by default (preserve_external_request_id false),
// replaces the one an external client sends.

// Keys of the seal in the grant's metadata.
const (
	mdSeal      = "seal"
	mdSealedAt  = "sealed_at"    // unix milliseconds
	mdExpires   = "seal_expires" // unix milliseconds
	mdRequestID = "request_id"   // the x-request-id the grant was sealed for
)

// Seal parameters.
const (
	// GrantTTL is how long a sealed grant is valid after Check issued it.
	// ext_proc verifies it on the stream's first message, which follows
	// Check at once (a parked request is held after verification).
	GrantTTL = 60 * time.Second
	// grantClockSkew is tolerated between replicas' clocks: a grant sealed
	// up to this far in the future is accepted.
	grantClockSkew = 5 * time.Second
	// MinGrantKeyBytes is the shortest grant key accepted.
	MinGrantKeyBytes = 32
	// sealDomain separates grant seals from anything else the key could
	// ever MAC.
	sealDomain = "custos ext_authz grant v1\x00"
)

// Why a grant is refused; each is the error_type of the refusal's audit
// record and of the client's 403 body.
var (
	errGrantMissing   = errors.New("grant_missing")
	errGrantMalformed = errors.New("grant_malformed")
	errGrantUnsealed  = errors.New("grant_unsealed")
	errGrantUnbound   = errors.New("grant_unbound")
	errGrantMismatch  = errors.New("grant_request_mismatch")
	errGrantForged    = errors.New("grant_forged")
	errGrantExpired   = errors.New("grant_expired")
	errGrantReplayed  = errors.New("grant_replayed")
)

// grantErrorType is the error_type of a grant refusal.
func grantErrorType(err error) string {
	for _, e := range []error{errGrantMissing, errGrantMalformed, errGrantUnsealed, errGrantUnbound,
		errGrantMismatch, errGrantForged, errGrantExpired, errGrantReplayed} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return errGrantMalformed.Error()
}

// binding is what a seal ties a grant to: the request, and when.
type binding struct {
	RequestID, Method, Path string
	SealedAt, Expires       int64 // unix milliseconds
}

// sealState is a grant's seal as read from the metadata.
type sealState struct {
	mac       []byte
	requestID string
	sealedAt  int64
	expires   int64
}

// sealer seals grants and verifies them, refusing a seal used before.
type sealer struct {
	key []byte
	now func() time.Time

	mu   sync.Mutex
	used map[[sha256.Size]byte]int64 // seal → its expiry (unix ms)
	// sweepAt is when expired entries of used are next removed.
	sweepAt int64
}

func newSealer(key []byte, now func() time.Time) (*sealer, error) {
	if len(key) < MinGrantKeyBytes {
		return nil, fmt.Errorf("the grant key has %d bytes, at least %d are required", len(key), MinGrantKeyBytes)
	}
	if now == nil {
		now = time.Now
	}
	return &sealer{key: slices.Clone(key), now: now, used: map[[sha256.Size]byte]int64{}}, nil
}

// seal is the MAC of g bound to b.
func (s *sealer) seal(g *grant, b binding) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write(canonicalGrant(g, b))
	return m.Sum(nil)
}

// bind is the binding of a grant Check issues now for a request.
func (s *sealer) bind(requestID, method, path string) binding {
	now := s.now().UnixMilli()
	return binding{RequestID: requestID, Method: method, Path: path, SealedAt: now, Expires: now + GrantTTL.Milliseconds()}
}

// verify checks g's seal against the request ext_proc sees and marks the
// seal used. Every refusal wraps one of the errGrant* reasons.
func (s *sealer) verify(g *grant, st *sealState, requestID, method, path string) error {
	if st == nil || len(st.mac) == 0 {
		return fmt.Errorf("%w: the authorization decision carries no seal", errGrantUnsealed)
	}
	if requestID == "" {
		return fmt.Errorf("%w: the request has no x-request-id to check the decision against", errGrantUnbound)
	}
	if st.requestID != requestID {
		return fmt.Errorf("%w: the decision was sealed for another request", errGrantMismatch)
	}
	want := s.seal(g, binding{RequestID: requestID, Method: method, Path: path, SealedAt: st.sealedAt, Expires: st.expires})
	if !hmac.Equal(want, st.mac) {
		return fmt.Errorf("%w: the decision's seal does not match its content and this request", errGrantForged)
	}
	now := s.now().UnixMilli()
	switch {
	case st.expires <= now:
		return fmt.Errorf("%w: the decision's seal expired %s ago", errGrantExpired,
			time.Duration(now-st.expires)*time.Millisecond)
	case st.sealedAt > now+grantClockSkew.Milliseconds():
		return fmt.Errorf("%w: the decision was sealed in the future", errGrantExpired)
	case st.expires-st.sealedAt > GrantTTL.Milliseconds():
		return fmt.Errorf("%w: the decision's seal is valid for longer than %s", errGrantExpired, GrantTTL)
	}
	var id [sha256.Size]byte
	copy(id[:], st.mac)
	s.mu.Lock()
	defer s.mu.Unlock()
	if now >= s.sweepAt {
		maps.DeleteFunc(s.used, func(_ [sha256.Size]byte, exp int64) bool { return exp <= now })
		s.sweepAt = now + time.Second.Milliseconds()
	}
	if _, ok := s.used[id]; ok {
		return fmt.Errorf("%w: the decision was already used by another ext_proc stream", errGrantReplayed)
	}
	s.used[id] = st.expires
	return nil
}

// canonicalGrant is the byte string a seal covers: every field of g and of
// b in a fixed order, each length-prefixed, so that no two different
// grants or bindings encode alike.
func canonicalGrant(g *grant, b binding) []byte {
	var e canonEncoder
	e.buf = append(e.buf, sealDomain...)
	e.str(b.RequestID)
	e.str(b.Method)
	e.str(b.Path)
	e.int(b.SealedAt)
	e.int(b.Expires)
	e.str(g.DecisionID)
	e.str(string(g.Outcome))
	e.str(g.PolicyVersion)
	e.str(g.Sub)
	e.str(g.Iss)
	e.list(g.Groups)
	e.str(g.Act)
	e.str(g.ClientAddress)
	e.str(g.Resource)
	e.str(g.ResourceType)
	e.list(g.Reasons)
	if a := g.Approval; a != nil {
		e.buf = append(e.buf, 1)
		e.list(a.ApproverGroups)
		e.int(int64(a.Quorum))
		e.str(a.TTL)
	} else {
		e.buf = append(e.buf, 0)
	}
	if m := g.Mask; m != nil {
		e.buf = append(e.buf, 1)
		keys := slices.Sorted(maps.Keys(m.JSONPaths))
		e.int(int64(len(keys)))
		for _, k := range keys {
			e.str(k)
			e.str(m.JSONPaths[k])
		}
		if m.DetectPAN {
			e.buf = append(e.buf, 1)
		} else {
			e.buf = append(e.buf, 0)
		}
		e.str(m.Reveal)
	} else {
		e.buf = append(e.buf, 0)
	}
	return e.buf
}

type canonEncoder struct{ buf []byte }

func (e *canonEncoder) str(s string) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *canonEncoder) int(n int64) { e.buf = binary.AppendVarint(e.buf, n) }

func (e *canonEncoder) list(ss []string) {
	e.int(int64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

// encodeSeal and decodeSeal are the seal as a metadata string.
func encodeSeal(mac []byte) string { return base64.RawURLEncoding.EncodeToString(mac) }

func decodeSeal(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("the seal is not a base64url HMAC-SHA256")
	}
	return b, nil
}
