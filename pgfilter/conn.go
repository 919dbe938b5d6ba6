package pgfilter

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
)

// allowedParams are the startup parameters passed upstream, keyed by their
// lower-case name: settings of how values are shown and parsed (DateStyle,
// TimeZone, IntervalStyle, extra_float_digits, bytea_output, lc_*), of
// this session's own limits (timeouts), its name, the planner's geqo, and
// search_path, which clients set to name their schema. Each reaches the
// server only if the policy lets the principal SET it
// (decideStartupParams); the default policy refuses search_path to agents,
// since it chooses which function a name calls. Anything else is refused,
// `replication` included: a startup parameter is a setting made before any
// statement. `options` is read for the settings it holds (-c name=value,
// --name=value), which are checked as these and passed as parameters of
// their own; client_encoding is checked on its own (checkStartupParams).
var allowedParams = map[string]string{
	"application_name":                    "application_name",
	"datestyle":                           "DateStyle",
	"timezone":                            "TimeZone",
	"intervalstyle":                       "IntervalStyle",
	"extra_float_digits":                  "extra_float_digits",
	"search_path":                         "search_path",
	"statement_timeout":                   "statement_timeout",
	"lock_timeout":                        "lock_timeout",
	"idle_in_transaction_session_timeout": "idle_in_transaction_session_timeout",
	"bytea_output":                        "bytea_output",
	"lc_monetary":                         "lc_monetary",
	"lc_numeric":                          "lc_numeric",
	"lc_time":                             "lc_time",
	"geqo":                                "geqo",
}

// startupParams is what a StartupMessage asks for, once checked.
type startupParams struct {
	user, database string
	// params are passed upstream, keyed by their canonical names; they
	// always hold client_encoding, as its canonical name.
	params map[string]string
}

// paramError is a refused startup message: err for the client, label for
// the connections metric.
type paramError struct {
	label string
	err   error
}

func (e *paramError) Error() string { return e.err.Error() }
func (e *paramError) Unwrap() error { return e.err }

func refuseParam(label string, err error) error { return &paramError{label: label, err: err} }

// checkStartupParams checks a StartupMessage's parameters: only allowed
// ones pass, and the client encoding must be one custos classifies
// statements in (UTF8 when the client names none).
func checkStartupParams(in []param) (startupParams, error) {
	sp := startupParams{params: map[string]string{}}
	var fromOptions []param
	for _, p := range in {
		name := strings.ToLower(p.name)
		switch name {
		case "user":
			sp.user = p.value
		case "database":
			sp.database = p.value
		case "replication":
			return sp, refuseParam("refused_parameter", fatal("28000", "replication connections are not allowed through custos"))
		case "options":
			opts, err := parseStartupOptions(p.value)
			if err != nil {
				return sp, refuseParam("refused_parameter", fatalHint("28000", "startup options: "+err.Error(),
					"Pass settings as -c name=value (PGOPTIONS), or run SET after connecting."))
			}
			fromOptions = append(fromOptions, opts...)
		case "fallback_application_name":
			if _, ok := sp.params["application_name"]; !ok {
				sp.params["application_name"] = p.value
			}
		default:
			if err := sp.set(name, p.value); err != nil {
				return sp, err
			}
		}
	}
	// The server applies options first and the parameters after them, so
	// a parameter given both ways takes the parameter's value.
	explicit := make(map[string]bool, len(sp.params))
	for k := range sp.params {
		explicit[k] = true
	}
	for _, p := range fromOptions {
		if canon, ok := allowedParams[p.name]; ok && explicit[canon] {
			continue
		}
		if p.name == "client_encoding" && explicit["client_encoding"] {
			continue
		}
		if err := sp.set(p.name, p.value); err != nil {
			return sp, err
		}
	}
	if sp.user == "" {
		return sp, refuseParam("protocol_error", fatal("28000", "no PostgreSQL user name specified in startup packet"))
	}
	if sp.database == "" {
		sp.database = sp.user
	}
	if _, ok := sp.params["client_encoding"]; !ok {
		sp.params["client_encoding"] = defaultClientEncoding
	}
	return sp, nil
}

