package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/internal/mask"
)

// The files of an evidence bundle (see [WriteEvidence]).
const (
	EvidenceAccessFile       = "access.csv"
	EvidenceWritesFile       = "writes.csv"
	EvidenceMaskingFile      = "masking.csv"
	EvidenceSessionsFile     = "sessions.csv"
	EvidenceVerificationFile = "verification.json"
	EvidenceFieldMapFile     = "field-map.csv"
	EvidenceSummaryFile      = "summary.json"
	EvidenceManifestFile     = "manifest.json"
)

// EvidenceFormat names the layout of an evidence bundle; manifest.json
// carries it.
const EvidenceFormat = "custos.audit.evidence/v1"

// Errors of WriteEvidence; test with errors.Is.
var (
	// ErrEvidenceDir: the bundle directory exists and is not empty, or is
	// not a directory.
	ErrEvidenceDir = errors.New("evidence bundle directory is not empty")
	// ErrEvidencePAN: a bundle file held something that looks like a PAN
	// or track data. The bundle is removed.
	ErrEvidencePAN = errors.New("evidence bundle holds something that looks like a PAN")
)

// Attributes of approval and connection records without a constant in
// event.go.
const (
	evAttrApprovalRequester  = "custos.approval.requester"
	evAttrApprovalTransition = "custos.approval.transition"
	evAttrCloseReason        = "custos.connection.close_reason"
)

// evidenceNoApproval is the approval id column of a write without one.
const evidenceNoApproval = "none"

// Where the verifier key of a bundle came from (verifier_key_source).
const (
	// KeySourceGiven: the verifier key was given (a copy kept away from
	// the data dir).
	KeySourceGiven = "given"
	// KeySourceDataDir: the verifier key was derived from the data dir's
	// own signing key, which proves less: whoever can rewrite the journal
	// can replace that key too.
	KeySourceDataDir = "data_dir_signing_key"
)

// evidenceMaxListed bounds the seqs and places listed in summary.json for
// records that fail their own hash or do not decode; the counts are
// complete.
const evidenceMaxListed = 100

// EvidenceOptions select the records of an evidence bundle and the key its
// verification uses.
type EvidenceOptions struct {
	From time.Time // records at or after From; zero: from the start
	To   time.Time // records before To; zero: to the end
	// VerifierKey is the checkpoint verifier key in the note format (the
	// output of `custos audit key`). Empty: derived from the data dir's
	// signing key, and the bundle says so.
	VerifierKey string
	// Now returns the generation time; nil: time.Now.
	Now func() time.Time
}

// EvidenceSummary is summary.json: what the bundle holds. Counts are of
// the records in [From, To).
type EvidenceSummary struct {
	Format      string           `json:"format"`
	JournalID   string           `json:"journal_id"`
	From        *time.Time       `json:"from"` // null: from the start
	To          *time.Time       `json:"to"`   // null: to the end
	GeneratedAt time.Time        `json:"generated_at"`
	Records     int64            `json:"records"`
	FirstSeq    uint64           `json:"first_seq"`
	LastSeq     uint64           `json:"last_seq"`
	Events      map[string]int64 `json:"events"` // records per event name
	AccessRows  int64            `json:"access_rows"`
	Writes      EvidenceWrites   `json:"writes"`
	Masking     EvidenceMasking  `json:"masking"`
	Sessions    int64            `json:"sessions"`
	// Verification is the outcome of verifying the whole journal
	// (verification.json has the details).
	Verification EvidenceVerified `json:"verification"`
	// Integrity counts what reading the whole journal for the bundle met:
	// records whose content does not match their own hash (listed in the
	// CSV files as found) and lines that are not records (left out).
	Integrity EvidenceIntegrity `json:"integrity"`
}

// EvidenceWrites counts writes.csv.
type EvidenceWrites struct {
	Total int64 `json:"total"`
	// Ran: outcome success.
	Ran int64 `json:"ran"`
	// RanWithApproval: ran and carry an approval id.
	RanWithApproval int64 `json:"ran_with_approval"`
	// RanWithoutApproval: ran without an approval id: the policy allowed
	// them as they were.
	RanWithoutApproval int64 `json:"ran_without_approval"`
	// ApprovalUnconfirmed: ran with an approval id for which the journal
	// holds no approved decision.
	ApprovalUnconfirmed int64 `json:"approval_unconfirmed"`
	// NotRun: denied, failed or still pending.
	NotRun int64 `json:"not_run"`
}

// EvidenceMasking sums masking.csv.
type EvidenceMasking struct {
	Records    int64 `json:"records"` // statements and HTTP requests
	Rows       int64 `json:"rows"`
	Masked     int64 `json:"masked"`
	SADDropped int64 `json:"sad_dropped"`
}

