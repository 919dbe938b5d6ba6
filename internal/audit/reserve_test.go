package audit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// segmentBytes returns the current segment's content.
func segmentBytes(t *testing.T, dir string) []byte {
	t.Helper()
	segs, err := listSegments(AuditDir(dir))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	b, err := os.ReadFile(segs[len(segs)-1].path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSegmentReserve: the open segment is zero-filled ahead of its
// records, every reader stops at the zeros, and Close cuts them.
func TestSegmentReserve(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	ctx := context.Background()
	appendN(t, j, 10)
	dir, v := j.opts.DataDir, verifierOf(t, j)
	b := segmentBytes(t, dir)
	end := bytes.LastIndexByte(b, '\n') + 1
	if len(b) != reserveBytes || end == 0 || len(bytes.Trim(b[end:], "\x00")) != 0 {
		t.Fatalf("open segment: %d bytes, records end at %d, then not only zeros", len(b), end)
	}
	// Readers see the records and nothing of the reserve.
	n := 0
	if err := ReadRecords(ctx, dir, 1, func(*Record) error { n++; return nil }); err != nil || n != 11 {
		t.Fatalf("read %d records: %v", n, err)
	}
	if rep := mustVerify(t, dir, v); !rep.OK() || rep.LastSeq != 11 {
		t.Fatalf("verify of the open journal: last seq %d, %v", rep.LastSeq, rep.Problems)
	}
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b = segmentBytes(t, dir)
	if len(b) == 0 || b[len(b)-1] != '\n' || bytes.IndexByte(b, 0) >= 0 {
		t.Fatalf("closed segment keeps its reserve: %d bytes, ends %q", len(b), b[max(0, len(b)-8):])
	}
	if rep := mustVerify(t, dir, v); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}

// TestReserveAcrossRotation: a segment left for the next one has no
// reserve; the new one gets its own.
func TestReserveAcrossRotation(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{SegmentBytes: 4096})
	appendN(t, j, 40)
	segs, err := listSegments(AuditDir(j.opts.DataDir))
	if err != nil || len(segs) < 3 {
		t.Fatalf("segments: %d %v", len(segs), err)
	}
	for _, s := range segs[:len(segs)-1] {
		b, err := os.ReadFile(s.path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.IndexByte(b, 0) >= 0 || b[len(b)-1] != '\n' {
			t.Fatalf("%s keeps a reserve after rotation", s.name)
		}
	}
	if rep := mustVerify(t, j.opts.DataDir, verifierOf(t, j)); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}

// crashCopy copies a data dir as a crash would leave it (what the files
// hold right now) and returns the copy.
func crashCopy(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

// TestCrashLeavesReserve: a journal left with its reserve (custos killed)
// opens without cutting anything, notes the unclean shutdown and verifies.
func TestCrashLeavesReserve(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	ctx := context.Background()
	appendN(t, j, 10)
	crashed := crashCopy(t, j.opts.DataDir)
	if b := segmentBytes(t, crashed); bytes.IndexByte(b, 0) < 0 {
		t.Fatal("the copy has no reserve")
	}
	j2 := openTest(t, Options{DataDir: crashed})
	seq, err := j2.Append(ctx, statement(99))
	if err != nil {
		t.Fatal(err)
	}
	if seq != 13 { // 11 before, audit.started, this
		t.Fatalf("seq = %d, want 13", seq)
	}
	if err := j2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if q, _ := filepath.Glob(filepath.Join(AuditDir(crashed), quarantineDirName, "*")); len(q) != 0 {
		t.Fatalf("a reserve was quarantined: %v", q)
	}
	var started *Record
	_ = ReadRecords(ctx, crashed, 12, func(r *Record) error {
		if r.Name == EventAuditStarted {
			started = r
		}
		return nil
	})
	if started == nil {
		t.Fatal("no audit.started after the crash")
	}
	if v, ok := started.Attr("custos.audit.unclean_shutdown"); !ok || !v.Bool() {
		t.Fatalf("audit.started after the crash: %+v", started)
	}
	if rep := mustVerify(t, crashed, verifierOf(t, j)); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}

// TestZeroedRecordsAreNamed: zeros where records were, with records after
// them, are no reserve: verify names them and Open refuses the journal.
func TestZeroedRecordsAreNamed(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	ctx := context.Background()
	appendN(t, j, 6)
	dir, v := j.opts.DataDir, verifierOf(t, j)
	if err := j.Close(ctx); err != nil {
		t.Fatal(err)
	}
	p, ls := segLines(t, dir, 0)
	ls[3] = make([]byte, len(ls[3])) // seq 4
	writeLines(t, p, ls)
	rep := mustVerify(t, dir, v)
	if rep.OK() || rep.Problems[0].Kind != ProblemEdited || rep.Problems[0].Seq != 4 ||
		!strings.Contains(rep.Problems[0].Detail, "zero bytes") {
		t.Fatalf("verify: %+v", rep.Problems)
	}
	if _, err := Open(Options{DataDir: dir}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
}

type readLine struct {
	line     string
	off      int64
	complete bool
	zeros    int64
}

func readAllLines(in []byte) ([]readLine, error) {
	lr := newLineReader(bytes.NewReader(in))
	var out []readLine
	for {
		line, off, complete, err := lr.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, readLine{string(line), off, complete, lr.zeros})
	}
}

func TestLineReader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want []readLine
	}{
		{"lines", "a\nbc\n", []readLine{{"a\n", 0, true, 0}, {"bc\n", 2, true, 0}}},
		{"torn last line", "a\nbc", []readLine{{"a\n", 0, true, 0}, {"bc", 2, false, 0}}},
		{"reserve", "a\nbc\n\x00\x00\x00", []readLine{{"a\n", 0, true, 0}, {"bc\n", 2, true, 0}}},
		{"torn into the reserve", "a\nbc\x00\x00", []readLine{{"a\n", 0, true, 0}, {"bc", 2, false, 0}}},
		{"zeros before a line", "a\n\x00\x00\x00b\n", []readLine{{"a\n", 0, true, 0}, {"\x00\x00\x00", 2, true, 3}, {"b\n", 5, true, 0}}},
		{"only zeros", "\x00\x00", nil},
		{"empty", "", nil},
	} {
		got, err := readAllLines([]byte(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("%s: line %d is %+v, want %+v", tc.name, i, got[i], tc.want[i])
			}
		}
	}
	// A long run of zeros stands for itself with a short line.
	in := append(make([]byte, 1<<20), "x\n"...)
	got, _ := readAllLines(in)
	if len(got) != 2 || got[0].zeros != 1<<20 || len(got[0].line) != zeroLineBytes || got[1].off != 1<<20 {
		t.Fatalf("long zero run: %d lines, first %d zeros in %d bytes", len(got), got[0].zeros, len(got[0].line))
	}
}

// FuzzLineReader: whatever a segment holds, the lines and zero runs the
// reader returns cover it in order, up to a final run of zeros.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbc\n\x00\x00"))
	f.Add([]byte("a\n\x00b\x00\n\x00"))
	f.Add([]byte("\x00\x00\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := readAllLines(in)
		if err != nil {
			t.Fatal(err)
		}
		var off int64
		for i, l := range got {
			if l.off != off {
				t.Fatalf("line %d at %d, want %d", i, l.off, off)
			}
			n := int64(len(l.line))
			if l.zeros > 0 {
				n = l.zeros
				if !bytes.Equal(in[off:off+n], make([]byte, n)) {
					t.Fatalf("zero run %d is not zeros", i)
				}
			} else if string(in[off:off+n]) != l.line || bytes.IndexByte([]byte(l.line), 0) >= 0 {
				t.Fatalf("line %d is %q, input has %q", i, l.line, in[off:off+n])
			}
			if l.complete != (l.zeros > 0 || strings.HasSuffix(l.line, "\n")) {
				t.Fatalf("line %d %q complete=%v", i, l.line, l.complete)
			}
			off += n
		}
		if rest := in[off:]; len(bytes.Trim(rest, "\x00")) != 0 {
			t.Fatalf("%d bytes after the last line are not only zeros", len(rest))
		}
	})
}