// set records an allow-listed parameter (name in lower case) under its
// canonical name.
func (sp *startupParams) set(name, value string) error {
	if name == "client_encoding" {
		canon, err := safeClientEncoding(value)
		if err != nil {
			return refuseParam("unsafe_encoding", unsafeEncodingError(err))
		}
		sp.params["client_encoding"] = canon
		return nil
	}
	canon, ok := allowedParams[name]
	if !ok {
		return refuseParam("refused_parameter", fatal("28000", fmt.Sprintf("startup parameter %q is not allowed through custos", name)))
	}
	sp.params[canon] = value
	return nil
}

// handshake is the startup phase of one client connection.
type handshake struct {
	srv  *Server
	raw  net.Conn
	conn net.Conn // raw, or the TLS connection over it
	br   *bufio.Reader
	tls  bool
	log  *slog.Logger
	// proxy is the listener's PROXY protocol policy (nil: direct
	// clients); clientAddr is the client's address: the peer's, or the
	// one a trusted proxy's header carried.
	proxy      *proxyPolicy
	clientAddr string
	// deadline ends the startup phase.
	deadline time.Time
	// user and database are what the StartupMessage named, params the
	// parameters passed upstream (checkStartupParams); tokenFingerprint
	// names the client's token once one was read.
	user, database   string
	params           map[string]string
	tokenFingerprint string
}

// bufferedConn reads first what a bufio.Reader already holds.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (s *Server) handle(raw net.Conn, pp *proxyPolicy) {
	defer s.handlers.Done()
	clientAddr := raw.RemoteAddr().String()
	log := s.log.With("client_address", clientAddr)
	log.Debug("connection opened")
	hs := &handshake{srv: s, raw: raw, conn: raw, br: bufio.NewReaderSize(raw, 16<<10), log: log,
		proxy: pp, clientAddr: clientAddr, deadline: time.Now().Add(s.opts.StartupTimeout)}
	_ = raw.SetDeadline(hs.deadline)
	ss, err := hs.run(context.Background())
	s.trackConn(raw, false)
	if err != nil || ss == nil {
		if err != nil {
			var ce *clientError
			if errors.As(err, &ce) {
				_ = hs.send(ce.resp)
			}
		}
		_ = hs.conn.Close()
		return
	}
	_ = raw.SetDeadline(time.Time{})
	ss.run()
	s.sessionClosed(ss)
	ss.endSpan(ss.endErr)
}

