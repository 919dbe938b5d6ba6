package approvalapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/devissuer"
)

// web sends one request to the handler as a browser would (same origin
// unless origin says otherwise) and returns the recorded response.
func (e *testEnv) web(t *testing.T, method, target, cookie string, form url.Values, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	var req *http.Request
	if form != nil {
		req = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, target, nil)
	}
	req = req.WithContext(t.Context())
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: cookie})
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf reads the CSRF token from a page.
func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field in page:\n%s", page)
	}
	return m[1]
}

func TestWebSecurityHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	for _, target := range []string{"/approvals", "/approvals/apr_x", "/approvals/static/style.css"} {
		rec := e.web(t, "GET", target, "", nil, nil)
		h := rec.Header()
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			!strings.Contains(csp, "form-action 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "script-src") {
			t.Errorf("%s: CSP %q", target, csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" && h.Get("Cache-Control") != "no-cache" ||
			h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", target, h)
		}
		if strings.Contains(rec.Body.String(), "<script") || strings.Contains(rec.Body.String(), "style=") {
			t.Errorf("%s: inline script or style in page", target)
		}
	}
}

func TestWebSignIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	cases := []struct {
		name      string
		target    string
		token     string
		hdr       map[string]string
		status    int
		want      string
		cookie    bool
		secure    bool
		noCookies bool
	}{
		{name: "valid", target: "/approvals/signin", token: e.token(t, bob), status: 303, cookie: true},
		{name: "valid with bearer prefix", target: "/approvals/signin", token: "Bearer " + e.token(t, bob), status: 303, cookie: true},
		{name: "over tls", target: "https://custos.test/approvals/signin", token: e.token(t, bob), status: 303, cookie: true, secure: true},
		{name: "same origin", target: "/approvals/signin", token: e.token(t, bob), hdr: map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}, status: 303, cookie: true},
		{name: "empty", target: "/approvals/signin", status: 400, want: "Paste a token", noCookies: true},
		{name: "bad token", target: "/approvals/signin", token: "abc.def.ghi", status: 401, want: "Sign-in refused", noCookies: true},
		{name: "wrong audience", target: "/approvals/signin", token: e.token(t, devissuer.MintRequest{Subject: "bob", Audience: "x"}), status: 401, want: "audience", noCookies: true},
		{name: "cross-origin", target: "/approvals/signin", token: e.token(t, bob), hdr: map[string]string{"Origin": "https://evil.example"}, status: 403, want: "another site", noCookies: true},
		{name: "cross-site fetch", target: "/approvals/signin", token: e.token(t, bob), hdr: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 403, want: "another site", noCookies: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := e.web(t, "POST", tc.target, "", url.Values{"token": {tc.token}}, tc.hdr)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d:\n%s", rec.Code, tc.status, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("page lacks %q:\n%s", tc.want, rec.Body)
			}
			cookies := rec.Result().Cookies()
			if tc.noCookies && len(cookies) > 0 {
				t.Errorf("cookies set: %v", cookies)
			}
			if !tc.cookie {
				return
			}
			if loc := rec.Header().Get("Location"); loc != "/approvals" {
				t.Errorf("Location %q", loc)
			}
			if len(cookies) != 1 {
				t.Fatalf("cookies %v", cookies)
			}
			c := cookies[0]
			if c.Name != SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/approvals" || c.Secure != tc.secure || c.MaxAge <= 0 || c.MaxAge > 3600 {
				t.Errorf("cookie %+v", c)
			}
		})
	}
}

func TestWebSecureCookieFromBaseURL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{BaseURL: "https://custos.example.com:9443/"})
	rec := e.web(t, "POST", "/approvals/signin", "", url.Values{"token": {e.token(t, bob)}},
		map[string]string{"Origin": "https://custos.example.com:9443", "Sec-Fetch-Site": "cross-site"})
	if rec.Code != 303 {
		t.Fatalf("status %d:\n%s", rec.Code, rec.Body)
	}
	if c := rec.Result().Cookies(); len(c) != 1 || !c[0].Secure {
		t.Errorf("cookie %v, want Secure", c)
	}
	id := e.park(t, 1, 0)
	rec = e.web(t, "GET", "/approvals/"+id, e.token(t, bob), nil, nil)
	if !strings.Contains(rec.Body.String(), `href="https://custos.example.com:9443/approvals/`+id+`"`) {
		t.Errorf("no absolute link in page:\n%s", rec.Body)
	}
}

func TestWebPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	id := e.park(t, 1, 0)
	bobTok := e.token(t, bob)

	rec := e.web(t, "GET", "/approvals", "", nil, nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `action="/approvals/signin"`) {
		t.Fatalf("no sign-in form: %d\n%s", rec.Code, rec.Body)
	}

	rec = e.web(t, "GET", "/approvals", bobTok, nil, nil)
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, `href="/approvals/`+id+`"`) || !strings.Contains(body, "bob (") {
		t.Fatalf("list: %d\n%s", rec.Code, body)
	}
	rec = e.web(t, "GET", "/approvals", e.token(t, dave), nil, nil)
	if strings.Contains(rec.Body.String(), id) {
		t.Errorf("dave sees a request of the dba group:\n%s", rec.Body)
	}

	rec = e.web(t, "GET", "/approvals/"+id, bobTok, nil, nil)
	body = rec.Body.String()
	if rec.Code != 200 {
		t.Fatalf("detail: %d\n%s", rec.Code, body)
	}
	for _, want := range []string{
		"UPDATE cards SET holder = $1 WHERE pan = $2", "WHERE pan = &#39;" + maskedPAN + "&#39;", "payments-db",
		"alice", "alice@example.com", "writes_cde", "writes to public.cards need approval from dba",
		`id="groups">dba<`, "0 of 1", "dec-1", `action="/approvals/` + id + `/approve"`, `action="/approvals/` + id + `/deny"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("detail lacks %q", want)
		}
	}
	if strings.Contains(body, clearPAN) {
		t.Errorf("detail holds a clear PAN")
	}
	csrfOf(t, body)

	rec = e.web(t, "GET", "/approvals/apr_missing", bobTok, nil, nil)
	if rec.Code != 404 {
		t.Errorf("unknown request: %d", rec.Code)
	}
	rec = e.web(t, "GET", "/approvals/"+id+"?result=approved", bobTok, nil, nil)
	if !strings.Contains(rec.Body.String(), "You approved this request") {
		t.Errorf("no result notice")
	}
	rec = e.web(t, "GET", "/approvals/"+id+"?result=<b>x</b>", bobTok, nil, nil)
	if strings.Contains(rec.Body.String(), "<b>x") || strings.Contains(rec.Body.String(), `id="notice"`) {
		t.Errorf("arbitrary result shown")
	}
}

func TestWebEscapesRequestText(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	r, err := e.svc.Request(t.Context(), approval.NewRequest{
		Hash: "h", Requester: approval.Principal{Sub: "<b>mallory</b>", Iss: "x"}, Resource: "db", Kind: approval.KindSQL,
		Summary: "SELECT '<script>alert(1)</script>'", ApproverGroups: []string{"dba"},
	})
	if err != nil {
		t.Fatal(err)
	}
	body := e.web(t, "GET", "/approvals/"+r.ID, e.token(t, bob), nil, nil).Body.String()
	if strings.Contains(body, "<script>") || strings.Contains(body, "<b>mallory") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("request text not escaped:\n%s", body)
	}
}

func TestWebExpiredSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	id := e.park(t, 1, 0)
	tok := e.token(t, devissuer.MintRequest{Subject: "bob", Groups: []string{"dba"}, TTL: 10 * time.Minute})
	page := e.web(t, "GET", "/approvals/"+id, tok, nil, nil).Body.String()
	csrf := csrfOf(t, page)
	e.skew.Store(int64(time.Hour))
	for _, tc := range []struct {
		method, target string
		form           url.Values
	}{
		{"GET", "/approvals", nil},
		{"GET", "/approvals/" + id, nil},
		{"POST", "/approvals/" + id + "/approve", url.Values{"csrf": {csrf}}},
	} {
		rec := e.web(t, tc.method, tc.target, tok, tc.form, nil)
		body := rec.Body.String()
		if rec.Code != 401 || !strings.Contains(body, "Your session has ended: the token has expired") || !strings.Contains(body, `action="/approvals/signin"`) {
			t.Errorf("%s %s: %d\n%s", tc.method, tc.target, rec.Code, body)
		}
		c := rec.Result().Cookies()
		if len(c) != 1 || c[0].Name != SessionCookie || c[0].MaxAge >= 0 {
			t.Errorf("%s %s: cookie not cleared: %v", tc.method, tc.target, c)
		}
	}
	if s := e.state(t, id).State; s != approval.StatePending {
		t.Errorf("state %s after an expired session's post", s)
	}
	rec := e.web(t, "GET", "/approvals", "garbage", nil, nil)
	if rec.Code != 401 || !strings.Contains(rec.Body.String(), "not a valid JWT") {
		t.Errorf("bad cookie: %d\n%s", rec.Code, rec.Body)
	}
}

func TestWebDecide(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	bobTok, aliceTok := e.token(t, bob), e.token(t, alice)
	bobCSRF := csrfOf(t, e.web(t, "GET", "/approvals", bobTok, nil, nil).Body.String())
	aliceCSRF := csrfOf(t, e.web(t, "GET", "/approvals", aliceTok, nil, nil).Body.String())
	if bobCSRF == aliceCSRF {
		t.Fatal("two sessions share a csrf token")
	}
	sameOrigin := map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}
	cases := []struct {
		name     string
		verb     string
		token    string
		form     url.Values
		hdr      map[string]string
		quorum   int
		status   int
		location string // "" none
		want     string
		state    approval.State
	}{
		{name: "approve", verb: "approve", token: bobTok, form: url.Values{"csrf": {bobCSRF}, "reason": {"ok"}}, hdr: sameOrigin, status: 303, location: "?result=approved", state: approval.StateApproved},
		{name: "approve without origin headers", verb: "approve", token: bobTok, form: url.Values{"csrf": {bobCSRF}}, status: 303, location: "?result=approved", state: approval.StateApproved},
		{name: "approve one of two", verb: "approve", token: bobTok, form: url.Values{"csrf": {bobCSRF}}, quorum: 2, status: 303, location: "?result=voted", state: approval.StatePending},
		{name: "deny", verb: "deny", token: bobTok, form: url.Values{"csrf": {bobCSRF}, "reason": {"use the runbook"}}, status: 303, location: "?result=denied", state: approval.StateDenied},
		{name: "deny without reason", verb: "deny", token: bobTok, form: url.Values{"csrf": {bobCSRF}, "reason": {" "}}, status: 400, want: "reason is required", state: approval.StatePending},
		{name: "no csrf", verb: "approve", token: bobTok, form: url.Values{"reason": {"ok"}}, status: 403, want: "form has expired", state: approval.StatePending},
		{name: "csrf of another session", verb: "approve", token: bobTok, form: url.Values{"csrf": {aliceCSRF}}, status: 403, want: "form has expired", state: approval.StatePending},
		{name: "cross-origin", verb: "approve", token: bobTok, form: url.Values{"csrf": {bobCSRF}}, hdr: map[string]string{"Origin": "https://evil.example"}, status: 403, want: "another site", state: approval.StatePending},
		{name: "cross-site", verb: "deny", token: bobTok, form: url.Values{"csrf": {bobCSRF}, "reason": {"x"}}, hdr: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 403, want: "another site", state: approval.StatePending},
		{name: "self approval", verb: "approve", token: aliceTok, form: url.Values{"csrf": {aliceCSRF}}, status: 403, want: "requesters cannot decide their own request", state: approval.StatePending},
		{name: "not an approver", verb: "approve", token: e.token(t, dave), form: nil, status: 403, want: "", state: approval.StatePending},
		{name: "no session", verb: "approve", token: "", form: url.Values{"csrf": {bobCSRF}}, status: 200, want: `action="/approvals/signin"`, state: approval.StatePending},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := e.park(t, tc.quorum, 0)
			form := tc.form
			if form == nil { // dave has no page with a token; make his
				form = url.Values{"csrf": {(&session{token: tc.token}).csrf()}}
			}
			rec := e.web(t, "POST", "/approvals/"+id+"/"+tc.verb, tc.token, form, tc.hdr)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d:\n%s", rec.Code, tc.status, rec.Body)
			}
			if tc.location != "" {
				if loc := rec.Header().Get("Location"); loc != "/approvals/"+id+tc.location {
					t.Errorf("Location %q", loc)
				}
			}
			if !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("page lacks %q:\n%s", tc.want, rec.Body)
			}
			if got := e.state(t, id).State; got != tc.state {
				t.Errorf("state %s, want %s", got, tc.state)
			}
		})
	}
}

func TestWebSignOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	tok := e.token(t, bob)
	csrf := csrfOf(t, e.web(t, "GET", "/approvals", tok, nil, nil).Body.String())
	rec := e.web(t, "POST", "/approvals/signout", tok, url.Values{"csrf": {csrf}}, nil)
	c := rec.Result().Cookies()
	if rec.Code != 200 || len(c) != 1 || c[0].MaxAge >= 0 || !strings.Contains(rec.Body.String(), "signed out") {
		t.Fatalf("sign out: %d %v\n%s", rec.Code, c, rec.Body)
	}
	rec = e.web(t, "POST", "/approvals/signout", tok, url.Values{"csrf": {csrf}}, map[string]string{"Origin": "https://evil.example"})
	if rec.Code != 403 || len(rec.Result().Cookies()) != 0 {
		t.Errorf("cross-origin sign out: %d", rec.Code)
	}
}
