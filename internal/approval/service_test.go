package approval

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// More people: agents acting for bob and for alice, a dba of another
// issuer who shares the agent's subject, and more dbas for races.
var (
	bobsAgent   = Principal{Sub: "agent-9", Iss: "https://idp.example", Groups: []string{"dba"}, Act: "bob@example.com"}
	alicesAgent = Principal{Sub: "agent-8", Iss: "https://idp.example", Groups: []string{"dba"}, Act: "alice@example.com"}
	otherAgent7 = Principal{Sub: "agent-7", Iss: "https://other-idp.example", Groups: []string{"dba"}}
	erin        = Principal{Sub: "erin@example.com", Iss: "https://idp.example", Groups: []string{"dba"}}
	frank       = Principal{Sub: "frank@example.com", Iss: "https://idp.example", Groups: []string{"dba"}}
	nobody      = Principal{Sub: "", Iss: "https://idp.example", Groups: []string{"dba"}}
	groupless   = Principal{Sub: "gina@example.com", Iss: "https://idp.example"}
)

// env is one Service on a fresh store with a fake clock and an event
// recorder.
type env struct {
	b     backend
	loc   string
	st    Store
	svc   *Service
	clock *clock
	rec   *recorder
}

const fastSweep = 20 * time.Millisecond

func newEnv(t *testing.T, b backend) *env {
	t.Helper()
	st, loc := openStore(t, b)
	e := &env{b: b, loc: loc, st: st, clock: newClock(), rec: &recorder{}}
	e.svc = newService(t, st, Options{Now: e.clock.Now, OnEvent: e.rec.add, SweepInterval: fastSweep, Replica: "r1"})
	return e
}

// state reads the stored state of id, bypassing any Service.
func (e *env) state(t *testing.T, id string) State {
	t.Helper()
	r, err := e.st.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r.State
}

// eventually polls cond for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// step is one operation of a transition test.
type step struct {
	op    string        // approve, deny, withdraw, consume, advance
	by    Principal     // approve, deny
	hash  string        // consume: "" is the request's own hash
	d     time.Duration // advance
	want  []error       // every one must match; none: success
	state State         // the stored state after the step
}

func approveBy(p Principal, state State, want ...error) step {
	return step{op: "approve", by: p, state: state, want: want}
}

func denyBy(p Principal, state State, want ...error) step {
	return step{op: "deny", by: p, state: state, want: want}
}

func consumeWith(hash string, state State, want ...error) step {
	return step{op: "consume", hash: hash, state: state, want: want}
}

func withdrawNow(state State, want ...error) step {
	return step{op: "withdraw", state: state, want: want}
}

func advance(d time.Duration, state State) step { return step{op: "advance", d: d, state: state} }

