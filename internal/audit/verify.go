package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// ProblemKind names what is wrong with the journal.
type ProblemKind string

// The problems Verify names.
const (
	// ProblemEdited: a record's content does not match its hash, its hash
	// does not match the next record's prev_hash, a signed checkpoint
	// disagrees with the record it covers, or a line is not a record.
	ProblemEdited ProblemKind = "edited"
	// ProblemDeleted: records are missing (a gap in seq).
	ProblemDeleted ProblemKind = "deleted"
	// ProblemReordered: records (or checkpoints) are out of order.
	ProblemReordered ProblemKind = "reordered"
	// ProblemTruncated: the journal ends early: a torn last record, or a
	// checkpoint covering records that are not there.
	ProblemTruncated ProblemKind = "truncated"
	// ProblemBadSignature: a checkpoint's signature does not verify with
	// the verifier key, or it is for another journal.
	ProblemBadSignature ProblemKind = "bad_signature"
)

// Problem is one thing wrong with the journal, at the first record (or
// checkpoint) concerned.
type Problem struct {
	Kind    ProblemKind
	Seq     uint64 // the record concerned; 0 when none
	File    string // segment or checkpoints file, relative to the audit dir
	Line    int    // 1-based line in File; 0 when none
	Detail  string
	Offset  int64 // byte offset of the line in File
	Checked bool  // the problem is in a checkpoint, not a record
}

func (p Problem) String() string {
	where := p.File
	if p.Line > 0 {
		where = fmt.Sprintf("%s line %d", p.File, p.Line)
	}
	if p.Seq > 0 && !p.Checked {
		return fmt.Sprintf("%s: record seq %d (%s): %s", p.Kind, p.Seq, where, p.Detail)
	}
	return fmt.Sprintf("%s: %s: %s", p.Kind, where, p.Detail)
}

// Report is the result of Verify.
type Report struct {
	JournalID        string
	Segments         int
	Records          int64
	FirstSeq         uint64
	LastSeq          uint64
	LastHash         Hash
	FirstTime        time.Time
	LastTime         time.Time
	Checkpoints      int
	LastCheckpoint   Checkpoint    // zero when there is none
	MaxCheckpointGap time.Duration // longest time between consecutive checkpoints
	Uncovered        uint64        // records after the last checkpoint
	Problems         []Problem     // empty when the journal verifies
}

// OK reports whether the journal verified.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Write prints the report for people.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "journal   %s\n", r.JournalID)
	fmt.Fprintf(w, "segments  %d\n", r.Segments)
	if r.Records > 0 {
		fmt.Fprintf(w, "records   %d (seq %d..%d, %s .. %s)\n", r.Records, r.FirstSeq, r.LastSeq,
			r.FirstTime.Format(time.RFC3339), r.LastTime.Format(time.RFC3339))
		fmt.Fprintf(w, "head      %s\n", r.LastHash)
	} else {
		fmt.Fprintln(w, "records   0")
	}
	if r.Checkpoints > 0 {
		fmt.Fprintf(w, "checkpoints %d, last covers seq %d at %s; longest gap %s; %d records after it\n",
			r.Checkpoints, r.LastCheckpoint.Seq, r.LastCheckpoint.Time.Format(time.RFC3339), r.MaxCheckpointGap.Round(time.Millisecond), r.Uncovered)
	} else {
		fmt.Fprintln(w, "checkpoints 0")
	}
	if r.OK() {
		fmt.Fprintln(w, "OK: chain and checkpoint signatures verify")
		return
	}
	for _, p := range r.Problems {
		fmt.Fprintln(w, "FAIL", p.String())
	}
}

// ErrVerify is returned (wrapped) by callers when a journal does not verify.
var ErrVerify = errors.New("audit journal does not verify")

