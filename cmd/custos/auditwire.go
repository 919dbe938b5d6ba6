package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/audit"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/xds"
)

// Bounds of the audit wiring.
const (
	// auditAppendTimeout bounds one append of an event that is not on the
	// statement path (a stuck disk must not hold a handshake forever).
	auditAppendTimeout = 5 * time.Second
	// auditExportDrain is how long shutdown lets the OTLP export ship the
	// last records (custos.audit.stopped included); what is left goes at
	// the next start.
	auditExportDrain = 5 * time.Second
	// auditCloseTimeout bounds writing the last records at shutdown.
	auditCloseTimeout = 10 * time.Second
)

// eventXDSConfigServed records a new configuration served to Envoy over
// xDS: what Envoy enforces in front of custos changed.
const eventXDSConfigServed = "custos.xds.config_served"

// eventXDSRequestRefused records an xDS request refused because its node
// id is not configured: someone asked for Envoy's configuration.
const eventXDSRequestRefused = "custos.xds.request_refused"

// auditor keeps custos' audit journal: it opens it, hands it to pgfilter
// (which records its sessions, authentications and statements itself)
// and to extproc, records the other events (approvals, policy loads,
// discovery, xDS) and exports the journal as OTLP logs when configured. A
// zero journal (audit off) records nothing. An event that cannot be
// recorded is logged and counted; it never stops custos.
type auditor struct {
	j *audit.Journal
	// authFailures records refused tokens, of Postgres and of HTTP: the
	// first of a source, reason and token at once, repeats aggregated.
	authFailures *audit.AuthFailures

	log        *slog.Logger
	reg        prometheus.Registerer
	failClosed bool
	failures   *prometheus.CounterVec

	exp       *audit.Exporter
	expCancel context.CancelFunc
	expDone   chan struct{}

	mu     sync.Mutex // guards closed against new asynchronous appends
	closed bool
	async  sync.WaitGroup
}

// openAuditor opens the journal of the config's audit section in
// DATA_DIR/audit (the journal records custos.audit.started itself) and
// starts the OTLP export when it is on; getenv reads OTEL_* variables.
func openAuditor(ctx context.Context, cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, getenv func(string) string) (*auditor, error) {
	ac := cfg.Audit
	a := &auditor{log: log, reg: reg, failClosed: ac.IsFailClosed()}
	if !ac.IsEnabled() {
		log.Warn("audit journal is OFF: nothing is recorded as audit evidence")
		return a, nil
	}
	opts := audit.Options{
		DataDir:            cfg.DataDir,
		SigningKeyFile:     ac.SigningKeyFile,
		CheckpointInterval: ac.CheckpointInterval,
		SegmentBytes:       ac.SegmentBytes,
		SyncInterval:       config.DefaultAuditSyncInterval,
		CommitDelay:        config.DefaultAuditCommitDelay,
		Logger:             log,
		Registerer:         reg,
	}
	if ac.SyncInterval != nil {
		opts.SyncInterval = *ac.SyncInterval
	}
	if ac.CommitDelay != nil {
		opts.CommitDelay = *ac.CommitDelay
	}
	if ac.HMACKey != nil {
		key, err := ac.HMACKey.Read()
		if err != nil {
			return nil, fmt.Errorf("audit.hmac_key: %w", err)
		}
		opts.HMACKey = []byte(key)
	}
	j, err := audit.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	a.j = j
	a.authFailures = audit.NewAuthFailures(j, audit.AuthFailureOptions{Logger: log})
	a.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custos_audit_record_failures_total",
		Help: "Audit events custos could not record, by event name.",
	}, []string{"event"})
	if reg != nil {
		if err := reg.Register(a.failures); err != nil {
			a.closeAuthFailures()
			a.closeJournal()
			return nil, fmt.Errorf("audit metrics: %w", err)
		}
	}
	if ac.Export.OTLPEnabled(getenv) {
		if err := a.startExport(ctx, getenv); err != nil {
			a.close()
			return nil, err
		}
	}
	log.Info("audit journal open", "dir", j.Dir(), "journal_id", j.ID(), "seq", j.DurableSeq(),
		"otlp_export", a.exp != nil, "fail_closed", a.failClosed)
	return a, nil
}