func TestTransitionsAndRefusals(t *testing.T) {
	byBob := func(nr *NewRequest) {
		nr.Requester = bob
		nr.Hash = PinHash(bob, nr.Resource, nr.Kind, testSQL, testParams)
	}
	byRoot := func(nr *NewRequest) {
		nr.Requester = root
		nr.Hash = PinHash(root, nr.Resource, nr.Kind, testSQL, testParams)
	}
	quorum2 := func(nr *NewRequest) { nr.Quorum = 2 }
	const ttl = time.Hour
	cases := []struct {
		name  string
		mods  []func(*NewRequest)
		steps []step
	}{
		{name: "approve then consume", steps: []step{
			approveBy(bob, StateApproved), consumeWith("", StateConsumed),
		}},
		{name: "self approval: same issuer and subject", mods: []func(*NewRequest){byBob}, steps: []step{
			approveBy(bob, StatePending, ErrSelfApproval), denyBy(bob, StatePending, ErrSelfApproval),
		}},
		{name: "self approval: admins included", mods: []func(*NewRequest){byRoot}, steps: []step{
			approveBy(root, StatePending, ErrSelfApproval), approveBy(carol, StateApproved),
		}},
		{name: "self approval: the human the agent acts for", steps: []step{
			approveBy(alice, StatePending, ErrSelfApproval), denyBy(alice, StatePending, ErrSelfApproval),
		}},
		{name: "self approval: another agent acting for the same human", steps: []step{
			approveBy(alicesAgent, StatePending, ErrSelfApproval),
		}},
		{name: "self approval: an agent acting for the requester", mods: []func(*NewRequest){byBob}, steps: []step{
			approveBy(bobsAgent, StatePending, ErrSelfApproval), approveBy(carol, StateApproved),
		}},
		{name: "same subject of another issuer is another person", steps: []step{
			approveBy(otherAgent7, StateApproved),
		}},
		{name: "approver not in group", steps: []step{
			approveBy(dave, StatePending, ErrNotApprover), denyBy(dave, StatePending, ErrNotApprover),
			approveBy(groupless, StatePending, ErrNotApprover), approveBy(nobody, StatePending, ErrNotApprover),
			approveBy(bob, StateApproved),
		}},
		{name: "other approver group", mods: []func(*NewRequest){func(nr *NewRequest) { nr.ApproverGroups = []string{"security"} }}, steps: []step{
			approveBy(bob, StatePending, ErrNotApprover), approveBy(carol, StateApproved),
		}},
		{name: "double vote", mods: []func(*NewRequest){quorum2}, steps: []step{
			approveBy(bob, StatePending), approveBy(bob, StatePending, ErrAlreadyVoted),
			approveBy(bobsAgent, StatePending, ErrAlreadyVoted),
		}},
		{name: "quorum 2 needs two distinct approvers", mods: []func(*NewRequest){quorum2}, steps: []step{
			approveBy(bob, StatePending), consumeWith("", StatePending, ErrNotApproved),
			approveBy(carol, StateApproved), consumeWith("", StateConsumed),
		}},
		{name: "deny after approve in progress", mods: []func(*NewRequest){quorum2}, steps: []step{
			approveBy(bob, StatePending), denyBy(carol, StateDenied),
			approveBy(erin, StateDenied, ErrNotPending), consumeWith("", StateDenied, ErrNotApproved),
		}},
		{name: "a voter may still deny", mods: []func(*NewRequest){quorum2}, steps: []step{
			approveBy(bob, StatePending), denyBy(bob, StateDenied),
		}},
		{name: "consume with wrong hash", steps: []step{
			approveBy(bob, StateApproved),
			consumeWith(PinHash(agent, "payments-db", KindSQL, "DELETE FROM cards", nil), StateApproved, ErrHashMismatch),
			consumeWith(PinHash(agent, "payments-db", KindSQL, testSQL, [][]byte{[]byte("Jane Doe"), []byte("43")}), StateApproved, ErrHashMismatch),
			consumeWith("", StateConsumed),
		}},
		{name: "consume twice", steps: []step{
			approveBy(bob, StateApproved), consumeWith("", StateConsumed),
			consumeWith("", StateConsumed, ErrNotApproved, ErrConsumed),
		}},
		{name: "consume pending", steps: []step{
			consumeWith("", StatePending, ErrNotApproved),
		}},
		{name: "consume after expiry", steps: []step{
			approveBy(bob, StateApproved), advance(ttl, StateExpired),
			consumeWith("", StateExpired, ErrNotApproved, ErrExpired),
		}},
		{name: "approve after expiry", steps: []step{
			advance(ttl, StateExpired),
			approveBy(bob, StateExpired, ErrNotPending, ErrExpired), denyBy(bob, StateExpired, ErrNotPending, ErrExpired),
		}},
		{name: "decide after deny", steps: []step{
			denyBy(bob, StateDenied), approveBy(carol, StateDenied, ErrNotPending),
			denyBy(carol, StateDenied, ErrNotPending), withdrawNow(StateDenied, ErrNotPending),
		}},
		{name: "decide after consume", steps: []step{
			approveBy(bob, StateApproved), consumeWith("", StateConsumed),
			approveBy(carol, StateConsumed, ErrNotPending, ErrConsumed), denyBy(carol, StateConsumed, ErrNotPending, ErrConsumed),
			withdrawNow(StateConsumed, ErrNotPending, ErrConsumed),
		}},
		{name: "decide after approval", steps: []step{
			approveBy(bob, StateApproved), approveBy(carol, StateApproved, ErrNotPending), denyBy(carol, StateApproved, ErrNotPending),
		}},
		{name: "withdraw pending", steps: []step{
			withdrawNow(StateWithdrawn), approveBy(bob, StateWithdrawn, ErrNotPending),
			consumeWith("", StateWithdrawn, ErrNotApproved), withdrawNow(StateWithdrawn, ErrNotPending),
		}},
		{name: "withdraw approved", steps: []step{
			approveBy(bob, StateApproved), withdrawNow(StateWithdrawn), consumeWith("", StateWithdrawn, ErrNotApproved),
		}},
		{name: "withdraw after expiry", steps: []step{
			advance(ttl, StateExpired), withdrawNow(StateExpired, ErrNotPending, ErrExpired),
		}},
		{name: "just before expiry", steps: []step{
			advance(ttl-time.Microsecond, StatePending), approveBy(bob, StateApproved),
			advance(time.Microsecond, StateExpired), consumeWith("", StateExpired, ErrNotApproved, ErrExpired),
		}},
	}
	forEachStore(t, func(t *testing.T, b backend) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, b)
				ctx := t.Context()
				nr := newReq(append([]func(*NewRequest){func(nr *NewRequest) { nr.TTL = ttl }}, tc.mods...)...)
				r, err := e.svc.Request(ctx, nr)
				if err != nil {
					t.Fatal(err)
				}
				if r.State != StatePending || r.Version != 1 || r.Holder != "r1" {
					t.Fatalf("new request: state %s version %d holder %q", r.State, r.Version, r.Holder)
				}
				for i, s := range tc.steps {
					var got *Request
					switch s.op {
					case "approve":
						got, err = e.svc.Approve(ctx, r.ID, s.by, "fine")
					case "deny":
						got, err = e.svc.Deny(ctx, r.ID, s.by, "no")
					case "withdraw":
						got, err = e.svc.Withdraw(ctx, r.ID, "")
					case "consume":
						h := s.hash
						if h == "" {
							h = r.Hash
						}
						got, err = e.svc.Consume(ctx, r.ID, h)
					case "advance":
						e.clock.Add(s.d)
						if s.state != StatePending {
							eventually(t, "the sweep", func() bool { return e.state(t, r.ID) == s.state })
						}
					}
					for _, w := range s.want {
						if !errors.Is(err, w) {
							t.Fatalf("step %d (%s %s): error %v, want %v", i, s.op, s.by.Sub, err, w)
						}
					}
					if len(s.want) == 0 && err != nil {
						t.Fatalf("step %d (%s %s): %v", i, s.op, s.by.Sub, err)
					}
					if len(s.want) == 0 && got != nil && got.State != s.state {
						t.Fatalf("step %d (%s %s): returned state %s, want %s", i, s.op, s.by.Sub, got.State, s.state)
					}
					if len(s.want) > 0 && got != nil {
						t.Fatalf("step %d (%s): a refusal returned a request", i, s.op)
					}
					if st := e.state(t, r.ID); st != s.state {
						t.Fatalf("step %d (%s %s): stored state %s, want %s", i, s.op, s.by.Sub, st, s.state)
					}
				}
			})
		}
	})
}

