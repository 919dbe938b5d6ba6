package approval

import "testing"

func TestSmoke(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		st, _ := openStore(t, b)
		c := newClock()
		s := newService(t, st, Options{Now: c.Now})
		r, err := s.Request(t.Context(), newReq())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Approve(t.Context(), r.ID, bob, "ok"); err != nil {
			t.Fatal(err)
		}
		got, err := s.Wait(t.Context(), r.ID)
		if err != nil || got.State != StateApproved {
			t.Fatal(got, err)
		}
		if _, err := s.Consume(t.Context(), r.ID, r.Hash); err != nil {
			t.Fatal(err)
		}
	})
}
