package pgfilter

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/custos-dev/custos/internal/approval"
	"github.com/custos-dev/custos/internal/authn"
	"github.com/custos-dev/custos/internal/config"
	"github.com/custos-dev/custos/internal/mask"
	"github.com/custos-dev/custos/internal/policy"
	"github.com/custos-dev/custos/internal/sqlclass"
)

// TokenVerifier verifies a bearer token and returns its principal.
type TokenVerifier interface {
	Verify(ctx context.Context, rawToken string) (*authn.Principal, error)
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("pgfilter: server closed")

// Options configure a Server.
type Options struct {
	// Listener holds the password transport rule, OAUTHBEARER and the
	// message size cap. Its address is not used: Serve takes a listener.
	Listener config.PostgresListener
	// Sessions bounds session lifetime and count.
	Sessions config.Sessions
	// Resources are the upstreams a client may name as its database.
	Resources []config.Resource
	// TLSConfig is presented to clients; nil refuses SSLRequest with 'N'.
	TLSConfig *tls.Config
	// Verifier checks the token a client sends as its password.
	Verifier TokenVerifier
	// Hooks are created for every authenticated session, in order.
	Hooks []HookFactory
	// Masker, when set, masks card numbers and removes sensitive
	// authentication data on every server-to-client path, after the hooks.
	Masker *mask.Masker
	// Policy, when set, decides every statement before it runs; Classifier
	// (required with Policy) says what each statement does.
	Policy     *policy.Engine
	Classifier *sqlclass.Classifier
	// Approvals, when set with Policy, parks each statement the policy
	// sends for approval until approvers decide; without it such
	// statements are refused.
	Approvals *approval.Service
	// ApprovalURL is the base URL of the admin listener as approvers reach
	// it: a parked client is told to open ApprovalURL/approvals/ID.
	ApprovalURL string
	// Logger receives connection and authentication events.
	Logger *slog.Logger
	// Registerer receives the proxy's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// StartupTimeout bounds the handshake and authentication (default 30s).
	StartupTimeout time.Duration
	// UpstreamConnectTimeout bounds the upstream login (default 10s).
	UpstreamConnectTimeout time.Duration
	// OnSessionEvent, when set, is told of each authentication, session
	// start and session end, for the audit record: synchronously, on the
	// connection's goroutine, before the client hears the outcome. It is
	// never called per message. It must not keep ev.Session. An error for
	// a SessionOpened event refuses the session (the audit record of a
	// session on cardholder data could not be written: fail closed); for
	// other kinds it is ignored.
	OnSessionEvent func(SessionEvent) error
	// Statements, when set, records every statement as it completes and
	// holds the completion back from the client until its record is
	// durable; statements it does not admit are refused. ResultRows is how
	// many (masked) result rows of each statement its record keeps.
	Statements StatementRecorder
	ResultRows int
	// Audit, when set, records each authentication, session start and
	// session end, and (unless Statements is set) every statement, as
	// pgfilter builds them (audit.go): *audit.Journal is an AuditRecorder.
	// OnSessionEvent, when also set, is told of the events as well.
	Audit AuditRecorder
	// AuthFailures, when set, records the refused tokens instead of
	// Audit: the first failure of a source, reason and token at once,
	// repeats aggregated (*audit.AuthFailures).
	AuthFailures AuthFailureRecorder
	// AuditFailClosed refuses, on a resource marked cardholder data, a
	// session whose start Audit cannot record, statements while Audit
	// cannot write, and the results of a statement whose record Audit
	// could not keep (the session then ends).
	AuditFailClosed bool
	// OnAuditFailure, when set, is told of each event Audit could not
	// record, by event name; nil logs it on Logger.
	OnAuditFailure func(event string, err error)
	// Tracer, when set, records one pg.session span per client session,
	// from its authentication to its end (never per message); nil records
	// none.
	Tracer trace.Tracer
}

// SessionEventKind says what happened to a connection.
type SessionEventKind string

// Session event kinds.
const (
	// SessionAuthFailed: the client's token (or the way it was sent) was
	// refused; Reason says why.
	SessionAuthFailed SessionEventKind = "auth_failed"
	// SessionAuthSucceeded: the token was verified and the upstream login
	// done; the session is about to open.
	SessionAuthSucceeded SessionEventKind = "auth_succeeded"
	// SessionOpened: the client was told it is connected.
	SessionOpened SessionEventKind = "opened"
	// SessionRefused: an authenticated client got no session: unknown
	// database, session limit, or the upstream login failed (Reason).
	SessionRefused SessionEventKind = "refused"
	// SessionClosed: the session ended; Reason says how.
	SessionClosed SessionEventKind = "closed"
)

// SessionEvent is one authentication, session start or session end.
type SessionEvent struct {
	Kind SessionEventKind
	Time time.Time
	// ClientAddr is the client's address as custos sees it.
	ClientAddr string
	// User and Database are what the client's startup message named.
	User, Database string
	// TLS reports whether the client connection is encrypted.
	TLS bool
	// Principal is the verified identity; nil when the token was not
	// verified.
	Principal *authn.Principal
	// Session is the session (auth_succeeded, opened, closed, and refused
	// once one was admitted); nil before.
	Session *Session
	// Resource is the resource the client asked for, once known.
	Resource *config.Resource
	// Reason is a short class: why authentication failed or a session was
	// refused (authn reasons, insecure_transport, protocol,
	// user_mismatch, unknown_database, refused_parameter (a startup
	// parameter the policy refused; Err holds the decision id),
	// session_limit (a cap), session_rate (the open rate), shutdown,
	// upstream_failed), or
	// how a session closed (client_closed, or the error that ended it).
	Reason string
	// Err is the failure, for a failed or refused connection.
	Err error
	// TokenFingerprint names the token of a failed authentication
	// (authn.TokenFingerprint), "" when none was read: the token itself
	// never leaves pgfilter.
	TokenFingerprint string
	// SpanContext is the session's pg.session span, when traced.
	SpanContext trace.SpanContext
	// Closed sessions: PAN values masked and SAD values removed in the
	// session's responses, and how long it lasted.
	MaskedPANs, RemovedSAD int64
	Duration               time.Duration
}

// sessionEvent records ev in Options.Audit and passes it to
// Options.OnSessionEvent; it returns the first refusal.
func (s *Server) sessionEvent(ev SessionEvent) error {
	if s.journal == nil && s.opts.OnSessionEvent == nil {
		return nil
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	var err error
	if s.journal != nil {
		err = s.journal.SessionEvent(ev)
	}
	if s.opts.OnSessionEvent != nil {
		if herr := s.opts.OnSessionEvent(ev); err == nil {
			err = herr
		}
	}
	return err
}

// sessionClosed reports the end of a session that ran.
func (s *Server) sessionClosed(ss *session) {
	if s.journal == nil && s.opts.OnSessionEvent == nil {
		return
	}
	ev := SessionEvent{Kind: SessionClosed, ClientAddr: ss.ClientAddr, User: ss.Principal.User,
		Database: ss.Resource.Database, TLS: ss.TLS, Principal: ss.Principal, Session: &ss.Session,
		Resource: ss.Resource, Reason: closeReason(ss.endErr), Duration: time.Since(ss.Started)}
	if ss.span != nil {
		ev.SpanContext = ss.span.SpanContext()
	}
	if ss.masker != nil {
		ev.MaskedPANs, ev.RemovedSAD = int64(ss.masker.counts.PANs), int64(ss.masker.counts.SAD)
	}
	_ = s.sessionEvent(ev) // the session is over either way
}

// Server accepts Postgres clients and relays them to their upstream.
type Server struct {
	opts      Options
	log       *slog.Logger
	upstreams map[string]*upstream
	metrics   *metrics
	// proxy is Serve's PROXY protocol policy (nil: direct clients).
	proxy *proxyPolicy
	// journal records the session events in Options.Audit (nil: none).
	journal *JournalRecorder

	// prov keeps the per-principal users of group logins that have them.
	prov *provisioner

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[net.Conn]struct{} // connections still in startup
	sessions   map[*session]struct{}
	perSubject map[string]int
	perGroup   map[string]int
	opens      map[string]*bucket    // by principalKey (Sessions.OpenRate)
	large      map[string]*largeLock // by principalKey
	gate       *authGate
	admitted   int // sessions holding a place (admitSession)
	cancelKeys map[uint64]*session
	closing    bool
	sessionsWG sync.WaitGroup
	// handlers counts connection goroutines, so that Shutdown returns
	// after the last session event.
	handlers sync.WaitGroup
}

// upstream is a resource's prepared login configuration.
type upstream struct {
	res     *config.Resource
	cfg     *pgconn.Config
	catalog *catalog
}

// New validates the options and prepares the upstream configurations.
func New(opts Options) (*Server, error) {
	if opts.Verifier == nil {
		return nil, errors.New("pgfilter: a token verifier is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Listener.MaxMessageBytes <= 0 {
		opts.Listener.MaxMessageBytes = config.DefaultMaxMessageBytes
	}
	if opts.Listener.PasswordTransport == "" {
		opts.Listener.PasswordTransport = config.TransportTLSOrLoopback
	}
	if opts.StartupTimeout <= 0 {
		opts.StartupTimeout = 30 * time.Second
	}
	if opts.UpstreamConnectTimeout <= 0 {
		opts.UpstreamConnectTimeout = 10 * time.Second
	}
	if opts.Listener.PasswordTransport == config.TransportTLS && opts.TLSConfig == nil {
		return nil, errors.New("pgfilter: password transport tls needs a TLS certificate")
	}
	journal := NewJournalRecorder(opts)
	if journal != nil && opts.Statements == nil {
		opts.Statements = journal
	}
	var proxy *proxyPolicy
	switch opts.Listener.ProxyProtocol {
	case "", config.ProxyProtocolOff:
	case config.ProxyProtocolRequired:
		trusted, err := opts.Listener.TrustedProxyPrefixes()
		if err != nil {
			return nil, fmt.Errorf("pgfilter: trusted proxies: %w", err)
		}
		if proxy, err = newProxyPolicy(trusted, opts.TLSConfig); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("pgfilter: proxy protocol %q is not off or required", opts.Listener.ProxyProtocol)
	}
	s := &Server{
		opts:       opts,
		journal:    journal,
		log:        opts.Logger,
		upstreams:  map[string]*upstream{},
		metrics:    newMetrics(opts.Registerer),
		listeners:  map[net.Listener]struct{}{},
		conns:      map[net.Conn]struct{}{},
		sessions:   map[*session]struct{}{},
		perSubject: map[string]int{},
		perGroup:   map[string]int{},
		opens:      map[string]*bucket{},
		large:      map[string]*largeLock{},
		gate:       newAuthGate(),
		cancelKeys: map[uint64]*session{},
		proxy:      proxy,
	}
	s.prov = &provisioner{srv: s, users: map[string]*provisioned{}}
	for i := range opts.Resources {
		res := &opts.Resources[i]
		cfg, err := upstreamConfig(res)
		if err != nil {
			return nil, fmt.Errorf("pgfilter: resource %s: %w", res.Name, err)
		}
		cfg.ConnectTimeout = opts.UpstreamConnectTimeout
		up := &upstream{res: res, cfg: cfg}
		if opts.Masker != nil || opts.Policy != nil {
			up.catalog = newCatalog(s, up)
		}
		s.upstreams[res.Name] = up
	}
	if (opts.Policy != nil || opts.Statements != nil) && opts.Classifier == nil {
		return nil, errors.New("pgfilter: a policy or a statement recorder needs a classifier")
	}
	if len(s.upstreams) == 0 {
		return nil, errors.New("pgfilter: no resources")
	}
	return s, nil
}

// newProxyPolicy checks what a listener behind a proxy needs: peers to
// trust, and a certificate, since its clients may send a token only over
// TLS.
func newProxyPolicy(trusted []netip.Prefix, tlsCfg *tls.Config) (*proxyPolicy, error) {
	if len(trusted) == 0 {
		return nil, errors.New("pgfilter: the PROXY protocol needs at least one trusted proxy address")
	}
	if tlsCfg == nil {
		return nil, errors.New("pgfilter: a listener behind a proxy needs a TLS certificate: its clients may send a token only over TLS")
	}
	return &proxyPolicy{trusted: slices.Clone(trusted)}, nil
}

// Serve accepts connections on ln until Shutdown or a listener error. With
// Options.Listener.ProxyProtocol required, every connection must come from
// a trusted proxy and start with a PROXY protocol header.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, s.proxy) }

// ServeProxied is Serve for a listener only proxies reach, whatever
// Options.Listener says: every connection must come from an address in
// trusted and start with a PROXY protocol header (v1 or v2), and its
// clients may send a token only over TLS.
func (s *Server) ServeProxied(ln net.Listener, trusted []netip.Prefix) error {
	pp, err := newProxyPolicy(trusted, s.opts.TLSConfig)
	if err != nil {
		return err
	}
	return s.serve(ln, pp)
}

func (s *Server) serve(ln net.Listener, pp *proxyPolicy) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("pgfilter: accept: %w", err)
		}
		backoff = 0
		if !s.trackConn(c, true) {
			_ = c.Close()
			continue
		}
		go s.handle(c, pp)
	}
}

