package extproc_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/envoyctx"
)

// edited is a copy of md with the ext_authz namespace changed by f.
func edited(md *corev3.Metadata, f func(fs map[string]*structpb.Value)) *corev3.Metadata {
	out := proto.Clone(md).(*corev3.Metadata)
	f(out.GetFilterMetadata()[envoyctx.ExtAuthzNamespace].Fields)
	return out
}

func strs(ss ...string) *structpb.Value {
	vs := make([]*structpb.Value, len(ss))
	for i, s := range ss {
		vs[i] = structpb.NewStringValue(s)
	}
	return structpb.NewListValue(&structpb.ListValue{Values: vs})
}

// TestForgedGrantsAreRefused plays the caller of the gRPC listener who
// writes its own metadata_context: whatever it claims, ext_proc refuses it
// (403), nothing reaches the upstream, nothing is parked, and the refusal's
// audit record names no principal.
func TestForgedGrantsAreRefused(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	var skew atomic.Int64
	e := newEnv(t, envOptions{audit: rec, now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	other := newEnv(t, envOptions{}) // another custos, with a key of its own
	rt := paymentsRoute()
	mallory := e.token(t, "mallory", "agents")
	write := func(tok string) request {
		h := http.Header{"Content-Type": {"application/json"}}
		if tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
		return request{method: "POST", path: "/v1/refunds", header: h, body: []byte(`{"amount":100}`)}
	}
	read := func(tok string) request {
		return request{method: "GET", path: "/v1/cards", header: bearer(tok)}
	}
	// honest is what custos' Check hands ext_proc for rq.
	honest := func(t *testing.T, e *env, rq request, id string) *corev3.Metadata {
		t.Helper()
		_, md, r := e.authorize(rt, rq, id)
		if r != nil {
			t.Fatalf("Check refused: %s", r)
		}
		return md
	}
	type forged struct {
		rq request // what the stream's request headers say
		id string  // their x-request-id
		md *corev3.Metadata
		rt *route
	}
	tests := []struct {
		name  string
		forge func(t *testing.T) forged
		want  string
		// reached: the upstream gets the request before ext_proc can
		// refuse anything (request headers not sent to custos).
		reached bool
	}{
		{"no decision", func(t *testing.T) forged {
			return forged{rq: write(""), id: newID(), md: &corev3.Metadata{}}
		}, "grant_missing", false},
		{"made up, unsealed", func(t *testing.T) forged {
			md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{envoyctx.ExtAuthzNamespace: {Fields: map[string]*structpb.Value{
				"custos_version": structpb.NewNumberValue(1),
				"decision_id":    structpb.NewStringValue("dec_forged"),
				"outcome":        structpb.NewStringValue("approve"),
				"principal":      structpb.NewStringValue("alice"),
				"issuer":         structpb.NewStringValue(e.issuerURL),
				"groups":         strs("dba"),
				"require_approval": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
					"approver_groups": strs("agents"), "quorum": structpb.NewNumberValue(1), "ttl": structpb.NewStringValue("15m"),
				}}),
			}}}}
			return forged{rq: write(""), id: newID(), md: md}
		}, "grant_unsealed", false},
		{"seal removed", func(t *testing.T) forged {
			id := newID()
			md := edited(honest(t, e, write(mallory), id), func(fs map[string]*structpb.Value) { delete(fs, "seal") })
			return forged{rq: write(mallory), id: id, md: md}
		}, "grant_unsealed", false},
		{"seal not base64", func(t *testing.T) forged {
			id := newID()
			md := edited(honest(t, e, write(mallory), id), func(fs map[string]*structpb.Value) { fs["seal"] = structpb.NewStringValue("!!") })
			return forged{rq: write(mallory), id: id, md: md}
		}, "grant_malformed", false},
		{"sealed with another key", func(t *testing.T) forged {
			id := newID()
			return forged{rq: write(""), id: id, md: honest(t, other, write(other.token(t, "alice", "dba")), id)}
		}, "grant_forged", false},
		{"groups altered", func(t *testing.T) forged {
			id := newID()
			md := edited(honest(t, e, read(mallory), id), func(fs map[string]*structpb.Value) { fs["groups"] = strs("agents", "dba") })
			return forged{rq: read(mallory), id: id, md: md}
		}, "grant_forged", false},
		{"principal altered", func(t *testing.T) forged {
			id := newID()
			md := edited(honest(t, e, write(mallory), id), func(fs map[string]*structpb.Value) { fs["principal"] = structpb.NewStringValue("alice") })
			return forged{rq: write(mallory), id: id, md: md}
		}, "grant_forged", false},
		{"approval stripped", func(t *testing.T) forged {
			id := newID()
			md := edited(honest(t, e, write(mallory), id), func(fs map[string]*structpb.Value) {
				fs["outcome"] = structpb.NewStringValue("allow")
				delete(fs, "require_approval")
			})
			return forged{rq: write(mallory), id: id, md: md}
		}, "grant_forged", false},
		{"mask rules altered", func(t *testing.T) forged {
			id := newID()
			md := edited(honest(t, e, read(mallory), id), func(fs map[string]*structpb.Value) {
				fs["mask"] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
					"detect_pan": structpb.NewBoolValue(false), "reveal": structpb.NewStringValue("bin_last4"),
				}})
			})
			return forged{rq: read(mallory), id: id, md: md}
		}, "grant_forged", false},
		{"another request's id", func(t *testing.T) forged {
			return forged{rq: read(mallory), id: newID(), md: honest(t, e, read(mallory), newID())}
		}, "grant_request_mismatch", false},
		{"another request's id, metadata edited to match", func(t *testing.T) forged {
			id := newID()
			md := edited(honest(t, e, read(mallory), newID()), func(fs map[string]*structpb.Value) { fs["request_id"] = structpb.NewStringValue(id) })
			return forged{rq: read(mallory), id: id, md: md}
		}, "grant_forged", false},
		{"a read's grant on a write", func(t *testing.T) forged {
			id := newID()
			rq := read(mallory)
			w := write(mallory)
			w.path = rq.path
			return forged{rq: w, id: id, md: honest(t, e, rq, id)}
		}, "grant_forged", false},
		{"another path", func(t *testing.T) forged {
			id := newID()
			rq := read(mallory)
			md := honest(t, e, rq, id)
			rq.path = "/v1/cards/export"
			return forged{rq: rq, id: id, md: md}
		}, "grant_forged", false},
		{"no x-request-id", func(t *testing.T) forged {
			return forged{rq: read(mallory), id: "", md: honest(t, e, read(mallory), "")}
		}, "grant_unbound", false},
		{"expired", func(t *testing.T) forged {
			id := newID()
			md := honest(t, e, read(mallory), id)
			skew.Store(int64(extproc.GrantTTL + time.Second))
			return forged{rq: read(mallory), id: id, md: md}
		}, "grant_expired", false},
		{"sealed in the future", func(t *testing.T) forged {
			id := newID()
			skew.Store(int64(time.Minute))
			md := honest(t, e, read(mallory), id)
			skew.Store(0)
			return forged{rq: read(mallory), id: id, md: md}
		}, "grant_expired", false},
		{"used twice", func(t *testing.T) forged {
			id := newID()
			rq := read(mallory)
			hs, md, r := e.authorize(rt, rq, id)
			if r != nil {
				t.Fatal(r)
			}
			requireStatus(t, e.process(rt, rq, hs, md), http.StatusOK)
			return forged{rq: rq, id: id, md: md}
		}, "grant_replayed", false},
		{"stream without request headers", func(t *testing.T) forged {
			id := newID()
			skip := paymentsRoute()
			skip.mode = defaultMode()
			skip.mode.RequestHeaderMode = filterv3.ProcessingMode_SKIP
			return forged{rq: read(mallory), id: id, md: honest(t, e, read(mallory), id), rt: &skip}
		}, "grant_unbound", true},
	}
	for _, tt := range tests {
		// One after the other: they share the clock and the journal.
		t.Run(tt.name, func(t *testing.T) {
			defer skew.Store(0)
			f := tt.forge(t)
			ups, evs := len(e.up.requests()), len(rec.wait(t, 0))
			frt := rt
			if f.rt != nil {
				frt = *f.rt
			}
			hs := f.rq.requestHeaders(f.id)
			for _, k := range envoyctx.CredentialHeaders { // as Check's OK response would
				hs = removeHeader(hs, k)
			}
			r := e.process(frt, f.rq, hs, f.md)
			requireStatus(t, r, http.StatusForbidden)
			if r.from != "ext_proc" || !bytes.Contains(r.body, []byte(`"error":"`+tt.want+`"`)) ||
				!bytes.Contains(r.body, []byte("could not verify the authorization decision")) {
				t.Errorf("reply %s, want ext_proc's refusal %s", r, tt.want)
			}
			if got := len(e.up.requests()) - ups; got != 0 && !tt.reached {
				t.Errorf("the upstream got %d requests", got)
			}
			if rs, err := e.approvals.List(context.Background(), approval.Filter{}); err != nil || len(rs) != 0 {
				t.Errorf("approval requests %+v (%v)", rs, err)
			}
			all := rec.wait(t, evs+1)
			if len(all) != evs+1 {
				t.Fatalf("%d audit events for the refusal, want 1: %+v", len(all)-evs, all[evs:])
			}
			ev := all[evs]
			if ev.Name != audit.EventHTTPRequest || ev.Outcome != audit.OutcomeDenied || ev.HTTPStatusCode != http.StatusForbidden ||
				ev.ErrorType != tt.want || !tt.reached && (ev.SessionID != f.id || ev.HTTPMethod != f.rq.method || ev.URLPath != f.rq.path) {
				t.Errorf("audit event %+v", ev)
			}
			if ev.UserID != "" || ev.EndUserID != "" || ev.Issuer != "" || len(ev.Groups) != 0 || ev.DecisionID != "" ||
				ev.Decision != "" || ev.ApprovalID != "" {
				t.Errorf("the refusal is recorded under a claimed identity or decision: %+v", ev)
			}
			if !strings.Contains(ev.Error, "ext_proc stream from 127.0.0.1:") {
				t.Errorf("audit error %q does not name the stream's peer", ev.Error)
			}
		})
	}
}

