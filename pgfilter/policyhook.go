package pgfilter

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/internal/sqlclass"
)

// policyHook decides every statement before anything with an effect
// reaches the server.
//
// Simple protocol: the whole query string is classified and decided once
// (one deny refuses all of it). Extended protocol: a statement is
// classified at Parse and decided at each Execute, the only message with
// effects. SQL-level PREPARE is remembered per session so that EXECUTE is
// decided as what it runs. FunctionCall messages are decided by function
// name.
//
// A refused message is not answered by custos: it is replaced by one the
// server rejects (a FETCH from, or an Execute of, a cursor or portal that
// does not exist, named with a session token; a Parse of text that does
// not parse; a FunctionCall of OID 0). The server then fails the
// transaction and discards until Sync exactly as for a real error, and
// custos rewrites that error into its own refusal. The client sees the
// server's true transaction state.
type policyHook struct {
	srv *Server
	ses *Session
	cls *sqlclass.Classifier
	eng *policy.Engine

	relay *session // parks statements that wait for approval
	led   *ledger  // receives each statement for its record; nil without one
	rec   StatementRecorder
	// approvalID is the approval request of the statement being decided.
	approvalID string
	token      string        // names the objects denied messages refer to
	masker     *resultMasker // receives an allowed statement's mask rules

	mu      sync.Mutex
	state   *sessionState // statements and portals, as the server confirmed them
	denials map[int]*pgproto3.ErrorResponse
	next    int
	fcall   *pgproto3.ErrorResponse // a refused FunctionCall's answer
	encoded map[*sqlclass.Result]json.RawMessage
	decided map[*sqlclass.Result]rememberedDecision
	// pathChanged: a statement may have changed search_path, so function
	// names are resolved in any schema (routines.go); path is the
	// session's search_path until then, once worked out.
	pathChanged bool
	path        *searchPath

	// roleNames and resetOps serve approved statements' role changes
	// (approvalrole.go): resetOps wait to be queued after the approved
	// message's own operation.
	roleNames roleNames
	resetOps  []*stateOp
}

type stmtInfo struct {
	text string
	res  *sqlclass.Result
	err  error
	pan  bool // the text holds something like a card number
}

// portalInfo is what custos knows of a bound portal: the statement it was
// bound to (nil when custos knew of none) and, when statements may be
// parked, a copy of the Bind that pins its parameters.
type portalInfo struct {
	info *stmtInfo
	bind []byte
}

func newPolicyHook(s *Server, ses *Session) *policyHook {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &policyHook{
		srv: s, ses: ses, cls: s.opts.Classifier, eng: s.opts.Policy,
		token:   "custos_denied_" + hex.EncodeToString(b[:]) + "_",
		state:   newSessionState(),
		denials: map[int]*pgproto3.ErrorResponse{},
		encoded: map[*sqlclass.Result]json.RawMessage{},
		decided: map[*sqlclass.Result]rememberedDecision{},
	}
}

// Wants implements Hook.
func (h *policyHook) Wants(d Direction, typ byte) bool {
	if d == ClientToServer {
		switch typ {
		case 'Q', 'P', 'B', 'E', 'F', 'C', 'S', 'D', 'c', 'f':
			return true
		}
		return false
	}
	switch typ {
	case 'E', 'Z', '1', '2', '3', 'C', 'I', 's', 'T', 'n', 'G':
		return true
	}
	return false
}

// Close implements Hook.
func (h *policyHook) Close(error) {}

