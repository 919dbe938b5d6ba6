package pgfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/custos-dev/custos/internal/audit"
)

// AuditRecorder keeps pgfilter's audit records (Options.Audit);
// *audit.Journal is one. Append returns once the event is durable.
// EnqueueAs queues a statement's record for the next group commit,
// encoded from a template when one is given (NewTemplate makes it).
// Failing reports that records cannot be written now.
type AuditRecorder interface {
	Append(ctx context.Context, ev audit.Event) (uint64, error)
	EnqueueAs(ctx context.Context, t *audit.Template, ev audit.Event, d audit.Durability) *audit.Pending
	NewTemplate(name string, ev audit.Event) (*audit.Template, error)
	Failing() bool
}

// AuthFailureRecorder records refused tokens by the token's fingerprint
// (Options.AuthFailures); *audit.AuthFailures is one.
type AuthFailureRecorder interface {
	Record(ctx context.Context, ev audit.Event, token string) error
}

// auditAppendTimeout bounds recording one session event (a stuck disk
// must not hold a handshake forever).
const auditAppendTimeout = 5 * time.Second

// maxTemplatesPerSession bounds a session's statement templates; past it
// they are dropped and made again.
const maxTemplatesPerSession = 256

// errStatementUnrecorded refuses a statement on cardholder data while the
// journal cannot be written.
var errStatementUnrecorded = errors.New("audit journal unavailable")

// JournalRecorder records a session's authentication, start and end and
// its statements in Options.Audit. New uses one when Options.Audit is
// set; its SessionEvent has the form of Options.OnSessionEvent and it is
// a StatementRecorder. A session's statement templates are dropped when
// SessionEvent is told the session closed.
//
// An event that cannot be recorded is passed to Options.OnAuditFailure
// (else logged); with Options.AuditFailClosed, a session on a resource
// marked cardholder data whose start cannot be recorded is refused, and
// so are its statements while the journal cannot be written or when one's
// record cannot be kept.
type JournalRecorder struct {
	j            AuditRecorder
	authFailures AuthFailureRecorder
	failClosed   bool
	onFailure    func(event string, err error)

	// templates holds each open session's statement templates
	// (*sessionTemplates by session id), dropped when the session closes.
	templates sync.Map
}

// NewJournalRecorder returns the recorder of opts.Audit, with
// opts.AuthFailures, opts.AuditFailClosed and opts.OnAuditFailure; nil
// when opts.Audit is nil.
func NewJournalRecorder(opts Options) *JournalRecorder {
	if opts.Audit == nil {
		return nil
	}
	r := &JournalRecorder{j: opts.Audit, authFailures: opts.AuthFailures, failClosed: opts.AuditFailClosed, onFailure: opts.OnAuditFailure}
	if r.onFailure == nil {
		log := opts.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		r.onFailure = func(event string, err error) {
			log.Error("audit event not recorded", "event", event, "error", err.Error(),
				"unavailable", errors.Is(err, audit.ErrUnavailable))
		}
	}
	return r
}

// append records ev and waits until it is durable; a failure is reported
// and returned.
func (r *JournalRecorder) append(ev audit.Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), auditAppendTimeout)
	defer cancel()
	if _, err := r.j.Append(ctx, ev); err != nil {
		r.onFailure(ev.Name, err)
		return err
	}
	return nil
}

// recordAuthFailure records a refused authentication through the
// aggregator when there is one (token is the token's fingerprint); a
// failure is reported and returned.
func (r *JournalRecorder) recordAuthFailure(ev audit.Event, token string) error {
	if r.authFailures == nil {
		return r.append(ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), auditAppendTimeout)
	defer cancel()
	if err := r.authFailures.Record(ctx, ev, token); err != nil {
		r.onFailure(ev.Name, err)
		return err
	}
	return nil
}

