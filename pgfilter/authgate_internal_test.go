package pgfilter

import (
	"context"
	"testing"
	"time"
)

func TestAuthGate(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	g := newAuthGate()
	g.now = func() time.Time { return now }
	for i := range authGateBurst {
		if b, _ := g.blocked("10.0.0.7:4000"); b {
			t.Fatalf("blocked after %d failures", i)
		}
		g.failed("10.0.0.7:" + string(rune('0'+i%10)))
	}
	now = now.Add(300 * time.Millisecond)
	if b, left := g.blocked("10.0.0.7:5000"); !b || left != authGateWindow-300*time.Millisecond {
		t.Fatalf("blocked %v for %v past the burst (any port of the address), want the rest of the window", b, left)
	}
	if b, _ := g.blocked("10.0.0.8:4000"); b {
		t.Fatal("another address blocked")
	}
	now = now.Add(authGateWindow)
	if b, _ := g.blocked("10.0.0.7:4000"); b {
		t.Fatal("still blocked after the window")
	}
}

// TestAuthGateHoldBounded: gated connections are held until their window
// ends, but no more than authGateHeld at once; the rest are refused at
// once, and an ended context ends the hold.
func TestAuthGateHoldBounded(t *testing.T) {
	t.Parallel()
	g := newAuthGate()
	ctx, cancel := context.WithCancel(context.Background())
	held := make(chan struct{})
	for range authGateHeld {
		go func() {
			g.hold(ctx, time.Hour)
			held <- struct{}{}
		}()
	}
	for g.held.Load() < authGateHeld {
		time.Sleep(time.Millisecond)
	}
	returned := make(chan struct{})
	go func() {
		g.hold(context.Background(), time.Hour) // one too many: not held
		close(returned)
	}()
	<-returned
	cancel()
	for range authGateHeld {
		<-held
	}
	if n := g.held.Load(); n != 0 {
		t.Fatalf("%d still counted as held", n)
	}
}
