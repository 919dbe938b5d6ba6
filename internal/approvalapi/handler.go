package approvalapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/mask"
)

// Paths served by the handler.
const (
	// APIPath is the root of the JSON API.
	APIPath = "/api/v1/approvals"
	// WebPath is the root of the web page.
	WebPath = "/approvals"
)

// Patterns are the http.ServeMux patterns the handler answers; register
// each on the admin listener's mux:
//
//	for _, p := range approvalapi.Patterns {
//		mux.Handle(p, h)
//	}
var Patterns = []string{APIPath, APIPath + "/", WebPath, WebPath + "/"}

// MaxReasonLen bounds the reason an approver gives, in bytes.
const MaxReasonLen = 2000

// maxBody bounds request bodies (JSON and forms).
const maxBody = 64 << 10

// Options configure the handler.
type Options struct {
	// Logger receives refused calls (Info) and failures (Error); nil
	// discards.
	Logger *slog.Logger
	// BaseURL is the public URL of the admin listener
	// ("https://custos.example.com:9443"), used for absolute links and
	// trusted as a form origin; "" when links are relative and only
	// same-origin forms are accepted. With an https base URL the session
	// cookie is always Secure.
	BaseURL string
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// handler serves the API and the web page.
type handler struct {
	svc    *approval.Service
	v      *authn.Verifier
	log    *slog.Logger
	now    func() time.Time
	base   string // BaseURL without trailing slash; "" when unset or invalid
	secure bool   // base is https
	masker *mask.Masker
	origin *http.CrossOriginProtection
	mux    *http.ServeMux
}

// NewHandler returns the handler of the approvals API and web page (see
// the package documentation for its routes). Register it on the admin mux
// under each of Patterns. An invalid Options.BaseURL is logged and
// ignored. Without a service or a verifier every call is 503.
func NewHandler(svc *approval.Service, v *authn.Verifier, opts Options) http.Handler {
	h := &handler{svc: svc, v: v, log: opts.Logger, now: opts.Now, origin: http.NewCrossOriginProtection()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	m, err := mask.New(mask.Options{})
	if err != nil { // the zero Options are valid
		panic(err)
	}
	h.masker = m
	if opts.BaseURL != "" {
		origin, err := baseOrigin(opts.BaseURL)
		if err == nil {
			err = h.origin.AddTrustedOrigin(origin)
		}
		if err != nil {
			h.log.Warn("approvals: base url ignored", slog.String("base_url", opts.BaseURL), slog.Any("error", err))
		} else {
			h.base = strings.TrimRight(opts.BaseURL, "/")
			h.secure = strings.HasPrefix(origin, "https://")
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+APIPath, h.apiList)
	mux.HandleFunc("GET "+APIPath+"/{id}", h.apiGet)
	mux.HandleFunc("POST "+APIPath+"/{id}/approve", h.apiDecide)
	mux.HandleFunc("POST "+APIPath+"/{id}/deny", h.apiDecide)
	mux.HandleFunc(APIPath+"/", h.apiNotFound)

	mux.HandleFunc("GET "+WebPath, h.webList)
	mux.HandleFunc("GET "+WebPath+"/{$}", h.webRedirectRoot)
	mux.HandleFunc("POST "+WebPath+"/signin", h.webSignIn)
	mux.HandleFunc("POST "+WebPath+"/signout", h.webSignOut)
	mux.HandleFunc("GET "+WebPath+"/static/style.css", h.webStyle)
	mux.HandleFunc("GET "+WebPath+"/{id}", h.webDetail)
	mux.HandleFunc("POST "+WebPath+"/{id}/approve", h.webDecide)
	mux.HandleFunc("POST "+WebPath+"/{id}/deny", h.webDecide)
	h.mux = mux
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == WebPath || strings.HasPrefix(r.URL.Path, WebPath+"/") {
		hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	}
	if h.svc == nil || h.v == nil {
		writeJSON(w, http.StatusServiceUnavailable, ErrorResponse{Error: "approvals are not enabled on this custos", Code: "unavailable"})
		return
	}
	h.mux.ServeHTTP(w, r)
}

// WebURL returns the address of request id's page on the web interface
// served under baseURL (the public URL of the admin listener), for
// messages telling someone where to approve.
func WebURL(baseURL, id string) string {
	return strings.TrimRight(baseURL, "/") + WebPath + "/" + url.PathEscape(id)
}

// baseOrigin checks a base URL and returns its origin.
func baseOrigin(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("base url must be http(s)://host[:port]")
	}
	return u.Scheme + "://" + u.Host, nil
}

// visible reports whether p may see r: p requested it or may decide it.
func visible(r *approval.Request, p approval.Principal) bool {
	if r.Requester.Iss == p.Iss && r.Requester.Sub == p.Sub {
		return true
	}
	for _, g := range p.Groups {
		if g != "" && slices.Contains(r.ApproverGroups, g) {
			return true
		}
	}
	return false
}

// list returns the requests of state (all states for "") visible to p,
// newest first, at most limit.
func (h *handler) list(ctx context.Context, p approval.Principal, state approval.State, limit int) ([]approval.Request, error) {
	if limit <= 0 {
		limit = approval.DefaultListLimit
	}
	limit = min(limit, approval.MaxListLimit)
	all, err := h.svc.List(ctx, approval.Filter{State: state, Limit: approval.MaxListLimit})
	if err != nil {
		return nil, err
	}
	out := make([]approval.Request, 0, min(len(all), limit))
	for i := range all {
		if len(out) == limit {
			break
		}
		if visible(&all[i], p) {
			out = append(out, *h.masked(&all[i]))
		}
	}
	return out, nil
}

// get returns request id when p may see it, masked.
func (h *handler) get(ctx context.Context, p approval.Principal, id string) (*approval.Request, error) {
	r, err := h.svc.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !visible(r, p) {
		return nil, approval.ErrNotFound
	}
	return h.masked(r), nil
}

// decide approves or denies request id as p; the reason is masked before
// it is stored.
func (h *handler) decide(ctx context.Context, p approval.Principal, id, verb, reason string) (*approval.Request, error) {
	reason = h.maskText(strings.TrimSpace(reason))
	if len(reason) > MaxReasonLen {
		return nil, errReasonTooLong
	}
	var (
		r   *approval.Request
		err error
	)
	if verb == verbDeny {
		if reason == "" {
			return nil, errReasonRequired
		}
		r, err = h.svc.Deny(ctx, id, p, reason)
	} else {
		r, err = h.svc.Approve(ctx, id, p, reason)
	}
	if err != nil {
		h.log.Info("approvals: decision refused", slog.String("approval_id", id), slog.String("verb", verb),
			slog.String("actor_sub", p.Sub), slog.String("actor_iss", p.Iss), slog.String("code", errorCode(err)))
		return nil, err
	}
	return h.masked(r), nil
}

// The decisions, as the last element of their paths.
const (
	verbApprove = "approve"
	verbDeny    = "deny"
)

// verbOf returns the decision a POST path names.
func verbOf(r *http.Request) string {
	if strings.HasSuffix(r.URL.Path, "/"+verbDeny) {
		return verbDeny
	}
	return verbApprove
}

// Errors of the handler itself (the others come from approval).
var (
	errReasonRequired = errors.New("a reason is required to deny a request")
	errReasonTooLong  = errors.New("the reason is too long")
	errBadState       = errors.New("unknown state")
	errBadLimit       = errors.New("limit must be a positive number")
	errBadBody        = errors.New(`the body must be JSON like {"reason": "..."}`)
)

// errorStatus maps an error to its HTTP status and code.
func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, errReasonRequired):
		return http.StatusBadRequest, "reason_required"
	case errors.Is(err, errReasonTooLong), errors.Is(err, errBadState), errors.Is(err, errBadLimit),
		errors.Is(err, errBadBody), errors.Is(err, approval.ErrInvalid):
		return http.StatusBadRequest, "invalid"
	case errors.Is(err, approval.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, approval.ErrSelfApproval):
		return http.StatusForbidden, "self_approval"
	case errors.Is(err, approval.ErrNotApprover):
		return http.StatusForbidden, "not_approver"
	case errors.Is(err, approval.ErrAlreadyVoted):
		return http.StatusConflict, "already_voted"
	case errors.Is(err, approval.ErrExpired):
		return http.StatusConflict, "expired"
	case errors.Is(err, approval.ErrNotPending):
		return http.StatusConflict, "not_pending"
	case errors.Is(err, approval.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "unavailable"
	}
	return http.StatusInternalServerError, "internal"
}

