package pgfilter

import (
	"context"
	"strings"
	"time"

	"github.com/custos-dev/custos/internal/sqlclass"
)

// settleTimeout bounds how long a message waits for the server to answer
// the batches sent before it, when what it names depends on them.
const settleTimeout = 30 * time.Second

// maxBatch bounds the messages custos remembers of a batch that never
// ends; past it the oldest are dropped and names not found among the
// rest are unknown.
const maxBatch = 4096

// What custos knows of the session's prepared statements and portals
// changes only when the server confirms it: ParseComplete, BindComplete,
// CloseComplete, the CommandComplete of PREPARE, DEALLOCATE, DISCARD ALL
// and of statements that end transactions or touch cursors, and the
// transaction state of ReadyForQuery. Until then an operation is pending,
// queued in the order the client sent it.
//
// A message that names a statement or portal (Parse, Bind, Execute, a
// Query's EXECUTE and PREPARE) is decided on the definitions sent earlier
// in the same batch (since the last Sync, Query or FunctionCall) when it
// has one: if such a definition fails, the server skips everything up to
// Sync, this message too. Otherwise it waits until the server has answered
// the earlier batches and uses what the server confirmed. When custos
// loses track of the server's answers it stops trusting what it was told
// before (lost): only same-batch definitions are used from then on.

// stateOpKind is the kind of a client message custos follows.
type stateOpKind uint8

const (
	stParse stateOpKind = iota + 1
	stBind
	stCloseStmt
	stClosePortal
	stDescribe
	stExecute
	stQuery // boundary
	stFunc  // boundary
	stSync  // boundary
)

func (k stateOpKind) boundary() bool { return k == stQuery || k == stFunc || k == stSync }

// stateOp is one client message on its way to the server.
type stateOp struct {
	kind   stateOpKind
	name   string
	stmt   *stmtInfo   // stParse: the definition; nil when custos refused it
	portal *portalInfo // stBind: the portal as bound
	// effects are, for stExecute and stQuery, the statements whose
	// CommandComplete may change statements or portals; next is the index
	// of the statement the next CommandComplete answers.
	effects []sqlclass.Statement
	next    int
	copyIn  bool     // the server entered COPY FROM STDIN for it
	after   *stateOp // stSync: sent while after might be in copy-in
	done    bool
	// role marks custos' own role change around an approved statement
	// (approvalrole.go); nil for the client's messages.
	role *roleOp
}

// sessionState is the policy hook's model of the server's session.
type sessionState struct {
	stmts   map[string]*stmtInfo   // confirmed statements ("" is the unnamed one)
	portals map[string]*portalInfo // confirmed portals

	queue      []*stateOp // sent, not yet answered, in order
	boundaries int        // boundary ops in queue
	batch      []*stateOp // sent since the last boundary (client side)
	truncated  bool       // batch lost its oldest ops (see maxBatch)
	skipping   bool       // the server skips until the next Sync
	copyOp     *stateOp   // the last Query or Execute, until CopyDone
	lost       bool       // custos no longer follows the server's answers

	changed chan struct{} // closed when a boundary is answered
}

func newSessionState() *sessionState {
	return &sessionState{stmts: map[string]*stmtInfo{}, portals: map[string]*portalInfo{}}
}

// push records a client message about to go upstream.
func (s *sessionState) push(op *stateOp) {
	if op.kind == stSync {
		s.skipping = false
		if c := s.copyOp; c != nil && !c.done {
			if c.copyIn {
				return // the server ignores Sync during COPY FROM STDIN
			}
			op.after = c
		}
	}
	switch op.kind {
	case stQuery, stExecute:
		s.copyOp = op
	default:
		if op.kind != stSync {
			s.copyOp = nil
		}
	}
	if op.kind.boundary() {
		clear(s.batch)
		s.batch = s.batch[:0]
		s.truncated = false
	} else {
		if len(s.batch) >= maxBatch {
			n := copy(s.batch, s.batch[maxBatch/2:])
			clear(s.batch[n:])
			s.batch = s.batch[:n]
			s.truncated = true
		}
		if op.kind != stDescribe && (op.kind != stExecute || touchesNames(op.effects)) {
			s.batch = append(s.batch, op) // only what lookups look at
		}
	}
	if s.skipping && op.kind != stSync {
		return // the server will not answer it
	}
	s.queue = append(s.queue, op)
	if op.kind.boundary() {
		s.boundaries++
	}
}

// copyEnded notes the client's CopyDone or CopyFail.
func (s *sessionState) copyEnded() { s.copyOp = nil }