// SessionEvent records a connection's authentication, session start or
// end, before the client hears of it.
//
// A session on a resource marked cardholder data whose start cannot be
// recorded is refused (the error) when the recorder fails closed.
func (r *JournalRecorder) SessionEvent(ev SessionEvent) error {
	e := audit.Event{
		Time:         ev.Time,
		UserID:       ev.User, // the claimed user until a token is verified
		DBSystem:     audit.DBSystemPostgreSQL,
		DBNamespace:  ev.Database,
		ResourceType: "postgres",
		Attrs:        []audit.Attr{audit.String("custos.pg.user", ev.User), audit.Bool("custos.tls", ev.TLS)},
	}
	e.ClientAddress, e.ClientPort = splitAddr(ev.ClientAddr)
	e.TraceID, e.SpanID = ev.SpanContext.TraceID(), ev.SpanContext.SpanID()
	if res := ev.Resource; res != nil {
		e.Resource, e.ResourceType, e.DBNamespace = res.Name, res.Type, res.Database
	}
	if p := ev.Principal; p != nil {
		e.SetPrincipal(p)
	}
	if s := ev.Session; s != nil {
		e.SessionID = s.ID
		// The PostgreSQL role the session runs as upstream: what the
		// database's own logs and views name for it.
		if s.Resource != nil {
			e.Attrs = append(e.Attrs, audit.String("custos.pg.upstream_user", s.UpstreamUser()))
		}
		if app := s.Params["application_name"]; app != "" {
			e.Attrs = append(e.Attrs, audit.String("custos.pg.application_name", app))
		}
	}
	if ev.Err != nil {
		e.Error = ev.Err.Error()
	}
	switch ev.Kind {
	case SessionAuthFailed:
		e.Name, e.Outcome, e.ErrorType = audit.EventAuthFailed, audit.OutcomeFailure, ev.Reason
		return r.recordAuthFailure(e, ev.TokenFingerprint)
	case SessionAuthSucceeded:
		e.Name, e.Outcome = audit.EventAuthSucceeded, audit.OutcomeSuccess
	case SessionOpened:
		e.Name, e.Outcome = audit.EventConnectionOpened, audit.OutcomeSuccess
	case SessionRefused:
		e.Name, e.Outcome, e.ErrorType = audit.EventConnectionOpened, audit.OutcomeFailure, ev.Reason
		if ev.Reason == "session_limit" || ev.Reason == "session_rate" {
			e.Outcome = audit.OutcomeDenied
		}
	case SessionClosed:
		if ev.Session != nil {
			r.templates.Delete(ev.Session.ID)
		}
		e.Name, e.Outcome = audit.EventConnectionClosed, audit.OutcomeSuccess
		e.Duration, e.Masked, e.SADDropped = ev.Duration, ev.MaskedPANs, ev.RemovedSAD
		e.Attrs = append(e.Attrs, audit.String("custos.connection.close_reason", ev.Reason))
	default:
		return nil
	}
	err := r.append(e)
	if err != nil && ev.Kind == SessionOpened && r.failClosed && ev.Resource != nil && ev.Resource.CardholderData() {
		return fmt.Errorf("audit journal: %w", err)
	}
	return nil
}

// Admit implements StatementRecorder: while the journal cannot write,
// statements on cardholder data are refused before they run.
func (r *JournalRecorder) Admit(s *Session) error {
	if r.failClosed && s.Resource.CardholderData() && r.j.Failing() {
		return errStatementUnrecorded
	}
	return nil
}

