package approval

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// logCapture keeps the records a Service logs.
type logCapture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logCapture) WithGroup(string) slog.Handler            { return h }

func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

// attrs returns the attributes of each record logged with msg.
func (h *logCapture) attrs(msg string) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.recs {
		if r.Message != msg {
			continue
		}
		m := make(map[string]string)
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// createMany parks n requests on s, a few at a time, the clock moving on
// by a microsecond every sameTime requests: many share a created time, so
// paging relies on the id to break ties.
func createMany(t *testing.T, s *Service, c *clock, n, sameTime int, mods ...func(*NewRequest)) []*Request {
	t.Helper()
	out := make([]*Request, n)
	errs := make([]error, n)
	for start := 0; start < n; start += sameTime {
		var wg sync.WaitGroup
		for i := start; i < min(start+sameTime, n); i++ {
			wg.Go(func() { out[i], errs[i] = s.Request(t.Context(), newReq(mods...)) })
		}
		wg.Wait()
		for _, err := range errs[start:min(start+sameTime, n)] {
			if err != nil {
				t.Fatal(err)
			}
		}
		c.Add(time.Microsecond)
	}
	return out
}

// TestWithdrawHeld restarts replica a with more live requests than one
// page of List holds, next to replica b's and to decided ones, and
// withdraws what a held: every one of a's live requests, nothing else.
func TestWithdrawHeld(t *testing.T) {
	const note = "custos restarted: the parked client connection was lost"
	forEachStore(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		st, _ := openStore(t, b)
		c := newClock()
		a1 := newService(t, st, Options{Now: c.Now, Replica: "a", SweepInterval: time.Hour})
		sb := newService(t, st, Options{Now: c.Now, Replica: "b", SweepInterval: time.Hour})

		held := createMany(t, a1, c, MaxListLimit+205, 64)
		for i := 0; i < len(held); i += 10 { // approved but unused: live too
			held[i] = must(t)(a1.Approve(ctx, held[i].ID, bob, ""))
		}
		others := createMany(t, sb, c, 40, 8)
		for i := 0; i < len(others); i += 4 {
			others[i] = must(t)(sb.Approve(ctx, others[i].ID, bob, ""))
		}
		decided := createMany(t, a1, c, 30, 8)
		for i, r := range decided {
			switch i % 3 {
			case 0:
				decided[i] = must(t)(a1.Deny(ctx, r.ID, bob, ""))
			case 1:
				must(t)(a1.Approve(ctx, r.ID, bob, ""))
				decided[i] = must(t)(a1.Consume(ctx, r.ID, r.Hash))
			case 2:
				decided[i] = must(t)(a1.Withdraw(ctx, r.ID, "client went away"))
			}
		}
		// Due by the time a withdraws: expired instead, and not counted.
		expiring := createMany(t, a1, c, 5, 5, func(nr *NewRequest) { nr.TTL = time.Minute })
		if err := a1.Close(); err != nil {
			t.Fatal(err)
		}

		logs := &logCapture{}
		rec := &recorder{}
		a2 := newService(t, st, Options{Now: c.Now, Replica: "a", SweepInterval: time.Hour,
			OnEvent: rec.add, Logger: slog.New(logs)})
		c.Add(2 * time.Minute)
		began := time.Now()
		n, err := a2.WithdrawHeld(ctx, "a", note)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("withdrew %d requests in %v", n, time.Since(began))
		if n != len(held) {
			t.Fatalf("withdrew %d requests, want %d", n, len(held))
		}
		for _, r := range held {
			got := must(t)(st.Get(ctx, r.ID))
			if got.State != StateWithdrawn || got.Note != note || got.Version != r.Version+1 {
				t.Fatalf("held %s: %s %q version %d (was %s, version %d)", r.ID, got.State, got.Note, got.Version, r.State, r.Version)
			}
		}
		for _, r := range append(others, decided...) {
			got := must(t)(st.Get(ctx, r.ID))
			if got.State != r.State || got.Version != r.Version || got.Note != r.Note {
				t.Fatalf("%s of %s changed: %s version %d, was %s version %d", r.ID, r.Holder, got.State, got.Version, r.State, r.Version)
			}
		}
		for _, r := range expiring {
			if got := must(t)(st.Get(ctx, r.ID)); got.State != StateExpired {
				t.Fatalf("due %s: %s", r.ID, got.State)
			}
		}

		if err := a2.Close(); err != nil { // delivers the queued events
			t.Fatal(err)
		}
		want := make([]string, 0, len(held))
		for _, r := range held {
			want = append(want, r.ID)
		}
		slices.Sort(want)
		var withdrawn []string
		for _, ev := range rec.all() {
			switch ev.Type {
			case EventWithdrawn:
				if ev.Request.Note != note || ev.Actor == nil || ev.Actor.Sub != agent.Sub {
					t.Fatalf("withdrawn event: %+v", ev)
				}
				withdrawn = append(withdrawn, ev.Request.ID)
			case EventExpired:
			default:
				t.Fatalf("unexpected %s event of %s", ev.Type, ev.Request.ID)
			}
		}
		slices.Sort(withdrawn)
		if !slices.Equal(withdrawn, want) {
			t.Fatalf("%d withdrawn events for %d requests", len(withdrawn), len(want))
		}
		var logged []string
		sessions := make(map[string]bool)
		for _, a := range logs.attrs("approval request withdrawn after restart") {
			logged = append(logged, a["approval_id"])
			sessions[a["session_id"]] = true
		}
		slices.Sort(logged)
		if !slices.Equal(logged, want) || len(sessions) != 1 || !sessions["ses_1"] {
			t.Fatalf("%d withdrawals logged for %d requests, sessions %v", len(logged), len(want), sessions)
		}

		// Nothing is left to withdraw.
		a3 := newService(t, st, Options{Now: c.Now, Replica: "a", SweepInterval: time.Hour})
		if n, err := a3.WithdrawHeld(ctx, "a", note); n != 0 || err != nil {
			t.Fatalf("second withdrawal: %d, %v", n, err)
		}
	})
}

