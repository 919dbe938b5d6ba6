package main

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos-dev/custos/internal/audit"
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
		Operation: "SELECT", Fingerprint: "a1b2c3d4e5f60718", Collections: []string{"public.pgbench_accounts"}, ReadOnly: true,
		Decision: &policy.Decision{ID: fmt.Sprintf("dec_%024d", i), Allow: true, PolicyVersion: "sha256:0123456789abcdef",
			Reasons: []string{"agents may read"}},
		Outcome: pgfilter.StatementSucceeded, Rows: 1,
		Columns: []string{"abalance"}, ResultRows: []string{`["0"]`},
	}
}

// journalRecorder is the recorder pgfilter makes of a's journal (the
// options of a.pgfilterAudit), on j instead when j is not nil.
func journalRecorder(a *auditor, j pgfilter.AuditRecorder) *pgfilter.JournalRecorder {
	var o pgfilter.Options
	a.pgfilterAudit(&o)
	if j != nil {
		o.Audit = j
	}
	return pgfilter.NewJournalRecorder(o)
}

// pendingJournal is a journal that keeps the last record queued, so that
// a test can wait for that record's position.
type pendingJournal struct {
	*audit.Journal
	last *audit.Pending
}

func (j *pendingJournal) EnqueueAs(ctx context.Context, t *audit.Template, ev audit.Event, d audit.Durability) *audit.Pending {
	j.last = j.Journal.EnqueueAs(ctx, t, ev, d)
	return j.last
}

// BenchmarkStatementRecord is the audit cost of one statement on the
// session's path: the record built, encoded and written (Record), then
// waited for (Wait), as pgfilter does before the client sees the
// completion. sync=0 fsyncs each group commit; sync=10ms writes a plain
// read's record and fsyncs later, and fsyncs a masked read's first.
func BenchmarkStatementRecord(b *testing.B) {
	for _, tc := range []struct {
		sync   time.Duration
		masked int64
	}{{0, 0}, {10 * time.Millisecond, 0}, {10 * time.Millisecond, 1}} {
		sync := tc.sync
		b.Run(fmt.Sprintf("sync=%s/masked=%d", sync, tc.masked), func(b *testing.B) {
			cfg := &config.Config{DataDir: b.TempDir()}
			cfg.Audit.SyncInterval = &sync
			cfg.ApplyDefaults()
			a, err := openAuditor(context.Background(), cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func(string) string { return "" })
			if err != nil {
				b.Fatal(err)
			}
			defer a.close()
			res := &config.Resource{Name: "payments-db", Database: "payments", Labels: map[string]string{"pci": "cde"}}
			ses := &pgfilter.Session{ID: "0123456789abcdef01234567", ClientAddr: "127.0.0.1:54321", Resource: res,
				Principal: &authn.Principal{Subject: "bench", Issuer: "http://127.0.0.1:9902/dev-oidc", Groups: []string{"agents"}, User: "bench"}}
			rec := journalRecorder(a, nil)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				ev := benchStatement(ses, i)
				ev.Masked = tc.masked
				if err := rec.Record(ev).Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStatementDurabilityByWhatItTouched: with the default sync interval, a
// plain read's record is written when Wait returns, and the record of a
// statement whose results were masked, that was refused, waited for an
// approval, is not read-only or whose decision asks for it is fsynced: the
// journal's durable position covers it.
func TestStatementDurabilityByWhatItTouched(t *testing.T) {
	t.Parallel()
	interval := time.Second // no timer fsync during the test
	cfg := &config.Config{DataDir: t.TempDir()}
	cfg.Audit.SyncInterval = &interval
	cfg.ApplyDefaults()
	a, err := openAuditor(context.Background(), cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	res := &config.Resource{Name: "payments-db", Database: "payments", Labels: map[string]string{"pci": "cde"}}
	ses := &pgfilter.Session{ID: "0123456789abcdef01234567", ClientAddr: "127.0.0.1:54321", Resource: res,
		Principal: &authn.Principal{Subject: "alice", Issuer: "http://127.0.0.1:9902/dev-oidc", Groups: []string{"agents"}, User: "alice"}}
	pj := &pendingJournal{Journal: a.j}
	rec := journalRecorder(a, pj)
	ctx := context.Background()
	record := func(ev *pgfilter.StatementEvent) uint64 {
		t.Helper()
		rec.Record(ev)
		seq, err := pj.last.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	if seq := record(benchStatement(ses, 1)); a.j.DurableSeq() >= seq {
		t.Errorf("a plain read's record (%d) was fsynced before the completion (durable %d)", seq, a.j.DurableSeq())
	}
	for name, change := range map[string]func(*pgfilter.StatementEvent){
		"masked":      func(ev *pgfilter.StatementEvent) { ev.Masked = 1 },
		"sad dropped": func(ev *pgfilter.StatementEvent) { ev.SAD = 1 },
		"refused":     func(ev *pgfilter.StatementEvent) { ev.Outcome = pgfilter.StatementDenied },
		"approved":    func(ev *pgfilter.StatementEvent) { ev.ApprovalID = "apr_1" },
		"a write":     func(ev *pgfilter.StatementEvent) { ev.ReadOnly, ev.Operation = false, "INSERT" },
		"policy asks": func(ev *pgfilter.StatementEvent) { ev.Decision.Fsync = true },
	} {
		ev := benchStatement(ses, 2)
		change(ev)
		if seq := record(ev); a.j.DurableSeq() < seq {
			t.Errorf("%s: record %d not fsynced before the completion (durable %d)", name, seq, a.j.DurableSeq())
		}
	}
}
