package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/custos-dev/custos/internal/mask"
)

// Defaults of Options.
const (
	DefaultCheckpointInterval = 30 * time.Second
	DefaultSegmentBytes       = 64 << 20
	DefaultMaxBatch           = 1024
)

// reserveBytes is how far ahead of its records a segment file is filled with
// zeros: records then overwrite blocks that are already allocated, so the
// fdatasync of a group commit flushes their data only, not the file's size
// and extents each time (see doc.go, "Segments").
const reserveBytes = 1 << 20

// MaxRecordBytes bounds the encoding of one event; MaxValueBytes bounds one
// string value (longer ones are cut, marked with "…[truncated]").
const (
	MaxRecordBytes = 1 << 20
	MaxValueBytes  = 64 << 10
)

// Errors of the journal; test with errors.Is.
var (
	// ErrUnavailable: the journal cannot write (disk full, I/O error); the
	// event was not recorded. Callers fail closed for cardholder data.
	ErrUnavailable = errors.New("audit journal unavailable")
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("audit journal closed")
	// ErrClearPAN: an event still held something that looks like a PAN
	// after scrubbing (an integer attribute, say). It is refused.
	ErrClearPAN = errors.New("audit event holds a clear PAN")
	// ErrCorrupt: the journal's last segment is damaged in a way a crash
	// cannot explain (a bad record followed by good ones); run `custos
	// audit verify`.
	ErrCorrupt = errors.New("audit journal corrupt")
	// ErrLocked: another process has the journal open.
	ErrLocked = errors.New("audit journal in use by another process")
)

// Options configure a [Journal]. The config file's audit section maps onto
// it.
type Options struct {
	// DataDir is the data directory; the journal lives in DataDir/audit.
	// Required.
	DataDir string
	// SigningKeyFile holds the Ed25519 checkpoint signing key in the note
	// format ("PRIVATE+KEY+name+hash+key", see GenerateKey). Empty:
	// DataDir/audit/signing.key, generated (0600) with signing.key.pub
	// when missing.
	SigningKeyFile string
	// HMACKey keys the PAN fingerprints (at least 32 bytes), distinct from
	// the mask HMAC strategy's key. Empty: DataDir/audit/fingerprint.key,
	// generated (0600) when missing. Keep it for as long as records are
	// kept: fingerprints under another key do not match.
	HMACKey []byte
	// CheckpointInterval is how often a signed checkpoint is written, idle
	// or not. Zero: DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// SegmentBytes is the size after which the next batch starts a new
	// segment file. Zero: DefaultSegmentBytes.
	SegmentBytes int64
	// MaxBatch bounds the records written with one fsync. Zero:
	// DefaultMaxBatch.
	MaxBatch int
	// SyncInterval sets how durable a record is when Append (or a
	// Pending's Wait) returns. Zero, the default: every group commit is
	// fsynced before any append in it returns, so a returned record
	// survives the machine losing power. Above zero: an append returns once
	// its record is written to the segment file, which survives custos
	// being killed or crashing but not a power loss, and the file is
	// fsynced at most SyncInterval later (and before every checkpoint,
	// segment change and Close). DurableSeq, and what is exported, count
	// only fsynced records either way.
	SyncInterval time.Duration
	// CommitDelay is how long a group commit waits for more records once
	// appends are concurrent (a group commit held five records or more,
	// and none since held a lone one): fsyncs start at most once per
	// CommitDelay, each covering more records, for up to CommitDelay more
	// latency. A few sessions' records are fsynced at once. Zero: no wait.
	// Ignored when SyncInterval is set.
	CommitDelay time.Duration
	// Logger receives the journal's own log; nil discards it.
	Logger *slog.Logger
	// Registerer receives the journal's metrics; nil registers none.
	Registerer prometheus.Registerer

	now      func() time.Time                       // tests
	openFile func(path string) (segmentFile, error) // tests: failing disks
}

// segmentFile is the open segment being appended to.
type segmentFile interface {
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Close() error
}

func openSegmentFile(path string) (segmentFile, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
}

// datasync flushes f's data, and the metadata needed to read it back
// (fdatasync where the file has a descriptor).
func datasync(f segmentFile) error {
	if rc, ok := f.(interface {
		SyscallConn() (syscall.RawConn, error)
	}); ok {
		c, err := rc.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := c.Control(func(fd uintptr) { serr = fdatasync(fd) }); err != nil {
			return err
		}
		if serr != nil {
			return &os.PathError{Op: "fdatasync", Path: "segment", Err: serr}
		}
		return nil
	}
	return f.Sync()
}

// commitSiblings is how many records a group commit must hold for
// Options.CommitDelay to apply from the next one on: sessions enough that
// fsyncs, not their round trips, bound the throughput. It applies until a
// group commit holds a lone record.
const commitSiblings = 5

// zeros is what a segment's reserve is filled with.
var zeros [64 << 10]byte

// Stats are the journal's counters since Open.
type Stats struct {
	Seq         uint64 // the last durable record
	Records     int64  // records written
	Fsyncs      int64  // fsyncs of segment files (one per batch)
	Refused     int64  // appends that failed because the journal could not write
	Checkpoints int64
}

// Journal is the append-only, hash-chained audit journal. Append is safe for
// concurrent use; concurrent appends share fsyncs (group commit).
type Journal struct {
	opts   Options
	log    *slog.Logger
	root   string
	id     string
	origin string
	signer note.Signer
	vkey   string
	scrub  *Scrubber
	lock   *os.File

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan *request
	stop   chan struct{}
	done   chan struct{}

	// Guarded by wmu after Open: written by the writer goroutine, and by
	// appenders themselves when SyncInterval > 0.
	wmu       sync.Mutex
	synced    *sync.Cond // signalled when a fsync outside wmu ends
	syncing   int        // fsyncs running outside wmu
	kick      chan struct{}
	syncArmed atomic.Bool // an fsync is due: appenders need not kick
	f         segmentFile
	segFirst  uint64
	segSize   int64 // durable size of the current segment
	reserved  int64 // the segment file's size: records, then zeros
	seq       uint64
	hash      Hash
	ckpt      *os.File
	buf       []byte
	failErr   error     // the journal cannot write since failSince
	failSince time.Time // first failure of the current outage
	failCount int64     // appends refused in the current outage
	ckptErr   error
	ckptSince time.Time
	dirty     bool // written records not yet fsynced (SyncInterval > 0)

	durable atomic.Uint64
	failing atomic.Bool
	records atomic.Int64
	fsyncs  atomic.Int64
	refused atomic.Int64
	ckpts   atomic.Int64

	subsMu sync.Mutex
	subs   []chan struct{}

	m *journalMetrics
}

