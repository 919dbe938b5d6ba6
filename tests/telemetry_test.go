package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/custos-dev/custos/internal/pgcluster"
)

// jaegerTrace is the part of the query API's /api/traces answer the test
// reads.
type jaegerTrace struct {
	TraceID string       `json:"traceID"`
	Spans   []jaegerSpan `json:"spans"`
}

type jaegerSpan struct {
	OperationName string `json:"operationName"`
	Tags          []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

// tags returns the span's tags, their values formatted.
func (s jaegerSpan) tags() map[string]string {
	tags := make(map[string]string, len(s.Tags))
	for _, tag := range s.Tags {
		tags[tag.Key] = fmt.Sprint(tag.Value)
	}
	return tags
}

// TestTelemetryToJaeger runs `custos dev` against a real Jaeger v2: the
// session's pg.session span must arrive over OTLP/gRPC with its
// attributes, and the audit journal's records as OTLP/HTTP logs.
func TestTelemetryToJaeger(t *testing.T) {
	t.Parallel()
	j := startJaeger(t)
	bin := buildCustos(t, t.TempDir())
	binDir, _ := pgcluster.FindBinDir()
	psqlBin := findPgProgram(t, binDir, "psql")

	dataDir := devDataDir(t, "custos-e2e-telemetry-")

	// Traces over gRPC, logs over HTTP: both receivers, both exporters.
	p := startDev(t, bin, dataDir,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+j.otlpGRPC,
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://"+j.otlpHTTP+"/v1/logs",
		"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=http/protobuf",
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_SERVICE_NAME=",
		"OTEL_RESOURCE_ATTRIBUTES=",
	)
	vars := p.waitEnv(t, dataDir)

	token := mintToken(t, bin, dataDir, "alice", "agents")
	conn := fmt.Sprintf("host=%s port=%s dbname=%s user=alice sslmode=verify-full sslrootcert=%s application_name=telemetry-test",
		vars["CUSTOS_PG_HOST"], vars["CUSTOS_PG_PORT"], vars["CUSTOS_DATABASE"], vars["CUSTOS_CA_FILE"])
	r := run(t, clientEnviron("PGPASSWORD="+token), nil, psqlBin,
		"-X", "--no-password", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-d", conn, "-c", "SELECT count(*) FROM cards")
	if r.code != 0 {
		t.Fatalf("psql through custos: %s", r)
	}
	// An HTTP Check as Envoy sends it, inside a trace Envoy started.
	const envoyTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	cc := dialEnvoy(t, vars, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	resp, err := authv3.NewAuthorizationClient(cc).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: sockAddr("127.0.0.1", 40000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/customers", Host: "api.example.com", Scheme: "https",
			Headers: map[string]string{":method": "GET", ":path": "/v1/customers", ":authority": "api.example.com",
				"authorization": "Bearer " + token, "traceparent": "00-" + envoyTraceID + "-00f067aa0ba902b7-01"},
		}},
	}})
	cancel()
	_ = cc.Close()
	if err != nil || resp.GetStatus().GetCode() != 0 {
		t.Fatalf("Check: %v %v", resp, err)
	}
	// Stopping custos flushes its spans and drains the audit export.
	p.stop(t)

	t.Run("pg.session span", func(t *testing.T) {
		waitListed(t, j, "/api/services", "custos")
		traces := waitTraces(t, j, "a pg.session trace", custosTraces("pg.session"))
		var tags map[string]string
		for _, tr := range traces {
			for _, s := range tr.Spans {
				if s.OperationName == "pg.session" {
					tags = s.tags()
				}
			}
		}
		if tags == nil {
			t.Fatalf("no pg.session span in %+v", traces)
		}
		want := map[string]string{
			"user.id":                        "alice",
			"client.address":                 "127.0.0.1",
			"db.namespace":                   vars["CUSTOS_DATABASE"],
			"db.system.name":                 "postgresql",
			"custos.pg.application_name":     "telemetry-test",
			"custos.connection.close_reason": "client_closed",
			"span.kind":                      "server",
		}
		for k, v := range want {
			if tags[k] != v {
				t.Errorf("pg.session tag %s = %q, want %q (tags: %v)", k, tags[k], v, tags)
			}
		}
		if tags["custos.session_id"] == "" || tags["custos.resource"] == "" {
			t.Errorf("pg.session lacks custos.session_id or custos.resource: %v", tags)
		}
	})

	t.Run("pg.statement span and its record", func(t *testing.T) {
		traces := waitTraces(t, j, "a pg.statement trace", custosTraces("pg.statement"))
		var traceID string
		var tags map[string]string
		ops := map[string]bool{}
		for _, tr := range traces {
			for _, s := range tr.Spans {
				ops[s.OperationName] = true
				if s.OperationName == "pg.statement" {
					traceID, tags = tr.TraceID, s.tags()
				}
			}
		}
		// The statement, its parts and the session are one trace.
		for _, op := range []string{"pg.session", "custos.policy.decide", "pg.upstream", "custos.mask"} {
			if !ops[op] {
				t.Errorf("no %s span in the statement's trace: %v", op, ops)
			}
		}
		want := map[string]string{
			"db.query.text":     "SELECT count(*) FROM cards",
			"db.operation.name": "SELECT",
			"custos.decision":   "allow",
			"custos.outcome":    "success",
			"custos.rows":       "1",
		}
		for k, v := range want {
			if tags[k] != v {
				t.Errorf("pg.statement tag %s = %q, want %q (tags: %v)", k, tags[k], v, tags)
			}
		}
		// The journal's statement record, exported as a log, carries the
		// same trace id.
		waitFor(t, "custos.db.statement in Jaeger's log output", j, func() bool {
			return strings.Contains(j.out.String(), "custos.db.statement")
		})
		if out := j.out.String(); traceID == "" || !strings.Contains(out, "Trace ID: "+traceID) {
			t.Errorf("no log record with trace id %s in Jaeger's log output; it ends with:\n%s", traceID, j.out.tail(60))
		}
	})

	t.Run("Envoy's Check in Envoy's trace", func(t *testing.T) {
		ops := map[string]bool{}
		for _, d := range waitTraces(t, j, "Envoy's trace", "/api/traces/"+envoyTraceID) {
			for _, s := range d.Spans {
				ops[s.OperationName] = true
			}
		}
		if !ops["ext_authz.check"] {
			t.Errorf("no ext_authz.check span in Envoy's trace: %v", ops)
		}
	})

	t.Run("gRPC server spans", func(t *testing.T) {
		waitListed(t, j, "/api/services/custos/operations", "envoy.service.auth.v3.Authorization/Check")
	})

	t.Run("audit records as OTLP logs", func(t *testing.T) {
		// The debug exporter prints each record through Jaeger's log.
		for _, want := range []string{"custos.auth.succeeded", "custos.connection.opened", "custos.connection.closed", "custos.audit.stopped"} {
			waitFor(t, want+" in Jaeger's log output", j, func() bool { return strings.Contains(j.out.String(), want) })
		}
		out := j.out.String()
		for _, want := range []string{"user.id: Str(alice)", "service.name: Str(custos)", "custos.session_id: Str("} {
			if !strings.Contains(out, want) {
				t.Errorf("Jaeger's log output lacks %q; it ends with:\n%s", want, j.out.tail(60))
			}
		}
	})
}