// Handle implements Hook.
func (h *policyHook) Handle(ctx context.Context, d Direction, m *Message, _ Conn) (Verdict, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d == ServerToClient {
		if op := h.state.front(); op != nil && op.role != nil && !h.state.lost {
			return h.roleAnswer(op, m)
		}
		h.server(m)
		h.state.server(m.Type, m.Body)
		return Forward, nil
	}
	switch m.Type {
	case 'Q':
		op := &stateOp{kind: stQuery}
		err := h.query(ctx, m, op)
		h.state.push(op)
		h.pushResetOps()
		if err != nil {
			return Forward, err
		}
	case 'P':
		h.parse(ctx, m)
	case 'B':
		h.bind(ctx, m)
	case 'E':
		op := &stateOp{kind: stExecute}
		err := h.execute(ctx, m, op)
		h.state.push(op)
		h.pushResetOps()
		if err != nil {
			return Forward, err
		}
	case 'F':
		h.functionCall(ctx, m)
		h.state.push(&stateOp{kind: stFunc})
	case 'S':
		if h.led != nil {
			h.led.push(&stmtEntry{kind: kindSync})
		}
		h.state.push(&stateOp{kind: stSync})
	case 'D':
		h.state.push(&stateOp{kind: stDescribe})
	case 'C':
		if len(m.Body) > 1 {
			name, _, _ := cstring(m.Body[1:])
			kind := stClosePortal
			if m.Body[0] == 'S' {
				kind = stCloseStmt
			}
			h.state.push(&stateOp{kind: kind, name: name})
		}
	case 'c', 'f':
		h.state.copyEnded()
	}
	return Forward, nil
}

// settle waits for the server's answers to earlier batches (see
// sessionState); h.mu is held on entry and return.
func (h *policyHook) settle(ctx context.Context) func() bool {
	return func() bool { return h.state.settle(ctx, h.mu.Unlock, h.mu.Lock, h.flushServer) }
}

// flushServer sends upstream what the relay still buffers.
func (h *policyHook) flushServer() {
	if h.relay != nil {
		_ = h.relay.SendToServer() // a write error ends the session elsewhere
	}
}

// bind notes the portal a Bind creates, bound to the statement the server
// will use. A Bind that would replace a named portal custos knows of is
// refused: it is replaced by a Bind of a statement that does not exist.
func (h *policyHook) bind(ctx context.Context, m *Message) {
	// Only the names are read; the server refuses a Bind malformed after them.
	var b bindMsg
	tail, err := b.decodeThrough(m.Body, bindNames)
	if err != nil {
		return
	}
	name, stmt := string(b.Portal), string(b.Statement)
	if name != "" && h.state.lookupPortal(name, h.settle(ctx)) != nil {
		resp := h.nameRefusal("42P03", fmt.Sprintf("portal %q already exists", name),
			"custos does not let a named portal be bound again before it is closed", hintRedefine)
		n := h.addDenial(resp)
		body := append([]byte(name), 0)
		body = append(body, h.token+strconv.Itoa(n)...)
		body = append(body, 0)
		m.Body = append(body, tail...)
		h.state.push(&stateOp{kind: stBind, name: name, portal: &portalInfo{}})
		return
	}
	info, _ := h.state.lookupStmt(stmt, h.settle(ctx))
	p := &portalInfo{info: info}
	if h.srv.opts.Approvals != nil || h.led != nil {
		p.bind = append([]byte(nil), m.Body...)
	}
	h.state.push(&stateOp{kind: stBind, name: name, portal: p})
}

// nameRefusal is the client's answer to a message custos refused because
// it would redefine a name: code is the server's own for the case.
func (h *policyHook) nameRefusal(code, what, why, hint string) *pgproto3.ErrorResponse {
	id := h.custosDecision(why).ID
	return &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code,
		Message: "custos: " + what + "; " + why + " (decision " + id + ")",
		Detail:  "decision id: " + id,
		Hint:    hint,
	}
}

const hintRedefine = "Close it first, or use another name."

// custosDecision is a refusal custos makes itself, for reason: counted and
// logged as the policy's are.
func (h *policyHook) custosDecision(reason string) *policy.Decision {
	dec := &policy.Decision{ID: policy.NewDecisionID(), Reasons: []string{reason}}
	h.srv.metrics.decided(dec)
	h.logRefusal(dec, "")
	return dec
}

