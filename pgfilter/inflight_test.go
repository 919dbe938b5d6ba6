package pgfilter

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// testMsg is a client message in a syncQueue: its type byte and its
// position in the test's messages.
type testMsg struct {
	typ  byte
	name string
}

func (m testMsg) batchRole() batchRole {
	switch m.typ {
	case 'S':
		return roleSync
	case 'Q', 'F':
		return roleOwn
	}
	return roleExtended
}

// TestSyncQueue drives a syncQueue with client messages ("c:" and their
// type bytes) and server answers ("s:": '+' completes the head when it is
// an extended-protocol message, 'E' is an ErrorResponse, 'Z' a
// ReadyForQuery, anything else an answer that ends nothing) and checks how
// each message ended and what is left.
func TestSyncQueue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []string
		want  []string
		left  string
	}{
		{
			name:  "batch answered",
			steps: []string{"c:PBDES", "s:+++D+Z"},
			want:  []string{"done P0", "done B1", "done D2", "done E3", "end S4"},
		},
		{
			name:  "error mid-batch skips to Sync",
			steps: []string{"c:PBEPBES", "s:++E", "s:Z"},
			want:  []string{"done P0", "done B1", "fail E2", "skip P3", "skip B4", "skip E5", "end S6"},
		},
		{
			name:  "failed Parse",
			steps: []string{"c:PBES", "s:EZ"},
			want:  []string{"fail P0", "skip B1", "skip E2", "end S3"},
		},
		{
			name:  "error of the Sync itself (commit)",
			steps: []string{"c:PBES", "s:+++EZ"},
			want:  []string{"done P0", "done B1", "done E2", "end S3"},
		},
		{
			name:  "error in a simple query",
			steps: []string{"c:QQ", "s:TDCEZ", "s:CZ"},
			want:  []string{"end Q0", "end Q1"},
		},
		{
			name:  "pipelined batches, several Syncs",
			steps: []string{"c:PBESBESBES", "s:+++Z", "s:EZ", "s:++Z"},
			want: []string{"done P0", "done B1", "done E2", "end S3",
				"fail B4", "skip E5", "end S6",
				"done B7", "done E8", "end S9"},
		},
		{
			name:  "error before the Sync is sent",
			steps: []string{"c:PBE", "s:+E", "c:S", "s:Z"},
			want:  []string{"done P0", "fail B1", "skip E2", "end S3"},
		},
		{
			name:  "messages sent after the error are skipped at ReadyForQuery",
			steps: []string{"c:PBE", "s:E", "c:BES", "s:Z"},
			want:  []string{"fail P0", "skip B1", "skip E2", "end B3", "end E4", "end S5"},
		},
		{
			name:  "CopyFail in a simple query",
			steps: []string{"c:Q", "s:GEZ"},
			want:  []string{"end Q0"},
		},
		{
			name:  "CopyFail in an Execute",
			steps: []string{"c:PBES", "s:++GEZ"},
			want:  []string{"done P0", "done B1", "fail E2", "end S3"},
		},
		{
			name:  "error during COPY TO STDOUT, simple",
			steps: []string{"c:QQ", "s:HddEZ", "s:CZ"},
			want:  []string{"end Q0", "end Q1"},
		},
		{
			name:  "error during COPY TO STDOUT, extended",
			steps: []string{"c:PBESQ", "s:++HdEZ", "s:CZ"},
			want:  []string{"done P0", "done B1", "fail E2", "end S3", "end Q4"},
		},
		{
			name:  "FunctionCall",
			steps: []string{"c:FF", "s:VZ", "s:EZ"},
			want:  []string{"end F0", "end F1"},
		},
		{
			name:  "Query and FunctionCall inside a failed batch are skipped",
			steps: []string{"c:PBEQFS", "s:EZ"},
			want:  []string{"fail P0", "skip B1", "skip E2", "skip Q3", "skip F4", "end S5"},
		},
		{
			name:  "empty query",
			steps: []string{"c:Q", "s:IZ"},
			want:  []string{"end Q0"},
		},
		{
			name:  "empty query, extended",
			steps: []string{"c:PBES", "s:+++Z"},
			want:  []string{"done P0", "done B1", "done E2", "end S3"},
		},
		{
			name:  "answers with nothing queued",
			steps: []string{"s:+EZ"},
		},
		{
			name:  "batch still on its way",
			steps: []string{"c:PBESPB", "s:++E", "s:Z"},
			want:  []string{"done P0", "done B1", "fail E2", "end S3"},
			left:  "PB",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q syncQueue[testMsg]
			var got []string
			n := 0
			for _, step := range tc.steps {
				side, msgs, _ := strings.Cut(step, ":")
				for i := 0; i < len(msgs); i++ {
					c := msgs[i]
					if side == "c" {
						q.push(testMsg{typ: c, name: string(c) + string(rune('0'+n))})
						n++
						continue
					}
					switch c {
					case '+':
						if h, ok := q.head(); ok && h.batchRole() == roleExtended {
							q.pop()
							got = append(got, "done "+h.name)
						}
					case 'E':
						var skipped []string
						failed, ok := q.fail(func(m testMsg) { skipped = append(skipped, "skip "+m.name) })
						if ok {
							got = append(got, "fail "+failed.name)
						} else if len(skipped) > 0 {
							t.Fatalf("skipped %v with nothing failed", skipped)
						}
						got = append(got, skipped...)
					case 'Z':
						q.endBatch(func(m testMsg) { got = append(got, "end "+m.name) })
					}
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			var left []byte
			for _, m := range q {
				left = append(left, m.typ)
			}
			if string(left) != tc.left {
				t.Errorf("left %q, want %q", left, tc.left)
			}
		})
	}
}

