// Package approvalapi is how approvers see and decide parked requests: a
// JSON API, a server-rendered web page, and the client the
// `custos approvals` command uses. Both interfaces are served by one
// handler ([NewHandler]) on custos' admin listener.
//
// # JSON API (APIPath)
//
//	GET  /api/v1/approvals?state=pending&limit=100   {"approvals": [Request...]}
//	GET  /api/v1/approvals/{id}                      Request
//	POST /api/v1/approvals/{id}/approve {"reason"}   Request (as committed)
//	POST /api/v1/approvals/{id}/deny    {"reason"}   Request; reason required
//
// Every call needs `Authorization: Bearer <OIDC JWT>`, verified by the
// [authn.Verifier]; a missing or bad token is 401 with
// `WWW-Authenticate: Bearer error="invalid_token"`. state is one of the
// approval states or "all" (default pending). Errors are JSON
// {"error": message, "code": code} with the status of the rule that
// refused: 400 invalid or reason_required, 403 not_approver or
// self_approval, 404 not_found, 409 not_pending, expired or already_voted,
// 503 unavailable or issuer_unavailable.
//
// A caller sees the requests it may decide (it is in one of their approver
// groups) and the ones it requested; others are left out of lists and are
// 404 on GET. Approve and deny pass the caller, as verified, to
// [approval.Service], which applies every rule (approver group, no
// self-approval, one vote each, quorum, expiry).
//
// # Web page (WebPath)
//
//	GET  /approvals              sign-in form, or the pending requests
//	POST /approvals/signin       token -> HttpOnly SameSite=Strict cookie
//	POST /approvals/signout      clears it
//	GET  /approvals/{id}         one request, with approve and deny forms
//	POST /approvals/{id}/approve reason optional
//	POST /approvals/{id}/deny    reason required
//	GET  /approvals/static/...   the style sheet
//
// The approver pastes a token; it is kept in a cookie (Secure when the
// request came over TLS or the base URL is https) and verified again on
// every request, so an expired token leads back to the sign-in form. Forms
// carry a per-session CSRF token (a hash of the session's token) and every
// POST is checked for a cross-origin Origin or Sec-Fetch-Site. Pages work
// without JavaScript and are sent with a CSP that allows none, frame
// denial and no-store.
//
// # Masking
//
// The producer of a request masks the PANs of its detail; everything shown
// by this package (summary, detail, reasons, notes, vote reasons, error
// messages) is masked again with [mask.Masker.Text], and reasons given by
// approvers are masked before they are stored.
package approvalapi