func TestUnknownRequest(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		e := newEnv(t, b)
		ctx := t.Context()
		const id = "apr_doesnotexist"
		for name, f := range map[string]func() (*Request, error){
			"get":      func() (*Request, error) { return e.svc.Get(ctx, id) },
			"approve":  func() (*Request, error) { return e.svc.Approve(ctx, id, bob, "") },
			"deny":     func() (*Request, error) { return e.svc.Deny(ctx, id, bob, "") },
			"withdraw": func() (*Request, error) { return e.svc.Withdraw(ctx, id, "") },
			"consume":  func() (*Request, error) { return e.svc.Consume(ctx, id, "x") },
			"wait":     func() (*Request, error) { return e.svc.Wait(ctx, id) },
		} {
			if _, err := f(); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: %v, want ErrNotFound", name, err)
			}
		}
	})
}

func TestRequestValidation(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*NewRequest)
	}{
		{"no hash", func(nr *NewRequest) { nr.Hash = "" }},
		{"no requester subject", func(nr *NewRequest) { nr.Requester.Sub = "" }},
		{"no requester issuer", func(nr *NewRequest) { nr.Requester.Iss = "" }},
		{"no resource", func(nr *NewRequest) { nr.Resource = "" }},
		{"unknown kind", func(nr *NewRequest) { nr.Kind = "grpc" }},
		{"no approver group", func(nr *NewRequest) { nr.ApproverGroups = nil }},
		{"only empty approver groups", func(nr *NewRequest) { nr.ApproverGroups = []string{""} }},
		{"negative quorum", func(nr *NewRequest) { nr.Quorum = -1 }},
		{"negative ttl", func(nr *NewRequest) { nr.TTL = -time.Second }},
	}
	st, _ := openStore(t, backends[0])
	svc := newService(t, st, Options{Now: newClock().Now})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := svc.Request(t.Context(), newReq(tc.mod)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		r, err := svc.Request(t.Context(), newReq(func(nr *NewRequest) {
			nr.Quorum, nr.TTL = 0, 0
			nr.ApproverGroups = []string{"dba", "", "dba", "security"}
		}))
		if err != nil {
			t.Fatal(err)
		}
		if r.Quorum != DefaultQuorum || r.ExpiresAt.Sub(r.CreatedAt) != DefaultTTL {
			t.Fatalf("quorum %d ttl %v", r.Quorum, r.ExpiresAt.Sub(r.CreatedAt))
		}
		if !slices.Equal(r.ApproverGroups, []string{"dba", "security"}) {
			t.Fatalf("approver groups %q", r.ApproverGroups)
		}
	})
}