// Record implements StatementRecorder: it queues the statement's record
// for the next group commit and returns at once. What a session's
// statements share (who, from where, on what; the statement's text) is
// encoded once per session and text, in a template.
func (r *JournalRecorder) Record(ev *StatementEvent) Durable {
	s := ev.Session
	e := audit.Event{
		Time:          ev.Start,
		DBCollections: ev.Collections,
		DBStatusCode:  ev.SQLState,
		ApprovalID:    ev.ApprovalID,
		Rows:          ev.Rows,
		Masked:        ev.Masked,
		SADDropped:    ev.SAD,
		Duration:      ev.Duration,
		Error:         ev.Error,
		PANSources:    ev.PANSources,
		TraceID:       ev.SpanContext.TraceID(),
		SpanID:        ev.SpanContext.SpanID(),
	}
	switch ev.Outcome {
	case StatementSucceeded:
		e.Outcome = audit.OutcomeSuccess
	case StatementDenied:
		e.Outcome = audit.OutcomeDenied
	default:
		e.Outcome = audit.OutcomeFailure
	}
	if ev.SQLState != "" {
		e.ErrorType = ev.SQLState
	}
	var attrs [8]audit.Attr
	e.Attrs = append(attrs[:0],
		audit.Int("custos.statement.seq", ev.Seq),
		audit.String("custos.pg.protocol", ev.Protocol),
		audit.Int("custos.duration_us", ev.Duration.Microseconds()))
	if d := ev.Decision; d != nil {
		e.Decision, e.DecisionID, e.Reasons = d.Label(), d.ID, d.Reasons
		if d.PolicyVersion != "" {
			e.Attrs = append(e.Attrs, audit.String(audit.AttrPolicyVersion, d.PolicyVersion))
		}
	}
	if ev.ApprovalWait > 0 {
		e.Attrs = append(e.Attrs, audit.Int("custos.approval.wait_ms", ev.ApprovalWait.Milliseconds()))
	}
	if len(ev.Columns) > 0 || len(ev.ResultRows) > 0 {
		e.Attrs = append(e.Attrs, audit.Strings("custos.result.columns", ev.Columns),
			audit.Strings("custos.result.rows", ev.ResultRows), audit.Bool("custos.result.truncated", ev.Truncated))
	}
	durability := audit.Written
	if ev.NeedsSync() {
		durability = audit.Synced
	}
	t := r.statementTemplate(ev)
	if t == nil {
		e.Name = audit.EventStatement
		statementStatic(&e, ev)
	}
	p := r.j.EnqueueAs(context.Background(), t, e, durability)
	return &statementRecord{r: r, p: p, failClosed: r.failClosed && s.Resource.CardholderData()}
}

// statementStatic sets what a session's statements with ev's text share.
func statementStatic(e *audit.Event, ev *StatementEvent) {
	s := ev.Session
	e.SetPrincipal(s.Principal)
	e.ClientAddress, e.ClientPort = splitAddr(s.ClientAddr)
	e.SessionID, e.Resource, e.ResourceType = s.ID, s.Resource.Name, "postgres"
	e.DBSystem, e.DBNamespace = audit.DBSystemPostgreSQL, s.Resource.Database
	e.DBOperation, e.DBQueryText, e.DBQueryFingerprint = ev.Operation, ev.Text, ev.Fingerprint
}

// sessionTemplates are the statement templates of one session, by text.
type sessionTemplates struct {
	mu     sync.Mutex
	byText map[templateKey]*audit.Template
}

type templateKey struct{ text, fingerprint, operation string }

// statementTemplate returns the template of ev's session and text, made
// on first use; nil when none can be made (the event is then recorded
// whole).
func (r *JournalRecorder) statementTemplate(ev *StatementEvent) *audit.Template {
	v, ok := r.templates.Load(ev.Session.ID)
	if !ok {
		v, _ = r.templates.LoadOrStore(ev.Session.ID, &sessionTemplates{byText: map[templateKey]*audit.Template{}})
	}
	st := v.(*sessionTemplates)
	k := templateKey{ev.Text, ev.Fingerprint, ev.Operation}
	st.mu.Lock()
	defer st.mu.Unlock()
	if t, ok := st.byText[k]; ok {
		return t
	}
	var e audit.Event
	statementStatic(&e, ev)
	t, err := r.j.NewTemplate(audit.EventStatement, e)
	if err != nil {
		return nil
	}
	if len(st.byText) >= maxTemplatesPerSession {
		clear(st.byText)
	}
	st.byText[k] = t
	return t
}

// statementRecord is a statement's record on its way to the journal.
type statementRecord struct {
	r          *JournalRecorder
	p          *audit.Pending
	failClosed bool
}

// Wait implements Durable: a record that cannot be kept is reported, and
// fails the statement only on cardholder data when the recorder fails
// closed.
func (d *statementRecord) Wait(ctx context.Context) error {
	if _, err := d.p.Wait(ctx); err != nil {
		d.r.onFailure(audit.EventStatement, err)
		if d.failClosed {
			return fmt.Errorf("audit journal: %w", err)
		}
	}
	return nil
}
