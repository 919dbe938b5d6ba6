package pgfilter

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
)

// countingRecorder keeps the last event and counts them.
type countingRecorder struct {
	n    int
	last StatementEvent
}

func (r *countingRecorder) Admit(*Session) error { return nil }

func (r *countingRecorder) Record(ev *StatementEvent) Durable {
	r.n++
	r.last = *ev
	return nil
}

func newTestAuditHook(rec StatementRecorder, rows int) (*auditHook, *ledger) {
	ss := &session{Session: Session{ID: "s1", Principal: &authn.Principal{Subject: "alice"},
		Resource: &config.Resource{Name: "db", Database: "app"}, ClientAddr: "127.0.0.1:5000"}}
	led := &ledger{}
	ss.ledger = led
	return &auditHook{ss: ss, led: led, rec: rec, cap: rows}, led
}

func TestCompletionParsing(t *testing.T) {
	for tag, want := range map[string]int64{
		"SELECT 3\x00": 3, "INSERT 0 12\x00": 12, "UPDATE 7\x00": 7, "COPY 5\x00": 5,
		"BEGIN\x00": 0, "CREATE TABLE\x00": 0, "": 0, "SELECT x\x00": 0,
	} {
		if got := commandRows([]byte(tag)); got != want {
			t.Errorf("commandRows(%q) = %d, want %d", tag, got, want)
		}
	}
	code, msg := errorFields([]byte("SERROR\x00VERROR\x00C22012\x00Mdivision by zero\x00\x00"))
	if code != "22012" || msg != "division by zero" {
		t.Errorf("errorFields = %q %q", code, msg)
	}
	if code, msg := errorFields([]byte("C42")); code != "" || msg != "" {
		t.Errorf("errorFields of a cut message = %q %q", code, msg)
	}
	names := rowDescriptionNames(append([]byte{0, 1}, append([]byte("abalance\x00"), make([]byte, 18)...)...))
	if len(names) != 1 || names[0] != "abalance" {
		t.Errorf("rowDescriptionNames = %q", names)
	}
}

// FuzzStatementCompletion feeds server messages of any shape to the hook
// that completes statements: it must not panic, and what it records must
// hold together (captured rows are JSON arrays, counts are not negative).
func FuzzStatementCompletion(f *testing.F) {
	f.Add(byte('D'), dataRowBody([]byte("1"), nil, []byte("x")))
	f.Add(byte('C'), []byte("SELECT 1\x00"))
	f.Add(byte('E'), []byte("SERROR\x00C22012\x00Mdivision by zero\x00\x00"))
	f.Add(byte('T'), append([]byte{0, 1}, append([]byte("a\x00"), make([]byte, 18)...)...))
	f.Add(byte('H'), []byte{0, 0, 1, 0, 0})
	f.Add(byte('d'), []byte("1\tx\n"))
	f.Add(byte('Z'), []byte("I"))
	f.Add(byte('s'), []byte{})
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		rec := &countingRecorder{}
		h, led := newTestAuditHook(rec, 2)
		now := time.Now()
		for _, k := range []stmtKind{kindQuery, kindExec, kindExec, kindSync, kindFunc} {
			led.push(&stmtEntry{kind: k, start: now, text: "SELECT 1"})
		}
		for _, m := range []Message{{Type: 'T', Body: body}, {Type: typ, Body: body}, {Type: 'D', Body: body},
			{Type: typ, Body: bytes.Clone(body)}, {Type: 'C', Body: body}, {Type: 'Z', Body: []byte("I")}} {
			if _, err := h.Handle(context.Background(), ServerToClient, &m, nil); err != nil {
				t.Fatal(err)
			}
		}
		if rec.n == 0 {
			t.Fatal("nothing completed after ReadyForQuery")
		}
		ev := rec.last
		if ev.Rows < 0 || ev.Masked < 0 || ev.Seq != int64(rec.n) {
			t.Fatalf("event %+v", ev)
		}
		for _, row := range ev.ResultRows {
			var v []*string
			if err := json.Unmarshal([]byte(row), &v); err != nil {
				t.Fatalf("captured row %q is not a JSON array: %v", row, err)
			}
		}
	})
}

// BenchmarkStatementCompletion is pgfilter's share of a statement's
// record on the server-to-client path: a one-row result completed,
// captured and handed to the recorder.
func BenchmarkStatementCompletion(b *testing.B) {
	rec := &countingRecorder{}
	h, led := newTestAuditHook(rec, 100)
	row := &Message{Type: 'D', Body: dataRowBody([]byte("-4242"))}
	done := &Message{Type: 'C', Body: []byte("SELECT 1\x00")}
	ready := &Message{Type: 'Z', Body: []byte("I")}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		led.push(&stmtEntry{kind: kindExec, start: time.Now(), text: "SELECT abalance FROM pgbench_accounts WHERE aid = $1"})
		led.push(&stmtEntry{kind: kindSync})
		for _, m := range []*Message{row, done, ready} {
			if _, err := h.Handle(ctx, ServerToClient, m, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	if rec.n == 0 {
		b.Fatal("nothing recorded")
	}
}
