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
	release := s.serializeLarge("mallory")
	got := make(chan string, 2)
	var wg sync.WaitGroup
	for _, who := range []string{"mallory", "bob"} {
		wg.Go(func() {
			r := s.serializeLarge(who)
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