type request struct {
	tail []byte
	done chan error // nil for the journal's own events
	seq  uint64
}

// recovery is what Open found and repaired.
type recovery struct {
	truncated      int64  // bytes of a torn tail removed
	quarantine     string // where they were kept
	quarantineHash string
	unclean        bool   // the last record is not audit.stopped
	ckptAhead      uint64 // the last checkpoint covers this seq, beyond the journal
	ckptTruncated  int64
}

// Open opens (creating it if needed) the journal in opts.DataDir/audit,
// repairs a torn last record (kept in audit/quarantine and reported by a
// control-failure record), records custos.audit.started and starts writing
// checkpoints. Close it to stop.
func Open(opts Options) (*Journal, error) {
	if opts.DataDir == "" {
		return nil, errors.New("audit: data dir is required")
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.openFile == nil {
		opts.openFile = openSegmentFile
	}
	j := &Journal{
		opts: opts,
		log:  opts.Logger,
		root: AuditDir(opts.DataDir),
		reqs: make(chan *request, 2*opts.MaxBatch),
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	j.synced = sync.NewCond(&j.wmu)
	if err := j.open(); err != nil {
		j.release()
		return nil, err
	}
	rec, err := j.recoverTail()
	if err != nil {
		j.release()
		return nil, err
	}
	if err := j.openFiles(&rec); err != nil {
		j.release()
		return nil, err
	}
	m, err := newJournalMetrics(opts.Registerer, j)
	if err != nil {
		j.release()
		return nil, err
	}
	j.m = m
	go j.run()
	if err := j.started(&rec); err != nil {
		_ = j.Close(context.Background())
		return nil, err
	}
	return j, nil
}

// open creates the directories, takes the lock and loads the id and keys.
func (j *Journal) open() error {
	if err := os.MkdirAll(filepath.Join(j.root, segmentsDirName), 0o700); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(j.root, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	j.lock = lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrLocked, j.root, err)
	}
	idPath := filepath.Join(j.root, journalIDName)
	id, err := ReadJournalID(j.opts.DataDir)
	if errors.Is(err, os.ErrNotExist) {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		id = hex.EncodeToString(b[:])
		if err := writeFileSync(idPath, []byte(id+"\n"), 0o644); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	} else if err != nil {
		return err
	}
	if !isLowerHex(id, 32) {
		return fmt.Errorf("%w: %s: journal id %q is not 32 hex digits", ErrCorrupt, idPath, id)
	}
	j.id, j.origin = id, originPrefix+id
	keyFile, create := j.opts.SigningKeyFile, false
	if keyFile == "" {
		keyFile, create = filepath.Join(j.root, signingKeyName), true
	}
	if j.signer, j.vkey, err = loadSigner(keyFile, create); err != nil {
		return fmt.Errorf("audit signing key: %w", err)
	}
	key := j.opts.HMACKey
	if len(key) == 0 {
		if key, err = readOrCreateSecret(filepath.Join(j.root, fingerprintKeyName), 32); err != nil {
			return fmt.Errorf("audit fingerprint key: %w", err)
		}
	}
	if j.scrub, err = NewScrubber(key); err != nil {
		return fmt.Errorf("audit fingerprint key: %w", err)
	}
	return nil
}

// release closes what open and openFiles opened, on a failed Open.
func (j *Journal) release() {
	if j.f != nil {
		j.f.Close()
	}
	if j.ckpt != nil {
		j.ckpt.Close()
	}
	if j.lock != nil {
		j.lock.Close()
	}
}

// recoverTail finds the chain head (last seq and hash) and the current
// segment, truncating a torn tail of the last segment.
func (j *Journal) recoverTail() (recovery, error) {
	var rec recovery
	segs, err := listSegments(j.root)
	if err != nil {
		return rec, err
	}
	if len(segs) == 0 {
		j.segFirst = 1
		return rec, nil
	}
	last := segs[len(segs)-1]
	st, err := scanTail(last)
	if err != nil {
		return rec, err
	}
	if st.badOff >= 0 {
		// Records after a bad one are what a crash leaves when the blocks of
		// an unsynced batch reach the disk out of order, unless a checkpoint
		// covers them: then they were durable, and the damage is no crash.
		if st.maxSeqAfterBad > 0 && st.maxSeqAfterBad <= j.lastCheckpointSeq() {
			return rec, fmt.Errorf("%w: %s: bad record at byte %d followed by checkpointed ones: %w", ErrCorrupt, last.path, st.badOff, st.badErr)
		}
		if rec.truncated, rec.quarantine, rec.quarantineHash, err = j.cutTail(last.path, st.badOff); err != nil {
			return rec, err
		}
		j.log.Warn("audit journal torn tail truncated", "segment", last.name, "offset", st.badOff,
			"bytes", rec.truncated, "quarantine", rec.quarantine, "reason", st.badErr.Error())
	}
	j.segFirst, j.segSize = last.first, st.goodOff
	if st.last != nil {
		j.seq, j.hash = st.last.Seq, st.last.Hash
		rec.unclean = st.last.Name != EventAuditStopped
		return rec, nil
	}
	// The last segment is empty: the head is the previous segment's end.
	if len(segs) > 1 {
		prev, err := scanTail(segs[len(segs)-2])
		if err != nil {
			return rec, err
		}
		if prev.badOff >= 0 || prev.last == nil {
			if prev.badErr == nil {
				prev.badErr = errors.New("empty")
			}
			return rec, fmt.Errorf("%w: %s: no valid last record (%w)", ErrCorrupt, segs[len(segs)-2].path, prev.badErr)
		}
		j.seq, j.hash = prev.last.Seq, prev.last.Hash
		rec.unclean = prev.last.Name != EventAuditStopped
	}
	if last.first != j.seq+1 {
		return rec, fmt.Errorf("%w: %s: empty segment named for seq %d, journal ends at %d", ErrCorrupt, last.path, last.first, j.seq)
	}
	return rec, nil
}

// lastCheckpointSeq returns the seq the last well-signed checkpoint
// covers, 0 if none.
func (j *Journal) lastCheckpointSeq() uint64 {
	data, err := os.ReadFile(filepath.Join(j.root, checkpointsName))
	if err != nil {
		return 0
	}
	v, err := note.NewVerifier(j.vkey)
	if err != nil {
		return 0
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if c, err := openCheckpoint([]byte(lines[i]), v); err == nil {
			return c.Seq
		}
	}
	return 0
}

// tailScan is what scanTail found in one segment.
type tailScan struct {
	last           *Record
	goodOff        int64 // end of the last good record
	badOff         int64 // offset of the first bad line, -1 if none
	badErr         error
	maxSeqAfterBad uint64 // the highest seq of a valid record after the bad one
}

// scanTail reads a segment, checking each record and its link to the one
// before, and finds where the good records end.
func scanTail(seg segment) (tailScan, error) {
	st := tailScan{badOff: -1}
	f, err := os.Open(seg.path)
	if err != nil {
		return st, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	lr := newLineReader(f)
	for {
		line, off, complete, err := lr.next()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("audit: read %s: %w", seg.path, err)
		}
		if st.badOff >= 0 {
			if complete {
				if r, err := DecodeRecord(line); err == nil {
					st.maxSeqAfterBad = max(st.maxSeqAfterBad, r.Seq)
				}
			}
			continue
		}
		if !complete {
			st.badOff, st.badErr = off, errors.New("incomplete last line")
			continue
		}
		r, err := DecodeRecord(line)
		switch {
		case err != nil:
		case st.last == nil && r.Seq != seg.first:
			err = fmt.Errorf("first record is seq %d, segment name says %d", r.Seq, seg.first)
		case st.last != nil && (r.Seq != st.last.Seq+1 || r.PrevHash != st.last.Hash):
			err = fmt.Errorf("seq %d does not follow seq %d", r.Seq, st.last.Seq)
		}
		if err != nil {
			st.badOff, st.badErr = off, err
			continue
		}
		st.last = &r
		st.goodOff = off + int64(len(line))
	}
}

// cutTail moves path's bytes from off on into the quarantine directory and
// truncates the file at off. Zeros at the end are a segment's reserve, never
// written: they are cut, not kept or counted.
func (j *Journal) cutTail(path string, off int64) (n int64, qpath, qhash string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, "", "", fmt.Errorf("audit: %w", err)
	}
	if off > int64(len(data)) {
		return 0, "", "", nil
	}
	tail := bytes.TrimRight(data[off:], "\x00")
	qdir := filepath.Join(j.root, quarantineDirName)
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return 0, "", "", fmt.Errorf("audit: %w", err)
	}
	qpath = filepath.Join(qdir, fmt.Sprintf("%s.%d.%d.torn", filepath.Base(path), off, j.opts.now().UnixNano()))
	if err := writeFileSync(qpath, tail, 0o600); err != nil {
		return 0, "", "", err
	}
	if err := os.Truncate(path, off); err != nil {
		return 0, "", "", fmt.Errorf("audit: truncate torn tail: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, "", "", fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return 0, "", "", fmt.Errorf("audit: %w", err)
	}
	sum := sha256.Sum256(tail)
	return int64(len(tail)), qpath, hex.EncodeToString(sum[:]), nil
}