// send writes backend messages to the client during the handshake.
func (hs *handshake) send(msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	var err error
	for _, m := range msgs {
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	_, err = hs.conn.Write(buf)
	return err
}

// run takes a connection through its startup phases and returns the
// session to relay: the PROXY header and the address gate, encryption and
// the startup message, the token, the principal's access, the upstream
// login, and the client's welcome. An error that is not a clientError
// (errNoAnswer among them: the client left, or a cancel request was
// served) closes the connection without an answer.
func (hs *handshake) run(ctx context.Context) (*session, error) {
	if hs.proxy != nil {
		if err := hs.acceptProxy(); err != nil {
			return nil, err
		}
	}
	if err := hs.checkGate(ctx); err != nil {
		return nil, err
	}
	req, err := hs.negotiate(ctx)
	if err != nil {
		return nil, err
	}
	if err := hs.readStartup(ctx, req); err != nil {
		return nil, err
	}
	principal, err := hs.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	ss, up, err := hs.checkAccess(ctx, principal)
	if err != nil {
		return nil, err
	}
	hj, err := hs.connect(ctx, ss, up)
	if err != nil {
		return nil, err
	}
	if err := hs.open(ctx, ss, hj); err != nil {
		return nil, err
	}
	return ss, nil
}

// checkGate refuses the connection while its address is gated
// (authGate): before TLS and verification, and only when the window
// ends, so that a flood of refused connections from one address costs
// custos no more than this.
func (hs *handshake) checkGate(ctx context.Context) error {
	gated, left := hs.srv.gate.blocked(hs.clientAddr)
	if !gated {
		return nil
	}
	return hs.refuse(ctx, connRefusal{
		metric: "auth_rate_limited",
		level:  slog.LevelDebug, log: "connection refused", attrs: []any{"reason", "auth_rate_limited"},
		event: SessionAuthFailed, reason: "rate_limited", cause: errors.New("too many refused connections from this address"),
		hold: left,
		code: "53300", message: fmt.Sprintf("too many refused connections from %s: try again in a second", hostOf(hs.clientAddr)),
	})
}

// negotiate answers what a client may send before its StartupMessage
// (direct TLS, SSLRequest, GSSENCRequest; a CancelRequest, which it
// serves) and returns the StartupMessage.
func (hs *handshake) negotiate(ctx context.Context) (*startupRequest, error) {
	s := hs.srv
	first, err := hs.br.Peek(1)
	if err != nil {
		return nil, errNoAnswer // closed before saying anything
	}
	if hs.proxy == nil && (first[0] == proxyV2Sig[0] || first[0] == proxyV1Sig[0]) {
		return nil, hs.refuse(ctx, connRefusal{
			metric: "protocol_error",
			level:  slog.LevelWarn, log: "PROXY protocol header on a listener without proxy_protocol refused",
			code: "08P01", message: "unexpected PROXY protocol header: this listener takes clients directly",
		})
	}
	if first[0] == 0x16 { // a TLS record: direct TLS (sslnegotiation=direct)
		if s.opts.TLSConfig == nil {
			return nil, hs.refuse(ctx, connRefusal{ // no answer: the client speaks TLS
				metric: "tls_refused",
				level:  slog.LevelWarn, log: "direct TLS refused: no certificate configured",
			})
		}
		if err := hs.startTLS(ctx, &bufferedConn{Conn: hs.raw, r: hs.br}, true); err != nil {
			return nil, err
		}
	}
	for {
		pkt, err := readStartupPacket(hs.br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errNoAnswer
			}
			return nil, hs.refuse(ctx, connRefusal{metric: "protocol_error", code: "08P01", message: "invalid startup packet: " + err.Error()})
		}
		req, err := parseStartupPacket(pkt)
		if err != nil {
			return nil, hs.refuse(ctx, connRefusal{metric: "protocol_error", code: "08P01", message: err.Error()})
		}
		switch req.code {
		case sslRequestCode:
			if hs.tls {
				return nil, hs.refuse(ctx, connRefusal{code: "08P01", message: "SSL request received on an encrypted connection"})
			}
			if s.opts.TLSConfig == nil {
				if _, err := hs.conn.Write([]byte{'N'}); err != nil {
					return nil, errNoAnswer
				}
				continue
			}
			if hs.br.Buffered() > 0 {
				// Bytes sent before the handshake could have been
				// injected by anyone on the path.
				return nil, hs.refuse(ctx, connRefusal{
					metric: "protocol_error",
					level:  slog.LevelWarn, log: "unencrypted data after SSL request refused",
					code: "08P01", message: "received unencrypted data after SSL request",
				})
			}
			if _, err := hs.conn.Write([]byte{'S'}); err != nil {
				return nil, errNoAnswer
			}
			if err := hs.startTLS(ctx, hs.raw, false); err != nil {
				return nil, err
			}
		case gssEncRequestCode:
			if hs.tls {
				return nil, hs.refuse(ctx, connRefusal{code: "08P01", message: "GSSAPI encryption request received on an encrypted connection"})
			}
			if _, err := hs.conn.Write([]byte{'N'}); err != nil {
				return nil, errNoAnswer
			}
		case cancelRequestCode:
			s.handleCancel(ctx, req, hs.log)
			return nil, errNoAnswer
		default:
			return req, nil
		}
	}
}

