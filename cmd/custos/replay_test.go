package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/audit"
)

// replayFixture writes a journal with session pg-42 (a read with masked
// results, an update approved by carol, a denied delete) interleaved with
// session pg-43, and returns its data dir.
func replayFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	j, err := audit.Open(audit.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 4, 2, 9, 30, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	conn := func(name, session, user string, ms int, attrs ...audit.Attr) audit.Event {
		return audit.Event{Name: name, Time: at(ms), SessionID: session, UserID: user, EndUserID: "alice",
			ClientAddress: "192.0.2.10", Resource: "payments-db", DBNamespace: "payments",
			Outcome: audit.OutcomeSuccess, Attrs: attrs}
	}
	stmt := func(session string, ms int, ord int64, ev audit.Event, attrs ...audit.Attr) audit.Event {
		ev.Name, ev.SessionID, ev.Time, ev.UserID = audit.EventStatement, session, at(ms), "agent-7"
		ev.Attrs = append([]audit.Attr{
			audit.Int("custos.statement.seq", ord),
			audit.String("custos.pg.protocol", "simple"),
			audit.Int("custos.duration_us", ev.Duration.Microseconds()),
		}, attrs...)
		return ev
	}
	approval := func(name, state string, ms int, attrs ...audit.Attr) audit.Event {
		return audit.Event{Name: name, Time: at(ms), SessionID: "pg-42", ApprovalID: "apr-7", Outcome: audit.OutcomeSuccess,
			Attrs: append([]audit.Attr{audit.String(audit.AttrApprovalState, state)}, attrs...)}
	}
	for _, ev := range []audit.Event{
		conn(audit.EventConnectionOpened, "pg-42", "agent-7", 0),
		conn(audit.EventConnectionOpened, "pg-43", "agent-8", 5),
		stmt("pg-42", 10, 1, audit.Event{
			Outcome: audit.OutcomeSuccess, DBOperation: "SELECT", DBQueryText: "SELECT id, pan FROM cards LIMIT $1",
			Decision: "allow", DecisionID: "dec-1", Rows: 3, Masked: 3, Duration: 2 * time.Millisecond,
		}, audit.Strings("custos.result.columns", []string{"id", "pan"}),
			audit.Strings("custos.result.rows", []string{`["1","************1111"]`, `["22","************4242"]`, `["333",null]`}),
			audit.Bool("custos.result.truncated", false)),
		stmt("pg-43", 15, 1, audit.Event{Outcome: audit.OutcomeSuccess, DBOperation: "SELECT", DBQueryText: "SELECT now()", Rows: 1}),
		approval(audit.EventApprovalRequested, "pending", 30),
		approval(audit.EventApprovalDecided, "approved", 530, audit.Strings(audit.AttrApprovers, []string{"carol"})),
		approval(audit.EventApprovalConsumed, "consumed", 540),
		stmt("pg-42", 20, 2, audit.Event{
			Outcome: audit.OutcomeSuccess, DBOperation: "UPDATE", DBQueryText: "UPDATE cards SET note = $1",
			Decision: "approval_required", DecisionID: "dec-2", ApprovalID: "apr-7", Rows: 3, Duration: 530 * time.Millisecond,
		}, audit.Int("custos.approval.wait_ms", 520)),
		stmt("pg-42", 600, 3, audit.Event{
			Outcome: audit.OutcomeDenied, DBOperation: "DELETE", DBQueryText: "DELETE FROM cards", Decision: "deny",
			DecisionID: "dec-3", DBStatusCode: "42501", Error: "denied by policy",
		}),
		conn(audit.EventConnectionClosed, "pg-43", "agent-8", 700),
		conn(audit.EventConnectionClosed, "pg-42", "agent-7", 1000, audit.String("custos.connection.close_reason", "client_terminated")),
	} {
		if _, err := j.Append(context.Background(), ev); err != nil {
			t.Fatalf("%s: %v", ev.Name, err)
		}
	}
	if err := j.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReplayCommand(t *testing.T) {
	t.Parallel()
	dir := replayFixture(t)
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"replay", "pg-42", "--data-dir", dir}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"session   pg-42\nuser      agent-7\nenduser   alice\nclient    192.0.2.10\nresource  payments-db\ndatabase  payments\n",
		"opened    2026-04-02T09:30:00.000Z\nclosed    2026-04-02T09:30:01.000Z (reason client_terminated)\n",
		"+0.010s  statement 1  SELECT  (simple)\n" +
			"         query     SELECT id, pan FROM cards LIMIT $1\n" +
			"         decision  allow  id dec-1\n" +
			"         outcome   success  rows 3  masked 3  duration 2ms\n" +
			"         id  | pan\n" +
			"         ----+-----------------\n" +
			"         1   | ************1111\n" +
			"         22  | ************4242\n" +
			"         333 | NULL\n" +
			"         (3 rows)\n",
		"+0.020s  statement 2  UPDATE  (simple)\n",
		"         approval  apr-7  waited 520ms\n",
		"+0.030s  approval requested  apr-7  state pending\n",
		"+0.530s  approval decided  apr-7  state approved  approvers carol\n",
		"+0.540s  approval consumed  apr-7  state consumed\n",
		"+0.600s  statement 3  DELETE  (simple)\n",
		"         outcome   denied  sqlstate 42501  rows 0  masked 0  duration 0s\n         error     denied by policy\n",
		"+1.000s  connection closed  reason client_terminated\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing\n%s\nin\n%s", want, got)
		}
	}
	// In time order: the update (received at +0.020s) before its approval
	// events, though its record was written after them.
	order := []string{"statement 1", "statement 2", "approval requested", "approval decided", "approval consumed", "statement 3", "connection closed"}
	last := -1
	for _, s := range order {
		i := strings.Index(got, s)
		if i < last {
			t.Fatalf("%q out of order:\n%s", s, got)
		}
		last = i
	}
	if strings.Contains(got, "agent-8") || strings.Contains(got, "now()") {
		t.Fatalf("another session's records:\n%s", got)
	}

	// Flags before the session id; --rows.
	out.Reset()
	if err := run(ctx, []string{"replay", "--data-dir", dir, "--rows", "2", "pg-42"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "         22 | ************4242\n         (1 more recorded row not shown)\n         (3 rows)\n") ||
		strings.Contains(out.String(), "333") {
		t.Fatalf("--rows 2:\n%s", out.String())
	}
}

