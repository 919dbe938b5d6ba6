package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestTracingEnabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, true},
		{"logs endpoint only", map[string]string{"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://collector:4318/v1/logs"}, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{"exporter otlp", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "OTEL_TRACES_EXPORTER": "otlp"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := TracingEnabled(env(tt.env)); got != tt.want {
				t.Errorf("TracingEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewTracingOff(t *testing.T) {
	t.Parallel()
	tr, err := NewTracing(context.Background(), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() || tr.Tracer() != nil {
		t.Fatalf("tracing on without an endpoint: enabled=%v tracer=%v", tr.Enabled(), tr.Tracer())
	}
	if _, ok := tr.Propagator().(propagation.TraceContext); !ok {
		t.Errorf("propagator = %T, want propagation.TraceContext", tr.Propagator())
	}
	// The no-op provider still hands out (no-op) tracers.
	_, span := tr.TracerProvider().Tracer("x").Start(context.Background(), "s")
	if span.IsRecording() {
		t.Error("no-op span records")
	}
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestNewTracingRefusesUnknown(t *testing.T) {
	t.Parallel()
	_, err := NewTracing(context.Background(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
	}))
	if !errors.Is(err, ErrProtocol) {
		t.Errorf("protocol http/json: err = %v, want ErrProtocol", err)
	}
	_, err = NewTracing(context.Background(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "zipkin",
	}))
	if !errors.Is(err, ErrExporter) {
		t.Errorf("exporter zipkin: err = %v, want ErrExporter", err)
	}
}

func TestTracesProtocol(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{nil, "http/protobuf"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "http/protobuf"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": " GRPC "}, "grpc"},
	}
	for _, tt := range tests {
		if got := tracesProtocol(env(tt.env)); got != tt.want {
			t.Errorf("tracesProtocol(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

// TestNewTracingExportsHTTP sends a span to an OTLP/HTTP endpoint and
// checks it arrives when the provider shuts down.
func TestNewTracingExportsHTTP(t *testing.T) {
	// Not parallel: the exporter reads OTEL_* from the process environment.
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			_, _ = io.Copy(io.Discard, r.Body)
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	vars := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	tr, err := NewTracing(context.Background(), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() || tr.Tracer() == nil {
		t.Fatal("tracing off with an endpoint set")
	}
	// A traceparent from upstream is continued.
	carrier := propagation.MapCarrier{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	ctx := tr.Propagator().Extract(context.Background(), carrier)
	_, span := tr.Tracer().Start(ctx, "test.span", trace.WithSpanKind(trace.SpanKindServer))
	if got := span.SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace id = %s, want the incoming one", got)
	}
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if posts.Load() == 0 {
		t.Error("no OTLP trace export arrived")
	}
}

func TestResourceServiceName(t *testing.T) {
	t.Parallel()
	res, err := Resource(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range res.Attributes() {
		if kv.Key == "service.name" {
			if kv.Value.AsString() == "" {
				t.Error("empty service.name")
			}
			return
		}
	}
	t.Error("no service.name in the resource")
}