// EvidenceVerified is the verification outcome in summary.json.
type EvidenceVerified struct {
	OK                bool   `json:"ok"`
	RecordsVerified   int64  `json:"records_verified"`
	LastSeq           uint64 `json:"last_seq"`
	FirstProblem      string `json:"first_problem,omitempty"`
	VerifierKeySource string `json:"verifier_key_source"`
	// UnverifiedInRange counts the records in range after the last record
	// that chains, or whose content does not match their hash.
	UnverifiedInRange int64 `json:"unverified_in_range"`
}

// EvidenceIntegrity is what reading the records for the bundle met.
type EvidenceIntegrity struct {
	HashMismatch     int64    `json:"hash_mismatch"`
	HashMismatchSeqs []uint64 `json:"hash_mismatch_seqs"`
	Unreadable       int64    `json:"unreadable_lines"`
	UnreadableAt     []string `json:"unreadable_at"`
}

// WriteEvidence writes the auditor bundle of the journal under dataDir for
// the records whose time is in [From, To) into outDir, which it creates; an
// existing outDir must be empty ([ErrEvidenceDir]). It returns the summary.
//
// The bundle holds:
//
//	access.csv        who accessed which resource when: connection, authentication,
//	                  statement and HTTP request records
//	writes.csv        every write (a statement whose db.operation.name is not a read
//	                  or transaction-control keyword, an HTTP method other than GET,
//	                  HEAD and OPTIONS, or anything with an approval id) joined with
//	                  its approval's records, wherever they are in the journal;
//	                  approval "none" when it carries no approval id
//	masking.csv       rows, masked PANs and dropped SAD of every statement and HTTP request
//	sessions.csv      one row per session with a record in range: who, from where, on
//	                  which resource, opened and closed (from the whole journal),
//	                  statements (and HTTP requests), masked counts and first/last seq in range
//	verification.json Verify of the whole journal: counts, head, checkpoints, problems
//	field-map.csv     PCI DSS v4.0 requirement 10.2.2 details mapped to record fields
//	summary.json      the [EvidenceSummary]
//	manifest.json     SHA-256 and size of every other file, journal id, range,
//	                  verifier key, generation time
//
// A journal that does not verify still gets its bundle: verification.json
// and summary.json name the first problem, and records whose content does
// not match their hash are listed as found. Every file is checked for
// anything that looks like a PAN once written; if one does, the bundle is
// removed and the error wraps [ErrEvidencePAN].
func WriteEvidence(ctx context.Context, dataDir, outDir string, opts EvidenceOptions) (*EvidenceSummary, error) {
	if !opts.From.IsZero() && !opts.To.IsZero() && !opts.To.After(opts.From) {
		return nil, fmt.Errorf("audit evidence: the range [%s, %s) is empty",
			opts.From.Format(time.RFC3339Nano), opts.To.Format(time.RFC3339Nano))
	}
	id, err := ReadJournalID(dataDir)
	if err != nil {
		return nil, fmt.Errorf("audit evidence: %w", err)
	}
	vkey, source, err := evidenceVerifierKey(dataDir, opts.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("audit evidence: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("audit evidence: %w: %w", ErrKey, err)
	}
	rep, err := Verify(ctx, dataDir, v)
	if err != nil {
		return nil, fmt.Errorf("audit evidence: verify: %w", err)
	}
	segs, err := listSegments(AuditDir(dataDir))
	if err != nil {
		return nil, fmt.Errorf("audit evidence: %w", err)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	b, err := newEvidenceBundle(outDir)
	if err != nil {
		return nil, err
	}
	sum, err := b.build(ctx, evidenceInput{id: id, opts: opts, rep: rep, segs: segs, vkey: vkey, source: source, now: now().UTC()})
	if err != nil {
		b.remove()
		return nil, err
	}
	return sum, nil
}

// evidenceVerifierKey returns the verifier key to use and where it came
// from.
func evidenceVerifierKey(dataDir, given string) (string, string, error) {
	if k := strings.TrimSpace(given); k != "" {
		return k, KeySourceGiven, nil
	}
	b, err := os.ReadFile(filepath.Join(AuditDir(dataDir), signingKeyName))
	if err != nil {
		return "", "", fmt.Errorf("no verifier key given and no signing key in the data dir: %w", err)
	}
	k, err := VerifierKey(string(b))
	if err != nil {
		return "", "", err
	}
	return k, KeySourceDataDir, nil
}

// evidenceBundle is the output directory being written.
type evidenceBundle struct {
	dir     string
	created bool     // dir was made here
	files   []string // names written so far
}

// newEvidenceBundle creates dir, or checks that an existing one is empty.
func newEvidenceBundle(dir string) (*evidenceBundle, error) {
	if dir == "" {
		return nil, errors.New("audit evidence: an output directory is required")
	}
	b := &evidenceBundle{dir: dir}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("audit evidence: %w", err)
		}
		b.created = true
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("audit evidence: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("audit evidence: %w: %s is not a directory", ErrEvidenceDir, dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit evidence: %w", err)
	}
	if len(ents) > 0 {
		return nil, fmt.Errorf("audit evidence: %w: %s holds %d entries (%s, ...); use a new or empty directory",
			ErrEvidenceDir, dir, len(ents), ents[0].Name())
	}
	return b, nil
}