func (hs *handshake) startTLS(ctx context.Context, c net.Conn, direct bool) error {
	cfg := hs.srv.opts.TLSConfig.Clone()
	cfg.NextProtos = []string{"postgresql"}
	tc := tls.Server(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return hs.refuse(ctx, connRefusal{
			metric: "tls_failed",
			level:  slog.LevelWarn, log: "client TLS handshake failed", attrs: []any{"error", err},
			err: fmt.Errorf("tls handshake: %w", err),
		})
	}
	if direct && tc.ConnectionState().NegotiatedProtocol != "postgresql" {
		// Direct TLS without ALPN could be a confused HTTPS client. The
		// refusal is sent over TLS.
		hs.conn = tc
		return hs.refuse(ctx, connRefusal{
			metric: "tls_refused",
			level:  slog.LevelWarn, log: "direct TLS without ALPN postgresql refused",
			code: "08P01", message: "direct SSL connection requires ALPN protocol \"postgresql\"",
		})
	}
	hs.conn = tc
	hs.br = bufio.NewReaderSize(tc, 16<<10)
	hs.tls = true
	return nil
}

func (s *Server) handleCancel(ctx context.Context, req *startupRequest, log *slog.Logger) {
	ss := s.sessionByKey(req.pid, req.secret)
	if ss == nil {
		s.metrics.cancels.WithLabelValues("unknown_key").Inc()
		log.Info("cancel request with unknown key ignored")
		return
	}
	if ss.cancelParked() {
		s.metrics.cancels.WithLabelValues("parked").Inc()
		log.Info("cancel request withdrew a parked statement", "session_id", ss.ID, "principal", ss.Principal.Subject)
		return
	}
	if err := cancelUpstream(ctx, ss.upstreamAddr, ss.upstreamTLS, ss.upstreamPID, ss.upstreamSecret); err != nil {
		s.metrics.cancels.WithLabelValues("failed").Inc()
		log.Warn("cancel request failed", "session_id", ss.ID, "error", err)
		return
	}
	s.metrics.cancels.WithLabelValues("sent").Inc()
	log.Info("cancel request forwarded", "session_id", ss.ID, "principal", ss.Principal.Subject)
}

// readStartup answers a StartupMessage's protocol version and options
// (NegotiateProtocolVersion for 3.2 or _pq_ options) and checks its
// parameters; from then on the handshake's log names the user and
// database.
func (hs *handshake) readStartup(ctx context.Context, req *startupRequest) error {
	if minor := req.code & 0xffff; minor > 0 || len(req.pqOptions) > 0 {
		opts := req.pqOptions
		if opts == nil {
			opts = []string{}
		}
		if err := hs.send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: opts}); err != nil {
			return errNoAnswer
		}
	}
	sp, err := checkStartupParams(req.params)
	if err != nil {
		var pe *paramError
		if !errors.As(err, &pe) {
			return err
		}
		return hs.refuse(ctx, connRefusal{
			metric: pe.label,
			level:  slog.LevelWarn, log: "connection refused", attrs: []any{"reason", pe.label, "error", pe.err},
			err: pe.err,
		})
	}
	hs.user, hs.database, hs.params = sp.user, sp.database, sp.params
	hs.log = hs.log.With("user", hs.user, "database", hs.database)
	return nil
}