func TestEvents(t *testing.T) {
	type want struct {
		typ   string
		actor string // actor's subject, "" for none
		state State
	}
	cases := []struct {
		name string
		run  func(t *testing.T, e *env, r *Request)
		want []want
	}{
		{"quorum 2 then consume", func(t *testing.T, e *env, r *Request) {
			must(t)(e.svc.Approve(t.Context(), r.ID, bob, "ok"))
			must(t)(e.svc.Approve(t.Context(), r.ID, carol, "ok"))
			must(t)(e.svc.Consume(t.Context(), r.ID, r.Hash))
		}, []want{
			{EventRequested, agent.Sub, StatePending},
			{EventApproved, bob.Sub, StatePending},
			{EventApproved, carol.Sub, StateApproved},
			{EventDecided, carol.Sub, StateApproved},
			{EventConsumed, agent.Sub, StateConsumed},
		}},
		{"denied", func(t *testing.T, e *env, r *Request) {
			must(t)(e.svc.Approve(t.Context(), r.ID, bob, "ok"))
			must(t)(e.svc.Deny(t.Context(), r.ID, carol, "no"))
		}, []want{
			{EventRequested, agent.Sub, StatePending},
			{EventApproved, bob.Sub, StatePending},
			{EventDenied, carol.Sub, StateDenied},
		}},
		{"refusals make no events", func(t *testing.T, e *env, r *Request) {
			for _, p := range []Principal{alice, dave, agent} {
				if _, err := e.svc.Approve(t.Context(), r.ID, p, ""); err == nil {
					t.Fatalf("%s approved", p.Sub)
				}
			}
			if _, err := e.svc.Consume(t.Context(), r.ID, r.Hash); err == nil {
				t.Fatal("consumed while pending")
			}
			must(t)(e.svc.Withdraw(t.Context(), r.ID, "client went away"))
		}, []want{
			{EventRequested, agent.Sub, StatePending},
			{EventWithdrawn, agent.Sub, StateWithdrawn},
		}},
		{"expired pending", func(t *testing.T, e *env, r *Request) {
			e.clock.Add(2 * time.Hour)
			eventually(t, "expiry", func() bool { return e.state(t, r.ID) == StateExpired })
		}, []want{
			{EventRequested, agent.Sub, StatePending},
			{EventExpired, "", StateExpired},
		}},
		{"expired approved", func(t *testing.T, e *env, r *Request) {
			must(t)(e.svc.Approve(t.Context(), r.ID, bob, ""))
			e.clock.Add(2 * time.Hour)
			eventually(t, "expiry", func() bool { return e.state(t, r.ID) == StateExpired })
		}, []want{
			{EventRequested, agent.Sub, StatePending},
			{EventApproved, bob.Sub, StateApproved},
			{EventDecided, bob.Sub, StateApproved},
			{EventExpired, "", StateExpired},
		}},
	}
	forEachStore(t, func(t *testing.T, b backend) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, b)
				quorum := 1
				if tc.name == "quorum 2 then consume" || tc.name == "denied" {
					quorum = 2
				}
				r, err := e.svc.Request(t.Context(), newReq(func(nr *NewRequest) { nr.Quorum = quorum }))
				if err != nil {
					t.Fatal(err)
				}
				tc.run(t, e, r)
				if err := e.svc.Close(); err != nil { // delivers what is queued
					t.Fatal(err)
				}
				got := e.rec.all()
				if len(got) != len(tc.want) {
					t.Fatalf("%d events, want %d: %+v", len(got), len(tc.want), got)
				}
				var lastVersion int64
				for i, w := range tc.want {
					ev := got[i]
					actor := ""
					if ev.Actor != nil {
						actor = ev.Actor.Sub
					}
					if ev.Type != w.typ || actor != w.actor || ev.Request.State != w.state {
						t.Errorf("event %d: %s by %q state %s, want %s by %q state %s", i, ev.Type, actor, ev.Request.State, w.typ, w.actor, w.state)
					}
					if ev.Request.ID != r.ID || ev.Request.Version < lastVersion || ev.At.IsZero() {
						t.Errorf("event %d: id %s version %d (after %d) at %v", i, ev.Request.ID, ev.Request.Version, lastVersion, ev.At)
					}
					lastVersion = ev.Request.Version
				}
			})
		}
	})
}

// must fails the test on a non-nil error of a (value, error) call.
func must(t *testing.T) func(*Request, error) *Request {
	return func(r *Request, err error) *Request {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
}

func TestExpiryNotes(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		e := newEnv(t, b)
		pending := must(t)(e.svc.Request(t.Context(), newReq()))
		approved := must(t)(e.svc.Request(t.Context(), newReq()))
		must(t)(e.svc.Approve(t.Context(), approved.ID, bob, ""))
		later := must(t)(e.svc.Request(t.Context(), newReq(func(nr *NewRequest) { nr.TTL = 3 * time.Hour })))
		e.clock.Add(2 * time.Hour)
		eventually(t, "expiry", func() bool {
			return e.state(t, pending.ID) == StateExpired && e.state(t, approved.ID) == StateExpired
		})
		for id, note := range map[string]string{pending.ID: noteExpiredPending, approved.ID: noteExpiredApproved} {
			if r := must(t)(e.svc.Get(t.Context(), id)); r.Note != note {
				t.Errorf("%s: note %q, want %q", id, r.Note, note)
			}
		}
		if st := e.state(t, later.ID); st != StatePending {
			t.Fatalf("request with a longer ttl is %s", st)
		}
	})
}