func TestReplayCommandJSON(t *testing.T) {
	t.Parallel()
	dir := replayFixture(t)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"replay", "pg-42", "--data-dir", dir, "--format", "json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var events []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var rec struct {
			Time       time.Time      `json:"time"`
			Event      string         `json:"event"`
			OffsetUS   int64          `json:"offset_us"`
			Attributes map[string]any `json:"attributes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		if rec.Attributes["custos.session_id"] != "pg-42" || rec.Time.IsZero() {
			t.Fatalf("record %s", sc.Bytes())
		}
		events = append(events, rec.Event)
	}
	want := "custos.connection.opened custos.db.statement custos.db.statement custos.approval.requested " +
		"custos.approval.decided custos.approval.consumed custos.db.statement custos.connection.closed"
	if strings.Join(events, " ") != want {
		t.Fatalf("events %v", events)
	}
}

func TestReplayCommandSpeed(t *testing.T) {
	t.Parallel()
	dir := replayFixture(t)
	ctx := context.Background()
	var waits []time.Duration
	sleep := func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	}
	var out, errOut bytes.Buffer
	if err := replayCmd(ctx, []string{"pg-42", "--data-dir", dir, "--speed", "2"}, &out, &errOut, sleep); err != nil {
		t.Fatal(err)
	}
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	want := []time.Duration{ms(5), ms(5), ms(5), ms(250), ms(5), ms(30), ms(200)}
	if len(waits) != len(want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
	// Real waiting, much faster than real time.
	start := time.Now()
	if err := run(ctx, []string{"replay", "pg-42", "--data-dir", dir, "--speed", "1000"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < time.Millisecond {
		t.Fatalf("--speed 1000 took %v, want at least 1ms", d)
	}
}

func TestReplayCommandErrors(t *testing.T) {
	t.Parallel()
	dir := replayFixture(t)
	ctx := context.Background()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"replay", "no-such-session", "--data-dir", dir}, &out, &errOut)
	if !errors.Is(err, audit.ErrNoSession) || !strings.Contains(err.Error(), `no records for session "no-such-session"`) {
		t.Fatalf("unknown session: %v", err)
	}
	for _, args := range [][]string{
		{"replay", "--data-dir", dir},
		{"replay", "pg-42", "--data-dir", dir, "--format", "yaml"},
		{"replay", "pg-42", "--data-dir", dir, "--speed", "-1"},
		{"replay", "pg-42", "pg-43", "--data-dir", dir},
		{"replay", "pg-42", "--data-dir", t.TempDir()},
	} {
		if err := run(ctx, args, &out, &errOut); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	errOut.Reset()
	if err := run(ctx, []string{"replay", "-h"}, &out, &errOut); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(errOut.String(), "usage: custos replay SESSION_ID") {
		t.Fatalf("help: %v\n%s", err, errOut.String())
	}
	out.Reset()
	if err := run(ctx, []string{"help"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "  replay ") {
		t.Fatalf("usage lists replay: %v\n%s", err, out.String())
	}
}
