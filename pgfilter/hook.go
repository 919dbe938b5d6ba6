package pgfilter

import (
	"context"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Direction says which way a message travels.
type Direction uint8

// Directions.
const (
	ClientToServer Direction = iota
	ServerToClient
)

func (d Direction) String() string {
	if d == ClientToServer {
		return "client_to_server"
	}
	return "server_to_client"
}

// Message is one protocol frame. Body is valid only during the hook call:
// copy it to keep it. A hook may replace Body (and Type) to forward a
// rewritten message; the relay re-frames it with the new length.
type Message struct {
	Type byte
	Body []byte
}

// Verdict is what a hook decides for a message.
type Verdict uint8

// Verdicts.
const (
	// Forward passes the message (as possibly rewritten) on.
	Forward Verdict = iota
	// Drop swallows the message; the hook has answered for it.
	Drop
)

// Conn lets a hook speak to either side of the session. Messages are
// written and flushed at once, between whole relayed messages.
type Conn interface {
	SendToClient(msgs ...pgproto3.BackendMessage) error
	SendToServer(msgs ...pgproto3.FrontendMessage) error
}

// Hook observes and may act on a session's messages. Handle is called from
// the goroutine of the message's direction: calls for one direction are
// sequential, calls for the two directions may run concurrently.
type Hook interface {
	// Wants reports whether the hook handles messages of typ going in
	// direction d. It is asked once per session and type; messages no hook
	// wants are relayed without decoding.
	Wants(d Direction, typ byte) bool
	// Handle sees one message. An error ends the session: one made with
	// ClientError (possibly wrapped) is sent to the client as is, others as
	// a FATAL internal error.
	Handle(ctx context.Context, d Direction, m *Message, c Conn) (Verdict, error)
	// Close is called once when the session ends, with the reason.
	Close(err error)
}

// HookFactory creates the hook for one authenticated session.
type HookFactory func(s *Session) (Hook, error)
