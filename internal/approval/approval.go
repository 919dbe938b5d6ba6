package approval

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-dev/custos/internal/authn"
)

// State is where a request is in its life. See the package documentation
// for the transitions.
type State string

// The states of a request. Pending and approved are live; the others are
// terminal and never change.
const (
	StatePending   State = "pending"
	StateApproved  State = "approved"
	StateDenied    State = "denied"
	StateExpired   State = "expired"
	StateWithdrawn State = "withdrawn"
	StateConsumed  State = "consumed"
)

// States lists every state, live ones first.
var States = []State{StatePending, StateApproved, StateDenied, StateExpired, StateWithdrawn, StateConsumed}

// Valid reports whether s is one of States.
func (s State) Valid() bool { return slices.Contains(States, s) }

// Terminal reports whether s can no longer change.
func (s State) Terminal() bool {
	switch s {
	case StateDenied, StateExpired, StateWithdrawn, StateConsumed:
		return true
	}
	return false
}

// Kinds of request.
const (
	KindSQL  = "sql"
	KindHTTP = "http"
)

// Event types passed to Options.OnEvent.
const (
	EventRequested = "requested" // a request was parked
	EventApproved  = "approved"  // one approver voted for it (once per vote)
	EventDecided   = "decided"   // the quorum was reached: the request is approved
	EventDenied    = "denied"    // an approver denied it
	EventExpired   = "expired"   // its time ran out, pending or approved but unused
	EventWithdrawn = "withdrawn" // the client cancelled or went away
	EventConsumed  = "consumed"  // the approved statement or call was run
)

// Defaults applied by Service.Request.
const (
	DefaultTTL    = 15 * time.Minute
	DefaultQuorum = 1
)

// Errors. Test for them with errors.Is; an error may match several (an
// approval of an expired request matches ErrNotPending and ErrExpired).
var (
	ErrNotFound     = errors.New("approval: request not found")
	ErrNotPending   = errors.New("approval: request is no longer pending")
	ErrNotApproved  = errors.New("approval: request is not approved")
	ErrNotApprover  = errors.New("approval: not in an approver group of the request")
	ErrSelfApproval = errors.New("approval: requesters cannot decide their own request")
	ErrAlreadyVoted = errors.New("approval: approver has already voted")
	ErrHashMismatch = errors.New("approval: what would run differs from what was approved")
	ErrExpired      = errors.New("approval: request has expired")
	ErrConsumed     = errors.New("approval: approval has already been used")
	ErrInvalid      = errors.New("approval: invalid request")
	ErrClosed       = errors.New("approval: service closed")
	// ErrStoreClosed is returned by a Store used after its Close.
	ErrStoreClosed = errors.New("approval: store closed")
	// ErrSchemaTooNew refuses a store whose schema was migrated by a
	// newer build: this one would not know how to read it.
	ErrSchemaTooNew = errors.New("approval: the store's schema is newer than this build")
	// ErrCorrupt is returned for a stored request that does not decode
	// into a valid request.
	ErrCorrupt = errors.New("approval: stored request is corrupt")
	// ErrConflict is returned by Store.Update when the stored version is
	// not the expected one (another writer got there first), and by
	// Store.Create for an id that exists. Service retries on it.
	ErrConflict = errors.New("approval: concurrent update")
)

// Principal is an authenticated identity: the requester of a request or an
// approver. Two principals are the same person when Iss and Sub match.
type Principal struct {
	Sub    string   `json:"sub"`
	Iss    string   `json:"iss"`
	Groups []string `json:"groups,omitempty"`
	// Act names the human an agent acts for (the token's act claim,
	// RFC 8693), "" when the principal acts for itself.
	Act string `json:"act,omitempty"`
}

// PrincipalOf is the principal of a verified token: its issuer, subject
// and groups, and the human it acts for.
func PrincipalOf(p *authn.Principal) Principal {
	ap := Principal{Sub: p.Subject, Iss: p.Issuer, Groups: slices.Clone(p.Groups)}
	if p.Act != nil {
		ap.Act = p.Act.Subject
	}
	return ap
}

// Vote is one approver's approval or denial.
type Vote struct {
	By     Principal `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// Request is a parked statement (or HTTP call) waiting for, or holding, a
// human decision. Values returned by Service are copies: changing them
// changes nothing stored.
type Request struct {
	// ID is "apr_" followed by 26 random base32 characters.
	ID string `json:"id"`
	// Hash pins what will run (PinHash); Consume refuses any other.
	Hash      string    `json:"hash"`
	Requester Principal `json:"requester"`
	Resource  string    `json:"resource"`
	// Kind is KindSQL or KindHTTP.
	Kind string `json:"kind"`
	// Summary is the normalized statement, or "METHOD path": no literals.
	Summary string `json:"summary"`
	// Detail is the full statement text, PANs already masked by the caller.
	Detail         string    `json:"detail,omitempty"`
	Flags          []string  `json:"flags,omitempty"`
	Reasons        []string  `json:"reasons,omitempty"`
	DecisionID     string    `json:"decision_id,omitempty"`
	SessionID      string    `json:"session_id,omitempty"`
	ApproverGroups []string  `json:"approver_groups"`
	Quorum         int       `json:"quorum"`
	CreatedAt      time.Time `json:"created_at"`
	// ExpiresAt bounds both the wait for a decision and the use of an
	// approval: pending or approved at ExpiresAt means expired.
	ExpiresAt time.Time `json:"expires_at"`
	State     State     `json:"state"`
	// Approvals are the distinct approvers' votes, in order.
	Approvals []Vote `json:"approvals,omitempty"`
	// Denial is the vote that denied the request.
	Denial *Vote `json:"denial,omitempty"`
	// Note says why a request was withdrawn or expired.
	Note      string    `json:"note,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	// Holder is the replica (Options.Replica) holding the parked client.
	Holder string `json:"holder,omitempty"`
	// Version counts committed changes, from 1 at creation; stores use it
	// for compare-and-swap.
	Version int64 `json:"version"`
}