// TestListPages reads a listing a page at a time through Filter.After, with
// requests sharing a created time, and selects by holder.
func TestListPages(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		st, _ := openStore(t, b)
		c := newClock()
		sa := newService(t, st, Options{Now: c.Now, Replica: "a", SweepInterval: time.Hour})
		sb := newService(t, st, Options{Now: c.Now, Replica: "b", SweepInterval: time.Hour})
		createMany(t, sa, c, 9, 3)
		createMany(t, sb, c, 4, 3)
		all := list(t, st, Filter{})
		if len(all) != 13 {
			t.Fatalf("%d requests listed", len(all))
		}
		for _, holder := range []string{"", "a", "b"} {
			var want []string
			for _, r := range all {
				if holder == "" || r.Holder == holder {
					want = append(want, r.ID)
				}
			}
			var got []string
			f := Filter{Holder: holder, Limit: 2}
			for {
				page := list(t, sa, f)
				for _, r := range page {
					got = append(got, r.ID)
				}
				if len(got) > len(all) {
					t.Fatalf("holder %q: pages go on past %d requests: %v", holder, len(all), got)
				}
				if len(page) < f.Limit {
					break
				}
				f.After = CursorOf(&page[len(page)-1])
			}
			if !slices.Equal(got, want) {
				t.Fatalf("holder %q: pages %v, want %v", holder, got, want)
			}
		}
		// A cursor with a time only starts before that time.
		f := Filter{After: Cursor{CreatedAt: all[0].CreatedAt}, Limit: MaxListLimit}
		for _, r := range list(t, st, f) {
			if !r.CreatedAt.Before(all[0].CreatedAt) {
				t.Fatalf("%s created at %v, not before %v", r.ID, r.CreatedAt, all[0].CreatedAt)
			}
		}
	})
}

// list lists f from st.
func list(t *testing.T, st interface {
	List(context.Context, Filter) ([]Request, error)
}, f Filter) []Request {
	t.Helper()
	rs, err := st.List(t.Context(), f)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}
