package pgfilter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Why a parked statement stopped waiting other than by a decision.
var (
	// errClientGone: the client closed its connection or sent Terminate.
	errClientGone = errors.New("client disconnected while its statement was parked")
	// errParkCancelled: the client sent a CancelRequest for the session.
	errParkCancelled = errors.New("client cancelled its parked statement")
	// errAnnounce: the client could not be told that its statement waits.
	errAnnounce = errors.New("the client could not be told of the approval request")
)

// hold runs wait while the client's current message is parked. It first
// makes the session parked, so that a CancelRequest from then on ends the
// wait (errParkCancelled), and then calls announce (which tells the
// client it waits: a cancel sent after that notice is never lost). While
// waiting it reads the client connection so that a disconnect or a
// Terminate ends the wait (the context's cause is errClientGone), and
// keeps the idle timer from ending a session that is only waiting for a
// human. Whatever the client sends meanwhile is kept and relayed, in
// order, once the wait is over. An announce error is returned at once.
//
// hold is called from the client-to-server pump (inside a hook), the only
// reader of the client connection. Anything the hook keeps of the current
// message must be copied first: the reader's buffer is reused.
func (ss *session) hold(ctx context.Context, announce func() error, wait func(context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ss.setParked(cancel)
	defer func() {
		ss.setParked(nil)
		ss.touch()
	}()
	if err := announce(); err != nil {
		return fmt.Errorf("%w: %w", errAnnounce, err)
	}

	w := ss.watchClient(cancel)
	err := wait(ctx)
	w.stop()
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
	}
	return err
}

// setParked makes the session parked, with cancel ending its wait, or,
// with a nil cancel, no longer parked.
func (ss *session) setParked(cancel context.CancelCauseFunc) {
	ss.parkMu.Lock()
	ss.parkCancel = cancel
	ss.parkMu.Unlock()
	ss.parked.Store(cancel != nil)
}

// cancelParked ends the wait of a parked statement, reporting whether one
// was parked; a CancelRequest for a parked session goes no further.
func (ss *session) cancelParked() bool {
	ss.parkMu.Lock()
	defer ss.parkMu.Unlock()
	if ss.parkCancel == nil {
		return false
	}
	ss.parkCancel(errParkCancelled)
	return true
}

// clientWatch reads the client while a statement is parked.
type clientWatch struct {
	ss       *session
	done     chan struct{}
	stopping atomic.Bool
	side     []byte // bytes read, to be relayed after the wait
}

func (ss *session) watchClient(cancel context.CancelCauseFunc) *clientWatch {
	w := &clientWatch{ss: ss, done: make(chan struct{})}
	src := ss.clientR.r
	go func() {
		defer close(w.done)
		buf := make([]byte, 4096)
		for {
			n, err := src.Read(buf)
			w.side = append(w.side, buf[:n]...)
			if terminates(w.side) {
				cancel(errClientGone)
				return
			}
			if err != nil {
				var ne interface{ Timeout() bool }
				if w.stopping.Load() && errors.As(err, &ne) && ne.Timeout() {
					return
				}
				cancel(fmt.Errorf("%w: %w", errClientGone, err))
				return
			}
		}
	}()
	return w
}

// stop ends the watch and puts what it read in front of the rest of the
// client's stream.
func (w *clientWatch) stop() {
	ss := w.ss
	w.stopping.Store(true)
	_ = ss.client.SetReadDeadline(time.Now())
	<-w.done
	_ = ss.client.SetReadDeadline(time.Time{})
	if len(w.side) == 0 {
		return
	}
	// The watcher drained every buffered layer before it blocked on the
	// connection, so the new reader needs only the side bytes and the
	// connection's own reader.
	ss.clientR.r = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(w.side), ss.clientBuf), clientBufSize)
}

// terminates reports whether the complete frames at the start of b include
// a Terminate message.
func terminates(b []byte) bool {
	for len(b) >= 5 {
		if b[0] == 'X' {
			return true
		}
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if n < 4 || n+1 > len(b) {
			return false
		}
		b = b[n+1:]
	}
	return false
}
