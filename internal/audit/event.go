package audit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/authn"
)

// SemconvVersion is the version of the OpenTelemetry semantic conventions
// whose attribute names records use (the semconv package imported above is
// the same version); SemconvSchemaURL is its schema URL, sent with exported
// logs. Changing it is a change of the record vocabulary: review the names
// in this file against the new version first.
const (
	SemconvVersion   = "1.43.0"
	SemconvSchemaURL = semconv.SchemaURL
)

// Event names: the OTel log record's EventName. One event per
// decision-bearing action (a connection, an authentication, a statement, an
// HTTP request, an approval's each step), and per change of custos' own
// state that an auditor must see (policy loads, the journal starting and
// stopping, control failures).
const (
	EventConnectionOpened  = "custos.connection.opened"
	EventConnectionClosed  = "custos.connection.closed"
	EventAuthSucceeded     = "custos.auth.succeeded"
	EventAuthFailed        = "custos.auth.failed"
	EventStatement         = "custos.db.statement"
	EventHTTPRequest       = "custos.http.request"
	EventApprovalRequested = "custos.approval.requested"
	EventApprovalDecided   = "custos.approval.decided"
	EventApprovalExpired   = "custos.approval.expired"
	EventApprovalWithdrawn = "custos.approval.withdrawn"
	EventApprovalConsumed  = "custos.approval.consumed"
	EventPolicyLoaded      = "custos.policy.loaded"
	EventPolicyReloadFail  = "custos.policy.reload_failed"
	EventAuditStarted      = "custos.audit.started"
	EventAuditStopped      = "custos.audit.stopped"
	EventAuditBacklog      = "custos.audit.export_backlog"
	EventControlFailure    = "custos.control.failure"
	EventDiscovery         = "custos.discovery.completed"
)

// Attribute keys. The first group are OpenTelemetry semantic conventions
// (version SemconvVersion); the rest are custos' own namespace.
const (
	AttrUserID           = string(semconv.UserIDKey)               // user.id: the principal's subject
	AttrEndUserID        = string(semconv.EnduserIDKey)            // enduser.id: the human an agent acts for (act.sub)
	AttrClientAddress    = string(semconv.ClientAddressKey)        // client.address
	AttrClientPort       = string(semconv.ClientPortKey)           // client.port
	AttrDBSystemName     = string(semconv.DBSystemNameKey)         // db.system.name: "postgresql"
	AttrDBNamespace      = string(semconv.DBNamespaceKey)          // db.namespace: {database}|{schema}
	AttrDBCollectionName = string(semconv.DBCollectionNameKey)     // db.collection.name: the one table, when one
	AttrDBOperationName  = string(semconv.DBOperationNameKey)      // db.operation.name: SELECT, INSERT, ...
	AttrDBQueryText      = string(semconv.DBQueryTextKey)          // db.query.text: normalized, literals replaced
	AttrDBResponseStatus = string(semconv.DBResponseStatusCodeKey) // db.response.status_code: SQLSTATE
	AttrHTTPMethod       = string(semconv.HTTPRequestMethodKey)    // http.request.method
	AttrURLPath          = string(semconv.URLPathKey)              // url.path
	AttrHTTPStatusCode   = string(semconv.HTTPResponseStatusCodeKey)
	AttrErrorType        = string(semconv.ErrorTypeKey)    // error.type
	AttrLogRecordUID     = string(semconv.LogRecordUIDKey) // log.record.uid: set on export, from journal id and seq

	AttrOutcome          = "custos.outcome"              // success, failure, denied, pending
	AttrSessionID        = "custos.session_id"           // connection or HTTP session
	AttrResource         = "custos.resource"             // configured resource name (payments-db)
	AttrResourceType     = "custos.resource.type"        // postgres, http
	AttrIssuer           = "custos.user.issuer"          // the token's issuer
	AttrGroups           = "custos.user.groups"          // the principal's groups
	AttrDecision         = "custos.decision"             // allow, deny, approval_required
	AttrDecisionID       = "custos.decision_id"          // the policy decision's id
	AttrReasons          = "custos.decision.reasons"     // the policy's reasons
	AttrApprovalID       = "custos.approval_id"          // the parked request
	AttrApprovalState    = "custos.approval.state"       // approved, denied, expired, withdrawn, consumed
	AttrApprovers        = "custos.approval.approvers"   // who approved or denied
	AttrDBCollections    = "custos.db.collections"       // every table read or written
	AttrQueryFingerprint = "custos.db.query.fingerprint" // pg_query fingerprint of the statement
	AttrRows             = "custos.rows"                 // rows returned or affected
	AttrMasked           = "custos.masked"               // PAN values masked in the response
	AttrSADDropped       = "custos.sad_dropped"          // SAD values dropped or nulled
	AttrDurationMS       = "custos.duration_ms"          // time to completion, milliseconds
	AttrError            = "custos.error"                // error message (scrubbed)
	AttrPANFingerprints  = "custos.pan.fingerprints"     // HMAC and last four of PANs seen in the request
	AttrPANScrubbed      = "custos.pan.scrubbed"         // PANs the journal itself removed from the event
	AttrComponent        = "custos.component"            // control failures: what failed
	AttrPolicyVersion    = "custos.policy.version"
	AttrJournalID        = "custos.audit.journal_id"
	AttrJournalSeq       = "custos.audit.seq"  // on export: the record's place in the journal
	AttrJournalHash      = "custos.audit.hash" // on export: the record's chain hash
)

