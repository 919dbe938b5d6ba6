package pgfilter

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/custos-dev/custos/internal/authn"
)

// errNoAnswer ends a connection in its startup phase without an answer:
// the client left, a cancel request was served, or the client is not
// one custos can answer.
var errNoAnswer = errors.New("connection closed without an answer")

// connRefusal describes a connection refused in its startup phase: what
// custos counts, logs and records of it, and what the client is told.
// Every such refusal goes through handshake.refuse.
type connRefusal struct {
	// metric is the label counted on the connections metric, or on the
	// authentication failures metric when authFailure is set; "" counts
	// nothing.
	metric      string
	authFailure bool
	// gate counts the refusal against the client's address (authGate):
	// refused tokens and principals over their bounds do.
	gate bool
	// level, log and attrs are the log line ("" logs none): on the
	// session's logger when session is set, else on the handshake's.
	level slog.Level
	log   string
	attrs []any
	// event is the kind of audit event recorded ("" records none): its
	// Reason, Principal (the session's when session is set), Session
	// and Err.
	event     SessionEventKind
	reason    string
	principal *authn.Principal
	session   *session
	cause     error
	// hold delays the answer by up to that long (authGate.hold);
	// beforeAnswer runs once the refusal is recorded, before the answer.
	hold         time.Duration
	beforeAnswer func()
	// code, message and hint are the client's FATAL ErrorResponse. With
	// no code, err is the answer: a ready-made clientError, or another
	// error, which closes the connection without an answer, as does a
	// refusal with neither.
	code, message, hint string
	err                 error
}

// refuse counts, logs and records r, in that order, and returns the
// error that ends the connection (handle sends its ErrorResponse, if it
// is a clientError, and closes).
func (hs *handshake) refuse(ctx context.Context, r connRefusal) error {
	s := hs.srv
	if r.metric != "" {
		counter := s.metrics.connections
		if r.authFailure {
			counter = s.metrics.authFailures
		}
		counter.WithLabelValues(r.metric).Inc()
	}
	if r.gate {
		s.gate.failed(hs.clientAddr)
	}
	if r.log != "" {
		log := hs.log
		if r.session != nil {
			log = r.session.log
		}
		log.Log(ctx, r.level, r.log, r.attrs...)
	}
	if r.event != "" {
		p := r.principal
		if p == nil && r.session != nil {
			p = r.session.Principal
		}
		_ = hs.event(r.event, r.reason, p, r.session, r.cause)
	}
	if r.hold > 0 {
		s.gate.hold(ctx, r.hold)
	}
	if r.beforeAnswer != nil {
		r.beforeAnswer()
	}
	switch {
	case r.code != "":
		return fatalHint(r.code, r.message, r.hint)
	case r.err != nil:
		return r.err
	}
	return errNoAnswer
}
