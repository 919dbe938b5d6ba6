package audit

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Attributes of custos.auth.failed records (see the package doc,
// "Repeated authentication failures").
const (
	// AttrTokenFingerprint names the refused token without revealing it
	// (authn.TokenFingerprint): equal within one process run, so a
	// failure's first record and the aggregates of its repeats match.
	AttrTokenFingerprint = "custos.auth.token_fingerprint"
	// AttrFailureCount is how many failed attempts an aggregate record
	// stands for (none of them recorded on its own).
	AttrFailureCount = "custos.auth.failures.count"
	// AttrFailureFirst and AttrFailureLast are the times (RFC 3339, UTC)
	// of the first and last of those attempts.
	AttrFailureFirst = "custos.auth.failures.first_time"
	AttrFailureLast  = "custos.auth.failures.last_time"
	// AttrFailureTokens is how many distinct tokens those attempts
	// presented (0 for none); when one, its fingerprint is the record's
	// AttrTokenFingerprint.
	AttrFailureTokens = "custos.auth.failures.tokens"
	// AttrFailureSources lists each source address of those attempts with
	// its count, "<address>=<count>", sorted by address; the counts add up
	// to AttrFailureCount.
	AttrFailureSources = "custos.auth.failures.sources"
)

// Defaults of AuthFailureOptions.
const (
	DefaultAuthFailureWindow   = time.Second
	DefaultAuthFailureMaxCount = 1000
	DefaultAuthFailureKeys     = 10_000
	DefaultAuthFailureIdle     = time.Minute
	// DefaultAuthFailureFirsts is how many first failures of one source
	// and reason are recorded at once per window.
	DefaultAuthFailureFirsts = 10
)

// Appender appends an event and returns once it is durable; *Journal is
// one.
type Appender interface {
	Append(ctx context.Context, ev Event) (uint64, error)
}

// AuthFailureOptions configure [AuthFailures].
type AuthFailureOptions struct {
	// Window is how long repeats are gathered before their aggregate
	// record is written (default DefaultAuthFailureWindow): what a crash
	// can lose.
	Window time.Duration
	// MaxCount writes an aggregate before its window ends once it holds
	// this many attempts of one source (default DefaultAuthFailureMaxCount).
	MaxCount int
	// MaxKeys bounds the failures remembered (default
	// DefaultAuthFailureKeys). When full, a new failure is still recorded
	// at once, but its repeats are not aggregated: each is recorded as a
	// first failure.
	MaxKeys int
	// MaxFirsts bounds the first failures of one source and reason that
	// are recorded at once, per Window (default DefaultAuthFailureFirsts):
	// past it, a new token's failures are aggregated from the first, so a
	// flood of distinct garbage tokens costs no more than one of a single
	// token.
	MaxFirsts int
	// Idle is how long a failure with no repeat is remembered (default
	// DefaultAuthFailureIdle); after that its next repeat is recorded at
	// once again, as a first failure.
	Idle time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives aggregate records that could not be written (nil
	// discards).
	Logger *slog.Logger

	// tick is how often the background flush runs (tests: 0 is Window,
	// negative is never).
	tick time.Duration
}

// AuthFailures records failed authentications without letting a flood of
// them cost one fsynced record each. The first failure of a key (source
// address, reason, token fingerprint, resource and the user the client
// claimed, for Postgres) is recorded at once, and its caller waits for it
// as before, up to MaxFirsts keys of one source and reason per Window;
// repeats of a key within Idle, and the failures past MaxFirsts, are
// counted instead, and every Window the counts are written as aggregate
// records, one per reason, resource and user, each carrying every source
// address with its count, the distinct tokens, and the first and last
// attempt's times. So each failed attempt is in the evidence, with where
// it came from, and a burst costs a few records per window.
//
// Close writes what is pending: a clean stop loses nothing, a crash at
// most the last Window of repeats (their first failures are durable).
// It is safe for concurrent use.
type AuthFailures struct {
	rec  Appender
	opts AuthFailureOptions
	log  *slog.Logger

	mu     sync.Mutex
	keys   map[failureKey]*failureState
	firsts map[sourceReason]*firstsWindow
	closed bool

	stop chan struct{}
	done chan struct{}
}

type failureKey struct {
	addr, reason, token, resource, user string
}

// sourceReason counts the first failures recorded at once.
type sourceReason struct{ addr, reason string }

type firstsWindow struct {
	start time.Time
	n     int
}

type failureState struct {
	seen time.Time // the key's last failure
	// The repeats not yet written: their count, times, and the first
	// one's event (what the aggregate record says besides the counts).
	count       int64
	first, last time.Time
	template    Event
	// tokens are the fingerprints an overflow key counted (up to
	// maxOverflowTokens).
	tokens map[string]bool
}

// overflowToken stands for the token in the key that gathers a source's
// failures past MaxFirsts in a window: one key, whatever the tokens, so
// that distinct garbage tokens do not each take a key. It is no
// fingerprint (those are hex).
const overflowToken = "*"

// maxOverflowTokens bounds the distinct tokens an overflow key counts.
const maxOverflowTokens = 1000

// NewAuthFailures returns an AuthFailures recording into rec, with its
// background flush running until Close.
func NewAuthFailures(rec Appender, opts AuthFailureOptions) *AuthFailures {
	if opts.Window <= 0 {
		opts.Window = DefaultAuthFailureWindow
	}
	if opts.MaxCount <= 0 {
		opts.MaxCount = DefaultAuthFailureMaxCount
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultAuthFailureKeys
	}
	if opts.MaxFirsts <= 0 {
		opts.MaxFirsts = DefaultAuthFailureFirsts
	}
	if opts.Idle <= 0 {
		opts.Idle = DefaultAuthFailureIdle
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &AuthFailures{rec: rec, opts: opts, log: log, keys: make(map[failureKey]*failureState),
		firsts: make(map[sourceReason]*firstsWindow),
		stop:   make(chan struct{}), done: make(chan struct{})}
	tick := opts.tick
	if tick == 0 {
		tick = opts.Window
	}
	if tick < 0 {
		close(a.done)
		return a
	}
	go a.run(tick)
	return a
}

func (a *AuthFailures) run(tick time.Duration) {
	defer close(a.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = a.Flush(ctx) // logged
			cancel()
		}
	}
}

// Record records ev, an EventAuthFailed event, for the token whose
// fingerprint is token ("" when there was none). A first failure is
// appended before Record returns, and its error returned; a repeat is
// counted and Record returns at once (after writing the aggregates
// whose window has closed, if the background flush has not yet).
func (a *AuthFailures) Record(ctx context.Context, ev Event, token string) error {
	now := a.opts.Now()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	k := failureKey{addr: ev.ClientAddress, reason: ev.ErrorType, token: token, resource: ev.Resource, user: ev.UserID}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return a.appendFirst(ctx, ev, token)
	}
	if st, ok := a.keys[k]; ok && now.Sub(st.seen) < a.opts.Idle {
		due := a.countRepeat(k, st, ev, now, "")
		a.mu.Unlock()
		return a.appendAll(ctx, due)
	}
	// A first failure (or the first after a quiet Idle): remembered, if
	// there is room, and recorded at once unless its source has had its
	// MaxFirsts in this window.
	var due []Event
	if st, ok := a.keys[k]; ok {
		due = a.aggregates([]*failureState{st}, []failureKey{k})
		delete(a.keys, k)
	}
	if len(a.keys) >= a.opts.MaxKeys {
		due = append(due, a.takeDue(now, false)...)
		a.forgetQuiet(now, a.opts.Window)
	}
	sk := sourceReason{k.addr, k.reason}
	fw := a.firsts[sk]
	if fw == nil || now.Sub(fw.start) >= a.opts.Window {
		fw = &firstsWindow{start: now}
		a.firsts[sk] = fw
	}
	room := len(a.keys) < a.opts.MaxKeys
	if fw.n >= a.opts.MaxFirsts {
		ok := k
		ok.token = overflowToken
		st, known := a.keys[ok]
		if !known && room {
			st = &failureState{}
			a.keys[ok] = st
		}
		if st != nil {
			due = append(due, a.countRepeat(ok, st, ev, now, token)...)
			a.mu.Unlock()
			return a.appendAll(ctx, due)
		}
	}
	fw.n++
	if room {
		a.keys[k] = &failureState{seen: now}
	}
	a.mu.Unlock()
	err := a.appendFirst(ctx, ev, token)
	if err != nil {
		// Not in the evidence: the next attempt is a first failure again.
		a.mu.Lock()
		if st, ok := a.keys[k]; ok && st.count == 0 {
			delete(a.keys, k)
		}
		a.mu.Unlock()
	}
	return errors.Join(err, a.appendAll(ctx, due))
}

// countRepeat adds ev to the pending attempts of k's state st, and
// returns st's aggregate when it is due: before ev when st's window has
// closed (ev starts the next), after it when it reached MaxCount. token
// is ev's token for an overflow key. a.mu is held.
func (a *AuthFailures) countRepeat(k failureKey, st *failureState, ev Event, now time.Time, token string) []Event {
	var due []Event
	if st.count > 0 && now.Sub(st.first) >= a.opts.Window {
		due = a.aggregates([]*failureState{st}, []failureKey{k})
	}
	st.seen = now
	if st.count == 0 {
		st.first, st.template = ev.Time, ev
	}
	st.count++
	st.last = ev.Time
	if k.token == overflowToken && token != "" {
		if st.tokens == nil {
			st.tokens = make(map[string]bool)
		}
		if len(st.tokens) < maxOverflowTokens {
			st.tokens[token] = true
		}
	}
	if st.count >= int64(a.opts.MaxCount) {
		due = append(due, a.aggregates([]*failureState{st}, []failureKey{k})...)
	}
	return due
}

func (a *AuthFailures) appendFirst(ctx context.Context, ev Event, token string) error {
	if token != "" {
		ev.Attrs = append(slices.Clip(ev.Attrs), String(AttrTokenFingerprint, token))
	}
	_, err := a.rec.Append(ctx, ev)
	return err
}

// Flush writes the aggregates whose window has closed (or that reached
// MaxCount) and forgets failures quiet for Idle. The background flush
// calls it every Window.
func (a *AuthFailures) Flush(ctx context.Context) error {
	now := a.opts.Now()
	a.mu.Lock()
	due := a.takeDue(now, false)
	a.forgetQuiet(now, a.opts.Idle)
	a.mu.Unlock()
	return a.appendAll(ctx, due)
}

// Close stops the background flush and writes every pending aggregate.
// Failures recorded after Close are recorded one by one, at once.
func (a *AuthFailures) Close(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	select {
	case <-a.done:
	default:
		close(a.stop)
		<-a.done
	}
	a.mu.Lock()
	due := a.takeDue(a.opts.Now(), true)
	clear(a.keys)
	a.mu.Unlock()
	return a.appendAll(ctx, due)
}

// takeDue takes the pending repeats that are due (all of them with
// force) as aggregate records. a.mu is held.
func (a *AuthFailures) takeDue(now time.Time, force bool) []Event {
	var sts []*failureState
	var ks []failureKey
	for k, st := range a.keys {
		if st.count > 0 && (force || now.Sub(st.first) >= a.opts.Window || st.count >= int64(a.opts.MaxCount)) {
			sts, ks = append(sts, st), append(ks, k)
		}
	}
	return a.aggregates(sts, ks)
}

// forgetQuiet drops the failures with nothing pending and no repeat for
// quiet. a.mu is held.
func (a *AuthFailures) forgetQuiet(now time.Time, quiet time.Duration) {
	for k, st := range a.keys {
		if st.count == 0 && now.Sub(st.seen) >= quiet {
			delete(a.keys, k)
		}
	}
	for k, fw := range a.firsts {
		if now.Sub(fw.start) >= a.opts.Window {
			delete(a.firsts, k)
		}
	}
}

// aggregates turns the pending repeats of sts (keyed by ks) into one
// record per reason, resource and user, and resets them. a.mu is held.
func (a *AuthFailures) aggregates(sts []*failureState, ks []failureKey) []Event {
	type group struct {
		template    Event
		tokens      map[string]bool
		count       int64
		first, last time.Time
		sources     map[string]int64
	}
	groups := map[failureKey]*group{}
	var order []failureKey
	for i, st := range sts {
		if st.count == 0 {
			continue
		}
		k := ks[i]
		gk := failureKey{reason: k.reason, resource: k.resource, user: k.user}
		g, ok := groups[gk]
		if !ok {
			g = &group{template: st.template, tokens: map[string]bool{}, first: st.first, last: st.last, sources: map[string]int64{}}
			groups[gk] = g
			order = append(order, gk)
		}
		if st.first.Before(g.first) {
			g.first, g.template = st.first, st.template
		}
		if st.last.After(g.last) {
			g.last = st.last
		}
		g.count += st.count
		g.sources[k.addr] += st.count
		switch k.token {
		case "":
		case overflowToken:
			for tok := range st.tokens {
				g.tokens[tok] = true
			}
		default:
			g.tokens[k.token] = true
		}
		st.count, st.template, st.tokens = 0, Event{}, nil
	}
	slices.SortFunc(order, func(x, y failureKey) int {
		return cmp.Or(groups[x].first.Compare(groups[y].first), cmp.Compare(x.reason, y.reason),
			cmp.Compare(x.resource, y.resource), cmp.Compare(x.user, y.user))
	})
	out := make([]Event, 0, len(order))
	for _, gk := range order {
		g := groups[gk]
		addrs := make([]string, 0, len(g.sources))
		for addr := range g.sources {
			addrs = append(addrs, addr)
		}
		slices.Sort(addrs)
		sources := make([]string, len(addrs))
		for i, addr := range addrs {
			sources[i] = addr + "=" + strconv.FormatInt(g.sources[addr], 10)
		}
		ev := g.template
		// What differs between the attempts is left out: each one's
		// request id, port, path and trace. The first source stands in
		// client.address; all of them are in the sources list.
		ev.Time = time.Time{}
		ev.ClientAddress, ev.ClientPort = addrs[0], 0
		ev.SessionID, ev.URLPath, ev.TraceID, ev.SpanID = "", "", [16]byte{}, [8]byte{}
		ev.Attrs = append(slices.Clip(ev.Attrs),
			Int(AttrFailureCount, g.count),
			String(AttrFailureFirst, g.first.UTC().Format(time.RFC3339Nano)),
			String(AttrFailureLast, g.last.UTC().Format(time.RFC3339Nano)),
			Strings(AttrFailureSources, sources))
		ev.Attrs = append(ev.Attrs, Int(AttrFailureTokens, int64(len(g.tokens))))
		if len(g.tokens) == 1 {
			for tok := range g.tokens {
				ev.Attrs = append(ev.Attrs, String(AttrTokenFingerprint, tok))
			}
		}
		out = append(out, ev)
	}
	return out
}

// appendAll appends aggregate records; one that cannot be written is
// logged (its attempts are then missing from the evidence) and the
// errors returned.
//
// They are appended concurrently, so that the journal commits them with
// one fsync.
func (a *AuthFailures) appendAll(ctx context.Context, evs []Event) error {
	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	for i, ev := range evs {
		wg.Go(func() {
			if _, err := a.rec.Append(ctx, ev); err != nil {
				a.log.Error("audit event not recorded", "event", ev.Name, "error_type", ev.ErrorType,
					"attempts", attrInt(ev, AttrFailureCount), "error", err.Error())
				errs[i] = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func attrInt(ev Event, key string) int64 {
	for _, x := range ev.Attrs {
		if x.Key == key {
			return x.Value.i
		}
	}
	return 0
}