// create creates a new bundle file.
func (b *evidenceBundle) create(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(b.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit evidence: %w", err)
	}
	b.files = append(b.files, name)
	return f, nil
}

// remove deletes what the bundle wrote, and its directory if it made it.
func (b *evidenceBundle) remove() {
	for _, name := range b.files {
		_ = os.Remove(filepath.Join(b.dir, name))
	}
	if b.created {
		_ = os.Remove(b.dir)
	}
}

// writeJSON writes v as an indented JSON file.
func (b *evidenceBundle) writeJSON(name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("audit evidence: %s: %w", name, err)
	}
	return b.writeFile(name, append(data, '\n'))
}

func (b *evidenceBundle) writeFile(name string, data []byte) error {
	f, err := b.create(name)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit evidence: %s: %w", name, err)
	}
	return nil
}

// evidenceCSV is a bundle CSV file being written.
type evidenceCSV struct {
	name string
	f    *os.File
	bw   *bufio.Writer
	w    *csv.Writer
	row  []string
}

func (b *evidenceBundle) createCSV(name string, header []string) (*evidenceCSV, error) {
	f, err := b.create(name)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	c := &evidenceCSV{name: name, f: f, bw: bw, w: csv.NewWriter(bw)}
	if err := c.w.Write(header); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("audit evidence: %s: %w", name, err)
	}
	return c, nil
}

// write writes one row; cells are neutralized against spreadsheet
// formulas.
func (c *evidenceCSV) write(cells ...string) error {
	c.row = c.row[:0]
	for _, s := range cells {
		c.row = append(c.row, csvCell(s))
	}
	if err := c.w.Write(c.row); err != nil {
		return fmt.Errorf("audit evidence: %s: %w", c.name, err)
	}
	return nil
}

// close flushes and closes the file.
func (c *evidenceCSV) close() error {
	c.w.Flush()
	err := c.w.Error()
	if err == nil {
		err = c.bw.Flush()
	}
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit evidence: %s: %w", c.name, err)
	}
	return nil
}

// Columns of the bundle's CSV files.
var (
	evidenceAccessColumns = []string{
		"time", "seq", "event", AttrUserID, AttrEndUserID, AttrClientAddress, AttrResource, AttrSessionID,
		"operation", "object", AttrOutcome, AttrDecision, AttrDecisionID,
	}
	evidenceWritesColumns = []string{
		"time", "seq", AttrSessionID, AttrUserID, AttrEndUserID, AttrResource, "operation", "statement",
		AttrOutcome, AttrApprovalID, "approval.requested_at", "approval.requester", "approval.approvers",
		"approval.decided_at", "approval.decision", "approval.consumed_at", "approval.state",
	}
	evidenceMaskingColumns = []string{
		"time", "seq", "event", AttrSessionID, AttrResource, AttrRows, AttrMasked, AttrSADDropped,
	}
	evidenceSessionsColumns = []string{
		AttrSessionID, AttrUserID, AttrEndUserID, AttrClientAddress, AttrResource, "opened_at", "closed_at",
		"close_reason", "statements", "masked", "masked_at_close", "first_seq", "last_seq",
	}
)

// evidenceFieldMap is field-map.csv: PCI DSS v4.0 requirement 10.2.2
// details, the record fields that carry them and where the bundle shows
// them.
var evidenceFieldMap = [][]string{
	{"requirement", "detail", "record_fields", "bundle_columns"},
	{"10.2.2", "User identification",
		"user.id; enduser.id (the human an agent acts for); custos.user.issuer",
		"access.csv user.id, enduser.id; writes.csv user.id, enduser.id, approval.requester, approval.approvers; sessions.csv user.id, enduser.id"},
	{"10.2.2", "Type of event",
		"event (OTel EventName); db.operation.name; http.request.method",
		"access.csv event, operation; writes.csv operation; masking.csv event"},
	{"10.2.2", "Date and time",
		"time (UTC, nanoseconds); seq (place in the hash chain)",
		"time and seq of every CSV file; sessions.csv opened_at, closed_at; writes.csv approval.requested_at, approval.decided_at, approval.consumed_at"},
	{"10.2.2", "Success and failure indication",
		"custos.outcome; db.response.status_code; http.response.status_code; error.type",
		"access.csv custos.outcome; writes.csv custos.outcome, approval.decision, approval.state"},
	{"10.2.2", "Origination of event",
		"client.address; client.port; custos.session_id",
		"access.csv client.address, custos.session_id; writes.csv custos.session_id; sessions.csv client.address"},
	{"10.2.2", "Identity or name of affected data, system component, resource, or service",
		"custos.resource; db.namespace; db.collection.name; custos.db.collections; url.path; db.query.text",
		"access.csv custos.resource, object; writes.csv custos.resource, statement; masking.csv custos.resource; sessions.csv custos.resource"},
}

