// Package devissuer is the small OIDC issuer that `custos dev` runs in
// process, so that a laptop setup has real signed tokens without an
// identity provider.
//
// It is a real issuer as far as verifiers can tell: it serves an OIDC
// discovery document and a JWKS (see [Issuer.Handler]) and signs ES256 JWTs
// ([Issuer.Mint]) that internal/authn verifies like any other issuer's. It has
// no login: whoever can call Mint (the `custos token` command, which reads
// the same data directory) gets a token, which is why it is for development
// only.
//
// State lives in the data directory:
//
//   - dev-issuer-key.pem: the ECDSA P-256 signing key (PKCS#8 PEM, mode
//     0600), generated on first Open and reused afterwards, so tokens and
//     cached JWKS stay valid across restarts;
//   - dev-issuer.json: the public issuer URL recorded by [Issuer.SetURL],
//     so that `custos token` can mint tokens for a running `custos dev`.
package devissuer
