package pgfilter_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

// TestStartupParameterRefusalRecorded: a startup parameter the policy
// refuses ends the startup with FATAL 42501 naming the decision, and the
// refusal is a session event (the audit journal's record) carrying the
// same decision id.
func TestStartupParameterRefusalRecorded(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []pgfilter.SessionEvent
	env := pgfiltertest.Start(t, pgfiltertest.Options{
		Policy: pgfiltertest.DefaultPolicy(t),
		OnSessionEvent: func(ev pgfilter.SessionEvent) error {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, ev)
			return nil
		},
	})
	e := connectErr(t, env.ConnString("alice", env.Token(t, "alice", "agents"), "options='-c search_path=evil,pg_catalog'"))
	if e.Severity != "FATAL" || e.Code != "42501" || !strings.Contains(e.Message, "setting search_path is not allowed for agents") {
		t.Fatalf("got %s %s %q", e.Severity, e.Code, e.Message)
	}
	i := strings.Index(e.Message, "decision dec_")
	if i < 0 {
		t.Fatalf("no decision id in %q", e.Message)
	}
	id := strings.TrimSuffix(strings.Fields(e.Message[i:])[1], ")")
	mu.Lock()
	found := false
	for _, ev := range events {
		if ev.Kind == pgfilter.SessionRefused && ev.Reason == "refused_parameter" {
			found = true
			if ev.Err == nil || !strings.Contains(ev.Err.Error(), id) || ev.Principal == nil || ev.Principal.Subject != "alice" {
				t.Errorf("refusal event: %+v", ev)
			}
		}
		if ev.Kind == pgfilter.SessionOpened {
			t.Errorf("a session opened: %+v", ev)
		}
	}
	mu.Unlock()
	if !found {
		t.Fatal("no refused_parameter event")
	}
	// The same principal may connect with what the policy allows.
	c := connect(t, env.ConnString("alice", env.Token(t, "alice", "agents"), "options='-c statement_timeout=7s'"))
	var st string
	if err := c.QueryRow(t.Context(), "SHOW statement_timeout").Scan(&st); err != nil || st != "7s" {
		t.Fatalf("statement_timeout %q %v", st, err)
	}
}