// authenticate reads the client's token (a password, or SASL
// OAUTHBEARER), once the transport allows one to be sent, and verifies
// it: the principal it names must be the startup message's user.
func (hs *handshake) authenticate(ctx context.Context) (*authn.Principal, error) {
	s := hs.srv
	if err := hs.checkTransport(ctx); err != nil {
		return nil, err
	}
	var token string
	var err error
	if s.opts.Listener.OAuthBearer {
		token, err = hs.oauthBearer(ctx)
	} else {
		token, err = hs.cleartextPassword()
	}
	if err != nil {
		return nil, hs.refuse(ctx, connRefusal{
			metric: "protocol", authFailure: true,
			level: slog.LevelWarn, log: "authentication failed", attrs: []any{"reason", "protocol", "error", err},
			event: SessionAuthFailed, reason: "protocol", cause: err,
			err: err,
		})
	}
	hs.tokenFingerprint = authn.TokenFingerprint(token)
	principal, err := s.opts.Verifier.Verify(ctx, token)
	if err != nil {
		reason := authn.Reason(err)
		r := connRefusal{
			metric: reason, authFailure: true, gate: true,
			level: slog.LevelWarn, log: "authentication failed", attrs: []any{"reason", reason, "error", err},
			event: SessionAuthFailed, reason: reason, cause: err,
			code: "28P01", message: "token authentication failed for user \"" + hs.user + "\": " + err.Error(),
		}
		if s.opts.Listener.OAuthBearer {
			r.beforeAnswer = hs.oauthFailure
		}
		return nil, hs.refuse(ctx, r)
	}
	if principal.User != hs.user {
		msg := fmt.Sprintf("startup user %q does not match the token's identity %q", hs.user, principal.User)
		return nil, hs.refuse(ctx, connRefusal{
			metric: "user_mismatch", authFailure: true,
			level: slog.LevelWarn, log: "authentication failed", attrs: []any{"reason", "user_mismatch", "principal", principal.Subject},
			event: SessionAuthFailed, reason: "user_mismatch", principal: principal, cause: errors.New(msg),
			code: "28000", message: msg, hint: "Connect with the user name your token was issued for.",
		})
	}
	return principal, nil
}

// checkTransport refuses a token about to be sent without TLS, unless the
// listener's password_transport allows it for this client.
func (hs *handshake) checkTransport(ctx context.Context) error {
	if hs.tls {
		return nil
	}
	transport := hs.srv.opts.Listener.PasswordTransport
	if hs.proxy != nil {
		// Behind a proxy the peer is the proxy: only TLS from the
		// client itself protects the token, whatever the setting.
		transport = config.TransportTLS
	}
	var cause error
	var msg string
	switch transport {
	case config.TransportTLS:
		cause, msg = errors.New("password sent without TLS"), "custos requires TLS before a token may be sent"
	case config.TransportTLSOrLoopback:
		if isLoopback(hs.raw.RemoteAddr()) {
			return nil
		}
		cause, msg = errors.New("password sent without TLS from a non-loopback address"),
			"custos requires TLS before a token may be sent from a non-loopback address"
	default:
		return nil
	}
	return hs.refuse(ctx, connRefusal{
		metric: "insecure_transport", authFailure: true,
		level: slog.LevelWarn, log: "authentication failed", attrs: []any{"reason", "insecure_transport"},
		event: SessionAuthFailed, reason: "insecure_transport", cause: cause,
		code: "28000", message: msg, hint: "Connect with sslmode=require (or stronger).",
	})
}