func TestList(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		e := newEnv(t, b)
		ctx := t.Context()
		var ids []string
		for range 5 {
			ids = append(ids, must(t)(e.svc.Request(ctx, newReq())).ID)
			e.clock.Add(time.Second)
		}
		must(t)(e.svc.Deny(ctx, ids[1], bob, ""))
		all, err := e.svc.List(ctx, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range all {
			got = append(got, r.ID)
		}
		want := slices.Clone(ids)
		slices.Reverse(want)
		if !slices.Equal(got, want) {
			t.Fatalf("list %v, want newest first %v", got, want)
		}
		pending, err := e.svc.List(ctx, Filter{State: StatePending, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != 2 || pending[0].ID != ids[4] || pending[1].ID != ids[3] {
			t.Fatalf("pending, limit 2: %v", pending)
		}
		denied, err := e.svc.List(ctx, Filter{State: StateDenied})
		if err != nil {
			t.Fatal(err)
		}
		if len(denied) != 1 || denied[0].ID != ids[1] || denied[0].Denial == nil || denied[0].Denial.By.Sub != bob.Sub {
			t.Fatalf("denied: %+v", denied)
		}
		if _, err := e.svc.List(ctx, Filter{State: "bogus"}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bogus state: %v", err)
		}
	})
}

func TestWait(t *testing.T) {
	cases := []struct {
		name   string
		decide func(t *testing.T, e *env, r *Request)
		state  State
	}{
		{"approve", func(t *testing.T, e *env, r *Request) { must(t)(e.svc.Approve(t.Context(), r.ID, bob, "")) }, StateApproved},
		{"deny", func(t *testing.T, e *env, r *Request) { must(t)(e.svc.Deny(t.Context(), r.ID, bob, "")) }, StateDenied},
		{"withdraw", func(t *testing.T, e *env, r *Request) { must(t)(e.svc.Withdraw(t.Context(), r.ID, "")) }, StateWithdrawn},
		{"expire", func(t *testing.T, e *env, r *Request) { e.clock.Add(2 * time.Hour) }, StateExpired},
	}
	forEachStore(t, func(t *testing.T, b backend) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, b)
				r := must(t)(e.svc.Request(t.Context(), newReq()))
				got := waitAsync(t, e.svc, r.ID)
				tc.decide(t, e, r)
				res := <-got
				if res.err != nil || res.r.State != tc.state {
					t.Fatalf("wait: %v %v, want %s", res.r, res.err, tc.state)
				}
			})
		}
		t.Run("already decided", func(t *testing.T) {
			e := newEnv(t, b)
			r := must(t)(e.svc.Request(t.Context(), newReq()))
			must(t)(e.svc.Approve(t.Context(), r.ID, bob, ""))
			if got := must(t)(e.svc.Wait(t.Context(), r.ID)); got.State != StateApproved {
				t.Fatalf("state %s", got.State)
			}
		})
		t.Run("context cancelled", func(t *testing.T) {
			e := newEnv(t, b)
			r := must(t)(e.svc.Request(t.Context(), newReq()))
			ctx, cancel := context.WithCancel(t.Context())
			got := waitAsyncCtx(ctx, e.svc, r.ID)
			time.Sleep(50 * time.Millisecond)
			cancel()
			res := <-got
			if !errors.Is(res.err, context.Canceled) {
				t.Fatalf("wait: %v", res.err)
			}
			if st := e.state(t, r.ID); st != StatePending {
				t.Fatalf("a cancelled wait left the request %s", st)
			}
		})
		t.Run("service closed", func(t *testing.T) {
			e := newEnv(t, b)
			r := must(t)(e.svc.Request(t.Context(), newReq()))
			got := waitAsync(t, e.svc, r.ID)
			time.Sleep(50 * time.Millisecond)
			if err := e.svc.Close(); err != nil {
				t.Fatal(err)
			}
			if res := <-got; !errors.Is(res.err, ErrClosed) {
				t.Fatalf("wait: %v", res.err)
			}
			for name, f := range map[string]func() error{
				"request": func() error { _, err := e.svc.Request(t.Context(), newReq()); return err },
				"approve": func() error { _, err := e.svc.Approve(t.Context(), r.ID, bob, ""); return err },
				"get":     func() error { _, err := e.svc.Get(t.Context(), r.ID); return err },
				"list":    func() error { _, err := e.svc.List(t.Context(), Filter{}); return err },
				"wait":    func() error { _, err := e.svc.Wait(t.Context(), r.ID); return err },
			} {
				if err := f(); !errors.Is(err, ErrClosed) {
					t.Errorf("%s after Close: %v", name, err)
				}
			}
			if st := e.state(t, r.ID); st != StatePending {
				t.Fatalf("close changed the request to %s", st)
			}
		})
	})
}

type waitResult struct {
	r   *Request
	err error
}

func waitAsync(t *testing.T, s *Service, id string) <-chan waitResult {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return waitAsyncCtx(ctx, s, id)
}

func waitAsyncCtx(ctx context.Context, s *Service, id string) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		r, err := s.Wait(ctx, id)
		ch <- waitResult{r, err}
	}()
	return ch
}

// TestCrossServiceWake parks a request on one Service and decides it on
// another with a store of its own on the same database, as a second custos
// process would: PostgreSQL wakes the waiter with NOTIFY, SQLite by
// polling. The request's expiry is an hour away and sweeps are rare, so
// only the change feed can end the wait in time.
func TestCrossServiceWake(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		st1, loc := openStore(t, b)
		st2 := b.open(t, loc)
		t.Cleanup(func() { _ = st2.Close() })
		c := newClock()
		s1 := newService(t, st1, Options{Now: c.Now, Replica: "r1", SweepInterval: time.Hour})
		s2 := newService(t, st2, Options{Now: c.Now, Replica: "r2", SweepInterval: time.Hour})
		for _, decide := range []string{"approve", "deny", "withdraw"} {
			r := must(t)(s1.Request(t.Context(), newReq()))
			got := waitAsync(t, s1, r.ID)
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			switch decide {
			case "approve":
				must(t)(s2.Approve(t.Context(), r.ID, bob, ""))
			case "deny":
				must(t)(s2.Deny(t.Context(), r.ID, bob, ""))
			case "withdraw":
				must(t)(s2.Withdraw(t.Context(), r.ID, ""))
			}
			res := <-got
			if res.err != nil || res.r.State == StatePending {
				t.Fatalf("%s: wait %v %v", decide, res.r, res.err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("%s: woken after %v", decide, d)
			}
		}
		// The approval given on r2 is used on r1, where the client waits.
		r := must(t)(s1.Request(t.Context(), newReq()))
		must(t)(s2.Approve(t.Context(), r.ID, bob, ""))
		must(t)(s1.Consume(t.Context(), r.ID, r.Hash))
		if _, err := s2.Consume(t.Context(), r.ID, r.Hash); !errors.Is(err, ErrConsumed) {
			t.Fatalf("second consume on the other replica: %v", err)
		}
	})
}

