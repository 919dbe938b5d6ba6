package approvalapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
)

// SessionCookie holds the web page's session: the approver's token.
const SessionCookie = "custos_approvals"

//go:embed web/*.html web/style.css
var webFS embed.FS

var (
	styleCSS = mustRead("web/style.css")
	pages    = map[string]*template.Template{
		"signin": page("signin"),
		"list":   page("list"),
		"detail": page("detail"),
		"error":  page("error"),
	}
)

func mustRead(name string) []byte {
	b, err := webFS.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"join": func(s []string) string { return strings.Join(s, ", ") },
}

func page(name string) *template.Template {
	return template.Must(template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/"+name+".html"))
}

// session is a signed-in approver.
type session struct {
	token     string
	principal approval.Principal
	expiry    time.Time
}

// csrf is the session's form token: a hash of its bearer token, so it
// needs no server state, holds for the session on every replica, and
// cannot be made without the token (an HttpOnly cookie).
func (s *session) csrf() string {
	sum := sha256.Sum256([]byte("custos approvals csrf v1\x00" + s.token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// pageData is what every page template gets.
type pageData struct {
	Title    string
	Who      string
	Groups   string
	CSRF     string
	Message  string // an error or notice for the user
	Notice   string // a result
	Base     string // public base URL, "" for relative links
	Requests []approval.Request
	Request  *approval.Request
	State    string
	States   []string
	Now      time.Time
	Decided  bool // the request can no longer be decided
	Quorum   string
	Expires  string
}

func (h *handler) render(w http.ResponseWriter, status int, name string, d *pageData) {
	d.Base = h.base
	if d.Now.IsZero() {
		d.Now = h.now()
	}
	var buf bytes.Buffer
	if err := pages[name].Execute(&buf, d); err != nil {
		h.log.Error("approvals web: render failed", slog.String("page", name), slog.Any("error", err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *handler) withSession(d *pageData, s *session) *pageData {
	d.Who = s.principal.String()
	d.Groups = strings.Join(s.principal.Groups, ", ")
	d.CSRF = s.csrf()
	return d
}

// webSession returns the signed-in approver. Without one it renders the
// sign-in form (with a message when the cookie's token is no longer
// valid), clears the cookie, and returns nil.
func (h *handler) webSession(w http.ResponseWriter, r *http.Request) *session {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		h.render(w, http.StatusOK, "signin", &pageData{Title: "Sign in"})
		return nil
	}
	p, err := h.v.Verify(r.Context(), c.Value)
	if err != nil {
		h.log.Info("approvals web: session token refused", slog.String("reason", authn.Reason(err)), slog.String("client_address", r.RemoteAddr))
		h.clearCookie(w, r)
		h.render(w, http.StatusUnauthorized, "signin", &pageData{Title: "Sign in",
			Message: "Your session has ended: " + authMessage(err) + ". Sign in again with a fresh token."})
		return nil
	}
	return &session{token: c.Value, principal: approval.PrincipalOf(p), expiry: p.Expiry}
}

func (h *handler) setCookie(w http.ResponseWriter, r *http.Request, token string, expiry time.Time) {
	c := &http.Cookie{
		Name: SessionCookie, Value: token, Path: WebPath,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: h.secure || r.TLS != nil,
	}
	if !expiry.IsZero() {
		c.Expires = expiry
		c.MaxAge = max(int(expiry.Sub(h.now()).Seconds()), 1)
	}
	http.SetCookie(w, c)
}

func (h *handler) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: "", Path: WebPath, MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: h.secure || r.TLS != nil,
	})
}

// checkPost refuses a cross-origin form post and, for a session, one
// without the session's CSRF token. It renders the refusal and returns
// false.
func (h *handler) checkPost(w http.ResponseWriter, r *http.Request, s *session) bool {
	if err := h.origin.Check(r); err != nil {
		h.log.Warn("approvals web: cross-origin post refused", slog.String("path", r.URL.Path),
			slog.String("origin", r.Header.Get("Origin")), slog.String("client_address", r.RemoteAddr))
		h.render(w, http.StatusForbidden, "error", &pageData{Title: "Refused",
			Message: "This form was sent from another site and was refused."})
		return false
	}
	if s == nil {
		return true
	}
	if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf())) != 1 {
		h.log.Warn("approvals web: csrf token mismatch", slog.String("path", r.URL.Path), slog.String("client_address", r.RemoteAddr))
		h.render(w, http.StatusForbidden, "error", h.withSession(&pageData{Title: "Refused",
			Message: "This form has expired. Go back, reload the page and try again."}, s))
		return false
	}
	return true
}

func (h *handler) webRedirectRoot(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, WebPath, http.StatusSeeOther)
}

func (h *handler) webStyle(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(styleCSS)
}