// Severity is the OTel SeverityNumber (1-24).
type Severity int

// The severities records use.
const (
	SeverityInfo  Severity = 9
	SeverityWarn  Severity = 13
	SeverityError Severity = 17
)

// Text returns the OTel short name (INFO, WARN, ERROR, ...).
func (s Severity) Text() string {
	switch {
	case s <= 0:
		return ""
	case s <= 4:
		return "TRACE"
	case s <= 8:
		return "DEBUG"
	case s <= 12:
		return "INFO"
	case s <= 16:
		return "WARN"
	case s <= 20:
		return "ERROR"
	}
	return "FATAL"
}

// Outcome says whether the action succeeded (PCI DSS 10.2.2 "success or
// failure indication").
type Outcome string

// The outcomes.
const (
	OutcomeSuccess Outcome = "success" // done as asked
	OutcomeFailure Outcome = "failure" // attempted and failed (bad token, SQL error, upstream error)
	OutcomeDenied  Outcome = "denied"  // refused by policy or by an approver
	OutcomePending Outcome = "pending" // waiting (approval requested)
)

// DBSystemPostgreSQL is the db.system.name of PostgreSQL.
const DBSystemPostgreSQL = "postgresql"

// ErrEvent: an event cannot be recorded as given (no name, a duplicate
// attribute, a record too large). A caller's bug, not a journal failure.
var ErrEvent = errors.New("invalid audit event")

// Event is what callers record: who (UserID, EndUserID), what (Name and the
// operation fields), when (Time), where from (ClientAddress), outcome
// (Outcome, status codes) and which resource (Resource, DB and HTTP
// fields), as PCI DSS 10.2.2 asks. Zero fields are left out of the record.
//
// Strings are checked for PANs before they are stored: a PAN is replaced by
// its keyed hash and last four (see [Scrubber]). Callers still pass
// normalized statement text (literals replaced) in DBQueryText, and put raw
// text that may hold card numbers (SQL literals, bound parameters, request
// bodies) in PANSources only: the journal records the fingerprints of the
// PANs found there and never the text itself.
type Event struct {
	Name     string    // required: one of the Event* constants
	Time     time.Time // zero: the time of Append
	Severity Severity  // zero: WARN for failure and denied, ERROR for control failures, INFO otherwise
	Outcome  Outcome

	// Who.
	UserID    string   // user.id: the token's subject
	EndUserID string   // enduser.id: the act claim's subject
	Issuer    string   // custos.user.issuer
	Groups    []string // custos.user.groups

	// Where from.
	ClientAddress string // client.address
	ClientPort    int    // client.port
	SessionID     string // custos.session_id

	// Which resource.
	Resource     string // custos.resource: the configured name
	ResourceType string // custos.resource.type: postgres or http

	// Database operations.
	DBSystem           string   // db.system.name (DBSystemPostgreSQL)
	DBNamespace        string   // db.namespace: "{database}" or "{database}|{schema}"
	DBOperation        string   // db.operation.name
	DBQueryText        string   // db.query.text: normalized
	DBQueryFingerprint string   // custos.db.query.fingerprint
	DBCollections      []string // custos.db.collections; db.collection.name too when there is one
	DBStatusCode       string   // db.response.status_code: SQLSTATE of an error

	// HTTP requests.
	HTTPMethod     string // http.request.method
	URLPath        string // url.path
	HTTPStatusCode int    // http.response.status_code

	// Decision and approval.
	Decision   string   // custos.decision
	DecisionID string   // custos.decision_id
	Reasons    []string // custos.decision.reasons
	ApprovalID string   // custos.approval_id

	// Results. Always recorded for statements and HTTP requests; for other
	// events only when not zero.
	Rows       int64         // custos.rows
	Masked     int64         // custos.masked
	SADDropped int64         // custos.sad_dropped
	Duration   time.Duration // custos.duration_ms

	ErrorType string // error.type: a short class (SQLSTATE class, timeout, ...)
	Error     string // custos.error: the message

	// PANSources are texts (raw SQL, bound parameters, bodies) whose PANs
	// are recorded as custos.pan.fingerprints. The texts are not stored.
	PANSources []string

	// TraceID and SpanID tie the record to the trace of the operation.
	TraceID trace.TraceID
	SpanID  trace.SpanID

	// Attrs are more attributes, under custos.* or other semantic
	// conventions; a key the fields above set is an error.
	Attrs []Attr
}

