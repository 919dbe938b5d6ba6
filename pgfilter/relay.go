package pgfilter

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/sqlclass"
)

const (
	clientBufSize = 16 << 10
	serverBufSize = 32 << 10
)

// session is an authenticated connection being relayed.
type session struct {
	Session
	srv *Server
	log *slog.Logger

	client    net.Conn
	clientBuf *bufio.Reader
	clientR   *frameReader // reads clientBuf, or what a parked wait read first
	clientMu  sync.Mutex
	clientW   frameWriter

	server   net.Conn
	serverMu sync.Mutex
	serverW  frameWriter
	serverR  *frameReader

	upstreamAddr   string
	upstreamTLS    *tls.Config
	upstreamPID    uint32
	upstreamSecret []byte

	keyPID, keySecret uint32
	// admitted and active are guarded by the server's mutex.
	admitted, active bool
	// countedGroups are the groups whose caps the session counts toward.
	countedGroups []string

	hooks  []Hook
	masker *resultMasker
	policy *policyHook
	// wants[d][typ] lists the hooks that handle typ in direction d.
	wants [2][256][]Hook

	ctx          context.Context
	cancel       context.CancelFunc
	lastActivity atomic.Int64
	// idle is true between a ReadyForQuery 'I' and the client's next
	// message; draining is set by Shutdown: the session ends at its next
	// idle point.
	idle, draining atomic.Bool
	endOnce        sync.Once
	endErr         error

	// parked is true while a statement waits for approval; parkCancel
	// ends that wait (a CancelRequest).
	parked     atomic.Bool
	parkMu     sync.Mutex
	parkCancel context.CancelCauseFunc

	msgs, bytes [2]uint64

	// afterForward, set by a client-to-server hook, writes custos' own
	// messages right after the message being handled (whatever the hooks'
	// verdict), before anything else the client sent; the client pump
	// alone uses it.
	afterForward func(*frameWriter) error

	// provUser is the principal's own upstream user while the session
	// holds it (provision.go), on the upstream provUp.
	provUser string
	provUp   *upstream

	// span is the session's pg.session span; nil without a tracer.
	span trace.Span

	// ledger holds the statements on their way (nil without a
	// StatementRecorder); durable lists the records the client writer
	// waits for before bytes after their completions leave.
	ledger   *ledger
	durMu    sync.Mutex
	durable  []Durable
	durSpare []Durable
	durN     atomic.Int32
}

func newSession(s *Server, pub Session, client net.Conn, clientBuf *bufio.Reader, upstreamAddr string) *session {
	ss := &session{
		Session:      pub,
		srv:          s,
		client:       client,
		clientBuf:    clientBuf,
		clientW:      frameWriter{w: bufio.NewWriterSize(client, serverBufSize)},
		upstreamAddr: upstreamAddr,
	}
	ss.ctx, ss.cancel = context.WithCancel(context.Background())
	return ss
}

// attachUpstream takes over the hijacked upstream connection; it runs
// before the session is visible to anything but its own goroutine.
func (ss *session) attachUpstream(hj *pgconn.HijackedConn) {
	ss.server = hj.Conn
	ss.serverR = newFrameReader(bufio.NewReaderSize(hj.Conn, serverBufSize), ss.srv.opts.Listener.MaxMessageBytes)
	ss.serverW = frameWriter{w: bufio.NewWriterSize(hj.Conn, clientBufSize)}
	ss.upstreamTLS = hj.TLSConfig
	ss.upstreamPID = hj.PID
	ss.upstreamSecret = hj.SecretKey
	ss.idle.Store(hj.TxStatus == 'I')
}

func (ss *session) closeUpstream() {
	if ss.server != nil {
		_ = ss.server.Close()
	}
}

