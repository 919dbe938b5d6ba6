package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Decision is the answer to one request.
//
// Allow false refuses the request. Allow true with RequireApproval set means
// the request may run only once approved as RequireApproval says; a caller
// that cannot park it must refuse it. Allow true without RequireApproval runs
// it now. [Decision.Outcome] says which of the three a decision is.
type Decision struct {
	// ID is unique per decision, cached ones included ("dec_" and 16 hex
	// digits); it is returned to the client on a denial and audited.
	ID      string   `json:"id"`
	Allow   bool     `json:"allow"`
	Reasons []string `json:"reasons"`
	// RequireApproval is set when the request needs approval first.
	RequireApproval *Approval `json:"require_approval,omitempty"`
	// Mask says how to mask what the request returns.
	Mask *Mask `json:"mask,omitempty"`
	// Fsync asks that the request's audit record be fsynced before the
	// client sees its completion, whatever it touched (custos fsyncs those
	// that touched cardholder data or changed anything anyway).
	Fsync bool `json:"fsync,omitempty"`
	// Cached is true for a decision served from the decision cache.
	Cached bool `json:"cached,omitempty"`
	// PolicyVersion is the version of the policy that decided.
	PolicyVersion string `json:"policy_version,omitempty"`
}

// Approval says who must approve a request, how many of them, and how long
// the approval stays usable.
type Approval struct {
	ApproverGroups []string `json:"approver_groups"`
	Quorum         int      `json:"quorum"`
	TTL            string   `json:"ttl"`
}

// TTLDuration is TTL parsed; Decide only passes on approvals whose TTL parses
// to a positive duration.
func (a *Approval) TTLDuration() time.Duration {
	d, _ := time.ParseDuration(a.TTL)
	return d
}

// Mask says how results are masked. Strategies are the names of
// internal/mask: last4, bin_last4, redact, null, drop, hmac.
type Mask struct {
	// Columns maps result column names to a strategy.
	Columns map[string]string `json:"columns"`
	// JSONPaths maps JSON paths in HTTP bodies to a strategy.
	JSONPaths map[string]string `json:"json_paths"`
	// DetectPAN turns on PAN detection in every value.
	DetectPAN bool `json:"detect_pan"`
	// Reveal is how detected PANs are shown: last4 or bin_last4 ("" means
	// the masker's default).
	Reveal string `json:"reveal"`
}

// Outcome is what a decision lets happen.
type Outcome string

// The outcomes.
const (
	OutcomeAllow   Outcome = "allow"
	OutcomeApprove Outcome = "approve"
	OutcomeDeny    Outcome = "deny"
)

// Outcome is OutcomeDeny when Allow is false, OutcomeApprove when the
// request needs approval, and OutcomeAllow otherwise.
func (d *Decision) Outcome() Outcome {
	switch {
	case !d.Allow:
		return OutcomeDeny
	case d.RequireApproval != nil:
		return OutcomeApprove
	default:
		return OutcomeAllow
	}
}

// Label is the decision as audit records and traces name it
// (custos.decision): allow, deny or approval_required.
func (d *Decision) Label() string {
	switch d.Outcome() {
	case OutcomeDeny:
		return "deny"
	case OutcomeApprove:
		return "approval_required"
	}
	return "allow"
}

// clone copies d deeply enough that the copy can be handed out while d stays
// in the cache.
func (d *Decision) clone() *Decision {
	c := *d
	c.Reasons = slices.Clone(d.Reasons)
	if d.RequireApproval != nil {
		a := *d.RequireApproval
		a.ApproverGroups = slices.Clone(a.ApproverGroups)
		c.RequireApproval = &a
	}
	if d.Mask != nil {
		m := *d.Mask
		m.Columns = maps.Clone(m.Columns)
		m.JSONPaths = maps.Clone(m.JSONPaths)
		c.Mask = &m
	}
	return &c
}

// ErrMalformedDecision: the policy's decision does not have the shape
// policies/README.md documents (its "Decision" section).
var ErrMalformedDecision = errors.New("malformed decision")

// strategies are the masking strategies a decision may name.
var strategies = map[string]bool{
	"last4": true, "bin_last4": true, "redact": true, "null": true, "drop": true, "hmac": true,
}

// reveals are the values of mask.reveal.
var reveals = map[string]bool{"": true, "last4": true, "bin_last4": true}