// Clone returns a deep copy of r.
func (r *Request) Clone() *Request {
	c := *r
	c.Requester = r.Requester.clone()
	c.Flags = slices.Clone(r.Flags)
	c.Reasons = slices.Clone(r.Reasons)
	c.ApproverGroups = slices.Clone(r.ApproverGroups)
	if r.Approvals != nil {
		c.Approvals = make([]Vote, len(r.Approvals))
		for i, v := range r.Approvals {
			c.Approvals[i] = v.clone()
		}
	}
	if r.Denial != nil {
		d := r.Denial.clone()
		c.Denial = &d
	}
	return &c
}

func (p Principal) clone() Principal {
	p.Groups = slices.Clone(p.Groups)
	return p
}

func (v Vote) clone() Vote {
	v.By = v.By.clone()
	return v
}

// String names a principal for messages: "sub (iss)", with the human it
// acts for.
func (p Principal) String() string {
	s := p.Sub + " (" + p.Iss + ")"
	if p.Act != "" {
		s += " for " + p.Act
	}
	return s
}

// NewRequest is what Service.Request parks.
type NewRequest struct {
	Hash           string
	Requester      Principal
	Resource       string
	Kind           string
	Summary        string
	Detail         string
	Flags          []string
	Reasons        []string
	DecisionID     string
	SessionID      string
	ApproverGroups []string
	// Quorum is the number of distinct approvers needed; 0 means
	// DefaultQuorum.
	Quorum int
	// TTL bounds the wait and the approval's use; 0 means DefaultTTL.
	TTL time.Duration
}

func (nr *NewRequest) validate() error {
	var problems []string
	if nr.Hash == "" {
		problems = append(problems, "hash is empty")
	}
	if nr.Requester.Sub == "" || nr.Requester.Iss == "" {
		problems = append(problems, "requester needs iss and sub")
	}
	if nr.Resource == "" {
		problems = append(problems, "resource is empty")
	}
	if nr.Kind != KindSQL && nr.Kind != KindHTTP {
		problems = append(problems, fmt.Sprintf("kind %q is neither %q nor %q", nr.Kind, KindSQL, KindHTTP))
	}
	if !slices.ContainsFunc(nr.ApproverGroups, func(g string) bool { return g != "" }) {
		problems = append(problems, "no approver group")
	}
	if nr.Quorum < 0 {
		problems = append(problems, "quorum is negative")
	}
	if nr.TTL < 0 {
		problems = append(problems, "ttl is negative")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}

// Filter selects requests for List.
type Filter struct {
	// State selects one state; "" selects all.
	State State
	// Holder selects the requests held by one replica (Request.Holder);
	// "" selects all.
	Holder string
	// After continues a listing: only the requests List orders after it
	// are selected (created before After.CreatedAt, or at that time with an
	// id below After.ID). Set it to the last request of the previous page
	// (CursorOf) to read every request a page at a time, however many
	// there are: requests created or changed meanwhile neither shift the
	// pages nor repeat one. The zero Cursor starts at the newest request.
	After Cursor
	// Limit caps the result; 0 means DefaultListLimit, and it is never more
	// than MaxListLimit.
	Limit int
}

// Cursor is a position in List's order (newest first): that of the request
// created at CreatedAt with id ID.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// CursorOf is the position of r in List's order.
func CursorOf(r *Request) Cursor { return Cursor{CreatedAt: r.CreatedAt, ID: r.ID} }

// IsZero reports whether c is the zero Cursor, the start of a listing.
func (c Cursor) IsZero() bool { return c.CreatedAt.IsZero() && c.ID == "" }

// List limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

func (f Filter) limit() int {
	switch {
	case f.Limit <= 0:
		return DefaultListLimit
	case f.Limit > MaxListLimit:
		return MaxListLimit
	}
	return f.Limit
}

// Event is one committed transition, passed to Options.OnEvent.
type Event struct {
	// Type is one of the Event* constants.
	Type string
	// Request is the request as committed by the transition.
	Request Request
	// Actor is who caused the transition: the requester for requested,
	// withdrawn and consumed, the voter for approved, decided and denied,
	// nil for expired.
	Actor *Principal
	At    time.Time
}

// pinDomain separates PinHash inputs from any other use of SHA-256.
const pinDomain = "custos approval pin v1"

// PinHash returns the hex SHA-256 that pins a request to what will run: the
// principal's issuer and subject, the resource, the kind and the exact text
// (the SQL statement, or the HTTP method, path and body digest as the
// caller renders them) and each bound parameter. Every field is length
// prefixed, so no two different inputs encode alike; a nil parameter (SQL
// NULL) differs from an empty one.
func PinHash(p Principal, resource, kind, text string, params [][]byte) string {
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(pinDomain))
	field([]byte(p.Iss))
	field([]byte(p.Sub))
	field([]byte(resource))
	field([]byte(kind))
	field([]byte(text))
	binary.BigEndian.PutUint64(n[:], uint64(len(params)))
	h.Write(n[:])
	for _, v := range params {
		if v == nil {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		field(v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// IDPrefix starts every request id.
const IDPrefix = "apr_"

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns IDPrefix and 128 random bits.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return IDPrefix + idEncoding.EncodeToString(b[:])
}