// logRefusal logs a decision that refuses or parks a statement (query: its
// normalized text, if known).
func (h *policyHook) logRefusal(dec *policy.Decision, query string) {
	args := []any{"session_id", h.ses.ID, "principal", h.ses.Principal.Subject,
		"decision_id", dec.ID, "outcome", dec.Label(), "reasons", dec.Reasons}
	if query != "" {
		args = append(args, "query", query)
	}
	h.srv.log.Info("statement refused", args...)
}

// query decides a simple-protocol query string; op receives its
// statements when it goes upstream as sent.
func (h *policyHook) query(ctx context.Context, m *Message, op *stateOp) error {
	q, _, ok := cstring(m.Body)
	if !ok {
		return nil // the server will reject the malformed message
	}
	e := h.entry(kindQuery)
	defer h.enqueue(e)
	if e != nil && mask.Contains(m.Body) {
		e.panSources = []string{q}
	}
	res, err := h.classify(ctx, q)
	if err != nil {
		h.refuseQuery(m, h.refused(e, h.syntaxRefusal(e, err)))
		return nil
	}
	if len(res.Statements) == 0 {
		if e != nil {
			e.silent = true
		}
		return nil
	}
	stmts, shadow := h.resolve(ctx, res.Statements)
	if shadow == nil {
		stmts = h.resolveRoutines(ctx, stmts)
	}
	if e != nil {
		e.describe(res, stmts)
	}
	if shadow != nil {
		h.refuseQuery(m, h.refused(e, shadow))
		return nil
	}
	if e != nil && h.rec.Admit(h.ses) != nil {
		h.refuseQuery(m, h.failed(e, auditRefusal()))
		return nil
	}
	dec := h.decide(ctx, res, stmts)
	h.noteDecision(e, dec)
	if h.parks(dec) {
		out := h.park(ctx, m, dec, res, stmts, q, nil)
		h.approvalID = out.approvalID
		if out.err != nil {
			return out.err
		}
		if out.refusal != nil {
			h.refuseQuery(m, h.refused(e, out.refusal))
			return nil
		}
		if err := h.takeApprovedRole(stmts, true); err != nil {
			return err
		}
	} else if resp := refusal(dec); resp != nil {
		h.refuseQuery(m, h.refused(e, resp))
		return nil
	}
	op.effects = res.Statements
	h.handMask(dec)
	h.sent(e)
	return nil
}

// park holds the message m (a Query, or the Execute of a portal bound by
// bind) until approvers decide on it, and returns how that ended (see
// parkOutcome); the caller applies the outcome. h.mu is held on entry and
// on return; it is released only inside awaitDecision.
func (h *policyHook) park(ctx context.Context, m *Message, dec *policy.Decision, res *sqlclass.Result,
	stmts []sqlclass.Statement, text string, bind []byte,
) parkOutcome {
	pa, resp := h.requestApproval(ctx, dec, res, stmts, text, bind)
	if resp != nil {
		return parkOutcome{refusal: resp}
	}
	held := bytes.Clone(m.Body) // the reader's buffer is reused while waiting
	got, werr := h.awaitDecision(ctx, pa, h.parkedNotice(pa.req))
	m.Body = held
	return h.concludePark(ctx, pa, got, werr)
}

// entry starts the record of a statement that just arrived; nil when
// statements are not recorded.
func (h *policyHook) entry(kind stmtKind) *stmtEntry {
	h.approvalID = ""
	if h.led == nil {
		return nil
	}
	return &stmtEntry{kind: kind, start: time.Now()}
}

// enqueue hands the statement's entry to the ledger before the message
// goes upstream.
func (h *policyHook) enqueue(e *stmtEntry) {
	if e != nil {
		e.approvalID = h.approvalID
		h.led.push(e)
	}
}