// TestConcurrentApprovals races approvers on two Services (two stores on
// one database) for a quorum of 2: exactly two distinct votes count, the
// request is approved once, and each Service reports only its own
// commits.
func TestConcurrentApprovals(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		st1, loc := openStore(t, b)
		st2 := b.open(t, loc)
		t.Cleanup(func() { _ = st2.Close() })
		c := newClock()
		rec1, rec2 := &recorder{}, &recorder{}
		s1 := newService(t, st1, Options{Now: c.Now, OnEvent: rec1.add, SweepInterval: time.Hour})
		s2 := newService(t, st2, Options{Now: c.Now, OnEvent: rec2.add, SweepInterval: time.Hour})
		const rounds = 5
		for range rounds {
			r := must(t)(s1.Request(t.Context(), newReq(func(nr *NewRequest) { nr.Quorum = 2 })))
			var wg sync.WaitGroup
			var mu sync.Mutex
			ok := 0
			for _, p := range []Principal{bob, carol, erin, frank} {
				for _, s := range []*Service{s1, s2} {
					wg.Go(func() {
						_, err := s.Approve(t.Context(), r.ID, p, "")
						switch {
						case err == nil:
							mu.Lock()
							ok++
							mu.Unlock()
						case errors.Is(err, ErrAlreadyVoted), errors.Is(err, ErrNotPending):
						default:
							t.Errorf("approve by %s: %v", p.Sub, err)
						}
					})
				}
			}
			wg.Wait()
			got := must(t)(s1.Get(t.Context(), r.ID))
			if ok != 2 || got.State != StateApproved || len(got.Approvals) != 2 ||
				samePerson(got.Approvals[0].By, got.Approvals[1].By) {
				t.Fatalf("%d approvals succeeded; stored %s with votes %+v", ok, got.State, got.Approvals)
			}
			if got.Version != 3 {
				t.Fatalf("version %d after two votes, want 3", got.Version)
			}
		}
		if err := s1.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
		count := func(typ string) int {
			n := 0
			for _, ev := range append(rec1.all(), rec2.all()...) {
				if ev.Type == typ {
					n++
				}
			}
			return n
		}
		if count(EventDecided) != rounds || count(EventApproved) != 2*rounds || count(EventRequested) != rounds {
			t.Fatalf("decided %d approved %d requested %d over %d rounds", count(EventDecided), count(EventApproved), count(EventRequested), rounds)
		}
	})
}

// TestRestart closes the Service and the store with requests live, opens
// them again and finds the requests as they were, still expiring.
func TestRestart(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		loc := b.location(t)
		c := newClock()
		st := b.open(t, loc)
		s, err := NewService(context.Background(), st, Options{Now: c.Now, SweepInterval: fastSweep})
		if err != nil {
			t.Fatal(err)
		}
		pending := must(t)(s.Request(t.Context(), newReq()))
		approved := must(t)(s.Request(t.Context(), newReq()))
		approvedAt := must(t)(s.Approve(t.Context(), approved.ID, bob, "looks right"))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}

		st = b.open(t, loc)
		t.Cleanup(func() { _ = st.Close() })
		rec := &recorder{}
		s = newService(t, st, Options{Now: c.Now, SweepInterval: fastSweep, OnEvent: rec.add})
		if got := must(t)(s.Get(t.Context(), pending.ID)); got.State != StatePending || !got.ExpiresAt.Equal(pending.ExpiresAt) ||
			got.Version != 1 || got.Summary != pending.Summary || !slices.Equal(got.Flags, pending.Flags) {
			t.Fatalf("pending after restart: %+v", got)
		}
		got := must(t)(s.Get(t.Context(), approved.ID))
		if got.State != StateApproved || len(got.Approvals) != 1 || got.Approvals[0].By.Sub != bob.Sub ||
			got.Approvals[0].Reason != "looks right" || !got.Approvals[0].At.Equal(approvedAt.Approvals[0].At) {
			t.Fatalf("approved after restart: %+v", got)
		}
		w := waitAsync(t, s, pending.ID)
		c.Add(2 * time.Hour)
		if res := <-w; res.err != nil || res.r.State != StateExpired {
			t.Fatalf("wait after restart: %v %v", res.r, res.err)
		}
		eventually(t, "expiry of the approved request", func() bool {
			r, err := st.Get(t.Context(), approved.ID)
			return err == nil && r.State == StateExpired
		})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if n := len(rec.all()); n != 2 {
			t.Fatalf("%d events after restart, want two expiries", n)
		}
	})
}

