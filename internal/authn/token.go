package authn

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// maxTokenBytes bounds the input before any decoding. Real tokens, even with
// large group lists, are a few kilobytes.
const maxTokenBytes = 64 << 10

// maxUnix is 9999-12-31T23:59:59Z, the largest NumericDate accepted.
const maxUnix = 253402300799

// unverifiedToken is a compact JWS split and decoded but not yet verified.
// Only alg and iss are read from it, to pick the issuer.
type unverifiedToken struct {
	alg       string
	kid       string // header kid, "" when absent
	claims    map[string]any
	signature []byte
	// checkedBy is the issuer whose keys checked the signature, once they
	// did.
	checkedBy *issuer
}

// parseToken splits and decodes a compact JWS. It is strict: exactly three
// parts, canonical unpadded base64url, JSON objects without trailing data.
func parseToken(raw string) (*unverifiedToken, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: token is empty", ErrMalformed)
	}
	if len(raw) > maxTokenBytes {
		return nil, fmt.Errorf("%w: token is larger than %d bytes", ErrMalformed, maxTokenBytes)
	}
	// base64 decoders skip CR and LF; refuse them and anything else outside
	// the base64url alphabet before decoding.
	if i := strings.IndexFunc(raw, func(r rune) bool { return !isCompactJWSRune(r) }); i >= 0 {
		return nil, fmt.Errorf("%w: token is not a JWT (invalid character at offset %d)", ErrMalformed, i)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: token is not a JWT (want three dot-separated parts, got %d)", ErrMalformed, len(parts))
	}
	header, err := decodeSegment(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: token is not a JWT: header: %w", ErrMalformed, err)
	}
	alg, ok := header["alg"].(string)
	if !ok || alg == "" {
		return nil, fmt.Errorf("%w: token is not a JWT: header has no alg", ErrMalformed)
	}
	claims, err := decodeSegment(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: token is not a JWT: payload: %w", ErrMalformed, err)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: token is not a JWT: signature is not base64url", ErrMalformed)
	}
	kid, _ := header["kid"].(string)
	return &unverifiedToken{alg: alg, kid: kid, claims: claims, signature: sig}, nil
}

// isCompactJWSRune reports whether r may appear in a compact JWS: the
// base64url alphabet and the dot separating the parts.
func isCompactJWSRune(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}

// decodeSegment decodes one base64url part holding a JSON object.
func decodeSegment(s string) (map[string]any, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	m, err := decodeObject(b)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// decodeObject decodes a JSON object, keeping numbers as json.Number.
func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, errors.New("not a JSON object")
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON object")
	}
	return m, nil
}

// issuer returns the unverified iss claim.
func (t *unverifiedToken) issuer() (string, error) {
	return requiredString(t.claims, "iss")
}

// principal checks the verified payload's claims and builds the Principal.
func (v *Verifier) principal(is *issuer, payload []byte) (*Principal, error) {
	claims, err := decodeObject(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	now := v.opts.now()
	skew := v.opts.skew

	exp, ok, err := numericDate(claims, "exp")
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, fmt.Errorf("%w: token has no \"exp\" claim", ErrMissingClaim)
	case !now.Before(exp.Add(skew)):
		return nil, fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	nbf, ok, err := numericDate(claims, "nbf")
	switch {
	case err != nil:
		return nil, err
	case ok && now.Add(skew).Before(nbf):
		return nil, fmt.Errorf("%w: not valid before %s", ErrNotYetValid, nbf.UTC().Format(time.RFC3339))
	}
	iat, _, err := numericDate(claims, "iat")
	if err != nil {
		return nil, err
	}

	aud, err := audience(claims)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(is.cfg.Audiences, a) }) {
		return nil, fmt.Errorf("%w: token audience %s does not include any of %s", ErrAudience, quoteList(aud), quoteList(is.cfg.Audiences))
	}

	iss, err := requiredString(claims, "iss")
	if err != nil {
		return nil, err
	}
	sub, err := requiredString(claims, "sub")
	if err != nil {
		return nil, err
	}
	user, err := requiredString(claims, is.cfg.UserClaim)
	if err != nil {
		return nil, err
	}
	groups, err := stringList(claims, is.cfg.GroupsClaim)
	if err != nil {
		return nil, err
	}
	email, err := optionalString(claims, "email")
	if err != nil {
		return nil, err
	}
	act, err := actor(claims)
	if err != nil {
		return nil, err
	}
	return &Principal{
		Subject:  sub,
		Issuer:   iss,
		User:     user,
		Groups:   groups,
		Email:    email,
		Act:      act,
		Claims:   claims,
		Expiry:   exp,
		IssuedAt: iat,
	}, nil
}

