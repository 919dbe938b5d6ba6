package pgfilter

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// SpanSession is the name of the span that covers one client session.
const SpanSession = "pg.session"

// startSpan starts the session's pg.session span when the server has a
// tracer: once per session, after authentication, never per message.
func (ss *session) startSpan() {
	tr := ss.srv.opts.Tracer
	if tr == nil {
		return
	}
	host, port := splitAddr(ss.ClientAddr)
	attrs := []attribute.KeyValue{
		attribute.String("db.system.name", "postgresql"),
		attribute.String("db.namespace", ss.Resource.Database),
		attribute.String("user.id", ss.Principal.Subject),
		attribute.String("client.address", host),
		attribute.Int("client.port", port),
		attribute.String("custos.session_id", ss.ID),
		attribute.String("custos.resource", ss.Resource.Name),
		attribute.Bool("custos.tls", ss.TLS),
	}
	if ss.Principal.Act != nil {
		attrs = append(attrs, attribute.String("enduser.id", ss.Principal.Act.Subject))
	}
	if app := ss.Params["application_name"]; app != "" {
		attrs = append(attrs, attribute.String("custos.pg.application_name", app))
	}
	_, ss.span = tr.Start(context.Background(), SpanSession,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(ss.Started),
		trace.WithAttributes(attrs...))
}

// endSpan ends the session's span with how the session ended: err is
// nil, or a client's goodbye, for a normal end.
func (ss *session) endSpan(err error) {
	if ss.span == nil {
		return
	}
	reason := closeReason(err)
	if reason != "client_closed" {
		ss.span.SetStatus(codes.Error, reason)
	}
	attrs := []attribute.KeyValue{
		attribute.String("custos.connection.close_reason", reason),
		attribute.Int64("custos.messages_in", int64(ss.msgs[ClientToServer])),
		attribute.Int64("custos.messages_out", int64(ss.msgs[ServerToClient])),
	}
	if ss.masker != nil {
		attrs = append(attrs,
			attribute.Int64("custos.masked_pans", int64(ss.masker.counts.PANs)),
			attribute.Int64("custos.removed_sad", int64(ss.masker.counts.SAD)))
	}
	ss.span.SetAttributes(attrs...)
	ss.span.End()
	ss.span = nil
}