func (s *Server) trackConn(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing {
			return false
		}
		s.conns[c] = struct{}{}
		s.handlers.Add(1)
		return true
	}
	delete(s.conns, c)
	return true
}

// Shutdown stops accepting and ends sessions with a FATAL message: idle
// ones at once, busy ones when their statement or transaction completes,
// and whatever remains when ctx is done. It returns when every session is
// closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		_ = ln.Close()
	}
	for c := range s.conns {
		_ = c.Close()
	}
	// Idle sessions end now; busy ones when their work is done (their
	// next ReadyForQuery outside a transaction) or at the deadline.
	for ss := range s.sessions {
		ss.draining.Store(true)
		if ss.idle.Load() {
			go ss.terminate(errShutdown)
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.sessionsWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.closeCatalogs()
		return s.waitHandlers(ctx)
	case <-ctx.Done():
	}
	s.mu.Lock()
	for ss := range s.sessions {
		go ss.terminate(errShutdown)
	}
	s.mu.Unlock()
	<-done
	s.closeCatalogs()
	// The sessions just ended report it; give them a moment.
	wctx, cancel := context.WithTimeout(context.Background(), handlerDrain)
	defer cancel()
	_ = s.waitHandlers(wctx)
	return ctx.Err()
}

// handlerDrain bounds the wait for the last session events of sessions
// ended by the shutdown deadline.
const handlerDrain = 2 * time.Second

