package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ServiceName is the default service.name of custos' telemetry.
const ServiceName = "custos"

// ScopeName is the instrumentation scope of custos' spans.
const ScopeName = "github.com/custos-dev/custos"

// ErrProtocol: OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL names a protocol the
// trace exporter does not speak.
var ErrProtocol = errors.New("unsupported OTLP protocol")

// ErrExporter: OTEL_TRACES_EXPORTER names an exporter custos does not
// have.
var ErrExporter = errors.New("unsupported traces exporter")

// Tracing is custos' trace pipeline: a provider (no-op when tracing is
// off), its tracer and the propagator that continues incoming traces.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when off
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
}

// NewTracing builds the trace pipeline the standard variables configure
// (see the package documentation); getenv is os.Getenv outside tests.
// Without an endpoint, or with OTEL_TRACES_EXPORTER=none, tracing is off:
// the provider is a no-op and Enabled is false.
func NewTracing(ctx context.Context, getenv func(string) string) (*Tracing, error) {
	t := &Tracing{prop: propagation.TraceContext{}}
	if !TracingEnabled(getenv) {
		t.provider = noop.NewTracerProvider()
		t.tracer = t.provider.Tracer(ScopeName)
		return t, nil
	}
	switch e := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); e {
	case "", "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: %w: %q (want otlp or none)", ErrExporter, e)
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch p := tracesProtocol(getenv); p {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: %w: %q (want grpc or http/protobuf)", ErrProtocol, p)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res, err := Resource(ctx)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	t.sdk = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	t.provider = t.sdk
	t.tracer = t.sdk.Tracer(ScopeName)
	return t, nil
}

// TracingEnabled reports whether the variables turn tracing on: an OTLP
// endpoint for traces is set and OTEL_TRACES_EXPORTER is not "none".
func TracingEnabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")), "none") {
		return false
	}
	return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) != "" ||
		strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")) != ""
}

// tracesProtocol returns the protocol the variables select for traces.
func tracesProtocol(getenv func(string) string) string {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return strings.ToLower(v)
		}
	}
	return "http/protobuf"
}

// Resource describes custos: service.name=custos unless OTEL_SERVICE_NAME
// or OTEL_RESOURCE_ATTRIBUTES say otherwise, with the SDK's attributes.
func Resource(ctx context.Context) (*resource.Resource, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(ServiceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	// A partial resource (a malformed OTEL_RESOURCE_ATTRIBUTES entry) is
	// still usable: keep what was parsed.
	return res, nil
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t != nil && t.sdk != nil }

// Tracer returns the tracer for custos' spans, or nil when tracing is
// off: components skip spans altogether on a nil tracer.
func (t *Tracing) Tracer() trace.Tracer {
	if !t.Enabled() {
		return nil
	}
	return t.tracer
}

// TracerProvider returns the provider: the SDK's, or a no-op one.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Propagator returns the W3C trace-context propagator.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// Shutdown flushes the spans still buffered and stops the exporter. It is
// a no-op when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracer provider shutdown: %w", err)
	}
	return nil
}

// LogAttrs are the attributes that describe the pipeline in a log line.
func (t *Tracing) LogAttrs(getenv func(string) string) []slog.Attr {
	if !t.Enabled() {
		return []slog.Attr{slog.Bool("tracing", false)}
	}
	return []slog.Attr{slog.Bool("tracing", true), slog.String("protocol", tracesProtocol(getenv))}
}
