package authn

import "strings"

// BearerToken takes the token out of an Authorization header value
// ("Bearer <token>"; the scheme is case-insensitive, RFC 9110 §11.1). It
// reports false when the value holds no bearer token.
func BearerToken(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