// openFiles opens the current segment and the checkpoints file, repairing
// a torn checkpoint line, and checks the last checkpoint against the head.
func (j *Journal) openFiles(rec *recovery) error {
	// Opened as after a failure: cut back to its records, which drops the
	// zero reserve a crash left (reserved again as records come).
	if err := j.reopen(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := syncDir(filepath.Join(j.root, segmentsDirName)); err != nil {
		return err
	}
	ckPath := filepath.Join(j.root, checkpointsName)
	data, err := os.ReadFile(ckPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit: %w", err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		off := int64(strings.LastIndexByte(string(data), '\n') + 1)
		if rec.ckptTruncated, _, _, err = j.cutTail(ckPath, off); err != nil {
			return err
		}
		data = data[:off]
		j.log.Warn("audit checkpoints torn tail truncated", "bytes", rec.ckptTruncated)
	}
	if lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"); len(data) > 0 {
		v, err := note.NewVerifier(j.vkey)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if c, err := openCheckpoint([]byte(lines[len(lines)-1]), v); err == nil && c.Seq > j.seq {
			rec.ckptAhead = c.Seq
		}
	}
	if j.ckpt, err = os.OpenFile(ckPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return syncDir(j.root)
}

// started records custos.audit.started and what recovery found.
func (j *Journal) started(rec *recovery) error {
	ctx := context.Background()
	if rec.truncated > 0 {
		if _, err := j.Append(ctx, Event{Name: EventControlFailure, Outcome: OutcomeFailure,
			ErrorType: "audit_torn_tail",
			Error:     fmt.Sprintf("audit journal: torn last record truncated at open (%d bytes kept in %s)", rec.truncated, filepath.Base(rec.quarantine)),
			Attrs: []Attr{String(AttrComponent, "audit_journal"), Int("custos.audit.truncated_bytes", rec.truncated),
				String("custos.audit.quarantine_sha256", rec.quarantineHash)}}); err != nil {
			return err
		}
	}
	if rec.ckptAhead > 0 {
		if _, err := j.Append(ctx, Event{Name: EventControlFailure, Outcome: OutcomeFailure,
			ErrorType: "audit_records_missing",
			Error:     fmt.Sprintf("audit journal: the last checkpoint covers seq %d, the journal ends at %d", rec.ckptAhead, j.durable.Load()),
			Attrs:     []Attr{String(AttrComponent, "audit_journal"), Int("custos.audit.checkpoint_seq", int64(rec.ckptAhead))}}); err != nil {
			return err
		}
	}
	_, err := j.Append(ctx, Event{Name: EventAuditStarted, Outcome: OutcomeSuccess, Attrs: []Attr{
		String(AttrJournalID, j.id),
		String("custos.audit.verifier_key", j.vkey),
		Bool("custos.audit.unclean_shutdown", rec.unclean),
	}})
	return err
}

// ID returns the journal's id (32 hex digits), part of every log.record.uid
// and checkpoint origin.
func (j *Journal) ID() string { return j.id }

// Dir returns the journal's directory (DataDir/audit).
func (j *Journal) Dir() string { return j.root }

// VerifierKey returns the verifier key of the checkpoint signatures.
func (j *Journal) VerifierKey() string { return j.vkey }

// Scrubber returns the journal's PAN scrubber (same key as the records).
func (j *Journal) Scrubber() *Scrubber { return j.scrub }

// DurableSeq returns the seq of the last durable record.
func (j *Journal) DurableSeq() uint64 { return j.durable.Load() }

// Stats returns the journal's counters.
func (j *Journal) Stats() Stats {
	return Stats{Seq: j.durable.Load(), Records: j.records.Load(), Fsyncs: j.fsyncs.Load(),
		Refused: j.refused.Load(), Checkpoints: j.ckpts.Load()}
}

// Subscribe returns a channel that receives a value (coalesced) after
// records become durable.
func (j *Journal) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	j.subsMu.Lock()
	j.subs = append(j.subs, ch)
	j.subsMu.Unlock()
	return ch
}

