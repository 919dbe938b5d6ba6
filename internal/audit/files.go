package audit

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The journal's files, under DataDir/audit (see doc.go).
const (
	auditDirName       = "audit"
	segmentsDirName    = "segments"
	segmentExt         = ".jsonl"
	checkpointsName    = "checkpoints.jsonl"
	journalIDName      = "journal.id"
	signingKeyName     = "signing.key"
	fingerprintKeyName = "fingerprint.key"
	lockName           = "journal.lock"
	quarantineDirName  = "quarantine"
	cursorName         = "export.cursor"
)

// AuditDir returns the directory of the journal under a data dir.
func AuditDir(dataDir string) string { return filepath.Join(dataDir, auditDirName) }

// segmentName is the file name of the segment whose first record is seq:
// twenty digits, so that names sort like numbers.
func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segmentExt) }

// segment is one segment file.
type segment struct {
	path  string
	name  string
	first uint64 // the seq its name gives for its first record
}

// listSegments returns the segments of an audit dir, by first seq.
func listSegments(root string) ([]segment, error) {
	dir := filepath.Join(root, segmentsDirName)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list audit segments: %w", err)
	}
	var segs []segment
	for _, e := range ents {
		name := e.Name()
		num, ok := strings.CutSuffix(name, segmentExt)
		if !ok || e.IsDir() || len(num) != 20 {
			continue
		}
		first, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, segment{path: filepath.Join(dir, name), name: name, first: first})
	}
	slices.SortFunc(segs, func(a, b segment) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	return segs, nil
}

// maxLineBytes bounds one stored line; a longer one is malformed.
const maxLineBytes = MaxRecordBytes + 4096

// lineReader reads the lines of a segment, each with its newline; the last
// one may lack it (a torn write). Zeros at the end of a segment are its
// reserve, space not yet written (see doc.go): they end it like the end of
// the file. Zeros followed by more bytes are returned as one line of at
// most zeroLineBytes zeros, which is no record; zeros then holds their
// count.
type lineReader struct {
	r     *bufio.Reader
	off   int64 // offset of the next line
	buf   []byte
	zeros int64 // the last line stands for this many zero bytes
}

// zeroLineBytes bounds the line that stands for a run of zeros.
const zeroLineBytes = 16

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 256<<10)}
}

// next returns the next line, its offset, and whether it is complete; io.EOF
// at the end. A line cut short by zeros is incomplete, like a torn last
// line. The line is valid until the next call.
func (lr *lineReader) next() (line []byte, off int64, complete bool, err error) {
	lr.buf, lr.zeros = lr.buf[:0], 0
	if b, err := lr.r.Peek(1); err == nil && b[0] == 0 {
		return lr.zeroRun()
	}
	off = lr.off
	for {
		b, _ := lr.r.Peek(lr.r.Buffered())
		if len(b) == 0 {
			if _, err := lr.r.Peek(1); err != nil {
				if !errors.Is(err, io.EOF) {
					return nil, lr.off, false, err
				}
				if lr.off == off {
					return nil, off, false, io.EOF
				}
				return lr.buf, off, false, nil
			}
			continue
		}
		nl := bytes.IndexByte(b, '\n')
		part := b
		if nl >= 0 {
			part = b[:nl+1]
		}
		if z := bytes.IndexByte(part, 0); z >= 0 {
			lr.take(part[:z])
			return lr.buf, off, false, nil
		}
		lr.take(part)
		if nl >= 0 {
			return lr.buf, off, true, nil
		}
	}
}

// take consumes part of the line, keeping at most maxLineBytes+1 bytes of
// it: an over-long line is read to its end but not kept.
func (lr *lineReader) take(part []byte) {
	if room := maxLineBytes + 1 - len(lr.buf); room > 0 {
		lr.buf = append(lr.buf, part[:min(len(part), room)]...)
	}
	_, _ = lr.r.Discard(len(part))
	lr.off += int64(len(part))
}

// atEnd reports whether nothing but the segment's zero reserve is left; it
// may consume those zeros.
func (lr *lineReader) atEnd() bool {
	b, err := lr.r.Peek(1)
	if errors.Is(err, io.EOF) {
		return true
	}
	if err != nil || b[0] != 0 {
		return false
	}
	_, _, _, err = lr.zeroRun()
	return errors.Is(err, io.EOF)
}

// zeroRun reads a run of zeros: the end of the segment's records if
// nothing else follows.
func (lr *lineReader) zeroRun() (line []byte, off int64, complete bool, err error) {
	var n int64
	for {
		b, _ := lr.r.Peek(lr.r.Buffered()) // what is buffered: no error
		if len(b) == 0 {
			if _, err := lr.r.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					// The reserve: the end, at its first zero.
					return nil, lr.off, false, io.EOF
				}
				return nil, lr.off, false, err
			}
			continue
		}
		k := 0
		for k < len(b) && b[k] == 0 {
			k++
		}
		_, _ = lr.r.Discard(k)
		n += int64(k)
		if k < len(b) {
			break
		}
	}
	off = lr.off
	lr.off += n
	lr.zeros = n
	lr.buf = append(lr.buf, zeros[:min(n, zeroLineBytes)]...)
	return lr.buf, off, true, nil
}

// writeFileSync writes a file atomically: a temporary file, fsync, rename,
// fsync of the directory.
func writeFileSync(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) //nolint:errcheck // gone after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so that entries created in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// readOrCreateSecret reads a hex secret of n bytes at path, or creates one
// (0600) when it is missing.
func readOrCreateSecret(path string, n int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, n)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := writeFileSync(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < n {
		return nil, fmt.Errorf("%w: %s: want %d hex-encoded bytes", ErrKey, path, n)
	}
	return key, nil
}

// ReadJournalID returns the id of the journal under dataDir.
func ReadJournalID(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(AuditDir(dataDir), journalIDName))
	if err != nil {
		return "", fmt.Errorf("audit journal id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
