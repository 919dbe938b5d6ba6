package authn

import (
	"log/slog"
	"net/http"
	"time"
)

const (
	// DefaultClockSkew is the tolerance applied to exp and nbf.
	DefaultClockSkew = 30 * time.Second
	// defaultHTTPTimeout bounds discovery and JWKS requests made with the
	// default client. go-oidc fetches a JWKS in a goroutine that later
	// callers join, so an unbounded request would stall every token that
	// needs a key refresh.
	defaultHTTPTimeout = 10 * time.Second
	// defaultDiscoveryRetry is how long a failed discovery is remembered
	// before a token of that issuer triggers a new attempt.
	defaultDiscoveryRetry = 5 * time.Second
	// discoveryTimeout bounds one discovery, whatever the HTTP client.
	discoveryTimeout = 30 * time.Second
	// defaultKeyRefresh is how long a fetched JWKS is trusted before the
	// next token is verified against a fresh copy.
	defaultKeyRefresh = 10 * time.Minute
)

// Option configures a [Verifier].
type Option func(*options)

type options struct {
	client         *http.Client
	skew           time.Duration
	now            func() time.Time
	logger         *slog.Logger
	discoveryRetry time.Duration
	keyRefresh     time.Duration
	failureEntries int
	failureTTL     time.Duration
}

func defaultOptions() options {
	return options{
		client:         &http.Client{Timeout: defaultHTTPTimeout},
		skew:           DefaultClockSkew,
		now:            time.Now,
		logger:         slog.New(slog.DiscardHandler),
		discoveryRetry: defaultDiscoveryRetry,
		keyRefresh:     defaultKeyRefresh,
		failureEntries: DefaultFailureEntries,
		failureTTL:     DefaultFailureTTL,
	}
}

// WithHTTPClient sets the client used for discovery and JWKS requests (for
// example one trusting a private CA). It should have a timeout. The default
// is a client with a 10 second timeout. A nil client keeps the default.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) {
		if c != nil {
			o.client = c
		}
	}
}

// WithClockSkew sets the tolerance applied to exp and nbf (default 30s).
// NewVerifier rejects a negative skew.
func WithClockSkew(d time.Duration) Option {
	return func(o *options) { o.skew = d }
}

// WithKeyRefresh sets how long a fetched JWKS is trusted (default 10
// minutes). go-oidc refetches a JWKS when a token names an unknown key; this
// bound also makes keys the issuer removed stop verifying. NewVerifier
// rejects a value that is not positive.
func WithKeyRefresh(d time.Duration) Option {
	return func(o *options) { o.keyRefresh = d }
}

// WithNow sets the clock used for exp, nbf, discovery retries and key
// refreshes (tests).
// A nil function keeps time.Now.
func WithNow(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithLogger sets the logger for discovery outcomes (default: discard).
// Token verification failures are returned, not logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithFailureMemory sets how many refused tokens are remembered (default
// DefaultFailureEntries, least recently refused dropped first) and for
// how long at most (default DefaultFailureTTL): the same token presented
// again within that time is refused with the same error without being
// verified. Only refusals that cannot turn into an acceptance within the
// TTL are remembered (a bad signature by a key not yet seen only
// briefly; an unreachable issuer and a token not yet valid never).
// Entries or ttl of 0 turn the memory off; NewVerifier rejects negative
// values.
func WithFailureMemory(entries int, ttl time.Duration) Option {
	return func(o *options) {
		o.failureEntries, o.failureTTL = entries, ttl
		if entries == 0 {
			o.failureTTL = 0
		}
	}
}
