// Package approval parks requests that policy says need a human decision
// (require_approval) until approvers decide, and lets the parked statement
// run exactly once, exactly as approved.
//
// # States
//
//	pending --Approve, quorum reached--> approved --Consume--> consumed
//	   |                                    |
//	   +--Deny---------> denied             +--ExpiresAt--> expired
//	   +--ExpiresAt----> expired            +--Withdraw---> withdrawn
//	   +--Withdraw-----> withdrawn
//
// Pending and approved are live; denied, expired, withdrawn and consumed
// are terminal and never change. An approval is single use (Consume once)
// and time-bounded: an approval not used by ExpiresAt expires too.
//
// # Rules
//
//   - A request is pinned to what will run by [PinHash]: the requester,
//     the resource, the exact text and every bound parameter. Consume
//     refuses any other hash.
//   - Approvers must be in one of the request's ApproverGroups. The
//     requester never decides their own request, admins included: not the
//     same issuer and subject, not the human the requester acts for (the
//     act claim), not an agent acting for either.
//   - Each approver votes once (an agent acting for an approver counts as
//     that approver); Quorum distinct approvals approve, one denial
//     denies. An approver who voted for a request may still deny it while
//     it is pending.
//
// # Consistency
//
// A [Service] reads a request from its [Store], applies a rule and writes
// the result back with a compare-and-swap on the request's Version; on a
// conflict it re-reads and re-applies. Two replicas approving at once thus
// never double-count a vote nor revive a decided request, and both stores
// also refuse, with a trigger, any update of a terminal request. Each
// committed transition is logged and passed to Options.OnEvent with the
// actor.
//
// # Waiting
//
// The holder of a parked client calls [Service.Wait], which returns when
// the request leaves pending. It is woken by this Service's transitions at
// once and by other writers' through [Store.Changes]: PostgreSQL
// LISTEN/NOTIFY on the custos_approval channel, or polling of the SQLite
// file for other processes. Wait also expires the request when its time
// comes; a sweep expires the rest (approved requests left unused, requests
// left behind by an earlier process).
//
// # Stores
//
// [OpenSQLite] is the embedded default: one file in the data directory, WAL
// mode, full synchronous commits. [OpenPostgres] keeps requests in the
// custos_approval schema of a PostgreSQL database shared by several
// replicas. Both apply ordered, embedded SQL migrations
// (migrations/<store>/NNNN_name.sql) and record them in a
// schema_migrations table; a schema newer than the build is refused.
// Requests survive a restart: a new Service on the same store sees them
// and keeps expiring them. Those the restarted replica held can never run,
// their parked client connections being gone: [Service.WithdrawHeld]
// withdraws them, however many there are. A store used after Close returns
// ErrStoreClosed. The PostgreSQL store tries reads again on a broken
// connection (a killed backend, a restarted server), and writes only when
// they never reached the server; while the server is down operations fail
// with the driver's error, nothing stored is lost, and Wait keeps trying
// for as long as the request could still be decided.
//
// # Notifications
//
// A [Notifier] plugged into Options.OnEvent posts events to webhooks
// (generic JSON or Slack), from queues of its own with retries: a slow or
// failing webhook never blocks a Service nor loses a request.
package approval
