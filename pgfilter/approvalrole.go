package pgfilter

import (
	"crypto/rand"
	"encoding/hex"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/sqlclass"
)

// A group login that cannot write (config UpstreamLogin.ApprovedRole) is a
// NOINHERIT member of a role that can: its own privileges are what the
// database enforces for everything the session runs, so a statement custos
// misjudged still cannot write. Only a statement approvers approved runs
// with the write role, and custos alone takes it, around that statement:
//
//	simple Query:  Query "SET ROLE r"  ->  the approved Query  ->  Query "RESET ROLE"
//	Execute:       Parse/Bind/Execute/Close/Close "SET ROLE r" -> the approved
//	               Execute -> Parse/Bind/Execute/Close/Close "RESET ROLE"
//
// in the server's order, before anything the client sent after the approved
// message. custos' messages go into the session model's queue
// (policystate.go) like the client's, marked as its own, so the server's
// answers to them are known by their place and never reach the client.
// The extended-protocol steps use a prepared statement and portal with
// names drawn at random per session (the unnamed ones belong to the
// client) and send no Sync: SET ROLE shares the approved statement's
// transaction, so if that statement fails the rollback that follows also
// undoes the SET, and a SET ROLE that fails makes the server skip the
// approved Execute too (its error is the client's answer).
//
// A simple Query cannot share a transaction with a Query custos sends
// before it when the session is idle, so there SET ROLE commits on its
// own; RESET ROLE, sent right after, then always runs in a fresh
// transaction. It can fail only when the approved Query leaves a failed
// transaction block: that is safe when SET ROLE itself ran in that block
// and the approved Query controls no transaction (every way out of the
// block, ROLLBACK or ROLLBACK TO an earlier savepoint, undoes the SET);
// otherwise custos cannot know the role is gone and ends the session.
//
// Not covered: an approved COPY FROM STDIN runs as the login (a Query sent
// during COPY IN would end the copy), so a login without write privileges
// cannot run one; approve it for a login that can write.

// roleOp marks a session-model operation as custos' own role change.
type roleOp struct {
	reset bool // RESET ROLE; else SET ROLE
	// failed: the server answered it with an error.
	failed bool
	// For a simple-protocol RESET: its SET (to learn where it ran) and
	// whether the approved statements control transactions.
	set       *roleOp
	inBlock   bool // the SET's ReadyForQuery said: in a transaction block
	txControl bool
}

// roleNames are the per-session names of custos' own prepared statement
// and portal for role changes.
type roleNames struct{ stmt, portal string }

func newRoleNames() roleNames {
	var b [12]byte
	_, _ = rand.Read(b[:])
	n := "custos_role_" + hex.EncodeToString(b[:])
	return roleNames{stmt: n, portal: n}
}

// approvedRole is the role the session takes for approved statements;
// empty when its login needs none.
func (h *policyHook) approvedRole() string {
	if l := h.ses.Login; l != nil {
		return l.ApprovedRole
	}
	return ""
}

// takeApprovedRole sends SET ROLE ahead of an approved statement (the
// message being handled, a Query when simple, else an Execute) and has the
// relay send RESET ROLE right after it. It does nothing when the login
// needs no role, for COPY FROM STDIN, and when custos no longer follows
// the server's answers (the statement then runs as the login, which fails
// closed). h.mu is held.
func (h *policyHook) takeApprovedRole(stmts []sqlclass.Statement, simple bool) error {
	role := h.approvedRole()
	if role == "" || h.relay == nil || h.state.lost || copiesIn(stmts) {
		return nil
	}
	if h.roleNames.stmt == "" {
		h.roleNames = newRoleNames()
	}
	set := &roleOp{}
	reset := &roleOp{reset: true, set: set, txControl: controlsTransactions(stmts)}
	setSQL := "SET ROLE " + pgx.Identifier{role}.Sanitize()
	setMsgs, setOps := h.roleMessages(setSQL, set, simple)
	resetMsgs, resetOps := h.roleMessages("RESET ROLE", reset, simple)
	var resetBuf []byte
	for _, m := range resetMsgs {
		var err error
		if resetBuf, err = m.Encode(resetBuf); err != nil {
			return err
		}
	}
	for _, op := range setOps {
		h.state.push(op)
	}
	if err := h.relay.SendToServer(setMsgs...); err != nil {
		return err
	}
	// The approved message's own op is pushed by Handle after this
	// returns; RESET's ops follow it there, and the relay writes RESET's
	// bytes right after the message, before anything else the client sent.
	h.resetOps = resetOps
	h.relay.afterForward = func(w *frameWriter) error { return w.writeEncoded(resetBuf) }
	h.srv.log.Info("approved statement runs with the approved role", "session_id", h.ses.ID, "role", role)
	return nil
}

