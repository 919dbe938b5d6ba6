package approval

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// DefaultSweepInterval is how often a Service expires requests whose time
// has come (Options.SweepInterval).
const DefaultSweepInterval = time.Second

// maxConflicts bounds the retries of one transition that keeps losing the
// compare-and-swap to other writers.
const maxConflicts = 100

// sweepBatch is how many due requests one store query returns.
const sweepBatch = 100

// Options configure a Service.
type Options struct {
	// Logger receives transitions (Info) and store trouble (Warn); nil
	// discards.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now. Times are kept in UTC to the
	// microsecond.
	Now func() time.Time
	// Replica names this custos process; Request records it as Holder.
	Replica string
	// OnEvent is called after each transition this Service commits, in
	// commit order, from one goroutine of its own: a slow OnEvent delays
	// later events, never a caller. Transitions committed by other
	// replicas are reported by their Service. Close delivers what is
	// queued before it returns.
	OnEvent func(Event)
	// SweepInterval is how often due requests are expired; 0 is
	// DefaultSweepInterval. Wait also expires the request it waits for on
	// time, whatever the interval.
	SweepInterval time.Duration
}

// Service runs the approval state machine over a Store. It is safe for
// concurrent use; several Services (in one process or in several
// replicas) may share one store.
type Service struct {
	store   Store
	log     *slog.Logger
	clock   func() time.Time
	replica string
	sweepIv time.Duration

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	loops  sync.WaitGroup

	closeMu sync.RWMutex // held for reading by each operation, for writing by Close
	closed  bool

	waitMu  sync.Mutex
	waiters map[string]map[chan struct{}]struct{}

	locks idLocks // one transition per request at a time in this Service

	events *eventQueue
}