// startExport runs the OTLP log export from the journal's cursor.
func (a *auditor) startExport(ctx context.Context, getenv func(string) string) error {
	exp, err := audit.NewOTLPLogExporter(ctx, getenv)
	if err != nil {
		return fmt.Errorf("audit.export.otlp: %w", err)
	}
	x, err := audit.NewExporter(audit.ExporterOptions{
		Journal: a.j, Exporter: exp, Logger: a.log.With("component", "audit_export"), Registerer: a.reg,
	})
	if err != nil {
		_ = exp.Shutdown(ctx)
		return fmt.Errorf("audit.export.otlp: %w", err)
	}
	xctx, cancel := context.WithCancel(context.Background())
	a.exp, a.expCancel, a.expDone = x, cancel, make(chan struct{})
	go func() {
		defer close(a.expDone)
		_ = x.Run(xctx)
	}()
	return nil
}

// enabled reports whether events are recorded.
func (a *auditor) enabled() bool { return a != nil && a.j != nil }

// record appends ev and waits until it is durable. A failure is logged,
// counted and returned.
func (a *auditor) record(ev audit.Event) error {
	if !a.enabled() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), auditAppendTimeout)
	defer cancel()
	if _, err := a.j.Append(ctx, ev); err != nil {
		a.recordFailed(ev.Name, err)
		return err
	}
	return nil
}

// recordFailed logs and counts an event that could not be recorded.
func (a *auditor) recordFailed(event string, err error) {
	a.failures.WithLabelValues(event).Inc()
	a.log.Error("audit event not recorded", "event", event, "error", err.Error(),
		"unavailable", errors.Is(err, audit.ErrUnavailable))
}

// recordAsync appends ev without making the caller wait (callers that
// must not block, like xDS stream callbacks); close waits for it.
func (a *auditor) recordAsync(ev audit.Event) {
	if !a.enabled() {
		return
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.failures.WithLabelValues(ev.Name).Inc()
		a.log.Error("audit event not recorded", "event", ev.Name, "error", audit.ErrClosed.Error())
		return
	}
	a.async.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.async.Done()
		_ = a.record(ev) // logged and counted
	}()
}

