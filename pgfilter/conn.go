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

// run negotiates encryption, reads the startup message, authenticates and
// logs in upstream. A nil session with a nil error means the connection
// was fully served (a cancel request).
func (hs *handshake) run(ctx context.Context) (*session, error) {
	s := hs.srv
	if hs.proxy != nil {
		if err := hs.acceptProxy(); err != nil {
			return nil, err
		}
	}
	if gated, left := s.gate.blocked(hs.clientAddr); gated {
		// Refused before TLS and verification, and only when the window
		// ends: a flood of refused connections from one address costs
		// custos no more than this.
		s.metrics.connections.WithLabelValues("auth_rate_limited").Inc()
		hs.log.Debug("connection refused", "reason", "auth_rate_limited")
		_ = s.sessionEvent(SessionEvent{Kind: SessionAuthFailed, ClientAddr: hs.clientAddr, Reason: "rate_limited",
			Err: errors.New("too many refused connections from this address")})
		s.gate.hold(ctx, left)
		return nil, fatal("53300", fmt.Sprintf("too many refused connections from %s: try again in a second", hostOf(hs.clientAddr)))
	}
	first, err := hs.br.Peek(1)
	if err != nil {
		return nil, nil // closed before saying anything
	}
	if hs.proxy == nil && (first[0] == proxyV2Sig[0] || first[0] == proxyV1Sig[0]) {
		s.metrics.connections.WithLabelValues("protocol_error").Inc()
		hs.log.Warn("PROXY protocol header on a listener without proxy_protocol refused")
		return nil, fatal("08P01", "unexpected PROXY protocol header: this listener takes clients directly")
	}
	if first[0] == 0x16 { // a TLS record: direct TLS (sslnegotiation=direct)
		if s.opts.TLSConfig == nil {
			hs.log.Warn("direct TLS refused: no certificate configured")
			s.metrics.connections.WithLabelValues("tls_refused").Inc()
			return nil, nil
		}
		if err := hs.startTLS(ctx, &bufferedConn{Conn: hs.raw, r: hs.br}, true); err != nil {
			return nil, err
		}
	}
	for {
		pkt, err := readStartupPacket(hs.br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, nil
			}
			s.metrics.connections.WithLabelValues("protocol_error").Inc()
			return nil, fatal("08P01", "invalid startup packet: "+err.Error())
		}
		req, err := parseStartupPacket(pkt)
		if err != nil {
			s.metrics.connections.WithLabelValues("protocol_error").Inc()
			return nil, fatal("08P01", err.Error())
		}
		switch req.code {
		case sslRequestCode:
			if hs.tls {
				return nil, fatal("08P01", "SSL request received on an encrypted connection")
			}
			if s.opts.TLSConfig == nil {
				if _, err := hs.conn.Write([]byte{'N'}); err != nil {
					return nil, nil
				}
				continue
			}
			if hs.br.Buffered() > 0 {
				// Bytes sent before the handshake could have been
				// injected by anyone on the path.
				s.metrics.connections.WithLabelValues("protocol_error").Inc()
				hs.log.Warn("unencrypted data after SSL request refused")
				return nil, fatal("08P01", "received unencrypted data after SSL request")
			}
			if _, err := hs.conn.Write([]byte{'S'}); err != nil {
				return nil, nil
			}
			if err := hs.startTLS(ctx, hs.raw, false); err != nil {
				return nil, err
			}
		case gssEncRequestCode:
			if hs.tls {
				return nil, fatal("08P01", "GSSAPI encryption request received on an encrypted connection")
			}
			if _, err := hs.conn.Write([]byte{'N'}); err != nil {
				return nil, nil
			}
		case cancelRequestCode:
			s.handleCancel(ctx, req, hs.log)
			return nil, nil
		default:
			return hs.startup(ctx, req)
		}
	}
}