func (h *policyHook) noteDecision(e *stmtEntry, dec *policy.Decision) {
	if e != nil {
		e.dec, e.decided = dec, time.Now()
	}
}

func (h *policyHook) sent(e *stmtEntry) {
	if e != nil {
		e.sent = time.Now()
	}
}

// refused notes that custos refused the statement with resp; it returns
// resp.
func (h *policyHook) refused(e *stmtEntry, resp *pgproto3.ErrorResponse) *pgproto3.ErrorResponse {
	if e != nil {
		e.refused = true
		if e.text == "" && resp.Code == "42601" {
			e.text = "(a statement that does not parse)"
		}
	}
	return resp
}

// failed notes that custos could not let the statement run; it returns
// resp.
func (h *policyHook) failed(e *stmtEntry, resp *pgproto3.ErrorResponse) *pgproto3.ErrorResponse {
	if e != nil {
		e.refused, e.failed = true, true
	}
	return resp
}

// handMask gives the masking hook, which sees the same message next, the
// decision's mask rules.
func (h *policyHook) handMask(dec *policy.Decision) {
	if h.masker == nil || dec == nil || dec.Mask == nil {
		return
	}
	r := &maskRules{noDetect: !dec.Mask.DetectPAN}
	if s, err := mask.ParseStrategy(dec.Mask.Reveal); err == nil && s == mask.BINLast4 {
		r.reveal = s
	}
	if len(dec.Mask.Columns) > 0 {
		r.columns = make(map[string]mask.Strategy, len(dec.Mask.Columns))
		for col, st := range dec.Mask.Columns {
			s, err := mask.ParseStrategy(st)
			if err != nil {
				s = mask.Null // an unknown strategy shows nothing
			}
			r.columns[col] = s
		}
	}
	h.masker.setRules(r)
}

// parse classifies an extended-protocol statement; one that does not
// parse is replaced by text the server cannot parse either, and so is the
// Parse of a named statement custos knows to exist (the server would
// refuse it, but custos does not let a name be redefined before it is
// closed).
func (h *policyHook) parse(ctx context.Context, m *Message) {
	op := &stateOp{kind: stParse}
	defer h.state.push(op)
	name, rest, ok := cstring(m.Body)
	if !ok {
		return
	}
	op.name = name
	q, tail, ok := cstring(rest)
	if !ok {
		return
	}
	var resp *pgproto3.ErrorResponse
	if name != "" {
		if _, exists := h.state.lookupStmt(name, h.settle(ctx)); exists {
			resp = h.nameRefusal("42P05", fmt.Sprintf("prepared statement %q already exists", name),
				"custos does not let a prepared statement be defined again before it is closed", hintRedefine)
		}
	}
	if resp == nil {
		res, err := h.classify(ctx, q)
		op.stmt = &stmtInfo{text: q, res: res, err: err, pan: h.led != nil && mask.Contains(rest)}
		if err == nil {
			return
		}
		resp = h.syntaxRefusal(nil, err)
	}
	n := h.addDenial(resp)
	body := append([]byte(name), 0)
	body = append(body, h.token+strconv.Itoa(n)...)
	body = append(body, 0)
	m.Body = append(body, tail...)
}