// settle waits, with mu (the hook's mutex) held on entry and return, until
// the server has answered every batch before the current one. It reports
// false when custos cannot rely on what the server confirmed.
//
// flush sends what is still buffered for the server (the earlier batches
// may sit there), without the mutex.
func (s *sessionState) settle(ctx context.Context, unlock, lock, flush func()) bool {
	if s.lost {
		return false
	}
	if s.boundaries == 0 {
		return true
	}
	t := time.NewTimer(settleTimeout)
	defer t.Stop()
	flushed := false
	for s.boundaries > 0 && !s.lost {
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		unlock()
		if !flushed {
			flush()
			flushed = true
		}
		select {
		case <-ch:
		case <-ctx.Done():
		case <-t.C:
		}
		lock()
		if ctx.Err() != nil {
			return false
		}
		select {
		case <-t.C:
			return s.boundaries == 0 && !s.lost
		default:
		}
	}
	return !s.lost
}

// lookupStmt returns the definition the server will use for the statement
// name when the message being handled runs, and whether custos knows the
// name to exist. settle is called when the answer depends on earlier
// batches.
func (s *sessionState) lookupStmt(name string, settle func() bool) (*stmtInfo, bool) {
	for i := len(s.batch) - 1; i >= 0; i-- {
		op := s.batch[i]
		switch op.kind {
		case stParse:
			if op.name == name {
				return op.stmt, op.stmt != nil
			}
		case stCloseStmt:
			if op.name == name {
				return nil, false
			}
		case stExecute:
			if touchesStmt(op.effects, name) {
				return nil, false // unsure: forget
			}
		}
	}
	if s.truncated || !settle() {
		return nil, false
	}
	info := s.stmts[name]
	return info, info != nil
}

// lookupPortal is lookupStmt for portals.
func (s *sessionState) lookupPortal(name string, settle func() bool) *portalInfo {
	for i := len(s.batch) - 1; i >= 0; i-- {
		op := s.batch[i]
		switch op.kind {
		case stBind:
			if op.name == name {
				return op.portal
			}
		case stClosePortal:
			if op.name == name {
				return nil
			}
		case stExecute:
			if touchesPortals(op.effects) {
				return nil
			}
		}
	}
	if s.truncated || !settle() {
		return nil
	}
	return s.portals[name]
}

// touchesStmt reports whether running stmts may change what the prepared
// statement name is.
func touchesStmt(stmts []sqlclass.Statement, name string) bool {
	for _, st := range stmts {
		switch st.Command {
		case "PREPARE", "DEALLOCATE":
			if st.Name == name || st.Name == "*" {
				return true
			}
		case "DISCARD":
			return true
		}
	}
	return false
}

// touchesNames reports whether running stmts may change any statement or
// portal.
func touchesNames(stmts []sqlclass.Statement) bool {
	for _, st := range stmts {
		switch st.Command {
		case "PREPARE", "DEALLOCATE", "DISCARD":
			return true
		}
	}
	return touchesPortals(stmts)
}

// touchesPortals reports whether running stmts may close or create
// portals.
func touchesPortals(stmts []sqlclass.Statement) bool {
	for _, st := range stmts {
		switch st.Command {
		case "COMMIT", "ROLLBACK", "ROLLBACK TO", "PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED",
			"TRANSACTION", "CLOSE", "DECLARE", "CALL", "DISCARD", "DO":
			return true
		}
	}
	return false
}

// portalTags are the CommandComplete tags after which the server's
// portals may have changed behind custos' back.
var portalTags = map[string]bool{
	"COMMIT": true, "ROLLBACK": true, "PREPARE TRANSACTION": true, "COMMIT PREPARED": true,
	"ROLLBACK PREPARED": true, "CLOSE CURSOR": true, "CLOSE CURSOR ALL": true, "DECLARE CURSOR": true,
	"CALL": true, "DISCARD ALL": true, "DO": true,
}

func (s *sessionState) front() *stateOp {
	if len(s.queue) == 0 {
		return nil
	}
	return s.queue[0]
}

func (s *sessionState) pop() {
	op := s.queue[0]
	op.done = true
	s.queue[0] = nil
	s.queue = s.queue[1:]
	if len(s.queue) == 0 {
		s.queue = s.queue[:0:0]
	}
	if op.kind.boundary() {
		s.boundaries--
		s.notify()
	}
}

func (s *sessionState) notify() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// lose gives up on following the server: nothing learnt before is
// trusted and nothing is committed from now on.
func (s *sessionState) lose() {
	s.lost = true
	clear(s.stmts)
	clear(s.portals)
	s.notify()
}