// checkAccess gives an authenticated principal its session on the
// database it named: a resource must serve the database, with group
// logins one of the principal's groups must have a login, the policy must
// let the principal set the startup parameters, and the session caps and
// open rate must admit one more session (admitSession). It returns the
// admitted session and the upstream it logs in to.
func (hs *handshake) checkAccess(ctx context.Context, principal *authn.Principal) (*session, *upstream, error) {
	s := hs.srv
	up := s.upstreamFor(hs.database)
	if up == nil {
		return nil, nil, hs.refuse(ctx, connRefusal{
			metric: "unknown_database",
			level:  slog.LevelWarn, log: "connection refused", attrs: []any{"reason", "unknown_database", "principal", principal.Subject},
			event: SessionRefused, reason: "unknown_database", principal: principal,
			cause: fmt.Errorf("database %q is not served by custos", hs.database),
			code:  "3D000", message: fmt.Sprintf("database %q is not served by custos", hs.database),
		})
	}

	// With group logins, the principal's groups choose the upstream role;
	// no listed group is no login at all (fail closed), never the
	// gateway's own.
	var login *config.UpstreamLogin
	if len(up.res.Logins) > 0 {
		if login = up.res.LoginFor(principal.Groups); login == nil {
			msg := fmt.Sprintf("none of your groups has a login for resource %q", up.res.Name)
			return nil, nil, hs.refuse(ctx, connRefusal{
				metric: "no_login",
				level:  slog.LevelWarn, log: "connection refused",
				attrs: []any{"reason", "no_login", "principal", principal.Subject, "groups", principal.Groups},
				event: SessionRefused, reason: "no_login", principal: principal, cause: errors.New(msg),
				code: "28000", message: msg, hint: "Ask for a group that resource serves.",
			})
		}
	}

	ss := newSession(s, Session{
		ID:         newSessionID(),
		Principal:  principal,
		Resource:   up.res,
		ClientAddr: hs.clientAddr,
		Params:     hs.params,
		TLS:        hs.tls,
		Started:    time.Now(),
		Login:      login,
	}, hs.conn, hs.br, up.res.Address)
	ss.log = hs.log.With("session_id", ss.ID, "principal", principal.Subject, "resource", up.res.Name, "upstream_user", ss.UpstreamUser())
	if principal.Act != nil {
		ss.log = ss.log.With("act", principal.Act.Subject)
	}
	if dec, err := s.decideStartupParams(ctx, &ss.Session); err != nil {
		return nil, nil, hs.refuse(ctx, connRefusal{
			metric: "refused_parameter",
			level:  slog.LevelWarn, log: "connection refused",
			attrs: []any{"reason", "refused_parameter", "decision_id", dec.ID, "reasons", dec.Reasons},
			event: SessionRefused, reason: "refused_parameter", session: ss, cause: err,
			beforeAnswer: ss.cancel,
			err:          err,
		})
	}
	if reason, err := s.admitSession(ss); err != nil {
		// A principal retrying over its bounds makes custos do a TLS
		// handshake and a verification for each refusal: the address's
		// refusals are bounded as refused tokens are.
		return nil, nil, hs.refuse(ctx, connRefusal{
			metric: "refused_limit", gate: true,
			level: slog.LevelWarn, log: "connection refused", attrs: []any{"reason", reason},
			event: SessionRefused, reason: reason, session: ss, cause: err,
			err: err,
		})
	}
	return ss, up, nil
}

// connect logs an admitted session in upstream (as its per-principal
// user, when its login provisions one), checks the client encoding the
// server reports, and makes the session active. A refusal releases the
// session.
func (hs *handshake) connect(ctx context.Context, ss *session, up *upstream) (*pgconn.HijackedConn, error) {
	s := hs.srv
	upstreamFailed := func(err error) error {
		s.releaseSession(ss)
		return hs.refuse(ctx, connRefusal{
			metric: "upstream_failed",
			level:  slog.LevelError, log: "upstream login failed", attrs: []any{"error", err},
			event: SessionRefused, reason: "upstream_failed", session: ss, cause: err,
			err: upstreamError(up.res.Name, err),
		})
	}
	var cred *credential
	if login := ss.Login; login != nil && login.PerPrincipal {
		u, pw, err := s.prov.acquire(ctx, up, login, ss.Principal)
		if err != nil {
			return nil, upstreamFailed(err)
		}
		ss.provUser, ss.provUp, ss.ProvisionedUser = u, up, u
		cred = &credential{user: u, password: pw}
	}
	hj, err := s.connectUpstream(ctx, up, &ss.Session, cred, hs.params)
	if err != nil {
		return nil, upstreamFailed(err)
	}
	if err := checkReportedEncoding(hj.ParameterStatuses["client_encoding"], hs.params["client_encoding"]); err != nil {
		_ = hj.Conn.Close()
		s.releaseSession(ss)
		return nil, hs.refuse(ctx, connRefusal{
			metric: "unsafe_encoding",
			level:  slog.LevelError, log: "connection refused",
			attrs: []any{"reason", "unsafe_encoding", "client_encoding", hj.ParameterStatuses["client_encoding"], "error", err},
			event: SessionRefused, reason: "unsafe_encoding", session: ss, cause: err,
			err: unsafeEncodingError(err),
		})
	}
	ss.attachUpstream(hj)
	if err := s.activateSession(ss); err != nil {
		ss.closeUpstream()
		s.releaseSession(ss)
		return nil, hs.refuse(ctx, connRefusal{err: err}) // shutting down: nothing to count
	}
	return hj, nil
}