// roleMessages are the messages that run sql as custos' own, and their
// session-model operations.
func (h *policyHook) roleMessages(sql string, r *roleOp, simple bool) ([]pgproto3.FrontendMessage, []*stateOp) {
	if simple {
		return []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}},
			[]*stateOp{{kind: stQuery, role: r}}
	}
	n := h.roleNames
	return []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: n.stmt, Query: sql},
			&pgproto3.Bind{DestinationPortal: n.portal, PreparedStatement: n.stmt},
			&pgproto3.Execute{Portal: n.portal},
			&pgproto3.Close{ObjectType: 'P', Name: n.portal},
			&pgproto3.Close{ObjectType: 'S', Name: n.stmt},
		}, []*stateOp{
			{kind: stParse, name: n.stmt, role: r},
			{kind: stBind, name: n.portal, role: r},
			{kind: stExecute, role: r},
			{kind: stClosePortal, name: n.portal, role: r},
			{kind: stCloseStmt, name: n.stmt, role: r},
		}
}

// pushResetOps queues RESET ROLE's operations after the approved
// message's own.
func (h *policyHook) pushResetOps() {
	for _, op := range h.resetOps {
		h.state.push(op)
	}
	h.resetOps = nil
}

// roleAnswer handles a server message answering custos' own role change
// op (the front of the session model's queue): the client never sees it,
// except the error of a failed extended-protocol SET ROLE, which stands for
// the approved Execute the server then skips. An error return ends the
// session.
func (h *policyHook) roleAnswer(op *stateOp, m *Message) (Verdict, error) {
	r := op.role
	switch m.Type {
	case 'N', 'S', 'A':
		return Forward, nil // not an answer: notices and reports pass
	}
	if m.Type == 'E' && !r.reset {
		var er pgproto3.ErrorResponse
		_ = er.Decode(m.Body)
		h.srv.log.Warn("approved role could not be taken (simple protocol: the statement runs as the login; extended: the server skips it)", "session_id", h.ses.ID,
			"role", h.approvedRole(), "sqlstate", er.Code, "error", er.Message)
	}
	if op.kind == stQuery {
		switch m.Type {
		case 'E':
			r.failed = true
		case 'Z':
			if len(m.Body) > 0 && !r.reset {
				r.inBlock = m.Body[0] == 'T' || m.Body[0] == 'E'
			}
			h.state.server(m.Type, m.Body) // pops it; a Query drops the unnamed statement
			if r.reset && r.failed && !r.resetUnneeded() {
				h.srv.log.Error("approved role could not be dropped; the session ends", "session_id", h.ses.ID)
				return Drop, fatal("XX000", "custos could not drop the role of the approved statement; the session is closed")
			}
		}
		return Drop, nil
	}
	switch m.Type {
	case '1', '2', '3', 'C':
		h.state.pop()
		return Drop, nil
	case 'E':
		if r.reset {
			h.srv.log.Error("approved role could not be dropped; the session ends", "session_id", h.ses.ID)
			return Drop, fatal("XX000", "custos could not drop the role of the approved statement; the session is closed")
		}
		// SET ROLE failed: the server skips to the client's Sync, the
		// approved Execute included; this error is its answer.
		r.failed = true
		h.state.server(m.Type, m.Body)
		return Forward, nil
	}
	h.srv.log.Error("unexpected answer to custos' role change", "session_id", h.ses.ID, "type", string(rune(m.Type)))
	return Drop, fatal("XX000", "custos lost track of the server's answers; the session is closed")
}

// resetUnneeded reports whether a failed simple-protocol RESET ROLE leaves
// no role behind: its SET failed, or ran inside the transaction block the
// approved Query left failed without controlling transactions itself.
func (r *roleOp) resetUnneeded() bool {
	return r.set == nil || r.set.failed || (r.set.inBlock && !r.txControl)
}

func copiesIn(stmts []sqlclass.Statement) bool {
	for _, st := range stmts {
		if st.Command == "COPY" && slices.Contains(st.Flags, sqlclass.FlagCopyFrom) {
			return true
		}
	}
	return false
}

// controlsTransactions reports whether running stmts may start or end a
// transaction or subtransaction.
func controlsTransactions(stmts []sqlclass.Statement) bool {
	for _, st := range stmts {
		switch st.Command {
		case "BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "ROLLBACK TO",
			"PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED", "TRANSACTION", "CALL", "DO":
			return true
		}
	}
	return false
}
