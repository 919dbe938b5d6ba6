package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/grpc"

	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/devenv"
	"github.com/custos-dev/custos/internal/devissuer"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/pgfilter"
	"github.com/custos-dev/custos/pgfilter/pgfiltertest"
	"github.com/custos-dev/custos/xds"
)

// testPANs are the card numbers of the seeded demo database.
var testPANs = []string{"4242424242424242", "5555555555554444", "4242 4242 4242 4242"}

// serveEnv is `custos serve` running from a config file against the
// shared cluster and a real OIDC issuer, with the default policy.
type serveEnv struct {
	iss      *devissuer.Issuer
	dataDir  string
	pgAddr   string
	adminURL string
	cancel   context.CancelFunc
	done     chan error
	errOut   *lockedBuffer
	stopped  bool
}

// lockedBuffer is a bytes.Buffer safe for the log writer and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServe(t *testing.T, extra string) *serveEnv {
	t.Helper()
	_, res := pgfiltertest.Upstream(t)
	dir := t.TempDir()
	iss, err := devissuer.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/oidc/", http.StripPrefix("/oidc", iss.Handler()))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	if err := iss.SetURL(ts.URL + "/oidc"); err != nil {
		t.Fatal(err)
	}
	e := &serveEnv{iss: iss, dataDir: filepath.Join(dir, "data"), pgAddr: freeAddr(t), errOut: &lockedBuffer{}, done: make(chan error, 1)}
	adminAddr := freeAddr(t)
	e.adminURL = "http://" + adminAddr
	cfg := fmt.Sprintf(`
data_dir: %q
listeners:
  postgres: {address: %q}
  admin: {address: %q}
oidc:
  issuers:
    - url: %q
      audiences: [custos]
      algorithms: [ES256]
sessions:
  shutdown_grace: 2s
resources:
  - name: %s
    address: %q
    database: %s
    user: %s
    password: {file: %q}
    tls: {mode: verify-full, ca_file: %q}
    labels: {pci: cde}
audit:
  checkpoint_interval: 1s
%s`, e.dataDir, e.pgAddr, adminAddr, iss.URL(), res.Name, res.Address, res.Database, res.User, res.Password.File, res.TLS.CAFile, extra)
	cfgFile := filepath.Join(dir, "custos.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	t.Cleanup(func() { e.stop(t) })
	go func() { e.done <- run(ctx, []string{"serve", "--config", cfgFile}, &bytes.Buffer{}, e.errOut) }()
	waitHTTP(t, e.adminURL+"/readyz")
	return e
}

