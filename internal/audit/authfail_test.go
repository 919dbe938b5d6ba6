package audit

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClock is a clock that moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newAuthFailuresTest is an AuthFailures on a real journal, with a clock
// of its own and no background flush: the test says when to flush.
func newAuthFailuresTest(t *testing.T, opts AuthFailureOptions) (*AuthFailures, *testClock, string) {
	t.Helper()
	dir := t.TempDir()
	j := openTest(t, Options{DataDir: dir})
	c := &testClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	opts.Now, opts.tick = c.Now, -1
	return NewAuthFailures(j, opts), c, dir
}

// refusedEvent is a refused token's event as ext_authz records it.
func refusedEvent(addr string) Event {
	return Event{
		Name: EventAuthFailed, Outcome: OutcomeFailure, ClientAddress: addr, ClientPort: 40000,
		SessionID: "req-" + addr, Resource: "payments-api", ResourceType: "http",
		HTTPMethod: "GET", URLPath: "/v1/cards", HTTPStatusCode: 401,
		ErrorType: "signature", Error: "bad signature: no key of issuer verifies the token",
	}
}

// failureRecords are the journal's custos.auth.failed records.
func failureRecords(t *testing.T, dir string) []Record {
	t.Helper()
	var out []Record
	if err := ReadRecords(context.Background(), dir, 1, func(r *Record) error {
		if r.Name == EventAuthFailed {
			out = append(out, *r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// attempts sums, per source address, the attempts the records stand
// for: one for a record of its own, the sources' counts for an aggregate.
func attempts(t *testing.T, recs []Record) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range recs {
		n, agg := r.Attr(AttrFailureCount)
		if !agg {
			addr, _ := r.Attr(AttrClientAddress)
			out[addr.Str()]++
			continue
		}
		srcs, _ := r.Attr(AttrFailureSources)
		var sum int64
		for _, s := range srcs.Strings() {
			addr, cnt, ok := strings.Cut(s, "=")
			var c int64
			for _, d := range cnt {
				c = c*10 + int64(d-'0')
			}
			if !ok || c <= 0 {
				t.Fatalf("source %q", s)
			}
			out[addr] += c
			sum += c
		}
		if sum != n.Int() {
			t.Errorf("sources %v add up to %d, count is %d", srcs.Strings(), sum, n.Int())
		}
	}
	return out
}

func TestAuthFailuresCountsAndSources(t *testing.T) {
	t.Parallel()
	a, c, dir := newAuthFailuresTest(t, AuthFailureOptions{Window: time.Second})
	ctx := t.Context()
	// Three sources replay one token; one source also sends another.
	sent := map[string]int64{}
	for i := range 30 {
		addr := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}[i%3]
		if err := a.Record(ctx, refusedEvent(addr), "tok-a"); err != nil {
			t.Fatal(err)
		}
		sent[addr]++
		if i%10 == 0 {
			if err := a.Record(ctx, refusedEvent("10.0.0.1"), "tok-b"); err != nil {
				t.Fatal(err)
			}
			sent["10.0.0.1"]++
		}
		c.Advance(10 * time.Millisecond)
	}
	// Each key's first failure is durable at once.
	firsts := failureRecords(t, dir)
	if len(firsts) != 4 {
		t.Fatalf("%d records before the window closed, want the 4 first failures", len(firsts))
	}
	for _, r := range firsts {
		if _, agg := r.Attr(AttrFailureCount); agg {
			t.Errorf("aggregate written before its window closed: %+v", r.Attrs)
		}
		if fp, _ := r.Attr(AttrTokenFingerprint); fp.Str() != "tok-a" && fp.Str() != "tok-b" {
			t.Errorf("first failure without the token fingerprint: %+v", r.Attrs)
		}
	}
	if err := a.Flush(ctx); err != nil { // 300ms in: nothing due
		t.Fatal(err)
	}
	if n := len(failureRecords(t, dir)); n != 4 {
		t.Fatalf("%d records after a flush inside the window", n)
	}
	c.Advance(time.Second)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs := failureRecords(t, dir)
	if len(recs) != 5 {
		t.Fatalf("%d records, want 4 first failures and one aggregate of both tokens' repeats", len(recs))
	}
	if got := attempts(t, recs); !mapsEqual(got, sent) {
		t.Errorf("attempts per source in the evidence %v, sent %v", got, sent)
	}
	agg := recs[4]
	srcs, _ := agg.Attr(AttrFailureSources)
	if want := []string{"10.0.0.1=11", "10.0.0.2=9", "10.0.0.3=9"}; !slices.Equal(srcs.Strings(), want) {
		t.Errorf("aggregate: sources %v, want %v", srcs.Strings(), want)
	}
	if n, _ := agg.Attr(AttrFailureTokens); n.Int() != 2 {
		t.Errorf("aggregate: %d tokens, want 2", n.Int())
	}
	if _, ok := agg.Attr(AttrTokenFingerprint); ok {
		t.Errorf("aggregate of two tokens names one")
	}
	first, _ := agg.Attr(AttrFailureFirst)
	last, _ := agg.Attr(AttrFailureLast)
	if first.Str() != "2030-01-02T03:04:05.03Z" || last.Str() != "2030-01-02T03:04:05.29Z" {
		t.Errorf("aggregate times %s .. %s", first.Str(), last.Str())
	}
	for _, k := range []string{AttrErrorType, AttrResource, AttrHTTPStatusCode, AttrOutcome} {
		if _, ok := agg.Attr(k); !ok {
			t.Errorf("aggregate lacks %s: %+v", k, agg.Attrs)
		}
	}
	for _, k := range []string{AttrSessionID, AttrURLPath, AttrClientPort} {
		if _, ok := agg.Attr(k); ok {
			t.Errorf("aggregate carries the per-attempt %s", k)
		}
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestAuthFailuresWindow: repeats after a window has closed go into the
// next aggregate, written by the repeat itself when no flush has run;
// MaxCount ends an aggregate early; a failure quiet for Idle is a first
// failure again.
func TestAuthFailuresWindow(t *testing.T) {
	t.Parallel()
	a, c, dir := newAuthFailuresTest(t, AuthFailureOptions{Window: time.Second, MaxCount: 5, Idle: 10 * time.Second})
	ctx := t.Context()
	rec := func(n int) {
		for range n {
			if err := a.Record(ctx, refusedEvent("10.0.0.1"), "tok"); err != nil {
				t.Fatal(err)
			}
		}
	}
	counts := func() []int64 {
		var out []int64
		for _, r := range failureRecords(t, dir) {
			n, ok := r.Attr(AttrFailureCount)
			if !ok {
				out = append(out, 0) // a first failure
				continue
			}
			out = append(out, n.Int())
		}
		return out
	}
	rec(3) // first + 2 repeats
	c.Advance(1500 * time.Millisecond)
	rec(1) // closes the window of the 2, starts a new one
	if got, want := counts(), []int64{0, 2}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	rec(4) // reaches MaxCount (5) inside the window
	if got, want := counts(), []int64{0, 2, 5}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
	c.Advance(11 * time.Second)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rec(1) // quiet for longer than Idle: a first failure again
	if got, want := counts(), []int64{0, 2, 5, 0}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
}

// TestAuthFailuresCloseFlushes: nothing pending is lost on Close, and
// failures after it are recorded one by one.
func TestAuthFailuresCloseFlushes(t *testing.T) {
	t.Parallel()
	a, _, dir := newAuthFailuresTest(t, AuthFailureOptions{Window: time.Hour})
	ctx := t.Context()
	for range 7 {
		if err := a.Record(ctx, refusedEvent("10.0.0.5"), "tok"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(failureRecords(t, dir)); n != 1 {
		t.Fatalf("%d records before Close, want the first failure", n)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recs := failureRecords(t, dir)
	if got := attempts(t, recs); got["10.0.0.5"] != 7 || len(recs) != 2 {
		t.Fatalf("after Close: %d records, attempts %v, want 2 records for 7 attempts", len(recs), got)
	}
	if err := a.Record(ctx, refusedEvent("10.0.0.5"), "tok"); err != nil {
		t.Fatal(err)
	}
	if got := attempts(t, failureRecords(t, dir)); got["10.0.0.5"] != 8 {
		t.Fatalf("a failure after Close is not recorded: %v", got)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestAuthFailuresBound: past MaxKeys a new failure is still recorded at
// once, and its repeats too, one by one: memory stays bounded and no
// attempt goes missing.
func TestAuthFailuresBound(t *testing.T) {
	t.Parallel()
	a, c, dir := newAuthFailuresTest(t, AuthFailureOptions{Window: time.Second, MaxKeys: 2})
	ctx := t.Context()
	for _, tok := range []string{"t1", "t2", "t3", "t3", "t1"} {
		if err := a.Record(ctx, refusedEvent("10.0.0.9"), tok); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	n := len(a.keys)
	a.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d keys remembered, bound 2", n)
	}
	if got := len(failureRecords(t, dir)); got != 4 {
		t.Fatalf("%d records, want t1, t2, t3 and t3 again at once", got)
	}
	c.Advance(2 * time.Second)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := attempts(t, failureRecords(t, dir)); got["10.0.0.9"] != 5 {
		t.Fatalf("attempts %v, want 5", got)
	}
}

// TestAuthFailuresBackground: the background flush writes an aggregate
// once its window has passed, without another failure.
func TestAuthFailuresBackground(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := openTest(t, Options{DataDir: dir})
	a := NewAuthFailures(j, AuthFailureOptions{Window: 20 * time.Millisecond})
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	for range 3 {
		if err := a.Record(t.Context(), refusedEvent("10.0.0.1"), "tok"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(failureRecords(t, dir)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no aggregate written by the background flush")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := attempts(t, failureRecords(t, dir)); got["10.0.0.1"] != 3 {
		t.Fatalf("attempts %v", got)
	}
}

// TestAuthFailuresDistinctTokens: a source sending a new garbage token
// each time gets MaxFirsts records of its own per window, the rest
// aggregated.
func TestAuthFailuresDistinctTokens(t *testing.T) {
	t.Parallel()
	a, c, dir := newAuthFailuresTest(t, AuthFailureOptions{Window: time.Second, MaxFirsts: 10})
	ctx := t.Context()
	for i := range 50 {
		if err := a.Record(ctx, refusedEvent("10.0.0.7"), "tok-"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		if err := a.Record(ctx, refusedEvent("10.0.0.8"), "tok-"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(failureRecords(t, dir)); n != 20 {
		t.Fatalf("%d records at once, want MaxFirsts per source", n)
	}
	a.mu.Lock()
	keys := len(a.keys)
	a.mu.Unlock()
	if keys != 22 {
		t.Errorf("%d keys for 100 distinct tokens, want MaxFirsts and one overflow key per source", keys)
	}
	c.Advance(time.Second)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs := failureRecords(t, dir)
	if len(recs) != 21 {
		t.Fatalf("%d records, want 20 first failures and one aggregate", len(recs))
	}
	if got := attempts(t, recs); got["10.0.0.7"] != 50 || got["10.0.0.8"] != 50 {
		t.Errorf("attempts %v, want 50 per source", got)
	}
	if n, _ := recs[20].Attr(AttrFailureTokens); n.Int() != 40 {
		t.Errorf("aggregate: %d tokens, want 40", n.Int())
	}
	// The next window records firsts again.
	if err := a.Record(ctx, refusedEvent("10.0.0.7"), "tok-new"); err != nil {
		t.Fatal(err)
	}
	if n := len(failureRecords(t, dir)); n != 22 {
		t.Fatalf("a new token in a new window: %d records", n)
	}
}