// Verify walks every segment under dataDir/audit in order and checks that
// each record's content matches its hash, that it chains to the one before
// (seq+1, prev_hash), that every checkpoint is signed by v for this journal,
// and that each checkpoint agrees with the record it covers and does not
// cover more than exists. It names the first bad record and what is wrong;
// the error is for failures to read.
func Verify(ctx context.Context, dataDir string, v note.Verifier) (*Report, error) {
	root := AuditDir(dataDir)
	rep := &Report{}
	segs, err := listSegments(root)
	if err != nil {
		return nil, err
	}
	rep.Segments = len(segs)
	id, err := ReadJournalID(dataDir)
	if err != nil {
		if len(segs) == 0 && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no audit journal in %s: %w", root, err)
		}
		return nil, err
	}
	rep.JournalID = id
	cps, err := readCheckpoints(root, originPrefix+id, v, rep)
	if err != nil {
		return nil, err
	}
	bySeq := map[uint64][]cpRef{}
	for _, c := range cps {
		bySeq[c.Seq] = append(bySeq[c.Seq], c)
	}
	if zero := bySeq[0]; len(zero) > 0 {
		for _, c := range zero {
			if c.Hash != (Hash{}) {
				rep.Problems = append(rep.Problems, Problem{Kind: ProblemEdited, File: checkpointsName, Line: c.line, Checked: true,
					Detail: "checkpoint of an empty journal with a non-zero hash"})
			}
		}
	}

	w := walker{rep: rep, bySeq: bySeq, segs: segs}
	if err := w.walk(ctx); err != nil {
		return nil, err
	}
	if w.stopped {
		return rep, nil
	}
	if len(cps) > 0 {
		last := cps[len(cps)-1]
		rep.LastCheckpoint = last.Checkpoint
		if last.Seq > rep.LastSeq {
			rep.Problems = append(rep.Problems, Problem{Kind: ProblemTruncated, Seq: rep.LastSeq + 1, File: checkpointsName, Line: last.line,
				Detail: fmt.Sprintf("checkpoint signed at %s covers seq %d, the journal ends at seq %d: records %d..%d are gone",
					last.Time.Format(time.RFC3339Nano), last.Seq, rep.LastSeq, rep.LastSeq+1, last.Seq)})
		} else {
			rep.Uncovered = rep.LastSeq - last.Seq
		}
	}
	return rep, nil
}

// cpRef is a verified checkpoint and its line in checkpoints.jsonl.
type cpRef struct {
	Checkpoint
	line int
}

