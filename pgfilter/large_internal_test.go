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
	release, _ := s.serializeLarge("mallory")
	got := make(chan string, 2)
	var wg sync.WaitGroup
	for _, who := range []string{"mallory", "bob"} {
		wg.Go(func() {
			r, _ := s.serializeLarge(who)
			got <- who
			r(0)
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
	release(0)
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

// TestLargeBudget: a principal's long texts are parsed while its budget
// of parse time lasts, each charged what it took; once spent they are
// refused, saying for how long, until the refill (largeRate) pays the
// debt; another principal's budget is its own.
func TestLargeBudget(t *testing.T) {
	t.Parallel()
	l := &largeLock{}
	now := time.Now()
	if ok, _ := l.ready(now); !ok {
		t.Fatal("a full budget not ready")
	}
	// One parse may overrun the budget: it is charged in full.
	l.charge(largeBurst+time.Second, now)
	ok, wait := l.ready(now)
	if want := (time.Second + time.Millisecond) * 1000 / largeRate; ok || wait != want {
		t.Fatalf("in debt: ready %v, wait %v, want %v", ok, wait, want)
	}
	if ok, _ := l.ready(now.Add(wait)); !ok {
		t.Fatal("not ready once the debt is paid")
	}
	s := &Server{large: map[string]*largeLock{}}
	done, _ := s.serializeLarge("mallory")
	done(largeBurst + time.Second)
	if done, wait := s.serializeLarge("mallory"); done != nil || wait <= 0 {
		t.Errorf("past the budget: not refused (wait %v)", wait)
	}
	if done, _ := s.serializeLarge("bob"); done == nil {
		t.Error("another principal refused")
	} else {
		done(time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.large["mallory"]; !ok {
		t.Error("mallory's debt forgotten")
	}
}