// evidenceReadOps are the db.operation.name keywords of statements that do
// not write: reads and transaction, session and cursor control. A write
// is anything else, decided by the operation's first word.
var evidenceReadOps = map[string]bool{
	"SELECT": true, "SHOW": true, "EXPLAIN": true, "FETCH": true,
	"BEGIN": true, "START": true, "COMMIT": true, "END": true, "ROLLBACK": true, "ABORT": true,
	"SAVEPOINT": true, "RELEASE": true,
	"SET": true, "RESET": true, "DISCARD": true, "DEALLOCATE": true, "PREPARE": true, "CLOSE": true, "DECLARE": true,
}

// evidenceReadMethods are the HTTP methods that do not write.
var evidenceReadMethods = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true}

// evidenceAccessEvents are the events access.csv lists.
var evidenceAccessEvents = map[string]bool{
	EventStatement: true, EventHTTPRequest: true,
	EventConnectionOpened: true, EventConnectionClosed: true,
	EventAuthSucceeded: true, EventAuthFailed: true,
}

// isEvidenceWrite reports whether a statement or HTTP request record is a
// write.
func isEvidenceWrite(r *Record) bool {
	if r.evText(AttrApprovalID) != "" {
		return true
	}
	switch r.Name {
	case EventStatement:
		op, _, _ := strings.Cut(strings.TrimSpace(r.evText(AttrDBOperationName)), " ")
		// An unnamed operation is listed: better one row too many.
		return !evidenceReadOps[strings.ToUpper(op)]
	case EventHTTPRequest:
		return !evidenceReadMethods[strings.ToUpper(r.evText(AttrHTTPMethod))]
	}
	return false
}

// evText returns the attribute key as text: lists joined with ";",
// "" when absent.
func (r *Record) evText(key string) string {
	v, ok := r.Attr(key)
	if !ok {
		return ""
	}
	if v.Kind() == KindStrings {
		return strings.Join(v.Strings(), ";")
	}
	return v.String()
}

// evInt returns an integer attribute, 0 when absent or not an integer.
func (r *Record) evInt(key string) int64 {
	v, ok := r.Attr(key)
	if !ok {
		return 0
	}
	if v.Kind() == KindInt {
		return v.Int()
	}
	n, _ := strconv.ParseInt(v.Str(), 10, 64)
	return n
}

// evOperation returns the statement's operation or the request's method.
func (r *Record) evOperation() string {
	if op := r.evText(AttrDBOperationName); op != "" {
		return op
	}
	return r.evText(AttrHTTPMethod)
}

// evObject returns what was acted on: the table, the tables, the URL path or
// the database.
func (r *Record) evObject() string {
	for _, k := range []string{AttrDBCollectionName, AttrDBCollections, AttrURLPath, AttrDBNamespace} {
		if s := r.evText(k); s != "" {
			return s
		}
	}
	return ""
}

// evidenceTime formats a time for the CSV files; "" for the zero time.
func evidenceTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// evidenceSeq formats a seq for the CSV files; "" for none.
func evidenceSeq(seq uint64) string {
	if seq == 0 {
		return ""
	}
	return strconv.FormatUint(seq, 10)
}

// evidenceApproval is what the journal says about one approval id.
type evidenceApproval struct {
	requestedAt time.Time
	requester   string
	approvers   string
	decidedAt   time.Time
	decision    string // approved, denied, expired, withdrawn; "" while pending
	final       bool   // decision comes from a decided or denied record, not a vote
	consumedAt  time.Time
	state       string // the last custos.approval.state
}

// approved reports whether the journal holds an approved decision.
func (a *evidenceApproval) approved() bool { return a != nil && a.decision == "approved" }

// add folds one custos.approval.* record in.
func (a *evidenceApproval) add(r *Record) {
	state := r.evText(AttrApprovalState)
	if state != "" {
		a.state = state
	}
	switch r.Name {
	case EventApprovalRequested:
		if a.requestedAt.IsZero() {
			a.requestedAt = r.Time
		}
		if a.requester == "" {
			a.requester = r.evText(evAttrApprovalRequester)
			if a.requester == "" {
				a.requester = r.evText(AttrUserID)
			}
		}
	case EventApprovalDecided:
		if s := r.evText(AttrApprovers); s != "" {
			a.approvers = s
		}
		if a.requester == "" {
			a.requester = r.evText(evAttrApprovalRequester)
		}
		// A vote (transition "approved") is the decision only when it
		// reached the quorum (state approved) and no decided record
		// follows; a decided or denied transition is the decision.
		decision := state
		if state == "" {
			switch Outcome(r.evText(AttrOutcome)) {
			case OutcomeDenied:
				decision = "denied"
			case OutcomeSuccess:
				decision = "approved"
			}
		}
		if decision != "approved" && decision != "denied" {
			return
		}
		vote := r.evText(evAttrApprovalTransition) == "approved"
		switch {
		case a.final:
		case !vote:
			a.decidedAt, a.decision, a.final = r.Time, decision, true
		case a.decision == "":
			a.decidedAt, a.decision = r.Time, decision
		}
	case EventApprovalExpired, EventApprovalWithdrawn:
		if a.decision == "" {
			a.decidedAt = r.Time
			a.decision = strings.TrimPrefix(r.Name, "custos.approval.")
		}
	case EventApprovalConsumed:
		if a.consumedAt.IsZero() {
			a.consumedAt = r.Time
		}
	}
}

