package extproc_test

import (
	"net/http"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/custos-dev/custos/extproc"
	"github.com/custos-dev/custos/internal/audit"
)

func TestSpansContinueEnvoysTrace(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	audits := &recorder{}
	e := newEnv(t, envOptions{upstream: bodies(t), audit: audits, tracer: tp.Tracer("test")})
	const (
		traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		parent  = "00f067aa0ba902b7"
	)
	h := bearer(e.token(t, "alice", "agents"))
	h.Set("traceparent", "00-"+traceID+"-"+parent+"-01")
	requireStatus(t, e.do(paymentsRoute(), request{method: "GET", path: "/nested?card=" + visa, header: h}), http.StatusOK)
	// A request without a traceparent starts its own trace.
	requireStatus(t, e.do(paymentsRoute(), request{method: "GET", path: "/nested"}), http.StatusUnauthorized)
	evs := audits.wait(t, 2)

	// The stream's span ends when its handler returns, which can be after
	// the request's record and the response reached the caller.
	var spans map[string][]sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		spans = map[string][]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			spans[s.Name()] = append(spans[s.Name()], s)
		}
		if len(spans[extproc.SpanCheck]) >= 2 && len(spans[extproc.SpanProcess]) >= 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(spans[extproc.SpanCheck]) != 2 || len(spans[extproc.SpanProcess]) != 1 {
		t.Fatalf("spans: %d %s, %d %s; want 2 and 1", len(spans[extproc.SpanCheck]), extproc.SpanCheck,
			len(spans[extproc.SpanProcess]), extproc.SpanProcess)
	}
	attrs := func(s sdktrace.ReadOnlySpan) map[string]string {
		m := map[string]string{}
		for _, kv := range s.Attributes() {
			m[string(kv.Key)] = kv.Value.String()
		}
		return m
	}
	var continued, fresh int
	for _, s := range spans[extproc.SpanCheck] {
		a := attrs(s)
		switch s.SpanContext().TraceID().String() {
		case traceID:
			continued++
			if s.Parent().SpanID().String() != parent || !s.Parent().IsRemote() {
				t.Errorf("check span parent = %v, want remote %s", s.Parent().SpanID(), parent)
			}
			if a["http.request.method"] != "GET" || a["url.path"] != "/nested" || a["custos.check.result"] != "OK" {
				t.Errorf("allowed check span attributes: %v", a)
			}
		default:
			fresh++
			if a["http.response.status_code"] != "401" {
				t.Errorf("refused check span attributes: %v", a)
			}
		}
	}
	if continued != 1 || fresh != 1 {
		t.Errorf("check spans: %d continued the incoming trace, %d started one; want 1 and 1", continued, fresh)
	}
	p := spans[extproc.SpanProcess][0]
	if p.SpanContext().TraceID().String() != traceID || p.Parent().SpanID().String() != parent {
		t.Errorf("process span trace %s parent %s, want %s %s", p.SpanContext().TraceID(), p.Parent().SpanID(), traceID, parent)
	}
	a := attrs(p)
	if a["user.id"] != "alice" || a["http.response.status_code"] != "200" || a["custos.masked_pans"] == "0" {
		t.Errorf("process span attributes: %v", a)
	}
	// The request's audit record names the stream's span.
	var found bool
	for _, ev := range evs {
		if ev.Name == audit.EventHTTPRequest && ev.Outcome == audit.OutcomeSuccess {
			found = true
			if ev.TraceID != p.SpanContext().TraceID() || ev.SpanID != p.SpanContext().SpanID() {
				t.Errorf("audit record trace %s span %s, want %s %s", ev.TraceID, ev.SpanID,
					p.SpanContext().TraceID(), p.SpanContext().SpanID())
			}
		}
	}
	if !found {
		t.Errorf("no audit record of the allowed request: %+v", evs)
	}
}