// waitHandlers waits for the connection goroutines to end (their last
// session events), or for ctx.
func (s *Server) waitHandlers(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ActiveSessions is the number of authenticated sessions.
func (s *Server) ActiveSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// admitSession reserves a place for an authenticated principal before the
// upstream login, enforcing the caps: per principal, per group (each of
// the principal's groups with a cap), and the replica's total, whose last
// places are kept for the reserve's groups; then the principal's open
// rate. A refusal is a FATAL 53300 naming the bound, with the reason
// recorded: session_limit for a cap, session_rate for the rate.
func (s *Server) admitSession(ss *session) (reason string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return "shutdown", errShutdown
	}
	p, subj := ss.Principal, principalKey(&ss.Session)
	groups := slices.Compact(slices.Sorted(slices.Values(p.Groups)))
	if err := s.sessionCaps(subj, groups, p); err != nil {
		return "session_limit", err
	}
	if r := s.opts.Sessions.OpenRate; r.PerSecond > 0 {
		if wait := s.takeOpen(subj, r, time.Now()); wait > 0 {
			return "session_rate", fatalHint("53300",
				fmt.Sprintf("%s is opening sessions too fast: %g a second are allowed, after %d at once", p.Subject, r.PerSecond, max(r.Burst, 1)),
				fmt.Sprintf("Try again in %v, or keep sessions open and reuse them.", wait.Round(time.Millisecond)))
		}
	}
	s.perSubject[subj]++
	for _, g := range groups {
		if _, ok := s.opts.Sessions.MaxPerGroup[g]; ok {
			s.perGroup[g]++
			ss.countedGroups = append(ss.countedGroups, g)
		}
	}
	s.admitted++
	ss.admitted = true
	return "", nil
}