// close writes custos.audit.stopped and a last checkpoint (the journal
// does both on Close), gives the OTLP export a moment to ship them, and
// stops it. Call it after everything that records events has stopped.
func (a *auditor) close() {
	if !a.enabled() {
		return
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	a.mu.Unlock()
	a.async.Wait()
	a.closeAuthFailures() // before the journal: it writes the pending aggregates there
	a.closeJournal()
	if a.reg != nil {
		a.reg.Unregister(a.failures)
	}
	if a.exp == nil {
		return
	}
	deadline := time.Now().Add(auditExportDrain)
	for a.exp.Backlog() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	a.expCancel()
	<-a.expDone
	ctx, cancel := context.WithTimeout(context.Background(), auditCloseTimeout)
	defer cancel()
	if err := a.exp.Shutdown(ctx); err != nil {
		a.log.Warn("audit export shutdown failed", "error", err.Error())
	}
	if b := a.exp.Backlog(); b > 0 {
		a.log.Warn("audit records not exported yet; they are sent at the next start", "backlog", b)
	}
}

// closeAuthFailures writes the pending aggregates of repeated
// authentication failures.
func (a *auditor) closeAuthFailures() {
	ctx, cancel := context.WithTimeout(context.Background(), auditCloseTimeout)
	defer cancel()
	if err := a.authFailures.Close(ctx); err != nil {
		a.log.Error("audit: authentication failures not recorded", "error", err.Error())
	}
}

func (a *auditor) closeJournal() {
	ctx, cancel := context.WithTimeout(context.Background(), auditCloseTimeout)
	defer cancel()
	if err := a.j.Close(ctx); err != nil {
		a.log.Error("audit journal close failed", "error", err.Error())
	}
}

// pgfilterAudit sets pgfilter's audit options: the journal, which records
// the sessions and statements pgfilter builds, the aggregator of refused
// tokens, audit.fail_closed, and failures logged and counted. Audit off
// leaves o as it is.
func (a *auditor) pgfilterAudit(o *pgfilter.Options) {
	if !a.enabled() {
		return
	}
	o.Audit, o.AuthFailures, o.AuditFailClosed, o.OnAuditFailure = a.j, a.authFailures, a.failClosed, a.recordFailed
}

// approvalEvent records a transition of a parked request, with who caused
// it (the actor), the requester and what was parked.
func (a *auditor) approvalEvent(ev approval.Event) {
	if !a.enabled() {
		return
	}
	r := ev.Request
	e := audit.Event{
		Time:       ev.At,
		ApprovalID: r.ID,
		Resource:   r.Resource,
		SessionID:  r.SessionID,
		DecisionID: r.DecisionID,
		Reasons:    r.Reasons,
	}
	if p := ev.Actor; p != nil {
		e.UserID, e.Issuer, e.Groups, e.EndUserID = p.Sub, p.Iss, p.Groups, p.Act
	}
	switch r.Kind {
	case approval.KindSQL:
		e.ResourceType, e.DBSystem, e.DBQueryText = "postgres", audit.DBSystemPostgreSQL, r.Summary
	case approval.KindHTTP:
		e.ResourceType = "http"
		e.HTTPMethod, e.URLPath, _ = strings.Cut(r.Summary, " ")
	}
	attrs := []audit.Attr{
		audit.String(audit.AttrApprovalState, string(r.State)),
		audit.String("custos.approval.transition", ev.Type),
		audit.String("custos.approval.requester", r.Requester.Sub),
		audit.String("custos.approval.requester.issuer", r.Requester.Iss),
		audit.Int("custos.approval.quorum", int64(r.Quorum)),
	}
	if r.Requester.Act != "" {
		attrs = append(attrs, audit.String("custos.approval.requester.act", r.Requester.Act))
	}
	if len(r.ApproverGroups) > 0 {
		attrs = append(attrs, audit.Strings("custos.approval.approver_groups", r.ApproverGroups))
	}
	var approvers []string
	for _, v := range r.Approvals {
		approvers = append(approvers, v.By.Sub)
		if ev.Type == approval.EventApproved && ev.Actor != nil && v.By.Sub == ev.Actor.Sub && v.By.Iss == ev.Actor.Iss && v.Reason != "" {
			attrs = append(attrs, audit.String("custos.approval.reason", v.Reason))
		}
	}
	if d := r.Denial; d != nil {
		approvers = append(approvers, d.By.Sub)
		if d.Reason != "" {
			attrs = append(attrs, audit.String("custos.approval.reason", d.Reason))
		}
	}
	if len(approvers) > 0 {
		attrs = append(attrs, audit.Strings(audit.AttrApprovers, approvers))
	}
	if r.Note != "" {
		attrs = append(attrs, audit.String("custos.approval.note", r.Note))
	}
	if !r.ExpiresAt.IsZero() {
		attrs = append(attrs, audit.String("custos.approval.expires_at", r.ExpiresAt.UTC().Format(time.RFC3339Nano)))
	}
	e.Attrs = attrs
	switch ev.Type {
	case approval.EventRequested:
		e.Name, e.Outcome = audit.EventApprovalRequested, audit.OutcomePending
	case approval.EventApproved, approval.EventDecided:
		// approved is one vote; decided is the quorum reached.
		e.Name, e.Outcome = audit.EventApprovalDecided, audit.OutcomeSuccess
	case approval.EventDenied:
		e.Name, e.Outcome = audit.EventApprovalDecided, audit.OutcomeDenied
	case approval.EventExpired:
		// Nobody decided in time: the request did not run.
		e.Name, e.Outcome = audit.EventApprovalExpired, audit.OutcomeFailure
	case approval.EventWithdrawn:
		e.Name, e.Outcome = audit.EventApprovalWithdrawn, audit.OutcomeSuccess
	case approval.EventConsumed:
		e.Name, e.Outcome = audit.EventApprovalConsumed, audit.OutcomeSuccess
	default:
		e.Name, e.Outcome = "custos.approval."+ev.Type, audit.OutcomeSuccess
	}
	_ = a.record(e) // logged and counted
}

// policyReload records a load of the policy, the first included.
func (a *auditor) policyReload(ev policy.ReloadEvent) {
	if !a.enabled() {
		return
	}
	attrs := []audit.Attr{audit.String("custos.policy.source", ev.Source)}
	if ev.Version != "" {
		attrs = append(attrs, audit.String(audit.AttrPolicyVersion, ev.Version))
	}
	if ev.Previous != "" {
		attrs = append(attrs, audit.String("custos.policy.previous_version", ev.Previous))
	}
	e := audit.Event{Name: audit.EventPolicyLoaded, Outcome: audit.OutcomeSuccess, Attrs: attrs}
	if ev.Err != nil {
		e.Name, e.Outcome, e.ErrorType, e.Error = audit.EventPolicyReloadFail, audit.OutcomeFailure, "policy_invalid", ev.Err.Error()
	} else {
		e.Attrs = append(e.Attrs, audit.Int("custos.policy.files", int64(ev.Files)))
	}
	_ = a.record(e) // logged and counted
}

// xdsEvent records a change or refusal of the configuration served to
// Envoy; refusals are control failures (PCI DSS 10.7). It does not wait:
// xDS calls it from its stream callbacks.
func (a *auditor) xdsEvent(ev xds.Event) {
	if !a.enabled() {
		return
	}
	e := audit.Event{Time: ev.Time}
	var attrs []audit.Attr
	if len(ev.NodeIDs) > 0 {
		attrs = append(attrs, audit.Strings("custos.xds.node_ids", ev.NodeIDs))
	}
	if len(ev.Versions) > 0 {
		vs := make([]string, 0, len(ev.Versions))
		for _, typ := range slices.Sorted(maps.Keys(ev.Versions)) {
			vs = append(vs, typ+"="+ev.Versions[typ])
		}
		attrs = append(attrs, audit.Strings("custos.xds.versions", vs))
	}
	if ev.TypeURL != "" {
		attrs = append(attrs, audit.String("custos.xds.type_url", ev.TypeURL))
	}
	if ev.Version != "" {
		attrs = append(attrs, audit.String("custos.xds.version", ev.Version))
	}
	switch ev.Kind {
	case xds.EventConfigServed:
		e.Name, e.Outcome = eventXDSConfigServed, audit.OutcomeSuccess
	case xds.EventConfigRejected:
		e.Name, e.Outcome, e.ErrorType, e.Error = audit.EventControlFailure, audit.OutcomeFailure, string(ev.Kind), ev.Reason
		attrs = append(attrs, audit.String(audit.AttrComponent, "xds"))
	case xds.EventEnvoyRejected:
		e.Name, e.Outcome, e.ErrorType, e.Error = audit.EventControlFailure, audit.OutcomeFailure, string(ev.Kind), ev.Reason
		attrs = append(attrs, audit.String(audit.AttrComponent, "envoy"))
	case xds.EventNodeRefused:
		e.Name, e.Outcome, e.ErrorType, e.Error = eventXDSRequestRefused, audit.OutcomeDenied, string(ev.Kind), ev.Reason
		e.ClientAddress = ev.Peer
	default:
		return
	}
	e.Attrs = attrs
	a.recordAsync(e)
}
