package approvalapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/devissuer"
)

// clearPAN is a test card number that must never leave the handler.
const (
	clearPAN  = "4242424242424242"
	maskedPAN = "************4242"
)

// testEnv is a real approval.Service on SQLite, a real OIDC issuer and the
// handler, all served by one HTTP server.
type testEnv struct {
	svc     *approval.Service
	iss     *devissuer.Issuer
	handler http.Handler
	srv     *httptest.Server
	// skew moves the verifier's clock, to make tokens expire.
	skew atomic.Int64
}

func newEnv(t *testing.T, opts Options) *testEnv {
	t.Helper()
	dir := t.TempDir()
	store, err := approval.OpenSQLite(filepath.Join(dir, "approvals.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	svc, err := approval.NewService(context.Background(), store, approval.Options{SweepInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	iss, err := devissuer.Open(filepath.Join(dir, "issuer"))
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{svc: svc, iss: iss}
	mux := http.NewServeMux()
	mux.Handle("/oidc/", http.StripPrefix("/oidc", iss.Handler()))
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	if err := iss.SetURL(e.srv.URL + "/oidc"); err != nil {
		t.Fatal(err)
	}
	v, err := authn.NewVerifier(context.Background(),
		[]authn.Issuer{{URL: iss.URL(), Audiences: []string{devissuer.DefaultAudience}, Algorithms: []string{"ES256"}}},
		authn.WithNow(func() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) }))
	if err != nil {
		t.Fatal(err)
	}
	e.handler = NewHandler(svc, v, opts)
	for _, p := range Patterns {
		mux.Handle(p, e.handler)
	}
	return e
}

// The people of the tests.
var (
	alice = devissuer.MintRequest{Subject: "alice", Groups: []string{"agents", "dba"}, Act: "alice@example.com"}
	bob   = devissuer.MintRequest{Subject: "bob", Groups: []string{"dba"}}
	carol = devissuer.MintRequest{Subject: "carol", Groups: []string{"dba", "security"}}
	dave  = devissuer.MintRequest{Subject: "dave", Groups: []string{"agents"}}
	// agent7 is an agent in the dba group acting for alice.
	agent7 = devissuer.MintRequest{Subject: "agent-7", Groups: []string{"dba"}, Act: "alice"}
)

func (e *testEnv) token(t *testing.T, req devissuer.MintRequest) string {
	t.Helper()
	tok, err := e.iss.Mint(req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// park parks a write by alice and returns its id.
func (e *testEnv) park(t *testing.T, quorum int, ttl time.Duration) string {
	t.Helper()
	req, err := e.svc.Request(context.Background(), approval.NewRequest{
		Hash:           "pin-" + t.Name(),
		Requester:      approval.Principal{Sub: "alice", Iss: e.iss.URL(), Groups: []string{"agents", "dba"}, Act: "alice@example.com"},
		Resource:       "payments-db",
		Kind:           approval.KindSQL,
		Summary:        "UPDATE cards SET holder = $1 WHERE pan = $2",
		Detail:         "UPDATE cards SET holder = 'Ada' WHERE pan = '" + clearPAN + "'",
		Flags:          []string{"writes_cde"},
		Reasons:        []string{"writes to public.cards need approval from dba"},
		DecisionID:     "dec-1",
		SessionID:      "sess-1",
		ApproverGroups: []string{"dba"},
		Quorum:         quorum,
		TTL:            ttl,
	})
	if err != nil {
		t.Fatal(err)
	}
	return req.ID
}

func (e *testEnv) state(t *testing.T, id string) *approval.Request {
	t.Helper()
	r, err := e.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
