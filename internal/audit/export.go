package audit

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// UID returns the log.record.uid of record seq of journal id: stable across
// re-sends and exports, unique across journals.
func UID(journalID string, seq uint64) string {
	return journalID + "-" + strconv.FormatUint(seq, 10)
}

// ReadRecords calls fn for each record of the journal under dataDir whose
// seq is at least from, in order. A record that does not decode is an error
// naming its place; an incomplete last line (a write in progress or a torn
// tail) ends the walk. It checks each record's own hash but not the chain:
// that is Verify's job.
func ReadRecords(ctx context.Context, dataDir string, from uint64, fn func(*Record) error) error {
	root := AuditDir(dataDir)
	segs, err := listSegments(root)
	if err != nil {
		return err
	}
	for i, seg := range segs {
		if i+1 < len(segs) && segs[i+1].first <= from {
			continue
		}
		if err := readSegmentFrom(ctx, seg, from, fn); err != nil {
			return err
		}
	}
	return nil
}

func readSegmentFrom(ctx context.Context, seg segment, from uint64, fn func(*Record) error) error {
	return scanSegment(ctx, seg, from, nil, fn)
}

// scanSegment calls fn for each record of seg from seq from on; lines for
// which skip (when set) is true are passed over without being decoded.
func scanSegment(ctx context.Context, seg segment, from uint64, skip func(line []byte) bool, fn func(*Record) error) error {
	f, err := os.Open(seg.path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	lr := newLineReader(f)
	for n := 1; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line, _, complete, err := lr.next()
		if errors.Is(err, io.EOF) || (err == nil && !complete) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit: read %s: %w", seg.path, err)
		}
		if skip != nil && skip(line) {
			continue
		}
		r, err := DecodeRecord(line)
		if err != nil {
			return fmt.Errorf("audit: %s line %d: %w", filepath.Join(segmentsDirName, seg.name), n, err)
		}
		if r.Seq < from {
			continue
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
}

// Export formats.
const (
	FormatCSV  = "csv"
	FormatJSON = "json"
)

// ExportOptions select and format records for Export.
type ExportOptions struct {
	From   time.Time // records at or after From; zero: from the start
	To     time.Time // records before To; zero: to the end
	Format string    // FormatCSV or FormatJSON
}

// csvColumns are the CSV export's columns before the full attributes.
var csvColumns = []string{
	AttrUserID, AttrEndUserID, AttrClientAddress, AttrSessionID, AttrResource,
	AttrOutcome, AttrDBNamespace, AttrDBOperationName, AttrDBQueryText, AttrDBResponseStatus,
	AttrHTTPMethod, AttrURLPath, AttrHTTPStatusCode, AttrDecision, AttrDecisionID, AttrApprovalID,
	AttrRows, AttrMasked, AttrSADDropped,
}

// Export writes the records of the journal under dataDir whose time is in
// [From, To) to w and returns how many it wrote.
//
// CSV has a header row: uid, seq, time, event_name, severity, the PCI DSS
// 10.2.2 columns (csvColumns), attributes (every attribute as a JSON
// object), trace_id, span_id, hash. A cell starting with = + - @ or a tab
// is prefixed with ' so that spreadsheets show it rather than run it.
//
// JSON is one array of objects: uid, seq, time, event_name,
// severity_number, severity_text, trace_id, span_id, attributes,
// prev_hash, hash.
func Export(ctx context.Context, w io.Writer, dataDir string, opts ExportOptions) (int64, error) {
	id, err := ReadJournalID(dataDir)
	if err != nil {
		return 0, err
	}
	in := func(r *Record) bool {
		return (opts.From.IsZero() || !r.Time.Before(opts.From)) && (opts.To.IsZero() || r.Time.Before(opts.To))
	}
	var n int64
	switch opts.Format {
	case FormatCSV:
		cw := csv.NewWriter(w)
		header := append([]string{"uid", "seq", "time", "event_name", "severity"}, csvColumns...)
		header = append(header, "attributes", "trace_id", "span_id", "hash")
		if err := cw.Write(header); err != nil {
			return 0, err
		}
		row := make([]string, 0, len(header))
		err = ReadRecords(ctx, dataDir, 1, func(r *Record) error {
			if !in(r) {
				return nil
			}
			row = append(row[:0], UID(id, r.Seq), strconv.FormatUint(r.Seq, 10), r.Time.Format(time.RFC3339Nano), r.Name, r.Severity.Text())
			for _, k := range csvColumns {
				v, _ := r.Attr(k)
				row = append(row, csvCell(v.String()))
			}
			row = append(row, csvCell(string(appendAttrsJSON(nil, r.Attrs))), r.TraceID, r.SpanID, r.Hash.String())
			n++
			return cw.Write(row)
		})
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
		return n, err
	case FormatJSON:
		bw := bufio.NewWriter(w)
		_, _ = bw.WriteString("[") // bufio errors are sticky: Flush reports them
		var buf []byte
		err = ReadRecords(ctx, dataDir, 1, func(r *Record) error {
			if !in(r) {
				return nil
			}
			if n > 0 {
				_, _ = bw.WriteString(",")
			}
			n++
			buf = appendRecordJSON(buf[:0], id, r)
			_, _ = bw.WriteString("\n")
			_, err := bw.Write(buf)
			return err
		})
		if err != nil {
			return n, err
		}
		_, _ = bw.WriteString("\n]\n")
		return n, bw.Flush()
	}
	return 0, fmt.Errorf("audit export: format %q is not csv or json", opts.Format)
}

// csvCell neutralizes spreadsheet formulas.
func csvCell(s string) string {
	if s != "" {
		switch s[0] {
		case '=', '+', '-', '@', '\t', '\r':
			return "'" + s
		}
	}
	return s
}

// appendAttrsJSON appends attrs as a JSON object.
func appendAttrsJSON(dst []byte, attrs []Attr) []byte {
	dst = append(dst, '{')
	for i, a := range attrs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, a.Key)
		dst = append(dst, ':')
		dst = appendValue(dst, a.Value)
	}
	return append(dst, '}')
}

// appendRecordJSON appends the JSON export object of r.
func appendRecordJSON(dst []byte, journalID string, r *Record) []byte {
	str := func(k, v string) {
		dst = append(dst, ',')
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendString(dst, v)
	}
	dst = append(dst, `{"uid":`...)
	dst = appendString(dst, UID(journalID, r.Seq))
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	str("time", r.Time.Format(time.RFC3339Nano))
	str("event_name", r.Name)
	dst = append(dst, `,"severity_number":`...)
	dst = strconv.AppendInt(dst, int64(r.Severity), 10)
	str("severity_text", r.Severity.Text())
	if r.TraceID != "" {
		str("trace_id", r.TraceID)
	}
	if r.SpanID != "" {
		str("span_id", r.SpanID)
	}
	dst = append(dst, `,"attributes":`...)
	dst = appendAttrsJSON(dst, r.Attrs)
	str("prev_hash", r.PrevHash.String())
	str("hash", r.Hash.String())
	return append(dst, '}')
}

// MarshalJSON encodes a Value as its JSON value.
func (v Value) MarshalJSON() ([]byte, error) { return appendValue(nil, v), nil }

var _ json.Marshaler = Value{}
