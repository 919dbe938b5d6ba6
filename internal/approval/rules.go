package approval

import (
	"crypto/subtle"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The rules of the state machine, as pure functions over a request. Each
// returns the events of the transition it made to r (none: nothing to
// commit) and the error for the caller. Both may be set: an approval that
// arrives after ExpiresAt commits the expiry and still fails.

// change is one event a transition produces; the committed request is
// added once the store has it.
type change struct {
	typ   string
	actor *Principal
}

// Notes for transitions the system makes.
const (
	noteExpiredPending  = "no decision before the request expired"
	noteExpiredApproved = "the approval was not used before it expired"
	noteWithdrawn       = "withdrawn by the client"
)

// due reports whether a live request has reached its expiry.
func due(r *Request, now time.Time) bool {
	return (r.State == StatePending || r.State == StateApproved) && !now.Before(r.ExpiresAt)
}

// expire ends a live request whose time has come.
func expire(r *Request, now time.Time) []change {
	if !due(r, now) {
		return nil
	}
	if r.State == StateApproved {
		r.Note = noteExpiredApproved
	} else {
		r.Note = noteExpiredPending
	}
	r.State = StateExpired
	return []change{{typ: EventExpired}}
}

// notPending explains why a request cannot be decided any more.
func notPending(r *Request) error {
	switch r.State {
	case StateExpired:
		return fmt.Errorf("%w: %w", ErrNotPending, ErrExpired)
	case StateConsumed:
		return fmt.Errorf("%w: %w", ErrNotPending, ErrConsumed)
	}
	return fmt.Errorf("%w (%s)", ErrNotPending, r.State)
}

// samePerson reports whether two principals may be one human: the same
// issuer and subject, or one acting for the other, or both acting for the
// same human. Names in act claims carry no issuer, so they are compared
// with subjects of any issuer, ignoring case: when in doubt, refuse.
func samePerson(a, b Principal) bool {
	if a.Iss == b.Iss && a.Sub == b.Sub {
		return true
	}
	if a.Act != "" && (strings.EqualFold(a.Act, b.Sub) || strings.EqualFold(a.Act, b.Act)) {
		return true
	}
	return b.Act != "" && strings.EqualFold(b.Act, a.Sub)
}

// checkDecider refuses principals that may not approve or deny r.
func checkDecider(r *Request, by Principal) error {
	if by.Sub == "" || by.Iss == "" {
		return fmt.Errorf("%w: the approver has no issuer or subject", ErrNotApprover)
	}
	if samePerson(r.Requester, by) {
		return ErrSelfApproval
	}
	for _, g := range by.Groups {
		if g != "" && slices.Contains(r.ApproverGroups, g) {
			return nil
		}
	}
	return fmt.Errorf("%w: needs one of %s", ErrNotApprover, strings.Join(r.ApproverGroups, ", "))
}

func approve(r *Request, by Principal, reason string, now time.Time) ([]change, error) {
	if r.State != StatePending {
		return nil, notPending(r)
	}
	if ch := expire(r, now); ch != nil {
		return ch, notPending(r)
	}
	if err := checkDecider(r, by); err != nil {
		return nil, err
	}
	if slices.ContainsFunc(r.Approvals, func(v Vote) bool { return samePerson(v.By, by) }) {
		return nil, ErrAlreadyVoted
	}
	actor := by.clone()
	r.Approvals = append(r.Approvals, Vote{By: actor.clone(), At: now, Reason: reason})
	changes := []change{{typ: EventApproved, actor: &actor}}
	if len(r.Approvals) >= max(r.Quorum, 1) {
		r.State = StateApproved
		changes = append(changes, change{typ: EventDecided, actor: &actor})
	}
	return changes, nil
}

func deny(r *Request, by Principal, reason string, now time.Time) ([]change, error) {
	if r.State != StatePending {
		return nil, notPending(r)
	}
	if ch := expire(r, now); ch != nil {
		return ch, notPending(r)
	}
	if err := checkDecider(r, by); err != nil {
		return nil, err
	}
	actor := by.clone()
	r.State = StateDenied
	r.Denial = &Vote{By: actor.clone(), At: now, Reason: reason}
	return []change{{typ: EventDenied, actor: &actor}}, nil
}

// withdraw ends a request whose client is gone. An approved request may be
// withdrawn too: its approval is void once the statement cannot run.
func withdraw(r *Request, reason string, now time.Time) ([]change, error) {
	if r.State != StatePending && r.State != StateApproved {
		return nil, notPending(r)
	}
	if ch := expire(r, now); ch != nil {
		return ch, notPending(r)
	}
	if reason == "" {
		reason = noteWithdrawn
	}
	actor := r.Requester.clone()
	r.State = StateWithdrawn
	r.Note = reason
	return []change{{typ: EventWithdrawn, actor: &actor}}, nil
}

func consume(r *Request, hash string, now time.Time) ([]change, error) {
	if subtle.ConstantTimeCompare([]byte(r.Hash), []byte(hash)) != 1 {
		return nil, ErrHashMismatch
	}
	switch r.State {
	case StateApproved:
	case StateExpired:
		return nil, fmt.Errorf("%w: %w", ErrNotApproved, ErrExpired)
	case StateConsumed:
		return nil, fmt.Errorf("%w: %w", ErrNotApproved, ErrConsumed)
	default:
		return nil, fmt.Errorf("%w (%s)", ErrNotApproved, r.State)
	}
	if ch := expire(r, now); ch != nil {
		return ch, fmt.Errorf("%w: %w", ErrNotApproved, ErrExpired)
	}
	actor := r.Requester.clone()
	r.State = StateConsumed
	return []change{{typ: EventConsumed, actor: &actor}}, nil
}