// evidenceSession is one row of sessions.csv.
type evidenceSession struct {
	id, user, enduser, client, resource string
	openedAt, closedAt                  time.Time
	closeReason, maskedAtClose          string
	inRange                             bool
	statements, masked                  int64
	firstSeq, lastSeq                   uint64
}

// add folds one record of the session in.
func (s *evidenceSession) add(r *Record, in bool) {
	fill := func(dst *string, key string) {
		if *dst == "" {
			*dst = r.evText(key)
		}
	}
	fill(&s.user, AttrUserID)
	fill(&s.enduser, AttrEndUserID)
	fill(&s.client, AttrClientAddress)
	fill(&s.resource, AttrResource)
	switch r.Name {
	case EventConnectionOpened:
		if s.openedAt.IsZero() {
			s.openedAt = r.Time
		}
	case EventConnectionClosed:
		s.closedAt = r.Time
		s.closeReason = r.evText(evAttrCloseReason)
		s.maskedAtClose = r.evText(AttrMasked)
	}
	if !in {
		return
	}
	s.inRange = true
	if s.firstSeq == 0 || r.Seq < s.firstSeq {
		s.firstSeq = r.Seq
	}
	s.lastSeq = max(s.lastSeq, r.Seq)
	if r.Name == EventStatement || r.Name == EventHTTPRequest {
		s.statements++
		s.masked += r.evInt(AttrMasked)
	}
}

// evidenceInput is what build works from.
type evidenceInput struct {
	id     string
	opts   EvidenceOptions
	rep    *Report
	segs   []segment
	vkey   string
	source string
	now    time.Time
}

// covers reports whether r's time is in the range.
func (in *evidenceInput) covers(r *Record) bool {
	o := in.opts
	return (o.From.IsZero() || !r.Time.Before(o.From)) && (o.To.IsZero() || r.Time.Before(o.To))
}

