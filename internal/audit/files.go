package audit

import (
	"bufio"
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
// one may lack it (a torn write).
type lineReader struct {
	r   *bufio.Reader
	off int64 // offset of the next line
	buf []byte
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 256<<10)}
}

// next returns the next line, its offset, and whether it is complete; io.EOF
// at the end. The line is valid until the next call.
func (lr *lineReader) next() (line []byte, off int64, complete bool, err error) {
	lr.buf = lr.buf[:0]
	for {
		frag, err := lr.r.ReadSlice('\n')
		lr.buf = append(lr.buf, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(lr.buf) > maxLineBytes {
				// Keep reading to the end of the line, but do not keep it.
				lr.buf = lr.buf[:maxLineBytes+1]
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(lr.buf) == 0 {
				return nil, lr.off, false, io.EOF
			}
			off = lr.off
			lr.off += int64(len(lr.buf))
			return lr.buf, off, false, nil
		}
		return nil, lr.off, false, err
	}
	off = lr.off
	lr.off += int64(len(lr.buf))
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