func TestMigrations(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		st, loc := openStore(t, b)
		all, err := migrations(b.name)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 0 {
			t.Fatal("no migrations")
		}
		q := "SELECT count(*) FROM " + b.table("schema_migrations")
		if n := b.queryInt(t, loc, q); n != int64(len(all)) {
			t.Fatalf("%d migrations recorded, want %d", n, len(all))
		}
		// Opening again applies nothing twice.
		b.open(t, loc).Close()
		if n := b.queryInt(t, loc, q); n != int64(len(all)) {
			t.Fatalf("%d migrations recorded after reopening, want %d", n, len(all))
		}
		_ = st
		// A newer build migrated the schema: this one refuses it.
		future := len(all) + 1
		if err := b.exec(t, loc, fmt.Sprintf("INSERT INTO %s (version, name, applied_at) VALUES (%d, '%04d_future', '2030-01-01T00:00:00Z')",
			b.table("schema_migrations"), future, future)); err != nil {
			t.Fatal(err)
		}
		st2, err := b.tryOpen(loc)
		if err == nil {
			_ = st2.Close()
			t.Fatal("a schema newer than the build was accepted")
		}
		if !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("newer schema: %v", err)
		}
		t.Logf("newer schema refused: %v", err)
	})
}

func TestMigrationFiles(t *testing.T) {
	for _, dir := range []string{"sqlite", "postgres"} {
		ms, err := migrations(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range ms {
			if m.version != i+1 || m.sql == "" {
				t.Fatalf("%s: migration %d is %+v", dir, i, m)
			}
		}
	}
	cases := []struct {
		applied int
		todo    int
		err     error
	}{{0, 3, nil}, {2, 1, nil}, {3, 0, nil}, {4, 0, ErrSchemaTooNew}}
	all := []migration{{version: 1}, {version: 2}, {version: 3}}
	for _, tc := range cases {
		todo, err := pendingMigrations(all, tc.applied)
		if !errors.Is(err, tc.err) || len(todo) != tc.todo {
			t.Errorf("applied %d: %d to do, %v", tc.applied, len(todo), err)
		}
	}
}

// TestTerminalTrigger bypasses the Service: the database itself refuses to
// change a terminal request, to revive an approval, or to skip a version.
func TestTerminalTrigger(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		e := newEnv(t, b)
		ctx := t.Context()
		denied := must(t)(e.svc.Request(ctx, newReq()))
		must(t)(e.svc.Deny(ctx, denied.ID, bob, ""))
		approved := must(t)(e.svc.Request(ctx, newReq()))
		must(t)(e.svc.Approve(ctx, approved.ID, bob, ""))
		pending := must(t)(e.svc.Request(ctx, newReq()))

		// Through the store, with the right version.
		r, err := e.st.Get(ctx, denied.ID)
		if err != nil {
			t.Fatal(err)
		}
		r.State = StateApproved
		if err := e.st.Update(ctx, r); err == nil {
			t.Fatal("the store revived a denied request")
		}
		r, err = e.st.Get(ctx, approved.ID)
		if err != nil {
			t.Fatal(err)
		}
		r.State = StatePending
		if err := e.st.Update(ctx, r); err == nil {
			t.Fatal("the store turned an approval back into pending")
		}

		// Raw SQL.
		tbl := b.table("requests")
		for _, q := range []string{
			fmt.Sprintf("UPDATE %s SET state = 'pending', version = version + 1 WHERE id = '%s'", tbl, denied.ID),
			fmt.Sprintf("UPDATE %s SET version = version + 1 WHERE id = '%s'", tbl, denied.ID),
			fmt.Sprintf("UPDATE %s SET state = 'pending', version = version + 1 WHERE id = '%s'", tbl, approved.ID),
			fmt.Sprintf("UPDATE %s SET state = 'approved' WHERE id = '%s'", tbl, pending.ID),
			fmt.Sprintf("UPDATE %s SET id = 'apr_other', version = version + 1 WHERE id = '%s'", tbl, pending.ID),
		} {
			if err := b.exec(t, e.loc, q); err == nil {
				t.Errorf("the database accepted %s", q)
			}
		}
		if err := b.exec(t, e.loc, fmt.Sprintf("UPDATE %s SET state = 'consumed', version = version + 1 WHERE id = '%s'", tbl, approved.ID)); err != nil {
			t.Fatalf("approved to consumed refused: %v", err)
		}
		for id, want := range map[string]State{denied.ID: StateDenied, pending.ID: StatePending} {
			if st := e.state(t, id); st != want {
				t.Errorf("%s is %s, want %s", id, st, want)
			}
		}
	})
}

func TestStoreContract(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		e := newEnv(t, b)
		ctx := t.Context()
		r := must(t)(e.svc.Request(ctx, newReq()))
		stored, err := e.st.Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.st.Create(ctx, stored); !errors.Is(err, ErrConflict) {
			t.Fatalf("create of an existing id: %v", err)
		}
		stale := stored.Clone()
		stored.Note = "first"
		if err := e.st.Update(ctx, stored); err != nil {
			t.Fatal(err)
		}
		if stored.Version != 2 {
			t.Fatalf("version %d after update", stored.Version)
		}
		stale.Note = "second"
		if err := e.st.Update(ctx, stale); !errors.Is(err, ErrConflict) {
			t.Fatalf("stale update: %v", err)
		}
		if got, _ := e.st.Get(ctx, r.ID); got.Note != "first" || got.Version != 2 {
			t.Fatalf("after a stale update: %+v", got)
		}
		ghost := stored.Clone()
		ghost.ID = "apr_ghost"
		if err := e.st.Update(ctx, ghost); !errors.Is(err, ErrNotFound) {
			t.Fatalf("update of a missing request: %v", err)
		}
	})
}