// execute decides the statement behind a portal at the moment it would
// run; op receives its statements when it goes upstream as sent.
func (h *policyHook) execute(ctx context.Context, m *Message, op *stateOp) error {
	portal, _, ok := cstring(m.Body)
	if !ok {
		return nil
	}
	e := h.entry(kindExec)
	defer h.enqueue(e)
	var resp *pgproto3.ErrorResponse
	p := h.state.lookupPortal(portal, h.settle(ctx))
	var info *stmtInfo
	if p != nil {
		info = p.info
	}
	if e != nil && info != nil {
		if info.pan {
			e.panSources = append(e.panSources, info.text)
		}
		if mask.Contains(p.bind) {
			e.panSources = append(e.panSources, string(p.bind))
		}
	}
	switch {
	case info == nil:
		// custos cannot tie the portal to a definition the server
		// confirmed or that this batch makes: nothing unknown runs.
		resp = h.refused(e, denyResponse("custos has no record of what this portal runs", policy.NewDecisionID()))
		resp.Hint = "Bind the portal again (after a Sync, or in the same batch as its Execute)."
		if e != nil {
			e.text = "(unknown portal)"
		}
	case info.err != nil:
		h.refused(e, h.syntaxRefusal(e, info.err))
		return nil // its Parse already failed at the server
	case len(info.res.Statements) == 0:
		if e != nil {
			e.silent = true
		}
		return nil
	default:
		stmts, shadow := h.resolve(ctx, info.res.Statements)
		if shadow == nil {
			stmts = h.resolveRoutines(ctx, stmts)
		}
		if e != nil {
			e.describe(info.res, stmts)
		}
		if shadow != nil {
			resp = h.refused(e, shadow)
			break
		}
		if e != nil && h.rec.Admit(h.ses) != nil {
			resp = h.failed(e, auditRefusal())
			break
		}
		dec := h.decide(ctx, info.res, stmts)
		h.noteDecision(e, dec)
		if h.parks(dec) {
			out := h.park(ctx, m, dec, info.res, stmts, info.text, p.bind)
			h.approvalID = out.approvalID
			if out.err != nil {
				return out.err
			}
			resp = out.refusal
			if resp == nil {
				if err := h.takeApprovedRole(stmts, false); err != nil {
					return err
				}
			}
		} else {
			resp = refusal(dec)
		}
		if resp == nil {
			op.effects = info.res.Statements
			h.handMask(dec)
			h.sent(e)
			return nil
		}
		h.refused(e, resp)
	}
	h.refuseExecute(m, resp)
	return nil
}

// refuseExecute replaces an Execute with one of a portal that does not
// exist; the server's error is rewritten into resp.
func (h *policyHook) refuseExecute(m *Message, resp *pgproto3.ErrorResponse) {
	_, tail, _ := cstring(m.Body)
	n := h.addDenial(resp)
	body := append([]byte(h.token+strconv.Itoa(n)), 0)
	m.Body = append(body, tail...)
}

// functionCall decides a FunctionCall message by function name.
func (h *policyHook) functionCall(ctx context.Context, m *Message) {
	if len(m.Body) < 4 {
		return
	}
	e := h.entry(kindFunc)
	defer h.enqueue(e)
	oid := binary.BigEndian.Uint32(m.Body)
	name := "oid " + strconv.FormatUint(uint64(oid), 10)
	if up := h.srv.upstreams[h.ses.Resource.Name]; up != nil && up.catalog != nil {
		if n, err := up.catalog.functionName(ctx, oid); err == nil && n != "" {
			name = n
		}
	}
	stmt := sqlclass.Statement{
		Command: "FUNCTION CALL", Functions: []string{name},
		Flags: []string{"side_effect_function"}, Normalized: "FUNCTION CALL " + name,
	}
	res := &sqlclass.Result{Normalized: stmt.Normalized, Fingerprint: "function-call:" + name, Statements: []sqlclass.Statement{stmt}}
	if e != nil {
		e.describe(res, res.Statements)
		if mask.Contains(m.Body) {
			e.panSources = []string{string(m.Body)}
		}
		if h.rec.Admit(h.ses) != nil {
			h.fcall = h.failed(e, auditRefusal())
			binary.BigEndian.PutUint32(m.Body, 0)
			return
		}
	}
	dec := h.decide(ctx, res, res.Statements)
	h.noteDecision(e, dec)
	if resp := refusal(dec); resp != nil {
		h.fcall = h.refused(e, resp)
		binary.BigEndian.PutUint32(m.Body, 0)
		return
	}
	h.sent(e)
}