// build writes every file of the bundle.
func (b *evidenceBundle) build(ctx context.Context, in evidenceInput) (*EvidenceSummary, error) {
	sum := &EvidenceSummary{
		Format:      EvidenceFormat,
		JournalID:   in.id,
		From:        evidenceTimePtr(in.opts.From),
		To:          evidenceTimePtr(in.opts.To),
		GeneratedAt: in.now,
		Events:      map[string]int64{},
		Integrity:   EvidenceIntegrity{HashMismatchSeqs: []uint64{}, UnreadableAt: []string{}},
	}

	// First pass, the whole journal: approvals and sessions, wherever
	// their records are.
	approvals := map[string]*evidenceApproval{}
	sessions := map[string]*evidenceSession{}
	reached, err := walkEvidence(ctx, in.segs, nil, func(r *Record, hashOK bool) error {
		if !hashOK {
			sum.Integrity.HashMismatch++
			if len(sum.Integrity.HashMismatchSeqs) < evidenceMaxListed {
				sum.Integrity.HashMismatchSeqs = append(sum.Integrity.HashMismatchSeqs, r.Seq)
			}
		}
		if strings.HasPrefix(r.Name, "custos.approval.") {
			if id := r.evText(AttrApprovalID); id != "" {
				a := approvals[id]
				if a == nil {
					a = &evidenceApproval{}
					approvals[id] = a
				}
				a.add(r)
			}
			return nil
		}
		id := r.evText(AttrSessionID)
		if id == "" || !evidenceAccessEvents[r.Name] {
			return nil
		}
		inRange := in.covers(r)
		s := sessions[id]
		if s == nil {
			if !inRange && !in.opts.To.IsZero() && !r.Time.Before(in.opts.To) {
				return nil // begins after the range
			}
			s = &evidenceSession{id: id}
			sessions[id] = s
		}
		s.add(r, inRange)
		if r.Name == EventConnectionClosed && !s.inRange && !in.opts.From.IsZero() && r.Time.Before(in.opts.From) {
			delete(sessions, id) // over before the range
		}
		return nil
	}, func(where string) {
		sum.Integrity.Unreadable++
		if len(sum.Integrity.UnreadableAt) < evidenceMaxListed {
			sum.Integrity.UnreadableAt = append(sum.Integrity.UnreadableAt, where)
		}
	})
	if err != nil {
		return nil, err
	}

	// Second pass, the same bytes: the records in range.
	access, err := b.createCSV(EvidenceAccessFile, evidenceAccessColumns)
	if err != nil {
		return nil, err
	}
	writes, err := b.createCSV(EvidenceWritesFile, evidenceWritesColumns)
	if err != nil {
		return nil, errors.Join(err, access.close())
	}
	masking, err := b.createCSV(EvidenceMaskingFile, evidenceMaskingColumns)
	if err != nil {
		return nil, errors.Join(err, access.close(), writes.close())
	}
	rep := in.rep
	_, err = walkEvidence(ctx, in.segs, reached, func(r *Record, hashOK bool) error {
		if !in.covers(r) {
			return nil
		}
		sum.Records++
		if sum.FirstSeq == 0 || r.Seq < sum.FirstSeq {
			sum.FirstSeq = r.Seq
		}
		sum.LastSeq = max(sum.LastSeq, r.Seq)
		sum.Events[r.Name]++
		if !hashOK || (!rep.OK() && r.Seq > rep.LastSeq) {
			sum.Verification.UnverifiedInRange++
		}
		return writeEvidenceRows(r, sum, approvals, access, writes, masking)
	}, func(string) {})
	err = errors.Join(err, access.close(), writes.close(), masking.close())
	if err != nil {
		return nil, err
	}

	if err := b.writeSessions(sessions, sum); err != nil {
		return nil, err
	}
	if err := b.writeJSON(EvidenceVerificationFile, verificationOf(rep, in.vkey, in.source)); err != nil {
		return nil, err
	}
	fm, err := b.createCSV(EvidenceFieldMapFile, evidenceFieldMap[0])
	if err != nil {
		return nil, err
	}
	for _, row := range evidenceFieldMap[1:] {
		if err := fm.write(row...); err != nil {
			return nil, errors.Join(err, fm.close())
		}
	}
	if err := fm.close(); err != nil {
		return nil, err
	}
	sum.Verification.OK = rep.OK()
	sum.Verification.RecordsVerified = rep.Records
	sum.Verification.LastSeq = rep.LastSeq
	sum.Verification.VerifierKeySource = in.source
	if !rep.OK() {
		sum.Verification.FirstProblem = rep.Problems[0].String()
	}
	if err := b.writeJSON(EvidenceSummaryFile, sum); err != nil {
		return nil, err
	}

	man := evidenceManifest{
		Format: EvidenceFormat, JournalID: in.id, From: sum.From, To: sum.To, GeneratedAt: in.now,
		VerifierKey: in.vkey, VerifierKeySource: in.source, Files: []evidenceFile{},
	}
	for _, name := range slices.Clone(b.files) {
		mf, err := b.check(name)
		if err != nil {
			return nil, err
		}
		man.Files = append(man.Files, mf)
	}
	if err := b.writeJSON(EvidenceManifestFile, man); err != nil {
		return nil, err
	}
	if _, err := b.check(EvidenceManifestFile); err != nil {
		return nil, err
	}
	return sum, nil
}

// writeEvidenceRows writes r's rows in access.csv, writes.csv and
// masking.csv and counts them.
func writeEvidenceRows(r *Record, sum *EvidenceSummary, approvals map[string]*evidenceApproval, access, writes, masking *evidenceCSV) error {
	if !evidenceAccessEvents[r.Name] {
		return nil
	}
	t, seq := evidenceTime(r.Time), evidenceSeq(r.Seq)
	sum.AccessRows++
	if err := access.write(t, seq, r.Name, r.evText(AttrUserID), r.evText(AttrEndUserID), r.evText(AttrClientAddress),
		r.evText(AttrResource), r.evText(AttrSessionID), r.evOperation(), r.evObject(), r.evText(AttrOutcome),
		r.evText(AttrDecision), r.evText(AttrDecisionID)); err != nil {
		return err
	}
	if r.Name != EventStatement && r.Name != EventHTTPRequest {
		return nil
	}
	m := &sum.Masking
	m.Records++
	m.Rows += r.evInt(AttrRows)
	m.Masked += r.evInt(AttrMasked)
	m.SADDropped += r.evInt(AttrSADDropped)
	if err := masking.write(t, seq, r.Name, r.evText(AttrSessionID), r.evText(AttrResource),
		r.evText(AttrRows), r.evText(AttrMasked), r.evText(AttrSADDropped)); err != nil {
		return err
	}
	if !isEvidenceWrite(r) {
		return nil
	}
	w := &sum.Writes
	w.Total++
	outcome := r.evText(AttrOutcome)
	approvalID := r.evText(AttrApprovalID)
	a := approvals[approvalID]
	if outcome == string(OutcomeSuccess) {
		w.Ran++
		if approvalID == "" {
			w.RanWithoutApproval++
		} else {
			w.RanWithApproval++
			if !a.approved() {
				w.ApprovalUnconfirmed++
			}
		}
	} else {
		w.NotRun++
	}
	stmt := r.evText(AttrDBQueryText)
	if stmt == "" && r.Name == EventHTTPRequest {
		stmt = strings.TrimSpace(r.evText(AttrHTTPMethod) + " " + r.evText(AttrURLPath))
	}
	cells := []string{t, seq, r.evText(AttrSessionID), r.evText(AttrUserID), r.evText(AttrEndUserID),
		r.evText(AttrResource), r.evOperation(), stmt, outcome}
	if approvalID == "" {
		cells = append(cells, evidenceNoApproval, "", "", "", "", "", "", "")
	} else if a == nil {
		cells = append(cells, approvalID, "", "", "", "", "", "", "")
	} else {
		cells = append(cells, approvalID, evidenceTime(a.requestedAt), a.requester, a.approvers, evidenceTime(a.decidedAt),
			a.decision, evidenceTime(a.consumedAt), a.state)
	}
	return writes.write(cells...)
}