// run relays until the session ends.
func (ss *session) run() {
	s := ss.srv
	defer s.releaseSession(ss)
	s.metrics.active.Inc()
	defer s.metrics.active.Dec()
	defer ss.cancel()

	ss.clientR = newFrameReader(ss.clientBuf, s.opts.Listener.MaxMessageBytes)

	factories := s.opts.Hooks
	if s.opts.Statements != nil {
		ss.ledger = &ledger{}
		ss.clientW.barrier = ss.awaitRecords
	}
	if s.opts.Policy != nil || ss.ledger != nil {
		factories = append([]HookFactory{func(sess *Session) (Hook, error) {
			ph := newPolicyHook(s, sess)
			ph.relay = ss
			ph.led, ph.rec = ss.ledger, s.opts.Statements
			ss.policy = ph
			return ph, nil
		}}, factories...)
	}
	if s.opts.Masker != nil {
		up := s.upstreams[ss.Resource.Name]
		factories = append(factories[:len(factories):len(factories)], func(sess *Session) (Hook, error) {
			rm := newResultMasker(s.opts.Masker, up.catalog, sess, s.opts.Classifier)
			ss.masker = rm
			if ss.policy != nil {
				ss.policy.masker = rm
			}
			return rm, nil
		})
	}
	if ss.ledger != nil {
		factories = append(factories[:len(factories):len(factories)], func(*Session) (Hook, error) {
			return &auditHook{ss: ss, led: ss.ledger, rec: s.opts.Statements, cap: s.opts.ResultRows}, nil
		})
	}
	for _, f := range factories {
		h, err := f(&ss.Session)
		if err != nil {
			ss.log.Error("session hook failed to start", "error", err)
			ss.terminate(fatal("XX000", "custos could not start the session's controls; the incident is logged"))
			ss.finish()
			return
		}
		ss.hooks = append(ss.hooks, h)
		for d := range 2 {
			for typ := range 256 {
				if h.Wants(Direction(d), byte(typ)) {
					ss.wants[d][typ] = append(ss.wants[d][typ], h)
				}
			}
		}
	}

	ss.touch()
	var timers []*time.Timer
	if exp := ss.Principal.Expiry; !exp.IsZero() {
		end := exp.Add(s.opts.Sessions.TokenGrace)
		timers = append(timers, time.AfterFunc(time.Until(end), func() {
			ss.terminate(fatalHint("28000",
				fmt.Sprintf("session ended: the token for %s expired at %s", ss.Principal.Subject, exp.UTC().Format(time.RFC3339)),
				"Reconnect with a fresh token."))
		}))
	}
	if idle := s.opts.Sessions.IdleTimeout; idle > 0 {
		var t *time.Timer
		t = time.AfterFunc(idle, func() {
			since := time.Since(time.Unix(0, ss.lastActivity.Load()))
			if ss.parked.Load() {
				since = 0 // waiting for an approver is not idling
			}
			if since >= idle {
				ss.terminate(errIdle)
				return
			}
			t.Reset(idle - since)
		})
		timers = append(timers, t)
	}
	defer func() {
		for _, t := range timers {
			t.Stop()
		}
	}()

	errc := make(chan error, 2)
	go func() { errc <- ss.pump(ClientToServer, ss.clientR, &ss.serverW, &ss.serverMu) }()
	go func() { errc <- ss.pump(ServerToClient, ss.serverR, &ss.clientW, &ss.clientMu) }()
	ss.terminate(<-errc)
	if err := <-errc; err != nil {
		ss.log.Debug("relay direction ended", "error", err)
	}
	ss.finish()
}

// finish logs the end of the session and folds its counters into metrics.
func (ss *session) finish() {
	m := ss.srv.metrics
	for d := range 2 {
		dir := Direction(d).String()
		m.messages.WithLabelValues(dir).Add(float64(ss.msgs[d]))
		m.bytes.WithLabelValues(dir).Add(float64(ss.bytes[d]))
	}
	reason := closeReason(ss.endErr)
	for _, h := range ss.hooks {
		h.Close(ss.endErr)
	}
	var masked mask.Counts
	if ss.masker != nil {
		masked = ss.masker.counts
	}
	ss.log.Info("connection closed", "reason", reason,
		"masked_pans", masked.PANs, "removed_sad", masked.SAD,
		"duration_ms", time.Since(ss.Started).Milliseconds(),
		"messages_in", ss.msgs[ClientToServer], "messages_out", ss.msgs[ServerToClient],
		"bytes_in", ss.bytes[ClientToServer], "bytes_out", ss.bytes[ServerToClient])
}

var (
	errClientTerminate = errors.New("client sent Terminate")
	errServerClosed    = errors.New("upstream closed the connection")
)

// closeReason says how a session ended: client_closed for a normal end (no
// error, the client's Terminate, a closed connection), else the error.
func closeReason(err error) string {
	if err == nil || errors.Is(err, errClientTerminate) || isClosedErr(err) {
		return "client_closed"
	}
	return err.Error()
}

func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, errServerClosed)
}

func (ss *session) touch() { ss.lastActivity.Store(time.Now().UnixNano()) }