// TestClosedStore: a store used after Close says so, and a Service on it
// fails clearly instead of hanging.
func TestClosedStore(t *testing.T) {
	forEachStore(t, func(t *testing.T, b backend) {
		loc := b.location(t)
		st := b.open(t, loc)
		c := newClock()
		s := newService(t, st, Options{Now: c.Now, SweepInterval: fastSweep})
		r := must(t)(s.Request(t.Context(), newReq()))
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		ctx := t.Context()
		for name, f := range map[string]func() error{
			"create": func() error { return st.Create(ctx, r) },
			"get":    func() error { _, err := st.Get(ctx, r.ID); return err },
			"update": func() error { return st.Update(ctx, r) },
			"list":   func() error { _, err := st.List(ctx, Filter{}); return err },
			"due":    func() error { _, err := st.Due(ctx, c.Now(), 10); return err },
			"service request": func() error {
				_, err := s.Request(ctx, newReq())
				return err
			},
			"service approve": func() error { _, err := s.Approve(ctx, r.ID, bob, ""); return err },
			"service wait":    func() error { _, err := s.Wait(ctx, r.ID); return err },
		} {
			if err := f(); !errors.Is(err, ErrStoreClosed) {
				t.Errorf("%s on a closed store: %v", name, err)
			}
		}
		if _, ok := <-st.Changes(ctx); ok {
			t.Error("Changes of a closed store is open")
		}
		// Nothing was lost: the request is there for the next process.
		st2 := b.open(t, loc)
		defer st2.Close()
		if got, err := st2.Get(ctx, r.ID); err != nil || got.State != StatePending {
			t.Fatalf("after reopening: %v %v", got, err)
		}
	})
}

func TestPinHash(t *testing.T) {
	base := PinHash(agent, "db", KindSQL, "SELECT 1", [][]byte{[]byte("a"), nil})
	// The hash of stored requests must not change between builds.
	const golden = "fad96ab56be55ba22e032d31e7e13a55aa1f99c6f5fb4a820c267ade6bd97480"
	if base != golden {
		t.Fatalf("PinHash changed: %s", base)
	}
	other := agent
	other.Act = "someone-else"
	if PinHash(other, "db", KindSQL, "SELECT 1", [][]byte{[]byte("a"), nil}) != base {
		t.Fatal("act should not change the hash: the token's subject is the requester")
	}
	cases := []struct {
		name string
		hash string
	}{
		{"other subject", PinHash(bob, "db", KindSQL, "SELECT 1", [][]byte{[]byte("a"), nil})},
		{"other issuer", PinHash(otherAgent7, "db", KindSQL, "SELECT 1", [][]byte{[]byte("a"), nil})},
		{"other resource", PinHash(agent, "db2", KindSQL, "SELECT 1", [][]byte{[]byte("a"), nil})},
		{"other kind", PinHash(agent, "db", KindHTTP, "SELECT 1", [][]byte{[]byte("a"), nil})},
		{"other text", PinHash(agent, "db", KindSQL, "SELECT 2", [][]byte{[]byte("a"), nil})},
		{"other parameter", PinHash(agent, "db", KindSQL, "SELECT 1", [][]byte{[]byte("b"), nil})},
		{"empty instead of NULL", PinHash(agent, "db", KindSQL, "SELECT 1", [][]byte{[]byte("a"), {}})},
		{"one parameter fewer", PinHash(agent, "db", KindSQL, "SELECT 1", [][]byte{[]byte("a")})},
		{"parameters moved", PinHash(agent, "db", KindSQL, "SELECT 1", [][]byte{nil, []byte("a")})},
		{"text into resource", PinHash(agent, "dbS", KindSQL, "ELECT 1", [][]byte{[]byte("a"), nil})},
		{"parameter split", PinHash(agent, "db", KindSQL, "SELECT 1", [][]byte{[]byte(""), []byte("a"), nil})},
	}
	seen := map[string]string{base: "base"}
	for _, tc := range cases {
		if prev, ok := seen[tc.hash]; ok {
			t.Errorf("%s hashes like %s", tc.name, prev)
		}
		seen[tc.hash] = tc.name
	}
}

func TestSamePerson(t *testing.T) {
	cases := []struct {
		a, b Principal
		same bool
	}{
		{agent, agent, true},
		{agent, alice, true},
		{alice, agent, true},
		{agent, alicesAgent, true},
		{bob, bobsAgent, true},
		{bobsAgent, bob, true},
		{agent, otherAgent7, false},
		{agent, bob, false},
		{bob, carol, false},
		{agent, Principal{Sub: "ALICE@example.com", Iss: "https://idp.example"}, true},
	}
	for _, tc := range cases {
		if got := samePerson(tc.a, tc.b); got != tc.same {
			t.Errorf("samePerson(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}
