package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/approvalapi"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/devissuer"
)

// approvalsEnv is an admin server with the approvals handler on a real
// approval.Service (SQLite) and a real OIDC issuer.
type approvalsEnv struct {
	url string
	svc *approval.Service
	iss *devissuer.Issuer
}

func newApprovalsEnv(t *testing.T) *approvalsEnv {
	t.Helper()
	dir := t.TempDir()
	store, err := approval.OpenSQLite(filepath.Join(dir, "approvals.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	svc, err := approval.NewService(context.Background(), store, approval.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	iss, err := devissuer.Open(filepath.Join(dir, "issuer"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/oidc/", http.StripPrefix("/oidc", iss.Handler()))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	if err := iss.SetURL(ts.URL + "/oidc"); err != nil {
		t.Fatal(err)
	}
	v, err := authn.NewVerifier(context.Background(), []authn.Issuer{{URL: iss.URL(), Audiences: []string{"custos"}}})
	if err != nil {
		t.Fatal(err)
	}
	h := approvalapi.NewHandler(svc, v, approvalapi.Options{})
	for _, p := range approvalapi.Patterns {
		mux.Handle(p, h)
	}
	return &approvalsEnv{url: ts.URL, svc: svc, iss: iss}
}

func (e *approvalsEnv) token(t *testing.T, sub string, groups ...string) string {
	t.Helper()
	tok, err := e.iss.Mint(devissuer.MintRequest{Subject: sub, Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// park parks a write by alice needing quorum approvals from dba.
func (e *approvalsEnv) park(t *testing.T, quorum int) string {
	t.Helper()
	r, err := e.svc.Request(context.Background(), approval.NewRequest{
		Hash:           "pin",
		Requester:      approval.Principal{Sub: "alice", Iss: e.iss.URL(), Groups: []string{"agents"}, Act: "alice@example.com"},
		Resource:       "payments-db",
		Kind:           approval.KindSQL,
		Summary:        "UPDATE cards SET holder = $1 WHERE id = $2",
		Detail:         "UPDATE cards SET holder = 'Ada', note = '4111 1111 1111 1111' WHERE id = 1",
		Flags:          []string{"writes_cde"},
		Reasons:        []string{"writes need approval from dba"},
		ApproverGroups: []string{"dba"},
		Quorum:         quorum,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

func runCLI(args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestApprovalsCLI(t *testing.T) {
	t.Parallel()
	e := newApprovalsEnv(t)
	bob, carol, alice := e.token(t, "bob", "dba"), e.token(t, "carol", "dba"), e.token(t, "alice", "agents", "dba")
	conn := func(tok string) []string { return []string{"--admin-url", e.url, "--token", tok} }

	cases := []struct {
		name   string
		quorum int
		args   func(id string) []string
		want   []string // in stdout, or in the error when wantErr
		absent []string
		err    bool
		state  approval.State
	}{
		{name: "list", args: func(string) []string { return append([]string{"approvals", "list"}, conn(bob)...) },
			want: []string{"ID", "STATE", "REQUESTER", "{id}", "pending", "payments-db", "alice for alice@example.com", "0/1", "UPDATE cards SET holder = $1 WHERE id = $2"}},
		{name: "list other state", args: func(string) []string {
			return append([]string{"approvals", "list", "--state", "denied"}, conn(bob)...)
		}, absent: []string{"{id}"}},
		{name: "list bad state", args: func(string) []string {
			return append([]string{"approvals", "list", "--state", "soon"}, conn(bob)...)
		}, err: true, want: []string{"unknown state", "400 invalid"}},
		{name: "show", args: func(id string) []string { return append([]string{"approvals", "show", id}, conn(bob)...) },
			want:   []string{"id:", "{id}", "requester:", "alice (", "for alice@example.com", "approver groups:", "dba", "writes_cde", "0 of 1", "**** **** **** 1111"},
			absent: []string{"4111 1111 1111 1111"}},
		{name: "show flags after the id", args: func(id string) []string {
			return []string{"approvals", "show", id, "--json", "--admin-url", e.url, "--token", bob}
		}, want: []string{`"id": "{id}"`, `"state": "pending"`}, absent: []string{"4111 1111 1111 1111"}},
		{name: "show unknown", args: func(string) []string { return append([]string{"approvals", "show", "apr_none"}, conn(bob)...) },
			err: true, want: []string{"request not found", "404 not_found"}},
		{name: "show needs an id", args: func(string) []string { return append([]string{"approvals", "show"}, conn(bob)...) },
			err: true, want: []string{"one request id is required"}},
		{name: "approve", args: func(id string) []string {
			return append([]string{"approvals", "approve", id, "--reason", "OPS-12"}, conn(bob)...)
		}, want: []string{"approved {id} (1 of 1 approvals)"}, state: approval.StateApproved},
		{name: "approve one of two", quorum: 2, args: func(id string) []string {
			return append([]string{"approvals", "approve", id}, conn(carol)...)
		}, want: []string{"recorded your approval of {id} (1 of 2 approvals); it is pending"}, state: approval.StatePending},
		{name: "self approval", args: func(id string) []string { return append([]string{"approvals", "approve", id}, conn(alice)...) },
			err: true, want: []string{"approvals approve: requesters cannot decide their own request (403 self_approval)"}, state: approval.StatePending},
		{name: "not an approver", args: func(id string) []string {
			return append([]string{"approvals", "approve", id}, conn(e.token(t, "dave", "agents"))...)
		}, err: true, want: []string{"not in an approver group", "403 not_approver"}, state: approval.StatePending},
		{name: "deny", args: func(id string) []string {
			return append([]string{"approvals", "deny", id, "--reason", "not in a freeze"}, conn(bob)...)
		}, want: []string{"denied {id}"}, state: approval.StateDenied},
		{name: "deny without reason", args: func(id string) []string { return append([]string{"approvals", "deny", id}, conn(bob)...) },
			err: true, want: []string{"--reason is required"}, state: approval.StatePending},
		{name: "bad token", args: func(id string) []string { return append([]string{"approvals", "approve", id}, conn("x.y.z")...) },
			err: true, want: []string{"refused the token", "401 invalid_token"}, state: approval.StatePending},
		{name: "no admin url", args: func(string) []string {
			return []string{"approvals", "list", "--admin-url", "", "--token", bob}
		}, err: true, want: []string{"no admin URL: set CUSTOS_ADMIN_URL or pass --admin-url"}},
		{name: "bad admin url", args: func(string) []string {
			return []string{"approvals", "list", "--admin-url", "localhost:9090", "--token", bob}
		}, err: true, want: []string{"is not http(s)://host:port"}},
		{name: "no token", args: func(string) []string {
			return []string{"approvals", "list", "--admin-url", e.url, "--token", ""}
		}, err: true, want: []string{"no token: set CUSTOS_TOKEN or pass --token"}},
		{name: "unreachable", args: func(string) []string {
			return []string{"approvals", "list", "--admin-url", "http://127.0.0.1:1", "--token", bob}
		}, err: true, want: []string{"approvals list:", "connection refused"}},
		{name: "unknown command", args: func(string) []string { return []string{"approvals", "frob"} },
			err: true, want: []string{`unknown command "frob"`}},
		{name: "no command", args: func(string) []string { return []string{"approvals"} },
			err: true, want: []string{"a command is required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := e.park(t, tc.quorum)
			out, _, err := runCLI(tc.args(id)...)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v; out:\n%s", err, tc.err, out)
			}
			got := out
			if tc.err {
				got = err.Error()
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "{id}", id); !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, got)
				}
			}
			for _, a := range tc.absent {
				if a = strings.ReplaceAll(a, "{id}", id); strings.Contains(got, a) {
					t.Errorf("output holds %q:\n%s", a, got)
				}
			}
			if tc.state != "" {
				r, err := e.svc.Get(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if r.State != tc.state {
					t.Errorf("state %s, want %s", r.State, tc.state)
				}
			}
		})
	}
}

func TestApprovalsListJSON(t *testing.T) {
	t.Parallel()
	e := newApprovalsEnv(t)
	bob := e.token(t, "bob", "dba")
	out, _, err := runCLI("approvals", "list", "--json", "--admin-url", e.url, "--token", bob)
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty list: %q %v", out, err)
	}
	ids := map[string]bool{e.park(t, 1): true, e.park(t, 1): true}
	out, _, err = runCLI("approvals", "list", "--json", "--admin-url", e.url, "--token", bob)
	if err != nil {
		t.Fatal(err)
	}
	var list []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(list) != 2 || !ids[list[0].ID] || !ids[list[1].ID] || list[0].State != "pending" {
		t.Errorf("list %+v, want %v", list, ids)
	}
	// The ids approve through the CLI.
	if _, _, err := runCLI("approvals", "approve", list[0].ID, "--admin-url", e.url, "--token", bob); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI("approvals", "list", "--json", "--state", "approved", "--admin-url", e.url, "--token", bob)
	if err != nil || !strings.Contains(out, `"id": "`+list[0].ID+`"`) || strings.Contains(out, list[1].ID) {
		t.Errorf("approved list: %v\n%s", err, out)
	}
	out, _, err = runCLI("approvals", "list", "--admin-url", e.url, "--token", bob, "--state", "withdrawn")
	if err != nil || strings.TrimSpace(out) != "no withdrawn requests" {
		t.Errorf("empty text list: %q %v", out, err)
	}
}

// TestApprovalsEnv reads the admin URL and token from the environment;
// flags override them. Not parallel: it sets environment variables.
func TestApprovalsEnv(t *testing.T) {
	e := newApprovalsEnv(t)
	id := e.park(t, 1)
	t.Setenv("CUSTOS_ADMIN_URL", e.url)
	t.Setenv("CUSTOS_TOKEN", e.token(t, "bob", "dba"))
	out, _, err := runCLI("approvals", "list")
	if err != nil || !strings.Contains(out, id) {
		t.Fatalf("list from env: %v\n%s", err, out)
	}
	// --token overrides: dave may not see the dba group's requests.
	out, _, err = runCLI("approvals", "list", "--token", e.token(t, "dave", "agents"))
	if err != nil || strings.Contains(out, id) {
		t.Fatalf("list with --token: %v\n%s", err, out)
	}
	// --admin-url overrides.
	if _, _, err := runCLI("approvals", "list", "--admin-url", "http://127.0.0.1:1"); err == nil {
		t.Fatal("--admin-url did not override CUSTOS_ADMIN_URL")
	}
	if out, _, err := runCLI("approvals", "approve", id); err != nil || !strings.Contains(out, "approved "+id) {
		t.Fatalf("approve from env: %v\n%s", err, out)
	}
}
