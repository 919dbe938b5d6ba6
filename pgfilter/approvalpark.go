package pgfilter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/internal/sqlclass"
)

// withdrawTimeout bounds recording a withdrawal after the wait ended.
const withdrawTimeout = 5 * time.Second

// parks reports whether dec sends the statement to approvers rather than
// refusing it outright.
func (h *policyHook) parks(dec *policy.Decision) bool {
	return dec != nil && dec.Allow && dec.RequireApproval != nil && h.srv.opts.Approvals != nil && h.relay != nil
}

// parkOutcome is how parking a statement ended; the policy hook applies
// it to its own state.
type parkOutcome struct {
	// approvalID is the approval request recorded for the statement, ""
	// when none was.
	approvalID string
	// refusal is the client's answer when the statement does not run
	// (denied, expired, cancelled, or the approval machinery failing
	// closed). With a nil err, a nil refusal means the statement was
	// approved and the approval consumed: the message goes upstream
	// exactly as it arrived.
	refusal *pgproto3.ErrorResponse
	// err ends the session (the client went away, the session is ending).
	err error
}

// pendingApproval is an approval request recorded for a statement about
// to be parked.
type pendingApproval struct {
	req  *approval.Request
	hash string // what the approval is pinned to
	dec  *policy.Decision
}

// requestApproval records the approval request for a statement (text,
// with the parameters of bind, nil for a Query) that dec sends to
// approvers. It returns the client's answer instead when the request
// cannot be recorded. It reads no mutable hook state.
func (h *policyHook) requestApproval(ctx context.Context, dec *policy.Decision, res *sqlclass.Result,
	stmts []sqlclass.Statement, text string, bind []byte,
) (*pendingApproval, *pgproto3.ErrorResponse) {
	svc := h.srv.opts.Approvals
	ra := dec.RequireApproval
	p := h.ses.Principal
	requester := approval.PrincipalOf(p)
	params, err := bindParams(bind)
	if err != nil {
		return nil, denyResponse("approval required, but custos could not read the statement's parameters to pin them: "+err.Error(), dec.ID)
	}
	hash := approval.PinHash(requester, h.ses.Resource.Name, approval.KindSQL, text, params)
	req, err := svc.Request(ctx, approval.NewRequest{
		Hash:           hash,
		Requester:      requester,
		Resource:       h.ses.Resource.Name,
		Kind:           approval.KindSQL,
		Summary:        res.Normalized,
		Detail:         h.maskedText(text),
		Flags:          statementFlags(stmts),
		Reasons:        dec.Reasons,
		DecisionID:     dec.ID,
		SessionID:      h.ses.ID,
		ApproverGroups: ra.ApproverGroups,
		Quorum:         ra.Quorum,
		TTL:            ra.TTLDuration(),
	})
	if err != nil {
		h.srv.log.Error("approval request could not be recorded", "session_id", h.ses.ID, "decision_id", dec.ID, "error", err)
		resp := denyResponse("approval required, but custos could not record the request; the statement was not run", dec.ID)
		resp.Hint = "Retry later; the incident is logged."
		return nil, resp
	}
	h.srv.metrics.parked.WithLabelValues("requested").Inc()
	h.srv.log.Info("statement parked for approval", "session_id", h.ses.ID, "approval_id", req.ID,
		"decision_id", dec.ID, "principal", p.Subject, "approver_groups", strings.Join(req.ApproverGroups, ","))
	return &pendingApproval{req: req, hash: hash, dec: dec}, nil
}

// awaitDecision parks the client's current message on the relay until
// approvers decide on pa: the client is sent notice first, and is read
// meanwhile (see session.hold). It returns the request as decided, or why
// the wait stopped without a decision, and touches no hook state.
//
// It is the one place h.mu is released while a client message is being
// decided: a parked statement waits for a human, and meanwhile the
// server-to-client pump must keep taking h.mu to relay what the server
// still sends (answers to earlier messages, notices, notifications). h.mu
// is held on entry and again on return.
func (h *policyHook) awaitDecision(ctx context.Context, pa *pendingApproval, notice *pgproto3.NoticeResponse) (*approval.Request, error) {
	h.mu.Unlock()
	defer h.mu.Lock()
	svc := h.srv.opts.Approvals
	var got *approval.Request
	err := h.relay.hold(ctx, func() error {
		return h.relay.SendToClient(notice)
	}, func(ctx context.Context) error {
		r, err := svc.Wait(ctx, pa.req.ID)
		got = r
		return err
	})
	return got, err
}

