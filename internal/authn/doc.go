// Package authn turns a raw OIDC JWT into a verified [Principal], or refuses it.
//
// A [Verifier] trusts a fixed list of issuers. For each token it:
//
//  1. parses the compact JWS strictly (three canonical base64url parts, JSON
//     objects, bounded size) without trusting anything in it yet;
//  2. picks the configured issuer whose URL equals the unverified "iss" claim
//     exactly, and checks the header "alg" against that issuer's allow-list
//     ("none" and HS* can never be configured);
//  3. discovers the issuer on first use (OIDC discovery through go-oidc), and
//     retries discovery on a later token if the issuer was unreachable, so an
//     issuer that is down when custos starts does not need a restart;
//  4. verifies the signature against the issuer's JWKS (go-oidc's remote key
//     set, which refetches the JWKS when a token names a key it does not
//     hold, so key rotation needs no action). Fetched keys are trusted for
//     a bounded time (see [WithKeyRefresh]) so that a key the issuer removed
//     stops verifying;
//  5. checks exp (required) and nbf with the configured clock skew, the
//     audience (required; one of the issuer's audiences must be present),
//     and the sub and user claims, then builds the Principal from the
//     verified payload only.
//
// Every failure is an error wrapping exactly one of the sentinel errors
// (ErrMalformed, ErrUnknownIssuer, ...) with a message that is safe to show
// to the client: it never contains the token, keys, or upstream response
// bodies. [Reason] maps an error to a short label for metrics. Anything
// unexpected is an error too: the package fails closed.
package authn
