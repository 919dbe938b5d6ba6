package approval

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/pgcluster"
)

// TestPostgresOutage runs two replicas on a PostgreSQL server of the
// test's own, kills their connections, then stops the server and starts it
// again: operations fail clearly while it is down, nothing is lost, a
// parked client's Wait survives and is woken by an approval sent to the
// other replica once the server is back.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	cl := pgcluster.StartForTest(t, pgcluster.Options{})
	ctx := t.Context()
	if err := cl.CreateDatabase(ctx, "approvals"); err != nil {
		t.Fatal(err)
	}
	dsn := cl.DSN("approvals")
	pg := backends[1]
	st1, st2 := pg.open(t, dsn), pg.open(t, dsn)
	t.Cleanup(func() { _ = st1.Close(); _ = st2.Close() })
	c := newClock()
	s1 := newService(t, st1, Options{Now: c.Now, Replica: "r1", SweepInterval: fastSweep})
	s2 := newService(t, st2, Options{Now: c.Now, Replica: "r2", SweepInterval: fastSweep})

	r := must(t)(s1.Request(ctx, newReq()))
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	w := waitAsyncCtx(wctx, s1, r.ID)

	// Killed connections: the stores reconnect on the next operation.
	if err := cl.Exec(ctx, "postgres", `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = 'approvals' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if got := must(t)(s1.Get(ctx, r.ID)); got.State != StatePending {
		t.Fatalf("after killed connections: %s", got.State)
	}
	other := must(t)(s2.Request(ctx, newReq()))

	// The server goes away.
	if err := cl.Stop(); err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	defer ocancel()
	_, err := s1.Get(octx, r.ID)
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "get request "+r.ID) {
		t.Fatalf("get while the server is down: %v", err)
	}
	t.Logf("get while down: %v", err)
	if _, err := s2.Request(octx, newReq()); err == nil || errors.Is(err, ErrInvalid) {
		t.Fatalf("request while the server is down: %v", err)
	}
	_, err = s2.Approve(octx, r.ID, bob, "")
	if err == nil || errors.Is(err, ErrNotPending) || errors.Is(err, ErrNotFound) {
		t.Fatalf("approve while the server is down: %v", err)
	}
	if _, err := s2.List(octx, Filter{}); err == nil {
		t.Fatal("list while the server is down")
	}
	select {
	case res := <-w:
		t.Fatalf("wait ended during the outage: %v %v", res.r, res.err)
	case <-time.After(300 * time.Millisecond):
	}

	// Back on the same data and port.
	cl2, err := pgcluster.Start(ctx, pgcluster.Options{Dir: cl.Dir, Port: cl.Port,
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl2.Stop() })
	eventually(t, "an approval once the server is back", func() bool {
		_, err := s2.Approve(ctx, r.ID, bob, "")
		return err == nil
	})
	res := <-w
	if res.err != nil || res.r.State != StateApproved {
		t.Fatalf("wait across the outage: %v %v", res.r, res.err)
	}
	got := must(t)(s1.Consume(ctx, r.ID, r.Hash))
	if len(got.Approvals) != 1 {
		t.Fatalf("votes after the outage: %+v", got.Approvals)
	}
	if got := must(t)(s1.Get(ctx, other.ID)); got.State != StatePending {
		t.Fatalf("the other request is %s", got.State)
	}
}

// TestPostgresBadDSN fails at once, naming the store.
func TestPostgresBadDSN(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{"postgres://%zz", "postgres://u:p@127.0.0.1:1/db?connect_timeout=2"} {
		if _, err := OpenPostgres(ctx, dsn); err == nil || !strings.Contains(err.Error(), "postgres store") {
			t.Errorf("%s: %v", dsn, err)
		}
	}
}
