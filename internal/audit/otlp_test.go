package audit

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/protobuf/proto"
)

// receiver is an OTLP logs collector: it remembers every record by
// log.record.uid.
type receiver struct {
	collogspb.UnimplementedLogsServiceServer
	mu      sync.Mutex
	byUID   map[string]*logspb.LogRecord
	resends int // records received again
	service string
	schema  string
}

func newReceiver() *receiver { return &receiver{byUID: map[string]*logspb.LogRecord{}} }

func (rc *receiver) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	rc.take(req)
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func (rc *receiver) take(req *collogspb.ExportLogsServiceRequest) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		for _, a := range rl.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				rc.service = a.GetValue().GetStringValue()
			}
		}
		for _, sl := range rl.GetScopeLogs() {
			rc.schema = sl.GetSchemaUrl()
			for _, lr := range sl.GetLogRecords() {
				uid := attrOf(lr, AttrLogRecordUID)
				if prev, ok := rc.byUID[uid]; ok {
					rc.resends++
					if attrOf(prev, AttrJournalHash) != attrOf(lr, AttrJournalHash) {
						panic("uid " + uid + " re-sent with other content")
					}
				}
				rc.byUID[uid] = lr
			}
		}
	}
}

func attrOf(lr *logspb.LogRecord, key string) string {
	for _, a := range lr.GetAttributes() {
		if a.GetKey() == key {
			if s := a.GetValue().GetStringValue(); s != "" {
				return s
			}
			return fmt.Sprint(a.GetValue().GetIntValue())
		}
	}
	return ""
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.byUID)
}