// writeSessions writes sessions.csv: the sessions with a record in range,
// by their first seq in range.
func (b *evidenceBundle) writeSessions(sessions map[string]*evidenceSession, sum *EvidenceSummary) error {
	var list []*evidenceSession
	for _, s := range sessions {
		if s.inRange {
			list = append(list, s)
		}
	}
	slices.SortFunc(list, func(x, y *evidenceSession) int {
		if c := cmp.Compare(x.firstSeq, y.firstSeq); c != 0 {
			return c
		}
		return strings.Compare(x.id, y.id)
	})
	c, err := b.createCSV(EvidenceSessionsFile, evidenceSessionsColumns)
	if err != nil {
		return err
	}
	for _, s := range list {
		sum.Sessions++
		if err := c.write(s.id, s.user, s.enduser, s.client, s.resource, evidenceTime(s.openedAt), evidenceTime(s.closedAt),
			s.closeReason, strconv.FormatInt(s.statements, 10), strconv.FormatInt(s.masked, 10), s.maskedAtClose,
			evidenceSeq(s.firstSeq), evidenceSeq(s.lastSeq)); err != nil {
			return errors.Join(err, c.close())
		}
	}
	return c.close()
}

// walkEvidence calls fn for each record of segs, in file order, with
// whether its content matches its hash; unreadable gets the place of each
// line that is not a record. An incomplete last line (a write in progress
// or a torn tail) ends a segment. With limits, each segment is read only
// up to the offset given for it and segments not in limits are skipped;
// it returns how far it read each segment, in complete lines.
func walkEvidence(ctx context.Context, segs []segment, limits map[string]int64, fn func(r *Record, hashOK bool) error, unreadable func(where string)) (map[string]int64, error) {
	reached := make(map[string]int64, len(segs))
	for _, seg := range segs {
		var limit int64 = -1
		if limits != nil {
			l, ok := limits[seg.name]
			if !ok {
				continue
			}
			limit = l
		}
		n, err := walkEvidenceSegment(ctx, seg, limit, fn, unreadable)
		if err != nil {
			return nil, err
		}
		reached[seg.name] = n
	}
	return reached, nil
}

