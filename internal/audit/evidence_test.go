package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// evidenceT0 is when the evidence test's sessions happen.
var evidenceT0 = time.Date(2025, 6, 2, 10, 0, 0, 0, time.UTC)

// evidenceJournal writes a journal with three sessions in range (one opened
// before it), one session wholly before it, an approved UPDATE with its
// approval records, an unapproved INSERT, a denied DELETE and HTTP
// requests, and closes it. It returns the data dir and verifier key.
func evidenceJournal(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	j, err := Open(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) time.Time { return evidenceT0.Add(d) }
	alice := func(ev Event) Event {
		ev.UserID, ev.EndUserID, ev.Issuer = "alice", "bob@example.com", "https://issuer.example"
		ev.ClientAddress, ev.ClientPort, ev.SessionID = "10.0.0.7", 51234, "ses_1"
		ev.Resource, ev.ResourceType, ev.DBSystem, ev.DBNamespace = "payments-db", "postgres", DBSystemPostgreSQL, "payments"
		return ev
	}
	stmt := func(d time.Duration, op, query string, outcome Outcome) Event {
		return alice(Event{
			Name: EventStatement, Time: at(d), Outcome: outcome, DBOperation: op, DBQueryText: query,
			DBCollections: []string{"public.cards"}, Decision: "allow", DecisionID: "dec_" + strings.ToLower(op), Duration: 2 * time.Millisecond,
		})
	}
	approvalEv := func(name string, d time.Duration, outcome Outcome, actor, state, transition string, approvers ...string) Event {
		attrs := []Attr{
			String(AttrApprovalState, state),
			String("custos.approval.transition", transition),
			String("custos.approval.requester", "alice"),
			Int("custos.approval.quorum", 1),
		}
		if len(approvers) > 0 {
			attrs = append(attrs, Strings(AttrApprovers, approvers))
		}
		return Event{
			Name: name, Time: at(d), Outcome: outcome, UserID: actor, ApprovalID: "apr_1", SessionID: "ses_1",
			Resource: "payments-db", ResourceType: "postgres", DBSystem: DBSystemPostgreSQL,
			DBQueryText: "UPDATE cards SET holder = $1 WHERE id = $2", DecisionID: "dec_update", Attrs: attrs,
		}
	}
	select1 := stmt(2*time.Second, "SELECT", "SELECT pan, holder FROM cards WHERE id = $1", OutcomeSuccess)
	select1.Rows, select1.Masked, select1.SADDropped = 5, 3, 1
	select1.PANSources = []string{"4242424242424242"}
	update := stmt(6500*time.Millisecond, "UPDATE", "UPDATE cards SET holder = $1 WHERE id = $2", OutcomeSuccess)
	update.ApprovalID, update.Rows, update.Decision = "apr_1", 1, "approval_required"
	insert := stmt(7*time.Second, "INSERT", "INSERT INTO cards (holder) VALUES ($1)", OutcomeSuccess)
	insert.Rows = 1
	del := stmt(8*time.Second, "DELETE", "DELETE FROM cards WHERE id = $1", OutcomeDenied)
	del.Decision = "deny"
	closed := alice(Event{Name: EventConnectionClosed, Time: at(9 * time.Second), Outcome: OutcomeSuccess, Masked: 3, SADDropped: 1,
		Attrs: []Attr{String("custos.connection.close_reason", "client_closed")}})
	http := func(d time.Duration, method, path string, masked int64) Event {
		return Event{
			Name: EventHTTPRequest, Time: at(d), Outcome: OutcomeSuccess, UserID: "billing-bot", ClientAddress: "10.0.0.9",
			SessionID: "ses_2", Resource: "refunds-api", ResourceType: "http", HTTPMethod: method, URLPath: path,
			HTTPStatusCode: 200, Decision: "allow", DecisionID: "dec_http_" + strings.ToLower(method), Masked: masked, Rows: 1,
		}
	}
	before := func(ev Event) Event {
		ev.SessionID, ev.Time = "ses_0", ev.Time.Add(-2*time.Hour)
		return ev
	}
	events := []Event{
		// Wholly before the range.
		before(alice(Event{Name: EventConnectionOpened, Time: at(0), Outcome: OutcomeSuccess})),
		before(stmt(time.Second, "INSERT", "INSERT INTO cards (holder) VALUES ($1)", OutcomeSuccess)),
		before(alice(Event{Name: EventConnectionClosed, Time: at(2 * time.Second), Outcome: OutcomeSuccess,
			Attrs: []Attr{String("custos.connection.close_reason", "client_closed")}})),
		// Opened before the range, used in it.
		{Name: EventConnectionOpened, Time: at(-10 * time.Minute), Outcome: OutcomeSuccess, UserID: "dave", ClientAddress: "10.0.0.8",
			SessionID: "ses_3", Resource: "payments-db", ResourceType: "postgres"},
		{Name: EventStatement, Time: at(11 * time.Second), Outcome: OutcomeSuccess, UserID: "dave", ClientAddress: "10.0.0.8",
			SessionID: "ses_3", Resource: "payments-db", DBOperation: "SELECT", DBQueryText: "SELECT count(*) FROM cards",
			DBCollections: []string{"public.cards"}, Rows: 1},
		// Session 1.
		alice(Event{Name: EventAuthSucceeded, Time: at(0), Outcome: OutcomeSuccess}),
		alice(Event{Name: EventConnectionOpened, Time: at(time.Second), Outcome: OutcomeSuccess}),
		select1,
		stmt(3*time.Second, "BEGIN", "BEGIN", OutcomeSuccess),
		approvalEv(EventApprovalRequested, 4*time.Second, OutcomePending, "alice", "pending", "requested"),
		approvalEv(EventApprovalDecided, 5*time.Second, OutcomeSuccess, "carol", "approved", "approved", "carol"),
		approvalEv(EventApprovalDecided, 5500*time.Millisecond, OutcomeSuccess, "carol", "approved", "decided", "carol"),
		approvalEv(EventApprovalConsumed, 6*time.Second, OutcomeSuccess, "alice", "consumed", "consumed", "carol"),
		update,
		insert,
		del,
		stmt(8500*time.Millisecond, "COMMIT", "COMMIT", OutcomeSuccess),
		closed,
		// Session 2: HTTP.
		http(10*time.Second, "POST", "/v1/refunds", 0),
		http(10500*time.Millisecond, "GET", "/v1/refunds/7", 2),
		// After the range.
		alice(Event{Name: EventAuthFailed, Time: at(2 * time.Hour), Outcome: OutcomeFailure, ErrorType: "invalid_token"}),
	}
	ctx := context.Background()
	for _, ev := range events {
		if _, err := j.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	vkey := j.VerifierKey()
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return dir, vkey
}

// evidenceRange is the range of the evidence tests.
func evidenceRange(vkey string) EvidenceOptions {
	return EvidenceOptions{
		From: evidenceT0.Add(-5 * time.Minute), To: evidenceT0.Add(time.Hour), VerifierKey: vkey,
		Now: func() time.Time { return evidenceT0.Add(24 * time.Hour) },
	}
}

// readCSV reads a bundle CSV file as maps from column to cell, checking
// the header.
func readCSV(t *testing.T, path string, header []string) []map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(rows) == 0 || !slices.Equal(rows[0], header) {
		t.Fatalf("%s header %v, want %v", path, rows[0], header)
	}
	var out []map[string]string
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, h := range header {
			m[h] = row[i]
		}
		out = append(out, m)
	}
	return out
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// tsAt formats evidenceT0+d as the CSV files do.
func tsAt(d time.Duration) string { return evidenceT0.Add(d).Format(time.RFC3339Nano) }