// grpcCollector serves rc on addr ("127.0.0.1:0" for a new port).
func grpcCollector(t *testing.T, rc *receiver, addr string) (*grpc.Server, string) {
	t.Helper()
	var lis net.Listener
	var err error
	for range 50 { // the port of a stopped server may take a moment to free
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(srv, rc)
	go func() { _ = srv.Serve(lis) }()
	return srv, lis.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// appendN appends n statements.
func appendN(t *testing.T, j *Journal, n int) {
	t.Helper()
	for i := range n {
		if _, err := j.Append(context.Background(), statement(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// runExporter starts an Exporter; the returned func stops it.
func runExporter(t *testing.T, opts ExporterOptions) (*Exporter, func()) {
	t.Helper()
	opts.BatchSize, opts.PollInterval = 16, 20*time.Millisecond
	opts.MinBackoff, opts.MaxBackoff, opts.ExportTimeout = 20*time.Millisecond, 200*time.Millisecond, 2*time.Second
	e, err := NewExporter(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	return e, func() {
		cancel()
		<-done
		if err := e.Shutdown(context.Background()); err != nil {
			t.Log("shutdown:", err)
		}
	}
}

func TestExporterGRPCOutage(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{CheckpointInterval: time.Hour})
	rc := newReceiver()
	srv, addr := grpcCollector(t, rc, "127.0.0.1:0")
	newExp := func() sdklog.Exporter {
		exp, err := otlploggrpc.New(context.Background(), otlploggrpc.WithEndpoint(addr), otlploggrpc.WithInsecure(),
			otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false}),
			otlploggrpc.WithDialOption(grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 300 * time.Millisecond}})))
		if err != nil {
			t.Fatal(err)
		}
		return exp
	}
	reg := prometheus.NewRegistry()
	appendN(t, j, 40)
	e, stop := runExporter(t, ExporterOptions{Journal: j, Exporter: newExp(), Registerer: reg, BacklogWarning: 30})
	waitFor(t, "the first records", func() bool { return rc.count() == int(j.DurableSeq()) })

	// The collector goes away; records keep coming.
	srv.Stop()
	appendN(t, j, 60)
	waitFor(t, "failed exports", func() bool { return metricValue(t, reg, "custos_audit_export_failures_total") >= 2 })
	if b := e.Backlog(); b < 60 || metricValue(t, reg, "custos_audit_export_backlog_records") < 60 {
		t.Fatalf("backlog %d during the outage", b)
	}
	time.Sleep(300 * time.Millisecond)

	// It comes back on the same address: everything arrives.
	srv2, _ := grpcCollector(t, rc, addr)
	defer srv2.Stop()
	waitFor(t, "every record after the outage", func() bool { return e.Backlog() == 0 && rc.count() == int(j.DurableSeq()) })
	stop()

	id := j.ID()
	for seq := uint64(1); seq <= j.DurableSeq(); seq++ {
		rc.mu.Lock()
		lr := rc.byUID[UID(id, seq)]
		rc.mu.Unlock()
		if lr == nil {
			t.Fatalf("record %d never arrived", seq)
		}
	}
	if err := ReadRecords(context.Background(), j.opts.DataDir, 1, func(r *Record) error {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		lr := rc.byUID[UID(id, r.Seq)]
		if lr == nil || attrOf(lr, AttrJournalHash) != r.Hash.String() || lr.GetEventName() != r.Name ||
			lr.GetTimeUnixNano() != uint64(r.Time.UnixNano()) || int(lr.GetSeverityNumber()) != int(r.Severity) {
			return fmt.Errorf("record %d arrived as %v", r.Seq, lr)
		}
		if r.Name == EventStatement && (attrOf(lr, AttrUserID) != "alice" || attrOf(lr, AttrDBOperationName) != "SELECT") {
			return fmt.Errorf("record %d attributes %v", r.Seq, lr.GetAttributes())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rc.service != "custos" || rc.schema != SemconvSchemaURL {
		t.Errorf("resource service %q, schema %q", rc.service, rc.schema)
	}
	// The outage crossed the backlog warning, and its end was recorded.
	var backlogEvents []string
	_ = ReadRecords(context.Background(), j.opts.DataDir, 1, func(r *Record) error {
		if r.Name == EventAuditBacklog {
			o, _ := r.Attr(AttrOutcome)
			backlogEvents = append(backlogEvents, o.Str())
		}
		return nil
	})
	if len(backlogEvents) != 2 || backlogEvents[0] != "failure" || backlogEvents[1] != "success" {
		t.Errorf("backlog events %v", backlogEvents)
	}

	// A new exporter continues from the persisted cursor.
	before := rc.count()
	resends := rc.resends
	appendN(t, j, 5)
	e2, stop2 := runExporter(t, ExporterOptions{Journal: j, Exporter: newExp()})
	// Until the exporter has its answer too: the collector holds the
	// records before the exporter counts them.
	waitFor(t, "records after a restart", func() bool { return rc.count() == int(j.DurableSeq()) && e2.Exported() >= 5 })
	stop2()
	if rc.count() != before+5 || rc.resends != resends || e2.Exported() != 5 {
		t.Fatalf("after restart: %d records (want %d), %d re-sent, exported %d", rc.count(), before+5, rc.resends-resends, e2.Exported())
	}
}

func TestExporterHTTPOutage(t *testing.T) {
	t.Parallel()
	j := openTest(t, Options{CheckpointInterval: time.Hour, SegmentBytes: 4 << 10})
	rc := newReceiver()
	var down atomic.Bool
	var refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/logs" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if down.Load() {
			refused.Add(1)
			http.Error(w, "collector restarting", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req collogspb.ExportLogsServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.take(&req)
		out, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	defer srv.Close()
	down.Store(true)
	exp, err := otlploghttp.New(context.Background(), otlploghttp.WithEndpointURL(srv.URL+"/v1/logs"),
		otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: false}))
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, j, 30)
	e, stop := runExporter(t, ExporterOptions{Journal: j, Exporter: exp})
	defer stop()
	waitFor(t, "refused exports", func() bool { return refused.Load() >= 3 })
	appendN(t, j, 50) // rotates segments under the reader
	down.Store(false)
	waitFor(t, "every record", func() bool { return e.Backlog() == 0 && rc.count() == int(j.DurableSeq()) })
	if rc.count() != 81 {
		t.Fatalf("%d records", rc.count())
	}
}

func TestOTLPProtocol(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  map[string]string
		want string
	}{
		{nil, "http/protobuf"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"}, "http/protobuf"},
		{map[string]string{"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": " GRPC "}, "grpc"},
	}
	for _, tc := range cases {
		if got := otlpProtocol(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("otlpProtocol(%v) = %q, want %q", tc.env, got, tc.want)
		}
	}
	if _, err := NewOTLPLogExporter(context.Background(), func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}[k]
	}); err == nil {
		t.Error("http/json accepted")
	}
}
