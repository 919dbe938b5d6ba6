package pgfilter

import (
	"testing"

	"github.com/custos-dev/custos/internal/sqlclass"
)

func TestSessionStateFollowsConfirmations(t *testing.T) {
	t.Parallel()
	def := &stmtInfo{text: "INSERT"}
	other := &stmtInfo{text: "SELECT"}
	never := func() bool { t.Fatal("settle called"); return false }
	always := func() bool { return true }
	tests := []struct {
		name  string
		run   func(s *sessionState)
		check func(t *testing.T, s *sessionState)
	}{
		{"parse confirmed", func(s *sessionState) {
			s.push(&stateOp{kind: stParse, name: "s", stmt: def})
			s.push(&stateOp{kind: stSync})
			s.server('1', nil)
			s.server('Z', []byte{'I'})
		}, func(t *testing.T, s *sessionState) {
			if got, _ := s.lookupStmt("s", always); got != def || s.lost {
				t.Errorf("got %v lost %v", got, s.lost)
			}
		}},
		{"parse refused, later ones skipped", func(s *sessionState) {
			s.stmts["s"] = def
			s.push(&stateOp{kind: stCloseStmt, name: "s"})
			s.push(&stateOp{kind: stParse, name: "s", stmt: other})
			s.push(&stateOp{kind: stSync})
			s.server('E', nil)
			s.server('Z', []byte{'I'})
		}, func(t *testing.T, s *sessionState) {
			if got, _ := s.lookupStmt("s", always); got != def || s.lost {
				t.Errorf("got %v lost %v", got, s.lost)
			}
		}},
		{"same batch pending needs no settle", func(s *sessionState) {
			s.push(&stateOp{kind: stParse, name: "s", stmt: other})
			s.push(&stateOp{kind: stBind, name: "", portal: &portalInfo{info: other}})
		}, func(t *testing.T, s *sessionState) {
			if p := s.lookupPortal("", never); p == nil || p.info != other {
				t.Errorf("portal %v", p)
			}
		}},
		{"error without Sync skips later messages", func(s *sessionState) {
			s.push(&stateOp{kind: stParse, name: "a", stmt: other})
			s.server('E', nil)
			s.push(&stateOp{kind: stParse, name: "b", stmt: other})
			s.push(&stateOp{kind: stSync})
			s.server('Z', []byte{'I'})
		}, func(t *testing.T, s *sessionState) {
			if len(s.queue) != 0 || s.lost || len(s.stmts) != 0 {
				t.Errorf("queue %d lost %v stmts %v", len(s.queue), s.lost, s.stmts)
			}
		}},
		{"sync during copy-in is ignored", func(s *sessionState) {
			s.push(&stateOp{kind: stExecute})
			s.push(&stateOp{kind: stSync}) // ignored once COPY starts
			s.server('G', nil)
			s.push(&stateOp{kind: stSync}) // ignored: in copy-in
			s.copyEnded()
			s.push(&stateOp{kind: stSync})
			s.server('C', []byte("COPY 1\x00"))
			s.server('Z', []byte{'I'})
		}, func(t *testing.T, s *sessionState) {
			if len(s.queue) != 0 || s.boundaries != 0 || s.lost {
				t.Errorf("queue %d boundaries %d lost %v", len(s.queue), s.boundaries, s.lost)
			}
		}},
		{"sql prepare confirmed by its tag", func(s *sessionState) {
			ins := sqlclass.Statement{Command: "INSERT"}
			s.push(&stateOp{kind: stQuery, effects: []sqlclass.Statement{
				{Command: "PREPARE", Name: "p", Prepared: &ins}, {Command: "SELECT"},
			}})
			s.server('C', []byte("PREPARE\x00"))
			s.server('E', nil)
			s.server('Z', []byte{'I'})
		}, func(t *testing.T, s *sessionState) {
			got, _ := s.lookupStmt("p", always)
			if got == nil || got.res.Statements[0].Command != "INSERT" || s.lost {
				t.Errorf("got %v lost %v", got, s.lost)
			}
		}},
		{"an answer nothing asked for loses track", func(s *sessionState) {
			s.stmts["s"] = def
			s.push(&stateOp{kind: stSync})
			s.server('1', nil)
		}, func(t *testing.T, s *sessionState) {
			if got, _ := s.lookupStmt("s", always); got != nil || !s.lost {
				t.Errorf("got %v lost %v", got, s.lost)
			}
		}},
		{"portals end with the transaction", func(s *sessionState) {
			s.push(&stateOp{kind: stBind, name: "p", portal: &portalInfo{info: def}})
			s.push(&stateOp{kind: stSync})
			s.server('2', nil)
			s.server('Z', []byte{'T'})
			s.push(&stateOp{kind: stQuery, effects: []sqlclass.Statement{{Command: "ROLLBACK TO"}}})
			s.server('C', []byte("ROLLBACK\x00"))
			s.server('Z', []byte{'T'})
		}, func(t *testing.T, s *sessionState) {
			if p := s.lookupPortal("p", always); p != nil {
				t.Errorf("portal kept after ROLLBACK TO: %v", p)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newSessionState()
			tc.run(s)
			tc.check(t, s)
		})
	}
}