// numericDate reads an RFC 7519 NumericDate claim. ok is false when the claim
// is absent or null.
func numericDate(claims map[string]any, name string) (t time.Time, ok bool, err error) {
	v, present := claims[name]
	if !present || v == nil {
		return time.Time{}, false, nil
	}
	bad := fmt.Errorf("%w: claim %q is not a valid NumericDate", ErrMalformed, name)
	n, isNum := v.(json.Number)
	if !isNum {
		return time.Time{}, false, bad
	}
	if i, err := n.Int64(); err == nil {
		if i < 0 || i > maxUnix {
			return time.Time{}, false, bad
		}
		return time.Unix(i, 0), true, nil
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > maxUnix {
		return time.Time{}, false, bad
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// audience reads aud, a string or a list of strings; it is required.
func audience(claims map[string]any) ([]string, error) {
	v, present := claims["aud"]
	if !present || v == nil {
		return nil, fmt.Errorf("%w: token has no audience", ErrAudience)
	}
	aud, err := asStringList(v)
	if err != nil {
		return nil, fmt.Errorf("%w: claim \"aud\" must be a string or a list of strings", ErrMalformed)
	}
	if len(aud) == 0 {
		return nil, fmt.Errorf("%w: token has no audience", ErrAudience)
	}
	return aud, nil
}

// stringList reads an optional claim holding a string or a list of strings.
// The result is never nil.
func stringList(claims map[string]any, name string) ([]string, error) {
	v, present := claims[name]
	if !present || v == nil {
		return []string{}, nil
	}
	list, err := asStringList(v)
	if err != nil {
		return nil, fmt.Errorf("%w: claim %q must be a string or a list of strings", ErrMalformed, name)
	}
	return list, nil
}

// asStringList accepts a string (one element, none if empty) or an array of
// strings (empty strings dropped).
func asStringList(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		if v == "" {
			return []string{}, nil
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("not a string")
			}
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	default:
		return nil, errors.New("not a string or a list")
	}
}

// requiredString reads a claim that must be a non-empty string.
func requiredString(claims map[string]any, name string) (string, error) {
	v, present := claims[name]
	if !present || v == nil {
		return "", fmt.Errorf("%w: token has no %.100q claim", ErrMissingClaim, name)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: claim %.100q must be a string", ErrMalformed, name)
	}
	if s == "" {
		return "", fmt.Errorf("%w: claim %.100q is empty", ErrMissingClaim, name)
	}
	return s, nil
}

// optionalString reads a claim that, when present, must be a string.
func optionalString(claims map[string]any, name string) (string, error) {
	v, present := claims[name]
	if !present || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: claim %q must be a string", ErrMalformed, name)
	}
	return s, nil
}

// actor reads the RFC 8693 act claim: an object whose sub is required.
func actor(claims map[string]any) (*Actor, error) {
	v, present := claims["act"]
	if !present || v == nil {
		return nil, nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: claim \"act\" must be an object", ErrMalformed)
	}
	switch sub := obj["sub"].(type) {
	case string:
		if sub == "" {
			return nil, fmt.Errorf("%w: claim \"act\" has an empty \"sub\"", ErrMissingClaim)
		}
		return &Actor{Subject: sub}, nil
	case nil:
		return nil, fmt.Errorf("%w: claim \"act\" has no \"sub\"", ErrMissingClaim)
	default:
		return nil, fmt.Errorf("%w: claim \"act\" has a \"sub\" that is not a string", ErrMalformed)
	}
}

// quoteList formats a list for an error message, bounded in size.
func quoteList(list []string) string {
	const maxItems, maxLen = 8, 100
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range list {
		if i > 0 {
			b.WriteByte(' ')
		}
		if i == maxItems {
			fmt.Fprintf(&b, "... (%d more)", len(list)-maxItems)
			break
		}
		fmt.Fprintf(&b, "%.*q", maxLen, s)
	}
	b.WriteByte(']')
	return b.String()
}
