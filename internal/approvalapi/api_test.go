package approvalapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/devissuer"
)

// call makes one API call through the real server and returns the status,
// headers and body.
func (e *testEnv) call(t *testing.T, method, path, token, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestAPIStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	wrongAud := e.token(t, devissuer.MintRequest{Subject: "bob", Groups: []string{"dba"}, Audience: "other"})
	notYet := e.token(t, devissuer.MintRequest{Subject: "bob", Groups: []string{"dba"}, NotBefore: time.Now().Add(time.Hour)})

	type setup struct {
		path   string // with {id} replaced by a parked request's id
		quorum int
		ttl    time.Duration
		before []string // tokens approving first, in order
	}
	cases := []struct {
		name    string
		method  string
		setup   setup
		token   string // "" none, or a raw token
		who     *devissuer.MintRequest
		body    string
		status  int
		code    string
		want    string // in the body
		notWant string // not in the body
		state   approval.State
	}{
		{name: "no token", method: "GET", setup: setup{path: "/api/v1/approvals"}, status: 401, code: "invalid_token"},
		{name: "not a jwt", method: "GET", setup: setup{path: "/api/v1/approvals"}, token: "nonsense", status: 401, code: "invalid_token", want: "not a valid JWT"},
		{name: "wrong audience", method: "GET", setup: setup{path: "/api/v1/approvals"}, token: wrongAud, status: 401, code: "invalid_token", want: "audience"},
		{name: "not yet valid", method: "GET", setup: setup{path: "/api/v1/approvals"}, token: notYet, status: 401, code: "invalid_token", want: "not valid yet"},
		{name: "list", method: "GET", setup: setup{path: "/api/v1/approvals"}, who: &bob, status: 200, want: `"id": "{id}"`},
		{name: "list all states", method: "GET", setup: setup{path: "/api/v1/approvals?state=all&limit=1000"}, who: &bob, status: 200, want: `"id": "{id}"`},
		{name: "list denied", method: "GET", setup: setup{path: "/api/v1/approvals?state=denied"}, who: &bob, status: 200, want: `"approvals": [`, notWant: `"id": "{id}"`},
		{name: "list bad state", method: "GET", setup: setup{path: "/api/v1/approvals?state=maybe"}, who: &bob, status: 400, code: "invalid"},
		{name: "list bad limit", method: "GET", setup: setup{path: "/api/v1/approvals?limit=-3"}, who: &bob, status: 400, code: "invalid"},
		{name: "list hides others' requests", method: "GET", setup: setup{path: "/api/v1/approvals"}, who: &dave, status: 200, want: `"approvals": []`},
		{name: "requester sees own", method: "GET", setup: setup{path: "/api/v1/approvals/{id}"}, who: &alice, status: 200, want: `"state": "pending"`},
		{name: "get", method: "GET", setup: setup{path: "/api/v1/approvals/{id}"}, who: &bob, status: 200, want: maskedPAN},
		{name: "get unknown", method: "GET", setup: setup{path: "/api/v1/approvals/apr_nope"}, who: &bob, status: 404, code: "not_found"},
		{name: "get not visible", method: "GET", setup: setup{path: "/api/v1/approvals/{id}"}, who: &dave, status: 404, code: "not_found"},
		{name: "unknown path", method: "GET", setup: setup{path: "/api/v1/approvals/{id}/votes"}, who: &bob, status: 404, code: "not_found"},
		{name: "approve", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &bob, body: `{"reason":"ticket OPS-1"}`, status: 200, want: `"state": "approved"`, state: approval.StateApproved},
		{name: "approve without body", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &bob, status: 200, state: approval.StateApproved},
		{name: "approve one of two", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve", quorum: 2}, who: &bob, body: `{}`, status: 200, want: `"state": "pending"`, state: approval.StatePending},
		{name: "second approver reaches quorum", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve", quorum: 2, before: []string{"bob"}}, who: &carol, body: `{}`, status: 200, want: `"state": "approved"`, state: approval.StateApproved},
		{name: "already voted", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve", quorum: 2, before: []string{"bob"}}, who: &bob, body: `{}`, status: 409, code: "already_voted", state: approval.StatePending},
		{name: "not pending", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve", before: []string{"bob"}}, who: &carol, body: `{}`, status: 409, code: "not_pending", state: approval.StateApproved},
		{name: "deny after approval", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/deny", before: []string{"bob"}}, who: &carol, body: `{"reason":"no"}`, status: 409, code: "not_pending", state: approval.StateApproved},
		{name: "expired", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve", ttl: time.Millisecond}, who: &bob, body: `{}`, status: 409, code: "expired", state: approval.StateExpired},
		{name: "not an approver", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &dave, body: `{}`, status: 403, code: "not_approver", want: "dba", state: approval.StatePending},
		{name: "self approval", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &alice, body: `{}`, status: 403, code: "self_approval", state: approval.StatePending},
		{name: "agent for the requester", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &agent7, body: `{}`, status: 403, code: "self_approval", state: approval.StatePending},
		{name: "self denial", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/deny"}, who: &alice, body: `{"reason":"oops"}`, status: 403, code: "self_approval", state: approval.StatePending},
		{name: "deny", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/deny"}, who: &bob, body: `{"reason":"not during the freeze"}`, status: 200, want: "not during the freeze", state: approval.StateDenied},
		{name: "deny without reason", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/deny"}, who: &bob, body: `{"reason":"  "}`, status: 400, code: "reason_required", state: approval.StatePending},
		{name: "reason too long", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &bob, body: `{"reason":"` + strings.Repeat("x", MaxReasonLen+1) + `"}`, status: 400, code: "invalid", state: approval.StatePending},
		{name: "bad body", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &bob, body: `{"reason": 3}`, status: 400, code: "invalid", state: approval.StatePending},
		{name: "unknown field", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, who: &bob, body: `{"as":"root"}`, status: 400, code: "invalid", state: approval.StatePending},
		{name: "approve unknown", method: "POST", setup: setup{path: "/api/v1/approvals/apr_nope/approve"}, who: &bob, body: `{}`, status: 404, code: "not_found"},
		{name: "approve without token", method: "POST", setup: setup{path: "/api/v1/approvals/{id}/approve"}, body: `{}`, status: 401, code: "invalid_token", state: approval.StatePending},
	}
	people := map[string]devissuer.MintRequest{"bob": bob, "carol": carol}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := e.park(t, tc.setup.quorum, tc.setup.ttl)
			for _, who := range tc.setup.before {
				if _, err := e.svc.Approve(t.Context(), id, principalOf(e, people[who]), ""); err != nil {
					t.Fatal(err)
				}
			}
			if tc.setup.ttl > 0 {
				time.Sleep(5 * tc.setup.ttl)
			}
			tok := tc.token
			if tc.who != nil {
				tok = e.token(t, *tc.who)
			}
			path := strings.ReplaceAll(tc.setup.path, "{id}", id)
			status, hdr, body := e.call(t, tc.method, path, tok, tc.body)
			if status != tc.status {
				t.Fatalf("status = %d, want %d; body %s", status, tc.status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", hdr.Get("Cache-Control"))
			}
			if status == 401 {
				if wa := hdr.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer ") || !strings.Contains(wa, `error="invalid_token"`) {
					t.Errorf("WWW-Authenticate = %q", wa)
				}
			}
			if tc.code != "" {
				var er ErrorResponse
				if err := json.Unmarshal([]byte(body), &er); err != nil || er.Code != tc.code || er.Error == "" {
					t.Errorf("error body = %s (%v), want code %q", body, err, tc.code)
				}
			}
			if want := strings.ReplaceAll(tc.want, "{id}", id); want != "" && !strings.Contains(body, want) {
				t.Errorf("body lacks %q:\n%s", want, body)
			}
			if nw := strings.ReplaceAll(tc.notWant, "{id}", id); nw != "" && strings.Contains(body, nw) {
				t.Errorf("body holds %q:\n%s", nw, body)
			}
			if strings.Contains(body, clearPAN) {
				t.Errorf("body holds a clear PAN:\n%s", body)
			}
			if tc.state != "" {
				if got := e.state(t, id).State; got != tc.state {
					t.Errorf("state = %s, want %s", got, tc.state)
				}
			}
		})
	}
}

func principalOf(e *testEnv, m devissuer.MintRequest) approval.Principal {
	return approval.Principal{Sub: m.Subject, Iss: e.iss.URL(), Groups: m.Groups, Act: m.Act}
}

// TestAPIDecisionRecordsCaller checks that approve and deny pass the verified
// caller (issuer, subject, groups, act) and a masked reason to the service.
func TestAPIDecisionRecordsCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	helper := devissuer.MintRequest{Subject: "ops-agent", Groups: []string{"dba"}, Act: "erin"}
	id := e.park(t, 2, 0)
	status, _, body := e.call(t, "POST", "/api/v1/approvals/"+id+"/approve", e.token(t, helper), `{"reason":"card `+clearPAN+` checked"}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	r := e.state(t, id)
	if len(r.Approvals) != 1 {
		t.Fatalf("approvals = %+v", r.Approvals)
	}
	v := r.Approvals[0]
	if v.By.Sub != "ops-agent" || v.By.Iss != e.iss.URL() || v.By.Act != "erin" || len(v.By.Groups) != 1 || v.By.Groups[0] != "dba" {
		t.Errorf("vote by %+v", v.By)
	}
	if v.Reason != "card "+maskedPAN+" checked" {
		t.Errorf("stored reason %q: want the PAN masked", v.Reason)
	}

	id = e.park(t, 1, 0)
	status, _, body = e.call(t, "POST", "/api/v1/approvals/"+id+"/deny", e.token(t, carol), `{"reason":"wrong table"}`)
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	r = e.state(t, id)
	if r.State != approval.StateDenied || r.Denial == nil || r.Denial.By.Sub != "carol" || r.Denial.Reason != "wrong table" {
		t.Errorf("denial = %+v, state %s", r.Denial, r.State)
	}
}

func TestAPIExpiredToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	tok := e.token(t, devissuer.MintRequest{Subject: "bob", Groups: []string{"dba"}, TTL: time.Minute})
	if status, _, body := e.call(t, "GET", "/api/v1/approvals", tok, ""); status != 200 {
		t.Fatalf("fresh token: %d %s", status, body)
	}
	e.skew.Store(int64(2 * time.Hour))
	status, hdr, body := e.call(t, "GET", "/api/v1/approvals", tok, "")
	if status != 401 || !strings.Contains(body, "expired") || !strings.Contains(hdr.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("expired token: %d %q %s", status, hdr.Get("WWW-Authenticate"), body)
	}
}

func TestAPIListLimitAndOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Options{})
	var ids []string
	for range 3 {
		ids = append(ids, e.park(t, 1, 0))
		time.Sleep(2 * time.Millisecond) // distinct creation times
	}
	status, _, body := e.call(t, "GET", "/api/v1/approvals?limit=2", e.token(t, bob), "")
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	var lr ListResponse
	if err := json.Unmarshal([]byte(body), &lr); err != nil {
		t.Fatal(err)
	}
	if len(lr.Approvals) != 2 {
		t.Fatalf("got %d requests, want 2", len(lr.Approvals))
	}
	if lr.Approvals[0].ID != ids[2] || lr.Approvals[1].ID != ids[1] {
		t.Errorf("got %s, %s; want the newest first: %s, %s", lr.Approvals[0].ID, lr.Approvals[1].ID, ids[2], ids[1])
	}
	for _, r := range lr.Approvals {
		if r.Detail != "UPDATE cards SET holder = 'Ada' WHERE pan = '"+maskedPAN+"'" {
			t.Errorf("detail %q", r.Detail)
		}
	}
}

func TestWebURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ base, id, want string }{
		{"https://custos.example.com", "apr_abc", "https://custos.example.com/approvals/apr_abc"},
		{"http://127.0.0.1:9090/", "apr_abc", "http://127.0.0.1:9090/approvals/apr_abc"},
		{"", "a/b", "/approvals/a%2Fb"},
	} {
		if got := WebURL(tc.base, tc.id); got != tc.want {
			t.Errorf("WebURL(%q, %q) = %q, want %q", tc.base, tc.id, got, tc.want)
		}
	}
}

func TestHandlerWithoutService(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	NewHandler(nil, nil, Options{}).ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/approvals", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"code": "unavailable"`) {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}