// server applies one server message to the model.
func (s *sessionState) server(typ byte, body []byte) {
	if s.lost {
		return
	}
	op := s.front()
	switch typ {
	case '1', '2', '3':
		want := map[byte]stateOpKind{'1': stParse, '2': stBind, '3': stCloseStmt}[typ]
		if op == nil || (op.kind != want && (typ != '3' || op.kind != stClosePortal)) {
			s.lose()
			return
		}
		switch op.kind {
		case stParse:
			if op.stmt == nil || op.stmt.err != nil {
				s.lose() // custos made sure it would fail
				return
			}
			s.stmts[op.name] = op.stmt
		case stBind:
			s.portals[op.name] = op.portal
		case stCloseStmt:
			delete(s.stmts, op.name)
		case stClosePortal:
			delete(s.portals, op.name)
		}
		s.pop()
	case 'C':
		tag, _, _ := cstring(body)
		if op == nil || (op.kind != stExecute && op.kind != stQuery) {
			s.lose()
			return
		}
		var st *sqlclass.Statement
		if op.next < len(op.effects) {
			st = &op.effects[op.next]
		}
		op.next++
		if !s.apply(st, tag) {
			s.lose()
			return
		}
		if op.kind == stExecute {
			s.pop()
		}
	case 'I', 's':
		if op != nil && op.kind == stExecute {
			s.pop()
		}
	case 'T', 'n':
		if op != nil && op.kind == stDescribe {
			s.pop()
		}
	case 'G':
		if op != nil && (op.kind == stQuery || op.kind == stExecute) {
			op.copyIn = true
			kept := s.queue[:1]
			for _, o := range s.queue[1:] {
				if o.kind == stSync && o.after == op {
					o.done = true
					s.boundaries--
					continue
				}
				kept = append(kept, o)
			}
			s.queue = kept
		}
	case 'E':
		if op == nil {
			return
		}
		switch op.kind {
		case stQuery, stFunc, stSync:
			return // the Query ends; ReadyForQuery follows
		case stParse:
			if op.name == "" {
				delete(s.stmts, "") // dropped before the new one is parsed
			}
		case stBind:
			if op.name == "" {
				delete(s.portals, "")
			}
		}
		// The server skips everything up to the next Sync.
		for len(s.queue) > 0 && s.queue[0].kind != stSync {
			s.pop()
		}
		if len(s.queue) == 0 {
			s.skipping = true
		}
	case 'Z':
		if op == nil {
			s.lose()
			return
		}
		if !op.kind.boundary() {
			s.lose() // an answer custos did not see
			return
		}
		s.pop()
		if op.kind == stQuery {
			// A simple query uses (and drops) the unnamed statement and portal.
			delete(s.stmts, "")
			delete(s.portals, "")
		}
		if len(body) > 0 && body[0] == 'I' {
			// Out of a transaction block: the server's portals are gone.
			// (In a failed one only a rollback can run, and its
			// CommandComplete forgets them.)
			clear(s.portals)
		}
	}
}

// apply changes the model for the CommandComplete tag answering st (nil
// when custos did not expect one); false when the two disagree.
func (s *sessionState) apply(st *sqlclass.Statement, tag string) bool {
	if portalTags[tag] {
		clear(s.portals)
	}
	cmd := ""
	if st != nil {
		cmd = st.Command
	}
	switch tag {
	case "PREPARE":
		if cmd != "PREPARE" || st.Prepared == nil {
			return false
		}
		s.stmts[st.Name] = preparedInfo(st)
	case "DEALLOCATE":
		if cmd != "DEALLOCATE" {
			return false
		}
		delete(s.stmts, st.Name)
	case "DEALLOCATE ALL":
		if cmd != "DEALLOCATE" {
			return false
		}
		for name := range s.stmts {
			if name != "" {
				delete(s.stmts, name)
			}
		}
	case "DISCARD ALL":
		clear(s.stmts)
	default:
		switch cmd {
		case "PREPARE", "DEALLOCATE":
			return false
		case "DISCARD":
			if !strings.HasPrefix(tag, "DISCARD ") {
				return false
			}
		}
	}
	return true
}

// preparedInfo is the definition a SQL-level PREPARE gives its name.
func preparedInfo(st *sqlclass.Statement) *stmtInfo {
	return &stmtInfo{
		text: st.Text,
		res: &sqlclass.Result{
			Normalized: st.Normalized, Fingerprint: "prepare:" + st.Normalized,
			Statements: []sqlclass.Statement{*st.Prepared},
		},
	}
}