// resolve substitutes, for SQL-level EXECUTE, the statement it runs: the
// definition the server confirmed, or one an earlier statement of the same
// string (or batch) gives. It returns custos' refusal instead when a
// PREPARE would define a name that exists.
func (h *policyHook) resolve(ctx context.Context, stmts []sqlclass.Statement) ([]sqlclass.Statement, *pgproto3.ErrorResponse) {
	out := stmts
	var local map[string]*sqlclass.Statement // names this string defines (nil: deallocated)
	allGone := false
	lookup := func(name string) (*sqlclass.Statement, bool) {
		if st, ok := local[name]; ok {
			return st, st != nil
		}
		if allGone {
			return nil, false
		}
		info, exists := h.state.lookupStmt(name, h.settle(ctx))
		if info == nil || info.err != nil || info.res == nil || len(info.res.Statements) != 1 {
			return nil, exists
		}
		return &info.res.Statements[0], exists
	}
	for i, st := range stmts {
		switch st.Command {
		case "EXECUTE":
			p, _ := lookup(st.Name)
			if p == nil {
				// Nothing ties the name to a definition the server
				// confirmed (or custos could classify): what would run
				// cannot be decided.
				return out, h.nameRefusal("26000", fmt.Sprintf("prepared statement %q is not known to custos", st.Name),
					"custos runs only prepared statements whose definition the server confirmed",
					"PREPARE it first, in this session.")
			}
			if &out[0] == &stmts[0] {
				out = append([]sqlclass.Statement(nil), stmts...)
			}
			out[i] = *p
		case "PREPARE":
			if _, exists := lookup(st.Name); exists {
				return out, h.nameRefusal("42P05", fmt.Sprintf("prepared statement %q already exists", st.Name),
					"custos does not let a prepared statement be defined again before it is deallocated", hintRedefine)
			}
			if local == nil {
				local = map[string]*sqlclass.Statement{}
			}
			local[st.Name] = st.Prepared
		case "DEALLOCATE":
			if local == nil {
				local = map[string]*sqlclass.Statement{}
			}
			if st.Name == "*" {
				clear(local)
				allGone = true
			} else {
				local[st.Name] = nil
			}
		case "DISCARD":
			clear(local)
			allGone = true
		}
	}
	return out, nil
}

// decide asks the policy about the statements; nil without a policy
// (statements are then only recorded).
func (h *policyHook) decide(ctx context.Context, res *sqlclass.Result, stmts []sqlclass.Statement) *policy.Decision {
	if dec := invariantDenial(stmts); dec != nil {
		h.srv.metrics.decided(dec)
		h.logRefusal(dec, res.Normalized)
		return dec
	}
	if h.eng == nil {
		return nil
	}
	if dec := h.recall(res, stmts); dec != nil {
		h.srv.metrics.decided(dec)
		return dec
	}
	in := &policy.Input{
		Version:   1,
		Kind:      "sql",
		Principal: policy.PrincipalOf(h.ses.Principal),
		Session: policy.Session{
			ID: h.ses.ID, ClientAddress: h.ses.ClientAddr,
			ApplicationName: h.ses.Params["application_name"], Database: h.ses.Resource.Database,
		},
		Resource: policy.Resource{Name: h.ses.Resource.Name, Type: "postgres", Labels: h.ses.Resource.Labels},
		SQL:      &policy.SQL{Normalized: res.Normalized, Fingerprint: res.Fingerprint, Statements: h.statementsJSON(res, stmts)},
	}
	dec := h.eng.Decide(ctx, in)
	h.remember(res, stmts, dec)
	h.srv.metrics.decided(dec)
	if !dec.Allow || dec.RequireApproval != nil {
		h.logRefusal(dec, res.Normalized)
	}
	return dec
}

// A session's principal and resource never change, so an allowing
// decision for the same classified text (the classifier shares results)
// under the same policy version is the same decision: the session keeps
// it and skips building the engine's cache key. Each use gets its own id.
type rememberedDecision struct {
	version string
	dec     policy.Decision
}

