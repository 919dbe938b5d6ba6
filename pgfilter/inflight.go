package pgfilter

// batchRole is how a client message the server will answer takes part in
// PostgreSQL's batch rules.
type batchRole uint8

const (
	// roleExtended: an extended-protocol message (Parse, Bind, Describe,
	// Execute, Close). After an ErrorResponse the server skips it, up to
	// the next Sync.
	roleExtended batchRole = iota
	// roleSync: a Sync. It ends an extended-protocol batch (and any
	// skipping); the server answers it with ReadyForQuery.
	roleSync
	// roleOwn: a Query or FunctionCall, a batch of its own: an error in it
	// skips nothing that follows, and its ReadyForQuery ends it.
	roleOwn
)

// batchEntry is an entry of a syncQueue: one client message on its way,
// with what its owner keeps of it.
type batchEntry interface {
	batchRole() batchRole
}

// syncQueue holds the client messages the server has yet to answer, in
// the order it answers them, and is the one place that knows how the
// server's answers end them:
//
//   - an ErrorResponse in the extended protocol fails the message being
//     answered, and the server skips every message after it up to the next
//     Sync (fail);
//   - an ErrorResponse of a Query or FunctionCall is its own and ends
//     nothing (fail does nothing: its ReadyForQuery ends it);
//   - ReadyForQuery ends the batch: what is left of it, through its Sync,
//     Query or FunctionCall (endBatch).
//
// Other answers (ParseComplete, CommandComplete, ...) complete the head,
// which its owner pops. A syncQueue is not safe for concurrent use; its
// owner locks around it.
type syncQueue[T batchEntry] []T

// push queues a message the server will answer.
func (q *syncQueue[T]) push(e T) { *q = append(*q, e) }

// head returns the message the server is answering.
func (q syncQueue[T]) head() (T, bool) {
	if len(q) == 0 {
		var zero T
		return zero, false
	}
	return q[0], true
}

// pop removes the head and returns it.
func (q *syncQueue[T]) pop() (T, bool) {
	s := *q
	var zero T
	if len(s) == 0 {
		return zero, false
	}
	e := s[0]
	s[0] = zero
	s = s[1:]
	if len(s) == 0 {
		s = s[:0:0]
	}
	*q = s
	return e, true
}

// fail applies an ErrorResponse. When the head is an extended-protocol
// message, it failed: fail pops it and returns it, then pops every message
// after it up to (not including) the next Sync, which the server skips,
// calling skip (when not nil) for each. When the head is a Sync (the
// error is the Sync's own), a Query or a FunctionCall, or the queue is
// empty, nothing is popped.
func (q *syncQueue[T]) fail(skip func(T)) (T, bool) {
	failed, ok := q.head()
	if !ok || failed.batchRole() != roleExtended {
		var zero T
		return zero, false
	}
	q.pop()
	for len(*q) > 0 && (*q)[0].batchRole() != roleSync {
		e, _ := q.pop()
		if skip != nil {
			skip(e)
		}
	}
	return failed, true
}

// endBatch applies a ReadyForQuery: it pops the messages of the batch it
// ends, through the first Sync, Query or FunctionCall, calling end (when
// not nil) for each in order.
func (q *syncQueue[T]) endBatch(end func(T)) {
	for len(*q) > 0 {
		e, _ := q.pop()
		if end != nil {
			end(e)
		}
		if e.batchRole() != roleExtended {
			return
		}
	}
}
