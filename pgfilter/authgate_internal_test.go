package pgfilter

import (
	"testing"
	"time"
)

func TestAuthGate(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	g := newAuthGate()
	g.now = func() time.Time { return now }
	for i := range authGateBurst {
		if g.blocked("10.0.0.7:4000") {
			t.Fatalf("blocked after %d failures", i)
		}
		g.failed("10.0.0.7:" + string(rune('0'+i%10)))
	}
	if !g.blocked("10.0.0.7:5000") {
		t.Fatal("not blocked past the burst (any port of the address)")
	}
	if g.blocked("10.0.0.8:4000") {
		t.Fatal("another address blocked")
	}
	now = now.Add(authGateWindow)
	if g.blocked("10.0.0.7:4000") {
		t.Fatal("still blocked after the window")
	}
}
