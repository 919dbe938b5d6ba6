package tests

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"

	"github.com/custos-dev/custos/internal/audit"
)

// TestAuthFailureFloodEvidence floods `custos dev` with refused tokens,
// through Envoy's Check (from a few sources, concurrently) and Postgres
// logins, between good requests that must all pass; after a clean stop
// the journal verifies and accounts for every refused attempt, by
// source and reason, in far fewer records than attempts.
func TestAuthFailureFloodEvidence(t *testing.T) {
	t.Parallel()
	bin := buildCustos(t, t.TempDir())
	dataDir := devDataDir(t, "custos-e2e-flood-")
	p := startDev(t, bin, dataDir)
	vars := p.waitEnv(t, dataDir)
	good := mintToken(t, bin, dataDir, "alice", "agents")
	forged := good[:strings.LastIndexByte(good, '.')] + "." + strings.Repeat("A", 86) // alice's claims, not the issuer's signature
	client := authv3.NewAuthorizationClient(dialEnvoy(t, vars, true))

	check := func(src, authorization string) codes.Code {
		h := map[string]string{}
		if authorization != "" {
			h["authorization"] = authorization
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, customersCheck(src, "", "GET", h))
		if err != nil {
			t.Errorf("Check: %v", err)
			return codes.Unknown
		}
		return codes.Code(resp.GetStatus().GetCode())
	}
	type attempt struct {
		src, authorization, reason string
		n                          int
		distinct                   bool // a new garbage token each time
	}
	flood := []attempt{
		{"10.1.0.1", "Bearer " + forged, "signature", 60, false},
		{"10.1.0.2", "Bearer " + forged, "signature", 35, false},
		{"10.1.0.2", "Bearer not-a-token", "malformed", 20, false},
		{"10.1.0.3", "Bearer not-a-token", "malformed", 15, false},
		{"10.1.0.4", "", "missing_token", 9, false},
		{"10.1.0.5", "Bearer garbage-", "malformed", 40, true},
	}
	want := map[string]int64{} // source reason -> attempts
	var wg sync.WaitGroup
	for _, a := range flood {
		want[a.src+" "+a.reason] += int64(a.n)
		wg.Go(func() {
			for i := range a.n {
				authorization := a.authorization
				if a.distinct {
					authorization += strconv.Itoa(i)
				}
				if c := check(a.src, authorization); c != codes.Unauthenticated {
					t.Errorf("%s %s: %v, want Unauthenticated", a.src, a.reason, c)
				}
			}
		})
	}
	wg.Go(func() {
		for range 30 {
			if c := check("10.1.0.1", "Bearer "+good); c != codes.OK {
				t.Errorf("good token from a flooding source: %v", c)
			}
		}
	})
	// Postgres logins with a bad token from this host.
	const pgAttempts = 12
	conn := fmt.Sprintf("host=%s port=%s dbname=%s user=alice sslmode=verify-full sslrootcert=%s",
		vars["CUSTOS_PG_HOST"], vars["CUSTOS_PG_PORT"], vars["CUSTOS_DATABASE"], vars["CUSTOS_CA_FILE"])
	wg.Go(func() {
		for range pgAttempts {
			c, err := pgx.Connect(context.Background(), conn+" password="+forged)
			if err == nil {
				_ = c.Close(context.Background())
				t.Error("a forged token logged in")
			}
		}
	})
	wg.Wait()
	c, err := pgx.Connect(context.Background(), conn+" password="+good)
	if err != nil {
		t.Fatalf("good token after the flood: %v", err)
	}
	_ = c.Close(context.Background())
	p.stop(t) // writes the pending aggregates

	if r := run(t, clientEnviron(), nil, bin, "audit", "verify", "--data-dir", dataDir); r.code != 0 {
		t.Fatalf("audit verify: %s", r)
	}
	got := map[string]int64{}
	records, firsts := 0, map[string]int{}
	for _, r := range journalRecords(t, dataDir) {
		if r.Name != audit.EventAuthFailed {
			continue
		}
		records++
		reason := attrString(&r, audit.AttrErrorType)
		if rt := attrString(&r, audit.AttrResourceType); rt == "postgres" {
			reason = "pg " + reason
		}
		n, aggregate := r.Attr(audit.AttrFailureCount)
		if !aggregate {
			src := attrString(&r, audit.AttrClientAddress)
			got[src+" "+reason]++
			firsts[src+" "+reason]++
			continue
		}
		srcs, _ := r.Attr(audit.AttrFailureSources)
		var sum int64
		for _, s := range srcs.Strings() {
			addr, cnt, _ := strings.Cut(s, "=")
			k, err := strconv.ParseInt(cnt, 10, 64)
			if err != nil || k <= 0 {
				t.Fatalf("source %q in %+v", s, r.Attrs)
			}
			got[addr+" "+reason] += k
			sum += k
		}
		if sum != n.Int() {
			t.Errorf("sources %v add up to %d, count %d", srcs.Strings(), sum, n.Int())
		}
	}
	want["127.0.0.1 pg signature"] = pgAttempts
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d attempts in the evidence, %d made", k, got[k], n)
		}
		if k == "10.1.0.5 malformed" {
			// One per token up to ten a second, the rest aggregated.
			if firsts[k] < 1 || firsts[k] > 20 {
				t.Errorf("%s: %d first-failure records for 40 distinct tokens", k, firsts[k])
			}
		} else if firsts[k] != 1 {
			t.Errorf("%s: %d first-failure records, want 1", k, firsts[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %d attempts in the evidence, none made", k, got[k])
		}
	}
	total := 0
	for _, n := range want {
		total += int(n)
	}
	t.Logf("%d refused attempts, %d records", total, records)
	if records >= total/2 {
		t.Errorf("%d records for %d refused attempts: repeats were not aggregated", records, total)
	}
}