// custosTraces is the query path of custos' recent traces of an operation.
func custosTraces(operation string) string {
	q := url.Values{"service": {"custos"}, "operation": {operation}, "lookback": {"1h"}, "limit": {"20"}}
	return "/api/traces?" + q.Encode()
}

// waitTraces waits until Jaeger's query API answers path with traces, and
// returns them.
func waitTraces(t *testing.T, j *jaeger, what, path string) []jaegerTrace {
	t.Helper()
	var traces struct {
		Data []jaegerTrace `json:"data"`
	}
	waitFor(t, what+" in Jaeger's "+path, j, func() bool {
		code, body, err := j.get(path)
		return err == nil && code == http.StatusOK && json.Unmarshal(body, &traces) == nil && len(traces.Data) > 0
	})
	return traces.Data
}

// waitListed waits until the list Jaeger's query API answers at path (its
// services, a service's operations) holds want.
func waitListed(t *testing.T, j *jaeger, path, want string) {
	t.Helper()
	waitFor(t, want+" in Jaeger's "+path, j, func() bool {
		var list struct {
			Data []string `json:"data"`
		}
		code, body, err := j.get(path)
		return err == nil && code == http.StatusOK && json.Unmarshal(body, &list) == nil && slices.Contains(list.Data, want)
	})
}

// waitFor polls cond for up to 30 seconds.
func waitFor(t *testing.T, what string, j *jaeger, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s; Jaeger's output ends with:\n%s", what, j.out.tail(60))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