// Append records ev and returns its seq once it is durable (written and
// fsynced). Concurrent appends share fsyncs. An error means the event is not
// recorded: ErrUnavailable when the journal cannot write (the caller fails
// closed), ErrEvent or ErrClearPAN for an event that cannot be recorded
// as given, ErrClosed after Close. If ctx ends first Append returns its
// error; the record may still become durable.
func (j *Journal) Append(ctx context.Context, ev Event) (uint64, error) {
	return j.Enqueue(ctx, ev).Wait(ctx)
}

// AppendAs is Append for a record that needs only d before it returns.
func (j *Journal) AppendAs(ctx context.Context, ev Event, d Durability) (uint64, error) {
	return j.EnqueueAs(ctx, nil, ev, d).Wait(ctx)
}

// Pending is a record on its way into the journal: [Journal.Enqueue]
// returns it at once, Wait tells when it is durable.
type Pending struct {
	r    *request
	err  error
	done bool
	// sync is the journal when the record was written but its fsync is
	// still to be waited for (a Synced record with SyncInterval set).
	sync *Journal
}

// Durability is what a record needs before Wait returns.
type Durability uint8

const (
	// Synced: written and fsynced (it survives a power loss).
	Synced Durability = iota
	// Written: written to the segment file (it survives custos being
	// killed), fsynced at most Options.SyncInterval later. With
	// SyncInterval zero every record is Synced.
	Written
)

// AttrDurability says in each record which durability it was recorded
// with: "fsync" or "written".
const AttrDurability = "custos.audit.durability"

// Enqueue encodes ev and queues it for the next group commit without
// waiting for it to be durable: the caller does other work (a statement's
// completion is held back meanwhile) and calls Wait before it acts on the
// record being kept. It blocks only while the queue is full, until ctx
// ends. Errors are those of Append, reported by Wait.
func (j *Journal) Enqueue(ctx context.Context, ev Event) *Pending {
	return j.EnqueueAs(ctx, nil, ev, Synced)
}

// EnqueueWith is Enqueue for an event made of t's attributes and ev's
// (ev.Name is t's or empty; no attribute may be in both): what repeats from
// one event to the next is encoded once, in t.
func (j *Journal) EnqueueWith(ctx context.Context, t *Template, ev Event) *Pending {
	return j.EnqueueAs(ctx, t, ev, Synced)
}

// EnqueueAs is EnqueueWith (t may be nil) for a record that needs only d
// before Wait returns. The record says which durability it got
// (AttrDurability).
func (j *Journal) EnqueueAs(ctx context.Context, t *Template, ev Event, d Durability) *Pending {
	if j.opts.SyncInterval <= 0 {
		d = Synced
	}
	label := "fsync"
	if d == Written {
		label = "written"
	}
	tail, err := j.encodeAs(t, &ev, label)
	return j.enqueue(ctx, tail, err, d)
}

func (j *Journal) enqueue(ctx context.Context, tail []byte, err error, d Durability) *Pending {
	if err != nil {
		return &Pending{err: err, done: true}
	}
	r := &request{tail: tail, done: make(chan error, 1)}
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return &Pending{err: ErrClosed, done: true}
	}
	if j.opts.SyncInterval > 0 {
		// Written by the appender itself: no hand-off to the writer
		// goroutine, which only fsyncs shortly after.
		j.wmu.Lock()
		j.commit([]*request{r})
		j.wmu.Unlock()
		j.mu.RUnlock()
		// Wake the writer goroutine only to arm its fsync timer, not for
		// every record.
		if !j.syncArmed.Swap(true) {
			select {
			case j.kick <- struct{}{}:
			default:
			}
		}
		p := &Pending{r: r, err: <-r.done, done: true}
		if d == Synced && p.err == nil {
			p.sync = j
		}
		return p
	}
	select {
	case j.reqs <- r:
		j.mu.RUnlock()
	case <-ctx.Done():
		j.mu.RUnlock()
		return &Pending{err: fmt.Errorf("audit append: %w", ctx.Err()), done: true}
	}
	return &Pending{r: r}
}

