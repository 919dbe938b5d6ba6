package pgfilter_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// BenchmarkSessionOpen measures a session's whole life with nothing in it:
// the client's TLS handshake and token, custos' upstream login (TLS and
// SCRAM to a PostgreSQL backend started for it) and the close, as a pool
// reconnecting or pgbench -C pays it. What one principal may spend of it
// is bounded by sessions.open_rate.
func BenchmarkSessionOpen(b *testing.B) {
	env := pgfiltertest.Start(b, pgfiltertest.Options{})
	cfg, err := pgx.ParseConfig(env.ConnString("alice", env.Token(b, "alice", "agents")))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