func (h *policyHook) recall(res *sqlclass.Result, stmts []sqlclass.Statement) *policy.Decision {
	if !ownStatements(res, stmts) {
		return nil
	}
	r, ok := h.decided[res]
	if !ok || r.version != h.eng.Version() {
		return nil
	}
	d := r.dec
	d.ID = policy.NewDecisionID()
	d.Cached = true
	return &d
}

func (h *policyHook) remember(res *sqlclass.Result, stmts []sqlclass.Statement, dec *policy.Decision) {
	if !dec.Allow || dec.RequireApproval != nil || !ownStatements(res, stmts) || dec.PolicyVersion == "" {
		return
	}
	if len(h.decided) > 256 {
		clear(h.decided)
	}
	h.decided[res] = rememberedDecision{version: dec.PolicyVersion, dec: *dec}
}

func ownStatements(res *sqlclass.Result, stmts []sqlclass.Statement) bool {
	return len(stmts) > 0 && len(res.Statements) > 0 && &stmts[0] == &res.Statements[0]
}

// statementsJSON encodes the statements for the policy input once per
// classified text (results are shared by the classifier's cache).
func (h *policyHook) statementsJSON(res *sqlclass.Result, stmts []sqlclass.Statement) any {
	own := len(stmts) > 0 && len(res.Statements) > 0 && &stmts[0] == &res.Statements[0]
	if own {
		if raw, ok := h.encoded[res]; ok {
			return raw
		}
	}
	raw, err := json.Marshal(stmts)
	if err != nil {
		return stmts
	}
	if own {
		if len(h.encoded) > 256 {
			clear(h.encoded)
		}
		h.encoded[res] = raw
	}
	return json.RawMessage(raw)
}

// refusal is the client's answer to a decision that does not let the
// statement run now, or nil.
func refusal(d *policy.Decision) *pgproto3.ErrorResponse {
	if d == nil {
		return nil
	}
	reason := strings.Join(d.Reasons, "; ")
	switch {
	case !d.Allow:
		if reason == "" {
			reason = "denied by policy"
		}
		return denyResponse(reason, d.ID)
	case d.RequireApproval != nil:
		groups := strings.Join(d.RequireApproval.ApproverGroups, ", ")
		if groups == "" {
			groups = "an approver"
		}
		msg := fmt.Sprintf("approval required from %s (quorum %d)", groups, max(d.RequireApproval.Quorum, 1))
		if reason != "" {
			msg += ": " + reason
		}
		resp := denyResponse(msg, d.ID)
		resp.Hint = "This gateway has no approval store, so statements cannot wait for approval here; ask a member of " + groups + " to run it."
		return resp
	}
	return nil
}

func denyResponse(reason, decisionID string) *pgproto3.ErrorResponse {
	msg := "custos: " + reason
	detail := ""
	if decisionID != "" {
		msg += " (decision " + decisionID + ")"
		detail = "decision id: " + decisionID
	}
	return &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501", Message: msg, Detail: detail,
	}
}

// classify classifies a statement text. A long one is parsed after the
// principal's other long ones (the classifier parses few at a time, in
// arrival order), so one principal's flood of long texts delays another's
// by one parse at most, and only within the principal's budget of parse
// time (largeRate).
func (h *policyHook) classify(ctx context.Context, q string) (*sqlclass.Result, error) {
	if len(q) <= largeStatementBytes {
		return h.cls.Classify(q)
	}
	// A principal whose budget is spent is refused before any work on the
	// text; otherwise the pre-scan of the bounds (which refuses unparsed)
	// and the parse are both charged, so that a flood of long texts the
	// bounds refuse is bounded too.
	done, wait := h.srv.serializeLarge(principalKey(h.ses))
	if done == nil {
		// The refusal comes after a pause (the rest of the debt, a second
		// at most) in which custos reads nothing more from this session:
		// a client sending long texts in a loop sends one a second, not
		// as many as custos can receive and refuse.
		sleep(ctx, min(wait, largeRefusalPause))
		return nil, &sqlclass.LimitError{Limit: "rate", Max: largeRate, Wait: wait}
	}
	start := time.Now()
	defer func() { done(time.Since(start)) }()
	return h.cls.Classify(q)
}