// Wait returns the record's seq once it is durable, or why it is not
// recorded. If ctx ends first Wait returns its error and may be called
// again; the record may still become durable. Wait is not safe for
// concurrent use.
func (p *Pending) Wait(ctx context.Context) (uint64, error) {
	if !p.done {
		select {
		case p.err = <-p.r.done:
			p.done = true
		case <-ctx.Done():
			return 0, fmt.Errorf("audit append: %w", ctx.Err())
		}
	}
	if p.err == nil && p.sync != nil {
		p.err = p.sync.syncThrough(p.r.seq)
		p.sync = nil
	}
	if p.err != nil {
		return 0, p.err
	}
	return p.r.seq, nil
}

// syncThrough returns once the records up to seq are fsynced (SyncInterval
// set): it fsyncs itself when no fsync is running, else waits for the one
// running and looks again, so that records written meanwhile share the
// next fsync (a group commit without a writer goroutine in the way).
func (j *Journal) syncThrough(seq uint64) error {
	synced := false
	j.wmu.Lock()
	for j.durable.Load() < seq {
		if j.failErr != nil {
			j.wmu.Unlock()
			return fmt.Errorf("%w: %w", ErrUnavailable, j.failErr)
		}
		if j.syncing > 0 {
			// A fsync is running: its end is broadcast.
			j.synced.Wait()
			continue
		}
		if !j.dirty {
			// Written, not fsynced, and nothing left to fsync: the
			// fsync that covered it failed and the journal recovered
			// since (cutting what it could not vouch for).
			j.wmu.Unlock()
			return fmt.Errorf("%w: the record's fsync failed", ErrUnavailable)
		}
		synced = j.syncUnlocked() == nil || synced
	}
	j.wmu.Unlock()
	if synced {
		j.notify()
	}
	return nil
}

// Failing reports whether the journal's last write failed: until a write
// succeeds again, appends are likely to fail with ErrUnavailable. Callers
// that must not act unrecorded check it before acting.
func (j *Journal) Failing() bool { return j.failing.Load() }

// Close records custos.audit.stopped, writes a last checkpoint and closes
// the journal. Appends waiting in the queue are written first.
func (j *Journal) Close(ctx context.Context) error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	close(j.stop)
	select {
	case <-j.done:
	case <-ctx.Done():
		return fmt.Errorf("audit close: %w", ctx.Err())
	}
	j.m.unregister()
	var errs []error
	if j.f != nil {
		if j.failErr == nil {
			errs = append(errs, j.trim())
		}
		errs = append(errs, j.f.Close())
	}
	if j.ckpt != nil {
		errs = append(errs, j.ckpt.Close())
	}
	errs = append(errs, j.lock.Close())
	return errors.Join(errs...)
}

// tailPool holds encoding buffers: a record's tail goes back once it is
// copied into the batch written to the segment.
var tailPool sync.Pool

func getTail(n int) []byte {
	if b, ok := tailPool.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	return make([]byte, 0, max(n, 2048))
}

func putTail(b []byte) {
	if cap(b) <= 16<<10 {
		tailPool.Put(&b)
	}
}

// attrPool holds the attribute lists events are encoded from.
var attrPool = sync.Pool{New: func() any { b := make([]Attr, 0, 48); return &b }}

// truncatedMark ends a string value cut at MaxValueBytes.
const truncatedMark = "…[truncated]"

// encode turns ev (with t's attributes, when t is set) into the tail of
// its record body: scrubbed, checked, in the canonical encoding.
func (j *Journal) encode(t *Template, ev *Event) ([]byte, error) { return j.encodeAs(t, ev, "") }

// encodeAs is encode of a record kept with the durability named (an
// AttrDurability value; "" for none).
func (j *Journal) encodeAs(t *Template, ev *Event, durability string) ([]byte, error) {
	name := ev.Name
	if t != nil {
		if name != "" && name != t.name {
			return nil, fmt.Errorf("%w: event %s with a template of %s", ErrEvent, name, t.name)
		}
		name = t.name
		ev.Name = name
	}
	if name == "" {
		return nil, fmt.Errorf("%w: no event name", ErrEvent)
	}
	buf := attrPool.Get().(*[]Attr)
	defer func() {
		clear((*buf)[:cap(*buf)])
		attrPool.Put(buf)
	}()
	attrs, err := ev.attrs(*buf)
	if cap(attrs) <= 256 {
		*buf = attrs[:0]
	}
	if err != nil {
		return nil, err
	}
	if durability != "" {
		if attrs, err = addAttr(attrs, String(AttrDurability, durability)); err != nil {
			return nil, err
		}
	}
	if len(ev.PANSources) > 0 {
		if fps := j.scrub.Fingerprints(ev.PANSources...); len(fps) > 0 {
			if attrs, err = addAttr(attrs, Strings(AttrPANFingerprints, fps)); err != nil {
				return nil, err
			}
		}
	}
	scrubbed := j.cleanAttrs(attrs)
	if t == nil {
		var n int
		name, n = j.cleanString(name, false)
		scrubbed += n
	}
	if scrubbed > 0 {
		// A caller passed a PAN where none belongs: record that it happened,
		// never what it was.
		j.log.Warn("audit event held a pan", "event", name, "scrubbed", scrubbed)
		if attrs, err = addAttr(attrs, Int(AttrPANScrubbed, int64(scrubbed))); err != nil {
			return nil, err
		}
	}
	tm := ev.Time
	if tm.IsZero() {
		tm = j.opts.now()
	}
	var traceID, spanID string
	if ev.TraceID.IsValid() {
		traceID = ev.TraceID.String()
	}
	if ev.SpanID.IsValid() {
		spanID = ev.SpanID.String()
	}
	var frags []frag
	size := tailSize(attrs)
	if t != nil {
		frags, size = t.frags, size+t.size
	}
	tail, err := appendTail(getTail(size), tm, name, ev.severity(), traceID, spanID, frags, attrs)
	if err != nil {
		return nil, err
	}
	if len(tail) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, more than %d", ErrEvent, len(tail), MaxRecordBytes)
	}
	if mask.Contains(tail) {
		return nil, fmt.Errorf("%w: event %s", ErrClearPAN, name)
	}
	return tail, nil
}

