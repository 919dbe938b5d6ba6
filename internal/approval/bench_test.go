package approval

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkRequestApproveConsume measures one parked statement's life on
// the embedded store: park, approve, use.
func BenchmarkRequestApproveConsume(b *testing.B) {
	st, err := OpenSQLite(filepath.Join(b.TempDir(), "approvals.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, err := NewService(context.Background(), st, Options{SweepInterval: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	nr := newReq()
	for b.Loop() {
		r, err := s.Request(ctx, nr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Approve(ctx, r.ID, bob, ""); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Consume(ctx, r.ID, nr.Hash); err != nil {
			b.Fatal(err)
		}
	}
}
