package authn

import "errors"

// Sentinel errors. Every error returned by [Verifier.Verify] wraps exactly one
// of them; test with errors.Is. The wrapping error's message adds the detail
// (which issuer, which algorithm, when the token expired) and is meant to be
// shown to the client.
var (
	// ErrMalformed: the input is not a well-formed JWT, or a claim has the
	// wrong JSON type.
	ErrMalformed = errors.New("malformed token")
	// ErrUnknownIssuer: the token's iss is not one of the configured issuers.
	ErrUnknownIssuer = errors.New("untrusted issuer")
	// ErrIssuerUnavailable: the issuer's discovery document or JWKS could not
	// be fetched. The token may be valid; retrying later may succeed.
	ErrIssuerUnavailable = errors.New("issuer unavailable")
	// ErrAlgorithm: the header alg is not in the issuer's allow-list.
	ErrAlgorithm = errors.New("algorithm not allowed")
	// ErrSignature: no key of the issuer verifies the signature.
	ErrSignature = errors.New("bad signature")
	// ErrExpired: exp (plus the clock skew) is in the past.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf (minus the clock skew) is in the future.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrAudience: aud is missing or holds none of the issuer's audiences.
	ErrAudience = errors.New("audience mismatch")
	// ErrMissingClaim: a required claim (iss, sub, exp, the issuer's user
	// claim, act.sub) is absent or empty.
	ErrMissingClaim = errors.New("missing claim")
)

// Reason returns a short snake_case label for err, for metrics and audit
// records: "malformed", "unknown_issuer", "issuer_unavailable", "algorithm",
// "signature", "expired", "not_yet_valid", "audience", "missing_claim", or
// "internal" for anything else. It returns "" for a nil error.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrUnknownIssuer):
		return "unknown_issuer"
	case errors.Is(err, ErrIssuerUnavailable):
		return "issuer_unavailable"
	case errors.Is(err, ErrAlgorithm):
		return "algorithm"
	case errors.Is(err, ErrSignature):
		return "signature"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrNotYetValid):
		return "not_yet_valid"
	case errors.Is(err, ErrAudience):
		return "audience"
	case errors.Is(err, ErrMissingClaim):
		return "missing_claim"
	default:
		return "internal"
	}
}
