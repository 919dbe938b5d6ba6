package extproc_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/mask"
)

// checkRequest is an allowed GET as Envoy's HTTP ext_authz filter sends it.
func checkRequest(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: peer("10.0.0.9", 53122, ""),
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "GET", Path: "/v1/cards/42?expand=holder", Host: upstreamHost, Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":method": "GET", ":path": "/v1/cards/42?expand=holder", ":authority": upstreamHost, ":scheme": "http",
				"authorization": "Bearer " + tok, "accept": "application/json", "user-agent": "bench/1",
				"x-request-id": "8d1c2a0e-5b1f-4c55-9a7c-3f1f4c7d9e21",
			},
		}},
		ContextExtensions: paymentsRoute().ext,
	}}
}

// BenchmarkCheck measures an allowed HTTP Check over gRPC on loopback:
// token verification, policy and the reply.
func BenchmarkCheck(b *testing.B) {
	e := newEnv(b, envOptions{})
	req := checkRequest(e.token(b, "alice", "agents"))
	ctx := context.Background()
	check := func() {
		resp, err := e.authz.Check(ctx, req)
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			b.Fatalf("check: %v %v", resp, err)
		}
	}
	check() // discovery, JWKS
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			check()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				check()
			}
		})
	})
}

// BenchmarkCheckAudited compares a Check with a good token against one
// with a bad token, recorded in a real audit journal (fsynced) as custos
// serve does, refused tokens through the failure aggregator: the same bad
// token again and again (a client retrying, or a flood replaying one
// token), a new bad signature each time, a malformed token; then without
// the aggregator (one fsynced record per refusal, which the client waits
// for) and without a journal. jwks/op is how many times the issuer's
// JWKS was fetched per Check.
func BenchmarkCheckAudited(b *testing.B) {
	j, err := audit.Open(audit.Options{DataDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	agg := audit.NewAuthFailures(j, audit.AuthFailureOptions{})
	b.Cleanup(func() {
		_ = agg.Close(context.Background())
		_ = j.Close(context.Background())
	})
	audited := newEnv(b, envOptions{audit: j, authFailures: agg})
	each := newEnv(b, envOptions{audit: j})
	plain := newEnv(b, envOptions{})
	ctx := context.Background()
	check := func(b *testing.B, e *env, tok string, want codes.Code) {
		resp, err := e.authz.Check(ctx, checkRequest(tok))
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != want {
			b.Fatalf("check: %v %v", resp, err)
		}
	}
	good := audited.token(b, "alice", "agents")
	check(b, audited, good, codes.OK) // discovery, JWKS
	plainGood := plain.token(b, "alice", "agents")
	check(b, plain, plainGood, codes.OK)
	eachGood := each.token(b, "alice", "agents")
	check(b, each, eachGood, codes.OK)
	bad := tampered(b, good)
	var distinct atomic.Int64 // never the same token twice, whatever runs the loop again
	for _, tc := range []struct {
		name  string
		e     *env
		token func(i int) string
		want  codes.Code
	}{
		{"good", audited, func(int) string { return good }, codes.OK},
		{"bad_signature_same", audited, func(int) string { return bad }, codes.Unauthenticated},
		{"bad_signature_distinct", audited, func(int) string { return tamperedAs(b, good, "root"+strconv.FormatInt(distinct.Add(1), 10)) }, codes.Unauthenticated},
		{"malformed_same", audited, func(int) string { return "not-a-jwt" }, codes.Unauthenticated},
		{"bad_signature_same_record_each", each, func(int) string { return tampered(b, eachGood) }, codes.Unauthenticated},
		{"bad_signature_distinct_record_each", each, func(int) string { return tamperedAs(b, eachGood, "root"+strconv.FormatInt(distinct.Add(1), 10)) }, codes.Unauthenticated},
		{"malformed_same_record_each", each, func(int) string { return "not-a-jwt" }, codes.Unauthenticated},
		{"malformed_same_no_audit", plain, func(int) string { return "not-a-jwt" }, codes.Unauthenticated},
		{"bad_signature_same_no_audit", plain, func(int) string { return tampered(b, plainGood) }, codes.Unauthenticated},
	} {
		b.Run(tc.name, func(b *testing.B) {
			fetches := tc.e.jwksFetches.Load()
			i := 0
			for b.Loop() {
				check(b, tc.e, tc.token(i), tc.want)
				i++
			}
			b.ReportMetric(float64(tc.e.jwksFetches.Load()-fetches)/float64(i), "jwks/op")
		})
	}
}

// BenchmarkMaskBody measures body masking in MB/s of the plain body.
func BenchmarkMaskBody(b *testing.B) {
	m, err := mask.New(mask.Options{})
	if err != nil {
		b.Fatal(err)
	}
	paths := map[string]string{"$..pan": "last4", "$..cvv": "drop", "$..track_data": "drop"}
	cards := bigBody(1 << 20)
	clean := []byte(`[` + string(slices.Repeat([]byte(`{"id":123456,"status":"settled","amount":"1999.00","currency":"EUR","memo":"invoice 2024-05-17"},`), 10_000)) + `{}]`)
	text := slices.Repeat([]byte("2024-05-17 12:00:01 charge 1999 EUR card 4242424242424242 ok\n"), 16_000)
	for _, tc := range []struct {
		name, ct, ce string
		plain        []byte
	}{
		{"json_cards_1MB", "application/json", "", cards},
		{"json_clean_1MB", "application/json", "", clean},
		{"text_cards_1MB", "text/plain", "", text},
		{"json_cards_1MB_gzip", "application/json", "gzip", cards},
	} {
		body := tc.plain
		if tc.ce == "gzip" {
			body = gz(b, tc.plain)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.plain)))
			for b.Loop() {
				if _, _, err := extproc.MaskBody(m, body, tc.ct, tc.ce, paths, true, "", extproc.DefaultMaxBodyBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCheckLoad is the load run: Check over gRPC at a fixed rate
// (CUSTOS_LOAD_RPS, default 2000) for CUSTOS_LOAD_SECONDS (default 10),
// reporting p50 and p99 latency, then the most checks per second 32
// concurrent callers get. It runs only when CUSTOS_LOAD is set:
//
//	CUSTOS_LOAD=1 go test -run TestCheckLoad -v ./extproc/
func TestCheckLoad(t *testing.T) {
	if os.Getenv("CUSTOS_LOAD") == "" {
		t.Skip("set CUSTOS_LOAD=1 to run the load test")
	}
	rps := envInt(t, "CUSTOS_LOAD_RPS", 2000)
	secs := envInt(t, "CUSTOS_LOAD_SECONDS", 10)
	e := newEnv(t, envOptions{})
	req := checkRequest(e.token(t, "alice", "agents"))
	ctx := context.Background()
	check := func() (time.Duration, bool) {
		start := time.Now()
		resp, err := e.authz.Check(ctx, req)
		return time.Since(start), err == nil && codes.Code(resp.GetStatus().GetCode()) == codes.OK
	}
	for range 200 { // warm up: discovery, JWKS, connections
		check()
	}

	// Fixed rate: call i is due at start + i/rps; 128 workers take the
	// due times in order, and a call's latency counts from its due time,
	// so time spent queued behind slow calls counts too.
	n := rps * secs
	lat := make([]time.Duration, n)
	due := make(chan int, n)
	for i := range n {
		due <- i
	}
	close(due)
	var failed atomic.Int64
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rps)
	start := time.Now()
	for range 128 {
		wg.Go(func() {
			for i := range due {
				at := start.Add(time.Duration(i) * interval)
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				_, ok := check()
				lat[i] = time.Since(at)
				if !ok {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	slices.Sort(lat)
	t.Logf("fixed rate: %d checks at %d/s asked, %.0f/s done in %s: p50 %s, p99 %s, max %s, failed %d",
		n, rps, float64(n)/took.Seconds(), took.Round(time.Millisecond),
		lat[n/2].Round(time.Microsecond), lat[n*99/100].Round(time.Microsecond), lat[n-1].Round(time.Microsecond), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d checks failed", failed.Load())
	}

	// Saturation: 32 callers as fast as they can.
	var done atomic.Int64
	stop := time.Now().Add(time.Duration(secs) * time.Second)
	for range 32 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if _, ok := check(); ok {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("saturation: %.0f checks/s with 32 concurrent callers", float64(done.Load())/float64(secs))
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}