// attrs returns the event's attributes, sorted by key and unique.
func (ev *Event) attrs(a []Attr) ([]Attr, error) {
	a = a[:0]
	str := func(k, v string) {
		if v != "" {
			a = append(a, String(k, v))
		}
	}
	list := func(k string, v []string) {
		if len(v) > 0 {
			a = append(a, Strings(k, v))
		}
	}
	always := ev.Name == EventStatement || ev.Name == EventHTTPRequest
	num := func(k string, v int64) {
		if always || v != 0 {
			a = append(a, Int(k, v))
		}
	}
	// In key order, so that only extra attributes need sorting.
	str(AttrClientAddress, ev.ClientAddress)
	if ev.ClientPort != 0 {
		a = append(a, Int(AttrClientPort, int64(ev.ClientPort)))
	}
	str(AttrApprovalID, ev.ApprovalID)
	list(AttrDBCollections, ev.DBCollections)
	str(AttrQueryFingerprint, ev.DBQueryFingerprint)
	str(AttrDecision, ev.Decision)
	list(AttrReasons, ev.Reasons)
	str(AttrDecisionID, ev.DecisionID)
	num(AttrDurationMS, ev.Duration.Milliseconds())
	str(AttrError, ev.Error)
	num(AttrMasked, ev.Masked)
	str(AttrOutcome, string(ev.Outcome))
	str(AttrResource, ev.Resource)
	str(AttrResourceType, ev.ResourceType)
	num(AttrRows, ev.Rows)
	num(AttrSADDropped, ev.SADDropped)
	str(AttrSessionID, ev.SessionID)
	list(AttrGroups, ev.Groups)
	str(AttrIssuer, ev.Issuer)
	if len(ev.DBCollections) == 1 {
		str(AttrDBCollectionName, ev.DBCollections[0])
	}
	str(AttrDBNamespace, ev.DBNamespace)
	str(AttrDBOperationName, ev.DBOperation)
	str(AttrDBQueryText, ev.DBQueryText)
	str(AttrDBResponseStatus, ev.DBStatusCode)
	str(AttrDBSystemName, ev.DBSystem)
	str(AttrEndUserID, ev.EndUserID)
	str(AttrErrorType, ev.ErrorType)
	str(AttrHTTPMethod, ev.HTTPMethod)
	if ev.HTTPStatusCode != 0 {
		a = append(a, Int(AttrHTTPStatusCode, int64(ev.HTTPStatusCode)))
	}
	str(AttrURLPath, ev.URLPath)
	str(AttrUserID, ev.UserID)
	// The fields above are in key order: the extra attributes are
	// inserted at their places (the caller's slice is left as it is).
	byKey := func(x Attr, k string) int { return strings.Compare(x.Key, k) }
	for _, x := range ev.Attrs {
		if x.Key == "" {
			return nil, fmt.Errorf("%w: an attribute has no key", ErrEvent)
		}
		i, found := slices.BinarySearchFunc(a, x.Key, byKey)
		if found {
			return nil, fmt.Errorf("%w: attribute %q set twice", ErrEvent, x.Key)
		}
		a = slices.Insert(a, i, x)
	}
	return a, nil
}

// SetPrincipal sets who the event is for from a verified token: user.id,
// the issuer and groups, and enduser.id from the act claim.
func (ev *Event) SetPrincipal(p *authn.Principal) {
	ev.UserID, ev.Issuer, ev.Groups = p.Subject, p.Issuer, p.Groups
	if p.Act != nil {
		ev.EndUserID = p.Act.Subject
	}
}

// severity returns the event's severity, defaulted from its outcome.
func (ev *Event) severity() Severity {
	switch {
	case ev.Severity > 0:
		return ev.Severity
	case ev.Name == EventControlFailure:
		return SeverityError
	case ev.Outcome == OutcomeFailure || ev.Outcome == OutcomeDenied:
		return SeverityWarn
	}
	return SeverityInfo
}
