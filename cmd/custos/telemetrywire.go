package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/telemetry"
)

// tracingShutdownTimeout bounds flushing the last spans at shutdown.
const tracingShutdownTimeout = 5 * time.Second

// tracing is the trace pipeline of serve and dev: spans of Postgres
// sessions (pgfilter) and of Envoy's callouts (extproc) go over OTLP when
// an endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); otherwise nothing is traced. A nil
// *tracing is off.
type tracing struct {
	t   *telemetry.Tracing
	log *slog.Logger
}

// openTracing builds the pipeline the OTEL_* variables configure; getenv
// reads them (os.Getenv outside tests).
func openTracing(ctx context.Context, log *slog.Logger, getenv func(string) string) (*tracing, error) {
	t, err := telemetry.NewTracing(ctx, getenv)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "tracing configured", t.LogAttrs(getenv)...)
	return &tracing{t: t, log: log}, nil
}

// tracer is what components take: nil when tracing is off, so they skip
// spans altogether.
func (tr *tracing) tracer() trace.Tracer {
	if tr == nil {
		return nil
	}
	return tr.t.Tracer()
}

// propagator continues the traces Envoy forwards (W3C trace context).
func (tr *tracing) propagator() propagation.TextMapPropagator {
	if tr == nil {
		return propagation.TraceContext{}
	}
	return tr.t.Propagator()
}

// shutdown flushes the spans still buffered. Call it once everything that
// starts spans has stopped.
func (tr *tracing) shutdown() {
	if tr == nil || !tr.t.Enabled() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
	defer cancel()
	if err := tr.t.Shutdown(ctx); err != nil {
		tr.log.Warn("tracing shutdown failed: spans may be lost", "error", err.Error())
	}
}