// sessionCaps refuses a session of p (its key subj, its groups sorted
// and distinct) over a cap; s.mu held.
func (s *Server) sessionCaps(subj string, groups []string, p *authn.Principal) error {
	lim := s.opts.Sessions
	if limit := lim.MaxPerPrincipal; limit > 0 && s.perSubject[subj] >= limit {
		return fatal("53300", fmt.Sprintf("too many sessions for %s: %d of %d allowed are open", p.Subject, s.perSubject[subj], limit))
	}
	for _, g := range groups {
		if limit, ok := lim.MaxPerGroup[g]; ok && limit > 0 && s.perGroup[g] >= limit {
			return fatal("53300", fmt.Sprintf("too many sessions for group %s: %d of %d allowed are open", g, s.perGroup[g], limit))
		}
	}
	if total := lim.MaxTotal; total > 0 {
		reserved := lim.Reserve.Sessions
		if reserved < 0 || slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(lim.Reserve.Groups, g) }) {
			reserved = 0
		}
		switch {
		case s.admitted >= total:
			return fatal("53300", fmt.Sprintf("custos has no session left: %d of %d are open", s.admitted, total))
		case s.admitted >= total-reserved:
			return fatal("53300", fmt.Sprintf("custos has no session left for %s: %d of %d are open, and the last %d are reserved for %s",
				p.Subject, s.admitted, total, reserved, strings.Join(lim.Reserve.Groups, ", ")))
		}
	}
	return nil
}

