package authn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a JWKS response read for the copy of its keys.
const maxJWKSBytes = 1 << 20

// errNoKeyVerifies is the error of a signature the named key does not
// verify, worded as go-oidc's: not a fetch failure (see keyFetchFailed).
var errNoKeyVerifies = errors.New("failed to verify id token signature")

// remoteKeys is one go-oidc RemoteKeySet with a copy of the keys its last
// successful JWKS fetch returned, read off the HTTP response as go-oidc
// reads it.
//
// The copy is why a bad signature costs no JWKS fetch: RemoteKeySet
// fetches the JWKS again whenever no cached key verifies a token, so each
// forged or tampered token (a new one each time, in a flood) cost an HTTP
// round trip to the issuer. A token naming a key id the last fetch
// returned is checked against that key here, and refused when it does not
// verify: fetching again helps only a token signed by a key not published
// yet, whose kid is then unknown and is left to RemoteKeySet, as is a
// token without a kid.
type remoteKeys struct {
	set  *oidc.RemoteKeySet
	keys atomic.Pointer[[]jose.JSONWebKey]
}

func newRemoteKeys(ctx context.Context, client *http.Client, jwksURL string) *remoteKeys {
	r := &remoteKeys{}
	c := *client
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &jwksCopier{base: base, keys: &r.keys}
	r.set = oidc.NewRemoteKeySet(oidc.ClientContext(ctx, &c), jwksURL)
	return r
}

// verify checks jwt's signature: with the copied keys of its kid when
// there are any, else through RemoteKeySet.
func (r *remoteKeys) verify(ctx context.Context, jwt string) ([]byte, error) {
	if payload, decided, err := r.verifyKnownKid(jwt); decided {
		return payload, err
	}
	return r.set.VerifySignature(ctx, jwt)
}

// verifyKnownKid verifies jwt with the copied keys of the kid it names.
// decided is false when it names none of them (or no kid, or nothing was
// fetched yet). Algorithms were checked against the issuer's allow-list
// before (oidc.IDTokenVerifier), as for RemoteKeySet.
func (r *remoteKeys) verifyKnownKid(jwt string) (payload []byte, decided bool, err error) {
	keys := r.keys.Load()
	if keys == nil {
		return nil, false, nil
	}
	jws, err := jose.ParseSignedCompact(jwt, joseAlgorithms)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, false, nil
	}
	kid := jws.Signatures[0].Header.KeyID
	if kid == "" {
		return nil, false, nil
	}
	for i := range *keys {
		key := &(*keys)[i]
		if key.KeyID != kid {
			continue
		}
		decided = true
		if payload, err := jws.Verify(key); err == nil {
			return payload, true, nil
		}
	}
	if !decided {
		return nil, false, nil
	}
	return nil, true, errNoKeyVerifies
}

var joseAlgorithms = func() []jose.SignatureAlgorithm {
	out := make([]jose.SignatureAlgorithm, len(supportedAlgorithms))
	for i, a := range supportedAlgorithms {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out
}()

// jwksCopier is the transport of one RemoteKeySet's JWKS requests: it
// keeps the keys of each successful response, decoded as go-oidc decodes
// them, so that the copy holds what RemoteKeySet caches.
type jwksCopier struct {
	base http.RoundTripper
	keys *atomic.Pointer[[]jose.JSONWebKey]
}

func (c *jwksCopier) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) <= maxJWKSBytes {
		if keys, err := decodeJWKS(body); err == nil {
			c.keys.Store(&keys)
		}
	}
	return resp, nil
}

// decodeJWKS decodes a JWKS as go-oidc does: keys advertising an
// algorithm it does not support, and keys of types go-jose does not know,
// are skipped; any other bad key fails the whole set.
func decodeJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, err
	}
	keys := make([]jose.JSONWebKey, 0, len(raw.Keys))
	for _, k := range raw.Keys {
		var meta struct {
			Alg string `json:"alg"`
		}
		if err := json.Unmarshal(k, &meta); err != nil {
			return nil, err
		}
		if meta.Alg != "" && !isSupportedAlgorithm(meta.Alg) {
			continue
		}
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(k, &jwk); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, err
		}
		keys = append(keys, jwk)
	}
	return keys, nil
}

func isSupportedAlgorithm(alg string) bool {
	for _, a := range supportedAlgorithms {
		if a == alg {
			return true
		}
	}
	return false
}