// TestCommitDelay: concurrent appends wait for each other to share a
// fsync; a lone appender is not delayed (with a delay of an hour, its
// appends would not return).
func TestCommitDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lone := openTest(t, Options{CommitDelay: time.Hour})
	for i := range 5 {
		if _, err := lone.Append(ctx, statement(i)); err != nil {
			t.Fatal(err)
		}
	}

	j := openTest(t, Options{CommitDelay: 100 * time.Millisecond})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 10 {
				if _, err := j.Append(ctx, statement(i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	// Without the delay each fsync holds the records that came while the
	// one before ran, a few; with it, all eight sessions' next records.
	if st := j.Stats(); st.Records != 81 || st.Fsyncs > 30 {
		t.Fatalf("%d records with %d fsyncs: concurrent appends do not wait for each other", st.Records, st.Fsyncs)
	}
}

// TestTornRecordInReserve: a record torn by a crash into the reserve is
// quarantined as written, without the zeros after it.
func TestTornRecordInReserve(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{})
	ctx := context.Background()
	appendN(t, j, 4)
	crashed := crashCopy(t, j.opts.DataDir)
	segs, err := listSegments(AuditDir(crashed))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	b, err := os.ReadFile(segs[0].path)
	if err != nil {
		t.Fatal(err)
	}
	torn := []byte(`{"v":1,"seq":6,"prev_hash":"ab`)
	end := bytes.LastIndexByte(b, '\n') + 1
	copy(b[end:], torn)
	if err := os.WriteFile(segs[0].path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	j2 := openTest(t, Options{DataDir: crashed})
	if err := j2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	q, _ := filepath.Glob(filepath.Join(AuditDir(crashed), quarantineDirName, "*.torn"))
	if len(q) != 1 {
		t.Fatalf("quarantine: %v", q)
	}
	if kept, _ := os.ReadFile(q[0]); !bytes.Equal(kept, torn) {
		t.Fatalf("quarantine holds %d bytes, want the %d torn ones", len(kept), len(torn))
	}
	var ctrl *Record
	_ = ReadRecords(ctx, crashed, 1, func(r *Record) error {
		if r.Name == EventControlFailure {
			ctrl = r
		}
		return nil
	})
	if ctrl == nil {
		t.Fatal("no control failure recorded for the torn record")
	}
	if v, ok := ctrl.Attr("custos.audit.truncated_bytes"); !ok || v.Int() != int64(len(torn)) {
		t.Fatalf("control failure: %+v", ctrl)
	}
	if rep := mustVerify(t, crashed, verifierOf(t, j)); !rep.OK() {
		t.Fatal(rep.Problems)
	}
}