func TestEvidenceBundle(t *testing.T) {
	t.Parallel()
	dataDir, vkey := evidenceJournal(t)
	out := filepath.Join(t.TempDir(), "bundle")
	sum, err := WriteEvidence(context.Background(), dataDir, out, evidenceRange(vkey))
	if err != nil {
		t.Fatal(err)
	}

	ents, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{EvidenceAccessFile, EvidenceFieldMapFile, EvidenceManifestFile, EvidenceMaskingFile,
		EvidenceSessionsFile, EvidenceSummaryFile, EvidenceVerificationFile, EvidenceWritesFile}
	if !slices.Equal(names, want) {
		t.Fatalf("bundle files %v, want %v", names, want)
	}
	for _, n := range names {
		b, _ := os.ReadFile(filepath.Join(out, n))
		if bytes.Contains(b, []byte("4242424242424242")) {
			t.Errorf("%s holds the PAN", n)
		}
	}

	access := readCSV(t, filepath.Join(out, EvidenceAccessFile), evidenceAccessColumns)
	if len(access) != 12 {
		t.Fatalf("access.csv: %d rows, want 12: %v", len(access), access)
	}
	if a := access[0]; a["event"] != EventStatement || a[AttrSessionID] != "ses_3" || a["time"] != tsAt(11*time.Second) {
		t.Errorf("access row 1 %v: want the statement of the session opened before the range", a)
	}
	sel := access[3]
	if sel["event"] != EventStatement || sel[AttrUserID] != "alice" || sel[AttrEndUserID] != "bob@example.com" ||
		sel[AttrClientAddress] != "10.0.0.7" || sel[AttrResource] != "payments-db" || sel["operation"] != "SELECT" ||
		sel["object"] != "public.cards" || sel[AttrOutcome] != "success" || sel[AttrDecision] != "allow" ||
		sel[AttrDecisionID] != "dec_select" || sel["time"] != tsAt(2*time.Second) {
		t.Errorf("access SELECT row %v", sel)
	}
	for _, a := range access {
		if strings.HasPrefix(a["event"], "custos.approval.") || a[AttrSessionID] == "ses_0" {
			t.Errorf("access.csv lists %v", a)
		}
	}
	if post := access[10]; post["operation"] != "POST" || post["object"] != "/v1/refunds" || post[AttrUserID] != "billing-bot" {
		t.Errorf("access POST row %v", post)
	}

	writes := readCSV(t, filepath.Join(out, EvidenceWritesFile), evidenceWritesColumns)
	if len(writes) != 4 {
		t.Fatalf("writes.csv: %d rows, want 4: %v", len(writes), writes)
	}
	upd, ins, del, post := writes[0], writes[1], writes[2], writes[3]
	if upd["operation"] != "UPDATE" || upd[AttrApprovalID] != "apr_1" || upd["statement"] != "UPDATE cards SET holder = $1 WHERE id = $2" ||
		upd["approval.requested_at"] != tsAt(4*time.Second) || upd["approval.requester"] != "alice" ||
		upd["approval.approvers"] != "carol" || upd["approval.decided_at"] != tsAt(5500*time.Millisecond) ||
		upd["approval.decision"] != "approved" || upd["approval.consumed_at"] != tsAt(6*time.Second) ||
		upd["approval.state"] != "consumed" || upd[AttrOutcome] != "success" || upd[AttrSessionID] != "ses_1" || upd[AttrUserID] != "alice" {
		t.Errorf("UPDATE row %v", upd)
	}
	if ins["operation"] != "INSERT" || ins[AttrApprovalID] != "none" || ins["approval.decision"] != "" || ins[AttrOutcome] != "success" {
		t.Errorf("INSERT row %v", ins)
	}
	if del["operation"] != "DELETE" || del[AttrOutcome] != "denied" || del[AttrApprovalID] != "none" {
		t.Errorf("DELETE row %v", del)
	}
	if post["operation"] != "POST" || post["statement"] != "POST /v1/refunds" || post[AttrResource] != "refunds-api" || post[AttrApprovalID] != "none" {
		t.Errorf("POST row %v", post)
	}

	masking := readCSV(t, filepath.Join(out, EvidenceMaskingFile), evidenceMaskingColumns)
	if len(masking) != 9 {
		t.Fatalf("masking.csv: %d rows, want 9", len(masking))
	}
	if m := masking[1]; m["seq"] != sel["seq"] || m[AttrRows] != "5" || m[AttrMasked] != "3" || m[AttrSADDropped] != "1" || m[AttrSessionID] != "ses_1" {
		t.Errorf("masking SELECT row %v", m)
	}

	sessions := readCSV(t, filepath.Join(out, EvidenceSessionsFile), evidenceSessionsColumns)
	if len(sessions) != 3 {
		t.Fatalf("sessions.csv: %v", sessions)
	}
	s3, s1, s2 := sessions[0], sessions[1], sessions[2]
	if s3[AttrSessionID] != "ses_3" || s3["opened_at"] != tsAt(-10*time.Minute) || s3["closed_at"] != "" || s3["statements"] != "1" || s3[AttrUserID] != "dave" {
		t.Errorf("ses_3 %v", s3)
	}
	if s1[AttrSessionID] != "ses_1" || s1[AttrUserID] != "alice" || s1[AttrEndUserID] != "bob@example.com" || s1[AttrClientAddress] != "10.0.0.7" ||
		s1[AttrResource] != "payments-db" || s1["opened_at"] != tsAt(time.Second) || s1["closed_at"] != tsAt(9*time.Second) ||
		s1["close_reason"] != "client_closed" || s1["statements"] != "6" || s1["masked"] != "3" || s1["masked_at_close"] != "3" ||
		s1["first_seq"] != access[1]["seq"] || s1["last_seq"] != access[9]["seq"] {
		t.Errorf("ses_1 %v", s1)
	}
	if s2[AttrSessionID] != "ses_2" || s2["statements"] != "2" || s2["masked"] != "2" || s2[AttrResource] != "refunds-api" {
		t.Errorf("ses_2 %v", s2)
	}

	var fileSum EvidenceSummary
	readJSON(t, filepath.Join(out, EvidenceSummaryFile), &fileSum)
	wantWrites := EvidenceWrites{Total: 4, Ran: 3, RanWithApproval: 1, RanWithoutApproval: 2, NotRun: 1}
	if fileSum.Writes != wantWrites || sum.Writes != wantWrites {
		t.Errorf("writes %+v, want %+v", fileSum.Writes, wantWrites)
	}
	if fileSum.Records != 16 || fileSum.AccessRows != 12 || fileSum.Sessions != 3 || fileSum.FirstSeq != 6 || fileSum.LastSeq != 21 ||
		fileSum.Events[EventStatement] != 7 || fileSum.Events[EventApprovalDecided] != 2 || fileSum.Events[EventHTTPRequest] != 2 ||
		fileSum.Events[EventAuditStarted] != 0 || fileSum.Events[EventAuthFailed] != 0 {
		t.Errorf("summary %+v", fileSum)
	}
	if fileSum.Masking != (EvidenceMasking{Records: 9, Rows: 10, Masked: 5, SADDropped: 1}) {
		t.Errorf("masking %+v", fileSum.Masking)
	}
	if !fileSum.Verification.OK || fileSum.Verification.RecordsVerified != 23 || fileSum.Verification.UnverifiedInRange != 0 ||
		fileSum.Verification.VerifierKeySource != KeySourceGiven || fileSum.Integrity.HashMismatch != 0 {
		t.Errorf("summary verification %+v %+v", fileSum.Verification, fileSum.Integrity)
	}
	if fileSum.From == nil || !fileSum.From.Equal(evidenceT0.Add(-5*time.Minute)) || !fileSum.GeneratedAt.Equal(evidenceT0.Add(24*time.Hour)) {
		t.Errorf("summary range %v %v", fileSum.From, fileSum.GeneratedAt)
	}

	var ver evidenceVerification
	readJSON(t, filepath.Join(out, EvidenceVerificationFile), &ver)
	id, _ := ReadJournalID(dataDir)
	if !ver.OK || ver.JournalID != id || ver.RecordsVerified != 23 || ver.LastSeq != 23 || ver.FirstProblem != nil ||
		ver.Checkpoints.Count < 1 || ver.Checkpoints.LastSeq != 23 || ver.VerifierKey != vkey {
		t.Errorf("verification %+v", ver)
	}

	var man evidenceManifest
	readJSON(t, filepath.Join(out, EvidenceManifestFile), &man)
	if man.JournalID != id || man.VerifierKey != vkey || man.Format != EvidenceFormat || man.To == nil || !man.To.Equal(evidenceT0.Add(time.Hour)) {
		t.Errorf("manifest %+v", man)
	}
	var listed []string
	for _, f := range man.Files {
		b, err := os.ReadFile(filepath.Join(out, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		if f.SHA256 != hex.EncodeToString(h[:]) || f.Size != int64(len(b)) {
			t.Errorf("manifest %s: %d %s, file has %d %x", f.Name, f.Size, f.SHA256, len(b), h)
		}
		listed = append(listed, f.Name)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, slices.DeleteFunc(slices.Clone(want), func(n string) bool { return n == EvidenceManifestFile })) {
		t.Errorf("manifest lists %v", listed)
	}

	fm := readCSV(t, filepath.Join(out, EvidenceFieldMapFile), evidenceFieldMap[0])
	if len(fm) != 6 || !strings.Contains(fm[0]["record_fields"], "user.id") || !strings.Contains(fm[5]["record_fields"], "db.query.text") {
		t.Errorf("field map %v", fm)
	}

	// An existing non-empty directory is refused and left alone.
	if _, err := WriteEvidence(context.Background(), dataDir, out, evidenceRange(vkey)); !errors.Is(err, ErrEvidenceDir) {
		t.Errorf("second bundle into the same dir: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, EvidenceManifestFile)); len(b) == 0 {
		t.Error("the refused run touched the bundle")
	}
	// An existing empty one is used.
	empty := t.TempDir()
	if _, err := WriteEvidence(context.Background(), dataDir, empty, EvidenceOptions{}); err != nil {
		t.Errorf("empty dir, whole journal, key from the data dir: %v", err)
	}
	var whole EvidenceSummary
	readJSON(t, filepath.Join(empty, EvidenceSummaryFile), &whole)
	if whole.Records != 23 || whole.From != nil || whole.Verification.VerifierKeySource != KeySourceDataDir || whole.Writes.Total != 5 {
		t.Errorf("whole journal summary %+v", whole)
	}
}

func TestEvidenceTamperedJournal(t *testing.T) {
	t.Parallel()
	dataDir, vkey := evidenceJournal(t)
	p, ls := segLines(t, dataDir, 0)
	edited := -1
	for i, l := range ls {
		if bytes.Contains(l, []byte(`"db.operation.name":"INSERT"`)) && bytes.Contains(l, []byte(`"ses_1"`)) {
			ls[i] = bytes.Replace(l, []byte(`"alice"`), []byte(`"mallory"`), 1)
			edited = i
		}
	}
	if edited < 0 {
		t.Fatal("no INSERT line")
	}
	writeLines(t, p, ls)

	out := filepath.Join(t.TempDir(), "bundle")
	sum, err := WriteEvidence(context.Background(), dataDir, out, evidenceRange(vkey))
	if err != nil {
		t.Fatalf("a journal that does not verify must still get its bundle: %v", err)
	}
	seq := uint64(edited + 1)
	var ver evidenceVerification
	readJSON(t, filepath.Join(out, EvidenceVerificationFile), &ver)
	if ver.OK || ver.FirstProblem == nil || ver.FirstProblem.Kind != ProblemEdited || ver.FirstProblem.Seq != seq ||
		!strings.Contains(ver.FirstProblem.Detail, "does not match its hash") || ver.LastSeq != seq-1 {
		t.Fatalf("verification %+v", ver)
	}
	var fileSum EvidenceSummary
	readJSON(t, filepath.Join(out, EvidenceSummaryFile), &fileSum)
	if fileSum.Verification.OK || !strings.Contains(fileSum.Verification.FirstProblem, "edited") ||
		fileSum.Integrity.HashMismatch != 1 || !slices.Equal(fileSum.Integrity.HashMismatchSeqs, []uint64{seq}) ||
		fileSum.Verification.UnverifiedInRange == 0 || sum.Verification.OK {
		t.Errorf("summary %+v %+v", fileSum.Verification, fileSum.Integrity)
	}
	// The edited record is listed as found, so the auditor sees what was
	// changed.
	writes := readCSV(t, filepath.Join(out, EvidenceWritesFile), evidenceWritesColumns)
	if len(writes) != 4 || writes[1][AttrUserID] != "mallory" {
		t.Errorf("writes %v", writes)
	}
}

func TestEvidenceRefusesPAN(t *testing.T) {
	t.Parallel()
	dataDir, vkey := evidenceJournal(t)
	// A record the journal would never write: a clear PAN, chained and
	// hashed like any other.
	p, ls := segLines(t, dataDir, 0)
	ls = ls[:len(ls)-1] // the empty string after the last newline
	last, err := DecodeRecord(ls[len(ls)-1])
	if err != nil {
		t.Fatal(err)
	}
	r := Record{
		Seq: last.Seq + 1, PrevHash: last.Hash, Time: evidenceT0.Add(30 * time.Second), Name: EventStatement, Severity: SeverityInfo,
		Attrs: []Attr{String(AttrDBOperationName, "UPDATE"), String(AttrDBQueryText, "UPDATE cards SET holder = 'x' WHERE pan = '4242424242424242'")},
	}
	body := r.Body()
	writeLines(t, p, append(ls, appendLine(nil, body, chainHash(r.PrevHash, body))))

	out := filepath.Join(t.TempDir(), "bundle")
	_, err = WriteEvidence(context.Background(), dataDir, out, evidenceRange(vkey))
	if !errors.Is(err, ErrEvidencePAN) || !strings.Contains(err.Error(), EvidenceWritesFile) {
		t.Fatalf("err = %v, want ErrEvidencePAN naming writes.csv", err)
	}
	if strings.Contains(err.Error(), "4242") {
		t.Errorf("the error shows the PAN: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the bundle was left behind: %v", err)
	}
}

func TestEvidenceWriteClassification(t *testing.T) {
	t.Parallel()
	rec := func(name string, attrs ...Attr) *Record {
		slices.SortFunc(attrs, func(a, b Attr) int { return strings.Compare(a.Key, b.Key) })
		return &Record{Name: name, Attrs: attrs}
	}
	for _, tc := range []struct {
		r    *Record
		want bool
	}{
		{rec(EventStatement, String(AttrDBOperationName, "SELECT")), false},
		{rec(EventStatement, String(AttrDBOperationName, "START TRANSACTION")), false},
		{rec(EventStatement, String(AttrDBOperationName, "explain")), false},
		{rec(EventStatement, String(AttrDBOperationName, "DECLARE")), false},
		{rec(EventStatement, String(AttrDBOperationName, "INSERT")), true},
		{rec(EventStatement, String(AttrDBOperationName, "TRUNCATE")), true},
		{rec(EventStatement, String(AttrDBOperationName, "CREATE TABLE")), true},
		{rec(EventStatement), true},
		{rec(EventStatement, String(AttrDBOperationName, "SELECT"), String(AttrApprovalID, "apr_9")), true},
		{rec(EventHTTPRequest, String(AttrHTTPMethod, "GET")), false},
		{rec(EventHTTPRequest, String(AttrHTTPMethod, "options")), false},
		{rec(EventHTTPRequest, String(AttrHTTPMethod, "DELETE")), true},
		{rec(EventConnectionOpened), false},
	} {
		if got := isEvidenceWrite(tc.r); got != tc.want {
			t.Errorf("isEvidenceWrite(%s %v) = %v", tc.r.Name, tc.r.Attrs, got)
		}
	}
}

func TestEvidenceApprovalJoin(t *testing.T) {
	t.Parallel()
	rec := func(name string, sec int, outcome Outcome, state, transition string, approvers ...string) *Record {
		attrs := []Attr{String(AttrApprovalID, "apr_1"), String(AttrOutcome, string(outcome)), String(AttrApprovalState, state),
			String(evAttrApprovalTransition, transition), String(evAttrApprovalRequester, "alice")}
		if len(approvers) > 0 {
			attrs = append(attrs, Strings(AttrApprovers, approvers))
		}
		slices.SortFunc(attrs, func(a, b Attr) int { return strings.Compare(a.Key, b.Key) })
		return &Record{Name: name, Time: evidenceT0.Add(time.Duration(sec) * time.Second), Attrs: attrs}
	}
	for _, tc := range []struct {
		name      string
		recs      []*Record
		decision  string
		decidedAt int
		approvers string
		state     string
	}{
		{"quorum of two", []*Record{
			rec(EventApprovalRequested, 1, OutcomePending, "pending", "requested"),
			rec(EventApprovalDecided, 2, OutcomeSuccess, "pending", "approved", "carol"),
			rec(EventApprovalDecided, 3, OutcomeSuccess, "approved", "approved", "carol", "erin"),
			rec(EventApprovalDecided, 3, OutcomeSuccess, "approved", "decided", "carol", "erin"),
			rec(EventApprovalConsumed, 4, OutcomeSuccess, "consumed", "consumed", "carol", "erin"),
		}, "approved", 3, "carol;erin", "consumed"},
		{"one vote short", []*Record{
			rec(EventApprovalRequested, 1, OutcomePending, "pending", "requested"),
			rec(EventApprovalDecided, 2, OutcomeSuccess, "pending", "approved", "carol"),
		}, "", 0, "carol", "pending"},
		{"denied", []*Record{
			rec(EventApprovalRequested, 1, OutcomePending, "pending", "requested"),
			rec(EventApprovalDecided, 5, OutcomeDenied, "denied", "denied", "carol"),
		}, "denied", 5, "carol", "denied"},
		{"expired while pending", []*Record{
			rec(EventApprovalRequested, 1, OutcomePending, "pending", "requested"),
			rec(EventApprovalExpired, 9, OutcomeFailure, "expired", "expired"),
		}, "expired", 9, "", "expired"},
		{"approved, then withdrawn", []*Record{
			rec(EventApprovalRequested, 1, OutcomePending, "pending", "requested"),
			rec(EventApprovalDecided, 2, OutcomeSuccess, "approved", "decided", "carol"),
			rec(EventApprovalWithdrawn, 6, OutcomeSuccess, "withdrawn", "withdrawn", "carol"),
		}, "approved", 2, "carol", "withdrawn"},
	} {
		a := &evidenceApproval{}
		for _, r := range tc.recs {
			a.add(r)
		}
		var at time.Time
		if tc.decidedAt > 0 {
			at = evidenceT0.Add(time.Duration(tc.decidedAt) * time.Second)
		}
		if a.decision != tc.decision || !a.decidedAt.Equal(at) || a.approvers != tc.approvers || a.state != tc.state ||
			a.requester != "alice" || !a.requestedAt.Equal(evidenceT0.Add(time.Second)) {
			t.Errorf("%s: %+v", tc.name, a)
		}
	}
}