type wireDecision struct {
	Allow           *bool         `json:"allow"`
	Reasons         []string      `json:"reasons"`
	RequireApproval *wireApproval `json:"require_approval"`
	Mask            *wireMask     `json:"mask"`
	Fsync           *bool         `json:"fsync"`
}

type wireApproval struct {
	ApproverGroups []string `json:"approver_groups"`
	Quorum         *int     `json:"quorum"`
	TTL            *string  `json:"ttl"`
}

type wireMask struct {
	Columns   map[string]string `json:"columns"`
	JSONPaths map[string]string `json:"json_paths"`
	DetectPAN bool              `json:"detect_pan"`
	Reveal    string            `json:"reveal"`
}

// parseDecision checks the JSON of a decision and converts it. Unknown fields
// are errors: a misspelt require_approval must not pass as an allow.
func parseDecision(raw []byte) (*Decision, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var w wireDecision
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedDecision, err)
	}
	if w.Allow == nil {
		return nil, fmt.Errorf("%w: no allow field", ErrMalformedDecision)
	}
	d := &Decision{Allow: *w.Allow, Reasons: w.Reasons, Fsync: w.Fsync != nil && *w.Fsync}
	if d.Reasons == nil {
		d.Reasons = []string{}
	}
	if a := w.RequireApproval; a != nil {
		if !d.Allow {
			return nil, fmt.Errorf("%w: require_approval on a denial (set allow to true)", ErrMalformedDecision)
		}
		approval, err := checkApproval(a)
		if err != nil {
			return nil, err
		}
		d.RequireApproval = approval
	}
	if m := w.Mask; m != nil {
		mask, err := checkMask(m)
		if err != nil {
			return nil, err
		}
		d.Mask = mask
	}
	return d, nil
}

func checkApproval(a *wireApproval) (*Approval, error) {
	if len(a.ApproverGroups) == 0 {
		return nil, fmt.Errorf("%w: require_approval.approver_groups is empty", ErrMalformedDecision)
	}
	if slices.Contains(a.ApproverGroups, "") {
		return nil, fmt.Errorf("%w: require_approval.approver_groups has an empty name", ErrMalformedDecision)
	}
	if a.Quorum == nil || *a.Quorum < 1 {
		q := "missing"
		if a.Quorum != nil {
			q = fmt.Sprint(*a.Quorum)
		}
		return nil, fmt.Errorf("%w: require_approval.quorum must be at least 1, not %s", ErrMalformedDecision, q)
	}
	if a.TTL == nil {
		return nil, fmt.Errorf("%w: require_approval.ttl is missing", ErrMalformedDecision)
	}
	ttl, err := time.ParseDuration(*a.TTL)
	if err != nil || ttl <= 0 {
		return nil, fmt.Errorf("%w: require_approval.ttl %q is not a positive duration", ErrMalformedDecision, *a.TTL)
	}
	return &Approval{ApproverGroups: a.ApproverGroups, Quorum: *a.Quorum, TTL: *a.TTL}, nil
}

func checkMask(m *wireMask) (*Mask, error) {
	for field, rules := range map[string]map[string]string{"columns": m.Columns, "json_paths": m.JSONPaths} {
		for _, key := range slices.Sorted(maps.Keys(rules)) {
			if key == "" {
				return nil, fmt.Errorf("%w: mask.%s has an empty key", ErrMalformedDecision, field)
			}
			if !strategies[rules[key]] {
				return nil, fmt.Errorf("%w: mask.%s[%q]: unknown strategy %q (want %s)",
					ErrMalformedDecision, field, key, rules[key], strategyNames())
			}
		}
	}
	if !reveals[m.Reveal] {
		return nil, fmt.Errorf("%w: mask.reveal %q is not last4 or bin_last4", ErrMalformedDecision, m.Reveal)
	}
	mask := &Mask{Columns: m.Columns, JSONPaths: m.JSONPaths, DetectPAN: m.DetectPAN, Reveal: m.Reveal}
	if mask.Columns == nil {
		mask.Columns = map[string]string{}
	}
	if mask.JSONPaths == nil {
		mask.JSONPaths = map[string]string{}
	}
	return mask, nil
}

func strategyNames() string {
	return strings.Join(slices.Sorted(maps.Keys(strategies)), ", ")
}
