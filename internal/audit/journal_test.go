package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/internal/mask"
)

// openTest opens a journal in a fresh data dir.
func openTest(t testing.TB, opts Options) *Journal {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	j, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close(context.Background()) })
	return j
}

// statement is a typical statement event.
func statement(i int) Event {
	return Event{
		Name: EventStatement, Outcome: OutcomeSuccess,
		UserID: "alice", EndUserID: "alice@example.com", ClientAddress: "10.0.0.7", ClientPort: 51234,
		SessionID: "ses_1", Resource: "payments-db", ResourceType: "postgres",
		DBSystem: DBSystemPostgreSQL, DBNamespace: "payments", DBOperation: "SELECT",
		DBQueryText: "SELECT id, holder FROM cards WHERE id = $1", DBCollections: []string{"public.cards"},
		Decision: "allow", DecisionID: fmt.Sprintf("dec_%d", i), Rows: int64(i), Masked: 2, Duration: 3 * time.Millisecond,
	}
}

// verifierOf returns the journal's verifier.
func verifierOf(t testing.TB, j *Journal) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(j.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustVerify(t *testing.T, dataDir string, v note.Verifier) *Report {
	t.Helper()
	rep, err := Verify(context.Background(), dataDir, v)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestAppendVerifyAndExport(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	j := openTest(t, Options{Registerer: reg})
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				if _, err := j.Append(ctx, statement(g*100+i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	st := j.Stats()
	if st.Seq != 201 { // audit.started + 200
		t.Fatalf("seq = %d, want 201", st.Seq)
	}
	if got := metricValue(t, reg, "custos_audit_records_total"); got != 201 {
		t.Errorf("custos_audit_records_total = %v", got)
	}
	v := verifierOf(t, j)
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, j.opts.DataDir, v)
	if !rep.OK() || rep.Records != 202 || rep.Checkpoints < 1 || rep.LastCheckpoint.Seq != 202 || rep.Uncovered != 0 {
		var b strings.Builder
		rep.Write(&b)
		t.Fatalf("report:\n%s", b.String())
	}
	var first, last Record
	if err := ReadRecords(ctx, j.opts.DataDir, 1, func(r *Record) error {
		if r.Seq == 1 {
			first = *r
		}
		last = *r
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if first.Name != EventAuditStarted || last.Name != EventAuditStopped {
		t.Errorf("first %s, last %s", first.Name, last.Name)
	}
}

// metricValue returns the value of a registered counter or gauge.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestEventAttributes(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	ctx := context.Background()
	ev := statement(7)
	ev.TraceID = [16]byte{1, 2, 3}
	ev.SpanID = [8]byte{4, 5}
	ev.Attrs = []Attr{String("custos.extra", "x"), Bool("custos.flag", true)}
	seq, err := j.Append(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	var got *Record
	if err := ReadRecords(ctx, j.opts.DataDir, seq, func(r *Record) error { got = r; return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		AttrUserID: "alice", AttrEndUserID: "alice@example.com", AttrClientAddress: "10.0.0.7", AttrClientPort: "51234",
		AttrDBSystemName: "postgresql", AttrDBNamespace: "payments", AttrDBOperationName: "SELECT",
		AttrDBCollectionName: "public.cards", AttrDBCollections: `["public.cards"]`, AttrDecisionID: "dec_7",
		AttrRows: "7", AttrMasked: "2", AttrSADDropped: "0", AttrDurationMS: "3", AttrOutcome: "success",
		"custos.extra": "x", "custos.flag": "true", AttrResource: "payments-db",
	}
	for k, w := range want {
		if v, ok := got.Attr(k); !ok || v.String() != w {
			t.Errorf("%s = %q (%v), want %q", k, v.String(), ok, w)
		}
	}
	if got.TraceID != "01020300000000000000000000000000" || got.SpanID != "0405000000000000" || got.Severity != SeverityInfo {
		t.Errorf("trace %s span %s severity %d", got.TraceID, got.SpanID, got.Severity)
	}

	for _, bad := range []Event{
		{},
		{Name: EventStatement, UserID: "a", Attrs: []Attr{String(AttrUserID, "b")}},
		{Name: EventStatement, Attrs: []Attr{Int("custos.n", 4242424242424242)}},
	} {
		if _, err := j.Append(ctx, bad); !errors.Is(err, ErrEvent) && !errors.Is(err, ErrClearPAN) {
			t.Errorf("Append(%+v) = %v, want ErrEvent or ErrClearPAN", bad, err)
		}
	}
}

func TestNoClearPANInJournal(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	j := openTest(t, Options{HMACKey: key})
	ctx := context.Background()
	pans := []string{"4242424242424242", "5555 5555 5555 4444", "378282246310005", "6011-1111-1111-1117", "3056930009020004", "6200000000000005"}
	for _, p := range pans {
		ev := statement(1)
		ev.DBQueryText = "SELECT * FROM cards WHERE pan = '" + p + "'" // a caller that did not normalize
		ev.PANSources = []string{"UPDATE cards SET pan = $1", p}
		ev.Error = "duplicate key: Key (pan)=(" + p + ") already exists"
		ev.Reasons = []string{"card " + p}
		if _, err := j.Append(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	dir := j.opts.DataDir
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(AuditDir(dir))
	for _, s := range segs {
		b, _ := os.ReadFile(s.path)
		if mask.Contains(b) {
			t.Fatalf("%s holds a PAN", s.name)
		}
		for _, p := range pans {
			if bytes.Contains(b, []byte(p)) {
				t.Fatalf("%s holds %s", s.name, p)
			}
		}
	}
	n := 0
	if err := ReadRecords(ctx, dir, 1, func(r *Record) error {
		if r.Name != EventStatement {
			return nil
		}
		p := pans[n]
		n++
		h, last4 := mask.Fingerprint(key, []byte(p))
		fp, _ := r.Attr(AttrPANFingerprints)
		if l := fp.Strings(); len(l) != 1 || l[0] != "hmac-sha256="+h+" last4="+last4 {
			t.Errorf("fingerprints of %s = %q", p, l)
		}
		q, _ := r.Attr(AttrDBQueryText)
		if !strings.Contains(q.Str(), "[PAN hmac-sha256="+h+" last4="+last4+"]") {
			t.Errorf("query text %q", q.Str())
		}
		if sc, _ := r.Attr(AttrPANScrubbed); sc.Int() != 3 {
			t.Errorf("scrubbed = %d, want 3", sc.Int())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != len(pans) {
		t.Fatalf("%d statements read", n)
	}
	if rep := mustVerify(t, dir, verifierOf(t, j)); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}

func TestRotationAndReadFrom(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{SegmentBytes: 4 << 10})
	ctx := context.Background()
	for i := range 100 {
		if _, err := j.Append(ctx, statement(i)); err != nil {
			t.Fatal(err)
		}
	}
	dir := j.opts.DataDir
	v := verifierOf(t, j)
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, v)
	if !rep.OK() || rep.Segments < 5 || rep.Records != 102 {
		t.Fatalf("segments %d records %d problems %v", rep.Segments, rep.Records, rep.Problems)
	}
	var seqs []uint64
	if err := ReadRecords(ctx, dir, 57, func(r *Record) error { seqs = append(seqs, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 102-56 || seqs[0] != 57 {
		t.Fatalf("read from 57: %d records starting at %v", len(seqs), seqs[:1])
	}
	// Reopening continues the chain in the last segment.
	j2 := openTest(t, Options{DataDir: dir, SegmentBytes: 4 << 10})
	if _, err := j2.Append(ctx, statement(1)); err != nil {
		t.Fatal(err)
	}
	if err := j2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, v); !rep.OK() || rep.Records != 102+3 {
		t.Fatalf("after reopen: %d records, %v", rep.Records, rep.Problems)
	}
}

func TestCheckpointsWhileIdle(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{CheckpointInterval: 40 * time.Millisecond})
	// Nothing is appended: checkpoints still come, one per interval. The
	// bounds leave room for a busy machine's scheduling.
	deadline := time.Now().Add(10 * time.Second)
	for j.Stats().Checkpoints < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	dir, v := j.opts.DataDir, verifierOf(t, j)
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, v)
	if !rep.OK() || rep.Checkpoints < 5 || rep.MaxCheckpointGap > 2*time.Second {
		t.Fatalf("checkpoints %d, max gap %s, problems %v", rep.Checkpoints, rep.MaxCheckpointGap, rep.Problems)
	}
}

func TestOpenLocks(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	if _, err := Open(Options{DataDir: j.opts.DataDir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

// tamperCase changes a closed journal on disk.
type tamperCase struct {
	name   string
	tamper func(t *testing.T, dir string)
	kind   ProblemKind
	seq    uint64 // the record Verify must name (0: not checked)
	detail string
}

// segLines returns the lines of the only (or first) segment.
func segLines(t *testing.T, dir string, i int) (string, [][]byte) {
	t.Helper()
	segs, err := listSegments(AuditDir(dir))
	if err != nil || len(segs) <= i {
		t.Fatalf("segments: %v %v", segs, err)
	}
	b, err := os.ReadFile(segs[i].path)
	if err != nil {
		t.Fatal(err)
	}
	return segs[i].path, bytes.SplitAfter(b, []byte("\n"))
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rehash recomputes a line's hash after an edit, as a careful forger would.
func rehash(t *testing.T, line []byte) []byte {
	t.Helper()
	r, err := DecodeRecord(line)
	if err != nil && !errors.Is(err, ErrHashMismatch) {
		t.Fatal(err)
	}
	body := r.Body()
	return appendLine(nil, body, chainHash(r.PrevHash, body))
}

func TestVerifyNamesTampering(t *testing.T) {
	t.Parallel()
	cases := []tamperCase{
		{name: "edited", kind: ProblemEdited, seq: 5, detail: "content does not match its hash", tamper: func(t *testing.T, dir string) {
			p, ls := segLines(t, dir, 0)
			ls[4] = bytes.Replace(ls[4], []byte(`"alice"`), []byte(`"mallory"`), 1)
			writeLines(t, p, ls)
		}},
		{name: "edited and rehashed", kind: ProblemEdited, seq: 5, detail: "hash recomputed", tamper: func(t *testing.T, dir string) {
			p, ls := segLines(t, dir, 0)
			ls[4] = rehash(t, bytes.Replace(ls[4], []byte(`"alice"`), []byte(`"mallory"`), 1))
			writeLines(t, p, ls)
		}},
		{name: "whole chain rewritten", kind: ProblemEdited, seq: 12, detail: "were rewritten", tamper: func(t *testing.T, dir string) {
			p, ls := segLines(t, dir, 0)
			prev := Hash{}
			for i := range ls {
				if len(ls[i]) == 0 {
					continue
				}
				r, err := DecodeRecord(ls[i])
				if err != nil {
					t.Fatal(err)
				}
				if r.Seq == 5 {
					r.Attrs[0] = String(r.Attrs[0].Key, "forged")
				}
				r.PrevHash = prev
				body := r.Body()
				prev = chainHash(r.PrevHash, body)
				ls[i] = appendLine(nil, body, prev)
			}
			writeLines(t, p, ls)
		}},
		{name: "deleted", kind: ProblemDeleted, seq: 6, detail: "records 6..6 are missing", tamper: func(t *testing.T, dir string) {
			p, ls := segLines(t, dir, 0)
			writeLines(t, p, append(ls[:5:5], ls[6:]...))
		}},
		{name: "reordered", kind: ProblemReordered, seq: 8, detail: "seq 7 is further on", tamper: func(t *testing.T, dir string) {
			p, ls := segLines(t, dir, 0)
			ls[6], ls[7] = ls[7], ls[6]
			writeLines(t, p, ls)
		}},
		{name: "torn tail", kind: ProblemTruncated, seq: 12, detail: "torn record", tamper: func(t *testing.T, dir string) {
			p, ls := segLines(t, dir, 0)
			ls[11] = ls[11][:len(ls[11])/2]
			writeLines(t, p, ls)
		}},
		{name: "records cut off", kind: ProblemTruncated, seq: 10, detail: "records 10..12 are gone", tamper: func(t *testing.T, dir string) {
			p, ls := segLines(t, dir, 0)
			writeLines(t, p, ls[:9])
		}},
		{name: "bad signature", kind: ProblemBadSignature, detail: "signature does not verify", tamper: func(t *testing.T, dir string) {
			p := filepath.Join(AuditDir(dir), checkpointsName)
			b, _ := os.ReadFile(p)
			// Change the covered seq in the note text: the signature no
			// longer matches.
			b = bytes.Replace(b, []byte(`\n12\n`), []byte(`\n11\n`), 1)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "forged checkpoint", kind: ProblemBadSignature, detail: "not signed by the verifier key", tamper: func(t *testing.T, dir string) {
			skey, _, _ := GenerateKey("mallory")
			s, _ := note.NewSigner(skey)
			id, _ := ReadJournalID(dir)
			line, err := signCheckpoint(Checkpoint{Origin: originPrefix + id, Seq: 1, Time: time.Now()}, s)
			if err != nil {
				t.Fatal(err)
			}
			f, _ := os.OpenFile(filepath.Join(AuditDir(dir), checkpointsName), os.O_APPEND|os.O_WRONLY, 0)
			if _, err := f.Write(line); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			j := openTest(t, Options{})
			for i := range 10 {
				if _, err := j.Append(context.Background(), statement(i)); err != nil {
					t.Fatal(err)
				}
			}
			dir, v := j.opts.DataDir, verifierOf(t, j)
			if err := j.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if rep := mustVerify(t, dir, v); !rep.OK() || rep.Records != 12 {
				t.Fatalf("before tampering: %d records, %v", rep.Records, rep.Problems)
			}
			tc.tamper(t, dir)
			rep := mustVerify(t, dir, v)
			if rep.OK() {
				t.Fatal("tampering not found")
			}
			p := rep.Problems[0]
			if p.Kind != tc.kind || (tc.seq != 0 && p.Seq != tc.seq) || !strings.Contains(p.String(), tc.detail) {
				t.Fatalf("problem = %s (seq %d), want %s seq %d containing %q", p, p.Seq, tc.kind, tc.seq, tc.detail)
			}
		})
	}
}

func TestVerifyDeletedSegment(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{SegmentBytes: 2 << 10})
	for i := range 40 {
		if _, err := j.Append(context.Background(), statement(i)); err != nil {
			t.Fatal(err)
		}
	}
	dir, v := j.opts.DataDir, verifierOf(t, j)
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	segs, _ := listSegments(AuditDir(dir))
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	if err := os.Remove(segs[1].path); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, v)
	if rep.OK() || rep.Problems[0].Kind != ProblemDeleted || rep.Problems[0].Seq != segs[1].first {
		t.Fatalf("problems %v, want deleted at seq %d", rep.Problems, segs[1].first)
	}
}

func TestTornTailRecovery(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	ctx := context.Background()
	for i := range 5 {
		if _, err := j.Append(ctx, statement(i)); err != nil {
			t.Fatal(err)
		}
	}
	dir, v := j.opts.DataDir, verifierOf(t, j)
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of writing a batch: one whole record that was
	// never fsynced and half of another.
	p, ls := segLines(t, dir, 0)
	torn := rehash(t, ls[3]) // a well-formed record, but not linked: seq 4 again
	ls = append(ls, torn, []byte(`{"v":1,"seq":9,"prev_hash":"00`))
	writeLines(t, p, ls)
	if rep := mustVerify(t, dir, v); rep.OK() {
		t.Fatal("torn tail verifies")
	}

	j2 := openTest(t, Options{DataDir: dir})
	seq, err := j2.Append(ctx, statement(99))
	if err != nil {
		t.Fatal(err)
	}
	if err := j2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if seq != 10 { // 7 before + control failure + audit.started + this
		t.Fatalf("seq = %d, want 10", seq)
	}
	rep := mustVerify(t, dir, v)
	if !rep.OK() {
		t.Fatalf("after recovery: %v", rep.Problems)
	}
	var ctrl *Record
	_ = ReadRecords(ctx, dir, 1, func(r *Record) error {
		if r.Name == EventControlFailure {
			ctrl = r
		}
		return nil
	})
	if ctrl == nil || !strings.Contains(ctrl.Attrs[0].Value.String()+fmt.Sprint(ctrl.Attrs), "torn last record truncated") {
		t.Fatalf("control failure record: %+v", ctrl)
	}
	q, _ := filepath.Glob(filepath.Join(AuditDir(dir), quarantineDirName, "*.torn"))
	if len(q) != 1 {
		t.Fatalf("quarantine: %v", q)
	}
	if b, _ := os.ReadFile(q[0]); !bytes.HasPrefix(b, torn) {
		t.Fatalf("quarantine holds %q", b)
	}
}

func TestCorruptMiddleRefusesOpen(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	for i := range 5 {
		if _, err := j.Append(context.Background(), statement(i)); err != nil {
			t.Fatal(err)
		}
	}
	dir := j.opts.DataDir
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, ls := segLines(t, dir, 0)
	ls[2] = bytes.Replace(ls[2], []byte("alice"), []byte("bobby"), 1)
	writeLines(t, p, ls)
	if _, err := Open(Options{DataDir: dir}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
}

// faultyFile fails writes while its disk is "full".
type faultyFile struct {
	*os.File
	full *atomic.Bool
}

func (f faultyFile) WriteAt(b []byte, off int64) (int, error) {
	if f.full.Load() {
		// A short write: part of the batch reaches the page cache.
		n, _ := f.File.WriteAt(b[:len(b)/2], off)
		return n, syscall.ENOSPC
	}
	return f.File.WriteAt(b, off)
}

func TestWriteFailureFailsClosedAndIsRecorded(t *testing.T) {
	t.Parallel()
	var full atomic.Bool
	j := openTest(t, Options{openFile: func(path string) (segmentFile, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		return faultyFile{File: f, full: &full}, nil
	}})
	ctx := context.Background()
	if _, err := j.Append(ctx, statement(1)); err != nil {
		t.Fatal(err)
	}
	full.Store(true)
	for i := range 3 {
		if _, err := j.Append(ctx, statement(i)); !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append on a full disk = %v, want ErrUnavailable", err)
		}
	}
	full.Store(false)
	seq, err := j.Append(ctx, statement(5))
	if err != nil {
		t.Fatal(err)
	}
	if seq != 4 { // started, 1, control failure, this
		t.Fatalf("seq = %d, want 4", seq)
	}
	if st := j.Stats(); st.Refused != 3 {
		t.Errorf("refused = %d", st.Refused)
	}
	dir, v := j.opts.DataDir, verifierOf(t, j)
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, dir, v)
	if !rep.OK() {
		t.Fatal(rep.Problems)
	}
	var ctrl *Record
	_ = ReadRecords(ctx, dir, 3, func(r *Record) error {
		if ctrl == nil {
			ctrl = r
		}
		return nil
	})
	if refused, _ := ctrl.Attr("custos.audit.refused"); ctrl.Name != EventControlFailure || refused.Int() != 3 {
		t.Fatalf("record 3: %+v", ctrl)
	}
	if e, _ := ctrl.Attr(AttrError); !strings.Contains(e.Str(), "no space left") {
		t.Errorf("error attr %q", e.Str())
	}
}

func TestAppendAfterClose(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(context.Background(), statement(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := range 20 {
				if _, err := j.Append(context.Background(), statement(i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	st := j.Stats()
	if st.Records != 1281 || st.Fsyncs >= st.Records/2 {
		t.Fatalf("%d records with %d fsyncs: appends do not share fsyncs", st.Records, st.Fsyncs)
	}
	t.Logf("%d records, %d fsyncs (%.1f records per fsync)", st.Records, st.Fsyncs, float64(st.Records)/float64(st.Fsyncs))
}

// TestSyncIntervalWritesBeforeReturning: with SyncInterval an append
// returns once its record is in the segment file (what survives the
// process being killed), and the fsync follows within the interval.
func TestSyncIntervalWritesBeforeReturning(t *testing.T) {
	t.Parallel()
	const interval = 20 * time.Millisecond
	j := openTest(t, Options{SyncInterval: interval})
	ctx := context.Background()
	before, start := j.Stats().Fsyncs, time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 50 {
				seq, err := j.AppendAs(ctx, statement(i), Written)
				if err != nil {
					t.Error(err)
					return
				}
				if i%10 != 0 {
					continue
				}
				// Read back from the file system, as another process would.
				segs, err := listSegments(AuditDir(j.opts.DataDir))
				if err != nil || len(segs) == 0 {
					t.Error(err)
					return
				}
				b, err := os.ReadFile(segs[len(segs)-1].path)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Contains(b, []byte(fmt.Sprintf(`"seq":%d,`, seq))) {
					t.Errorf("record %d not in the segment file when Append returned", seq)
					return
				}
			}
		})
	}
	wg.Wait()
	st := j.Stats()
	if st.Records != 401 {
		t.Fatalf("%d records", st.Records)
	}
	deadline := time.Now().Add(5 * time.Second)
	for j.DurableSeq() < 401 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := j.DurableSeq(); got != 401 {
		t.Fatalf("durable seq %d after the sync interval, want 401", got)
	}
	// The writer fsyncs written records once per interval at most, however
	// fast or slow the appenders are: the bound follows from the time taken,
	// plus one for the interval running when the last record went in.
	fsyncs, bound := j.Stats().Fsyncs-before, int64(time.Since(start)/interval)+1
	if fsyncs > bound {
		t.Errorf("%d fsyncs for 400 written records in %v: more than one per %v", fsyncs, time.Since(start), interval)
	}
	dir, v := j.opts.DataDir, verifierOf(t, j)
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, v); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}

// TestTemplateSameRecords: an event split into a template and the rest is
// recorded byte for byte as the whole event; a template does not take a
// PAN, an attribute may not be in both, and the name must agree.
func TestTemplateSameRecords(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	static := Event{
		UserID: "alice", EndUserID: "alice@example.com", Issuer: "https://issuer.example", Groups: []string{"agents"},
		ClientAddress: "10.0.0.7", ClientPort: 51234, SessionID: "ses_1", Resource: "payments-db", ResourceType: "postgres",
		DBSystem: DBSystemPostgreSQL, DBNamespace: "payments", DBOperation: "SELECT",
		DBQueryText: "SELECT id, holder FROM cards WHERE id = $1",
	}
	dynamic := Event{
		Name: EventStatement, Time: time.Unix(1800000000, 5).UTC(), Outcome: OutcomeSuccess,
		DBCollections: []string{"public.cards"}, Decision: "allow", DecisionID: "dec_1", Rows: 1, Masked: 1,
		Duration: 3 * time.Millisecond, PANSources: []string{"4111 1111 1111 1111"},
		Attrs: []Attr{Int("custos.statement.seq", 7), Strings("custos.result.rows", []string{`["************1111"]`})},
	}
	whole := dynamic
	whole.UserID, whole.EndUserID, whole.Issuer, whole.Groups = static.UserID, static.EndUserID, static.Issuer, static.Groups
	whole.ClientAddress, whole.ClientPort, whole.SessionID = static.ClientAddress, static.ClientPort, static.SessionID
	whole.Resource, whole.ResourceType, whole.DBSystem, whole.DBNamespace = static.Resource, static.ResourceType, static.DBSystem, static.DBNamespace
	whole.DBOperation, whole.DBQueryText = static.DBOperation, static.DBQueryText

	tmpl, err := j.NewTemplate(EventStatement, static)
	if err != nil {
		t.Fatal(err)
	}
	want, err := j.encode(nil, &whole)
	if err != nil {
		t.Fatal(err)
	}
	got, err := j.encode(tmpl, &dynamic)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("with a template:\n%s\nwhole:\n%s", got, want)
	}
	ctx := context.Background()
	if _, err := j.EnqueueWith(ctx, tmpl, dynamic).Wait(ctx); err != nil {
		t.Fatal(err)
	}

	leak := static
	leak.DBQueryText = "SELECT 4111111111111111"
	if _, err := j.NewTemplate(EventStatement, leak); !errors.Is(err, ErrTemplate) {
		t.Errorf("template with a PAN: %v", err)
	}
	twice := dynamic
	twice.UserID = "bob"
	if _, err := j.encode(tmpl, &twice); !errors.Is(err, ErrEvent) {
		t.Errorf("attribute in the template and the event: %v", err)
	}
	other := dynamic
	other.Name = EventHTTPRequest
	if _, err := j.encode(tmpl, &other); !errors.Is(err, ErrEvent) {
		t.Errorf("event name unlike the template's: %v", err)
	}
	dir, v := j.opts.DataDir, verifierOf(t, j)
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if rep := mustVerify(t, dir, v); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}