// open records the session's start and tells the client it is connected:
// AuthenticationOk, the server's parameters, custos' cancel key and
// ReadyForQuery. A session the audit journal cannot record is refused.
func (hs *handshake) open(ctx context.Context, ss *session, hj *pgconn.HijackedConn) error {
	s := hs.srv
	ss.log.Info("authentication succeeded", "tls", hs.tls, "issuer", ss.Principal.Issuer, "groups", ss.Principal.Groups)
	ss.startSpan()
	_ = hs.event(SessionAuthSucceeded, "", ss.Principal, ss, nil)

	msgs := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
	names := make([]string, 0, len(hj.ParameterStatuses))
	for k := range hj.ParameterStatuses {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: hj.ParameterStatuses[k]})
	}
	var secret [4]byte
	binary.BigEndian.PutUint32(secret[:], ss.keySecret)
	msgs = append(msgs,
		&pgproto3.BackendKeyData{ProcessID: ss.keyPID, SecretKey: secret[:]},
		&pgproto3.ReadyForQuery{TxStatus: hj.TxStatus},
	)
	if err := hs.event(SessionOpened, "", ss.Principal, ss, nil); err != nil {
		ss.closeUpstream()
		s.releaseSession(ss)
		return hs.refuse(ctx, connRefusal{
			metric: "refused_audit",
			level:  slog.LevelError, log: "connection refused", attrs: []any{"reason", "audit_unavailable", "error", err},
			event: SessionRefused, reason: "audit_unavailable", session: ss, cause: err,
			beforeAnswer: func() { ss.endSpan(err) },
			code:         "58030", message: "custos cannot record this session in its audit journal; sessions on cardholder data are refused until it can",
			hint: "The incident is logged; retry later.",
		})
	}
	if err := hs.send(msgs...); err != nil {
		ss.closeUpstream()
		s.releaseSession(ss)
		s.sessionClosed(ss)
		ss.endSpan(err)
		return errNoAnswer
	}
	s.metrics.connections.WithLabelValues("established").Inc()
	return nil
}

// event reports this connection's authentication and session start
// (Options.OnSessionEvent) and returns the answer: the user, database and
// token the client gave once it gave them, the resource once the database
// is known to be served, and the session once there is one.
func (hs *handshake) event(kind SessionEventKind, reason string, p *authn.Principal, ss *session, err error) error {
	ev := SessionEvent{Kind: kind, ClientAddr: hs.clientAddr, User: hs.user, Database: hs.database,
		TLS: hs.tls, Principal: p, Reason: reason, Err: err, TokenFingerprint: hs.tokenFingerprint}
	if hs.database != "" {
		if up := hs.srv.upstreamFor(hs.database); up != nil {
			ev.Resource = up.res
		}
	}
	if ss != nil {
		ev.Session = &ss.Session
		if ss.span != nil {
			ev.SpanContext = ss.span.SpanContext()
		}
	}
	return hs.srv.sessionEvent(ev)
}

// upstreamError tells the client the upstream login failed without
// revealing anything about the gateway-held credential.
func upstreamError(resource string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && !strings.HasPrefix(pgErr.Code, "28") {
		return fatal(pgErr.Code, fmt.Sprintf("custos could not open resource %q: %s", resource, pgErr.Message))
	}
	return fatal("08006", fmt.Sprintf("custos could not open resource %q; the incident is logged", resource))
}

func (s *Server) upstreamFor(database string) *upstream {
	if up, ok := s.upstreams[database]; ok {
		return up
	}
	for _, up := range s.upstreams {
		if up.res.Database == database {
			return up
		}
	}
	return nil
}