// maxOpenBuckets bounds the principals whose open rate is remembered
// before full buckets (principals that have not opened a session lately)
// are forgotten.
const maxOpenBuckets = 4096

// takeOpen takes one open from key's bucket, or says how long until one
// is there; s.mu held.
func (s *Server) takeOpen(key string, r config.SessionOpenRate, now time.Time) time.Duration {
	burst := float64(max(r.Burst, 1))
	b := s.opens[key]
	if b == nil {
		if len(s.opens) >= maxOpenBuckets {
			for k, o := range s.opens {
				if o.fill(now, r.PerSecond, burst) >= burst {
					delete(s.opens, k)
				}
			}
		}
		b = &bucket{}
		s.opens[key] = b
	}
	if b.fill(now, r.PerSecond, burst) < 1 {
		return b.until(1, r.PerSecond)
	}
	b.level--
	return 0
}

// activateSession makes a session whose upstream is attached visible to
// cancel requests and shutdown, and gives it its cancel key.
func (s *Server) activateSession(ss *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errShutdown
	}
	for {
		ss.keyPID, ss.keySecret = randomKey()
		k := cancelKey(ss.keyPID, ss.keySecret)
		if _, taken := s.cancelKeys[k]; !taken {
			s.cancelKeys[k] = ss
			break
		}
	}
	s.sessions[ss] = struct{}{}
	ss.active = true
	s.sessionsWG.Add(1)
	return nil
}