// NewService starts a Service on store: the expiry sweep (a first sweep
// runs at once, so requests left pending by an earlier process expire on
// time) and the store's change feed, which wakes Wait when another replica
// decides. The loops run until Close or until ctx is done. Close does not
// close store.
func NewService(ctx context.Context, store Store, opts Options) (*Service, error) {
	if store == nil {
		return nil, errors.New("approval: NewService needs a store")
	}
	s := &Service{
		store:   store,
		log:     opts.Logger,
		clock:   opts.Now,
		replica: opts.Replica,
		sweepIv: opts.SweepInterval,
		waiters: make(map[string]map[chan struct{}]struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.sweepIv <= 0 {
		s.sweepIv = DefaultSweepInterval
	}
	s.events = newEventQueue(opts.OnEvent, s.log)
	s.ctx, s.cancel = context.WithCancel(ctx)
	changes := store.Changes(s.ctx)
	s.loops.Add(2)
	go s.feedLoop(changes)
	go s.sweepLoop()
	return s, nil
}

// now is the clock in UTC, to the microsecond (what both stores keep).
func (s *Service) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// begin admits an operation unless the Service is closed; end releases it.
func (s *Service) begin() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Service) end() { s.closeMu.RUnlock() }

// Request parks nr and returns the pending request. nr is validated
// (ErrInvalid): a hash, a requester with issuer and subject, a resource, a
// kind and at least one approver group are required.
func (s *Service) Request(ctx context.Context, nr NewRequest) (*Request, error) {
	if err := nr.validate(); err != nil {
		return nil, err
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	ttl := nr.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	quorum := nr.Quorum
	if quorum == 0 {
		quorum = DefaultQuorum
	}
	var groups []string
	for _, g := range nr.ApproverGroups {
		if g != "" && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	now := s.now()
	r := &Request{
		Hash:           nr.Hash,
		Requester:      nr.Requester.clone(),
		Resource:       nr.Resource,
		Kind:           nr.Kind,
		Summary:        nr.Summary,
		Detail:         nr.Detail,
		Flags:          slices.Clone(nr.Flags),
		Reasons:        slices.Clone(nr.Reasons),
		DecisionID:     nr.DecisionID,
		SessionID:      nr.SessionID,
		ApproverGroups: groups,
		Quorum:         quorum,
		CreatedAt:      now,
		ExpiresAt:      now.Add(ttl).Truncate(time.Microsecond),
		State:          StatePending,
		UpdatedAt:      now,
		Holder:         s.replica,
		Version:        1,
	}
	for range 3 { // an id collision is a 2^-128 event; a retry is plenty
		r.ID = newID()
		err := s.store.Create(ctx, r)
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		actor := r.Requester.clone()
		s.committed(r, []change{{typ: EventRequested, actor: &actor}}, now)
		return r.Clone(), nil
	}
	return nil, fmt.Errorf("approval: no free request id: %w", ErrConflict)
}

// Approve records by's approval of request id. When the quorum of distinct
// approvers is reached the request is approved. by must be in one of the
// request's approver groups (ErrNotApprover), must not be the requester or
// the human the requester acts for, nor act for either (ErrSelfApproval,
// whatever by's groups), and votes once (ErrAlreadyVoted). A request past
// its expiry is expired instead (ErrNotPending and ErrExpired).
func (s *Service) Approve(ctx context.Context, id string, by Principal, reason string) (*Request, error) {
	r, err := s.transition(ctx, id, func(r *Request, now time.Time) ([]change, error) {
		return approve(r, by, reason, now)
	})
	s.refused("approve", id, by, err)
	return r, err
}

// Deny records by's denial of request id, which ends it: one denial is
// enough. by must be allowed to approve it (see Approve).
func (s *Service) Deny(ctx context.Context, id string, by Principal, reason string) (*Request, error) {
	r, err := s.transition(ctx, id, func(r *Request, now time.Time) ([]change, error) {
		return deny(r, by, reason, now)
	})
	s.refused("deny", id, by, err)
	return r, err
}

// refused logs a decision the rules refused to who tried it: a requester
// deciding their own request, or someone outside the approver groups.
func (s *Service) refused(verb, id string, by Principal, err error) {
	if !errors.Is(err, ErrSelfApproval) && !errors.Is(err, ErrNotApprover) && !errors.Is(err, ErrAlreadyVoted) {
		return
	}
	s.log.Warn("approval decision refused", slog.String("verb", verb), slog.String("approval_id", id),
		slog.String("actor_sub", by.Sub), slog.String("actor_iss", by.Iss), slog.String("actor_act", by.Act),
		slog.Any("error", err))
}

// Withdraw ends request id because its client cancelled or went away;
// reason becomes the Note. An approved request not yet consumed may be
// withdrawn too. A decided request is ErrNotPending.
func (s *Service) Withdraw(ctx context.Context, id, reason string) (*Request, error) {
	return s.transition(ctx, id, func(r *Request, now time.Time) ([]change, error) {
		return withdraw(r, reason, now)
	})
}

// WithdrawHeld withdraws every live request (pending or approved) held by
// replica, each as Withdraw does, with note as its Note, and returns how
// many it withdrew. A replica calls it for itself when it starts again:
// the client connections it parked did not survive, so their requests can
// never run. It reads the store a page at a time (Filter.After), so no
// request is missed however many there are. A request decided meanwhile
// is skipped; any other failure ends it, with the count so far. Call it
// before the replica parks requests again: it cannot tell those from the
// ones left behind.
func (s *Service) WithdrawHeld(ctx context.Context, replica, note string) (int, error) {
	n := 0
	// Pending first: a request approved while they are withdrawn is then
	// found among the approved.
	for _, state := range []State{StatePending, StateApproved} {
		f := Filter{State: state, Holder: replica, Limit: MaxListLimit}
		for {
			page, err := s.List(ctx, f)
			if err != nil {
				return n, fmt.Errorf("approval: withdraw the requests held by %q: %w", replica, err)
			}
			for i := range page {
				r := &page[i]
				if r.Holder != replica { // Holder "" in a Filter selects every holder
					continue
				}
				if _, err := s.Withdraw(ctx, r.ID, note); err != nil {
					if errors.Is(err, ErrNotPending) {
						continue
					}
					return n, fmt.Errorf("approval: withdraw %s: %w", r.ID, err)
				}
				n++
				s.log.Info("approval request withdrawn after restart",
					slog.String("approval_id", r.ID), slog.String("session_id", r.SessionID))
			}
			if len(page) < f.limit() {
				break
			}
			f.After = CursorOf(&page[len(page)-1])
		}
	}
	return n, nil
}

// Consume marks approved request id as used, exactly once, and only when
// hash is the request's Hash (ErrHashMismatch otherwise, and the request
// is unchanged). Call it right before running the statement; run nothing
// unless it succeeds. A used approval is ErrNotApproved and ErrConsumed; an
// expired one ErrNotApproved and ErrExpired.
func (s *Service) Consume(ctx context.Context, id, hash string) (*Request, error) {
	return s.transition(ctx, id, func(r *Request, now time.Time) ([]change, error) {
		return consume(r, hash, now)
	})
}

// expireDue expires request id if its time has come; otherwise it changes
// nothing.
func (s *Service) expireDue(ctx context.Context, id string) (*Request, error) {
	return s.transition(ctx, id, func(r *Request, now time.Time) ([]change, error) {
		return expire(r, now), nil
	})
}

// Get returns request id, or ErrNotFound.
func (s *Service) Get(ctx context.Context, id string) (*Request, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	return s.store.Get(ctx, id)
}

// List returns the requests f selects, newest first.
func (s *Service) List(ctx context.Context, f Filter) ([]Request, error) {
	if f.State != "" && !f.State.Valid() {
		return nil, fmt.Errorf("%w: unknown state %q", ErrInvalid, f.State)
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	return s.store.List(ctx, f)
}

// transition applies rule to the stored request and commits the result
// with a compare-and-swap, re-reading and re-applying the rule when another
// writer got there first. The rule's error is returned after its changes
// (if any) are committed.
func (s *Service) transition(ctx context.Context, id string, rule func(*Request, time.Time) ([]change, error)) (*Request, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	// Transitions of one request in this Service run one at a time, so
	// its events are queued in commit order; other writers are the
	// compare-and-swap's business.
	unlock, err := s.locks.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	for attempt := 0; ; attempt++ {
		r, err := s.store.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		now := s.now()
		changes, ruleErr := rule(r, now)
		if len(changes) == 0 {
			if ruleErr != nil {
				return nil, ruleErr
			}
			return r, nil
		}
		r.UpdatedAt = now
		err = s.store.Update(ctx, r)
		if errors.Is(err, ErrConflict) && attempt < maxConflicts {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.committed(r, changes, now)
		if ruleErr != nil {
			return nil, ruleErr
		}
		return r.Clone(), nil
	}
}

// committed reports a committed transition: log, events, local waiters.
func (s *Service) committed(r *Request, changes []change, at time.Time) {
	for _, c := range changes {
		attrs := []any{
			slog.String("event", c.typ),
			slog.String("approval_id", r.ID),
			slog.String("state", string(r.State)),
			slog.String("resource", r.Resource),
		}
		if c.actor != nil {
			attrs = append(attrs, slog.String("actor_sub", c.actor.Sub), slog.String("actor_iss", c.actor.Iss))
		}
		s.log.Info("approval transition", attrs...)
		s.events.push(Event{Type: c.typ, Request: *r.Clone(), Actor: c.actor, At: at})
	}
	s.wake(r.ID)
}

// Wait blocks until request id is no longer pending and returns it
// (approved, denied, expired, withdrawn or consumed), whichever replica
// decided it. It expires the request itself when its time comes. It
// returns ctx.Err() when ctx is done, without withdrawing the request (the
// caller decides), and ErrClosed when the Service closes. Store errors are
// retried with backoff for as long as the request could still be decided
// (until its ExpiresAt, at least waitRetries times); then Wait returns the
// last one, and the request stays in the store for the sweep to expire.
func (s *Service) Wait(ctx context.Context, id string) (*Request, error) {
	wake := s.addWaiter(id)
	defer s.removeWaiter(id, wake)
	var known *Request // the last successful read
	failures := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.ctx.Err() != nil {
			return nil, ErrClosed
		}
		r, err := s.store.Get(ctx, id)
		if err == nil && r.State == StatePending && due(r, s.now()) {
			r, err = s.expireDue(ctx, id)
		}
		if err != nil {
			switch {
			case errors.Is(err, ErrNotFound), errors.Is(err, ErrClosed), errors.Is(err, ErrStoreClosed), errors.Is(err, ErrCorrupt):
				return nil, err
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case s.ctx.Err() != nil:
				return nil, ErrClosed
			}
			failures++
			if failures > waitRetries && (known == nil || !s.now().Before(known.ExpiresAt)) {
				return nil, fmt.Errorf("approval: wait for %s: %w", id, err)
			}
			s.log.Warn("approval wait: store read failed", slog.String("approval_id", id),
				slog.Int("failures", failures), slog.Any("error", err))
			if err := s.sleep(ctx, min(time.Duration(failures)*waitRetryStep, waitRetryMax)); err != nil {
				return nil, err
			}
			continue
		}
		failures = 0
		known = r
		if r.State != StatePending {
			return r, nil
		}
		timer := time.NewTimer(r.ExpiresAt.Sub(s.now()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-s.ctx.Done():
			timer.Stop()
			return nil, ErrClosed
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// Retries of Wait's store reads: the pause grows by waitRetryStep per
// failure up to waitRetryMax.
const (
	waitRetries   = 8
	waitRetryStep = 250 * time.Millisecond
	waitRetryMax  = 5 * time.Second
)

func (s *Service) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrClosed
	case <-t.C:
		return nil
	}
}

func (s *Service) addWaiter(id string) chan struct{} {
	ch := make(chan struct{}, 1)
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	if s.waiters[id] == nil {
		s.waiters[id] = make(map[chan struct{}]struct{})
	}
	s.waiters[id][ch] = struct{}{}
	return ch
}

func (s *Service) removeWaiter(id string, ch chan struct{}) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	delete(s.waiters[id], ch)
	if len(s.waiters[id]) == 0 {
		delete(s.waiters, id)
	}
}

// wake nudges the waiters of id to re-read it; "" nudges every waiter.
func (s *Service) wake(id string) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	nudge := func(set map[chan struct{}]struct{}) {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	if id != "" {
		nudge(s.waiters[id])
		return
	}
	for _, set := range s.waiters {
		nudge(set)
	}
}

// feedLoop wakes waiters for changes any writer of the store made.
func (s *Service) feedLoop(changes <-chan string) {
	defer s.loops.Done()
	for id := range changes {
		s.wake(id)
	}
	if s.ctx.Err() == nil {
		s.log.Warn("approval: the store's change feed ended; waits rely on expiry alone")
	}
}

func (s *Service) sweepLoop() {
	defer s.loops.Done()
	t := time.NewTicker(s.sweepIv)
	defer t.Stop()
	failing := false // logged once per outage, not once per sweep
	for {
		err := s.sweep()
		switch {
		case err != nil && !failing && s.ctx.Err() == nil && !errors.Is(err, ErrStoreClosed):
			failing = true
			s.log.Warn("approval sweep: store query failed", slog.Any("error", err))
		case err == nil && failing:
			failing = false
			s.log.Info("approval sweep: store reachable again")
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep expires every live request whose time has come. It returns the
// error of the store query; failures to expire one request are logged.
func (s *Service) sweep() error {
	for s.ctx.Err() == nil {
		due, err := s.store.Due(s.ctx, s.now(), sweepBatch)
		if err != nil {
			return err
		}
		progress := false
		for _, r := range due {
			if _, err := s.expireDue(s.ctx, r.ID); err != nil {
				if s.ctx.Err() == nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrStoreClosed) {
					s.log.Warn("approval sweep: expiry failed", slog.String("approval_id", r.ID), slog.Any("error", err))
				}
				continue
			}
			progress = true
		}
		if len(due) < sweepBatch || !progress {
			return nil
		}
	}
	return nil
}

// Close stops the loops, ends every Wait with ErrClosed, lets operations
// in flight finish and delivers the queued events. It does not close the
// store. Later calls return ErrClosed.
func (s *Service) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	s.cancel()
	s.loops.Wait()
	s.events.close()
	return nil
}

// eventQueue hands events to OnEvent from one goroutine, in order, without
// ever blocking the goroutine that pushes.
type eventQueue struct {
	fn   func(Event)
	log  *slog.Logger
	mu   sync.Mutex
	q    []Event
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newEventQueue(fn func(Event), log *slog.Logger) *eventQueue {
	e := &eventQueue{fn: fn, log: log, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if fn == nil {
		close(e.done)
		return e
	}
	go e.run()
	return e
}

func (e *eventQueue) push(ev Event) {
	if e.fn == nil {
		return
	}
	e.mu.Lock()
	e.q = append(e.q, ev)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *eventQueue) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		batch := e.q
		e.q = nil
		e.mu.Unlock()
		for _, ev := range batch {
			e.deliver(ev)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-e.wake:
		case <-e.stop:
			e.mu.Lock()
			empty := len(e.q) == 0
			e.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

func (e *eventQueue) deliver(ev Event) {
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("approval: OnEvent panicked", slog.String("event", ev.Type),
				slog.String("approval_id", ev.Request.ID), slog.Any("panic", p))
		}
	}()
	e.fn(ev)
}

// close delivers what is queued and stops the goroutine.
func (e *eventQueue) close() {
	if e.fn != nil {
		close(e.stop)
	}
	<-e.done
}

// idLocks hands out one lock per request id, dropped when unused. A lock
// is a one-slot channel, so waiting for it honours the caller's context.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	slot  chan struct{}
	users int
}

func (l *idLocks) lock(ctx context.Context, id string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*idLock)
	}
	k := l.m[id]
	if k == nil {
		k = &idLock{slot: make(chan struct{}, 1)}
		l.m[id] = k
	}
	k.users++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		k.users--
		if k.users == 0 {
			delete(l.m, id)
		}
	}
	select {
	case k.slot <- struct{}{}:
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
	return func() {
		<-k.slot
		release()
	}, nil
}
