package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/audit"
)

// auditJournal writes a small journal: started, n statements, stopped.
func auditJournal(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	j, err := audit.Open(audit.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := j.Append(context.Background(), audit.Event{
			Name: audit.EventStatement, Outcome: audit.OutcomeSuccess, UserID: "alice",
			ClientAddress: "10.0.0.7", Resource: "payments-db", DBSystem: audit.DBSystemPostgreSQL,
			DBOperation: "SELECT", DBQueryText: "=SELECT holder FROM cards WHERE pan = '4242424242424242'",
			Rows: int64(i),
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAuditCommands(t *testing.T) {
	t.Parallel()
	dir := auditJournal(t, 3)
	ctx := context.Background()
	var out, errOut bytes.Buffer

	if err := run(ctx, []string{"audit", "key", "--data-dir", dir}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "audit.pub")
	if !strings.HasPrefix(out.String(), "custos-audit+") {
		t.Fatalf("key: %q", out.String())
	}
	if err := os.WriteFile(keyFile, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	if err := run(ctx, []string{"audit", "verify", "--data-dir", dir, "--key", keyFile}, &out, &errOut); err != nil {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "OK: chain and checkpoint signatures verify") || !strings.Contains(out.String(), "records   5 ") {
		t.Fatalf("verify output:\n%s", out.String())
	}

	csvFile := filepath.Join(t.TempDir(), "audit.csv")
	if err := run(ctx, []string{"audit", "export", "--data-dir", dir, "--format", "csv", "--out", csvFile}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(csvFile)
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil || len(rows) != 6 || rows[0][0] != "uid" {
		t.Fatalf("csv: %d rows, %v\n%s", len(rows), err, b)
	}
	if bytes.Contains(b, []byte("4242424242424242")) {
		t.Fatal("csv export holds a PAN")
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	if q := rows[2][col["db.query.text"]]; !strings.HasPrefix(q, "'=SELECT") || !strings.Contains(q, "[PAN hmac-sha256=") {
		t.Errorf("query cell %q", q)
	}

	out.Reset()
	from := time.Now().Add(-time.Hour).Format(time.RFC3339)
	if err := run(ctx, []string{"audit", "export", "--data-dir", dir, "--from", from, "--format", "json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var recs []struct {
		UID        string         `json:"uid"`
		Seq        uint64         `json:"seq"`
		EventName  string         `json:"event_name"`
		Attributes map[string]any `json:"attributes"`
	}
	if err := json.Unmarshal(out.Bytes(), &recs); err != nil || len(recs) != 5 || recs[1].Attributes["user.id"] != "alice" {
		t.Fatalf("json: %v %+v", err, recs)
	}
	out.Reset()
	if err := run(ctx, []string{"audit", "export", "--data-dir", dir, "--to", from}, &out, &errOut); err != nil || strings.TrimSpace(out.String()) != "[\n]" {
		t.Fatalf("empty range: %v %q", err, out.String())
	}

	// Delete a record: verify fails and names it.
	segs, _ := filepath.Glob(filepath.Join(dir, "audit", "segments", "*.jsonl"))
	data, _ := os.ReadFile(segs[0])
	lines := bytes.SplitAfter(data, []byte("\n"))
	if err := os.WriteFile(segs[0], bytes.Join(append(lines[:2:2], lines[3:]...), nil), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = run(ctx, []string{"audit", "verify", "--data-dir", dir, "--key", keyFile}, &out, &errOut)
	if !errors.Is(err, audit.ErrVerify) || !strings.Contains(out.String(), "FAIL deleted: record seq 3") {
		t.Fatalf("verify after deletion: %v\n%s", err, out.String())
	}
}

func TestAuditUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	for _, args := range [][]string{{"audit"}, {"audit", "nope"}, {"audit", "verify", "extra"}, {"audit", "export", "--format", "xml", "--data-dir", t.TempDir()}} {
		if err := run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestAuditEvidence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	j, err := audit.Open(audit.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []audit.Event{
		{Name: audit.EventConnectionOpened, Outcome: audit.OutcomeSuccess, UserID: "alice", ClientAddress: "10.0.0.7",
			SessionID: "ses_1", Resource: "payments-db"},
		{Name: audit.EventStatement, Outcome: audit.OutcomeSuccess, UserID: "alice", ClientAddress: "10.0.0.7", SessionID: "ses_1",
			Resource: "payments-db", DBOperation: "SELECT", DBQueryText: "SELECT pan FROM cards", Rows: 2, Masked: 2},
		{Name: audit.EventStatement, Outcome: audit.OutcomeSuccess, UserID: "alice", ClientAddress: "10.0.0.7", SessionID: "ses_1",
			Resource: "payments-db", DBOperation: "INSERT", DBQueryText: "INSERT INTO cards (pan) VALUES ($1)", Rows: 1,
			PANSources: []string{"4242424242424242"}},
		{Name: audit.EventConnectionClosed, Outcome: audit.OutcomeSuccess, UserID: "alice", SessionID: "ses_1", Resource: "payments-db",
			Attrs: []audit.Attr{audit.String("custos.connection.close_reason", "client_closed")}},
	} {
		if _, err := j.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"audit", "key", "--data-dir", dir}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "audit.pub")
	if err := os.WriteFile(keyFile, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	bundle := filepath.Join(t.TempDir(), "evidence")
	from := time.Now().Add(-time.Hour).Format(time.RFC3339)
	out.Reset()
	args := []string{"audit", "evidence", "--data-dir", dir, "--key", keyFile, "--from", from, "--out", bundle}
	if err := run(ctx, args, &out, &errOut); err != nil {
		t.Fatalf("evidence: %v\n%s", err, out.String())
	}
	for _, want := range []string{"evidence bundle written to " + bundle, "1 ran without one", "2 PANs masked", "verify    OK: 6 records"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	var man struct {
		JournalID   string `json:"journal_id"`
		VerifierKey string `json:"verifier_key"`
		Files       []struct {
			Name string `json:"name"`
		} `json:"files"`
	}
	b, err := os.ReadFile(filepath.Join(bundle, audit.EvidenceManifestFile))
	if err != nil || json.Unmarshal(b, &man) != nil || len(man.Files) != 7 || man.VerifierKey != strings.TrimSpace(readEvidenceFile(t, keyFile)) {
		t.Fatalf("manifest: %v\n%s", err, b)
	}
	rows, err := csv.NewReader(strings.NewReader(readEvidenceFile(t, filepath.Join(bundle, audit.EvidenceWritesFile)))).ReadAll()
	if err != nil || len(rows) != 2 || rows[1][6] != "INSERT" || rows[1][9] != "none" {
		t.Fatalf("writes.csv: %v %q", err, rows)
	}
	for _, f := range man.Files {
		if strings.Contains(readEvidenceFile(t, filepath.Join(bundle, f.Name)), "4242424242424242") {
			t.Errorf("%s holds the PAN", f.Name)
		}
	}

	// The same directory again is refused; --out is required.
	if err := run(ctx, args, &out, &errOut); !errors.Is(err, audit.ErrEvidenceDir) {
		t.Errorf("existing bundle dir: %v", err)
	}
	if err := run(ctx, []string{"audit", "evidence", "--data-dir", dir}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--out") {
		t.Errorf("no --out: %v", err)
	}
	if err := run(ctx, []string{"audit", "evidence", "--data-dir", dir, "--out", t.TempDir(), "--to", "yesterday"}, &out, &errOut); err == nil {
		t.Error("bad --to accepted")
	}

	// A deleted record: the bundle is still written, says so, and the
	// command fails.
	segs, _ := filepath.Glob(filepath.Join(dir, "audit", "segments", "*.jsonl"))
	data, _ := os.ReadFile(segs[0])
	lines := bytes.SplitAfter(data, []byte("\n"))
	if err := os.WriteFile(segs[0], bytes.Join(append(lines[:2:2], lines[3:]...), nil), 0o600); err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(t.TempDir(), "evidence")
	out.Reset()
	err = run(ctx, []string{"audit", "evidence", "--data-dir", dir, "--key", keyFile, "--out", tampered}, &out, &errOut)
	if !errors.Is(err, audit.ErrVerify) || !strings.Contains(out.String(), "FAIL      the journal does not verify: deleted: record seq 3") {
		t.Fatalf("tampered journal: %v\n%s", err, out.String())
	}
	var ver struct {
		OK           bool `json:"ok"`
		FirstProblem struct {
			Kind string `json:"kind"`
			Seq  uint64 `json:"seq"`
		} `json:"first_problem"`
	}
	if err := json.Unmarshal([]byte(readEvidenceFile(t, filepath.Join(tampered, audit.EvidenceVerificationFile))), &ver); err != nil ||
		ver.OK || ver.FirstProblem.Kind != "deleted" || ver.FirstProblem.Seq != 3 {
		t.Errorf("verification.json: %v %+v", err, ver)
	}
}

func readEvidenceFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