func walkEvidenceSegment(ctx context.Context, seg segment, limit int64, fn func(*Record, bool) error, unreadable func(string)) (int64, error) {
	f, err := os.Open(seg.path)
	if err != nil {
		return 0, fmt.Errorf("audit evidence: %w", err)
	}
	defer f.Close()
	var rd io.Reader = f
	if limit >= 0 {
		rd = io.LimitReader(f, limit)
	}
	lr := newLineReader(rd)
	var done int64
	for n := 1; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		line, _, complete, err := lr.next()
		if errors.Is(err, io.EOF) || (err == nil && !complete) {
			return done, nil
		}
		if err != nil {
			return 0, fmt.Errorf("audit evidence: read %s: %w", seg.path, err)
		}
		done = lr.off
		r, err := DecodeRecord(line)
		switch {
		case err == nil:
			err = fn(&r, true)
		case errors.Is(err, ErrHashMismatch):
			err = fn(&r, false)
		default:
			unreadable(fmt.Sprintf("%s line %d", filepath.Join(segmentsDirName, seg.name), n))
			err = nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// evidenceManifest is manifest.json.
type evidenceManifest struct {
	Format            string         `json:"format"`
	JournalID         string         `json:"journal_id"`
	From              *time.Time     `json:"from"`
	To                *time.Time     `json:"to"`
	GeneratedAt       time.Time      `json:"generated_at"`
	VerifierKey       string         `json:"verifier_key"`
	VerifierKeySource string         `json:"verifier_key_source"`
	Files             []evidenceFile `json:"files"`
}

// evidenceFile is one file in manifest.json.
type evidenceFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// check reads a written bundle file: its size and SHA-256, and whether a
// line of it looks like a PAN or track data ([ErrEvidencePAN]).
func (b *evidenceBundle) check(name string) (evidenceFile, error) {
	f, err := os.Open(filepath.Join(b.dir, name))
	if err != nil {
		return evidenceFile{}, fmt.Errorf("audit evidence: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	br := bufio.NewReaderSize(io.TeeReader(f, h), 64<<10)
	mf := evidenceFile{Name: name}
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		mf.Size += int64(len(line))
		if len(line) > 0 && mask.Contains(bytes.TrimSuffix(line, []byte("\n"))) {
			return evidenceFile{}, fmt.Errorf("audit evidence: %w: %s line %d; the bundle was removed: report this, the journal should never hold one",
				ErrEvidencePAN, name, n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return evidenceFile{}, fmt.Errorf("audit evidence: %s: %w", name, err)
		}
	}
	mf.SHA256 = hex.EncodeToString(h.Sum(nil))
	return mf, nil
}

// evidenceVerification is verification.json.
type evidenceVerification struct {
	OK                bool                `json:"ok"`
	JournalID         string              `json:"journal_id"`
	VerifierKey       string              `json:"verifier_key"`
	VerifierKeySource string              `json:"verifier_key_source"`
	Segments          int                 `json:"segments"`
	RecordsVerified   int64               `json:"records_verified"`
	FirstSeq          uint64              `json:"first_seq"`
	LastSeq           uint64              `json:"last_seq"`
	LastHash          string              `json:"last_hash,omitempty"`
	FirstTime         *time.Time          `json:"first_time"`
	LastTime          *time.Time          `json:"last_time"`
	Checkpoints       evidenceCheckpoints `json:"checkpoints"`
	FirstProblem      *evidenceProblem    `json:"first_problem"`
	Problems          []evidenceProblem   `json:"problems"`
	Report            string              `json:"report"` // as `custos audit verify` prints it
}

// evidenceCheckpoints is the checkpoint part of verification.json.
type evidenceCheckpoints struct {
	Count           int        `json:"count"`
	LastSeq         uint64     `json:"last_seq"`
	LastHash        string     `json:"last_hash,omitempty"`
	LastTime        *time.Time `json:"last_time"`
	MaxGap          string     `json:"max_gap"`
	MaxGapSeconds   float64    `json:"max_gap_seconds"`
	UncoveredRecord uint64     `json:"uncovered_records"` // records after the last checkpoint
}

// evidenceProblem is a [Problem] in verification.json.
type evidenceProblem struct {
	Kind       ProblemKind `json:"kind"`
	Seq        uint64      `json:"seq,omitempty"`
	File       string      `json:"file,omitempty"`
	Line       int         `json:"line,omitempty"`
	Offset     int64       `json:"offset"`
	Checkpoint bool        `json:"checkpoint"`
	Detail     string      `json:"detail"`
	Text       string      `json:"text"`
}

// verificationOf turns a Verify report into verification.json.
func verificationOf(rep *Report, vkey, source string) evidenceVerification {
	v := evidenceVerification{
		OK: rep.OK(), JournalID: rep.JournalID, VerifierKey: vkey, VerifierKeySource: source,
		Segments: rep.Segments, RecordsVerified: rep.Records, FirstSeq: rep.FirstSeq, LastSeq: rep.LastSeq,
		FirstTime: evidenceTimePtr(rep.FirstTime), LastTime: evidenceTimePtr(rep.LastTime),
		Checkpoints: evidenceCheckpoints{
			Count:           rep.Checkpoints,
			MaxGap:          rep.MaxCheckpointGap.String(),
			MaxGapSeconds:   rep.MaxCheckpointGap.Seconds(),
			UncoveredRecord: rep.Uncovered,
		},
		Problems: []evidenceProblem{},
	}
	if rep.Records > 0 {
		v.LastHash = rep.LastHash.String()
	}
	if rep.Checkpoints > 0 {
		c := rep.LastCheckpoint
		v.Checkpoints.LastSeq, v.Checkpoints.LastHash, v.Checkpoints.LastTime = c.Seq, c.Hash.String(), evidenceTimePtr(c.Time)
	}
	for _, p := range rep.Problems {
		v.Problems = append(v.Problems, evidenceProblem{
			Kind: p.Kind, Seq: p.Seq, File: p.File, Line: p.Line, Offset: p.Offset, Checkpoint: p.Checked,
			Detail: p.Detail, Text: p.String(),
		})
	}
	if len(v.Problems) > 0 {
		v.FirstProblem = &v.Problems[0]
	}
	var sb strings.Builder
	rep.Write(&sb)
	v.Report = sb.String()
	return v
}

// evidenceTimePtr returns t in UTC, nil for the zero time.
func evidenceTimePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