// terminate ends the session once: err, when it is meant for the client,
// is sent as an ErrorResponse before both connections close.
func (ss *session) terminate(err error) {
	ss.endOnce.Do(func() {
		ss.endErr = err
		ss.cancel()
		if resp := clientFacing(err); resp != nil {
			_ = ss.client.SetWriteDeadline(time.Now().Add(2 * time.Second))
			ss.clientMu.Lock()
			if errors.Is(err, errUnrecorded) {
				// The buffer holds completions whose records were not
				// kept: the client must not see them.
				ss.clientW.discard(ss.client)
			}
			if buf, encErr := resp.Encode(nil); encErr == nil {
				_ = ss.clientW.writeEncoded(buf)
				_ = ss.clientW.flush()
			}
			ss.clientMu.Unlock()
		}
		_ = ss.client.Close()
		ss.closeUpstream()
	})
}

// clientFacing picks the ErrorResponse a session-ending error deserves, or
// nil when the client went away or already heard from the server.
func clientFacing(err error) *pgproto3.ErrorResponse {
	switch {
	case err == nil, errors.Is(err, errClientTerminate), errors.Is(err, errClientGone), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return nil
	case errors.Is(err, errServerClosed):
		return nil
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrMalformed):
		return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "08P01", Message: "custos: " + err.Error()}
	}
	var ce *clientError
	if errors.As(err, &ce) {
		return errorResponseFor(err)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return nil
	}
	return errorResponseFor(err)
}

// pump relays frames from src to dst until an error. It is the only reader
// of src; writes to dst are serialised with dstMu.
func (ss *session) pump(d Direction, src *frameReader, dst *frameWriter, dstMu *sync.Mutex) error {
	wants := &ss.wants[d]
	var msgs, nbytes uint64
	// One Message per direction, reused: hooks must not keep it.
	m := new(Message)
	var lastTxStatus byte
	defer func() {
		ss.msgs[d] = msgs
		ss.bytes[d] = nbytes
	}()
	for {
		typ, n, err := src.header()
		if err != nil {
			return ss.readErr(d, err)
		}
		msgs++
		nbytes += uint64(n) + 5
		if d == ClientToServer && n > src.max {
			return ss.refuseOversized(src, typ, n)
		}
		if d == ClientToServer && n > maxStatementMessage && (typ == 'Q' || typ == 'P') {
			// A statement text the classifier would refuse unread is not
			// held in memory either: a session cannot make custos buffer
			// max_message_bytes of text only to refuse it.
			return ss.refuseStatementSize(src, typ, n)
		}
		hooks := wants[typ]
		switch {
		case len(hooks) > 0:
			body, err := src.body(typ, n)
			if err != nil {
				return ss.readErr(d, err)
			}
			if d == ServerToClient {
				if err := ss.serverControl(typ, body, &lastTxStatus); err != nil {
					return err
				}
			}
			m.Type, m.Body = typ, body
			verdict := Forward
			for _, h := range hooks {
				v, err := h.Handle(ss.ctx, d, m, ss)
				if err != nil {
					return err
				}
				if v == Drop {
					verdict = Drop
					break
				}
			}
			dstMu.Lock()
			if verdict == Forward {
				err = dst.write(m.Type, m.Body)
			}
			// Only the client pump reads or sets afterForward: the direction
			// is checked before the field is read.
			if d == ClientToServer && ss.afterForward != nil {
				f := ss.afterForward
				ss.afterForward = nil
				if werr := f(dst); err == nil {
					err = werr
				}
			}
			if err == nil && !src.buffered() {
				err = dst.flush()
			}
			dstMu.Unlock()
			if err != nil {
				return ss.writeErr(d, err)
			}
		case d == ServerToClient && (typ == 'Z' || typ == 'A' || typ == 'S'):
			// ReadyForQuery tells whether the session is idle; a
			// notification the session sent itself carries the upstream
			// pid, which the client knows as custos' key instead; a
			// ParameterStatus may report a new client encoding.
			body, err := src.body(typ, n)
			if err != nil {
				return ss.readErr(d, err)
			}
			if err := ss.serverControl(typ, body, &lastTxStatus); err != nil {
				return err
			}
			dstMu.Lock()
			err = dst.write(typ, body)
			if err == nil && !src.buffered() {
				err = dst.flush()
			}
			dstMu.Unlock()
			if err != nil {
				return ss.writeErr(d, err)
			}
		case n > streamThreshold:
			dstMu.Lock()
			err := dst.writeHeader(typ, n)
			if err == nil {
				err = dst.stream(src, n)
			}
			if err == nil && !src.buffered() {
				err = dst.flush()
			}
			dstMu.Unlock()
			if err != nil {
				return ss.writeErr(d, err)
			}
		default:
			body, err := src.body(typ, n)
			if err != nil {
				return ss.readErr(d, err)
			}
			dstMu.Lock()
			err = dst.write(typ, body)
			if err == nil && !src.buffered() {
				err = dst.flush()
			}
			dstMu.Unlock()
			if err != nil {
				return ss.writeErr(d, err)
			}
		}
		if !src.buffered() {
			ss.touch()
		}
		if d == ClientToServer {
			if typ == 'X' {
				return errClientTerminate
			}
			ss.idle.Store(false)
		} else if typ == 'Z' && lastTxStatus == 'I' && !src.buffered() {
			ss.idle.Store(true)
			if ss.draining.Load() {
				return errShutdown
			}
		}
	}
}

