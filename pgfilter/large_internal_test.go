package pgfilter

import (
	"sync"
	"testing"
	"time"
)

// TestSerializeLarge: one principal's long parses wait for each other,
// another principal's do not, and nothing is left behind.
func TestSerializeLarge(t *testing.T) {
	t.Parallel()
	s := &Server{large: map[string]*largeLock{}}
	release, _ := s.serializeLarge("mallory", 0)
	got := make(chan string, 2)
	var wg sync.WaitGroup
	for _, who := range []string{"mallory", "bob"} {
		wg.Go(func() {
			r, _ := s.serializeLarge(who, 0)
			got <- who
			r()
		})
	}
	if who := <-got; who != "bob" {
		t.Fatalf("%s went first, while mallory's first parse runs", who)
	}
	select {
	case who := <-got:
		t.Fatalf("%s did not wait for mallory's first parse", who)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if who := <-got; who != "mallory" {
		t.Fatalf("got %s", who)
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.large) != 0 {
		t.Errorf("locks left: %v", s.large)
	}
}

// TestLargeBudget: a principal's long texts are parsed within a budget of
// bytes refilled at largeRate; past it they are refused, and another
// principal's budget is its own.
func TestLargeBudget(t *testing.T) {
	t.Parallel()
	l := &largeLock{}
	now := time.Now()
	if !l.spend(largeBurst, now) {
		t.Fatal("a full budget refused its size")
	}
	if l.spend(largeRate, now) {
		t.Fatal("an empty budget spent")
	}
	if !l.spend(largeRate, now.Add(1100*time.Millisecond)) {
		t.Fatal("a second's refill refused")
	}
	s := &Server{large: map[string]*largeLock{}}
	for range 4 {
		r, ok := s.serializeLarge("mallory", largeBurst/4)
		if !ok {
			t.Fatal("refused within the burst")
		}
		r()
	}
	if _, ok := s.serializeLarge("mallory", largeBurst/4); ok {
		t.Error("past the burst, not refused")
	}
	if r, ok := s.serializeLarge("bob", largeBurst/4); !ok {
		t.Error("another principal refused")
	} else {
		r()
	}
}