// readAuthMessage reads the client's next authentication response ('p').
func (hs *handshake) readAuthMessage() ([]byte, error) {
	fr := newFrameReader(hs.br, 64<<10)
	typ, n, err := fr.header()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("client closed the connection during authentication")
		}
		return nil, fatal("08P01", "invalid authentication message: "+err.Error())
	}
	if typ != 'p' {
		return nil, fatal("08P01", fmt.Sprintf("expected an authentication response, got message type %q", typ))
	}
	body, err := fr.body(typ, n)
	if err != nil {
		return nil, fatal("08P01", "invalid authentication message: "+err.Error())
	}
	return bytes.Clone(body), nil
}

func (hs *handshake) cleartextPassword() (string, error) {
	if err := hs.send(&pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return "", err
	}
	body, err := hs.readAuthMessage()
	if err != nil {
		return "", err
	}
	tok, rest, ok := cstring(body)
	if !ok || len(rest) != 0 {
		return "", fatal("08P01", "invalid password message")
	}
	if tok == "" {
		return "", fatalHint("28P01", "a token is required as the password", "Pass an OIDC access token as the password (PGPASSWORD).")
	}
	return tok, nil
}

// oauthBearer runs SASL OAUTHBEARER (RFC 7628) and returns the bearer token.
func (hs *handshake) oauthBearer(ctx context.Context) (string, error) {
	if err := hs.send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"OAUTHBEARER"}}); err != nil {
		return "", err
	}
	body, err := hs.readAuthMessage()
	if err != nil {
		return "", err
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(body); err != nil {
		return "", fatal("08P01", "invalid SASL initial response")
	}
	if init.AuthMechanism != "OAUTHBEARER" {
		return "", fatal("28000", fmt.Sprintf("SASL mechanism %q is not offered; use OAUTHBEARER", init.AuthMechanism))
	}
	tok, err := parseOAuthBearer(init.Data)
	if err != nil {
		return "", fatal("08P01", err.Error())
	}
	if tok == "" {
		// A discovery request: the client has no token yet.
		hs.oauthFailure()
		return "", fatalHint("28000", "a bearer token is required", "Obtain a token from your OIDC issuer and retry.")
	}
	return tok, nil
}

// oauthFailure sends the RFC 7628 error result and waits briefly for the
// client's dummy response before the ErrorResponse.
func (hs *handshake) oauthFailure() {
	data, _ := json.Marshal(map[string]string{"status": "invalid_token", "scope": "openid"})
	if err := hs.send(&pgproto3.AuthenticationSASLContinue{Data: data}); err != nil {
		return
	}
	_ = hs.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = hs.readAuthMessage()
}

// parseOAuthBearer extracts the token from a client initial response:
// gs2-header \x01 auth=Bearer <token> \x01 \x01.
func parseOAuthBearer(data []byte) (string, error) {
	parts := strings.Split(string(data), "\x01")
	if len(parts) < 3 || parts[len(parts)-1] != "" || parts[len(parts)-2] != "" {
		return "", errors.New("malformed OAUTHBEARER message")
	}
	gs2 := parts[0]
	if !strings.HasPrefix(gs2, "n,") && !strings.HasPrefix(gs2, "y,") {
		return "", errors.New("OAUTHBEARER channel binding is not supported")
	}
	for _, kv := range parts[1 : len(parts)-2] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", errors.New("malformed OAUTHBEARER key/value pair")
		}
		if k == "auth" {
			scheme, tok, ok := strings.Cut(v, " ")
			if !ok || !strings.EqualFold(scheme, "bearer") {
				return "", errors.New("OAUTHBEARER auth value must be \"Bearer <token>\"")
			}
			return strings.TrimSpace(tok), nil
		}
	}
	return "", nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func randomKey() (uint32, uint32) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:4]) &^ (1 << 31), binary.BigEndian.Uint32(b[4:])
}
