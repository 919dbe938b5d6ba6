package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of exported audit logs.
const ScopeName = "github.com/custos-dev/custos/internal/audit"

// Defaults of ExporterOptions.
const (
	DefaultExportBatch     = 512
	DefaultExportPoll      = time.Second
	DefaultExportTimeout   = 30 * time.Second
	DefaultMinBackoff      = 500 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultBacklogWarnings = 10000
)

// ErrProtocol: OTEL_EXPORTER_OTLP_(LOGS_)PROTOCOL names a protocol the log
// exporter does not speak.
var ErrProtocol = errors.New("unsupported OTLP protocol")

// NewOTLPLogExporter returns the OTLP log exporter the standard variables
// configure: OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL, "grpc" or "http/protobuf" (the default);
// endpoint, headers, TLS, compression and timeout come from the other
// OTEL_EXPORTER_OTLP_* variables, read by the exporters themselves.
// getenv is os.Getenv outside tests. Retries are left to the [Exporter],
// which keeps trying for as long as it takes.
func NewOTLPLogExporter(ctx context.Context, getenv func(string) string) (sdklog.Exporter, error) {
	switch p := otlpProtocol(getenv); p {
	case "grpc":
		return otlploggrpc.New(ctx, otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}))
	case "http/protobuf":
		return otlploghttp.New(ctx, otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}))
	default:
		return nil, fmt.Errorf("%w: %q (want grpc or http/protobuf)", ErrProtocol, p)
	}
}

// otlpProtocol returns the protocol the variables select for logs.
func otlpProtocol(getenv func(string) string) string {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return strings.ToLower(v)
		}
	}
	return "http/protobuf"
}

// ExporterOptions configure an [Exporter].
type ExporterOptions struct {
	// Journal is the journal to export; records are read from its
	// directory up to its durable seq. Required.
	Journal *Journal
	// Exporter sends the logs (NewOTLPLogExporter). Required; the Exporter
	// shuts it down in Shutdown.
	Exporter sdklog.Exporter
	// Resource describes the emitting service; nil: service.name=custos.
	Resource *resource.Resource
	// BatchSize is the most records sent in one export. Zero:
	// DefaultExportBatch.
	BatchSize int
	// PollInterval is the longest wait for new records when no
	// notification comes. Zero: DefaultExportPoll.
	PollInterval time.Duration
	// ExportTimeout bounds one export call. Zero: DefaultExportTimeout.
	ExportTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed export; it
	// doubles from MinBackoff up to MaxBackoff. Zero: the defaults.
	MinBackoff, MaxBackoff time.Duration
	// BacklogWarning is the backlog (records) at which a
	// custos.audit.export_backlog event is recorded; another is recorded
	// when the backlog is cleared. Zero: DefaultBacklogWarnings.
	BacklogWarning uint64
	// Logger receives the exporter's log; nil discards it.
	Logger *slog.Logger
	// Registerer receives custos_audit_export_* metrics; nil registers
	// none.
	Registerer prometheus.Registerer
}

// cursor is the persisted export position: the last record the collector
// accepted.
type cursor struct {
	JournalID string `json:"journal_id"`
	Seq       uint64 `json:"seq"`
	Hash      string `json:"hash"`
}

// Exporter ships journal records as OTLP log records, in order, from a
// persisted cursor: it reads the records after the cursor, exports them in
// batches, and advances (and fsyncs) the cursor only once the collector
// accepted a batch. A collector outage delays export and loses nothing; a
// record sent again keeps its log.record.uid. Delivery is at least once: a
// crash between acceptance and the cursor write re-sends that batch.
type Exporter struct {
	opts   ExporterOptions
	j      *Journal
	log    *slog.Logger
	path   string
	exp    sdklog.Exporter
	lp     *sdklog.LoggerProvider
	logger otellog.Logger
	cap    *captureProcessor

	cursor   atomic.Uint64
	exported atomic.Int64
	failures atomic.Int64
	warned   bool

	rd   tailReader
	cols []prometheus.Collector

	shutdownOnce sync.Once
}

