// Package pgfilter is custos' PostgreSQL wire proxy: it accepts real
// Postgres clients, authenticates each connection with an OIDC token, logs in
// upstream with the gateway-held credential and relays every message between
// the two, with a hook point on both directions for policy, approvals,
// masking and audit.
//
// # Message flow
//
// Startup (one goroutine per connection, bounded by a deadline):
//
//	client                         custos                          upstream
//	  | (behind a proxy: the peer must be a trusted proxy, checked  |
//	  |  before any read; then a PROXY v1/v2 header, its source the |
//	  |  client address; a token only over TLS; proxyproto.go)     |
//	  | SSLRequest ---------------> |  'S' + TLS handshake            |
//	  |   (bytes sent before the handshake are refused)               |
//	  | GSSENCRequest ------------> |  'N'                            |
//	  | 0x16 (direct TLS, ALPN "postgresql") -> TLS handshake         |
//	  | CancelRequest ------------> |  mapped key -> CancelRequest -> |
//	  | StartupMessage -----------> |  allow-listed parameters only;  |
//	  |                             |  3.2 / _pq_ -> NegotiateProtocolVersion
//	  | <- AuthenticationCleartextPassword (or SASL OAUTHBEARER)      |
//	  | PasswordMessage (the JWT) ->|  authn.Verify, user == claim    |
//	  |                             |  parameters (and -c settings in |
//	  |                             |  options) decided as SET ...;   |
//	  |                             |  refused: FATAL 42501, decision |
//	  |                             |  pgconn.Connect (SCRAM, TLS) -> |
//	  |                             |  <- ParameterStatus, BackendKeyData, ReadyForQuery
//	  | <- AuthenticationOk, ParameterStatus..., BackendKeyData (custos-issued key), ReadyForQuery
//
// Relay (after pgconn.Hijack): two goroutines, one per direction, each
// reading whole frames (type byte + length) from its side and writing them
// to the other. Frames are not decoded unless a hook asked for that message
// type; a large frame nobody inspects is streamed through without being
// held in memory. Writes are batched and flushed when the reading side has
// nothing more buffered, so pipelined messages and result sets leave in few
// syscalls. Client-bound writes are serialised by a mutex because hooks,
// session timers and shutdown also speak to the client (NoticeResponse,
// ErrorResponse).
//
// Statement policy (policyhook.go): a Query is decided whole, an extended
// statement at each Execute. A refused message is swapped for one the server
// rejects, and the server's error rewritten into custos' refusal, so the
// client sees the server's true transaction state.
//
// Function resolution (routines.go): before a statement is decided, the
// catalog connection says which functions the server could run for the
// built-in names it calls unqualified (along the session's search_path,
// every overload) and for the relations it reads (views' bodies, through
// nested views; row security policies); one that is not a pg_catalog built-in on the classifier's
// read-only list marks the statement unknown_function, as does a lookup
// that fails. Resolutions are cached per search path and name for a
// minute and dropped when a session runs DDL.
//
// Session state (policystate.go): what custos knows of prepared statements
// (protocol and SQL-level share one namespace) and portals changes only when
// the server confirms it. Each client message is queued as it goes upstream;
// the server's answers settle it in order:
//
//	client                         custos                          upstream
//	  | Parse s, Bind p, Execute p, Sync -> pending: s, p (this batch)|
//	  |                             |  Execute decided on pending s ->|
//	  |                             |  <- ParseComplete: s known      |
//	  |                             |  <- BindComplete: p known (bound to s as it was)
//	  |                             |  <- ErrorResponse: pending ops dropped up to Sync
//	  |                             |  <- CommandComplete PREPARE / DEALLOCATE / DISCARD ALL
//	  |                             |  <- COMMIT, ROLLBACK (TO), CLOSE, DECLARE, CALL: portals forgotten
//	  |                             |  <- ReadyForQuery 'I': portals forgotten
//
// A message is decided on definitions sent earlier in its own batch (if one
// fails the server skips to Sync, this message too), else on confirmed ones:
// when earlier batches are still unanswered it flushes them upstream and
// waits (up to 30s) for their answers. Redefining a name custos knows of (a
// Parse or PREPARE of an existing statement, a Bind of an existing named
// portal) is refused (42P05, 42P03, with a decision id) by swapping in a
// message the server rejects; unnamed statements and portals are replaced
// freely. An Execute custos cannot tie to a definition is refused (42501).
// If the answers stop matching what was sent, custos forgets everything and
// trusts only same-batch definitions from then on. Sync messages sent during
// COPY FROM STDIN, which the server ignores, are not waited for. The masker
// follows the same rule for the row shapes it keeps (a portal is known at
// its BindComplete; one still uncertain is described by the server first).
// The masker's queue of messages and the statement ledger both follow the
// server's batch rule through one syncQueue (inflight.go): after an
// ErrorResponse in the extended protocol the server skips every message up
// to the next Sync, and ReadyForQuery ends the batch.
//
// Approvals (approvalpark.go, park.go): when the decision requires
// approval, the client-to-server goroutine records an approval request,
// sends a NoticeResponse at once (approval id, approvers, how to approve)
// and holds the message, nothing upstream:
//
//	client                         custos                          upstream
//	  | Query / Execute ----------> |  approval.Request               |
//	  | <- NoticeResponse (apr_...) |  wait; keep reading the client  |
//	  |                             |  approved: Consume (pinned hash)|
//	  |                             |  Query / Execute -------------> |
//	  | <- results ---------------------------------------------------|
//	  |  denied / expired: the message is refused (42501)             |
//	  | CancelRequest ------------> |  withdraw; 57014                |
//	  | disconnect / Terminate ---> |  withdraw; session ends         |
//
// While it waits custos reads what the client sends so that a disconnect
// is seen at once; the bytes read are relayed after the parked message,
// in order. A parked session is busy, never idle.
//
// Audit records (audit.go, with Options.Audit, an *audit.Journal):
// pgfilter builds the audit events of its sessions itself, next to where
// they happen: each authentication (refused tokens through
// Options.AuthFailures, which aggregates repeats), session start, refusal
// and end is recorded before the client hears of it, and every statement
// through JournalRecorder, the StatementRecorder pgfilter provides, which
// encodes what a session's statements share once per text in a template
// dropped when the session closes. With Options.AuditFailClosed a session
// on cardholder data whose start cannot be recorded is refused.
//
// Statement records (statements.go, with Options.Statements, or
// Options.Audit's recorder when that is not set): each Query,
// Execute and FunctionCall is queued in the session's ledger as it goes
// upstream, with its decision, approval and the PANs of its literals and
// parameters (fingerprints only, later). The server's answers complete
// them in order (CommandComplete, ErrorResponse, EmptyQueryResponse,
// PortalSuspended for an Execute; ReadyForQuery for a Query or a
// FunctionCall, and for the statements the server skipped after an error). A
// hook after the masker counts rows and masked values and keeps the first
// Options.ResultRows masked rows, then hands the record to the recorder,
// which writes it without waiting:
//
//	client                         custos                          upstream
//	  | Bind, Execute, Sync ------> |  ledger: Execute (decision) --> |
//	  |                             |  <- DataRow, CommandComplete    |
//	  |                             |  record queued (group commit)   |
//	  |                             |  <- ReadyForQuery               |
//	  |                             |  flush: wait for the record     |
//	  | <- DataRow, CommandComplete, ReadyForQuery                    |
//
// The client writer's barrier waits for the records of the completions it
// holds before any byte can leave (a flush, or a write that overflows the
// buffer), so a statement the client saw complete has its record. A record
// that cannot be kept on a resource that fails closed ends the session
// (FATAL 58030) with the buffered results dropped; while the recorder
// cannot write, statements there are refused before they run (58030).
// With a tracer each statement gets a pg.statement span with its parts
// (decision, approval wait, upstream, masking), built when it completes.
//
// A session ends when either side closes, on Terminate, when its token
// expires (plus a grace), after the idle timeout, or on shutdown; custos
// tells the client why with a FATAL ErrorResponse.
package pgfilter