// TestSyncQueueNilCallbacks: the masker applies the rule without
// callbacks; the queue ends up the same.
func TestSyncQueueNilCallbacks(t *testing.T) {
	var q syncQueue[testMsg]
	for _, c := range []byte("PBESPBES") {
		q.push(testMsg{typ: c})
	}
	if _, ok := q.fail(nil); !ok {
		t.Fatal("the Parse did not fail")
	}
	if h, _ := q.head(); h.typ != 'S' || len(q) != 5 {
		t.Fatalf("after the error: %v", q)
	}
	q.endBatch(nil)
	if len(q) != 4 {
		t.Fatalf("after ReadyForQuery: %v", q)
	}
	q.endBatch(nil)
	if len(q) != 0 || cap(q) != 0 {
		t.Fatalf("after the second ReadyForQuery: %v (cap %d)", q, cap(q))
	}
}

// outcomeRecorder keeps each record's text, outcome and SQLSTATE.
type outcomeRecorder struct{ got []string }

func (r *outcomeRecorder) Admit(*Session) error { return nil }

func (r *outcomeRecorder) Record(ev *StatementEvent) Durable {
	r.got = append(r.got, ev.Text+" "+string(ev.Outcome)+" "+ev.SQLState)
	return nil
}

// TestLedgerSkipToSync: the statement ledger applies the syncQueue's rule
// to its records.
func TestLedgerSkipToSync(t *testing.T) {
	errBody := []byte("SERROR\x00C22012\x00Mdivision by zero\x00\x00")
	for _, tc := range []struct {
		name    string
		kinds   []stmtKind
		answers []Message
		want    []string
	}{
		{
			name:  "error mid-batch",
			kinds: []stmtKind{kindExec, kindExec, kindExec, kindSync, kindQuery},
			answers: []Message{{Type: 'C', Body: []byte("SELECT 1\x00")}, {Type: 'E', Body: errBody},
				{Type: 'Z', Body: []byte("E")}, {Type: 'C', Body: []byte("SELECT 1\x00")}, {Type: 'Z', Body: []byte("I")}},
			want: []string{"s0 success ", "s1 failure 22012", "s2 failure ", "s4 success "},
		},
		{
			name:    "error in a simple query",
			kinds:   []stmtKind{kindQuery, kindQuery},
			answers: []Message{{Type: 'E', Body: errBody}, {Type: 'Z', Body: []byte("I")}, {Type: 'I'}, {Type: 'Z', Body: []byte("I")}},
			want:    []string{"s0 failure 22012", "s1 success "},
		},
		{
			name:    "FunctionCall error",
			kinds:   []stmtKind{kindFunc},
			answers: []Message{{Type: 'E', Body: errBody}, {Type: 'Z', Body: []byte("I")}},
			want:    []string{"s0 failure 22012"},
		},
		{
			name:    "Query inside a failed extended batch",
			kinds:   []stmtKind{kindExec, kindQuery, kindSync, kindQuery},
			answers: []Message{{Type: 'E', Body: errBody}, {Type: 'Z', Body: []byte("I")}, {Type: 'C', Body: []byte("SELECT 1\x00")}, {Type: 'Z', Body: []byte("I")}},
			want:    []string{"s0 failure 22012", "s1 failure ", "s3 success "},
		},
		{
			name:    "error of a Sync",
			kinds:   []stmtKind{kindExec, kindSync},
			answers: []Message{{Type: 'C', Body: []byte("INSERT 0 1\x00")}, {Type: 'E', Body: errBody}, {Type: 'Z', Body: []byte("I")}},
			want:    []string{"s0 success "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &outcomeRecorder{}
			h, led := newTestAuditHook(rec, 0)
			for i, k := range tc.kinds {
				led.push(&stmtEntry{kind: k, start: time.Now(), text: "s" + string(rune('0'+i))})
			}
			for _, m := range tc.answers {
				if _, err := h.Handle(context.Background(), ServerToClient, &m, nil); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(rec.got, tc.want) {
				t.Errorf("got  %q\nwant %q", rec.got, tc.want)
			}
			if e := led.head(); e != nil || len(led.ended) != 0 {
				t.Errorf("left: head %+v, ended %d", e, len(led.ended))
			}
		})
	}
}