// cleanAttrs drops sensitive authentication data from attrs and scrubs
// their PANs, in place (lists are copied before they change), and returns
// how many values it removed.
func (j *Journal) cleanAttrs(attrs []Attr) int {
	scrubbed := j.scrub.dropSAD(attrs)
	for i := range attrs {
		a := &attrs[i]
		var n int
		a.Key, n = j.cleanString(a.Key, false)
		scrubbed += n
		switch a.Value.Kind() {
		case KindString:
			a.Value.s, n = j.cleanString(a.Value.s, true)
			scrubbed += n
		case KindStrings:
			var l []string // a copy once one changes: the caller's list is left as it is
			for k, s := range a.Value.l {
				c, n := j.cleanString(s, true)
				scrubbed += n
				if l == nil && c != s {
					l = slices.Clone(a.Value.l)
				}
				if l != nil {
					l[k] = c
				}
			}
			if l != nil {
				a.Value.l = l
			}
		}
	}
	return scrubbed
}

// Template holds the encoded attributes that several events share (a
// session's identity, a statement's text): [Journal.EnqueueWith] copies
// them into each record instead of building, scrubbing and escaping them
// again. Records are the same as those of Enqueue with every attribute in
// the event. A Template is immutable and safe for concurrent use.
type Template struct {
	name  string
	frags []frag // sorted by key
	size  int
}

// frag is one attribute, encoded: `"key":value`.
type frag struct {
	key string
	enc []byte
}

// ErrTemplate: a template's attributes held a PAN; the caller records the
// event without one (the journal then records that it scrubbed the PAN).
var ErrTemplate = errors.New("audit template not made")

// NewTemplate encodes the attributes of ev for events named name. ev.Name,
// Time, PANSources, TraceID and SpanID must be zero, and the numbers a
// statement or HTTP request always records (rows, masked, SAD, duration)
// are left out here.
func (j *Journal) NewTemplate(name string, ev Event) (*Template, error) {
	if name == "" || ev.Name != "" || !ev.Time.IsZero() || len(ev.PANSources) > 0 || ev.TraceID.IsValid() || ev.SpanID.IsValid() {
		return nil, fmt.Errorf("%w: a template has a name and attributes only", ErrEvent)
	}
	cname, n := j.cleanString(name, false)
	attrs, err := ev.attrs(nil)
	if err != nil {
		return nil, err
	}
	if n+j.cleanAttrs(attrs) > 0 {
		return nil, ErrTemplate
	}
	t := &Template{name: cname, frags: make([]frag, len(attrs))}
	for i, a := range attrs {
		enc := appendString(nil, a.Key)
		enc = append(enc, ':')
		enc = appendValue(enc, a.Value)
		t.frags[i] = frag{key: a.Key, enc: enc}
		t.size += len(enc) + 1
	}
	return t, nil
}

// tailSize estimates the encoded size of a record's tail, so that it is
// allocated once.
func tailSize(attrs []Attr) int {
	n := 256
	for _, a := range attrs {
		n += len(a.Key) + 8 + len(a.Value.s)
		for _, s := range a.Value.l {
			n += len(s) + 4
		}
	}
	return n + n/8
}

