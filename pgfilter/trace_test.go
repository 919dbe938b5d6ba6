package pgfilter_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
)

func TestSessionSpan(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	env := pgfiltertest.Start(t, pgfiltertest.Options{Tracer: tp.Tracer("test")})
	tok := env.Mint(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}, Act: "alice@example.com"})

	// A refused token starts no session, so no span.
	if e := connectErr(t, env.ConnString("alice", "hunter2")); e.Code != "28P01" {
		t.Fatalf("bad token: %s %s", e.Code, e.Message)
	}
	c := connect(t, env.ConnString("alice", tok, "application_name=span-test"))
	if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Started()); n != 1 {
		t.Fatalf("%d spans started during the session, want 1", n)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans ended while the session runs, want 0", n)
	}
	_ = c.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.Ended()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1", len(ended))
	}
	s := ended[0]
	if s.Name() != pgfilter.SpanSession || s.SpanKind() != trace.SpanKindServer {
		t.Errorf("span %q kind %v, want %q server", s.Name(), s.SpanKind(), pgfilter.SpanSession)
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	want := map[string]string{
		"user.id":                        "alice",
		"enduser.id":                     "alice@example.com",
		"client.address":                 "127.0.0.1",
		"db.namespace":                   env.Resource.Database,
		"db.system.name":                 "postgresql",
		"custos.resource":                env.Resource.Name,
		"custos.pg.application_name":     "span-test",
		"custos.connection.close_reason": "client_closed",
	}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, attrs[k], v)
		}
	}
	if len(attrs["custos.session_id"]) != 24 {
		t.Errorf("custos.session_id = %q, want a session id", attrs["custos.session_id"])
	}
}