// syntaxRefusal answers a statement the classifier could not classify: a
// syntax error as the server would report it, or a statement over the
// classifier's bounds, which is custos' decision (54001 with a decision id,
// logged and counted, and in e's record when there is one).
func (h *policyHook) syntaxRefusal(e *stmtEntry, err error) *pgproto3.ErrorResponse {
	msg := err.Error()
	if errors.Is(err, sqlclass.ErrTooComplex) {
		dec := h.custosDecision(msg)
		if e != nil {
			e.dec = dec
			if e.text == "" {
				e.text = "(a statement over custos' bounds on what it parses)"
			}
		}
		return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "54001",
			Message: "custos refused the statement: " + msg + " (decision " + dec.ID + ")",
			Detail:  "decision id: " + dec.ID,
			Hint:    "Split the statement, shorten its lists or reduce its nesting."}
	}
	if !errors.Is(err, sqlclass.ErrSyntax) {
		msg = "custos could not classify the statement: " + msg
	}
	return &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42601", Message: msg}
}

func (h *policyHook) addDenial(resp *pgproto3.ErrorResponse) int {
	h.next++
	h.denials[h.next] = resp
	return h.next
}

// refuseQuery replaces a simple query with a FETCH from a cursor that does
// not exist; the server's error is rewritten into resp.
func (h *policyHook) refuseQuery(m *Message, resp *pgproto3.ErrorResponse) {
	n := h.addDenial(resp)
	m.Body = append([]byte(`FETCH ALL FROM "`+h.token+strconv.Itoa(n)+`"`), 0)
}

// server rewrites the server's errors for refused messages.
func (h *policyHook) server(m *Message) {
	switch m.Type {
	case 'Z':
		// Anything refused before this point has been answered (or
		// skipped by the server after an earlier error).
		clear(h.denials)
		h.fcall = nil
	case 'C':
		// DDL may have created, replaced or dropped a function or view
		// that resolutions were cached for.
		if tag, _, ok := cstring(m.Body); ok && ddlTag(tag) {
			if up := h.srv.upstreams[h.ses.Resource.Name]; up != nil && up.catalog != nil {
				up.catalog.forgetRoutines()
			}
		}
	case 'E':
		if len(h.denials) == 0 && h.fcall == nil {
			return
		}
		var er pgproto3.ErrorResponse
		if err := er.Decode(m.Body); err != nil {
			return
		}
		if h.fcall != nil && er.Code == "42883" {
			m.Body = encodeBody(h.fcall)
			h.fcall = nil
			return
		}
		i := strings.Index(er.Message, h.token)
		if i < 0 {
			return
		}
		digits := er.Message[i+len(h.token):]
		j := 0
		for j < len(digits) && digits[j] >= '0' && digits[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(digits[:j])
		if err != nil {
			return
		}
		if resp := h.denials[n]; resp != nil {
			m.Body = encodeBody(resp)
			delete(h.denials, n)
		}
	}
}

// ddlTag tells whether a command tag is one of DDL that can change what a
// function name or view resolves to.
func ddlTag(tag string) bool {
	for _, p := range []string{"CREATE ", "ALTER ", "DROP ", "IMPORT FOREIGN SCHEMA"} {
		if strings.HasPrefix(tag, p) {
			return true
		}
	}
	return false
}

func encodeBody(msg pgproto3.BackendMessage) []byte {
	b, err := msg.Encode(nil)
	if err != nil || len(b) < 5 {
		return nil
	}
	return b[5:]
}