// NewExporter loads the cursor (DataDir/audit/export.cursor) and prepares
// the export pipeline. Call Run to export and Shutdown when done.
func NewExporter(opts ExporterOptions) (*Exporter, error) {
	if opts.Journal == nil || opts.Exporter == nil {
		return nil, errors.New("audit exporter: journal and exporter are required")
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultExportBatch
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultExportPoll
	}
	if opts.ExportTimeout <= 0 {
		opts.ExportTimeout = DefaultExportTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.BacklogWarning == 0 {
		opts.BacklogWarning = DefaultBacklogWarnings
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	res := opts.Resource
	if res == nil {
		res = resource.NewSchemaless(attribute.String("service.name", "custos"))
	}
	e := &Exporter{
		opts: opts,
		j:    opts.Journal,
		log:  opts.Logger,
		path: filepath.Join(opts.Journal.Dir(), cursorName),
		exp:  opts.Exporter,
		cap:  &captureProcessor{},
	}
	e.lp = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(e.cap))
	e.logger = e.lp.Logger(ScopeName, otellog.WithSchemaURL(SemconvSchemaURL))
	c, err := e.loadCursor()
	if err != nil {
		return nil, err
	}
	if d := e.j.DurableSeq(); c.Seq > d {
		// The journal lost acknowledged records (its open recorded a control
		// failure); continue after what it holds.
		e.log.Error("audit export cursor beyond the journal", "cursor", c.Seq, "journal_seq", d)
		c.Seq = d
	}
	e.cursor.Store(c.Seq)
	e.rd = tailReader{root: e.j.Dir(), next: c.Seq + 1}
	if opts.Registerer != nil {
		e.cols = []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custos_audit_export_backlog_records",
				Help: "Durable audit records not yet accepted by the OTLP collector."}, func() float64 { return float64(e.Backlog()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "custos_audit_exported_records_total",
				Help: "Audit records accepted by the OTLP collector."}, func() float64 { return float64(e.exported.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "custos_audit_export_failures_total",
				Help: "Failed OTLP exports of audit records (retried)."}, func() float64 { return float64(e.failures.Load()) }),
		}
		for i, col := range e.cols {
			if err := opts.Registerer.Register(col); err != nil {
				for _, r := range e.cols[:i] {
					opts.Registerer.Unregister(r)
				}
				return nil, fmt.Errorf("audit exporter metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Backlog returns how many durable records the collector has not accepted
// yet.
func (e *Exporter) Backlog() uint64 {
	d, c := e.j.DurableSeq(), e.cursor.Load()
	if d < c {
		return 0
	}
	return d - c
}

// Cursor returns the seq of the last record the collector accepted.
func (e *Exporter) Cursor() uint64 { return e.cursor.Load() }

// Exported returns the records exported since NewExporter.
func (e *Exporter) Exported() int64 { return e.exported.Load() }

// Run exports until ctx ends, then returns nil. Export failures are logged
// and retried with backoff; they do not end Run.
func (e *Exporter) Run(ctx context.Context) error {
	wake := e.j.Subscribe()
	defer e.rd.close()
	var backoff time.Duration
	for {
		n, err := e.exportOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		e.checkBacklog(ctx)
		wait := e.opts.PollInterval
		switch {
		case err != nil:
			e.failures.Add(1)
			backoff = min(max(2*backoff, e.opts.MinBackoff), e.opts.MaxBackoff)
			e.log.Warn("audit export failed", "error", err.Error(), "backlog", e.Backlog(), "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		case n > 0:
			backoff = 0
			continue // more may be waiting
		}
		backoff = 0
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// exportOnce exports the next batch after the cursor, up to the durable
// seq, and returns how many records the collector accepted.
func (e *Exporter) exportOnce(ctx context.Context) (int, error) {
	upTo := e.j.DurableSeq()
	recs, err := e.rd.read(e.opts.BatchSize, upTo)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	batch := e.convert(ctx, recs)
	ectx, cancel := context.WithTimeout(ctx, e.opts.ExportTimeout)
	err = e.exp.Export(ectx, batch)
	cancel()
	if err != nil {
		e.rd.unread(recs)
		return 0, fmt.Errorf("export seq %d..%d: %w", recs[0].Seq, recs[len(recs)-1].Seq, err)
	}
	last := recs[len(recs)-1]
	if err := e.saveCursor(cursor{JournalID: e.j.ID(), Seq: last.Seq, Hash: last.Hash.String()}); err != nil {
		// Accepted but not remembered: the batch goes again after a
		// restart, with the same uids.
		e.log.Error("audit export cursor not saved", "error", err.Error())
	}
	e.cursor.Store(last.Seq)
	e.exported.Add(int64(len(recs)))
	return len(recs), nil
}

// checkBacklog records custos.audit.export_backlog when the backlog crosses
// BacklogWarning and when it is cleared.
func (e *Exporter) checkBacklog(ctx context.Context) {
	b := e.Backlog()
	var ev Event
	switch {
	case !e.warned && b >= e.opts.BacklogWarning:
		ev = Event{Name: EventAuditBacklog, Outcome: OutcomeFailure, Severity: SeverityWarn,
			Error: "audit export to the OTLP collector is behind"}
	case e.warned && b < e.opts.BacklogWarning/2:
		ev = Event{Name: EventAuditBacklog, Outcome: OutcomeSuccess}
	default:
		return
	}
	ev.Attrs = []Attr{Int("custos.audit.backlog", int64(b)), Int("custos.audit.export_cursor", int64(e.cursor.Load()))}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := e.j.Append(actx, ev); err != nil {
		e.log.Error("audit backlog event not recorded", "error", err.Error())
		return
	}
	e.warned = !e.warned
}

// convert turns records into SDK log records through the logger provider,
// which adds the resource and scope.
func (e *Exporter) convert(ctx context.Context, recs []Record) []sdklog.Record {
	e.cap.records = e.cap.records[:0]
	id := e.j.ID()
	for i := range recs {
		r := &recs[i]
		var lr otellog.Record
		lr.SetEventName(r.Name)
		lr.SetTimestamp(r.Time)
		lr.SetObservedTimestamp(r.Time)
		lr.SetSeverity(otellog.Severity(r.Severity))
		lr.SetSeverityText(r.Severity.Text())
		lr.SetBody(attribute.StringValue(r.Name))
		kvs := make([]attribute.KeyValue, 0, len(r.Attrs)+3)
		kvs = append(kvs, attribute.String(AttrLogRecordUID, UID(id, r.Seq)),
			attribute.Int64(AttrJournalSeq, int64(r.Seq)), attribute.String(AttrJournalHash, r.Hash.String()))
		for _, a := range r.Attrs {
			kvs = append(kvs, otelAttr(a))
		}
		lr.AddAttributes(kvs...)
		ectx := ctx
		if sc := spanContext(r); sc.IsValid() {
			ectx = trace.ContextWithSpanContext(ctx, sc)
		}
		e.logger.Emit(ectx, lr)
	}
	return e.cap.records
}

// spanContext returns the record's trace context.
func spanContext(r *Record) trace.SpanContext {
	tid, err1 := trace.TraceIDFromHex(r.TraceID)
	sid, err2 := trace.SpanIDFromHex(r.SpanID)
	if err1 != nil || err2 != nil {
		return trace.SpanContext{}
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true})
}

// otelAttr converts an attribute.
func otelAttr(a Attr) attribute.KeyValue {
	switch a.Value.Kind() {
	case KindInt:
		return attribute.Int64(a.Key, a.Value.Int())
	case KindBool:
		return attribute.Bool(a.Key, a.Value.Bool())
	case KindStrings:
		return attribute.StringSlice(a.Key, a.Value.Strings())
	}
	return attribute.String(a.Key, a.Value.Str())
}

// Shutdown stops the pipeline and the OTLP exporter, and unregisters the
// metrics. Run must have returned.
func (e *Exporter) Shutdown(ctx context.Context) error {
	var err error
	e.shutdownOnce.Do(func() {
		for _, c := range e.cols {
			e.opts.Registerer.Unregister(c)
		}
		err = errors.Join(e.lp.Shutdown(ctx), e.exp.Shutdown(ctx))
	})
	return err
}

func (e *Exporter) loadCursor() (cursor, error) {
	b, err := os.ReadFile(e.path)
	if errors.Is(err, os.ErrNotExist) {
		return cursor{JournalID: e.j.ID()}, nil
	}
	if err != nil {
		return cursor{}, fmt.Errorf("audit export cursor: %w", err)
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return cursor{}, fmt.Errorf("audit export cursor %s: %w", e.path, err)
	}
	if c.JournalID != e.j.ID() {
		return cursor{}, fmt.Errorf("audit export cursor %s is for journal %q, not %q", e.path, c.JournalID, e.j.ID())
	}
	return c, nil
}

func (e *Exporter) saveCursor(c cursor) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return writeFileSync(e.path, append(b, '\n'), 0o600)
}

// captureProcessor keeps what the logger emits, for one synchronous
// export.
type captureProcessor struct {
	records []sdklog.Record
}

func (p *captureProcessor) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }

func (p *captureProcessor) OnEmit(_ context.Context, r *sdklog.Record) error {
	p.records = append(p.records, r.Clone())
	return nil
}

func (p *captureProcessor) Shutdown(context.Context) error   { return nil }
func (p *captureProcessor) ForceFlush(context.Context) error { return nil }

// tailReader reads the records of a journal directory in order, from seq
// next on, keeping its place between calls.
type tailReader struct {
	root     string
	next     uint64 // seq of the next record to return
	f        *os.File
	lr       *lineReader
	segFirst uint64   // first seq of the open segment
	segNext  uint64   // first seq of the next segment, 0 if unknown
	pending  []Record // records read but not exported (unread)
	reread   bool     // the reader was reset at the end of what it read
}

// reset drops what the line reader read ahead and reads on from off.
func (tr *tailReader) reset(off int64) error {
	if _, err := tr.f.Seek(off, io.SeekStart); err != nil {
		tr.close()
		return fmt.Errorf("audit export: %w", err)
	}
	tr.lr.r.Reset(tr.f)
	tr.lr.off = off
	tr.reread = true
	return nil
}

// read returns up to max records with seq next.. up to upTo (durable, so
// complete on disk).
func (tr *tailReader) read(limit int, upTo uint64) ([]Record, error) {
	out := tr.pending
	tr.pending = nil
	if len(out) > limit {
		tr.pending, out = out[limit:], out[:limit]
	}
	for len(out) < limit && tr.next <= upTo {
		if tr.lr == nil || (tr.segNext != 0 && tr.next >= tr.segNext) {
			if err := tr.open(); err != nil {
				return nil, err
			}
		}
		line, off, complete, err := tr.lr.next()
		if errors.Is(err, io.EOF) || (err == nil && (!complete || tr.lr.zeros > 0)) {
			if !tr.reread {
				// What was read ahead may predate the record: the
				// segment's reserve, or a record being written. Read the
				// file again from here.
				if err := tr.reset(off); err != nil {
					return nil, err
				}
				continue
			}
			// A durable record not in this segment: it is in one created
			// since (rotation).
			tr.reread = false
			cur := tr.segFirst
			if err := tr.open(); err != nil {
				return nil, err
			}
			if tr.segFirst == cur {
				tr.close()
				return nil, fmt.Errorf("audit export: seq %d is durable but not on disk", tr.next)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("audit export: %w", err)
		}
		tr.reread = false
		r, err := DecodeRecord(line)
		if err != nil {
			tr.close()
			return nil, fmt.Errorf("audit export: %w", err)
		}
		if r.Seq < tr.next {
			continue
		}
		if r.Seq != tr.next {
			tr.close()
			return nil, fmt.Errorf("audit export: found seq %d where seq %d belongs", r.Seq, tr.next)
		}
		out = append(out, r)
		tr.next++
	}
	return out, nil
}

// unread gives back records whose export failed; the next read starts with
// them.
func (tr *tailReader) unread(recs []Record) {
	tr.pending = append(append([]Record(nil), recs...), tr.pending...)
}

// open opens the segment holding tr.next.
func (tr *tailReader) open() error {
	tr.close()
	segs, err := listSegments(tr.root)
	if err != nil {
		return err
	}
	i := -1
	for k, s := range segs {
		if s.first <= tr.next {
			i = k
		}
	}
	if i < 0 {
		return fmt.Errorf("audit export: no segment holds seq %d", tr.next)
	}
	f, err := os.Open(segs[i].path)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	tr.f, tr.lr, tr.segFirst, tr.segNext = f, newLineReader(f), segs[i].first, 0
	if i+1 < len(segs) {
		tr.segNext = segs[i+1].first
	}
	return nil
}

func (tr *tailReader) close() {
	if tr.f != nil {
		tr.f.Close()
	}
	tr.f, tr.lr = nil, nil
}
