package extproc

import (
	"context"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
)

// Span names.
const (
	// SpanCheck covers one HTTP request decided by Check.
	SpanCheck = "ext_authz.check"
	// SpanProcess covers one ext_proc stream: a request and its response.
	SpanProcess = "ext_proc.process"
)

// propagator returns the configured propagator, W3C trace context by
// default.
func (s *Server) propagator() propagation.TextMapPropagator {
	if s.opts.Propagator != nil {
		return s.opts.Propagator
	}
	return propagation.TraceContext{}
}

// checkSpan starts the span of an HTTP Check, continuing the trace of the
// traceparent Envoy forwards; headers are h's (checkHeaders). Only called
// with a tracer.
func (s *Server) checkSpan(ctx context.Context, h *authv3.AttributeContext_HttpRequest, headers map[string]string) (context.Context, trace.Span) {
	ctx = s.propagator().Extract(ctx, propagation.MapCarrier(headers))
	method, path := requestLine(h, headers)
	return s.opts.Tracer.Start(ctx, SpanCheck, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", method),
			attribute.String("url.path", s.maskText(pathOnly(path))),
			attribute.String("custos.request_id", requestID(h, headers)),
		))
}

// endCheckSpan ends a Check span with the answer given to Envoy.
func endCheckSpan(span trace.Span, resp *authv3.CheckResponse) {
	code := codes.Code(resp.GetStatus().GetCode())
	attrs := []attribute.KeyValue{attribute.String("custos.check.result", code.String())}
	if d := resp.GetDeniedResponse(); d != nil {
		attrs = append(attrs, attribute.Int("http.response.status_code", int(d.GetStatus().GetCode())))
		span.SetStatus(otelcodes.Error, code.String())
	}
	span.SetAttributes(attrs...)
	span.End()
}

// headerCarrier reads ext_proc request headers for the propagator.
type headerCarrier []*corev3.HeaderValue

func (c headerCarrier) Get(k string) string { return headerGet(c, k) }
func (c headerCarrier) Set(string, string)  {}
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for _, h := range c {
		keys = append(keys, h.GetKey())
	}
	return keys
}

// startSpan starts the stream's span at its request headers, continuing
// the trace of the traceparent Envoy forwards, and makes it the stream's
// context (audit records carry its ids). No-op without a tracer.
func (st *procStream) startSpan(hs []*corev3.HeaderValue) {
	tr := st.s.opts.Tracer
	if tr == nil || st.span != nil {
		return
	}
	ctx := st.s.propagator().Extract(st.ctx, headerCarrier(hs))
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", st.method),
		attribute.String("url.path", st.s.maskText(pathOnly(st.path))),
		attribute.String("custos.request_id", st.requestID),
	}
	st.ctx, st.span = tr.Start(ctx, SpanProcess, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(st.started), trace.WithAttributes(attrs...))
}

// spanGrant names the verified grant's principal, decision and resource on
// the stream's span.
func (st *procStream) spanGrant() {
	if g := st.grant; g != nil && st.span != nil {
		st.span.SetAttributes(attribute.String("user.id", g.Sub), attribute.String("custos.decision_id", g.DecisionID),
			attribute.String("custos.resource", g.Resource))
	}
}

// endSpan ends the stream's span with the response status and masking.
func (st *procStream) endSpan() {
	if st.span == nil {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.Int64("custos.masked_pans", int64(st.masked.PANs)),
		attribute.Int64("custos.removed_sad", int64(st.masked.SAD)),
	}
	if code, err := strconv.Atoi(st.resp.status); err == nil {
		attrs = append(attrs, attribute.Int("http.response.status_code", code))
	}
	if st.approvalID != "" {
		attrs = append(attrs, attribute.String("custos.approval_id", st.approvalID))
	}
	st.span.SetAttributes(attrs...)
	st.span.End()
}