// cleanString makes s valid UTF-8, replaces its PANs and cuts it at
// MaxValueBytes (values only), rescrubbing after the cut: a cut can turn a
// run of digits too long to be a PAN into one.
func (j *Journal) cleanString(s string, value bool) (string, int) {
	s = validUTF8(s)
	s, n := j.scrub.Scrub(s)
	if value && len(s) > MaxValueBytes {
		cut := MaxValueBytes
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		var m int
		s, m = j.scrub.Scrub(s[:cut] + truncatedMark)
		n += m
	}
	return s, n
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// addAttr inserts a into the sorted attrs; its key must be new.
func addAttr(attrs []Attr, a Attr) ([]Attr, error) {
	i, found := slices.BinarySearchFunc(attrs, a.Key, func(x Attr, k string) int { return strings.Compare(x.Key, k) })
	if found {
		return nil, fmt.Errorf("%w: attribute %q set twice", ErrEvent, a.Key)
	}
	return slices.Insert(attrs, i, a), nil
}

// run is the writer goroutine: it writes batches of queued records with
// one write and one fsync each, fsyncs what appenders wrote themselves
// (SyncInterval > 0) and checkpoints on a ticker.
func (j *Journal) run() {
	defer close(j.done)
	tick := time.NewTicker(j.opts.CheckpointInterval)
	defer tick.Stop()
	batch := make([]*request, 0, j.opts.MaxBatch)
	var syncC <-chan time.Time // armed while written records wait for their fsync
	var lastCommit time.Time   // when the last group commit started
	grouping := false          // group commits wait (CommitDelay)
	commit := func(b []*request) {
		j.wmu.Lock()
		j.commit(b)
		dirty := j.dirty
		j.wmu.Unlock()
		if dirty && syncC == nil {
			syncC = time.After(j.opts.SyncInterval)
		}
	}
	for {
		select {
		case r := <-j.reqs:
			batch = j.drain(append(batch[:0], r))
			// Group commits wait for more records from the first batch of
			// commitSiblings on, until one holds a lone record.
			if grouping || len(batch) >= commitSiblings {
				batch = j.gather(batch, lastCommit.Add(j.opts.CommitDelay))
			}
			grouping = len(batch) > 1 && (grouping || len(batch) >= commitSiblings)
			lastCommit = time.Now()
			commit(batch)
		case <-j.kick:
			if syncC == nil {
				syncC = time.After(j.opts.SyncInterval)
			}
		case <-syncC:
			syncC = nil
			j.syncArmed.Store(false) // records written from now on arm it again
			j.syncNow()
		case <-tick.C:
			j.checkpoint()
		case <-j.stop:
			for {
				batch = j.drain(batch[:0])
				if len(batch) == 0 {
					break
				}
				commit(batch)
			}
			if r, err := j.ownRequest(Event{Name: EventAuditStopped, Outcome: OutcomeSuccess,
				Attrs: []Attr{String(AttrJournalID, j.id)}}); err == nil {
				commit([]*request{r})
			}
			j.checkpoint()
			return
		}
	}
}

// gather adds queued requests to batch until the deadline (CommitDelay
// after the last group commit started) or MaxBatch, so that concurrent
// appends share a fsync; at once when there is no delay or the journal is
// stopping.
func (j *Journal) gather(batch []*request, deadline time.Time) []*request {
	if j.opts.CommitDelay <= 0 || j.opts.SyncInterval > 0 {
		return batch
	}
	wait := time.Until(deadline)
	if wait <= 0 {
		return batch
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for len(batch) < j.opts.MaxBatch {
		select {
		case r := <-j.reqs:
			batch = j.drain(append(batch, r))
		case <-t.C:
			return batch
		case <-j.stop:
			return batch
		}
	}
	return batch
}

// drain adds queued requests to batch, up to MaxBatch, without waiting.
func (j *Journal) drain(batch []*request) []*request {
	for len(batch) < j.opts.MaxBatch {
		select {
		case r := <-j.reqs:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// ownRequest encodes one of the journal's own events.
func (j *Journal) ownRequest(ev Event) (*request, error) {
	tail, err := j.encode(nil, &ev)
	if err != nil {
		j.log.Error("audit event not encoded", "event", ev.Name, "error", err.Error())
		return nil, err
	}
	return &request{tail: tail}, nil
}

// commit writes batch (after recovering from an earlier failure, with a
// control-failure record first), fsyncs, and answers each request.
func (j *Journal) commit(batch []*request) {
	recovering := j.failErr != nil
	if recovering {
		if err := j.reopen(); err != nil {
			j.fail(batch, err)
			return
		}
		ev := Event{Name: EventControlFailure, Outcome: OutcomeFailure, ErrorType: "audit_write_failed",
			Error: "audit journal could not write: " + j.failErr.Error(),
			Attrs: []Attr{String(AttrComponent, "audit_journal"), Int("custos.audit.refused", j.failCount),
				String("custos.audit.failed_since", j.failSince.UTC().Format(time.RFC3339Nano))}}
		if r, err := j.ownRequest(ev); err == nil {
			batch = append([]*request{r}, batch...)
		}
	}
	if len(batch) == 0 {
		return
	}
	if j.segSize >= j.opts.SegmentBytes {
		if err := j.rotate(); err != nil {
			j.fail(batch, err)
			return
		}
	}
	buf, seq, h := j.buf[:0], j.seq, j.hash
	for _, r := range batch {
		seq++
		start := len(buf)
		buf = appendHead(buf, seq, h)
		buf = append(buf, r.tail...)
		putTail(r.tail)
		r.tail = nil
		buf = append(buf, '}')
		h = chainHash(h, buf[start:])
		buf = appendLine(buf[:start], buf[start:], h)
		r.seq = seq
	}
	j.buf = buf
	if err := j.reserve(j.segSize + int64(len(buf))); err != nil {
		j.fail(batch, err)
		return
	}
	if _, err := j.f.WriteAt(buf, j.segSize); err != nil {
		j.fail(batch, err)
		return
	}
	if j.opts.SyncInterval <= 0 {
		if err := datasync(j.f); err != nil {
			j.fail(batch, err)
			return
		}
		j.fsyncs.Add(1)
		j.durable.Store(seq)
	} else {
		j.dirty = true
	}
	j.records.Add(int64(len(batch)))
	j.seq, j.hash = seq, h
	j.segSize += int64(len(buf))
	if cap(j.buf) > 4<<20 {
		j.buf = nil
	}
	if recovering {
		j.log.Info("audit journal writing again", "refused", j.failCount, "since", j.failSince)
		j.failErr, j.failCount = nil, 0
		j.failing.Store(false)
	}
	for _, r := range batch {
		if r.done != nil {
			r.done <- nil
		}
	}
	if !j.dirty {
		j.notify()
	}
}

// syncNow fsyncs records written since the last fsync (SyncInterval > 0),
// outside wmu so that appenders go on writing meanwhile. A failure puts
// the journal in the failed state: those records may be lost, and the
// recovery is recorded as a control failure.
func (j *Journal) syncNow() {
	j.wmu.Lock()
	if !j.dirty || j.f == nil {
		j.wmu.Unlock()
		return
	}
	err := j.syncUnlocked()
	j.wmu.Unlock()
	if err == nil {
		j.notify()
	}
}

// syncUnlocked fsyncs what is written, with wmu held on entry and on
// return but released during the fsync, and tells waiters when it ends.
func (j *Journal) syncUnlocked() error {
	f, seq := j.f, j.seq
	j.dirty = false
	j.syncing++
	j.wmu.Unlock()
	err := datasync(f)
	j.wmu.Lock()
	j.syncing--
	j.synced.Broadcast()
	j.synced1(seq, err)
	return err
}

// synced1 notes the end of a fsync covering records up to seq; wmu held.
func (j *Journal) synced1(seq uint64, err error) {
	if err != nil {
		j.log.Error("audit records written but not fsynced", "error", err.Error(), "seq", seq)
		j.fail(nil, err)
		return
	}
	j.fsyncs.Add(1)
	if seq > j.durable.Load() {
		j.durable.Store(seq)
	}
}

// syncLocked fsyncs what was written, with wmu held (segment changes).
func (j *Journal) syncLocked() error {
	for j.syncing > 0 {
		j.synced.Wait()
	}
	if !j.dirty {
		return nil
	}
	j.dirty = false
	err := datasync(j.f)
	j.synced1(j.seq, err)
	return err
}

// fail answers batch with ErrUnavailable and enters (or stays in) the
// failed state: the next commit reopens the segment, cuts what may have
// been written and records the outage.
func (j *Journal) fail(batch []*request, err error) {
	if j.failErr == nil {
		j.failing.Store(true)
		j.failErr, j.failSince = err, j.opts.now()
		j.log.Error("audit journal cannot write", "error", err.Error())
	}
	werr := fmt.Errorf("%w: %w", ErrUnavailable, err)
	for _, r := range batch {
		if r.done != nil {
			j.failCount++
			j.refused.Add(1)
			r.done <- werr
		}
	}
}

// reopen (re)opens the current segment, at Open and after a failure, and
// cuts it back to its durable size: bytes of a failed write or fsync, and
// a reserve, are not trusted.
func (j *Journal) reopen() error {
	if j.f != nil {
		_ = j.f.Close()
		j.f = nil
	}
	f, err := j.opts.openFile(filepath.Join(j.root, segmentsDirName, segmentName(j.segFirst)))
	if err != nil {
		return err
	}
	if err := f.Truncate(j.segSize); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	j.f, j.reserved = f, j.segSize
	return nil
}

// reserve makes the segment file at least n bytes long, filling what it
// adds with zeros, reserveBytes at a time; wmu held.
func (j *Journal) reserve(n int64) error {
	if n <= j.reserved {
		return nil
	}
	end := (n/reserveBytes + 1) * reserveBytes
	for off := j.reserved; off < end; {
		w := min(int64(len(zeros)), end-off)
		if _, err := j.f.WriteAt(zeros[:w], off); err != nil {
			return fmt.Errorf("reserve segment space: %w", err)
		}
		off += w
		j.reserved = off
	}
	return nil
}

// trim cuts the current segment file's zero reserve, leaving its records:
// before it is closed or left for the next segment; wmu held.
func (j *Journal) trim() error {
	if j.reserved == j.segSize {
		return nil
	}
	if err := j.f.Truncate(j.segSize); err != nil {
		return err
	}
	j.reserved = j.segSize
	return datasync(j.f)
}

// rotate starts a new segment for the next record.
func (j *Journal) rotate() error {
	if j.f == nil {
		return errors.New("no open segment")
	}
	if err := j.syncLocked(); err != nil {
		return err
	}
	if err := j.trim(); err != nil {
		return err
	}
	first := j.seq + 1
	path := filepath.Join(j.root, segmentsDirName, segmentName(first))
	f, err := j.opts.openFile(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return err
	}
	_ = j.f.Close()
	j.f, j.segFirst, j.segSize, j.reserved = f, first, 0, 0
	j.log.Info("audit segment started", "segment", filepath.Base(path))
	return nil
}

// checkpoint signs the durable head and appends it to checkpoints.jsonl; a
// journal that failed to write gets a chance to recover first.
func (j *Journal) checkpoint() {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.failErr != nil {
		j.commit(nil)
	}
	if err := j.syncLocked(); err != nil {
		return // the records it covers may be lost: no checkpoint over them
	}
	c := Checkpoint{Origin: j.origin, Seq: j.seq, Hash: j.hash, Time: j.opts.now()}
	line, err := signCheckpoint(c, j.signer)
	if err == nil {
		if _, err = j.ckpt.Write(line); err == nil {
			err = j.ckpt.Sync()
		}
	}
	if err != nil {
		if j.ckptErr == nil {
			j.ckptErr, j.ckptSince = err, j.opts.now()
			j.log.Error("audit checkpoint not written", "error", err.Error())
		}
		return
	}
	j.ckpts.Add(1)
	if j.ckptErr != nil {
		ev := Event{Name: EventControlFailure, Outcome: OutcomeFailure, ErrorType: "audit_checkpoint_failed",
			Error: "audit checkpoints could not be written: " + j.ckptErr.Error(),
			Attrs: []Attr{String(AttrComponent, "audit_checkpoint"),
				String("custos.audit.failed_since", j.ckptSince.UTC().Format(time.RFC3339Nano))}}
		j.ckptErr = nil
		if r, err := j.ownRequest(ev); err == nil {
			j.commit([]*request{r})
			_ = j.syncLocked()
		}
	}
}

// notify wakes subscribers.
func (j *Journal) notify() {
	j.subsMu.Lock()
	for _, ch := range j.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	j.subsMu.Unlock()
}

// journalMetrics are the journal's Prometheus collectors.
type journalMetrics struct {
	reg  prometheus.Registerer
	cols []prometheus.Collector
}

func newJournalMetrics(reg prometheus.Registerer, j *Journal) (*journalMetrics, error) {
	m := &journalMetrics{reg: reg}
	if reg == nil {
		return m, nil
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	m.cols = []prometheus.Collector{
		counter("custos_audit_records_total", "Audit records written.", func() float64 { return float64(j.records.Load()) }),
		counter("custos_audit_fsyncs_total", "Fsyncs of audit segments (one per group commit).", func() float64 { return float64(j.fsyncs.Load()) }),
		counter("custos_audit_refused_total", "Audit appends refused because the journal could not write.", func() float64 { return float64(j.refused.Load()) }),
		counter("custos_audit_checkpoints_total", "Signed audit checkpoints written.", func() float64 { return float64(j.ckpts.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custos_audit_last_seq", Help: "Seq of the last durable audit record."},
			func() float64 { return float64(j.durable.Load()) }),
	}
	for i, c := range m.cols {
		if err := reg.Register(c); err != nil {
			for _, r := range m.cols[:i] {
				reg.Unregister(r)
			}
			return nil, fmt.Errorf("audit metrics: %w", err)
		}
	}
	return m, nil
}

func (m *journalMetrics) unregister() {
	if m == nil || m.reg == nil {
		return
	}
	for _, c := range m.cols {
		m.reg.Unregister(c)
	}
}
