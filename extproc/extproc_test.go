package extproc_test

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/grpc/codes"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/envoyctx"
	"github.com/custos-dev/custos/internal/mask"
)

func TestCheckAllowsGoodToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, rt := range []struct {
		name string
		rt   route
	}{
		{"route", paymentsRoute()},
		{"no route: resource from the host", route{}},
	} {
		r := e.do(rt.rt, request{method: "GET", path: "/v1/cards/42?expand=holder", header: bearer(e.token(t, "alice", "agents"))})
		requireStatus(t, r, http.StatusOK)
		got := e.up.requests()
		last := got[len(got)-1]
		if p := last.Header.Get(envoyctx.HeaderPrincipal); p != "alice" {
			t.Errorf("%s: upstream got %s %q, want alice", rt.name, envoyctx.HeaderPrincipal, p)
		}
		if id := last.Header.Get(envoyctx.HeaderDecisionID); !strings.HasPrefix(id, "dec_") {
			t.Errorf("%s: upstream got %s %q", rt.name, envoyctx.HeaderDecisionID, id)
		}
	}
}

func TestCheckRefusesBadTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	otherDir := t.TempDir()
	other, err := devissuer.Open(otherDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.SetURL("https://issuer.other.example"); err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Mint(devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}})
	if err != nil {
		t.Fatal(err)
	}
	wrongAud, err := e.issuer.Mint(devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}, Audience: "someone-else"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired := e.signed(t, map[string]any{
		"iss": e.issuerURL, "sub": "alice", "aud": devissuer.DefaultAudience, "groups": []string{"agents"},
		"iat": now.Add(-2 * time.Hour).Unix(), "nbf": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix(),
	})
	good := e.token(t, "alice", "agents")
	for _, tc := range []struct {
		name   string
		header http.Header
		code   string // error in the WWW-Authenticate challenge
	}{
		{"missing", nil, ""},
		{"not bearer", http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}}, ""},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, ""},
		{"malformed", bearer("not.a.token"), "invalid_token"},
		{"expired", bearer(expired), "invalid_token"},
		{"wrong audience", bearer(wrongAud), "invalid_token"},
		{"unknown issuer", bearer(foreign), "invalid_token"},
		{"bad signature", bearer(tampered(t, good)), "invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.up.requests())
			r := e.do(paymentsRoute(), request{method: "GET", path: "/v1/cards", header: tc.header})
			requireStatus(t, r, http.StatusUnauthorized)
			ch := r.header.Get("Www-Authenticate")
			if !strings.HasPrefix(ch, "Bearer ") {
				t.Errorf("WWW-Authenticate %q", ch)
			}
			if tc.code != "" && !strings.Contains(ch, `error="`+tc.code+`"`) {
				t.Errorf("WWW-Authenticate %q, want error=%q", ch, tc.code)
			}
			var body map[string]any
			if err := json.Unmarshal(r.body, &body); err != nil || body["reason"] == "" {
				t.Errorf("body %s: %v", r.body, err)
			}
			if bytes.Contains(r.body, []byte(good[:20])) {
				t.Error("the refusal echoes the token")
			}
			if n := len(e.up.requests()); n != before {
				t.Errorf("the upstream got %d requests", n-before)
			}
		})
	}
}