// releaseSession undoes admitSession and activateSession.
func (s *Server) releaseSession(ss *session) {
	if u := ss.provUser; u != "" {
		// Outside s.mu: disabling the user after its principal's last
		// session talks to the database.
		ss.provUser = ""
		s.prov.release(ss.provUp, u)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.admitted {
		ss.admitted = false
		subj := principalKey(&ss.Session)
		if s.perSubject[subj]--; s.perSubject[subj] <= 0 {
			delete(s.perSubject, subj)
		}
		for _, g := range ss.countedGroups {
			if s.perGroup[g]--; s.perGroup[g] <= 0 {
				delete(s.perGroup, g)
			}
		}
		ss.countedGroups = nil
		s.admitted--
	}
	if ss.active {
		ss.active = false
		delete(s.cancelKeys, cancelKey(ss.keyPID, ss.keySecret))
		delete(s.sessions, ss)
		s.sessionsWG.Done()
	}
}

// largeStatementBytes is the text length from which a principal's
// statements are classified one at a time (the classifier's own threshold
// for its shared parse slots).
const largeStatementBytes = 64 << 10

// largeLock serializes one principal's long parses, and holds its budget
// of parse time (a token bucket of seconds, largeBurst deep, refilled at
// largeRate): a long text is parsed only while the budget is not spent,
// and its parse is charged what it took. Parsing one megabyte can take
// seconds of CPU (a VALUES list of 250,000 rows takes about five), so
// bytes are no measure of it; the time taken is, and the budget bounds
// what one principal's long statements take from everyone else to a tenth
// of a core, a burst apart.
type largeLock struct {
	mu     sync.Mutex
	refs   int
	budget bucket // seconds of parse time
}

const (
	maxLargeLocks = 4096
	// largeRate is the parse time a second of waiting earns, in parts per
	// thousand (100: 100 ms a second).
	largeRate  = 100
	largeBurst = 2 * time.Second
	// largeRefusalPause bounds the pause before a refusal for a spent
	// budget (policyHook.classify).
	largeRefusalPause = time.Second
)

// fill brings the budget up to now and returns it, in seconds; l.mu
// held, or s.mu with no user.
func (l *largeLock) fill(now time.Time) float64 {
	return l.budget.fill(now, largeRate/1000.0, largeBurst.Seconds())
}

// ready reports whether a long text may be parsed now, and if not how
// long until it may; l.mu held.
func (l *largeLock) ready(now time.Time) (bool, time.Duration) {
	if l.fill(now) > 0 {
		return true, 0
	}
	return false, l.budget.until(time.Millisecond.Seconds(), largeRate/1000.0)
}

// charge takes a parse's time from the budget (which may go below zero:
// the next long text waits for the debt to be paid); l.mu held.
func (l *largeLock) charge(took time.Duration, now time.Time) {
	l.fill(now)
	l.budget.level -= took.Seconds()
}

// serializeLarge waits for the principal's turn to parse a long text and
// returns done, to call with the time the parse took; or, when the
// principal's parse time is spent, how long until it is not.
func (s *Server) serializeLarge(key string) (done func(took time.Duration), wait time.Duration) {
	s.mu.Lock()
	l := s.large[key]
	if l == nil {
		if len(s.large) >= maxLargeLocks {
			// Budgets still refilling are kept until their principal
			// comes back; past this many, those not in use go (each then
			// starts again with a full budget).
			for k, other := range s.large {
				if other.refs == 0 {
					delete(s.large, k)
				}
			}
		}
		l = &largeLock{}
		s.large[key] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	release := func() {
		now := time.Now()
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 && l.fill(now) >= largeBurst.Seconds() {
			delete(s.large, key) // nothing left to remember
		}
		s.mu.Unlock()
	}
	if ok, wait := l.ready(time.Now()); !ok {
		release()
		return nil, wait
	}
	return func(took time.Duration) {
		l.charge(took, time.Now())
		release()
	}, 0
}

func principalKey(ss *Session) string { return ss.Principal.Issuer + "\x00" + ss.Principal.Subject }

func (s *Server) sessionByKey(pid uint32, secret []byte) *session {
	if len(secret) != 4 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelKeys[cancelKey(pid, binary.BigEndian.Uint32(secret))]
}

func (s *Server) closeCatalogs() {
	for _, up := range s.upstreams {
		if up.catalog != nil {
			up.catalog.close()
		}
	}
}

func cancelKey(pid, secret uint32) uint64 { return uint64(pid)<<32 | uint64(secret) }