// serverControl notes the transaction status of a ReadyForQuery, gives a
// session's own notifications the process id the client knows, and ends
// the session when the server reports an unsafe client encoding.
func (ss *session) serverControl(typ byte, body []byte, txStatus *byte) error {
	switch typ {
	case 'Z':
		if len(body) == 1 {
			*txStatus = body[0]
		}
	case 'A':
		if len(body) >= 4 && binary.BigEndian.Uint32(body) == ss.upstreamPID {
			binary.BigEndian.PutUint32(body, ss.keyPID)
		}
	case 'S':
		return ss.checkParameterStatus(body)
	}
	return nil
}

// refuseOversized reads and drops a client message over the size limit,
// within a bound, so that the client is still reading when custos tells it
// why the session ends (closing mid-write would reset the connection and
// lose the message).
func (ss *session) refuseOversized(src *frameReader, typ byte, n int) error {
	ss.log.Warn("client message over the size limit", "type", string(rune(typ)), "bytes", n, "limit", src.max)
	_ = ss.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.CopyN(io.Discard, src.r, int64(n))
	return fmt.Errorf("%w: message type %q of %d bytes exceeds the limit of %d bytes", ErrTooLarge, typ, n, src.max)
}

// maxStatementMessage is the longest Query or Parse custos reads: the
// classifier's size bound on a statement text, with room for a Parse's
// name and parameter types.
const maxStatementMessage = sqlclass.DefaultMaxBytes + 64<<10

// refuseStatementSize discards a Query or Parse too long to be classified
// and ends the session with 54001 (the protocol cannot go on without the
// server's answer to it).
func (ss *session) refuseStatementSize(src *frameReader, typ byte, n int) error {
	ss.log.Warn("statement over the classifier's size bound", "type", string(rune(typ)), "bytes", n, "limit", sqlclass.DefaultMaxBytes)
	_ = ss.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.CopyN(io.Discard, src.r, int64(n))
	return fatal("54001", fmt.Sprintf("custos refused a statement of %d bytes: statement too complex: longer than %d bytes; the session is closed", n, sqlclass.DefaultMaxBytes))
}

func (ss *session) readErr(d Direction, err error) error {
	if d == ServerToClient && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return errServerClosed
	}
	if d == ServerToClient && errors.Is(err, ErrTooLarge) {
		ss.log.Error("upstream message over the size limit", "error", err)
		return fatal("XX000", "custos: a server message exceeded the size limit; the session is closed")
	}
	return err
}

func (ss *session) writeErr(d Direction, err error) error {
	if d == ClientToServer {
		return fmt.Errorf("%w: %w", errServerClosed, err)
	}
	return err
}

// SendToClient implements Conn.
func (ss *session) SendToClient(msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	var err error
	for _, m := range msgs {
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	ss.clientMu.Lock()
	defer ss.clientMu.Unlock()
	if err := ss.clientW.writeEncoded(buf); err != nil {
		return err
	}
	return ss.clientW.flush()
}

// SendToServer implements Conn.
func (ss *session) SendToServer(msgs ...pgproto3.FrontendMessage) error {
	var buf []byte
	var err error
	for _, m := range msgs {
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	ss.serverMu.Lock()
	defer ss.serverMu.Unlock()
	if err := ss.serverW.writeEncoded(buf); err != nil {
		return err
	}
	return ss.serverW.flush()
}