// readCheckpoints reads and verifies checkpoints.jsonl; problems go into
// rep.
func readCheckpoints(root, origin string, v note.Verifier, rep *Report) ([]cpRef, error) {
	f, err := os.Open(filepath.Join(root, checkpointsName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	defer f.Close()
	var cps []cpRef
	lr := newLineReader(f)
	bad := func(kind ProblemKind, n int, off int64, detail string) {
		rep.Problems = append(rep.Problems, Problem{Kind: kind, File: checkpointsName, Line: n, Offset: off, Checked: true, Detail: detail})
	}
	for n := 1; ; n++ {
		line, off, complete, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("audit checkpoints: %w", err)
		}
		if !complete {
			bad(ProblemTruncated, n, off, "torn last checkpoint (no newline)")
			break
		}
		c, err := openCheckpoint(line, v)
		if err != nil {
			var (
				unverified *note.UnverifiedNoteError
				invalid    *note.InvalidSignatureError
			)
			switch {
			case errors.As(err, &unverified):
				bad(ProblemBadSignature, n, off, "not signed by the verifier key: "+err.Error())
			case errors.As(err, &invalid):
				bad(ProblemBadSignature, n, off, "signature does not verify: the checkpoint was edited or forged")
			default:
				bad(ProblemEdited, n, off, "not a checkpoint: "+err.Error())
			}
			continue
		}
		if c.Origin != origin {
			bad(ProblemBadSignature, n, off, fmt.Sprintf("checkpoint is for journal %q, not %q", c.Origin, origin))
			continue
		}
		if len(cps) > 0 {
			prev := cps[len(cps)-1]
			if c.Seq < prev.Seq || c.Time.Before(prev.Time) {
				bad(ProblemReordered, n, off, fmt.Sprintf("checkpoint (seq %d at %s) comes after one for seq %d at %s",
					c.Seq, c.Time.Format(time.RFC3339Nano), prev.Seq, prev.Time.Format(time.RFC3339Nano)))
				continue
			}
			if gap := c.Time.Sub(prev.Time); gap > rep.MaxCheckpointGap {
				rep.MaxCheckpointGap = gap
			}
		}
		cps = append(cps, cpRef{Checkpoint: c, line: n})
	}
	rep.Checkpoints = len(cps)
	return cps, nil
}

// walker walks the records of every segment in order.
type walker struct {
	rep     *Report
	bySeq   map[uint64][]cpRef
	segs    []segment
	stopped bool // a chain problem was found
}

func (w *walker) problem(p Problem) {
	w.rep.Problems = append(w.rep.Problems, p)
	w.stopped = true
}

func (w *walker) walk(ctx context.Context) error {
	expected, prevHash := uint64(1), Hash{}
	for si, seg := range w.segs {
		lastSeg := si == len(w.segs)-1
		f, err := os.Open(seg.path)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		lr := newLineReader(f)
		file := filepath.Join(segmentsDirName, seg.name)
		for n := 1; ; n++ {
			if n%4096 == 0 && ctx.Err() != nil {
				f.Close()
				return ctx.Err()
			}
			line, off, complete, err := lr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("audit: read %s: %w", seg.path, err)
			}
			at := Problem{Seq: expected, File: file, Line: n, Offset: off}
			if !complete {
				at.Kind = ProblemTruncated
				at.Detail = fmt.Sprintf("torn record: %d bytes without a newline", len(line))
				if !lastSeg {
					at.Detail += " at the end of a segment that is not the last"
				}
				w.problem(at)
				break
			}
			r, err := DecodeRecord(line)
			if err != nil {
				switch {
				case errors.Is(err, ErrHashMismatch):
					at.Kind, at.Seq, at.Detail = ProblemEdited, r.Seq, "content does not match its hash: "+err.Error()
				case lr.zeros > 0:
					at.Kind, at.Detail = ProblemEdited, fmt.Sprintf("%d zero bytes where records belong, with more after them", lr.zeros)
				case lastSeg && isLastLine(lr):
					at.Kind, at.Detail = ProblemTruncated, "last record unreadable: "+err.Error()
				default:
					at.Kind, at.Detail = ProblemEdited, "not a valid record: "+err.Error()
				}
				w.problem(at)
				break
			}
			at.Seq = r.Seq
			if r.Seq != expected {
				switch {
				case r.Seq < expected:
					at.Kind, at.Detail = ProblemReordered, fmt.Sprintf("seq %d comes after seq %d", r.Seq, expected-1)
				case w.seqLater(expected, si):
					at.Kind, at.Detail = ProblemReordered, fmt.Sprintf("seq %d comes where seq %d belongs; seq %d is further on", r.Seq, expected, expected)
				default:
					at.Kind, at.Detail = ProblemDeleted, fmt.Sprintf("seq %d follows seq %d: records %d..%d are missing", r.Seq, expected-1, expected, r.Seq-1)
					at.Seq = expected
				}
				w.problem(at)
				break
			}
			if r.PrevHash != prevHash {
				at.Kind, at.Seq = ProblemEdited, r.Seq-1
				at.Detail = fmt.Sprintf("record seq %d's hash is not the prev_hash of seq %d: seq %d was changed and its hash recomputed, or seq %d's prev_hash was changed",
					r.Seq-1, r.Seq, r.Seq-1, r.Seq)
				w.problem(at)
				break
			}
			for _, c := range w.bySeq[r.Seq] {
				if c.Hash != r.Hash {
					at.Kind = ProblemEdited
					at.Detail = fmt.Sprintf("checkpoint signed at %s (checkpoints line %d) says hash %s, the record has %s: records up to seq %d were rewritten",
						c.Time.Format(time.RFC3339Nano), c.line, c.Hash, r.Hash, r.Seq)
					w.problem(at)
					break
				}
			}
			if w.stopped {
				break
			}
			if w.rep.Records == 0 {
				w.rep.FirstSeq, w.rep.FirstTime = r.Seq, r.Time
			}
			w.rep.Records++
			w.rep.LastSeq, w.rep.LastHash, w.rep.LastTime = r.Seq, r.Hash, r.Time
			prevHash, expected = r.Hash, expected+1
		}
		f.Close()
		if w.stopped {
			return nil
		}
	}
	return nil
}

// isLastLine reports whether lr has nothing after its current line.
func isLastLine(lr *lineReader) bool { return lr.atEnd() }

// seqLater reports whether a record with seq appears in a later line of
// segment si or in a later segment (a reordering rather than a deletion).
func (w *walker) seqLater(seq uint64, si int) bool {
	for _, seg := range w.segs[si:] {
		found := false
		_ = readSegment(seg, func(r *Record) bool {
			found = r.Seq == seq
			return !found
		})
		if found {
			return true
		}
	}
	return false
}

// readSegment calls fn for each record of seg that decodes (hash checked or
// not), until fn returns false.
func readSegment(seg segment, fn func(*Record) bool) error {
	f, err := os.Open(seg.path)
	if err != nil {
		return err
	}
	defer f.Close()
	lr := newLineReader(f)
	for {
		line, _, complete, err := lr.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !complete {
			return nil
		}
		r, err := DecodeRecord(line)
		if err != nil && !errors.Is(err, ErrHashMismatch) {
			continue
		}
		if !fn(&r) {
			return nil
		}
	}
}
