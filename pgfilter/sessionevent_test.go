package pgfilter_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// sessionEvents collects the events of a proxy.
type sessionEvents struct {
	mu     sync.Mutex
	events []pgfilter.SessionEvent
}

func (se *sessionEvents) add(ev pgfilter.SessionEvent) error {
	se.mu.Lock()
	defer se.mu.Unlock()
	if ev.Session != nil {
		cp := *ev.Session // the callback must not keep it
		ev.Session = &cp
	}
	se.events = append(se.events, ev)
	return nil
}

func (se *sessionEvents) list() []pgfilter.SessionEvent {
	se.mu.Lock()
	defer se.mu.Unlock()
	return append([]pgfilter.SessionEvent(nil), se.events...)
}

func TestSessionEvents(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{OnSessionEvent: se.add})
	tok := env.Mint(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}, Act: "alice@example.com"})

	if e := connectErr(t, env.ConnString("alice", "hunter2")); e.Code != "28P01" {
		t.Fatalf("bad token: %s %s", e.Code, e.Message)
	}
	if e := connectErr(t, env.ConnString("mallory", tok)); e.Code != "28000" {
		t.Fatalf("user mismatch: %s %s", e.Code, e.Message)
	}
	c := connect(t, env.ConnString("alice", tok))
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for len(se.list()) < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	got := se.list()
	want := []struct {
		kind   pgfilter.SessionEventKind
		user   string
		reason string
	}{
		{pgfilter.SessionAuthFailed, "alice", "malformed"},
		{pgfilter.SessionAuthFailed, "mallory", "user_mismatch"},
		{pgfilter.SessionAuthSucceeded, "alice", ""},
		{pgfilter.SessionOpened, "alice", ""},
		{pgfilter.SessionClosed, "alice", "client_closed"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	var id string
	for i, w := range want {
		ev := got[i]
		if ev.Kind != w.kind || ev.User != w.user || ev.Reason != w.reason {
			t.Errorf("event %d = %s user %q reason %q, want %s %q %q", i, ev.Kind, ev.User, ev.Reason, w.kind, w.user, w.reason)
		}
		if ev.Time.IsZero() || !strings.HasPrefix(ev.ClientAddr, "127.0.0.1:") || ev.Database != pgfiltertest.Database ||
			ev.Resource == nil || ev.Resource.Name != env.Resource.Name {
			t.Errorf("event %d lacks where from or which resource: %+v", i, ev)
		}
		switch w.kind {
		case pgfilter.SessionAuthFailed:
			if ev.Err == nil || ev.Session != nil {
				t.Errorf("event %d: err %v session %v", i, ev.Err, ev.Session)
			}
		default:
			if ev.Session == nil || ev.Principal == nil || ev.Principal.Subject != "alice" || ev.Principal.Act == nil || ev.Principal.Act.Subject != "alice@example.com" {
				t.Fatalf("event %d lacks the session or principal: %+v", i, ev)
			}
			if id == "" {
				id = ev.Session.ID
			} else if ev.Session.ID != id {
				t.Errorf("event %d: session %s, want %s", i, ev.Session.ID, id)
			}
		}
	}
	if got[1].Principal == nil || got[1].Principal.Subject != "alice" {
		t.Errorf("user mismatch: the verified principal is missing: %+v", got[1])
	}
	if got[4].Duration <= 0 {
		t.Errorf("closed: duration %v", got[4].Duration)
	}
}

// TestSessionRefusedWhenNotRecorded: a session whose start the callback
// refuses (its audit record could not be written) gets a FATAL error and
// never reaches ReadyForQuery; the refusal is reported too.
func TestSessionRefusedWhenNotRecorded(t *testing.T) {
	t.Parallel()
	var se sessionEvents
	env := pgfiltertest.Start(t, pgfiltertest.Options{OnSessionEvent: func(ev pgfilter.SessionEvent) error {
		_ = se.add(ev)
		if ev.Kind == pgfilter.SessionOpened {
			return errors.New("journal unavailable")
		}
		return nil
	}})
	tok := env.Mint(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}})
	e := connectErr(t, env.ConnString("alice", tok))
	if e.Code != "58030" || e.Severity != "FATAL" || !strings.Contains(e.Message, "audit journal") {
		t.Fatalf("refused session: %s %s %s", e.Severity, e.Code, e.Message)
	}
	var refused bool
	for _, ev := range se.list() {
		if ev.Kind == pgfilter.SessionRefused && ev.Reason == "audit_unavailable" {
			refused = true
		}
		if ev.Kind == pgfilter.SessionClosed {
			t.Errorf("a refused session was reported closed: %+v", ev)
		}
	}
	if !refused {
		t.Errorf("no refusal reported: %+v", se.list())
	}
}