func (hs *handshake) startTLS(ctx context.Context, c net.Conn, direct bool) error {
	cfg := hs.srv.opts.TLSConfig.Clone()
	cfg.NextProtos = []string{"postgresql"}
	tc := tls.Server(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		hs.srv.metrics.connections.WithLabelValues("tls_failed").Inc()
		hs.log.Warn("client TLS handshake failed", "error", err)
		return fmt.Errorf("tls handshake: %w", err)
	}
	if direct && tc.ConnectionState().NegotiatedProtocol != "postgresql" {
		// Direct TLS without ALPN could be a confused HTTPS client.
		hs.srv.metrics.connections.WithLabelValues("tls_refused").Inc()
		hs.log.Warn("direct TLS without ALPN postgresql refused")
		hs.conn = tc
		return fatal("08P01", "direct SSL connection requires ALPN protocol \"postgresql\"")
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

// startup handles a StartupMessage: parameters, authentication, upstream.
func (hs *handshake) startup(ctx context.Context, req *startupRequest) (*session, error) {
	s := hs.srv
	if minor := req.code & 0xffff; minor > 0 || len(req.pqOptions) > 0 {
		opts := req.pqOptions
		if opts == nil {
			opts = []string{}
		}
		if err := hs.send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: opts}); err != nil {
			return nil, nil
		}
	}
	sp, err := checkStartupParams(req.params)
	if err != nil {
		var pe *paramError
		if errors.As(err, &pe) {
			s.metrics.connections.WithLabelValues(pe.label).Inc()
			hs.log.Warn("connection refused", "reason", pe.label, "error", pe.err)
			return nil, pe.err
		}
		return nil, err
	}
	user, database, params := sp.user, sp.database, sp.params
	log := hs.log.With("user", user, "database", database)
	var tokenFingerprint string // once a token was read
	// event reports this connection's authentication and session start.
	event := func(kind SessionEventKind, reason string, p *authn.Principal, ss *session, err error) error {
		ev := SessionEvent{Kind: kind, ClientAddr: hs.clientAddr, User: user, Database: database,
			TLS: hs.tls, Principal: p, Reason: reason, Err: err, TokenFingerprint: tokenFingerprint}
		if up := s.upstreamFor(database); up != nil {
			ev.Resource = up.res
		}
		if ss != nil {
			ev.Session = &ss.Session
			if ss.span != nil {
				ev.SpanContext = ss.span.SpanContext()
			}
		}
		return s.sessionEvent(ev)
	}

	if !hs.tls {
		transport := s.opts.Listener.PasswordTransport
		if hs.proxy != nil {
			// Behind a proxy the peer is the proxy: only TLS from the
			// client itself protects the token, whatever the setting.
			transport = config.TransportTLS
		}
		switch transport {
		case config.TransportTLS:
			s.metrics.authFailures.WithLabelValues("insecure_transport").Inc()
			log.Warn("authentication failed", "reason", "insecure_transport")
			_ = event(SessionAuthFailed, "insecure_transport", nil, nil, errors.New("password sent without TLS"))
			return nil, fatalHint("28000", "custos requires TLS before a token may be sent", "Connect with sslmode=require (or stronger).")
		case config.TransportTLSOrLoopback:
			if !isLoopback(hs.raw.RemoteAddr()) {
				s.metrics.authFailures.WithLabelValues("insecure_transport").Inc()
				log.Warn("authentication failed", "reason", "insecure_transport")
				_ = event(SessionAuthFailed, "insecure_transport", nil, nil, errors.New("password sent without TLS from a non-loopback address"))
				return nil, fatalHint("28000", "custos requires TLS before a token may be sent from a non-loopback address", "Connect with sslmode=require (or stronger).")
			}
		}
	}

	var token string
	if s.opts.Listener.OAuthBearer {
		token, err = hs.oauthBearer(ctx)
	} else {
		token, err = hs.cleartextPassword()
	}
	if err != nil {
		s.metrics.authFailures.WithLabelValues("protocol").Inc()
		log.Warn("authentication failed", "reason", "protocol", "error", err)
		_ = event(SessionAuthFailed, "protocol", nil, nil, err)
		return nil, err
	}
	tokenFingerprint = authn.TokenFingerprint(token)
	principal, err := s.opts.Verifier.Verify(ctx, token)
	if err != nil {
		reason := authn.Reason(err)
		s.metrics.authFailures.WithLabelValues(reason).Inc()
		s.gate.failed(hs.clientAddr)
		log.Warn("authentication failed", "reason", reason, "error", err)
		_ = event(SessionAuthFailed, reason, nil, nil, err)
		if s.opts.Listener.OAuthBearer {
			hs.oauthFailure()
		}
		return nil, fatal("28P01", "token authentication failed for user \""+user+"\": "+err.Error())
	}
	if principal.User != user {
		s.metrics.authFailures.WithLabelValues("user_mismatch").Inc()
		log.Warn("authentication failed", "reason", "user_mismatch", "principal", principal.Subject)
		msg := fmt.Sprintf("startup user %q does not match the token's identity %q", user, principal.User)
		_ = event(SessionAuthFailed, "user_mismatch", principal, nil, errors.New(msg))
		return nil, fatalHint("28000", msg, "Connect with the user name your token was issued for.")
	}
	up := s.upstreamFor(database)
	if up == nil {
		s.metrics.connections.WithLabelValues("unknown_database").Inc()
		log.Warn("connection refused", "reason", "unknown_database", "principal", principal.Subject)
		_ = event(SessionRefused, "unknown_database", principal, nil, fmt.Errorf("database %q is not served by custos", database))
		return nil, fatal("3D000", fmt.Sprintf("database %q is not served by custos", database))
	}

	// With group logins, the principal's groups choose the upstream role;
	// no listed group is no login at all (fail closed), never the
	// gateway's own.
	var login *config.UpstreamLogin
	if len(up.res.Logins) > 0 {
		if login = up.res.LoginFor(principal.Groups); login == nil {
			s.metrics.connections.WithLabelValues("no_login").Inc()
			log.Warn("connection refused", "reason", "no_login", "principal", principal.Subject, "groups", principal.Groups)
			msg := fmt.Sprintf("none of your groups has a login for resource %q", up.res.Name)
			_ = event(SessionRefused, "no_login", principal, nil, errors.New(msg))
			return nil, fatalHint("28000", msg, "Ask for a group that resource serves.")
		}
	}

	ss := newSession(s, Session{
		ID:         newSessionID(),
		Principal:  principal,
		Resource:   up.res,
		ClientAddr: hs.clientAddr,
		Params:     params,
		TLS:        hs.tls,
		Started:    time.Now(),
		Login:      login,
	}, hs.conn, hs.br, up.res.Address)
	ss.log = log.With("session_id", ss.ID, "principal", principal.Subject, "resource", up.res.Name, "upstream_user", ss.UpstreamUser())
	if principal.Act != nil {
		ss.log = ss.log.With("act", principal.Act.Subject)
	}
	if dec, err := s.decideStartupParams(ctx, &ss.Session); err != nil {
		s.metrics.connections.WithLabelValues("refused_parameter").Inc()
		ss.log.Warn("connection refused", "reason", "refused_parameter", "decision_id", dec.ID, "reasons", dec.Reasons)
		_ = event(SessionRefused, "refused_parameter", principal, ss, err)
		ss.cancel()
		return nil, err
	}
	if reason, err := s.admitSession(ss); err != nil {
		s.metrics.connections.WithLabelValues("refused_limit").Inc()
		// A principal retrying over its bounds makes custos do a TLS
		// handshake and a verification for each refusal: the address's
		// refusals are bounded as refused tokens are.
		s.gate.failed(hs.clientAddr)
		ss.log.Warn("connection refused", "reason", reason)
		_ = event(SessionRefused, reason, principal, ss, err)
		return nil, err
	}
	upstreamFailed := func(err error) (*session, error) {
		s.releaseSession(ss)
		s.metrics.connections.WithLabelValues("upstream_failed").Inc()
		ss.log.Error("upstream login failed", "error", err)
		_ = event(SessionRefused, "upstream_failed", principal, ss, err)
		return nil, upstreamError(up.res.Name, err)
	}
	var cred *credential
	if login != nil && login.PerPrincipal {
		u, pw, err := s.prov.acquire(ctx, up, login, principal)
		if err != nil {
			return upstreamFailed(err)
		}
		ss.provUser, ss.provUp, ss.ProvisionedUser = u, up, u
		cred = &credential{user: u, password: pw}
	}
	hj, err := s.connectUpstream(ctx, up, &ss.Session, cred, params)
	if err != nil {
		return upstreamFailed(err)
	}
	if err := checkReportedEncoding(hj.ParameterStatuses["client_encoding"], params["client_encoding"]); err != nil {
		_ = hj.Conn.Close()
		s.releaseSession(ss)
		s.metrics.connections.WithLabelValues("unsafe_encoding").Inc()
		ss.log.Error("connection refused", "reason", "unsafe_encoding", "client_encoding", hj.ParameterStatuses["client_encoding"], "error", err)
		_ = event(SessionRefused, "unsafe_encoding", principal, ss, err)
		return nil, unsafeEncodingError(err)
	}
	ss.attachUpstream(hj)
	if err := s.activateSession(ss); err != nil {
		ss.closeUpstream()
		s.releaseSession(ss)
		return nil, err
	}
	ss.log.Info("authentication succeeded", "tls", hs.tls, "issuer", principal.Issuer, "groups", principal.Groups)
	ss.startSpan()
	_ = event(SessionAuthSucceeded, "", principal, ss, nil)

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
	if err := event(SessionOpened, "", principal, ss, nil); err != nil {
		ss.closeUpstream()
		s.releaseSession(ss)
		s.metrics.connections.WithLabelValues("refused_audit").Inc()
		ss.log.Error("connection refused", "reason", "audit_unavailable", "error", err)
		_ = event(SessionRefused, "audit_unavailable", principal, ss, err)
		ss.endSpan(err)
		return nil, fatalHint("58030", "custos cannot record this session in its audit journal; sessions on cardholder data are refused until it can",
			"The incident is logged; retry later.")
	}
	if err := hs.send(msgs...); err != nil {
		ss.closeUpstream()
		s.releaseSession(ss)
		s.sessionClosed(ss)
		ss.endSpan(err)
		return nil, nil
	}
	s.metrics.connections.WithLabelValues("established").Inc()
	return ss, nil
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
