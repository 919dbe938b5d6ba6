// Package telemetry builds custos' OpenTelemetry trace pipeline from the
// standard OTEL_* variables.
//
// [NewTracing] returns a tracer provider exporting spans over OTLP (gRPC or
// HTTP) when an endpoint is set, and a no-op provider otherwise, together
// with the W3C trace-context propagator custos uses to continue the traces
// Envoy starts. Components take a trace.Tracer; a nil tracer means no spans
// and costs nothing.
//
// Variables read here (the exporters read the rest of OTEL_EXPORTER_OTLP_*
// themselves: headers, TLS, compression, timeout):
//
//	OTEL_TRACES_EXPORTER                      "none" turns tracing off; "otlp" (or empty) exports
//	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT        where spans go; falls back to
//	OTEL_EXPORTER_OTLP_ENDPOINT               (no endpoint: tracing off)
//	OTEL_EXPORTER_OTLP_TRACES_PROTOCOL        "grpc" or "http/protobuf" (default); falls back to
//	OTEL_EXPORTER_OTLP_PROTOCOL
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES  the resource (service.name defaults to custos)
//	OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG the sampler (default parentbased_always_on)
package telemetry