// stop stops custos and waits for it.
func (e *serveEnv) stop(t *testing.T) {
	t.Helper()
	if e.stopped {
		return
	}
	e.stopped = true
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, e.errOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func (e *serveEnv) token(t *testing.T, req devissuer.MintRequest) string {
	t.Helper()
	tok, err := e.iss.Mint(req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *serveEnv) connString(user, password string) string {
	host, port, _ := net.SplitHostPort(e.pgAddr)
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=disable", host, port, user, password, pgfiltertest.Database)
}

// exportedRecord is a record of `custos audit export --format json`.
type exportedRecord struct {
	Seq        uint64         `json:"seq"`
	EventName  string         `json:"event_name"`
	Severity   int            `json:"severity_number"`
	Attributes map[string]any `json:"attributes"`
}

// exportJournal verifies the journal with `custos audit verify` and
// returns its records from `custos audit export --format json`.
func exportJournal(t *testing.T, dataDir string) []exportedRecord {
	t.Helper()
	out, errOut, err := runCLI("audit", "verify", "--data-dir", dataDir)
	if err != nil || !strings.Contains(out, "OK: chain and checkpoint signatures verify") {
		t.Fatalf("audit verify: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = runCLI("audit", "export", "--data-dir", dataDir, "--format", "json")
	if err != nil {
		t.Fatalf("audit export: %v\n%s", err, errOut)
	}
	for _, pan := range testPANs {
		if strings.Contains(out, pan) {
			t.Errorf("the export holds the clear PAN %s", pan)
		}
	}
	var recs []exportedRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	return recs
}

// find returns the records named name whose attributes hold want.
func find(recs []exportedRecord, name string, want map[string]any) []exportedRecord {
	var out []exportedRecord
	for _, r := range recs {
		if r.EventName != name {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(r.Attributes[k]) != fmt.Sprint(v) {
				ok = false
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

func names(recs []exportedRecord) []string {
	var n []string
	for _, r := range recs {
		n = append(n, r.EventName)
	}
	return n
}

// TestServeAudit runs custos serve, connects with a good token and with
// bad ones, stops it, and reads the journal back through `custos audit`.
func TestServeAudit(t *testing.T) {
	t.Parallel()
	e := startServe(t, "")
	ctx := context.Background()

	tok := e.token(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}, Act: "alice@example.com"})
	c, err := pgx.Connect(ctx, e.connString("alice", tok))
	if err != nil {
		t.Fatal(err)
	}
	var pan string
	if err := c.QueryRow(ctx, "SELECT pan FROM cards WHERE id = 1").Scan(&pan); err != nil || pan != "************4242" {
		t.Fatalf("pan = %q, %v", pan, err)
	}
	_ = c.Close(ctx)
	if _, err := pgx.Connect(ctx, e.connString("alice", "not-a-token")); err == nil {
		t.Fatal("a bad token connected")
	}
	// A card number where a user name belongs reaches the journal only
	// as its fingerprint.
	if _, err := pgx.Connect(ctx, e.connString(testPANs[0], "not-a-token")); err == nil {
		t.Fatal("a bad token connected")
	}
	e.stop(t)

	recs := exportJournal(t, e.dataDir)
	if len(recs) < 8 || recs[0].EventName != "custos.audit.started" || recs[len(recs)-1].EventName != "custos.audit.stopped" {
		t.Fatalf("journal does not run from started to stopped: %q", names(recs))
	}
	// The first load, and the load with the discovery pass's columns.
	if len(find(recs, "custos.policy.loaded", map[string]any{"custos.policy.source": "embedded"})) != 2 {
		t.Errorf("policy loads: %q", names(recs))
	}
	disc := find(recs, "custos.discovery.completed", map[string]any{"custos.resource": "payments-db", "custos.outcome": "success"})
	if len(disc) != 1 || !strings.Contains(fmt.Sprint(disc[0].Attributes["custos.discovery.columns"]), "public.customers.note") {
		t.Errorf("discovery record: %+v in %q", disc, names(recs))
	}
	failed := find(recs, "custos.auth.failed", map[string]any{"user.id": "alice", "error.type": "malformed", "custos.outcome": "failure", "client.address": "127.0.0.1"})
	if len(failed) != 1 || failed[0].Attributes["custos.error"] == "" || failed[0].Severity != 13 {
		t.Errorf("authentication failure: %+v\nin %q", failed, names(recs))
	}
	scrubbed := find(recs, "custos.auth.failed", map[string]any{"custos.pan.scrubbed": 2})
	if len(scrubbed) != 1 || !strings.Contains(fmt.Sprint(scrubbed[0].Attributes["user.id"]), "[PAN hmac-sha256=") {
		t.Errorf("a PAN as user name: %+v", scrubbed)
	}
	who := map[string]any{"user.id": "alice", "enduser.id": "alice@example.com", "client.address": "127.0.0.1",
		"custos.resource": "payments-db", "custos.user.issuer": e.iss.URL(), "db.namespace": pgfiltertest.Database, "custos.outcome": "success"}
	succeeded := find(recs, "custos.auth.succeeded", who)
	opened := find(recs, "custos.connection.opened", who)
	closed := find(recs, "custos.connection.closed", who)
	if len(succeeded) != 1 || len(opened) != 1 || len(closed) != 1 {
		t.Fatalf("session records: %d succeeded, %d opened, %d closed in %q", len(succeeded), len(opened), len(closed), names(recs))
	}
	id := opened[0].Attributes["custos.session_id"]
	if id == nil || id == "" || succeeded[0].Attributes["custos.session_id"] != id || closed[0].Attributes["custos.session_id"] != id {
		t.Errorf("session ids: %v %v %v", succeeded[0].Attributes["custos.session_id"], id, closed[0].Attributes["custos.session_id"])
	}
	// The role PostgreSQL itself names for the session (the gateway's here:
	// no group logins).
	if u := opened[0].Attributes["custos.pg.upstream_user"]; u != devenv.GatewayRole {
		t.Errorf("opened: custos.pg.upstream_user = %v, want %s", u, devenv.GatewayRole)
	}
	if succeeded[0].Seq > opened[0].Seq || opened[0].Seq > closed[0].Seq {
		t.Errorf("session records out of order: %d %d %d", succeeded[0].Seq, opened[0].Seq, closed[0].Seq)
	}
	if a := closed[0].Attributes; a["custos.connection.close_reason"] != "client_closed" || fmt.Sprint(a["custos.masked"]) != "1" {
		t.Errorf("closed: %v", a)
	}

	// The journal's own files hold no clear PAN either.
	err = filepath.WalkDir(filepath.Join(e.dataDir, "audit"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, pan := range testPANs {
			if bytes.Contains(b, []byte(pan)) {
				t.Errorf("%s holds the clear PAN %s", path, pan)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := e.errOut.String(); strings.Contains(m, "audit event not recorded") {
		t.Errorf("events were lost:\n%s", m)
	}
}

var approvalID = regexp.MustCompile(`apr_[A-Za-z0-9]+`)

// TestServeAuditApprovals parks a write through custos serve, approves it
// through the admin API, and finds each transition in the journal with
// who caused it.
func TestServeAuditApprovals(t *testing.T) {
	t.Parallel()
	e := startServe(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	alice := e.token(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}, Act: "alice@example.com"})
	bob := e.token(t, devissuer.MintRequest{Subject: "bob", Groups: []string{"dba"}})
	c, err := pgx.Connect(ctx, e.connString("alice", alice))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "UPDATE cards SET exp = exp WHERE id = 3")
		done <- err
	}()

	var id string
	deadline := time.Now().Add(20 * time.Second)
	for id == "" {
		out, errOut, err := runCLI("approvals", "list", "--admin-url", e.adminURL, "--token", bob)
		if err != nil {
			t.Fatalf("approvals list: %v\n%s", err, errOut)
		}
		id = approvalID.FindString(out)
		if id == "" {
			if time.Now().After(deadline) {
				t.Fatal("the write was not parked")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if out, errOut, err := runCLI("approvals", "approve", id, "--reason", "OPS-7", "--admin-url", e.adminURL, "--token", bob); err != nil {
		t.Fatalf("approvals approve: %v\n%s%s", err, out, errOut)
	}
	if err := <-done; err != nil {
		t.Fatalf("the approved write: %v", err)
	}
	_ = c.Close(context.Background())
	e.stop(t)

	recs := exportJournal(t, e.dataDir)
	byAlice := map[string]any{"custos.approval_id": id, "custos.resource": "payments-db", "custos.approval.requester": "alice",
		"user.id": "alice", "enduser.id": "alice@example.com", "custos.approval.requester.act": "alice@example.com"}
	byBob := map[string]any{"custos.approval_id": id, "custos.approval.requester": "alice", "user.id": "bob",
		"custos.approval.approvers": []any{"bob"}}
	tests := []struct {
		name, event string
		want        map[string]any
		state       string
	}{
		{"requested", "custos.approval.requested", byAlice, "pending"},
		{"vote", "custos.approval.decided", merge(byBob, map[string]any{"custos.approval.transition": "approved", "custos.approval.reason": "OPS-7"}), "approved"},
		{"decided", "custos.approval.decided", merge(byBob, map[string]any{"custos.approval.transition": "decided"}), "approved"},
		{"consumed", "custos.approval.consumed", byAlice, "consumed"},
	}
	for _, tt := range tests {
		got := find(recs, tt.event, merge(tt.want, map[string]any{"custos.approval.state": tt.state}))
		if len(got) != 1 {
			t.Errorf("%s: %d records %+v\nin %q", tt.name, len(got), find(recs, tt.event, nil), names(recs))
			continue
		}
		if q := got[0].Attributes["db.query.text"]; q == nil || !strings.HasPrefix(fmt.Sprint(q), "UPDATE cards") {
			t.Errorf("%s: db.query.text = %v", tt.name, q)
		}
	}
}

func merge(a, b map[string]any) map[string]any {
	m := map[string]any{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

// logsReceiver is an OTLP logs collector keeping every record's event
// name.
type logsReceiver struct {
	collogspb.UnimplementedLogsServiceServer
	mu     sync.Mutex
	events []string
}

func (r *logsReceiver) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				r.events = append(r.events, lr.GetEventName())
			}
		}
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func (r *logsReceiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// TestServeAuditOTLP: with OTEL_EXPORTER_OTLP_ENDPOINT set, custos serve
// ships its journal to the collector, through its own shutdown. Not
// parallel: it sets the process environment the OTLP exporter reads.
func TestServeAuditOTLP(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &logsReceiver{}
	srv := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(srv, rc)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")

	e := startServe(t, "")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, e.connString("alice", e.token(t, devissuer.MintRequest{Subject: "alice", Groups: []string{"agents"}})))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx)
	e.stop(t)

	got := rc.received()
	for _, want := range []string{"custos.audit.started", "custos.policy.loaded", "custos.auth.succeeded", "custos.connection.opened", "custos.connection.closed", "custos.audit.stopped"} {
		if !strings.Contains(strings.Join(got, " "), want) {
			t.Errorf("the collector did not receive %s: %q\n%s", want, got, e.errOut.String())
		}
	}
	if recs := exportJournal(t, e.dataDir); len(got) != len(recs) {
		t.Errorf("the collector received %d records, the journal holds %d", len(got), len(recs))
	}
}

// TestAuditorEvents records the events no serve test provokes (a failed
// policy reload, xDS refusals, an audit turned off) and checks how they
// read back.
func TestAuditorEvents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := &config.Config{DataDir: dir}
	cfg.ApplyDefaults()
	reg := prometheus.NewRegistry()
	a, err := openAuditor(context.Background(), cfg, slog.New(slog.DiscardHandler), reg, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if a.exp != nil {
		t.Fatal("OTLP export on without an endpoint")
	}
	a.policyReload(policy.ReloadEvent{Source: "/etc/custos/policy", Version: "v1", Previous: "v1", Err: errors.New("rego_parse_error")})
	a.xdsEvent(xds.Event{Kind: xds.EventConfigServed, NodeIDs: []string{"edge"}, Versions: map[string]string{"type.googleapis.com/envoy.config.listener.v3.Listener": "l1"}})
	a.xdsEvent(xds.Event{Kind: xds.EventConfigRejected, NodeIDs: []string{"edge"}, Reason: "xds.http_port: 0 is not a port"})
	a.xdsEvent(xds.Event{Kind: xds.EventEnvoyRejected, NodeIDs: []string{"edge"}, TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Version: "c2", Reason: "unknown field"})
	a.xdsEvent(xds.Event{Kind: xds.EventNodeRefused, NodeIDs: []string{"stranger"}, TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Peer: "10.0.0.9:41000", Reason: "node id is not in xds.node_ids"})
	a.close()
	a.close()
	// After close an event is counted, not recorded.
	a.xdsEvent(xds.Event{Kind: xds.EventConfigServed})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "custos_audit_") {
			t.Errorf("%s is still registered after close", mf.GetName())
		}
	}
	var m dto.Metric
	if err := a.failures.WithLabelValues("custos.xds.config_served").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("failures after close = %v (%v), want 1", m.GetCounter().GetValue(), err)
	}

	recs := exportJournal(t, dir)
	tests := []struct {
		name, event string
		want        map[string]any
	}{
		{"reload failed", "custos.policy.reload_failed", map[string]any{"custos.outcome": "failure", "custos.policy.version": "v1",
			"custos.policy.source": "/etc/custos/policy", "custos.error": "rego_parse_error", "error.type": "policy_invalid"}},
		{"config served", "custos.xds.config_served", map[string]any{"custos.xds.node_ids": []any{"edge"},
			"custos.xds.versions": []any{"type.googleapis.com/envoy.config.listener.v3.Listener=l1"}}},
		{"config rejected", "custos.control.failure", map[string]any{"custos.component": "xds", "error.type": "xds_config_rejected",
			"custos.error": "xds.http_port: 0 is not a port"}},
		{"envoy nack", "custos.control.failure", map[string]any{"custos.component": "envoy", "error.type": "xds_envoy_rejected",
			"custos.xds.type_url": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "custos.xds.version": "c2"}},
		{"node refused", "custos.xds.request_refused", map[string]any{"custos.outcome": "denied", "error.type": "xds_node_refused",
			"custos.xds.node_ids": []any{"stranger"}, "client.address": "10.0.0.9:41000"}},
	}
	for _, tt := range tests {
		if got := find(recs, tt.event, tt.want); len(got) != 1 {
			t.Errorf("%s: %d records; journal: %q", tt.name, len(got), names(recs))
		}
	}

	// Audit off: nothing is written, nothing fails.
	off := &config.Config{DataDir: t.TempDir(), Audit: config.Audit{Enabled: new(false)}}
	off.ApplyDefaults()
	b, err := openAuditor(context.Background(), off, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	b.policyReload(policy.ReloadEvent{Version: "v1"})
	b.close()
	if _, err := os.Stat(filepath.Join(off.DataDir, "audit")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("audit off wrote %s: %v", filepath.Join(off.DataDir, "audit"), err)
	}
}

// TestSessionRefusedWhenAuditFails: a session on cardholder data whose
// start cannot be recorded is refused, unless fail_closed is off; other
// resources and other events go on.
func TestSessionRefusedWhenAuditFails(t *testing.T) {
	t.Parallel()
	cde := &config.Resource{Name: "payments", Type: "postgres", Labels: map[string]string{config.LabelPCI: config.LabelCDE}}
	plain := &config.Resource{Name: "analytics", Type: "postgres"}
	for _, tc := range []struct {
		name       string
		failClosed bool
		res        *config.Resource
		kind       pgfilter.SessionEventKind
		refused    bool
	}{
		{"cardholder data, fail closed", true, cde, pgfilter.SessionOpened, true},
		{"cardholder data, fail open", false, cde, pgfilter.SessionOpened, false},
		{"other resource", true, plain, pgfilter.SessionOpened, false},
		{"not a session start", true, cde, pgfilter.SessionClosed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := &config.Config{DataDir: t.TempDir()}
			cfg.ApplyDefaults()
			cfg.Audit.FailClosed = &tc.failClosed
			a, err := openAuditor(context.Background(), cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			// A closed journal stands for one that cannot be written.
			if err := a.j.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			err = journalRecorder(a, nil).SessionEvent(pgfilter.SessionEvent{Kind: tc.kind, User: "alice", Database: "payments", Resource: tc.res, ClientAddr: "127.0.0.1:5000"})
			if (err != nil) != tc.refused {
				t.Fatalf("sessionEvent = %v, want refused %v", err, tc.refused)
			}
		})
	}
}