func errorCode(err error) string {
	_, code := errorStatus(err)
	return code
}

// errorMessage is what a caller is told about err: the rule's own words for
// known errors, nothing of the internals otherwise.
func (h *handler) errorMessage(err error) string {
	status, _ := errorStatus(err)
	if status >= 500 {
		if status == http.StatusServiceUnavailable {
			return "the approval service is unavailable; try again"
		}
		return "internal error"
	}
	return h.maskText(strings.TrimPrefix(err.Error(), "approval: "))
}

// maskText masks any PAN in s.
func (h *handler) maskText(s string) string {
	out, c := h.masker.Text(nil, []byte(s), mask.Last4)
	if c == (mask.Counts{}) {
		return s
	}
	return string(out)
}

// masked returns a copy of r with every free-text field masked.
func (h *handler) masked(r *approval.Request) *approval.Request {
	c := r.Clone()
	c.Summary = h.maskText(c.Summary)
	c.Detail = h.maskText(c.Detail)
	c.Note = h.maskText(c.Note)
	for i := range c.Reasons {
		c.Reasons[i] = h.maskText(c.Reasons[i])
	}
	for i := range c.Flags {
		c.Flags[i] = h.maskText(c.Flags[i])
	}
	for i := range c.Approvals {
		c.Approvals[i].Reason = h.maskText(c.Approvals[i].Reason)
	}
	if c.Denial != nil {
		c.Denial.Reason = h.maskText(c.Denial.Reason)
	}
	return c
}

// authMessage is what a caller is told about a refused token.
func authMessage(err error) string {
	switch authn.Reason(err) {
	case "expired":
		return "the token has expired"
	case "not_yet_valid":
		return "the token is not valid yet"
	case "unknown_issuer":
		return "the token's issuer is not trusted"
	case "audience":
		return "the token is not meant for custos (audience)"
	case "signature", "algorithm":
		return "the token's signature is not valid"
	case "missing_claim":
		return "the token lacks a required claim"
	case "issuer_unavailable":
		return "the token's issuer cannot be reached; try again"
	}
	return "the token is not a valid JWT"
}