func (h *handler) webSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if !h.checkPost(w, r, nil) {
		return
	}
	raw := strings.TrimSpace(r.PostFormValue("token"))
	raw = strings.TrimSpace(strings.TrimPrefix(raw, "Bearer "))
	if raw == "" {
		h.render(w, http.StatusBadRequest, "signin", &pageData{Title: "Sign in", Message: "Paste a token to sign in."})
		return
	}
	p, err := h.v.Verify(r.Context(), raw)
	if err != nil {
		h.log.Info("approvals web: sign-in refused", slog.String("reason", authn.Reason(err)), slog.String("client_address", r.RemoteAddr))
		status := http.StatusUnauthorized
		if authn.Reason(err) == "issuer_unavailable" {
			status = http.StatusServiceUnavailable
		}
		h.render(w, status, "signin", &pageData{Title: "Sign in", Message: "Sign-in refused: " + authMessage(err) + "."})
		return
	}
	h.log.Info("approvals web: signed in", slog.String("actor_sub", p.Subject), slog.String("actor_iss", p.Issuer))
	h.setCookie(w, r, raw, p.Expiry)
	http.Redirect(w, r, WebPath, http.StatusSeeOther)
}

func (h *handler) webSignOut(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if !h.checkPost(w, r, nil) {
		return
	}
	// Signing out needs no valid session, only a same-origin post.
	h.clearCookie(w, r)
	h.render(w, http.StatusOK, "signin", &pageData{Title: "Sign in", Notice: "You are signed out."})
}

func (h *handler) webList(w http.ResponseWriter, r *http.Request) {
	s := h.webSession(w, r)
	if s == nil {
		return
	}
	stateParam := r.URL.Query().Get("state")
	state, err := parseState(stateParam)
	if err != nil {
		stateParam, state = "", approval.StatePending
	}
	if stateParam == "" {
		stateParam = string(approval.StatePending)
	}
	list, err := h.list(r.Context(), s.principal, state, 0)
	if err != nil {
		h.webError(w, r, s, err)
		return
	}
	states := []string{StateAll}
	for _, st := range approval.States {
		states = append(states, string(st))
	}
	h.render(w, http.StatusOK, "list", h.withSession(&pageData{
		Title: "Approvals", Requests: list, State: stateParam, States: states,
	}, s))
}

// results are the notices shown after a decision (?result=).
var results = map[string]string{
	"approved": "You approved this request. It is approved: the statement may now run, once.",
	"voted":    "Your approval is recorded. The request waits for more approvers.",
	"denied":   "You denied this request.",
}

func (h *handler) webDetail(w http.ResponseWriter, r *http.Request) {
	s := h.webSession(w, r)
	if s == nil {
		return
	}
	req, err := h.get(r.Context(), s.principal, r.PathValue("id"))
	if err != nil {
		h.webError(w, r, s, err)
		return
	}
	d := h.detailData(s, req)
	d.Notice = results[r.URL.Query().Get("result")]
	h.render(w, http.StatusOK, "detail", d)
}

func (h *handler) detailData(s *session, req *approval.Request) *pageData {
	d := h.withSession(&pageData{Title: "Request " + req.ID, Request: req}, s)
	d.Decided = req.State != approval.StatePending
	d.Quorum = fmt.Sprintf("%d of %d", len(req.Approvals), req.Quorum)
	d.Expires = time.Unix(req.ExpiresAt.Unix(), 0).UTC().Format("2006-01-02 15:04:05 UTC")
	if left := req.ExpiresAt.Sub(h.now()); req.State == approval.StatePending && left > 0 {
		d.Expires += " (in " + left.Round(time.Second).String() + ")"
	}
	return d
}

func (h *handler) webDecide(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	s := h.webSession(w, r)
	if s == nil {
		return
	}
	if !h.checkPost(w, r, s) {
		return
	}
	id, verb := r.PathValue("id"), verbOf(r)
	req, err := h.decide(r.Context(), s.principal, id, verb, r.PostFormValue("reason"))
	if err != nil {
		// Show the request again with what went wrong, when it can be shown.
		cur, gerr := h.get(r.Context(), s.principal, id)
		if gerr != nil {
			h.webError(w, r, s, err)
			return
		}
		status, _ := errorStatus(err)
		d := h.detailData(s, cur)
		d.Message = h.errorMessage(err)
		h.render(w, status, "detail", d)
		return
	}
	result := "denied"
	if verb == verbApprove {
		result = "voted"
		if req.State == approval.StateApproved {
			result = "approved"
		}
	}
	http.Redirect(w, r, WebPath+"/"+url.PathEscape(id)+"?result="+result, http.StatusSeeOther)
}

func (h *handler) webError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	status, _ := errorStatus(err)
	if status >= 500 {
		h.log.Error("approvals web: request failed", slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	h.render(w, status, "error", h.withSession(&pageData{Title: http.StatusText(status), Message: h.errorMessage(err)}, s))
}
