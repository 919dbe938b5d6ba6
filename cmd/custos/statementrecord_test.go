package main

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/pgfilter"
)

// benchStatement is a pgbench select-only statement as pgfilter reports it.
func benchStatement(ses *pgfilter.Session, i int) *pgfilter.StatementEvent {
	return &pgfilter.StatementEvent{
		Session: ses, Seq: int64(i), Start: time.Now(), Duration: 280 * time.Microsecond,
		Protocol: pgfilter.ProtocolExtended, Text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		Operation: "SELECT", Fingerprint: "a1b2c3d4e5f60718", Collections: []string{"public.pgbench_accounts"},
		Decision: &policy.Decision{ID: fmt.Sprintf("dec_%024d", i), Allow: true, PolicyVersion: "sha256:0123456789abcdef",
			Reasons: []string{"agents may read"}},
		Outcome: pgfilter.StatementSucceeded, Rows: 1,
		Columns: []string{"abalance"}, ResultRows: []string{`["0"]`},
	}
}

// BenchmarkStatementRecord is the audit cost of one statement on the
// session's path: the record built, encoded and written (Record), then
// waited for (Wait), as pgfilter does before the client sees the
// completion. sync=0 fsyncs each group commit; sync=10ms writes the
// record and fsyncs later.
func BenchmarkStatementRecord(b *testing.B) {
	for _, sync := range []time.Duration{0, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("sync=%s", sync), func(b *testing.B) {
			cfg := &config.Config{DataDir: b.TempDir()}
			cfg.Audit.SyncInterval = sync
			cfg.ApplyDefaults()
			a, err := openAuditor(context.Background(), cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func(string) string { return "" })
			if err != nil {
				b.Fatal(err)
			}
			defer a.close()
			res := &config.Resource{Name: "payments-db", Database: "payments", Labels: map[string]string{"pci": "cde"}}
			ses := &pgfilter.Session{ID: "0123456789abcdef01234567", ClientAddr: "127.0.0.1:54321", Resource: res,
				Principal: &authn.Principal{Subject: "bench", Issuer: "http://127.0.0.1:9902/dev-oidc", Groups: []string{"agents"}, User: "bench"}}
			rec := a.statements()
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if err := rec.Record(benchStatement(ses, i)).Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
