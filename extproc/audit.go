package extproc

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/policy"
)

// Recorder records audit events; *audit.Journal is one. Append returns
// once the event is durable, or an error when it is not recorded.
type Recorder interface {
	Append(ctx context.Context, ev audit.Event) (uint64, error)
}

// durableRecorder is a Recorder that can keep a record with less than a
// fsync before it returns (*audit.Journal).
type durableRecorder interface {
	AppendAs(ctx context.Context, ev audit.Event, d audit.Durability) (uint64, error)
}

// AuthFailureRecorder records refused tokens by the token's fingerprint
// (authn.TokenFingerprint); *audit.AuthFailures is one.
type AuthFailureRecorder interface {
	Record(ctx context.Context, ev audit.Event, token string) error
}

// auditTimeout bounds recording one event.
const auditTimeout = 5 * time.Second

// record appends ev to the journal, if there is one. It reports whether
// the event is durable (true without a journal); a caller that has not
// yet let the request through refuses it otherwise.
func (s *Server) record(ctx context.Context, ev audit.Event) bool {
	return s.recordAs(ctx, ev, audit.Synced)
}

// recordAs is record for a record that needs only d before it returns.
func (s *Server) recordAs(ctx context.Context, ev audit.Event, d audit.Durability) bool {
	if s.opts.Audit == nil {
		return true
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !ev.TraceID.IsValid() {
		ev.TraceID, ev.SpanID = sc.TraceID(), sc.SpanID()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	var err error
	if dr, ok := s.opts.Audit.(durableRecorder); ok {
		_, err = dr.AppendAs(ctx, ev, d)
	} else {
		_, err = s.opts.Audit.Append(ctx, ev)
	}
	if err != nil {
		s.log.Error("audit event not recorded", slog.String("event", ev.Name),
			slog.String("decision_id", ev.DecisionID), slog.Any("error", err))
		return false
	}
	return true
}

// recordAuthFailure records a request refused for its token (token is
// the token's fingerprint, "" without one): through
// Options.AuthFailures when set, which records the first failure of a
// source, reason and token at once and aggregates repeats, else as one
// record each.
func (s *Server) recordAuthFailure(ctx context.Context, ev audit.Event, token string) {
	if s.opts.AuthFailures == nil {
		s.record(ctx, ev)
		return
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		ev.TraceID, ev.SpanID = sc.TraceID(), sc.SpanID()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := s.opts.AuthFailures.Record(ctx, ev, token); err != nil {
		s.log.Error("audit event not recorded", slog.String("event", ev.Name),
			slog.String("reason", ev.ErrorType), slog.Any("error", err))
	}
}

// grantEvent is the audit event of a request the grant let through, as
// far as it got.
func (st *procStream) grantEvent() audit.Event {
	ev := audit.Event{
		Name:         audit.EventHTTPRequest,
		SessionID:    st.requestID,
		HTTPMethod:   st.method,
		URLPath:      pathOnly(st.path),
		PANSources:   []string{st.path},
		Duration:     time.Since(st.started),
		Masked:       int64(st.masked.PANs),
		SADDropped:   int64(st.masked.SAD),
		ApprovalID:   st.approvalID,
		ResourceType: "http",
	}
	if g := st.grant; g != nil {
		ev.UserID, ev.EndUserID, ev.Issuer, ev.Groups = g.Sub, g.Act, g.Iss, g.Groups
		ev.ClientAddress = g.ClientAddress
		ev.Resource, ev.ResourceType = g.Resource, g.ResourceType
		ev.DecisionID, ev.Reasons = g.DecisionID, g.Reasons
		ev.Decision = decisionAllow
		if g.Outcome == policy.OutcomeApprove {
			ev.Decision = decisionApproval
		}
	}
	return ev
}

// Values of audit.Event.Decision.
const (
	decisionAllow    = "allow"
	decisionDeny     = "deny"
	decisionApproval = "approval_required"
)

// recordResponse records the request once its response is settled: the
// upstream's status, what was masked. It reports whether the event is
// durable.
func (st *procStream) recordResponse() bool {
	if st.recorded {
		return true
	}
	st.recorded = true
	ev := st.grantEvent()
	code, _ := strconv.Atoi(st.resp.status)
	ev.HTTPStatusCode = code
	ev.Outcome = audit.OutcomeSuccess
	if code >= 400 {
		ev.Outcome = audit.OutcomeFailure
	}
	// A read whose response custos did not mask is written before the
	// reply goes on, fsynced within audit.sync_interval; anything parked,
	// masked or not a read is fsynced first.
	d := audit.Synced
	if (st.method == "GET" || st.method == "HEAD") && st.grant != nil && st.grant.Outcome == policy.OutcomeAllow &&
		st.approvalID == "" && st.masked.PANs == 0 && st.masked.SAD == 0 {
		d = audit.Written
	}
	return st.s.recordAs(st.ctx, ev, d)
}

// recordRefusal records a request custos' ext_proc refused or ended.
func (st *procStream) recordRefusal(outcome audit.Outcome, code int, reason string) {
	if st.recorded || st.method == "" && st.grant == nil {
		return // done, or nothing seen
	}
	st.recorded = true
	ev := st.grantEvent()
	ev.Outcome = outcome
	ev.HTTPStatusCode = code
	ev.Error = reason
	st.s.record(st.ctx, ev)
}