func TestCheckPolicyDenial(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name, method, reason string
		groups               []string
	}{
		{"unknown principal", "GET", "is in none of the groups", []string{"sales"}},
		{"TRACE", "TRACE", "TRACE requests are not allowed", []string{"agents"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(paymentsRoute(), request{method: tc.method, path: "/v1/cards", header: bearer(e.token(t, "mallory", tc.groups...))})
			requireStatus(t, r, http.StatusForbidden)
			var body struct {
				Reason     string `json:"reason"`
				DecisionID string `json:"decision_id"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body %s: %v", r.body, err)
			}
			if !strings.Contains(body.Reason, tc.reason) || !strings.HasPrefix(body.DecisionID, "dec_") {
				t.Errorf("body %s", r.body)
			}
			if r.header.Get("Content-Type") != "application/json" {
				t.Errorf("content-type %q", r.header.Get("Content-Type"))
			}
		})
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
}

const (
	visa   = "4242424242424242"
	master = "5555555555554444"
	amex   = "378282246310005"
)

// nestedCards is a JSON body with card data at several depths.
var nestedCards = `{"customer":{"name":"Ada","cards":[{"pan":"` + visa + `","cvv":"123","exp":"12/30"},` +
	`{"pan":"` + master + `","note":"backup card ` + amex + `"}]},"history":[["` + visa + `"]],"total":42}`

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gunzip(t testing.TB, b []byte) []byte {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func zlibBytes(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func unzlib(t testing.TB, b []byte) []byte {
	r, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// bodies are the upstream's responses by path.
func bodies(t testing.TB) http.Handler {
	big := bigBody(5 << 20)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		send := func(ct, ce string, b []byte) {
			w.Header().Set("Content-Type", ct)
			if ce != "" {
				w.Header().Set("Content-Encoding", ce)
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			_, _ = w.Write(b)
		}
		switch r.URL.Path {
		case "/nested":
			send("application/json; charset=utf-8", "", []byte(nestedCards))
		case "/problem":
			send("application/problem+json", "", []byte(`{"detail":"card `+visa+` declined"}`))
		case "/text":
			send("text/plain", "", []byte("card "+visa+" and 4242 4242 4242 4242 on file\n"))
		case "/clean":
			send("application/json", "", []byte(`{"id":42,"status":"ok"}`))
		case "/gzip":
			send("application/json", "gzip", gz(t, []byte(nestedCards)))
		case "/deflate":
			send("text/csv", "deflate", zlibBytes(t, []byte("id,pan\n1,"+visa+"\n")))
		case "/brotli":
			send("application/json", "br", []byte{0x1b, 0x02, 0x00})
		case "/invalid":
			send("application/json", "", []byte(`{"pan": "`+visa+`",`))
		case "/header":
			w.Header().Set("Location", "/v1/cards/"+visa)
			send("application/json", "", []byte(`{}`))
		case "/big":
			send("application/json", "", big)
		case "/chunked":
			w.Header().Set("Content-Type", "text/plain")
			f := w.(http.Flusher)
			for i := 0; i < 3; i++ {
				_, _ = w.Write([]byte(strings.Repeat("x", chunkSize-8) + "card 42424242"))
				f.Flush()
				_, _ = w.Write([]byte("42424242 ok "))
			}
		default:
			http.NotFound(w, r)
		}
	})
}

// bigBody is a JSON array of records with card numbers, of about n bytes.
func bigBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString("[")
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":%d,"holder":"Customer %d","pan":"%s","note":"paid with %s","cvv":"%03d"}`, i, i, visa, master, i%1000)
	}
	b.WriteString("]")
	return b.Bytes()
}

func TestResponseMasking(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{upstream: bodies(t)})
	streamed := paymentsRoute()
	streamed.mode = defaultMode()
	streamed.mode.ResponseBodyMode = filterv3.ProcessingMode_STREAMED
	old := paymentsRoute()
	old.noProtocolConfig = true
	for _, tc := range []struct {
		name   string
		rt     route
		method string
		path   string
		status int
		decode func(testing.TB, []byte) []byte
		check  func(t *testing.T, body []byte, h http.Header)
	}{
		{name: "nested json", path: "/nested", check: func(t *testing.T, b []byte, _ http.Header) {
			var doc struct {
				Customer struct {
					Cards []map[string]any `json:"cards"`
				} `json:"customer"`
				History [][]string `json:"history"`
				Total   float64    `json:"total"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			c := doc.Customer.Cards
			if len(c) != 2 || c[0]["pan"] != "************4242" || c[1]["pan"] != "************4444" {
				t.Errorf("pans: %v", c)
			}
			if _, ok := c[0]["cvv"]; ok {
				t.Errorf("cvv still there: %v", c[0])
			}
			if c[1]["note"] != "backup card ***********0005" || doc.History[0][0] != "************4242" || doc.Total != 42 {
				t.Errorf("body %s", b)
			}
		}},
		{name: "problem json", path: "/problem", check: wantOnly(`{"detail":"card ************4242 declined"}`)},
		{name: "text", path: "/text", check: wantOnly("card ************4242 and **** **** **** 4242 on file\n")},
		{name: "clean body unchanged", path: "/clean", check: wantOnly(`{"id":42,"status":"ok"}`)},
		{name: "gzip", path: "/gzip", decode: gunzip, check: func(t *testing.T, b []byte, h http.Header) {
			if h.Get("Content-Encoding") != "gzip" {
				t.Errorf("content-encoding %q", h.Get("Content-Encoding"))
			}
			if bytes.Contains(b, []byte(visa)) || !bytes.Contains(b, []byte("************4242")) || bytes.Contains(b, []byte("cvv")) {
				t.Errorf("body %s", b)
			}
		}},
		{name: "deflate", path: "/deflate", decode: unzlib, check: wantOnly("id,pan\n1,************4242\n")},
		{name: "card number in a header", path: "/header", check: func(t *testing.T, _ []byte, h http.Header) {
			if got := h.Get("Location"); got != "/v1/cards/************4242" {
				t.Errorf("location %q", got)
			}
		}},
		{name: "HEAD", method: "HEAD", path: "/nested", check: wantOnly("")},
		{name: "unsupported encoding", path: "/brotli", status: http.StatusBadGateway},
		{name: "invalid json", path: "/invalid", status: http.StatusBadGateway},
		{name: "streamed, card split between chunks", rt: streamed, path: "/chunked", check: func(t *testing.T, b []byte, _ http.Header) {
			if bytes.Contains(b, []byte("42424242 ok")) || bytes.Count(b, []byte("card ************4242 ok")) != 3 {
				t.Errorf("body ends %q", b[max(0, len(b)-200):])
			}
		}},
		{name: "streamed json", rt: streamed, path: "/nested", check: func(t *testing.T, b []byte, _ http.Header) {
			if bytes.Contains(b, []byte(visa)) || bytes.Contains(b, []byte("cvv")) {
				t.Errorf("body %s", b)
			}
		}},
		{name: "no protocol_config", rt: old, path: "/nested", check: func(t *testing.T, b []byte, _ http.Header) {
			if bytes.Contains(b, []byte(visa)) {
				t.Errorf("body %s", b)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rt := tc.rt
			if rt.ext == nil {
				rt = paymentsRoute()
			}
			method := tc.method
			if method == "" {
				method = "GET"
			}
			r := e.do(rt, request{method: method, path: tc.path, header: bearer(e.token(t, "alice", "agents"))})
			want := tc.status
			if want == 0 {
				want = http.StatusOK
			}
			requireStatus(t, r, want)
			if cl := r.header.Get("Content-Length"); cl != "" && method != "HEAD" && cl != fmt.Sprint(len(r.body)) {
				t.Errorf("content-length %s for %d bytes", cl, len(r.body))
			}
			if tc.check == nil {
				return
			}
			b := r.body
			if tc.decode != nil {
				b = tc.decode(t, b)
			}
			tc.check(t, b, r.header)
		})
	}
}

func wantOnly(want string) func(*testing.T, []byte, http.Header) {
	return func(t *testing.T, b []byte, _ http.Header) {
		t.Helper()
		if string(b) != want {
			t.Errorf("body %q, want %q", b, want)
		}
	}
}

func TestResponseMaskingFiveMegabytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{upstream: bodies(t)})
	// Envoy's default message_timeout (200 ms) with the max_message_timeout
	// custos' Envoy configuration sets: custos asks for more time to mask
	// a body this large.
	rt := paymentsRoute()
	rt.maxMessageTimeout = 15 * time.Minute
	start := time.Now()
	r := e.do(rt, request{method: "GET", path: "/big", header: bearer(e.token(t, "alice", "agents"))})
	requireStatus(t, r, http.StatusOK)
	t.Logf("5 MB body through the stand-in in %s", time.Since(start))
	if len(r.body) < 4<<20 || bytes.Contains(r.body, []byte(visa)) || bytes.Contains(r.body, []byte(master)) || bytes.Contains(r.body, []byte(`"cvv"`)) {
		t.Errorf("body of %d bytes not masked", len(r.body))
	}
	var doc []map[string]any
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc[0]["pan"] != "************4242" {
		t.Errorf("first record %v", doc[0])
	}
}

func TestParkedWrites(t *testing.T) {
	t.Parallel()
	type outcome struct {
		status int
		state  approval.State
		reason string
	}
	buffered := paymentsRoute()
	buffered.mode = defaultMode()
	buffered.mode.RequestBodyMode = filterv3.ProcessingMode_BUFFERED
	shortEnvoy := paymentsRoute()
	shortEnvoy.maxMessageTimeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name   string
		opts   envOptions
		rt     route
		decide func(t *testing.T, e *env, r *approval.Request)
		want   outcome
	}{
		{
			name: "approved",
			decide: func(t *testing.T, e *env, r *approval.Request) {
				if _, err := e.approvals.Approve(context.Background(), r.ID, e.approver(), "looks fine"); err != nil {
					t.Error(err)
				}
			},
			want: outcome{http.StatusCreated, approval.StateConsumed, ""},
		},
		{
			name: "approved, body buffered and pinned",
			rt:   buffered,
			decide: func(t *testing.T, e *env, r *approval.Request) {
				if !strings.Contains(r.Detail, "body sha256:") || !strings.Contains(r.Detail, `"pan":"************4242"`) || strings.Contains(r.Detail, visa) {
					t.Errorf("approvers see %q", r.Detail)
				}
				if _, err := e.approvals.Approve(context.Background(), r.ID, e.approver(), ""); err != nil {
					t.Error(err)
				}
			},
			want: outcome{http.StatusCreated, approval.StateConsumed, ""},
		},
		{
			name: "denied",
			decide: func(t *testing.T, e *env, r *approval.Request) {
				if _, err := e.approvals.Deny(context.Background(), r.ID, e.approver(), "not today"); err != nil {
					t.Error(err)
				}
			},
			want: outcome{http.StatusForbidden, approval.StateDenied, "denied by bob: not today"},
		},
		{
			name: "timed out: the approval expires",
			opts: envOptions{policyDir: policyCopy(t, "1s")},
			want: outcome{http.StatusForbidden, approval.StateExpired, "expired"},
		},
		{
			name: "timed out: longer than custos may hold it",
			opts: envOptions{maxMessageTimeout: time.Second},
			rt: func() route {
				rt := paymentsRoute()
				rt.maxMessageTimeout = time.Second
				return rt
			}(),
			want: outcome{http.StatusForbidden, approval.StateWithdrawn, "was not decided within"},
		},
		{
			name: "Envoy gives up first: withdrawn",
			rt:   shortEnvoy,
			want: outcome{http.StatusGatewayTimeout, approval.StateWithdrawn, ""},
		},
		{
			name: "no approval service",
			opts: envOptions{noApprovals: true},
			want: outcome{http.StatusForbidden, "", "no approval service"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			opts.upstream = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = w.Write([]byte(`{"refund":"r_1","card":"` + visa + `"}`))
			})
			e := newEnv(t, opts)
			rt := tc.rt
			if rt.ext == nil {
				rt = paymentsRoute()
			}
			var parked *approval.Request
			done := make(chan struct{})
			if e.approvals != nil {
				go func() {
					defer close(done)
					parked = e.pending(t)
					if tc.decide != nil {
						tc.decide(t, e, parked)
					}
				}()
			} else {
				close(done)
			}
			body := []byte(`{"amount":100,"pan":"` + visa + `"}`)
			h := bearer(e.token(t, "alice", "agents"))
			h.Set("Content-Type", "application/json")
			r := e.do(rt, request{method: "POST", path: "/v1/refunds?card=" + visa, header: h, body: body})
			<-done
			requireStatus(t, r, tc.want.status)
			if tc.want.reason != "" && !bytes.Contains(r.body, []byte(tc.want.reason)) {
				t.Errorf("reply %s, want %q", r.body, tc.want.reason)
			}
			ups := e.up.requests()
			if tc.want.status == http.StatusCreated {
				if len(ups) != 1 || ups[0].Header.Get(extproc.HeaderApprovalID) != parked.ID {
					t.Fatalf("upstream got %d requests", len(ups))
				}
				if !bytes.Equal(e.up.lastBody(), body) {
					t.Errorf("upstream body %s", e.up.lastBody())
				}
				if bytes.Contains(r.body, []byte(visa)) {
					t.Errorf("response not masked: %s", r.body)
				}
			} else if len(ups) != 0 {
				t.Errorf("the upstream got %d requests", len(ups))
			}
			if parked == nil {
				return
			}
			if parked.Kind != approval.KindHTTP || parked.Summary != "POST /v1/refunds" || parked.Resource != "payments-api" ||
				strings.Contains(parked.Detail, visa) || parked.Requester.Sub != "alice" {
				t.Errorf("parked request %+v", parked)
			}
			if tc.want.state == "" {
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				got, err := e.approvals.Get(context.Background(), parked.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.State == tc.want.state {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("approval %s is %s, want %s", got.ID, got.State, tc.want.state)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestReadsAreNotParked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	r := e.do(paymentsRoute(), request{method: "HEAD", path: "/v1/cards", header: bearer(e.token(t, "alice", "agents"))})
	requireStatus(t, r, http.StatusOK)
	rs, err := e.approvals.List(context.Background(), approval.Filter{})
	if err != nil || len(rs) != 0 {
		t.Errorf("approvals %v %v", rs, err)
	}
}

func TestProcessWithoutDecisionRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	rq := request{method: "GET", path: "/v1/cards", header: http.Header{}}
	r := e.process(paymentsRoute(), rq, rq.requestHeaders("r1"), &corev3.Metadata{})
	requireStatus(t, r, http.StatusForbidden)
	if r.from != "ext_proc" || len(e.up.requests()) != 0 {
		t.Errorf("reply %s; upstream got %d", r, len(e.up.requests()))
	}
}

func TestNetworkCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rego := `package custos

default decision := {"allow": false, "reasons": ["not from the office network"]}

decision := {"allow": true, "reasons": ["office network"]} if {
	input.kind == "connection"
	startswith(input.session.client_address, "10.1.")
	input.resource.name == "payments-db"
	input.principal.claims.sni == "db.payments.example"
}
`
	if err := os.WriteFile(filepath.Join(dir, "network.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	custom := newEnv(t, envOptions{policyDir: dir})
	def := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name        string
		e           *env
		client, sni string
		want        codes.Code
	}{
		{"allowed", custom, "10.1.2.3", "db.payments.example", codes.OK},
		{"denied by address", custom, "192.0.2.7", "db.payments.example", codes.PermissionDenied},
		{"denied by SNI", custom, "10.1.2.3", "other.example", codes.PermissionDenied},
		{"default policy: admitted before the token", def, "10.1.2.3", "db.payments.example", codes.OK},
		{"default policy: IPv6 client", def, "2001:db8::7", "db.payments.example", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.e.checkConnection("payments-db", tc.client, "spiffe://payments/agent", tc.sni)
			if err != nil {
				t.Fatal(err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != tc.want {
				t.Errorf("code %s (%s), want %s", got, resp.GetStatus().GetMessage(), tc.want)
			}
			if resp.GetHttpResponse() != nil {
				t.Errorf("a network check got an HTTP response: %v", resp.GetHttpResponse())
			}
			if tc.want != codes.OK && !strings.Contains(resp.GetStatus().GetMessage(), "dec_") {
				t.Errorf("denial %q names no decision", resp.GetStatus().GetMessage())
			}
		})
	}
}

func TestMaskBodyEncodings(t *testing.T) {
	t.Parallel()
	m, err := mask.New(mask.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw := []byte(`{"pan":"` + visa + `"}`)
	for _, tc := range []struct {
		name, ct, ce string
		body         []byte
		max          int
		err          bool
		unchanged    bool
	}{
		{name: "identity", ct: "application/json", body: raw, max: 1 << 20},
		{name: "x-gzip", ct: "application/json", ce: "x-gzip", body: gz(t, raw), max: 1 << 20},
		{name: "empty", ct: "application/json", body: nil, max: 1 << 20, unchanged: true},
		{name: "corrupt gzip", ct: "application/json", ce: "gzip", body: []byte("nope"), max: 1 << 20, err: true},
		{name: "gzip bomb", ct: "text/plain", ce: "gzip", body: gz(t, bytes.Repeat([]byte("0"), 1<<20)), max: 1 << 10, err: true},
		{name: "too large", ct: "text/plain", body: bytes.Repeat([]byte("a"), 2048), max: 1024, err: true},
		{name: "several codings", ct: "text/plain", ce: "gzip, gzip", body: raw, max: 1 << 20, err: true},
		{name: "no detection asked", ct: "text/plain", body: []byte("card " + visa), max: 1 << 20, unchanged: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			detect := tc.name != "no detection asked"
			out, _, err := extproc.MaskBody(m, tc.body, tc.ct, tc.ce, nil, detect, "", tc.max)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if tc.unchanged {
				if !bytes.Equal(out, tc.body) {
					t.Errorf("changed to %q", out)
				}
				return
			}
			plain := out
			if tc.ce != "" {
				plain = gunzip(t, out)
			}
			if string(plain) != `{"pan":"************4242"}` {
				t.Errorf("masked %q", plain)
			}
		})
	}
}

func TestCheckTokenCacheHonoursExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok, err := e.issuer.Mint(devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		requireStatus(t, e.do(paymentsRoute(), request{method: "GET", path: "/v1/cards", header: bearer(tok)}), http.StatusOK)
	}
	time.Sleep(3500 * time.Millisecond) // exp plus the verifier's one second of skew
	r := e.do(paymentsRoute(), request{method: "GET", path: "/v1/cards", header: bearer(tok)})
	requireStatus(t, r, http.StatusUnauthorized)
	if !strings.Contains(r.header.Get("Www-Authenticate"), "expired") {
		t.Errorf("challenge %q", r.header.Get("Www-Authenticate"))
	}
}

// recorder keeps the events it records, and passes them to a real journal
// when it has one.
type recorder struct {
	mu      sync.Mutex
	events  []audit.Event
	journal *audit.Journal
	fail    bool
}

func (r *recorder) Append(ctx context.Context, ev audit.Event) (uint64, error) {
	if r.fail {
		return 0, audit.ErrUnavailable
	}
	var seq uint64
	if r.journal != nil {
		var err error
		if seq, err = r.journal.Append(ctx, ev); err != nil {
			return 0, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return seq, nil
}

func (r *recorder) wait(t *testing.T, n int) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		evs := slices.Clone(r.events)
		r.mu.Unlock()
		if len(evs) >= n || time.Now().After(deadline) {
			return evs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAuditEvents(t *testing.T) {
	t.Parallel()
	j, err := audit.Open(audit.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close(context.Background()) })
	rec := &recorder{journal: j}
	e := newEnv(t, envOptions{upstream: bodies(t), audit: rec})
	tok := e.token(t, "alice", "agents")
	requireStatus(t, e.do(paymentsRoute(), request{method: "GET", path: "/nested?card=" + visa, header: bearer(tok)}), http.StatusOK)
	requireStatus(t, e.do(paymentsRoute(), request{method: "GET", path: "/nested"}), http.StatusUnauthorized)
	requireStatus(t, e.do(paymentsRoute(), request{method: "TRACE", path: "/nested", header: bearer(tok)}), http.StatusForbidden)
	evs := rec.wait(t, 3)
	if len(evs) != 3 {
		t.Fatalf("%d events: %+v", len(evs), evs)
	}
	byName := map[string]audit.Event{}
	for _, ev := range evs {
		byName[ev.Name+" "+string(ev.Outcome)] = ev
	}
	ok := byName[audit.EventHTTPRequest+" success"]
	if ok.UserID != "alice" || ok.HTTPStatusCode != 200 || ok.Masked < 4 || ok.Resource != "payments-api" ||
		ok.URLPath != "/nested" || ok.ClientAddress != "10.0.0.9" || ok.Decision != "allow" || !strings.HasPrefix(ok.DecisionID, "dec_") {
		t.Errorf("allowed request: %+v", ok)
	}
	if f := byName[audit.EventAuthFailed+" failure"]; f.HTTPStatusCode != 401 || f.ErrorType != "missing_token" {
		t.Errorf("auth failure: %+v", f)
	}
	if d := byName[audit.EventHTTPRequest+" denied"]; d.HTTPStatusCode != 403 || d.Decision != "deny" || d.HTTPMethod != "TRACE" {
		t.Errorf("denial: %+v", d)
	}
}

func TestAuditUnavailableWithholdsTheResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{upstream: bodies(t), audit: &recorder{fail: true}})
	r := e.do(paymentsRoute(), request{method: "GET", path: "/nested", header: bearer(e.token(t, "alice", "agents"))})
	requireStatus(t, r, http.StatusServiceUnavailable)
	if bytes.Contains(r.body, []byte("Ada")) {
		t.Errorf("body %s", r.body)
	}
}

// durabilityRecorder notes the durability each event was recorded with.
type durabilityRecorder struct {
	recorder
	durabilities []audit.Durability
}

func (r *durabilityRecorder) AppendAs(ctx context.Context, ev audit.Event, d audit.Durability) (uint64, error) {
	r.mu.Lock()
	r.durabilities = append(r.durabilities, d)
	r.mu.Unlock()
	return r.Append(ctx, ev)
}

// TestHTTPRecordDurability: a read whose response custos did not mask is
// recorded written (fsynced within the sync interval); a masked read, a
// refusal and a write are fsynced before the reply goes on.
func TestHTTPRecordDurability(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		req    request
		status int
		want   audit.Durability
	}{
		{"clean read", request{method: "GET", path: "/clean"}, http.StatusOK, audit.Written},
		{"masked read", request{method: "GET", path: "/nested"}, http.StatusOK, audit.Synced},
		{"refused", request{method: "TRACE", path: "/nested"}, http.StatusForbidden, audit.Synced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := &durabilityRecorder{}
			e := newEnv(t, envOptions{upstream: bodies(t), audit: rec})
			tc.req.header = bearer(e.token(t, "alice", "agents"))
			requireStatus(t, e.do(paymentsRoute(), tc.req), tc.status)
			rec.wait(t, 1)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.durabilities) != 1 || rec.durabilities[0] != tc.want {
				t.Errorf("durabilities %v, want [%v]", rec.durabilities, tc.want)
			}
		})
	}
}