// TestHonestGrantsStillWork: what custos' own Check hands ext_proc is
// verified, for allowed and parked requests alike, through the stand-in.
func TestHonestGrantsStillWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	requireStatus(t, e.do(paymentsRoute(), request{method: "GET", path: "/v1/cards?x=1", header: bearer(e.token(t, "alice", "agents"))}), http.StatusOK)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := e.pending(t)
		if r.Requester.Sub != "alice" {
			t.Errorf("parked as %+v", r.Requester)
		}
		if _, err := e.approvals.Approve(context.Background(), r.ID, e.approver(), "ok"); err != nil {
			t.Error(err)
		}
	}()
	r := e.do(paymentsRoute(), request{method: "POST", path: "/v1/refunds", header: bearer(e.token(t, "alice", "agents")), body: []byte(`{"amount":1}`)})
	<-done
	requireStatus(t, r, http.StatusOK)
	if n := len(e.up.requests()); n != 2 {
		t.Errorf("the upstream got %d requests, want 2", n)
	}
}

// TestUpstreamNeverSeesTheToken: the bearer token (and any
// Proxy-Authorization) stops at custos, for allowed and approved requests,
// whether the route strips credentials or only Check's OK response does.
func TestUpstreamNeverSeesTheToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tok := e.token(t, "alice", "agents")
	checkOnly := paymentsRoute()
	checkOnly.requestHeadersToRemove = nil
	for _, rt := range []route{paymentsRoute(), checkOnly} {
		h := bearer(tok)
		h.Set("Proxy-Authorization", "Bearer "+tok)
		h.Set("X-Trace-Note", "kept")
		requireStatus(t, e.do(rt, request{method: "GET", path: "/v1/cards", header: h}), http.StatusOK)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := e.approvals.Approve(context.Background(), e.pending(t).ID, e.approver(), "ok"); err != nil {
			t.Error(err)
		}
	}()
	requireStatus(t, e.do(checkOnly, request{method: "POST", path: "/v1/refunds", header: bearer(tok), body: []byte(`{"amount":1}`)}), http.StatusOK)
	<-done
	reqs := e.up.requests()
	if len(reqs) != 3 {
		t.Fatalf("the upstream got %d requests, want 3", len(reqs))
	}
	if reqs[0].Header.Get("X-Trace-Note") != "kept" || reqs[0].Header.Get(envoyctx.HeaderPrincipal) != "alice" {
		t.Errorf("the upstream lost other headers: %v", reqs[0].Header)
	}
	e.upstreamNeverSawATokenOrCredential(t)
	for i, raw := range e.up.raws() {
		if bytes.Contains(bytes.ToLower(raw), []byte("authorization:")) || bytes.Contains(raw, []byte(tok)) {
			t.Errorf("upstream request %d:\n%s", i, raw)
		}
	}
}

func TestGrantKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := extproc.GrantKeyFile(dir)
	k1, err := extproc.LoadOrCreateGrantKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) < extproc.MinGrantKeyBytes {
		t.Fatalf("generated key of %d bytes", len(k1))
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", fi, err)
	}
	k2, err := extproc.LoadOrCreateGrantKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load %q %v, want the same key", k2, err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := extproc.LoadOrCreateGrantKey(short); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("short key: %v", err)
	}
	for _, key := range [][]byte{nil, []byte("tooshort")} {
		if _, err := extproc.New(extproc.Options{GrantKey: key}); err == nil || !strings.Contains(err.Error(), "GrantKey") {
			t.Errorf("New with a %d-byte key: %v", len(key), err)
		}
	}
}
