package audit_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/custos-dev/custos/internal/audit"
)

// A caller opens the journal once, records each decision-bearing action
// before it answers the client, and closes the journal at shutdown.
func Example() {
	dir, _ := os.MkdirTemp("", "custos-audit-example-")
	defer os.RemoveAll(dir)
	j, err := audit.Open(audit.Options{DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	seq, err := j.Append(ctx, audit.Event{
		Name:          audit.EventStatement,
		Outcome:       audit.OutcomeSuccess,
		UserID:        "alice",
		EndUserID:     "alice@example.com",
		ClientAddress: "10.0.0.7",
		SessionID:     "ses_1",
		Resource:      "payments-db",
		DBSystem:      audit.DBSystemPostgreSQL,
		DBNamespace:   "payments",
		DBOperation:   "UPDATE",
		DBQueryText:   "UPDATE cards SET pan = $1 WHERE id = $2",
		DBCollections: []string{"public.cards"},
		Decision:      "allow",
		ApprovalID:    "apr_1",
		Rows:          1,
		Duration:      4 * time.Millisecond,
		// Bound parameters: only the fingerprints of their PANs are kept.
		PANSources: []string{"4242424242424242", "17"},
	})
	if err != nil {
		// errors.Is(err, audit.ErrUnavailable): refuse the statement.
		fmt.Println(err)
		return
	}
	fmt.Println("durable as seq", seq)
	if err := j.Close(ctx); err != nil {
		fmt.Println(err)
	}
	// Output: durable as seq 2
}