// concludePark turns how the wait for pa ended into the parking outcome:
// it withdraws a request nobody waits for any more, consumes an approval,
// and counts and logs the end of the wait.
func (h *policyHook) concludePark(ctx context.Context, pa *pendingApproval, got *approval.Request, werr error) parkOutcome {
	svc := h.srv.opts.Approvals
	req, dec := pa.req, pa.dec
	out := parkOutcome{approvalID: req.ID}

	switch {
	case werr == nil:
	case errors.Is(werr, errAnnounce):
		h.withdraw(ctx, req.ID, "the client could not be told of the request")
		out.err = werr
		return out
	case errors.Is(werr, errParkCancelled):
		h.withdraw(ctx, req.ID, "the client cancelled the statement")
		h.srv.metrics.parked.WithLabelValues("cancelled").Inc()
		out.refusal = &pgproto3.ErrorResponse{
			Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "57014",
			Message: "canceling statement due to user request",
			Detail:  "custos withdrew approval request " + req.ID + "; the statement was not run.",
		}
		return out
	case errors.Is(werr, errClientGone):
		h.withdraw(ctx, req.ID, "the client disconnected")
		h.srv.metrics.parked.WithLabelValues("client_gone").Inc()
		out.err = werr
		return out
	case ctx.Err() != nil:
		h.withdraw(ctx, req.ID, "the session ended before a decision")
		h.srv.metrics.parked.WithLabelValues("session_ended").Inc()
		out.err = ctx.Err()
		return out
	default:
		h.withdraw(ctx, req.ID, "custos could not follow the request")
		h.srv.metrics.parked.WithLabelValues("failed").Inc()
		h.srv.log.Error("approval wait failed", "session_id", h.ses.ID, "approval_id", req.ID, "error", werr)
		out.refusal = denyResponse("custos could not follow approval request "+req.ID+"; the statement was not run", dec.ID)
		return out
	}

	switch got.State {
	case approval.StateApproved:
		if _, err := svc.Consume(ctx, req.ID, pa.hash); err != nil {
			h.srv.metrics.parked.WithLabelValues("failed").Inc()
			h.srv.log.Warn("approved statement could not be run", "session_id", h.ses.ID, "approval_id", req.ID, "error", err)
			out.refusal = denyResponse(fmt.Sprintf("approval %s could not be used (%v); the statement was not run", req.ID, err), dec.ID)
			return out
		}
		h.srv.metrics.parked.WithLabelValues("approved").Inc()
		h.srv.log.Info("approved statement runs", "session_id", h.ses.ID, "approval_id", req.ID)
		out.err = h.relay.SendToClient(notice("custos: approval "+req.ID+" granted by "+voters(got)+"; the statement runs now", ""))
	case approval.StateDenied:
		h.srv.metrics.parked.WithLabelValues("denied").Inc()
		msg := "approval " + req.ID + " denied"
		if got.Denial != nil {
			msg += " by " + got.Denial.By.Sub
			if got.Denial.Reason != "" {
				msg += ": " + got.Denial.Reason
			}
		}
		out.refusal = denyResponse(msg, dec.ID)
	case approval.StateExpired:
		h.srv.metrics.parked.WithLabelValues("expired").Inc()
		resp := denyResponse(fmt.Sprintf("approval %s expired at %s without a decision", req.ID, got.ExpiresAt.Format(time.RFC3339)), dec.ID)
		resp.Hint = "Send the statement again to ask again."
		out.refusal = resp
	default:
		h.srv.metrics.parked.WithLabelValues("withdrawn").Inc()
		msg := fmt.Sprintf("approval %s is %s", req.ID, got.State)
		if got.Note != "" {
			msg += ": " + got.Note
		}
		out.refusal = denyResponse(msg+"; the statement was not run", dec.ID)
	}
	return out
}

// withdraw records that the parked client no longer waits, even when the
// session's context has ended.
func (h *policyHook) withdraw(ctx context.Context, id, note string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), withdrawTimeout)
	defer cancel()
	if _, err := h.srv.opts.Approvals.Withdraw(ctx, id, note); err != nil && !errors.Is(err, approval.ErrNotPending) {
		h.srv.log.Warn("approval request could not be withdrawn", "session_id", h.ses.ID, "approval_id", id, "error", err)
	}
}

// parkedNotice tells the client at once that its statement waits, for
// whom, until when, and how approvers decide.
func (h *policyHook) parkedNotice(r *approval.Request) *pgproto3.NoticeResponse {
	groups := strings.Join(r.ApproverGroups, ", ")
	msg := fmt.Sprintf("custos: approval %s required from %s (quorum %d); the statement waits for a decision until %s",
		r.ID, groups, r.Quorum, r.ExpiresAt.Format(time.RFC3339))
	hint := "Approve with: custos approvals approve " + r.ID
	if u := strings.TrimRight(h.srv.opts.ApprovalURL, "/"); u != "" {
		hint += ", or at " + u + "/approvals/" + r.ID
	}
	hint += ". Cancelling the statement withdraws the request."
	n := notice(msg, hint)
	n.Detail = "approval id: " + r.ID + "\ndecision id: " + r.DecisionID
	return n
}

func notice(msg, hint string) *pgproto3.NoticeResponse {
	return &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: msg, Hint: hint}
}

func voters(r *approval.Request) string {
	names := make([]string, 0, len(r.Approvals))
	for _, v := range r.Approvals {
		names = append(names, v.By.Sub)
	}
	if len(names) == 0 {
		return "the approvers"
	}
	return strings.Join(names, ", ")
}

// maskedText is the statement as approvers see it: card numbers masked.
func (h *policyHook) maskedText(text string) string {
	m := h.srv.opts.Masker
	if m == nil {
		return "" // approvers see the normalized statement only
	}
	out, _ := m.Text(nil, []byte(text), m.Default())
	return string(out)
}

func statementFlags(stmts []sqlclass.Statement) []string {
	var flags []string
	for _, st := range stmts {
		for _, f := range st.Flags {
			if !slices.Contains(flags, f) {
				flags = append(flags, f)
			}
		}
	}
	return flags
}

// bindParams returns what a Bind message pins: its parameter format codes
// (as one value) and each parameter value (nil for NULL). A nil bind pins
// nothing. What follows the parameter values is not read, and a
// parameter length below -1 pins NULL: the server refuses such a Bind.
func bindParams(bind []byte) ([][]byte, error) {
	if bind == nil {
		return nil, nil
	}
	var b bindMsg
	if _, err := b.decodeThrough(bind, bindParameters); err != nil {
		return nil, errMalformedBind
	}
	params := make([][]byte, 1, 1+b.Params.count())
	params[0] = bytes.Clone(b.ParamFormats)
	for _, v := range b.Params.all() {
		params = append(params, bytes.Clone(v))
	}
	return params, nil
}
